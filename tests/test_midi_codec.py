"""MIDI event codec: single rules, corpus round trip, tolerant decoding, metrics, file errors."""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimusic.errors import InputError
from unimusic.metrics import note_f1
from unimusic.tokens.midi import (
    DecodeStats,
    MidiCodecConfig,
    MidiEventCodec,
    Note,
    notes_from_midi,
    notes_to_midi,
)

CODEC = MidiEventCodec()
SPS = CODEC.config.steps_per_second
FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def strs(ids) -> list[str]:
    return [CODEC.token_to_string(i) for i in ids]


def key(n: Note, *, velocity: bool = True) -> tuple:
    """A note compared modulo float noise (times on the step grid)."""
    return (round(n.start * SPS), round(n.end * SPS), n.pitch, n.velocity if velocity else None, n.program, n.is_drum)


def keys(notes, *, velocity: bool = True) -> list[tuple]:
    return sorted(key(n, velocity=velocity) for n in notes)


def clip(norm: list[Note], ws: float, we: float) -> list[Note]:
    """What one window holds: onsets inside it, plus pitched notes sounding at its start (tie section)."""
    s0, s1 = round(ws * SPS), round(we * SPS)
    out = []
    for n in norm:
        s, e = round(n.start * SPS), round(n.end * SPS)
        if s0 <= s < s1 or (not n.is_drum and s < s0 < e):
            out.append(Note(max(s, s0) / SPS, min(e, s1) / SPS, n.pitch, n.velocity, n.program, n.is_drum))
    return out


# ---------------------------------------------------------------------------
# 1. single rules


def test_layout_describe_and_readable_tokens():
    assert CODEC.num_classes == 1001 + 128 + 17 + 1 + 128 + 128
    desc = json.loads(json.dumps(CODEC.describe()))
    assert desc["name"] == "midi-events" and desc["version"] == "1"
    assert [r["type"] for r in desc["ranges"]] == ["shift", "pitch", "velocity", "tie", "program", "drum"]
    assert len(CODEC.hash) == 16
    assert MidiEventCodec(config=MidiCodecConfig(velocity_bins=1)).hash != CODEC.hash
    assert MidiEventCodec(config=MidiCodecConfig()).hash == CODEC.hash
    for i in range(CODEC.num_classes):
        assert CODEC.string_to_token(CODEC.token_to_string(i)) == i
    assert CODEC.token_to_string(CODEC.string_to_token("shift:123")) == "shift:123"
    assert CODEC.token_to_string(-1) == "<invalid:-1>"
    assert CODEC.token_to_string(CODEC.num_classes) == f"<invalid:{CODEC.num_classes}>"
    for bad in ["pitch:128", "shift:1001", "bogus:1", "pitch", "pitch:x", "tie:0"]:
        with pytest.raises(InputError):
            CODEC.string_to_token(bad)


def test_shift_only_when_time_changes():
    notes = [Note(0.0, 0.5, 67), Note(0.5, 1.0, 60), Note(0.5, 1.0, 64)]
    [(ws, ids)] = CODEC.encode(notes)
    assert ws == 0.0
    assert strs(ids) == [
        "tie",
        "program:0", "velocity:13", "pitch:67",  # t = 0: no shift token
        "shift:50", "velocity:0", "pitch:67", "velocity:13", "pitch:60", "pitch:64",  # one shift for 3 events
        "shift:100", "velocity:0", "pitch:60", "pitch:64",
    ]  # fmt: skip


def test_offs_before_ons_at_the_same_time():
    # Given in onset-first order on purpose: the encoder must still put the off first.
    notes = [Note(0.5, 1.0, 60, program=5), Note(0.2, 0.5, 60, program=5), Note(0.2, 0.5, 72, program=5)]
    ids = CODEC.encode_window(notes, start=0.0, end=10.0)
    assert strs(ids)[ids.index(CODEC.string_to_token("shift:50")) :] == [
        "shift:50", "velocity:0", "pitch:60", "pitch:72", "velocity:13", "pitch:60",
        "shift:100", "velocity:0", "pitch:60",
    ]  # fmt: skip
    decoded, stats = CODEC.decode_window(ids)
    assert keys(decoded) == keys(CODEC.normalize(notes)) and stats.invalid_tokens == 0
    assert len(decoded) == 3  # back-to-back notes of one key stay two notes


