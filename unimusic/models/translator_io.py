"""The exported translator: safetensors + JSON that load without DeepSpeed or Ray.

``save_translator`` writes the model weights with a record of the model config, the
vocabulary (its config, layout and hash) and whatever the exporter adds (training
step, directions trained, metrics). ``load_translator`` rebuilds the vocabulary from
the record, refuses one whose hash differs from what this code builds (a changed
codec), checks the weights' checksum and never unpickles anything.
"""

from __future__ import annotations

import os

from unimusic.errors import InputError

KIND = "translator"
FORMAT_VERSION = 1


def save_translator(state_dict: dict, *, config, vocab, path: str | os.PathLike, extra: dict | None = None) -> dict:
    """``path.safetensors`` + ``path.json``; returns their paths."""
    from unimusic.models.weights import save_weights

    meta = {"kind": KIND, "format_version": FORMAT_VERSION, "config": config.to_dict(),
            "vocabulary": {**vocab.describe(), "hash": vocab.hash}, **(extra or {})}
    tensors, record = save_weights(state_dict, meta, path)
    return {"weights": str(tensors), "meta": str(record)}


def load_translator(path: str | os.PathLike, *, device: str = "cpu"):
    """``(model in eval mode, TranslatorConfig, Vocabulary, meta)`` of exported weights."""
    from unimusic.config import from_dict
    from unimusic.models.translator import TranslatorConfig, build_translator
    from unimusic.models.weights import load_weights, weight_paths
    from unimusic.tokens.vocabulary import Vocabulary, VocabularyConfig

    state, meta = load_weights(path, kind=KIND, format_version=FORMAT_VERSION, device=device)
    record = str(weight_paths(path)[1])
    try:
        vocab = Vocabulary(VocabularyConfig.from_dict(meta["vocabulary"]["config"]))
        recorded_hash = meta["vocabulary"]["hash"]
    except (KeyError, TypeError) as exc:
        raise InputError(record, f"no usable vocabulary record ({type(exc).__name__}: {exc})") from None
    vocab.check(recorded_hash, what=record)
    config = from_dict(TranslatorConfig, meta["config"])
    model = build_translator(config, vocab).to(device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(str(weight_paths(path)[0]), f"tensors do not fit the recorded config: {exc}") from None
    return model.eval(), config, vocab, meta
