"""Multitask training examples: corpus rows -> (source, target) token streams of the 10 directions.

A tokenized corpus row (:func:`unimusic.corpus.row_schema` plus the columns of
:mod:`unimusic.tokenize`) holds one staff system in four modalities. This module
cuts it into the training examples of one direction (``"image->lmx"``...), mixes
the directions, batches and pads them. Plain functions and frozen dataclasses,
numpy only; nothing happens at import.

Sequence contract (the model and the trainer rely on it)
---------------------------------------------------------
A stream is an ``(N, K)`` int64 array of model ids (:class:`~unimusic.tokens.vocabulary.Vocabulary`
ids), ``K = 4`` slots per step. LMX and MIDI use slot 0 (other slots PAD); an image
cell or an audio frame holds level ``l``'s id in slot ``l`` (levels beyond the
tokenizer's, PAD); special tokens (task, SOS, EOS, SEP, image height) use slot 0.

* source: ``[task, ...modality stream]``; target: ``[SOS:target, ...modality stream, EOS]``;
* image stream: ``[height h, cells column by column (rows 0..h-1 of column 0, then column 1...)]``;
  audio: frames in time order; LMX: ids in order; MIDI: the event ids of one window (<= 10 s);
* positions: :func:`unimusic.models.positions.stream_positions` of the whole source
  (task token first) and of the whole target (SOS first).

Slicing (sequences longer than the :class:`Caps` are cut, never dropped)
--------------------------------------------------------------------------
* score-only directions (``image->lmx``, ``lmx->image``): consecutive groups of the
  system's measures, greedily as many as fit both caps (the whole row when it fits).
  The LMX of a group is its measures' tokens: the row's LMX split before every
  ``measure`` token. On real rows (380 rows of the music21 corpus, 285 of them
  multi-part) the count of ``measure`` tokens always equals ``len(measures)``:
  multi-part scores put every part inside the measure (``measure part:1 ... part:2 ...``),
  so one chunk is one system measure with all its parts. A row where the counts
  differ is skipped for LMX directions (reason ``lmx_measure_count``).
  Image columns of a group: a measure ``[x0, x1)`` covers cells ``floor(x0/16)`` up to
  ``ceil(x1/16)`` (exclusive); the first measure of the system starts at column 0
  (clef/key area), the last ends at the last column; a group never starts after
  the end of the previous measure, so consecutive groups cover every column
  (neighbours may share the barline column).
* mixed directions (a score and a time modality): the units are the *played*
  measures of the row's occurrence (``played_measures`` with its times). A group is
  a run of consecutive played entries whose system measures are consecutive too
  (a jump -- a repeat inside the system -- starts a new group), packed greedily
  under both caps and ``max_seconds``. Its score side is those measures, its time
  side ``[start of the first, end of the last)`` (10 ms grid). Measures this
  occurrence does not play (a first ending on the second pass) have no time span
  and are left out of mixed directions (counted as ``unplayed_measures``): their
  score would not match the audio. Played entries tile the row's time, so the
  slices of a mixed direction cover the row's whole time span.
* time-only directions (``audio->midi``, ``midi->audio``): windows of the row's time
  on the 10 ms grid, each the longest that fits both caps and ``max_seconds``;
  after a first greedy pass the windows are evened out (same count, similar lengths).
* MIDI of a span ``[t0, t1)``: ``encode_window(notes, start=t0, end=t1)`` of the
  row's notes: notes sounding at ``t0`` are in the tie section, offsets at ``t1`` are
  in the window, so the windows of consecutive slices decode (``MidiEventCodec.decode``)
  back to exactly the row's notes. Audio of a span: frames ``floor(t0*rate)`` up to
  ``ceil(t1*rate)`` (exclusive; neighbours may share a frame).
* audio continuation: an audio target whose slice starts after the row start is,
  for a deterministic ``continuation_fraction`` of such slices (a hash of the row,
  the direction and the start step), given the ``prefix_frames`` frames before it
  (fewer if the row has fewer) right after SOS; ``Example.prefix`` counts them and
  they are not scored. The prefix counts against the target cap.
* over-cap fallback (one unit alone exceeds a cap), flagged ``Example.clipped`` and
  counted as ``clipped``: LMX is truncated to the cap, an image to the columns that
  fit; in mixed directions the measure's time span is cut into consecutive pieces
  that fit (each paired with the same, possibly truncated, score side); a 10 ms
  MIDI window still over the cap is truncated. A trainer may drop clipped examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

from unimusic.errors import InputError

SLOTS = 4  # codebook slots per step (K)
IMAGE_PATCH = 16  # pixels per image cell
SCORE_MODALITIES = ("lmx", "image")
TIME_MODALITIES = ("midi", "audio")


# -- caps and examples ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Caps:
    """Length limits of one example."""

    source: int = 512  # source steps, task token included
    target: int = 512  # target steps, SOS and EOS (and a continuation prefix) included
    max_seconds: float = 10.0  # time span of a slice with a time modality; <= the MIDI codec window
    prefix_frames: int = 32  # audio continuation prefix length (frames)
    continuation_fraction: float = 0.5  # of audio-target slices that start after the row start

    def __post_init__(self):
        if not isinstance(self.source, int) or self.source < 2:
            raise InputError("caps", f"source must be an integer >= 2, got {self.source!r}")
        if not isinstance(self.target, int) or self.target < 3:
            raise InputError("caps", f"target must be an integer >= 3, got {self.target!r}")
        if not (isinstance(self.max_seconds, (int, float)) and math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise InputError("caps", f"max_seconds must be a positive number, got {self.max_seconds!r}")
        if not isinstance(self.prefix_frames, int) or self.prefix_frames < 0:
            raise InputError("caps", f"prefix_frames must be an integer >= 0, got {self.prefix_frames!r}")
        if not 0.0 <= self.continuation_fraction <= 1.0:
            raise InputError("caps", f"continuation_fraction must be in 0..1, got {self.continuation_fraction!r}")


# -- modality streams (training examples and inference build sources with these) ---------


def slot0(vocab, ids) -> np.ndarray:
    """``(N, SLOTS)`` stream of single-stream ids (LMX, MIDI, specials): slot 0, the rest PAD."""
    out = np.full((len(ids), SLOTS), vocab.pad, dtype=np.int64)
    out[:, 0] = np.asarray(ids, dtype=np.int64)
    return out


def image_cells(vocab, codes: np.ndarray, *, source: str = "image codes") -> np.ndarray:
    """RQ-VAE codes ``(L, h, w)`` -> model ids ``(w, h, SLOTS)``: cells column by column."""
    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise InputError(source, f"expected (levels, rows, columns) codes, got shape {codes.shape}")
    levels, h, w = codes.shape
    have = min(vocab.config.image_codebooks, SLOTS)
    if levels > have:
        raise InputError(source, f"{levels} codebook levels, the vocabulary has {have}")
    cells = np.full((w, h, SLOTS), vocab.pad, dtype=np.int64)
    for level in range(levels):
        r = vocab.ranges[f"image:{level}"]
        plane = codes[level].astype(np.int64)
        if plane.size and (plane.min() < 0 or plane.max() >= r.size):
            raise InputError(source, f"level {level} codes outside 0..{r.size - 1}")
        cells[:, :, level] = plane.T + r.start
    return cells


def audio_frames(vocab, codes: np.ndarray, *, source: str = "audio codes") -> np.ndarray:
    """Codec codes ``(L, T)`` -> model ids ``(T, SLOTS)``: one step per frame."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InputError(source, f"expected (levels, frames) codes, got shape {codes.shape}")
    levels, frames = codes.shape
    have = min(vocab.config.audio_codebooks, SLOTS)
    if levels > have:
        raise InputError(source, f"{levels} codebook levels, the vocabulary has {have}")
    steps = np.full((frames, SLOTS), vocab.pad, dtype=np.int64)
    for level in range(levels):
        r = vocab.ranges[f"audio:{level}"]
        plane = codes[level].astype(np.int64)
        if plane.size and (plane.min() < 0 or plane.max() >= r.size):
            raise InputError(source, f"level {level} codes outside 0..{r.size - 1}")
        steps[:, level] = plane + r.start
    return steps