def test_tie_section_for_a_note_crossing_a_boundary():
    notes = [Note(2.0, 3.0, 62, program=40), Note(1.0, 2.5, 50, program=40), Note(2.4, 6.0, 70)]
    windows = CODEC.encode(notes, window_seconds=2.5)
    assert [ws for ws, _ in windows] == [0.0, 2.5, 5.0]
    first, second, third = (strs(ids) for _, ids in windows)
    # pitch 50 ends exactly at the boundary: its off is in the first window (shift:250), no tie.
    assert first[-4:] == ["shift:250", "program:40", "velocity:0", "pitch:50"]
    assert "pitch:62" in first and first.count("pitch:62") == 1  # onset only, no off
    assert second[: second.index("tie") + 1] == ["program:0", "pitch:70", "program:40", "pitch:62", "tie"]
    assert third[:3] == ["program:0", "pitch:70", "tie"]
    # A window alone: tied notes start at the window start, unterminated ones end at its end.
    alone, _ = CODEC.decode_window(windows[1][1], start=2.5, end=5.0)
    assert keys(alone, velocity=False) == keys(
        [Note(2.5, 3.0, 62, program=40), Note(2.5, 5.0, 70)], velocity=False
    )
    assert all(n.velocity == CODEC.bin_to_velocity(CODEC.velocity_to_bin(100)) for n in alone)
    joined, stats = CODEC.decode(windows)
    assert keys(joined) == keys(CODEC.normalize(notes)) and stats.invalid_tokens == 0
    assert keys(alone, velocity=False) == keys(clip(CODEC.normalize(notes), 2.5, 5.0), velocity=False)


def test_join_ends_a_note_the_next_tie_section_does_not_list():
    windows = CODEC.encode([Note(2.0, 3.0, 62)], window_seconds=2.5)
    tie = CODEC.string_to_token("tie")
    cut = [(ws, ids[ids.index(tie) :] if i == 1 else ids) for i, (ws, ids) in enumerate(windows)]
    joined, stats = CODEC.decode(cut)
    assert keys(joined, velocity=False) == [(200, 250, 62, None, 0, False)]
    # Program state resets per window: with the tie section gone, the off has no program.
    assert stats.reasons == {"pitch_without_program": 1}
    # A gap between windows ends the note too, even if the later window lists it.
    gap = [windows[0], (5.0, windows[1][1])]
    joined, stats = CODEC.decode(gap, window_seconds=2.5)
    assert (200, 250, 62) in [k[:3] for k in keys(joined)]
    assert stats.repairs.get("tie_without_note") == 1


def test_velocity_bins_and_state_reset_per_window():
    assert [CODEC.velocity_to_bin(v) for v in (1, 7, 8, 100, 119, 120, 127)] == [1, 1, 2, 13, 15, 16, 16]
    assert [CODEC.bin_to_velocity(b) for b in (1, 13, 16)] == [7, 103, 127]
    for b in range(1, 17):
        assert CODEC.velocity_to_bin(CODEC.bin_to_velocity(b)) == b
    notes = [Note(0.0, 0.1, 60, velocity=100), Note(0.2, 0.3, 60, velocity=101), Note(2.6, 2.7, 60, velocity=100)]
    windows = CODEC.encode(notes, window_seconds=2.5)
    first, second = (strs(ids) for _, ids in windows)
    assert first.count("velocity:13") == 2  # 100 and 101 share bin 13, but an off (velocity:0) came between
    assert "velocity:13" in second  # state reset: the second window sets it again
    assert [n.velocity for n in CODEC.normalize(notes)] == [103, 103, 103]
    onoff = MidiEventCodec(config=MidiCodecConfig(velocity_bins=1))
    ids = onoff.encode_window([Note(0, 1, 60, velocity=3), Note(0, 1, 62, velocity=120)], start=0, end=10)
    assert [onoff.token_to_string(i) for i in ids] == [
        "tie", "program:0", "velocity:1", "pitch:60", "pitch:62", "shift:100", "velocity:0", "pitch:60", "pitch:62",
    ]  # fmt: skip
    assert {n.velocity for n in onoff.normalize([Note(0, 1, 60, velocity=3)])} == {127}


