"""MIDI notes <-> MT3-style event tokens.

The stream of one window (segment) looks like::

    [tie section]  program:p pitch:k ... tie
    [body]         shift:t  program:p velocity:v pitch:k ... drum:k ...

* ``shift:t`` is the ABSOLUTE time within the window in steps (10 ms by default),
  emitted only when the time changes; the body starts at ``shift:0`` implicitly.
* ``velocity:v`` sets the velocity bin of the following onsets; ``velocity:0``
  makes the following ``pitch`` tokens offsets. ``program`` and ``velocity`` are
  state: emitted only when they change. Both start unset in every window so a
  window decodes on its own.
* The tie section lists (program, pitch) of every non-drum note still sounding
  at the window start; ``tie`` closes it. A note crossing a boundary has no offset
  in the first window and is listed in the next window's tie section.
* ``drum:k`` is a drum onset; drums have no offsets (fixed duration, see
  :data:`DRUM_DURATION_STEPS`) and no program (decoded as program 0).
* Events at one time are ordered: offsets, then pitched onsets (by program,
  velocity, pitch), then drum onsets (by velocity, pitch).

The stream keys notes by (program, pitch): overlapping notes of one key cannot
both be represented, so :meth:`MidiEventCodec.normalize` defines the round-trip
reference (DESIGN.md section 6) and ``decode(encode(x)) == normalize(x)``.

Like the other codecs this one has no specials (PAD/EOS/SOS): the unified
vocabulary places these ids at an offset. Encoding is strict (bad input raises
:class:`~unimusic.errors.InputError`); decoding is tolerant (bad ids are counted
in :class:`DecodeStats` and dropped: model output is untrusted input).
"""

from __future__ import annotations

import dataclasses
import io
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from unimusic.errors import InputError
from unimusic.tokens.codec import Event, EventCodec, EventRange, content_hash

if TYPE_CHECKING:  # pretty_midi is imported lazily: importing this module stays cheap
    import pretty_midi

# Drums carry onsets only; every drum note lasts one step (10 ms by default, as
# in MT3). One step keeps a drum inside the window of its onset, so windows need
# no drum bookkeeping and the round trip stays exact.
DRUM_DURATION_STEPS = 1
# Velocity given to notes whose velocity the stream does not carry: tie-section
# notes decoded without the window that started them (quantized to its bin).
UNKNOWN_VELOCITY = 100
# Times beyond this are refused: a corrupt tempo map can put notes hours away,
# which would make millions of empty windows.
MAX_SECONDS = 24 * 3600.0
# Written MIDI: 120 bpm and 1000 ticks per beat = 2000 ticks/s, so every 10 ms
# step is a whole number of ticks and codec output survives a file round trip.
MIDI_RESOLUTION = 1000
MIDI_TEMPO = 120.0
# Coarsest resolution a too-long MIDI file may be rescaled to (~1 ms per tick at 120 bpm).
_MIN_RESCALED_TPB = 480


@dataclasses.dataclass(frozen=True)
class MidiCodecConfig:
    steps_per_second: int = 100  # 10 ms steps
    window_seconds: float = 10.0  # default (and longest) window
    velocity_bins: int = 16  # 1 = on/off only (the reference's choice)
    max_program: int = 127

    def __post_init__(self):
        src = "MidiCodecConfig"
        for field in ("steps_per_second", "velocity_bins", "max_program"):
            value = getattr(self, field)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise InputError(src, f"{field} must be an integer, got {value!r}")
        if self.steps_per_second < 1:
            raise InputError(src, f"steps_per_second must be >= 1, got {self.steps_per_second}")
        if not 1 <= self.velocity_bins <= 127:
            raise InputError(src, f"velocity_bins must be in 1..127, got {self.velocity_bins}")
        if not 0 <= self.max_program <= 127:
            raise InputError(src, f"max_program must be in 0..127, got {self.max_program}")
        if not isinstance(self.window_seconds, numbers.Real) or not math.isfinite(self.window_seconds):
            raise InputError(src, f"window_seconds must be a finite number, got {self.window_seconds!r}")
        steps = self.window_seconds * self.steps_per_second
        if self.window_seconds <= 0 or abs(steps - round(steps)) > 1e-6:
            raise InputError(src, f"window_seconds {self.window_seconds} is not a positive whole number of steps")

    @property
    def window_steps(self) -> int:
        return int(round(self.window_seconds * self.steps_per_second))


