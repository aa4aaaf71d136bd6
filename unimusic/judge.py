"""basic-pitch as an offline, independent transcription judge.

:func:`transcribe` runs Spotify's basic-pitch (its shipped ICASSP 2022 ONNX
model, no network) on float mono audio and returns the notes it hears;
:func:`onset_f1` scores such a transcription against reference notes (onsets
within a tolerance, pitches within 50 cents, offsets ignored).

basic-pitch knows no instruments: transcribed notes are all program 0, so the
scoring ignores programs and leaves reference drums out.

``basic_pitch`` (and with it onnxruntime, librosa, pretty_midi) is imported
lazily: importing this module stays cheap. Its model is loaded once per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import math
import numbers
import os
import tempfile
from typing import Sequence

import numpy as np

from unimusic.errors import InputError
from unimusic.tokens.midi import Note

DEFAULT_ONSET_TOLERANCE = 0.05  # seconds, as in mir_eval / MT3 evaluations


class _DropBasicPitchWarnings(logging.Filter):
    """Drops the root-logger warnings basic-pitch emits while importing (CoreML/TFLite/TF missing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING and "basic_pitch" in (record.pathname or ""))


@contextlib.contextmanager
def _quiet_basic_pitch_import():
    root = logging.getLogger()
    # logging.warning() on a root logger without handlers calls basicConfig(), which
    # would install a stderr handler for the whole process: a NullHandler prevents it.
    guard = logging.NullHandler()
    drop = _DropBasicPitchWarnings()
    root.addHandler(guard)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        root.removeHandler(guard)


def _basic_pitch():
    """``(predict, Model, ICASSP_2022_MODEL_PATH)`` imported without basic-pitch's import-time warnings."""
    with _quiet_basic_pitch_import():
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import Model, predict
    return predict, Model, ICASSP_2022_MODEL_PATH


@functools.lru_cache(maxsize=1)
def _model():
    """The shipped ONNX model, loaded once per process."""
    _, Model, path = _basic_pitch()
    return Model(path)


def _check_audio(audio, sample_rate) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise InputError("audio", f"expected mono audio as a 1-D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError("audio", f"expected float samples, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InputError("audio", "audio holds NaN or infinite samples")
    if not isinstance(sample_rate, numbers.Integral) or isinstance(sample_rate, bool) or not 1000 <= sample_rate <= 768000:
        raise InputError("sample_rate", f"must be an integer in 1000..768000, got {sample_rate!r}")
    return x.astype(np.float32, copy=False)


def transcribe(audio: np.ndarray, sample_rate: int) -> list[Note]:
    """basic-pitch's notes of float mono ``audio``, sorted by (start, pitch).

    Every note is program 0 (basic-pitch has no instruments); velocity is
    basic-pitch's amplitude scaled to 1..127. Empty or all-zero audio gives
    ``[]``; NaN/infinite samples raise :class:`~unimusic.errors.InputError`.
    """
    x = _check_audio(audio, sample_rate)
    if x.size == 0 or not np.any(x):
        return []
    import soundfile as sf

    predict, _, _ = _basic_pitch()
    model = _model()
    with tempfile.TemporaryDirectory(prefix="unimusic-judge-") as tmp:
        path = os.path.join(tmp, "audio.wav")
        sf.write(path, x, int(sample_rate), subtype="FLOAT")  # float: no clipping of loud input
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Predicting MIDI for ..."
            _, _, events = predict(path, model)
    notes = []
    for start, end, pitch, amplitude, _bends in events:
        start, end = float(start), float(end)
        velocity = int(min(127, max(1, round(float(amplitude) * 127))))
        notes.append(Note(start=start, end=max(end, start), pitch=int(pitch), velocity=velocity, program=0))
    notes.sort(key=lambda n: (n.start, n.pitch, n.end))
    return notes


def _for_judging(notes: Sequence[Note], which: str) -> list[Note]:
    if isinstance(notes, (str, bytes)) or not isinstance(notes, Sequence):
        raise InputError(which, f"expected a list of Note, got {type(notes).__name__}")
    out = []
    for i, n in enumerate(notes):
        if not isinstance(n, Note):
            raise InputError(f"{which} note {i}", f"expected a Note, got {type(n).__name__}")
        if not n.is_drum:
            out.append(dataclasses.replace(n, program=0))
    return out


def onset_scores(
    reference: Sequence[Note], estimate: Sequence[Note], *, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE
) -> dict:
    """:func:`unimusic.metrics.note_f1` (onsets only) with programs ignored and reference drums left out.

    Returns ``{"precision", "recall", "f1", "n_ref", "n_est", "n_match"}``; the
    counts let callers pool several clips (``2 * sum(n_match) / sum(n_ref + n_est)``).
    """
    from unimusic.metrics import note_f1

    if (
        not isinstance(onset_tolerance, numbers.Real)
        or isinstance(onset_tolerance, bool)
        or not math.isfinite(onset_tolerance)
        or onset_tolerance <= 0
    ):
        raise InputError("onset_tolerance", f"must be a positive number of seconds, got {onset_tolerance!r}")
    ref = _for_judging(reference, "reference")
    est = _for_judging(estimate, "estimate")
    return note_f1(ref, est, onset_tolerance=float(onset_tolerance))


def onset_f1(
    reference: Sequence[Note], estimate: Sequence[Note], *, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE
) -> float:
    """Onset F1 of ``estimate`` against ``reference`` (see :func:`onset_scores`); both empty: 1.0."""
    return onset_scores(reference, estimate, onset_tolerance=onset_tolerance)["f1"]


def pooled_f1(scores: Sequence[dict]) -> float:
    """F1 of several :func:`onset_scores` results pooled by their counts; all empty: 1.0."""
    match = sum(s["n_match"] for s in scores)
    total = sum(s["n_ref"] + s["n_est"] for s in scores)
    return 2.0 * match / total if total else 1.0