def test_a_drum_note():
    notes = [Note(1.0, 1.5, 36, velocity=100, program=9, is_drum=True), Note(1.0, 1.2, 36, velocity=20, is_drum=True)]
    ids = CODEC.encode_window(notes, start=0.0, end=10.0)
    assert strs(ids) == ["tie", "shift:100", "velocity:13", "drum:36"]  # no program, no off, merged
    assert CODEC.normalize(notes) == [Note(1.0, 1.01, 36, velocity=103, program=0, is_drum=True)]
    decoded, stats = CODEC.decode_window(ids)
    assert decoded == CODEC.normalize(notes) and stats.invalid_tokens == 0
    # Drums are never tied: a drum one step before a boundary stays in its window.
    windows = CODEC.encode([Note(2.49, 2.6, 40, is_drum=True)], window_seconds=2.5)
    assert len(windows) == 1 and strs(windows[0][1])[-1] == "drum:40"


def test_normalize_rules():
    n = CODEC.normalize(
        [
            Note(0.004, 0.004, 60),  # snaps to 0, gets one step
            Note(0.005, 0.5, 61, velocity=30),  # 0.005 rounds half up to step 1
            Note(0.011, 0.3, 61, velocity=90),  # same step as the previous: merged, end max, velocity max
            Note(1.0, 2.0, 64),  # overlaps the next same-key note: cut at 1.5
            Note(1.5, 1.8, 64),  # ... which inherits the end 2.0
            Note(1.6, 1.7, 64, program=1),  # other program: a different key, untouched
        ]
    )
    assert keys(n) == sorted(
        [
            (0, 1, 60, 103, 0, False),
            (1, 50, 61, 95, 0, False),
            (100, 150, 64, 103, 0, False),
            (150, 200, 64, 103, 0, False),
            (160, 170, 64, 103, 1, False),
        ]
    )
    assert CODEC.normalize(n) == n  # idempotent


BAD = [
    (Note(0, 1, 128), "pitch 128 outside 0..127"),
    (Note(0, 1, -1), "pitch -1 outside"),
    (Note(0, 1, 60.5), "pitch 60.5 outside"),
    (Note(-0.5, 1, 60), "start time -0.5 is negative"),
    (Note(math.nan, 1, 60), "start time nan is not finite"),
    (Note(0, math.inf, 60), "end time inf is not finite"),
    (Note(2, 1, 60), "end 1 < start 2"),
    (Note(0, 1, 60, program=128), "program 128 outside 0..127"),
    (Note(0, 1, 60, velocity=0), "velocity 0 outside 1..127"),
    (Note(0, 1e9, 60), "beyond"),
    ("C4", "expected a Note"),
]


@pytest.mark.parametrize("bad,problem", BAD, ids=[p for _, p in BAD])
def test_strict_encode_rejects_bad_notes(bad, problem):
    notes = [Note(0, 1, 60), bad]
    for call in (
        lambda: CODEC.encode(notes),
        lambda: CODEC.encode_window(notes, start=0, end=10),
        lambda: CODEC.normalize(notes),
    ):
        with pytest.raises(InputError, match=problem) as info:
            call()
        assert info.value.source == "notes[1]"  # names the offending input


@pytest.mark.parametrize(
    "start,end,problem",
    [
        (2.0, 2.0, "window end 2.0 <= start 2.0"),
        (3.0, 1.0, "<= start"),
        (0.0, 12.0, "exceeds the codec's maximum"),
        (-1.0, 1.0, "window start -1.0 is negative"),
        (0.005, 1.0, "not on the 10 ms step grid"),
        (math.nan, 1.0, "window start nan is not a finite number"),
    ],
)
def test_strict_encode_rejects_bad_windows(start, end, problem):
    with pytest.raises(InputError, match=problem) as info:
        CODEC.encode_window([Note(0, 1, 60)], start=start, end=end)
    assert info.value.source.startswith("window [")


def test_strict_encode_rejects_bad_window_lengths_and_configs():
    with pytest.raises(InputError, match="exceeds the codec's maximum 10.0 s"):
        CODEC.encode([Note(0, 1, 60)], window_seconds=20.0)
    with pytest.raises(InputError, match="not positive"):
        CODEC.encode([Note(0, 1, 60)], window_seconds=0.0)
    with pytest.raises(InputError, match="program 40 outside 0..15"):
        MidiEventCodec(config=MidiCodecConfig(max_program=15)).encode([Note(0, 1, 60, program=40)])
    with pytest.raises(InputError, match="whole number of steps"):
        MidiCodecConfig(window_seconds=0.0015)
    with pytest.raises(InputError, match="velocity_bins"):
        MidiCodecConfig(velocity_bins=0)