@dataclasses.dataclass(frozen=True)
class Note:
    """One note, times in seconds."""

    start: float
    end: float
    pitch: int
    velocity: int = 100
    program: int = 0
    is_drum: bool = False


@dataclasses.dataclass
class DecodeStats:
    """What tolerant decoding dropped (``reasons``) or patched up (``repairs``).

    ``invalid_tokens == sum(reasons.values())``: every dropped token has one
    reason. ``repairs`` count fixes that dropped nothing (a missing ``tie``, an
    onset that closed a still-sounding note of the same key...).
    """

    invalid_tokens: int = 0
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    repairs: dict[str, int] = dataclasses.field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.invalid_tokens += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n

    def repair(self, reason: str, n: int = 1) -> None:
        self.repairs[reason] = self.repairs.get(reason, 0) + n


class _N(NamedTuple):
    """A normalized note on the step grid; ``velocity`` is the bin (1..bins)."""

    start: int
    end: int
    pitch: int
    velocity: int
    program: int
    is_drum: bool


def _sort_key(n) -> tuple:
    return (n.start, n.is_drum, n.program, n.pitch, n.end, n.velocity)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_note(i: int, note, *, max_program: int) -> None:
    """Strict validation of one input note; the error names ``notes[i]``."""
    src = f"notes[{i}]"
    if not isinstance(note, Note):
        raise InputError(src, f"expected a Note, got {type(note).__name__}")
    for field in ("start", "end"):
        t = getattr(note, field)
        if not isinstance(t, numbers.Real) or isinstance(t, bool):
            raise InputError(src, f"{field} time {t!r} is not a number")
        if not math.isfinite(t):
            raise InputError(src, f"{field} time {t} is not finite")
        if t < 0:
            raise InputError(src, f"{field} time {t} is negative")
        if t > MAX_SECONDS:
            raise InputError(src, f"{field} time {t} is beyond {MAX_SECONDS:.0f} s")
    if note.end < note.start:
        raise InputError(src, f"end {note.end} < start {note.start}")
    if not _is_int(note.pitch) or not 0 <= note.pitch <= 127:
        raise InputError(src, f"pitch {note.pitch!r} outside 0..127")
    if not _is_int(note.velocity) or not 1 <= note.velocity <= 127:
        raise InputError(src, f"velocity {note.velocity!r} outside 1..127")
    if not _is_int(note.program) or not 0 <= note.program <= max_program:
        raise InputError(src, f"program {note.program!r} outside 0..{max_program}")
    if note.is_drum not in (True, False):
        raise InputError(src, f"is_drum {note.is_drum!r} is not a bool")


