"""Evaluation metrics.

Note-level F1 uses ``mir_eval.transcription`` (imported lazily: importing this
module stays cheap).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

from unimusic.errors import InputError
from unimusic.tokens.midi import Note

# mir_eval needs strictly positive durations; zero-length notes (real MIDI files
# have them) are given this much. Below mir_eval's 0.1 ms rounding of distances.
_MIN_DURATION = 1e-5
# With offset_ratio this small the offset tolerance is offset_min_tolerance for any
# note shorter than ~3 years, i.e. "10 ms" means 10 ms (mir_eval documents ratio > 0).
_OFFSET_RATIO = 1e-9


def _group(notes: Sequence[Note], which: str) -> dict[tuple[bool, int], list[Note]]:
    groups: dict[tuple[bool, int], list[Note]] = {}
    for i, n in enumerate(notes):
        if not (math.isfinite(n.start) and math.isfinite(n.end)) or n.start < 0 or n.end < n.start:
            raise InputError(f"{which} note {i}", f"bad times start={n.start} end={n.end}")
        if not 0 <= n.pitch <= 127:
            raise InputError(f"{which} note {i}", f"pitch {n.pitch} outside 0..127")
        groups.setdefault((bool(n.is_drum), int(n.program)), []).append(n)
    return groups


def _arrays(notes: list[Note]):
    import mir_eval
    import numpy as np

    intervals = np.array([[n.start, max(n.end, n.start + _MIN_DURATION)] for n in notes], dtype=float)
    pitches = mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=float))
    return intervals, pitches


def note_f1(
    ref: Sequence[Note],
    est: Sequence[Note],
    *,
    onset_tolerance: float = 0.05,
    offset: bool = False,
    offset_tolerance: float = 0.05,
) -> dict:
    """Note precision/recall/F1 of ``est`` against ``ref`` (mir_eval matching).

    Notes match only within one (program, is_drum) group; matches of all groups
    are pooled. Onsets match within ``onset_tolerance`` seconds, pitches within
    50 cents; with ``offset=True`` offsets must also match within exactly
    ``offset_tolerance`` seconds (no duration-relative slack). Both lists empty:
    F1 1.0; one empty: 0.0.

    Returns ``{"precision", "recall", "f1", "n_ref", "n_est", "n_match"}``.
    """
    import mir_eval

    ref_groups, est_groups = _group(ref, "reference"), _group(est, "estimated")
    n_match = 0
    for key in ref_groups.keys() & est_groups.keys():
        ref_iv, ref_hz = _arrays(ref_groups[key])
        est_iv, est_hz = _arrays(est_groups[key])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mir_eval warns about empty inputs; none reach here
            matching = mir_eval.transcription.match_notes(
                ref_iv,
                ref_hz,
                est_iv,
                est_hz,
                onset_tolerance=onset_tolerance,
                pitch_tolerance=50.0,
                offset_ratio=_OFFSET_RATIO if offset else None,
                offset_min_tolerance=offset_tolerance,
            )
        n_match += len(matching)
    n_ref, n_est = len(ref), len(est)
    if n_ref == 0 and n_est == 0:
        precision = recall = f1 = 1.0
    else:
        precision = n_match / n_est if n_est else 0.0
        recall = n_match / n_ref if n_ref else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_ref": n_ref, "n_est": n_est, "n_match": n_match}


def symbol_error_rate(references: Sequence[Sequence], estimates: Sequence[Sequence]) -> dict:
    """Pooled symbol error rate: total Levenshtein distance / total reference length.

    This is how OMR work on LMX reports SER (errors pooled over the set, not a mean of
    per-item rates). Items are any sequences of hashable tokens (ids or strings).
    Returns ``{"ser", "edits", "ref_tokens", "items"}``; no references at all: SER 0.0
    when nothing was estimated either, else 1.0.
    """
    from rapidfuzz.distance import Levenshtein

    if len(references) != len(estimates):
        raise InputError("symbol error rate", f"{len(references)} references but {len(estimates)} estimates")
    edits = sum(Levenshtein.distance(list(r), list(e)) for r, e in zip(references, estimates))
    ref_tokens = sum(len(r) for r in references)
    if ref_tokens == 0:
        ser = 0.0 if edits == 0 else 1.0
    else:
        ser = edits / ref_tokens
    return {"ser": ser, "edits": int(edits), "ref_tokens": int(ref_tokens), "items": len(references)}