def test_empty_piece():
    assert [(ws, strs(ids)) for ws, ids in CODEC.encode([])] == [(0.0, ["tie"])]
    assert CODEC.decode(CODEC.encode([])) == ([], DecodeStats())


# Random pieces: overlaps of one key, several programs, drums, long notes over many windows.
note_st = st.builds(
    Note,
    start=st.floats(0, 12, allow_nan=False),
    end=st.just(0.0),
    pitch=st.sampled_from([0, 36, 60, 61, 127]),
    velocity=st.integers(1, 127),
    program=st.sampled_from([0, 1, 127]),
    is_drum=st.sampled_from([False, False, False, True]),
)
piece_st = st.lists(
    st.tuples(note_st, st.floats(0, 6, allow_nan=False)).map(
        lambda t: Note(t[0].start, t[0].start + t[1], t[0].pitch, t[0].velocity, t[0].program, t[0].is_drum)
    ),
    max_size=40,
)


@settings(max_examples=300, **FUZZ)
@given(notes=piece_st, window=st.sampled_from([0.5, 1.0, 2.5, 10.0]))
def test_round_trip_of_random_pieces(notes, window):
    norm = CODEC.normalize(notes)
    assert CODEC.normalize(norm) == norm
    windows = CODEC.encode(notes, window_seconds=window)
    joined, stats = CODEC.decode(windows)
    assert stats == DecodeStats()
    assert keys(joined) == keys(norm)
    for ws, ids in windows:
        alone, stats = CODEC.decode_window(ids, start=ws, end=ws + window)
        assert stats == DecodeStats()
        assert keys(alone, velocity=False) == keys(clip(norm, ws, ws + window), velocity=False)


@settings(max_examples=40, **FUZZ)
@given(notes=piece_st)
def test_midi_file_round_trip_of_normalized_notes(notes):
    norm = CODEC.normalize(notes)
    buf = io.BytesIO()
    notes_to_midi(norm).write(buf)
    assert CODEC.normalize(notes_from_midi(buf.getvalue())) == norm


# ---------------------------------------------------------------------------
# 2. corpus round trip (music21 scores -> MIDI -> codec)


def _strip_repeats(score) -> None:
    from music21 import bar, repeat, spanner, stream

    for m in score.recurse().getElementsByClass(stream.Measure):
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(m, side), bar.Repeat):
                setattr(m, side, bar.Barline("regular"))
    for el in list(score.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))):
        el.activeSite.remove(el)


def _midi_of_piece(relpath: str) -> tuple[str, bytes | None, str]:
    """(relpath, MIDI bytes or None, remark); runs in a worker process."""
    import music21
    from music21.midi.translate import streamToMidiFile

    from unimusic.music21_corpus import corpus_root

    try:
        score = music21.converter.parse(str(corpus_root() / relpath))
        if isinstance(score, music21.stream.Opus):  # ABC collections: the first tune
            if not score.scores:
                return relpath, None, "parse: empty Opus"
            score = score.scores[0]
    except Exception as exc:
        return relpath, None, f"parse: {type(exc).__name__}: {exc}"
    try:
        return relpath, streamToMidiFile(score).writestr(), ""
    except Exception as exc:
        # Some ABC tunes carry repeat marks music21 cannot expand; their notes are fine.
        remark = f"repeats left unexpanded ({type(exc).__name__}: {exc})"
        try:
            _strip_repeats(score)
            return relpath, streamToMidiFile(score).writestr(), remark
        except Exception as exc2:
            return relpath, None, f"to MIDI: {type(exc).__name__}: {exc}; again without repeats: {exc2}"


def corpus_midi(cache_dir: Path, pieces) -> dict[str, tuple[bytes | None, str]]:
    """MIDI bytes of each piece, built in a pool of 2 processes and cached under ``cache_dir``."""
    out, todo = {}, []
    for p in pieces:
        stem = cache_dir / p.relpath.replace("/", "__")
        remark = stem.with_suffix(".txt")
        if remark.exists():
            mid = stem.with_suffix(".mid")
            out[p.relpath] = (mid.read_bytes() if mid.exists() else None, remark.read_text())
        else:
            todo.append(p.relpath)
    if todo:
        with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=25) as pool:
            for relpath, data, remark in pool.imap_unordered(_midi_of_piece, todo):
                stem = cache_dir / relpath.replace("/", "__")
                if data is not None:
                    stem.with_suffix(".mid").write_bytes(data)
                stem.with_suffix(".txt").write_text(remark)
                out[relpath] = (data, remark)
    return out


