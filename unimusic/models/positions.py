"""Token positions per modality: one rule for training examples and for generation.

Every token of a translator sequence (encoder source or decoder target) carries two
position indices ``(a, b)``; the model adds one learned embedding per modality and axis:

* ``lmx``, ``audio``: ``a`` = index in the stream, ``b`` = 0 (audio frames are the stream);
* ``midi``: ``a`` = index in the stream, ``b`` = the event time (the last shift value)
  in bins of ``midi_time_bin`` codec steps, so events at one time share ``b``;
* ``image``: a stream ``height h, cell, cell, ..., [SEP, height h', cell, ...]`` of one or
  more systems, cells column by column (``h`` cells per column). A cell has
  ``a`` = its column (counted on across systems), ``b`` = its row + 1; a height or SEP
  token has ``b`` = 0 and ``a`` = the column it opens.

The first token of a stream (the task token of a source, ``SOS`` of a target) is at
``(0, 0)``; the stream proper starts at index 1. Indices are clamped to
``max_positions - 1``. Only level 0 of a multi-codebook step matters here (a step's
codes share its position). :class:`PositionTracker` is the incremental form used while
generating; :func:`stream_positions` runs it over a whole stream, so both agree by
construction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MODALITIES = ("lmx", "midi", "image", "audio")


@dataclasses.dataclass(frozen=True)
class PositionRules:
    """Model-id facts the position rules need (plain ints, built from a vocabulary)."""

    height_start: int  # model id of "image height 1"
    height_stop: int
    sep: int
    midi_shift_start: int  # model id of MIDI "shift:0"
    midi_shift_stop: int
    max_positions: int = 4096
    midi_time_bin: int = 10  # codec steps (10 ms) per time position: 100 ms

    @classmethod
    def from_vocabulary(cls, vocab, *, max_positions: int = 4096) -> "PositionRules":
        height = vocab.ranges["image_height"]
        first, last = vocab.midi.event_codec.event_range("shift")
        midi = vocab.ranges["midi"].start
        return cls(
            height_start=height.start, height_stop=height.stop, sep=vocab.sep,
            midi_shift_start=midi + first, midi_shift_stop=midi + last + 1, max_positions=max_positions,
        )


class PositionTracker:
    """Positions of a stream's tokens, one token at a time (``advance``)."""

    def __init__(self, rules: PositionRules, modality: str):
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}")
        self.rules, self.modality = rules, modality
        self.index = 0  # tokens seen
        self.time = 0  # midi: last shift value
        self.height = 0  # image: rows per column of the current system (0: none yet)
        self.base_column = 0  # image: first column of the current system
        self.cells = 0  # image: cells of the current system so far

    def _clamp(self, a: int, b: int) -> tuple[int, int]:
        top = self.rules.max_positions - 1
        return min(a, top), min(b, top)

    def advance(self, token: int) -> tuple[int, int]:
        """The position of ``token`` (a model id, level 0), and move past it."""
        r, i = self.rules, self.index
        self.index += 1
        if i == 0:
            return (0, 0)
        if self.modality in ("lmx", "audio"):
            return self._clamp(i, 0)
        if self.modality == "midi":
            if r.midi_shift_start <= token < r.midi_shift_stop:
                self.time = token - r.midi_shift_start
            return self._clamp(i, self.time // r.midi_time_bin)
        # image
        if r.height_start <= token < r.height_stop:
            self.height, self.cells = token - r.height_start + 1, 0
            return self._clamp(self.base_column, 0)
        if token == r.sep:
            if self.height:
                self.base_column += -(-self.cells // self.height)
            self.height, self.cells = 0, 0
            return self._clamp(self.base_column, 0)
        h = self.height or 1
        column, row = self.base_column + self.cells // h, self.cells % h
        self.cells += 1
        return self._clamp(column, row + 1)


def stream_positions(rules: PositionRules, modality: str, level0: np.ndarray) -> np.ndarray:
    """``(T, 2)`` int64 positions of a whole stream (its level-0 model ids, first token included)."""
    tracker = PositionTracker(rules, modality)
    out = np.zeros((len(level0), 2), dtype=np.int64)
    for t, token in enumerate(np.asarray(level0).tolist()):
        out[t] = tracker.advance(int(token))
    return out
