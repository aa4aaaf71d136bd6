"""The small tokenizer weights shipped inside the package (the embedded default).

``unimusic/weights/`` holds ``rqvae-tiny`` (score images) and ``codec-tiny``
(audio), each as ``.safetensors`` + ``.json``; ``unimusic/weights/README.md``
gives the command that reproduces each file and its recorded reconstruction
numbers. :func:`tokenizer_hash` names a weights file by what it computes (kind,
config, tensor checksum), so token shards record which tokenizer made them.
"""

from __future__ import annotations

import os
from pathlib import Path

from unimusic.errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = {"image": "rqvae-tiny", "audio": "codec-tiny"}
REPRODUCE = {
    "image": "unimusic train-tokenizer image --preset shipped",
    "audio": "unimusic train-tokenizer audio --preset shipped",
}


def shipped_path(modality: str) -> Path:
    """Path (without suffix) of the shipped weights for ``"image"`` or ``"audio"``; InputError if absent."""
    if modality not in SHIPPED:
        raise InputError("tokenizer", f"unknown modality {modality!r}; expected one of {sorted(SHIPPED)}")
    path = WEIGHTS_DIR / SHIPPED[modality]
    if not (path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()):
        raise InputError(
            str(path), f"shipped {modality} tokenizer weights are missing; rebuild them with `{REPRODUCE[modality]}`"
        )
    return path


def tokenizer_hash(path: str | os.PathLike) -> str:
    """Short stable id of a weights file: hash of its kind, format version, config hash and tensor sha256."""
    from unimusic.models.weights import read_meta
    from unimusic.tokens.codec import content_hash

    meta = read_meta(path)
    missing = [k for k in ("kind", "format_version", "config_hash", "sha256") if k not in meta]
    if missing:
        raise InputError(str(path), f"weights record lacks {missing}")
    return content_hash({k: meta[k] for k in ("kind", "format_version", "config_hash", "sha256")})