@pytest.fixture(scope="session")
def midi_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("music21_midi")


def round_trip_piece(notes: list[Note], window: float) -> dict:
    """Per-window and joined comparison of one piece; F1 with offsets at 10 ms."""
    norm = CODEC.normalize(notes)
    windows = CODEC.encode(notes, window_seconds=window)
    problems, window_f1 = [], []
    for ws, ids in windows:
        est, stats = CODEC.decode_window(ids, start=ws, end=ws + window)
        ref = clip(norm, ws, ws + window)
        window_f1.append(note_f1(ref, est, offset=True, offset_tolerance=0.01)["f1"])
        if stats != DecodeStats():
            problems.append(f"window {ws}: {stats}")
        if keys(est, velocity=False) != keys(ref, velocity=False):
            problems.append(f"window {ws}: notes differ from the clipped reference")
    joined, stats = CODEC.decode(windows)
    joined_f1 = note_f1(norm, joined, offset=True, offset_tolerance=0.01)["f1"]
    if stats != DecodeStats():
        problems.append(f"joined: {stats}")
    if keys(joined) != keys(norm):
        problems.append("joined notes differ from normalize(notes)")
    return {
        "notes": len(notes),
        "normalized": len(norm),
        "windows": len(windows),
        "tokens": sum(len(ids) for _, ids in windows),
        "min_window_f1": min(window_f1),
        "joined_f1": joined_f1,
        "problems": problems,
    }


def run_corpus_round_trip(pieces, cache_dir: Path, *, stress_every: int) -> tuple[list[str], str]:
    """Round-trip every piece; returns (failures, report)."""
    t0 = time.perf_counter()
    midis = corpus_midi(cache_dir, pieces)
    t_midi = time.perf_counter() - t0
    failed_parse, remarks, failures, rows, broken = [], [], [], [], set()
    for i, p in enumerate(pieces):
        data, remark = midis[p.relpath]
        if data is None:
            failed_parse.append(f"{p.relpath}: {remark}")
            continue
        if remark:
            remarks.append(f"{p.relpath}: {remark}")
        notes = notes_from_midi(data, name=p.piece_id)
        if not notes:
            failures.append(f"{p.relpath}: MIDI has no notes")
            broken.add(p.relpath)
            continue
        for w in (10.0, 2.5, 4.0) if i % stress_every == 0 else (10.0,):
            row = round_trip_piece(notes, w)
            rows.append((p.relpath, w, row))
            if row["problems"] or row["min_window_f1"] != 1.0 or row["joined_f1"] != 1.0:
                failures.append(f"{p.relpath} (window {w} s): {row['problems'][:3]}")
                broken.add(p.relpath)
        # The normalized notes also survive a MIDI file (notes_to_midi -> bytes -> notes_from_midi).
        norm = CODEC.normalize(notes)
        buf = io.BytesIO()
        notes_to_midi(norm).write(buf)
        if CODEC.normalize(notes_from_midi(buf.getvalue())) != norm:
            failures.append(f"{p.relpath}: normalized notes changed through a MIDI file")
            broken.add(p.relpath)
    parsed = len(pieces) - len(failed_parse)
    exact = parsed - len(broken)
    merged = sum(row["notes"] - row["normalized"] for _, w, row in rows if w == 10.0)
    lines = [
        f"MIDI round trip over {len(pieces)} music21 pieces (MIDI built in {t_midi:.1f} s, pool of 2):",
        f"  parsed {parsed}, failed {len(failed_parse)}; exact round trip {exact}/{parsed} "
        f"({100 * exact / max(parsed, 1):.1f}%)",
        f"  window runs {len(rows)} ({sum(w != 10.0 for _, w, _ in rows)} with 2.5 s / 4 s windows), "
        f"windows {sum(row['windows'] for *_, row in rows)}, tokens {sum(row['tokens'] for *_, row in rows)}",
        f"  min per-window F1 {min((row['min_window_f1'] for *_, row in rows), default=float('nan'))}, "
        f"min joined F1 {min((row['joined_f1'] for *_, row in rows), default=float('nan'))} (offsets, 10 ms)",
        f"  notes {sum(row['notes'] for _, w, row in rows if w == 10.0)}, of which merged away by normalization "
        f"(same-key notes starting on one step) {merged}",
    ]
    lines += [f"  FAILED TO PARSE {x}" for x in failed_parse]
    lines += [f"  note: {x}" for x in remarks]
    lines += [f"  ROUND TRIP FAILURE {x}" for x in failures]
    assert parsed >= 0.9 * len(pieces), "\n".join(lines)  # a corpus that mostly fails to parse proves nothing
    return failures, "\n".join(lines)