class MidiEventCodec:
    """MT3-style event codec for notes (see the module docstring for the stream)."""

    name = "midi-events"
    version = "1"

    def __init__(self, *, config: MidiCodecConfig = MidiCodecConfig()):
        self.config = config
        c = config
        self.event_codec = EventCodec(
            [
                EventRange("shift", 0, c.window_steps),  # window_steps itself: offsets AT the window end
                EventRange("pitch", 0, 127),
                EventRange("velocity", 0, c.velocity_bins),  # 0 = note-off
                EventRange("tie", 0, 0),
                EventRange("program", 0, c.max_program),
                EventRange("drum", 0, 127),
            ]
        )
        self.num_classes = self.event_codec.num_classes
        first = {r.type: self.event_codec.event_range(r.type)[0] for r in self.event_codec.ranges}
        self._shift, self._pitch, self._velocity = first["shift"], first["pitch"], first["velocity"]
        self._tie, self._program, self._drum = first["tie"], first["program"], first["drum"]
        # id -> (type, value): decoding is one list lookup per token.
        self._table: list[tuple[str, int]] = []
        for r in self.event_codec.ranges:
            self._table.extend((r.type, v) for v in range(r.min_value, r.max_value + 1))
        self._unknown_bin = self.velocity_to_bin(UNKNOWN_VELOCITY)

    # -- identity --------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "config": dataclasses.asdict(self.config),
            "ranges": self.event_codec.describe(),
            "drum_duration_steps": DRUM_DURATION_STEPS,
            "unknown_velocity": UNKNOWN_VELOCITY,
        }

    @property
    def hash(self) -> str:
        return content_hash(self.describe())

    # -- readable tokens -------------------------------------------------------
    def token_to_string(self, idx) -> str:
        """``"shift:123"``, ``"pitch:60"``, ``"tie"``...; an invalid id reads ``"<invalid:idx>"``.

        Tolerant on purpose: it is used to print model output.
        """
        event = self._lookup(idx)
        if event is None:
            return f"<invalid:{idx!r}>"
        typ, value = event
        return "tie" if typ == "tie" else f"{typ}:{value}"

    def string_to_token(self, s: str) -> int:
        """The id of a readable token; strict (``InputError`` for anything else)."""
        src = f"MIDI event token {s!r}"
        if not isinstance(s, str):
            raise InputError(src, "expected a string")
        if s == "tie":
            return self._tie
        typ, sep, value = s.partition(":")
        if not sep or typ == "tie":
            raise InputError(src, "expected 'type:value' or 'tie'")
        try:
            v = int(value)
        except ValueError:
            raise InputError(src, f"value {value!r} is not an integer") from None
        return self.event_codec.encode_event(Event(typ, v))

    # -- velocity --------------------------------------------------------------
    def velocity_to_bin(self, velocity: int) -> int:
        """MIDI velocity 1..127 -> bin 1..bins (bin b holds (b-1)*127/bins < v <= b*127/bins)."""
        bins = self.config.velocity_bins
        return min(bins, max(1, -(-bins * int(velocity) // 127)))

    def bin_to_velocity(self, b: int) -> int:
        """The bin's representative velocity: the top of the bin, so bin(velocity(b)) == b."""
        return 127 * int(b) // self.config.velocity_bins

    # -- normalization (the round-trip reference) --------------------------------
    def normalize(self, notes: Iterable[Note]) -> list[Note]:
        """The notes as the stream can carry them (strict: bad notes raise ``InputError``).

        Rules, in order:
        1. times snap to the nearest step (half a step rounds up);
        2. velocities become their bin's representative value;
        3. pitched notes last at least one step; drums last exactly
           :data:`DRUM_DURATION_STEPS` and get program 0 (the stream has no drum
           program);
        4. per key -- (program, pitch) for pitched notes, pitch for drums -- notes
           starting at the same step merge into one (end = max, velocity = max);
        5. per pitched key, in onset order, a note still sounding when the next one
           starts is cut at that onset (a re-attack), and the next one lasts until
           the later of both ends -- so the key sounds over the same time span.
        Output is sorted by (start, is_drum, program, pitch). Idempotent.
        """
        return [self._to_note(n) for n in self._normalize_steps(notes)]

    def _normalize_steps(self, notes: Iterable[Note]) -> list[_N]:
        sps = self.config.steps_per_second
        drums: dict[tuple[int, int], int] = {}
        pitched: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for i, note in enumerate(notes):
            _check_note(i, note, max_program=self.config.max_program)
            s = math.floor(note.start * sps + 0.5)
            e = math.floor(note.end * sps + 0.5)
            v = self.velocity_to_bin(note.velocity)
            if note.is_drum:
                drums[(note.pitch, s)] = max(drums.get((note.pitch, s), 0), v)
            else:
                pitched.setdefault((note.program, note.pitch), []).append((s, max(e, s + 1), v))
        out = [_N(s, s + DRUM_DURATION_STEPS, p, v, 0, True) for (p, s), v in drums.items()]
        for (program, pitch), group in pitched.items():
            group.sort()
            cur_s, cur_e, cur_v = group[0]
            for s, e, v in group[1:]:
                if s == cur_s:  # same onset: one note
                    cur_e, cur_v = max(cur_e, e), max(cur_v, v)
                elif s < cur_e:  # overlap: re-attack at s, the later note inherits the longer end
                    out.append(_N(cur_s, s, pitch, cur_v, program, False))
                    cur_s, cur_e, cur_v = s, max(cur_e, e), v
                else:
                    out.append(_N(cur_s, cur_e, pitch, cur_v, program, False))
                    cur_s, cur_e, cur_v = s, e, v
            out.append(_N(cur_s, cur_e, pitch, cur_v, program, False))
        out.sort(key=_sort_key)
        return out

    def _to_note(self, n: _N, *, offset: int = 0) -> Note:
        sps = self.config.steps_per_second
        return Note(
            start=(n.start + offset) / sps,
            end=(n.end + offset) / sps,
            pitch=n.pitch,
            velocity=self.bin_to_velocity(n.velocity),
            program=n.program,
            is_drum=n.is_drum,
        )

    # -- windows -----------------------------------------------------------------
    def _window_steps(self, window_seconds, src: str) -> int:
        if window_seconds is None:
            return self.config.window_steps
        if not isinstance(window_seconds, numbers.Real) or not math.isfinite(window_seconds):
            raise InputError(src, f"window length {window_seconds!r} is not a finite number")
        steps = window_seconds * self.config.steps_per_second
        if abs(steps - round(steps)) > 1e-6:
            raise InputError(src, f"window length {window_seconds} s is not a whole number of steps")
        steps = int(round(steps))
        if steps <= 0:
            raise InputError(src, f"window length {window_seconds} s is not positive")
        if steps > self.config.window_steps:
            raise InputError(
                src, f"window length {window_seconds} s exceeds the codec's maximum {self.config.window_seconds} s"
            )
        return steps

    def _bounds(self, start, end) -> tuple[int, int]:
        """Strictly checked window bounds in steps."""
        src = f"window [{start!r}, {end!r})"
        sps = self.config.steps_per_second
        steps = []
        for name, t in (("start", start), ("end", end)):
            if not isinstance(t, numbers.Real) or isinstance(t, bool) or not math.isfinite(t):
                raise InputError(src, f"window {name} {t!r} is not a finite number")
            if t < 0:
                raise InputError(src, f"window {name} {t} is negative")
            x = t * sps
            if abs(x - round(x)) > 1e-6:
                raise InputError(src, f"window {name} {t} is not on the {1000 / sps:g} ms step grid")
            steps.append(int(round(x)))
        ws, we = steps
        if we <= ws:
            raise InputError(src, f"window end {end} <= start {start}")
        if we - ws > self.config.window_steps:
            raise InputError(
                src, f"window of {end - start:g} s exceeds the codec's maximum {self.config.window_seconds} s"
            )
        return ws, we

    # -- encoding (strict) -------------------------------------------------------
    def encode_window(self, notes: Iterable[Note], *, start: float, end: float) -> list[int]:
        """Ids of the window [start, end) (seconds); notes are normalized first."""
        ws, we = self._bounds(start, end)
        return self._encode_steps(self._normalize_steps(notes), ws, we)

    def encode(self, notes: Iterable[Note], *, window_seconds: float | None = None) -> list[tuple[float, list[int]]]:
        """The whole piece as consecutive windows ``[(window_start_seconds, ids)]``.

        Windows start at 0 and all have the same length; there are enough to hold
        the last offset (at least one, even for no notes).
        """
        w = self._window_steps(window_seconds, "encode(window_seconds=...)")
        snotes = self._normalize_steps(notes)
        last = max((n.end for n in snotes), default=0)
        n_windows = max(1, -(-last // w))
        # Bucket notes by the windows they touch, so encoding stays linear in the piece length.
        buckets: list[list[_N]] = [[] for _ in range(n_windows)]
        for n in snotes:
            first = n.start // w
            final = first if n.is_drum else (n.end - 1) // w
            for k in range(first, final + 1):
                buckets[k].append(n)
        sps = self.config.steps_per_second
        return [(k * w / sps, self._encode_steps(b, k * w, (k + 1) * w)) for k, b in enumerate(buckets)]

    def _encode_steps(self, snotes: Sequence[_N], ws: int, we: int) -> list[int]:
        ties = sorted((n.program, n.pitch) for n in snotes if not n.is_drum and n.start < ws < n.end)
        # (time, kind, program, velocity bin, pitch); kind orders offs (0) < onsets (1) < drums (2).
        events = []
        for n in snotes:
            if n.is_drum:
                if ws <= n.start < we:
                    events.append((n.start, 2, 0, n.velocity, n.pitch))
                continue
            if ws <= n.start < we:
                events.append((n.start, 1, n.program, n.velocity, n.pitch))
            if ws < n.end <= we:
                events.append((n.end, 0, n.program, 0, n.pitch))
        events.sort()

        ids: list[int] = []
        program = velocity = None  # state is reset in every window
        for prog, pitch in ties:
            if prog != program:
                ids.append(self._program + prog)
                program = prog
            ids.append(self._pitch + pitch)
        ids.append(self._tie)
        time = ws
        for t, kind, prog, vel, pitch in events:
            if t != time:
                ids.append(self._shift + t - ws)
                time = t
            if kind != 2 and prog != program:
                ids.append(self._program + prog)
                program = prog
            if vel != velocity:
                ids.append(self._velocity + vel)
                velocity = vel
            ids.append((self._drum if kind == 2 else self._pitch) + pitch)
        return ids

    # -- decoding (tolerant) -----------------------------------------------------
    def _lookup(self, idx) -> tuple[str, int] | None:
        if not _is_int(idx):
            return None
        idx = int(idx)
        if 0 <= idx < self.num_classes:
            return self._table[idx]
        return None

    def _decode_steps(self, ids, length: int, stats: DecodeStats) -> list[list]:
        """Note records ``[start, end | None, pitch, bin | None, program, is_drum, tied]``.

        Times are steps within the window; ``end`` is None for notes still
        sounding at the end; ``bin`` is None for tie-section notes.
        """
        time = 0
        program = velocity = None
        in_tie = True
        active: dict[tuple[int, int], list] = {}
        drums_seen: set[tuple[int, int]] = set()
        records: list[list] = []
        try:
            tokens = list(ids)
        except TypeError:  # not even a sequence: nothing to decode
            stats.drop("not_a_sequence")
            return records
        for raw in tokens:
            event = self._lookup(raw)
            if event is None:
                stats.drop("out_of_range" if _is_int(raw) else "not_an_int")
                continue
            typ, val = event
            if in_tie:
                if typ == "tie":
                    in_tie = False
                    continue
                if typ == "program":
                    program = val
                    continue
                if typ == "pitch":
                    if program is None:
                        stats.drop("pitch_without_program")
                    elif (program, val) in active:
                        stats.drop("duplicate_tie")
                    else:
                        rec = [0, None, val, None, program, False, True]
                        active[(program, val)] = rec
                        records.append(rec)
                    continue
                # A body event before any `tie`: treat the section as closed.
                in_tie = False
                stats.repair("missing_tie")
            if typ == "shift":
                if val < time:
                    stats.drop("shift_backwards")
                elif val > length:
                    stats.drop("shift_beyond_window")
                else:
                    time = val
            elif typ == "program":
                program = val
            elif typ == "velocity":
                velocity = val
            elif typ == "tie":
                stats.drop("tie_after_section")
            elif typ == "pitch":
                if program is None:
                    stats.drop("pitch_without_program")
                    continue
                if velocity is None:
                    stats.drop("pitch_without_velocity")
                    continue
                key = (program, val)
                rec = active.get(key)
                if velocity == 0:
                    if rec is None:
                        stats.drop("off_without_on")
                    elif rec[0] >= time:
                        stats.drop("zero_length_note")  # an off at the note's own onset
                    else:
                        rec[1] = time
                        del active[key]
                    continue
                if time >= length:
                    stats.drop("onset_at_window_end")
                    continue
                if rec is not None:
                    if rec[0] >= time:
                        stats.drop("duplicate_onset")
                        continue
                    rec[1] = time  # re-attack without an off: close the sounding note here
                    stats.repair("onset_while_active")
                rec = [time, None, val, velocity, program, False, False]
                active[key] = rec
                records.append(rec)
            else:  # drum
                if velocity is None:
                    stats.drop("drum_without_velocity")
                elif velocity == 0:
                    stats.drop("drum_off")
                elif time + DRUM_DURATION_STEPS > length:
                    stats.drop("onset_at_window_end")
                elif (time, val) in drums_seen:
                    stats.drop("duplicate_onset")
                else:
                    drums_seen.add((time, val))
                    records.append([time, time + DRUM_DURATION_STEPS, val, velocity, 0, True, False])
        if in_tie and tokens:
            stats.repair("missing_tie")
        return records

    def decode_window(
        self, ids: Sequence[int], *, start: float = 0.0, end: float | None = None
    ) -> tuple[list[Note], DecodeStats]:
        """Notes of one window; never raises on bad ids (they are counted and dropped).

        Tie-section notes start at the window start (with velocity
        :data:`UNKNOWN_VELOCITY`, quantized); notes still sounding at the end end
        at the window end. ``end`` defaults to ``start`` + the configured window;
        the bounds themselves are caller input and are checked strictly.
        """
        if end is None and isinstance(start, numbers.Real):
            end = start + self.config.window_seconds
        ws, we = self._bounds(start, end)
        stats = DecodeStats()
        length = we - ws
        notes = []
        for s, e, pitch, vbin, program, is_drum, _tied in self._decode_steps(ids, length, stats):
            n = _N(s, length if e is None else e, pitch, self._unknown_bin if vbin is None else vbin, program, is_drum)
            notes.append(self._to_note(n, offset=ws))
        notes.sort(key=_sort_key)
        return notes, stats

    def decode(
        self, windows: Sequence[tuple[float, Sequence[int]]], *, window_seconds: float | None = None
    ) -> tuple[list[Note], DecodeStats]:
        """Decode windows and join them into one piece; never raises on bad ids.

        A window ends at ``start + window_seconds`` (default: the configured
        window) or at the next window's start, whichever is first. A note
        sounding at the end of a window continues only if the next window starts
        right there and lists it in its tie section; otherwise it ends at the
        boundary. Windows with a bad start (negative, not a number) or the same
        start as an earlier one are dropped (their tokens counted).
        """
        w = self._window_steps(window_seconds, "decode(window_seconds=...)")
        sps = self.config.steps_per_second
        stats = DecodeStats()
        good: list[tuple[int, object]] = []
        for item in windows:
            try:
                start, ids = item
                start = float(start)
                ok = math.isfinite(start) and 0 <= start <= MAX_SECONDS
            except (TypeError, ValueError):
                ok, ids = False, item
            if not ok:
                stats.drop("bad_window", _count(ids))
                continue
            good.append((math.floor(start * sps + 0.5), ids))
        good.sort(key=lambda x: x[0])  # stable: of windows with one start, the first given wins
        unique: list[tuple[int, object]] = []
        for ws, ids in good:
            if unique and ws == unique[-1][0]:
                stats.drop("duplicate_window", _count(ids))
            else:
                unique.append((ws, ids))
        good = unique

        out: list[_N] = []
        active: dict[tuple[int, int], tuple[int, int]] = {}  # key -> (absolute start, velocity bin)
        prev_end = None
        for i, (ws, ids) in enumerate(good):
            we = ws + w
            if i + 1 < len(good):
                we = min(we, good[i + 1][0])
            records = self._decode_steps(ids, we - ws, stats)
            tied = {(r[4], r[2]) for r in records if r[6]}
            carried = {}
            for key, (s, v) in active.items():
                if prev_end == ws and key in tied:
                    carried[key] = (s, v)
                else:  # not continued: it ends where its window ended
                    out.append(_N(s, prev_end, key[1], v, key[0], False))
            active = {}
            for s, e, pitch, vbin, program, is_drum, is_tied in records:
                key = (program, pitch)
                if is_tied:
                    if key in carried:
                        s_abs, vbin = carried.pop(key)
                    else:
                        stats.repair("tie_without_note")
                        s_abs, vbin = ws, self._unknown_bin
                else:
                    s_abs = ws + s
                if e is None:
                    active[key] = (s_abs, vbin)
                else:
                    out.append(_N(s_abs, ws + e, pitch, vbin, program, is_drum))
            prev_end = we
        for key, (s, v) in active.items():
            out.append(_N(s, prev_end, key[1], v, key[0], False))
        out.sort(key=_sort_key)
        return [self._to_note(n) for n in out], stats


def _count(ids) -> int:
    try:
        return max(1, len(ids))
    except TypeError:
        return 1


# -- MIDI files ------------------------------------------------------------------


def load_midi(source, *, name: str | None = None) -> "pretty_midi.PrettyMIDI":
    """A ``PrettyMIDI`` from bytes, a path, or a ``PrettyMIDI`` (returned as is).

    A missing, empty, truncated or non-MIDI input raises ``InputError`` naming it
    (``name`` overrides the name used in errors).
    """
    import pretty_midi

    if isinstance(source, pretty_midi.PrettyMIDI):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<MIDI bytes>"
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        path = Path(source)
        if not path.exists():
            raise InputError(label, "no such file")
        if path.is_dir():
            raise InputError(label, "is a directory, expected a MIDI file")
        data = path.read_bytes()
    else:
        raise InputError(name or repr(source)[:80], f"expected MIDI bytes, a path or a PrettyMIDI, got {type(source).__name__}")
    if not data:
        raise InputError(label, "file is empty")
    if not data.startswith(b"MThd"):
        raise InputError(label, "not a MIDI file (no MThd header)")
    return read_midi(data, label)


def notes_from_midi(source, *, name: str | None = None) -> list[Note]:
    """Every note of a MIDI file: ``source`` is a path, bytes, or a ``PrettyMIDI``
    (bad input raises ``InputError``, see :func:`load_midi`)."""
    pm = load_midi(source, name=name)
    notes = []
    for inst in pm.instruments:
        for n in inst.notes:
            notes.append(
                Note(
                    start=float(n.start),
                    end=float(n.end),
                    pitch=int(n.pitch),
                    velocity=int(n.velocity),
                    program=int(inst.program),
                    is_drum=bool(inst.is_drum),
                )
            )
    notes.sort(key=_sort_key)
    return notes


def read_midi(data: bytes, label: str) -> "pretty_midi.PrettyMIDI":
    """MIDI bytes as a ``PrettyMIDI`` (the project's one MIDI reader: it also reads
    long high-resolution files pretty_midi alone refuses); errors name ``label``."""
    import mido
    import pretty_midi

    try:
        mf = mido.MidiFile(file=io.BytesIO(data))
        _fit_ticks(mf, label)
        with warnings.catch_warnings():
            # Verovio writes tempo/key events on every track; pretty_midi warns on
            # each such (valid, type-1) file and reads it correctly.
            warnings.filterwarnings("ignore", message="Tempo, Key or Time signature change events", category=RuntimeWarning)
            return pretty_midi.PrettyMIDI(mido_object=mf)
    except InputError:
        raise
    except Exception as exc:  # mido/pretty_midi raise EOFError, OSError, ValueError, KeyError...
        detail = str(exc) or type(exc).__name__
        problem = "truncated MIDI file" if isinstance(exc, EOFError) else "unreadable MIDI file"
        raise InputError(label, f"{problem} ({detail})") from None


def _fit_ticks(mf, label: str) -> None:
    """Lower the file's resolution in place if pretty_midi would refuse its tick count.

    Why: pretty_midi rejects files whose last tick exceeds 1e7 (it allocates an
    array per tick). music21 writes 10080 ticks per quarter, so any music21 MIDI
    longer than ~990 quarters would be refused. Rescaling ticks keeps the timing
    (to a fraction of a millisecond); files that would need a coarser grid than
    :data:`_MIN_RESCALED_TPB` are refused as too long.
    """
    import pretty_midi

    limit = int(pretty_midi.pretty_midi.MAX_TICK) - 2
    ends = [sum(msg.time for msg in track) for track in mf.tracks]
    max_tick = max(ends, default=0)
    if max_tick <= limit:
        return
    old_tpb = mf.ticks_per_beat
    new_tpb = old_tpb * limit // max_tick
    if new_tpb < _MIN_RESCALED_TPB:
        raise InputError(label, f"MIDI file too long ({max_tick} ticks at {old_tpb} ticks per beat)")
    for track in mf.tracks:
        tick = prev = 0
        for i, msg in enumerate(track):
            tick += msg.time
            scaled = tick * new_tpb // old_tpb  # floor keeps order and stays under the limit
            track[i] = msg.copy(time=scaled - prev)
            prev = scaled
    mf.ticks_per_beat = new_tpb


def notes_to_midi(notes: Iterable[Note]) -> "pretty_midi.PrettyMIDI":
    """A ``PrettyMIDI`` with one instrument per (program, is_drum), in that order.

    120 bpm at 1000 ticks per beat: 10 ms steps are whole ticks, so notes on
    the codec's grid come back exactly from a written file.
    """
    import pretty_midi

    notes = list(notes)
    for i, note in enumerate(notes):
        _check_note(i, note, max_program=127)
    pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=MIDI_TEMPO)
    groups: dict[tuple[bool, int], list[Note]] = {}
    for note in notes:
        groups.setdefault((bool(note.is_drum), int(note.program)), []).append(note)
    for (is_drum, program), group in sorted(groups.items()):
        name = "Drums" if is_drum else pretty_midi.program_to_instrument_name(program)
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
        for n in sorted(group, key=_sort_key):
            inst.notes.append(
                pretty_midi.Note(velocity=int(n.velocity), pitch=int(n.pitch), start=float(n.start), end=float(n.end))
            )
        pm.instruments.append(inst)
    return pm
