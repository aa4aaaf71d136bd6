"""Peer audio->MIDI transcribers, run offline on CPU, for comparisons with our model.

:func:`transcribe_with` runs one peer on float mono audio and returns its notes
(:class:`~unimusic.tokens.midi.Note`, program 0, sorted by (start, pitch)); score
them with :func:`unimusic.judge.onset_scores` like our model's transcriptions.

Peers (both ship their weights inside their pip wheels: nothing is downloaded):

``basic-pitch``
    Spotify's basic-pitch (ICASSP 2022, ONNX), any instrument; delegates to
    :func:`unimusic.judge.transcribe`.
``transkun``
    Transkun 2.0 (Yan & Duan, piano only: a Transformer with a semi-CRF
    decoder; ``pip install --no-deps transkun``, see requirements/5-nodeps.txt).
    Audio is resampled to its 44.1 kHz and transcribed as its console script
    does (16 s windows, 8 s hop); sustain/soft pedal events are left out. Slow
    on CPU: about 19 s per window on 2 cores, i.e. 3 s per audio second on
    long audio, and a fixed ~1 min for any clip up to 8 s (3 windows).

Importing this module is cheap: the peers (torch, onnxruntime, librosa...) are
imported on first use, and each model is loaded once per process.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

from unimusic.errors import InputError
from unimusic.tokens.midi import Note

PEERS = ("basic-pitch", "transkun")

# Top-level modules each peer needs at run time (checked without importing them).
_REQUIRES = {
    "basic-pitch": ("basic_pitch", "onnxruntime", "soundfile", "librosa"),
    "transkun": ("transkun", "moduleconf", "torch", "torchaudio", "pretty_midi", "mir_eval", "librosa"),
}
_INSTALL_HINT = {
    "basic-pitch": "pip install --no-deps basic-pitch (see requirements/5-nodeps.txt)",
    "transkun": "pip install --no-deps transkun moduleconf (see requirements/5-nodeps.txt)",
}

TRANSKUN_WEIGHTS = "pretrained/2.0.pt"  # inside the transkun package
TRANSKUN_CONF = "pretrained/2.0.conf"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_peers() -> tuple[str, ...]:
    """The peers of :data:`PEERS` whose packages are installed here (nothing is imported)."""
    return tuple(p for p in PEERS if all(_installed(m) for m in _REQUIRES[p]))


def transcribe_with(peer: str, audio: np.ndarray, sample_rate: int) -> list[Note]:
    """``peer``'s notes of float mono ``audio`` at ``sample_rate``, sorted by (start, pitch).

    Every note is program 0. Empty or all-zero audio gives ``[]``. An unknown or
    uninstalled peer, non-1-D or non-float audio, NaN/infinite samples or a bad
    sample rate raise :class:`~unimusic.errors.InputError`.
    """
    from unimusic import judge

    if not isinstance(peer, str) or peer not in PEERS:
        raise InputError(str(peer), f"unknown peer transcriber (known: {', '.join(PEERS)})")
    if peer not in available_peers():
        raise InputError(peer, f"peer transcriber is not installed here: {_INSTALL_HINT[peer]}")
    x = judge._check_audio(audio, sample_rate)
    if x.size == 0 or not np.any(x):
        return []
    if peer == "basic-pitch":
        notes = judge.transcribe(x, int(sample_rate))
    else:
        notes = _transkun_transcribe(x, int(sample_rate))
    notes.sort(key=lambda n: (n.start, n.pitch, n.end))
    return notes


# -- Transkun ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _transkun_model():
    """Transkun's shipped model (in eval mode, on CPU), loaded once per process."""
    import warnings
    from importlib.resources import as_file, files

    import moduleconf
    import torch

    package = files("transkun")
    with as_file(package / TRANSKUN_CONF) as conf_path, warnings.catch_warnings():
        # importing transkun.ModelTransformer warns that torch.jit.script is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        model_conf = moduleconf.parseFromFile(str(conf_path))["Model"]
    with as_file(package / TRANSKUN_WEIGHTS) as weights_path:
        checkpoint = torch.load(str(weights_path), map_location="cpu", weights_only=True)
    state = checkpoint["best_state_dict"] if "best_state_dict" in checkpoint else checkpoint["state_dict"]
    model = model_conf.module.TransKun(conf=model_conf.config)
    model.load_state_dict(state)
    model.eval()
    # Gradient checkpointing only matters for training; at inference it just warns.
    for module in model.modules():
        if hasattr(module, "useGradientCheckpoint"):
            module.useGradientCheckpoint = False
    return model


def _transkun_transcribe(x: np.ndarray, sample_rate: int) -> list[Note]:
    import warnings

    import torch

    model = _transkun_model()
    if sample_rate != model.fs:
        import librosa

        x = librosa.resample(x, orig_sr=sample_rate, target_sr=int(model.fs), res_type="soxr_hq")
    wave = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)[:, None])  # [samples, channels]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        events = model.transcribe(wave)  # the console script's defaults: 16 s windows, 8 s hop
    notes = []
    for e in events:
        pitch = int(e.pitch)
        if pitch <= 0:  # -64 / -67: sustain / soft pedal, not notes
            continue
        start, end = float(e.start), float(e.end)
        velocity = int(min(127, max(1, round(float(e.velocity)))))
        notes.append(Note(start=start, end=max(end, start), pitch=pitch, velocity=velocity, program=0))
    return notes