def _corpus_test(n: int, seed: int, stress_every: int, cache: Path, capsys) -> None:
    from unimusic.music21_corpus import sample_pieces

    pieces = sample_pieces(n, seed=seed)
    assert len(pieces) == n
    failures, report = run_corpus_round_trip(pieces, cache, stress_every=stress_every)
    with capsys.disabled():
        print("\n" + report)
    assert not failures, report


def test_corpus_round_trip_default_tier(midi_cache, capsys):
    _corpus_test(40, 11, 4, midi_cache, capsys)


@pytest.mark.slow
def test_corpus_round_trip_300_pieces(midi_cache, capsys):
    _corpus_test(300, 0, 10, midi_cache, capsys)


# ---------------------------------------------------------------------------
# 3. tolerant decoding, fuzzed


def _real_windows() -> list[tuple[float, list[int]]]:
    rng = random.Random(1234)
    notes = []
    for _ in range(300):
        start = rng.uniform(0, 28)
        notes.append(
            Note(
                start,
                start + rng.choice([0.0, 0.05, 0.4, 1.5, 6.0]),
                rng.choice([36, 38, 60, 62, 64, 67]),
                rng.randint(1, 127),
                rng.choice([0, 40, 73]),
                rng.random() < 0.15,
            )
        )
    return CODEC.encode(notes, window_seconds=2.5)


REAL = _real_windows()
N = CODEC.num_classes
any_id = st.one_of(st.integers(0, N - 1), st.integers(-1000, -1), st.integers(N, N + 1000))


def assert_valid(notes: list[Note], lo: float, hi: float) -> None:
    for n in notes:
        assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and 0 <= n.program <= 127
        assert lo - 1e-9 <= n.start < n.end <= hi + 1e-9, n


def assert_stats(stats: DecodeStats, ids) -> None:
    assert stats.invalid_tokens == sum(stats.reasons.values())
    bad = sum(1 for i in ids if not 0 <= i < N)
    assert stats.reasons.get("out_of_range", 0) == bad
    if bad:
        assert stats.invalid_tokens > 0


@settings(max_examples=500, **FUZZ)
@given(ids=st.lists(any_id, max_size=300), start=st.sampled_from([0.0, 2.5, 7.3]))
def test_fuzz_random_streams(ids, start):
    notes, stats = CODEC.decode_window(ids, start=start)
    assert_valid(notes, start, start + 10.0)
    assert_stats(stats, ids)
    joined, stats = CODEC.decode([(start, ids), (start + 10.0, ids[::-1])])
    assert_valid(joined, start, start + 20.0)
    assert_stats(stats, ids + ids)


@st.composite
def mutated_window(draw):
    k = draw(st.integers(0, len(REAL) - 1))
    ids = list(REAL[k][1])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "swap", "truncate", "duplicate"]))
        if not ids and op != "insert":
            continue
        i = draw(st.integers(0, max(len(ids) - 1, 0)))
        if op == "delete":
            del ids[i]
        elif op == "insert":
            ids.insert(i, draw(any_id))
        elif op == "swap":
            j = draw(st.integers(0, len(ids) - 1))
            ids[i], ids[j] = ids[j], ids[i]
        elif op == "truncate":
            ids = ids[:i]
        else:
            ids[i:i] = ids[i : i + draw(st.integers(1, 5))]
    return k, ids