def source_stream(vocab, rules, task: str, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(src, src_pos)`` of a direction's source: the task token, then the modality stream ``body``."""
    from unimusic.models.positions import stream_positions

    source, target = _check_task(task)
    src = np.concatenate([slot0(vocab, [vocab.task(source, target)]), np.asarray(body, dtype=np.int64).reshape(-1, SLOTS)])
    return src, stream_positions(rules, source, src[:, 0])


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One training example of one direction (arrays are int64)."""

    task: str  # "image->lmx"
    source: str
    target: str
    dataset: str
    piece_id: str
    src: np.ndarray  # (S, K) model ids: task token, source stream
    src_pos: np.ndarray  # (S, 2)
    tgt: np.ndarray  # (T, K) model ids: SOS, [prefix], target stream, EOS
    tgt_pos: np.ndarray  # (T, 2)
    prefix: int  # target steps right after SOS that are context only (not scored)
    span: tuple  # (start_s, end_s, first_measure_index, last_measure_index) within the row
    row: tuple = ()  # (piece_id, variant, system, occurrence)
    index: int = 0  # slice number within the row and direction
    clipped: bool = False  # an over-cap fallback cut or truncated this example
    split: str = ""
    columns: tuple = (0, 0)  # image columns [c0, c1) of the row's codes (image directions)

    @property
    def length(self) -> int:
        """Source plus target steps (the bucketing key)."""
        return int(len(self.src) + len(self.tgt))


# -- the row, parsed ----------------------------------------------------------------------


class _Missing(Exception):
    """A row lacks what a direction needs (the message is the skip reason)."""


def _unit_hash(*parts) -> float:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def row_key(row: Mapping) -> tuple:
    """A row's stable identity: (piece id, variant, system, occurrence); older shards lack ``variant``."""
    return (str(row.get("piece_id") or ""), str(row.get("variant") or "score"), int(row.get("system") or 0),
            int(row.get("occurrence") or 0))


class _Row:
    """One corpus row with its modalities prepared lazily (model ids, ``SLOTS`` wide)."""

    def __init__(self, row: Mapping, vocab, caps: Caps):
        self.row, self.vocab, self.caps = row, vocab, caps
        self.pad = vocab.pad
        self.sps = vocab.midi.config.steps_per_second
        self.piece_id = str(row.get("piece_id") or "")
        self.key = row_key(row)
        self.split = str(row.get("split") or "")
        measures = row.get("measures")
        self.measures = [int(m) for m in measures] if measures is not None else []
        start, end = row.get("start"), row.get("end")
        self.steps = (max(0, int(round((float(end) - float(start)) * self.sps)))
                      if start is not None and end is not None else None)
        self._done: dict[str, object] = {}
        self._midi_cache: dict[tuple[int, int], np.ndarray] = {}

    def get(self, name: str):
        """The prepared modality ``name`` (or ``played``); raises _Missing with the reason."""
        if name not in self._done:
            try:
                self._done[name] = getattr(self, "_prepare_" + name)()
            except _Missing as exc:
                self._done[name] = exc
        value = self._done[name]
        if isinstance(value, _Missing):
            raise value
        return value

    def missing(self, name: str) -> str | None:
        try:
            self.get(name)
        except _Missing as exc:
            return str(exc)
        return None

    # -- preparation ------------------------------------------------------------------
    def _prepare_lmx(self):
        ids = self.row.get("lmx")
        if ids is None or len(ids) == 0:
            raise _Missing("no_lmx")
        if not self.measures:
            raise _Missing("no_measures")
        codec_ids = np.asarray(ids, dtype=np.int64)
        model = np.asarray(self.vocab.to_model("lmx", codec_ids), dtype=np.int64)
        cuts = np.flatnonzero(codec_ids == self.vocab.lmx.tokens.index("measure"))
        if len(cuts) != len(self.measures):
            raise _Missing("lmx_measure_count")
        # Tokens before the first "measure" (none in real rows) stay with the first measure.
        return np.split(model, cuts[1:])

    def _prepare_image(self):
        from unimusic.tokenize import decode_image_codes

        codes = decode_image_codes(self.row)
        if codes is None:
            raise _Missing("no_image_codes")
        cells = image_cells(self.vocab, codes, source=f"{self.piece_id} image codes")
        w, h = cells.shape[:2]
        if h < 1 or w < 1:
            raise _Missing("empty_image")
        if h > self.vocab.config.image_max_rows:
            raise _Missing("image_too_tall")
        measure_x = self.row.get("measure_x")
        if measure_x is None or len(measure_x) != len(self.measures) or not self.measures:
            raise _Missing("no_measure_x")
        patch = IMAGE_PATCH
        if self.row.get("width"):
            patch = max(1, int(self.row["width"]) // w)
        spans = []
        for x0, x1 in measure_x:
            c0 = min(max(0, int(x0) // patch), w - 1)
            c1 = min(max(c0 + 1, -(-int(x1) // patch)), w)
            spans.append((c0, c1))
        n = len(spans)
        starts = [0] + [min(spans[i][0], spans[i - 1][1]) for i in range(1, n)]
        ends = [max(spans[i][1], spans[i + 1][0]) for i in range(n - 1)] + [w]
        return {"cells": cells, "h": h, "w": w, "col_start": starts, "col_end": ends,
                "height": self.vocab.height_token(h)}

    def _prepare_audio(self):
        from unimusic.tokenize import decode_audio_codes

        codes = decode_audio_codes(self.row)
        rate = self.row.get("audio_frame_rate")
        if codes is None or rate is None:
            raise _Missing("no_audio_codes")
        if self.steps is None:
            raise _Missing("no_time_span")
        steps = audio_frames(self.vocab, codes, source=f"{self.piece_id} audio codes")
        if len(steps) < 1:
            raise _Missing("empty_audio")
        return {"frames": steps, "rate": float(rate)}

    def _prepare_midi(self):
        from unimusic.tokens.midi import Note

        notes = self.row.get("notes")
        if notes is None:
            raise _Missing("no_notes")
        if self.steps is None or self.steps < 1:
            raise _Missing("no_time_span")
        try:
            parsed = [Note(start=float(n["start"]), end=float(n["end"]), pitch=int(n["pitch"]),
                           velocity=int(n["velocity"]), program=int(n["program"]), is_drum=bool(n["is_drum"]))
                      for n in notes]
            normalized = self.vocab.midi.normalize(parsed)
        except (InputError, KeyError, TypeError, ValueError):
            raise _Missing("invalid_notes") from None
        # Step bounds, to hand a window only the notes it touches (normalized notes stay as they are).
        starts = np.array([round(n.start * self.sps) for n in normalized], dtype=np.int64)
        ends = np.array([round(n.end * self.sps) for n in normalized], dtype=np.int64)
        return {"notes": normalized, "starts": starts, "ends": ends}

    def _prepare_played(self):
        """Played entries: system measure index per entry and step boundaries (P + 1)."""
        played = self.row.get("played_measures")
        starts = self.row.get("measure_start")
        if played is None or starts is None or len(played) == 0 or len(starts) != len(played):
            raise _Missing("no_played_measures")
        if self.steps is None or self.steps < 1:
            raise _Missing("no_time_span")
        where = {m: i for i, m in enumerate(self.measures)}
        if any(int(m) not in where for m in played):
            raise _Missing("played_measure_not_in_system")
        system = [where[int(m)] for m in played]
        bounds = [0]
        for t in list(starts)[1:]:
            bounds.append(min(max(int(round(float(t) * self.sps)), bounds[-1]), self.steps))
        bounds.append(self.steps)
        return {"system": system, "bounds": bounds, "unplayed": len(self.measures) - len(set(system))}

    # -- streams --------------------------------------------------------------------------
    def slot0(self, ids) -> np.ndarray:
        return slot0(self.vocab, ids)

    def frame_range(self, s0: int, s1: int) -> tuple[int, int]:
        audio = self.get("audio")
        per_step = audio["rate"] / self.sps
        total = len(audio["frames"])
        f0 = min(total, max(0, math.floor(s0 * per_step + 1e-9)))
        f1 = min(total, max(f0, math.ceil(s1 * per_step - 1e-9)))
        return f0, f1

    def midi_ids(self, s0: int, s1: int) -> np.ndarray:
        key = (s0, s1)
        if key not in self._midi_cache:
            midi = self.get("midi")
            touching = np.flatnonzero((midi["starts"] < s1) & (midi["ends"] >= s0))
            notes = [midi["notes"][i] for i in touching]
            ids = self.vocab.midi.encode_window(notes, start=s0 / self.sps, end=s1 / self.sps)
            self._midi_cache[key] = np.asarray(ids, dtype=np.int64) + self.vocab.ranges["midi"].start
        return self._midi_cache[key]

    def body(self, modality: str, span: "_Span", budget: int) -> tuple[np.ndarray | None, bool]:
        """A modality's stream of ``span`` cut to ``budget`` steps, and whether it was cut
        (None: not even one step/column fits)."""
        if budget < 1:
            return None, True
        if modality == "lmx":
            ids = np.concatenate(self.get("lmx")[span.m0 : span.m1 + 1])
            return self.slot0(ids[:budget]), len(ids) > budget
        if modality == "image":
            image = self.get("image")
            c0, c1, h = span.c0, span.c1, image["h"]
            cut = 1 + h * (c1 - c0) > budget
            if cut:
                c1 = c0 + (budget - 1) // h
                if c1 <= c0:
                    return None, True
            cells = image["cells"][c0:c1].reshape(-1, SLOTS)
            return np.concatenate([self.slot0([image["height"]]), cells]), cut
        if modality == "audio":
            f0, f1 = self.frame_range(span.s0, span.s1)
            frames = self.get("audio")["frames"][f0:f1]
            return frames[:budget], len(frames) > budget
        ids = self.midi_ids(span.s0, span.s1)
        return self.slot0(ids[:budget]), len(ids) > budget

    def prefix_frames(self, task: str, s0: int) -> np.ndarray:
        """The continuation prefix of an audio-target slice starting at step ``s0`` (maybe empty)."""
        caps = self.caps
        empty = np.zeros((0, SLOTS), dtype=np.int64)
        if s0 <= 0 or caps.prefix_frames <= 0 or caps.continuation_fraction <= 0:
            return empty
        if _unit_hash(*self.key, task, s0) >= caps.continuation_fraction:
            return empty
        f0, _ = self.frame_range(s0, s0)
        n = min(caps.prefix_frames, f0, caps.target - 3)  # at least one scored step stays
        return self.get("audio")["frames"][f0 - n : f0] if n > 0 else empty


@dataclasses.dataclass(frozen=True)
class _Span:
    m0: int = -1  # first / last system measure index (-1: unknown)
    m1: int = -1
    s0: int = 0  # time steps [s0, s1) from the row start
    s1: int = 0
    c0: int = 0  # image columns [c0, c1)
    c1: int = 0


@dataclasses.dataclass
class _Piece:
    span: _Span
    src: np.ndarray
    body: np.ndarray
    prefix: np.ndarray
    clipped: bool
    timed: bool  # span.s0/s1 are meaningful


# -- planning ---------------------------------------------------------------------------------


class _Planner:
    def __init__(self, view: _Row, task: str, caps: Caps):
        self.view, self.task, self.caps = view, task, caps
        self.source, self.target = task.split("->")
        self.timed = self.source in TIME_MODALITIES or self.target in TIME_MODALITIES
        self.max_steps = int(math.floor(caps.max_seconds * view.sps + 1e-9))

    def build(self, span: _Span, *, stop: str | None = None) -> tuple[_Piece | None, bool, bool]:
        """The piece of ``span`` with every stream cut to its cap: (piece, score side cut, time side cut).

        ``stop="any"`` / ``"time"``: give up (None) as soon as any / a time side is cut; the MIDI
        side (the costly one) is built last."""
        prefix = (self.view.prefix_frames(self.task, span.s0) if self.target == "audio"
                  else np.zeros((0, SLOTS), dtype=np.int64))
        sides = [(self.source, self.caps.source - 1), (self.target, self.caps.target - 2 - len(prefix))]
        bodies, cut = {}, {"score": False, "time": False}
        for modality, budget in sorted(sides, key=lambda side: side[0] == "midi"):
            body, was_cut = self.view.body(modality, span, budget)
            if body is None:
                return None, True, True
            kind = "time" if modality in TIME_MODALITIES else "score"
            cut[kind] |= was_cut
            if was_cut and (stop == "any" or stop == kind):
                return None, cut["score"], cut["time"]
            bodies[modality] = body
        if self.timed and span.s1 - span.s0 > self.max_steps:
            cut["time"] = True
        piece = _Piece(span, bodies[self.source], bodies[self.target], prefix, cut["score"] or cut["time"], self.timed)
        return piece, cut["score"], cut["time"]

    def fits(self, span: _Span) -> _Piece | None:
        if self.timed and not 0 < span.s1 - span.s0 <= self.max_steps:
            return None
        piece, score_cut, time_cut = self.build(span, stop="any")
        return piece if piece is not None and not (score_cut or time_cut) else None

    def longest(self, make, s0: int, hi: int, *, time_only: bool) -> tuple[int, _Piece] | None:
        """The largest ``s1`` in ``(s0, hi]`` whose piece ``make(s1)`` fits (time side only with
        ``time_only``), assuming longer spans need more steps; None if not even ``s0 + 1`` fits."""
        hi = min(hi, s0 + self.max_steps)

        def ok(s1):
            if time_only:
                piece, _, time_cut = self.build(make(s1), stop="time")
                return piece if piece is not None and not time_cut else None
            return self.fits(make(s1))

        if hi <= s0:
            return None
        piece = ok(hi)
        if piece is not None:
            return hi, piece
        lo_piece = ok(s0 + 1)
        if lo_piece is None:
            return None
        lo, top = s0 + 1, hi  # ok(lo), not ok(top)
        while top - lo > 1:
            mid = (lo + top) // 2
            p = ok(mid)
            if p is not None:
                lo, lo_piece = mid, p
            else:
                top = mid
        return lo, lo_piece

    # -- per kind of direction ------------------------------------------------------------------
    def score_only(self) -> tuple[list[_Piece], Counter]:
        view, counts = self.view, Counter()
        n = len(view.measures)
        image = view.get("image") if "image" in (self.source, self.target) else None
        played = None if view.missing("played") else view.get("played")

        def span(m0, m1):
            s0 = s1 = 0
            if played is not None:
                hits = [p for p, m in enumerate(played["system"]) if m0 <= m <= m1]
                if hits:
                    s0, s1 = played["bounds"][min(hits)], played["bounds"][max(hits) + 1]
            c0, c1 = (image["col_start"][m0], image["col_end"][m1]) if image is not None else (0, 0)
            return _Span(m0, m1, s0, s1, c0, c1)

        pieces, i = [], 0
        while i < n:
            best, j = None, i
            while j < n:
                piece = self.fits(span(i, j))
                if piece is None:
                    break
                best, j = (piece, j), j + 1
            if best is None:  # one measure over a cap: truncated
                piece, _, _ = self.build(span(i, i))
                if piece is None:
                    counts["unfit"] += 1
                else:
                    piece.clipped = True
                    pieces.append(piece)
                i += 1
            else:
                pieces.append(best[0])
                i = best[1] + 1
        for p in pieces:
            p.timed = played is not None and p.span.s1 > p.span.s0
        return pieces, counts

    def mixed(self) -> tuple[list[_Piece], Counter]:
        view, counts = self.view, Counter()
        played = view.get("played")
        image = view.get("image") if "image" in (self.source, self.target) else None
        system, bounds = played["system"], played["bounds"]
        counts["unplayed_measures"] += played["unplayed"]

        def span(p0, p1, s0=None, s1=None):
            m0, m1 = system[p0], system[p1]
            c0, c1 = (image["col_start"][m0], image["col_end"][m1]) if image is not None else (0, 0)
            return _Span(m0, m1, bounds[p0] if s0 is None else s0, bounds[p1 + 1] if s1 is None else s1, c0, c1)

        runs, start = [], 0
        for p in range(1, len(system) + 1):
            if p == len(system) or system[p] != system[p - 1] + 1:
                runs.append((start, p - 1))
                start = p
        pieces = []
        for first, last in runs:
            i = first
            while i <= last:
                best, j = None, i
                while j <= last:
                    sp = span(i, j)
                    if sp.s1 == sp.s0:  # a measure of no duration: only with the next one
                        j += 1
                        continue
                    piece = self.fits(sp)
                    if piece is None:
                        break
                    best, j = (piece, j), j + 1
                if best is not None:
                    pieces.append(best[0])
                    i = best[1] + 1
                    continue
                if bounds[i + 1] == bounds[i]:  # empty tail of a run
                    counts["empty_span"] += 1
                    i += 1
                    continue
                # One measure over a cap: its score side truncated, its time cut in pieces.
                pieces += self._cut_measure(span, i, counts)
                i += 1
        return pieces, counts

    def _cut_measure(self, span, p: int, counts: Counter) -> list[_Piece]:
        """The fallback for played entry ``p`` alone over a cap: its time cut in consecutive pieces
        that fit, each with the (truncated) score side."""
        view = self.view
        bounds = view.get("played")["bounds"]
        out, s = [], bounds[p]
        while s < bounds[p + 1]:
            make = lambda s1, s0=s: span(p, p, s0, s1)  # noqa: E731
            found = self.longest(make, s, bounds[p + 1], time_only=True)
            if found is None:
                s1 = s + 1
                piece, _, _ = self.build(make(s1))
            else:
                s1, piece = found
            if piece is not None:
                piece.clipped = True
                out.append(piece)
            else:
                counts["unfit"] += 1
            s = s1
        return out

    def time_only(self) -> tuple[list[_Piece], Counter]:
        view, counts = self.view, Counter()
        played = None if view.missing("played") else view.get("played")

        def measures_of(s0, s1):
            if played is None:
                return -1, -1
            hits = [p for p in range(len(played["system"]))
                    if played["bounds"][p] < s1 and played["bounds"][p + 1] > s0]
            return (played["system"][hits[0]], played["system"][hits[-1]]) if hits else (-1, -1)

        def make(s0, s1):
            m0, m1 = measures_of(s0, s1)
            return _Span(m0, m1, s0, s1)

        def tile(limit):
            out, s = [], 0
            while s < view.steps:
                found = self.longest(lambda s1, s0=s: make(s0, s1), s, min(view.steps, s + limit), time_only=False)
                if found is None:  # 10 ms that do not fit: truncated
                    s1 = s + 1
                    piece, _, _ = self.build(make(s, s1))
                    if piece is not None:
                        piece.clipped = True
                        out.append(piece)
                else:
                    s1, piece = found
                    out.append(piece)
                s = s1
            return out

        pieces = tile(self.max_steps)
        if len(pieces) > 1:  # even the windows out: no 10 ms leftovers
            even = tile(-(-view.steps // len(pieces)))
            if len(even) == len(pieces):
                pieces = even
        return pieces, counts


# -- examples --------------------------------------------------------------------------------


def _check_task(task: str) -> tuple[str, str]:
    from unimusic.tokens.vocabulary import TASKS

    if task not in TASKS:
        raise InputError(str(task), f"not a supported direction (have {', '.join(TASKS)})")
    source, target = task.split("->")
    return source, target


def _examples(view: _Row, task: str, *, vocab, rules, caps: Caps, dataset: str, counts: Counter) -> list[Example]:
    from unimusic.models.positions import stream_positions

    source, target = _check_task(task)
    if caps.max_seconds > vocab.midi.config.window_seconds + 1e-9:
        raise InputError("caps", f"max_seconds {caps.max_seconds} is above the MIDI codec window "
                                 f"{vocab.midi.config.window_seconds} s")
    kinds = {source in SCORE_MODALITIES, target in SCORE_MODALITIES}
    needs = [source, target] + (["played"] if kinds == {True, False} else [])
    counts["rows"] += 1
    for name in needs:
        reason = view.missing(name)
        if reason is not None:
            counts["skipped"] += 1
            counts[f"skipped:{reason}"] += 1
            return []
    planner = _Planner(view, task, caps)
    if kinds == {True}:
        pieces, extra = planner.score_only()
    elif kinds == {False}:
        pieces, extra = planner.time_only()
    else:
        pieces, extra = planner.mixed()
    counts.update(extra)
    sos, eos = vocab.sos(target), vocab.eos
    out = []
    for index, piece in enumerate(pieces):
        src, src_pos = source_stream(vocab, rules, task, piece.src)
        tgt = np.concatenate([view.slot0([sos]), piece.prefix, piece.body, view.slot0([eos])])
        sp = piece.span
        t0, t1 = (sp.s0 / view.sps, sp.s1 / view.sps) if piece.timed else (0.0, 0.0)
        columns = (0, 0)
        if "image" in (source, target):
            body = piece.src if source == "image" else piece.body
            columns = (sp.c0, sp.c0 + (len(body) - 1) // view.get("image")["h"])
        out.append(Example(
            task=task, source=source, target=target, dataset=dataset, piece_id=view.piece_id,
            src=src, src_pos=src_pos,
            tgt=tgt, tgt_pos=stream_positions(rules, target, tgt[:, 0]),
            prefix=len(piece.prefix), span=(t0, t1, sp.m0, sp.m1), row=view.key, index=index,
            clipped=piece.clipped, split=view.split, columns=columns,
        ))
    counts["used"] += bool(out)
    counts["examples"] += len(out)
    counts["clipped"] += sum(e.clipped for e in out)
    counts["continuations"] += sum(e.prefix > 0 for e in out)
    return out


def examples_for_row(row: Mapping, task: str, *, vocab, rules, caps: Caps = Caps(),
                     dataset: str = "corpus") -> list[Example]:
    """The examples of direction ``task`` from one tokenized corpus row ([] if the row lacks a
    modality it needs). Long rows are sliced (see the module docstring), never dropped."""
    return _examples(_Row(row, vocab, caps), task, vocab=vocab, rules=rules, caps=caps, dataset=dataset,
                     counts=Counter())


def build_examples(rows: Iterable[Mapping], tasks: Iterable[str], *, vocab, rules, caps: Caps = Caps(),
                   dataset: str = "corpus") -> tuple[dict[tuple[str, str], list[Example]], dict[str, dict[str, int]]]:
    """Examples of every direction in ``tasks`` from ``rows``: ``{(task, dataset): [Example]}``
    (a key for every task, maybe empty) and stats per task: ``rows``, ``used``, ``skipped``
    (and ``skipped:<reason>``), ``examples``, ``clipped`` (over-cap fallbacks), ``continuations``,
    ``unplayed_measures`` (left out of mixed directions), ``empty_span``, ``unfit``."""
    tasks = list(dict.fromkeys(tasks))
    for task in tasks:
        _check_task(task)
    out = {(task, dataset): [] for task in tasks}
    base = ("rows", "used", "skipped", "examples", "clipped", "continuations")
    counts = {task: Counter(dict.fromkeys(base, 0)) for task in tasks}
    for row in rows:
        view = _Row(row, vocab, caps)
        for task in tasks:
            out[(task, dataset)] += _examples(view, task, vocab=vocab, rules=rules, caps=caps, dataset=dataset,
                                              counts=counts[task])
    return out, {task: dict(sorted(c.items())) for task, c in counts.items()}


# -- mixing ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DirectionWeight:
    """Sampling weight of a direction; ``dataset="*"``: of every dataset without its own weight
    (shared equally among them). The weight ramps linearly from ``start_weight`` (default:
    ``weight``) at step ``ramp[0]`` to ``weight`` at step ``ramp[1]``."""

    task: str
    weight: float
    dataset: str = "*"
    start_weight: float | None = None
    ramp: tuple[int, int] = (0, 0)

    def __post_init__(self):
        _check_task(self.task)
        for name in ("weight", "start_weight"):
            value = getattr(self, name)
            if value is None and name == "start_weight":
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"weight of {self.task}", f"{name} must be a number >= 0, got {value!r}")
        if (len(self.ramp) != 2 or not all(isinstance(s, int) and s >= 0 for s in self.ramp)
                or self.ramp[1] < self.ramp[0]):
            raise InputError(f"weight of {self.task}", f"ramp must be two steps 0 <= a <= b, got {self.ramp!r}")
        object.__setattr__(self, "ramp", tuple(self.ramp))

    def at(self, step: int) -> float:
        start = self.weight if self.start_weight is None else self.start_weight
        a, b = self.ramp
        if step >= b:
            return float(self.weight)
        if step <= a:
            return float(start)
        return float(start + (self.weight - start) * (step - a) / (b - a))


_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_VALUE = re.compile(rf"^\s*({_NUMBER})\s*(?:\.\.\s*({_NUMBER})\s*@\s*([0-9]+)\s*\.\.\s*([0-9]+))?\s*$")


def parse_weights(spec) -> list[DirectionWeight]:
    """Direction weights from a string, a mapping or DirectionWeights.

    String: ``"image->lmx=1,audio->midi=2"``; a key ``task@dataset`` weighs one dataset; a value
    ``w0..w1@a..b`` ramps from ``w0`` at step ``a`` to ``w1`` at step ``b``. Mapping: the same keys,
    values a number, such a string, or ``{"weight", "start_weight", "ramp"}``."""
    if spec is None:
        return []
    if isinstance(spec, DirectionWeight):
        return [spec]
    out: list[DirectionWeight] = []
    if isinstance(spec, str):
        items = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, value = part.rpartition("=")
            if not sep or not key.strip():
                raise InputError(f"weights {spec!r}", f"{part!r} is not task=weight")
            items.append((key.strip(), value))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = list(spec)
        if all(isinstance(w, DirectionWeight) for w in items):
            out = items
            items = []
        else:
            raise InputError("weights", f"expected a string, a mapping or DirectionWeights, got {type(spec).__name__}")
    for key, value in items:
        task, _, dataset = str(key).partition("@")
        task, dataset = task.strip(), dataset.strip() or "*"
        if isinstance(value, Mapping):
            if "weight" not in value:
                raise InputError(f"weight of {key}", "a mapping needs a 'weight'")
            ramp = tuple(int(s) for s in value.get("ramp", (0, 0)))
            out.append(DirectionWeight(task, float(value["weight"]), dataset,
                                       None if value.get("start_weight") is None else float(value["start_weight"]),
                                       ramp))
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(DirectionWeight(task, float(value), dataset))
            continue
        m = _VALUE.match(str(value))
        if m is None:
            raise InputError(f"weight of {key}", f"{value!r} is not a number or w0..w1@step0..step1")
        if m.group(2) is None:
            out.append(DirectionWeight(task, float(m.group(1)), dataset))
        else:
            out.append(DirectionWeight(task, float(m.group(2)), dataset, float(m.group(1)),
                                       (int(m.group(3)), int(m.group(4)))))
    seen = Counter((w.task, w.dataset) for w in out)
    twice = [f"{t}@{d}" for (t, d), n in seen.items() if n > 1]
    if twice:
        raise InputError("weights", f"given twice: {', '.join(sorted(twice))}")
    return out


def mix_probabilities(weights, step: int, available_keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Probability of each available ``(task, dataset)`` at ``step`` (sums to 1).

    ``weights``: DirectionWeights (or anything :func:`parse_weights` reads); empty or None:
    uniform. A weight of an unavailable direction is ignored; an available direction without
    a weight gets 0. All zero: InputError."""
    keys = sorted(set(tuple(k) for k in available_keys))
    if not keys:
        raise InputError("directions", "no direction has examples")
    weights = parse_weights(weights)
    if not weights:
        return {k: 1.0 / len(keys) for k in keys}
    values = dict.fromkeys(keys, 0.0)
    exact = {(w.task, w.dataset): w for w in weights if w.dataset != "*"}
    for key in keys:
        if key in exact:
            values[key] = exact[key].at(step)
    for w in weights:
        if w.dataset == "*":
            rest = [k for k in keys if k[0] == w.task and k not in exact]
            for k in rest:
                values[k] = w.at(step) / len(rest)
    total = sum(values.values())
    if not total > 0:
        named = ", ".join(f"{w.task}@{w.dataset}" for w in weights)
        raise InputError("direction weights", f"all zero at step {step} over the available directions "
                                              f"{', '.join(f'{t}@{d}' for t, d in keys)} (weights: {named})")
    return {k: v / total for k, v in values.items()}


# -- batches ---------------------------------------------------------------------------------

_DIRECTION_STREAM, _BUCKET_STREAM = 0x6D6978, 0x627563  # keep the two random streams apart


def _nonneg(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(name, f"must be an integer >= 0, got {value!r}")
    return int(value)


class ExamplePool:
    """Examples by ``(task, dataset)``; :meth:`batch` is a pure function of (seed, step, rank)."""

    def __init__(self, examples_by_key: Mapping[tuple[str, str], Sequence[Example]], *, seed: int):
        self.seed = _nonneg("seed", seed)
        self.examples = {tuple(k): list(v) for k, v in examples_by_key.items() if len(v)}
        if not self.examples:
            raise InputError("example pool", "no examples")
        self.keys = sorted(self.examples)
        self._sorted = {}
        for key, examples in self.examples.items():
            order = sorted(range(len(examples)), key=lambda i: (examples[i].length, i))
            self._sorted[key] = (
                [examples[i] for i in order],
                np.array([len(examples[i].src) for i in order], dtype=np.int64),
                np.array([len(examples[i].tgt) for i in order], dtype=np.int64),
            )

    def direction(self, step: int, *, weights) -> tuple[str, str]:
        """The direction of ``step`` (same on every worker): drawn with an rng of (seed, step)."""
        probs = mix_probabilities(weights, step, self.keys)
        rng = np.random.default_rng([_DIRECTION_STREAM, self.seed, _nonneg("step", step)])
        u = rng.random()
        acc = 0.0
        chosen = None
        for key in self.keys:
            acc += probs[key]
            if probs[key] > 0:
                chosen = key
                if u < acc:
                    break
        return chosen

    def batch(self, step: int, rank: int, *, weights, max_tokens: int,
              max_batch: int) -> tuple[tuple[str, str], list[Example]]:
        """The batch of worker ``rank`` at ``step``: the step's direction, then a random anchor in
        the examples sorted by length and its neighbours, while ``len(batch) * (max source +
        max target steps) <= max_tokens`` and ``len(batch) <= max_batch`` (at least one)."""
        key = self.direction(step, weights=weights)
        rank, max_batch = _nonneg("rank", rank), max(1, int(max_batch))
        examples, src_len, tgt_len = self._sorted[key]
        rng = np.random.default_rng([_BUCKET_STREAM, self.seed, int(step), rank])
        n = len(examples)
        lo = hi = int(rng.integers(n))
        max_s, max_t = int(src_len[lo]), int(tgt_len[lo])
        blocked = {"left": lo == 0, "right": hi == n - 1}
        while hi - lo + 1 < max_batch and not all(blocked.values()):
            open_sides = [s for s in ("left", "right") if not blocked[s]]
            side = open_sides[int(rng.integers(len(open_sides)))]
            i = lo - 1 if side == "left" else hi + 1
            s, t = max(max_s, int(src_len[i])), max(max_t, int(tgt_len[i]))
            if (hi - lo + 2) * (s + t) > max_tokens:
                blocked[side] = True
                continue
            max_s, max_t = s, t
            if side == "left":
                lo = i
                blocked["left"] = lo == 0
            else:
                hi = i
                blocked["right"] = hi == n - 1
        return key, examples[lo : hi + 1]


def collate(examples: Sequence[Example], *, pad: int) -> dict:
    """Pad a batch of one direction to its longest source and target.

    ``src`` (B,S,K), ``src_pos`` (B,S,2), ``src_mask`` (B,S) True on real steps; ``tgt_in`` =
    tgt[:-1] (B,T,K), ``tgt_pos`` = tgt_pos[:-1] (B,T,2), ``tgt_mask`` (B,T); ``tgt_out`` = tgt[1:]
    with ``pad`` where nothing is scored: padding and the continuation prefix (levels >= 1 of
    special tokens are pad in the streams already); ``prefix`` (B,); and the strings ``task``,
    ``source``, ``target``."""
    if not examples:
        raise InputError("batch", "no examples")
    tasks = {e.task for e in examples}
    if len(tasks) > 1:
        raise InputError("batch", f"mixes directions {sorted(tasks)}")
    b = len(examples)
    k = examples[0].src.shape[1]
    s_max = max(len(e.src) for e in examples)
    t_max = max(len(e.tgt) for e in examples) - 1
    out = {
        "src": np.full((b, s_max, k), pad, dtype=np.int64),
        "src_pos": np.zeros((b, s_max, 2), dtype=np.int64),
        "src_mask": np.zeros((b, s_max), dtype=bool),
        "tgt_in": np.full((b, t_max, k), pad, dtype=np.int64),
        "tgt_pos": np.zeros((b, t_max, 2), dtype=np.int64),
        "tgt_out": np.full((b, t_max, k), pad, dtype=np.int64),
        "tgt_mask": np.zeros((b, t_max), dtype=bool),
        "prefix": np.array([e.prefix for e in examples], dtype=np.int64),
    }
    for i, e in enumerate(examples):
        s, t = len(e.src), len(e.tgt) - 1
        out["src"][i, :s] = e.src
        out["src_pos"][i, :s] = e.src_pos
        out["src_mask"][i, :s] = True
        out["tgt_in"][i, :t] = e.tgt[:-1]
        out["tgt_pos"][i, :t] = e.tgt_pos[:-1]
        out["tgt_mask"][i, :t] = True
        out["tgt_out"][i, e.prefix : t] = e.tgt[1 + e.prefix :]
    first = examples[0]
    out.update(task=first.task, source=first.source, target=first.target)
    return out


# -- references for metrics ----------------------------------------------------------------------


def target_tokens(example: Example) -> np.ndarray:
    """The scored target steps (B, K): without SOS, the continuation prefix and EOS."""
    return example.tgt[1 + example.prefix : -1]


def decode_target(vocab, target: str, tokens, *, seconds: float | None = None):
    """``(value, invalid)``: what target tokens (model ids, ``(N, K)`` or ``(N,)`` for slot 0) mean,
    and how many ids were invalid (counted and dropped; decoding stops at the first EOS).

    * ``lmx``: LMX codec ids (list); ``midi``: a list of :class:`~unimusic.tokens.midi.Note`,
      seconds from the slice start, for a window of ``seconds`` (default the codec's window:
      pass the example's span length so notes still sounding end there);
    * ``image``: codes ``(L, h, w)`` (a leading height token gives ``h``; an incomplete last column is
      dropped; an invalid level >= 1 id reads 0); ``audio``: codes ``(L, N)``; ``L`` = the
      vocabulary's codebook levels."""
    arr = np.asarray(tokens)
    if arr.ndim == 1:
        full = np.full((len(arr), SLOTS), vocab.pad, dtype=np.int64)
        full[:, 0] = arr
        arr = full
    elif arr.ndim != 2:
        raise InputError("target tokens", f"expected (N, K) or (N,) ids, got shape {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    eos = np.flatnonzero(arr[:, 0] == vocab.eos) if len(arr) else []
    if len(eos):
        arr = arr[: eos[0]]
    if target in ("lmx", "midi"):
        ids, invalid = vocab.from_model(arr[:, 0].tolist(), target)
        if target == "lmx":
            return ids, invalid
        sps = vocab.midi.config.steps_per_second
        window = vocab.midi.config.window_seconds
        seconds = window if seconds is None else min(window, max(1, round(float(seconds) * sps)) / sps)
        notes, stats = vocab.midi.decode_window(ids, start=0.0, end=seconds)
        return notes, invalid + stats.invalid_tokens
    if target not in ("image", "audio"):
        raise InputError(str(target), "unknown target modality")
    levels = min(SLOTS, vocab.config.image_codebooks if target == "image" else vocab.config.audio_codebooks)
    ranges = [vocab.ranges[f"{target}:{lv}"] for lv in range(levels)]
    invalid = 0
    h = None
    if target == "image":
        height = vocab.ranges["image_height"]
        while len(arr) and arr[0, 0] not in height:
            invalid += 1
            arr = arr[1:]
        if not len(arr):
            return np.zeros((levels, 0, 0), dtype=np.int64), invalid
        h = int(arr[0, 0]) - height.start + 1
        arr = arr[1:]
    codes = []
    for i, step in enumerate(arr):
        if step[0] not in ranges[0]:
            if target == "image" and step[0] == vocab.sep:  # a second system: not decoded here
                invalid += len(arr) - i
                break
            invalid += 1
            continue
        cell = []
        for lv, r in enumerate(ranges):
            if int(step[lv]) in r:
                cell.append(int(step[lv]) - r.start)
            else:
                invalid += 1
                cell.append(0)
        codes.append(cell)
    values = np.asarray(codes, dtype=np.int64).reshape(-1, levels)
    if target == "audio":
        return values.T.copy(), invalid
    columns = len(values) // h
    invalid += len(values) - columns * h
    grid = values[: columns * h].reshape(columns, h, levels)  # column by column, rows in a column
    return grid.transpose(2, 1, 0).copy(), invalid