@settings(max_examples=700, **FUZZ)
@given(mw=mutated_window())
def test_fuzz_mutated_real_windows(mw):
    k, ids = mw
    ws = REAL[k][0]
    notes, stats = CODEC.decode_window(ids, start=ws, end=ws + 2.5)
    assert_valid(notes, ws, ws + 2.5)
    assert_stats(stats, ids)
    windows = [(w, ids if i == k else orig) for i, (w, orig) in enumerate(REAL)]
    joined, stats = CODEC.decode(windows, window_seconds=2.5)
    assert_valid(joined, 0.0, REAL[-1][0] + 2.5)
    assert stats.invalid_tokens == sum(stats.reasons.values())


@settings(max_examples=150, **FUZZ)
@given(
    windows=st.lists(
        st.tuples(
            st.sampled_from([0.0, 2.5, 2.5, 5.0, 9.99, -1.0, math.nan, math.inf, 1e12, "x"]),
            st.lists(any_id, max_size=60),
        ),
        max_size=6,
    )
)
def test_fuzz_window_lists(windows):
    notes, stats = CODEC.decode(windows, window_seconds=2.5)
    assert_valid(notes, 0.0, 9.99 + 2.5)
    assert stats.invalid_tokens == sum(stats.reasons.values())


def test_decode_counts_each_kind_of_invalid_token():
    t = CODEC.string_to_token
    ids = [t("pitch:60"), t("tie"), t("pitch:61"), t("program:0"), t("velocity:0"), t("pitch:62"),
           t("shift:50"), t("velocity:5"), t("pitch:60"), t("shift:40"), t("tie"), -3, N, 2.5,
           t("drum:36"), t("drum:36"), t("velocity:0"), t("drum:36"), t("shift:60"), t("velocity:0"), t("pitch:60"),
           t("velocity:5"), t("pitch:64"), t("pitch:64")]  # fmt: skip
    notes, stats = CODEC.decode_window(ids)
    assert stats.reasons == {
        "pitch_without_program": 2,  # tie section and body before any program
        "off_without_on": 1,
        "shift_backwards": 1,
        "tie_after_section": 1,
        "out_of_range": 2,
        "not_an_int": 1,
        "duplicate_onset": 2,  # drum twice at one time, pitch 64 twice at one time
        "drum_off": 1,
    }
    assert stats.invalid_tokens == 11
    assert keys(notes) == sorted(
        [(50, 60, 60, 39, 0, False), (50, 51, 36, 39, 0, True), (60, 1000, 64, 39, 0, False)]
    )


# ---------------------------------------------------------------------------
# 4. metrics


def test_note_f1_hand_computed():
    ref = [Note(0.0, 1.0, 60), Note(1.0, 2.0, 62), Note(2.0, 3.0, 64), Note(3.0, 4.0, 65)]
    assert note_f1(ref, ref) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n_ref": 4, "n_est": 4, "n_match": 4}
    r = note_f1(ref, ref[:3])
    assert (r["precision"], r["recall"], r["n_match"]) == (1.0, 0.75, 3)
    assert r["f1"] == pytest.approx(2 * 0.75 / 1.75)
    # onset within 50 ms matches, pitch must match
    assert note_f1([Note(0, 1, 60)], [Note(0.05, 1, 60)])["f1"] == 1.0
    assert note_f1([Note(0, 1, 60)], [Note(0.06, 1, 60)])["f1"] == 0.0
    assert note_f1([Note(0, 1, 60)], [Note(0, 1, 61)])["f1"] == 0.0


def test_note_f1_groups_by_program_and_drum():
    ref = [Note(0, 1, 60, program=0), Note(1, 2, 62, program=0)]
    assert note_f1(ref, [Note(0, 1, 60, program=40), Note(1, 2, 62, program=40)])["n_match"] == 0
    assert note_f1(ref, [Note(0, 1, 60, is_drum=True), Note(1, 2, 62)])["n_match"] == 1
    mixed = ref + [Note(0, 1, 60, program=40)]
    r = note_f1(mixed, mixed[::-1])
    assert r["f1"] == 1.0 and r["n_match"] == 3


def test_note_f1_offset_tolerance_is_really_10_ms():
    ref = [Note(1.0, 11.0, 60)]  # long note: mir_eval's default ratio would allow 2 s of slack
    assert note_f1(ref, [Note(1.0, 11.009, 60)], offset=True, offset_tolerance=0.01)["f1"] == 1.0
    assert note_f1(ref, [Note(1.0, 10.99, 60)], offset=True, offset_tolerance=0.01)["f1"] == 1.0
    assert note_f1(ref, [Note(1.0, 11.02, 60)], offset=True, offset_tolerance=0.01)["f1"] == 0.0
    assert note_f1(ref, [Note(1.0, 11.02, 60)], offset=False)["f1"] == 1.0
    assert note_f1(ref, [Note(1.0, 12.5, 60)], offset=True)["f1"] == 0.0  # default 50 ms


def test_note_f1_empty_and_zero_length():
    assert note_f1([], [])["f1"] == 1.0
    assert note_f1([Note(0, 1, 60)], [])["f1"] == 0.0
    r = note_f1([], [Note(0, 1, 60)])
    assert r["f1"] == 0.0 and r["precision"] == 0.0 and r["n_est"] == 1
    assert note_f1([Note(1, 1, 60)], [Note(1, 1, 60)], offset=True)["f1"] == 1.0


# ---------------------------------------------------------------------------
# 5. MIDI files


def _some_midi_bytes() -> bytes:
    buf = io.BytesIO()
    notes_to_midi([Note(i * 0.1, i * 0.1 + 0.3, 60 + i % 12) for i in range(40)]).write(buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "content,problem",
    [
        (lambda d: d[: len(d) // 2], "truncated MIDI file"),
        (lambda d: d[:-3], "truncated MIDI file"),
        (lambda d: d[:14], "truncated MIDI file"),
        (lambda d: b"this is not a MIDI file at all" * 5, "not a MIDI file"),
        (lambda d: b"", "file is empty"),
    ],
    ids=["half", "minus-3-bytes", "header-only", "garbage", "empty"],
)
def test_notes_from_midi_rejects_broken_files(tmp_path, content, problem):
    path = tmp_path / "broken.mid"
    path.write_bytes(content(_some_midi_bytes()))
    with pytest.raises(InputError, match=problem) as info:
        notes_from_midi(path)
    assert info.value.source == str(path) and "broken.mid" in str(info.value)
    with pytest.raises(InputError, match=problem) as info:
        notes_from_midi(path.read_bytes(), name="upload.mid")
    assert info.value.source == "upload.mid"


def test_notes_from_midi_sources(tmp_path):
    data = _some_midi_bytes()
    (tmp_path / "ok.mid").write_bytes(data)
    import pretty_midi

    from_path = notes_from_midi(tmp_path / "ok.mid")
    assert len(from_path) == 40
    assert notes_from_midi(str(tmp_path / "ok.mid")) == from_path == notes_from_midi(data)
    assert notes_from_midi(pretty_midi.PrettyMIDI(io.BytesIO(data))) == from_path
    with pytest.raises(InputError, match="no such file"):
        notes_from_midi(tmp_path / "missing.mid")
    with pytest.raises(InputError, match="expected MIDI bytes, a path or a PrettyMIDI"):
        notes_from_midi(42)


def test_notes_from_midi_reads_long_high_resolution_files():
    # music21 writes 10080 ticks per quarter; pretty_midi alone refuses files past 1e7 ticks.
    import mido
    import pretty_midi

    mf = mido.MidiFile(ticks_per_beat=10080)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    track.append(mido.Message("note_on", note=60, velocity=90, time=10080))  # 0.5 s
    track.append(mido.Message("note_off", note=60, velocity=0, time=10080))  # 1.0 s
    track.append(mido.Message("note_on", note=62, velocity=90, time=11_000_000 - 20160))
    track.append(mido.Message("note_off", note=62, velocity=0, time=5040))
    mf.tracks.append(track)
    buf = io.BytesIO()
    mf.save(file=buf)
    with pytest.raises(ValueError, match="likely corrupt"):
        pretty_midi.PrettyMIDI(io.BytesIO(buf.getvalue()))
    notes = notes_from_midi(buf.getvalue())
    assert [n.pitch for n in notes] == [60, 62]
    expected = [(0.5, 1.0), (11_000_000 / 20160, 11_005_040 / 20160)]
    for n, (s, e) in zip(notes, expected):
        assert n.start == pytest.approx(s, abs=1e-3) and n.end == pytest.approx(e, abs=1e-3)


def test_decode_never_raises_on_non_sequences():
    notes, stats = CODEC.decode_window(None)
    assert notes == [] and stats.reasons == {"not_a_sequence": 1}
    notes, stats = CODEC.decode([None, (0.0, [CODEC.string_to_token("tie")])])
    assert notes == [] and stats.reasons == {"bad_window": 1}
