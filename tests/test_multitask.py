"""Multitask examples on real corpus rows: the sequence contract, slicing, mixing, batches."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.multitask import (
    SLOTS,
    Caps,
    DirectionWeight,
    ExamplePool,
    build_examples,
    collate,
    decode_target,
    examples_for_row,
    mix_probabilities,
    parse_weights,
    target_tokens,
)
from unimusic.tokens.vocabulary import TASKS

# A jig with repeats and first/second endings (13 rows, measures missing from some
# passes), a four-part chorale (multi-part LMX, tall systems) and a one-row song.
PIECES = ["ryansMammoth/EmonAcnuckJig.abc", "bach/bwv66.6.mxl", "demos/multiple-verses.xml"]
SMALL = Caps(source=64, target=64)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """Real corpus rows, tokenized with the shipped tokenizers in-process (no Ray)."""
    import pyarrow as pa

    from unimusic.corpus import CorpusConfig, row_schema, rows_for_source
    from unimusic.models.shipped import shipped_path
    from unimusic.music21_corpus import corpus_root
    from unimusic.tokenize import Tokenizers, tokenize_table

    config = CorpusConfig(piano_reductions=False)
    built = []
    for relpath in PIECES:
        path = corpus_root() / relpath
        piece_rows, errors = rows_for_source(str(path), path.read_bytes(), config)
        assert not errors and piece_rows
        built += piece_rows
    table = pa.Table.from_pylist(built, schema=row_schema())
    out, errors, _ = tokenize_table(table, Tokenizers.load(shipped_path("image"), shipped_path("audio")))
    assert not errors
    return out.to_pylist()


@pytest.fixture(scope="module")
def vocab():
    from unimusic.tokens.vocabulary import Vocabulary

    return Vocabulary()


@pytest.fixture(scope="module")
def rules(vocab):
    from unimusic.models.positions import PositionRules

    return PositionRules.from_vocabulary(vocab)


@pytest.fixture(scope="module")
def default_examples(rows, vocab, rules):
    return build_examples(rows, TASKS, vocab=vocab, rules=rules, caps=Caps(), dataset="corpus")


@pytest.fixture(scope="module")
def small_examples(rows, vocab, rules):
    return build_examples(rows, TASKS, vocab=vocab, rules=rules, caps=SMALL, dataset="corpus")


def _row_key(row) -> tuple:
    return (row["piece_id"], row.get("variant") or "score", row["system"], row["occurrence"])


def _by_row(examples) -> dict:
    out = collections.defaultdict(list)
    for e in examples:
        out[e.row].append(e)
    return out


def _row_notes(row, vocab):
    from unimusic.tokens.midi import Note

    return vocab.midi.normalize([Note(start=n["start"], end=n["end"], pitch=n["pitch"], velocity=n["velocity"],
                                      program=n["program"], is_drum=n["is_drum"]) for n in row["notes"]])


def _in(ids, r) -> bool:
    ids = np.asarray(ids)
    return bool(np.all((ids >= r.start) & (ids < r.stop)))


def _check_stream(vocab, modality: str, stream: np.ndarray) -> None:
    """Slot rules of one modality stream (without task/SOS/EOS)."""
    pad = vocab.pad
    if modality in ("lmx", "midi"):
        assert _in(stream[:, 0], vocab.ranges[modality]) and np.all(stream[:, 1:] == pad)
        return
    if modality == "image":
        assert _in(stream[:1, 0], vocab.ranges["image_height"]) and np.all(stream[0, 1:] == pad)
        stream = stream[1:]
    for level in range(SLOTS):
        assert _in(stream[:, level], vocab.ranges[f"{modality}:{level}"])


# -- the contract ----------------------------------------------------------------------------------


def test_every_direction_follows_the_sequence_contract(rows, default_examples, vocab, rules):
    from unimusic.models.positions import stream_positions

    examples, stats = default_examples
    assert sorted(k for k, _ in examples) == sorted(TASKS)
    for task in TASKS:
        source, target = task.split("->")
        got = examples[(task, "corpus")]
        assert stats[task]["rows"] == len(rows) and stats[task]["used"] == len(rows), stats[task]
        assert stats[task]["examples"] == len(got) >= len(rows)
        for e in got:
            assert (e.task, e.source, e.target, e.dataset) == (task, source, target, "corpus")
            assert e.src.dtype == e.tgt.dtype == np.int64 and e.src.shape[1] == e.tgt.shape[1] == SLOTS
            assert len(e.src) <= 512 and len(e.tgt) <= 512 and e.length == len(e.src) + len(e.tgt)
            assert e.src[0, 0] == vocab.task(source, target) and np.all(e.src[0, 1:] == vocab.pad)
            assert e.tgt[0, 0] == vocab.sos(target) and np.all(e.tgt[0, 1:] == vocab.pad)
            assert e.tgt[-1, 0] == vocab.eos and np.all(e.tgt[-1, 1:] == vocab.pad)
            assert vocab.eos not in e.tgt[1:-1, 0]
            _check_stream(vocab, source, e.src[1:])
            _check_stream(vocab, target, e.tgt[1:-1])
            np.testing.assert_array_equal(e.src_pos, stream_positions(rules, source, e.src[:, 0]))
            np.testing.assert_array_equal(e.tgt_pos, stream_positions(rules, target, e.tgt[:, 0]))
            assert tuple(e.src_pos[0]) == (0, 0) and tuple(e.tgt_pos[0]) == (0, 0)
            assert e.prefix == 0 or target == "audio"
            assert not e.clipped and e.piece_id == e.row[0]


def test_whole_rows_carry_the_rows_own_tokens(rows, default_examples, vocab):
    """Under the default caps these rows fit whole: every stream is the row's data, decodable back."""
    from unimusic.tokenize import decode_audio_codes, decode_image_codes

    examples, _ = default_examples
    for task in ("image->lmx", "lmx->image", "audio->midi", "midi->audio"):
        by_row = _by_row(examples[(task, "corpus")])
        for row in rows:
            (e,) = by_row[_row_key(row)]
            tokens = target_tokens(e)
            if e.target == "lmx":
                assert decode_target(vocab, "lmx", tokens) == (list(row["lmx"]), 0)
                image, invalid = decode_target(vocab, "image", e.src[1:])
                assert invalid == 0 and e.columns == (0, row["image_code_shape"][2])
                np.testing.assert_array_equal(image, decode_image_codes(row))
            elif e.target == "image":
                image, invalid = decode_target(vocab, "image", tokens)
                assert invalid == 0
                np.testing.assert_array_equal(image, decode_image_codes(row))
            elif e.target == "midi":
                seconds = e.span[1] - e.span[0]
                assert seconds == pytest.approx(row["end"] - row["start"])
                notes, invalid = decode_target(vocab, "midi", tokens, seconds=seconds)
                assert invalid == 0 and notes == _row_notes(row, vocab)
                audio, invalid = decode_target(vocab, "audio", e.src[1:])
                assert invalid == 0
                np.testing.assert_array_equal(audio, decode_audio_codes(row))
            else:
                audio, invalid = decode_target(vocab, "audio", tokens)
                assert invalid == 0 and e.prefix == 0
                np.testing.assert_array_equal(audio, decode_audio_codes(row))


def test_lmx_has_one_chunk_per_system_measure(rows, vocab):
    """The LMX of a row splits at "measure" into exactly its system measures, multi-part included."""
    measure = vocab.lmx.tokens.index("measure")
    parts = 0
    for row in rows:
        assert row["lmx"][0] == measure
        assert row["lmx"].count(measure) == len(row["measures"])
        parts += any(vocab.lmx.tokens[i].startswith("part:") for i in row["lmx"])
    assert parts >= 7  # the chorale's rows are multi-part


# -- slicing ---------------------------------------------------------------------------------------


def test_small_caps_keep_every_measure_of_the_score(rows, small_examples, vocab):
    from unimusic.tokenize import decode_image_codes

    examples, stats = small_examples
    measure = vocab.to_model("lmx", [vocab.lmx.tokens.index("measure")])[0]
    for task in ("image->lmx", "lmx->image"):
        by_row = _by_row(examples[(task, "corpus")])
        clipped = 0
        for row in rows:
            got = by_row[_row_key(row)]
            lmx = np.asarray(vocab.to_model("lmx", row["lmx"]))
            chunks = np.split(lmx, np.flatnonzero(lmx == measure)[1:])
            codes = decode_image_codes(row)
            assert [e.index for e in got] == list(range(len(got)))
            # consecutive measure groups: every measure once, in order
            assert [m for e in got for m in range(e.span[2], e.span[3] + 1)] == list(range(len(row["measures"])))
            assert got[0].columns[0] == 0
            for e in got:
                score = e.tgt[1:-1, 0] if e.target == "lmx" else e.src[1:, 0]
                image_stream = e.src[1:] if e.source == "image" else e.tgt[1:-1]
                expected = np.concatenate(chunks[e.span[2] : e.span[3] + 1])
                image, invalid = decode_target(vocab, "image", image_stream)
                assert invalid == 0
                np.testing.assert_array_equal(image, codes[:, :, e.columns[0] : e.columns[1]])
                assert score[0] == measure
                if e.clipped:  # one measure over a cap: truncated LMX / image
                    clipped += 1
                    assert e.span[2] == e.span[3]
                    np.testing.assert_array_equal(score, expected[: len(score)])
                else:
                    np.testing.assert_array_equal(score, expected)
                assert len(e.src) <= SMALL.source and len(e.tgt) <= SMALL.target
            if not any(e.clipped for e in got):  # columns covered, neighbours share at most a barline column
                assert got[-1].columns[1] == codes.shape[2]
                for a, b in zip(got, got[1:]):
                    assert b.columns[0] <= a.columns[1] <= b.columns[0] + 1
            else:
                assert row["piece_id"].startswith("bach/")  # 14-row chorale systems: a measure is too wide for 64
        assert stats[task]["clipped"] == clipped > 0
        # the jig's small systems needed no fallback, but were sliced
        jig = [e for e in examples[(task, "corpus")] if e.piece_id.startswith("ryans")]
        assert not any(e.clipped for e in jig) and len(jig) > 2 * 13


@pytest.mark.parametrize("task", ["audio->midi", "midi->audio", "lmx->midi", "image->midi", "midi->lmx"])
def test_small_caps_keep_every_note(rows, small_examples, vocab, task):
    """The MIDI windows of a row's slices tile its time span and decode back to exactly its notes."""
    examples, stats = small_examples
    by_row = _by_row(examples[(task, "corpus")])
    assert stats[task]["examples"] > len(rows)
    for row in rows:
        got = by_row[_row_key(row)]
        duration = round((row["end"] - row["start"]) * 100) / 100
        spans = [e.span[:2] for e in got]
        assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(duration)
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:]))
        assert all(0 < b - a <= SMALL.max_seconds for a, b in spans)
        windows = []
        for e in got:
            stream = target_tokens(e) if e.target == "midi" else e.src[1:]
            ids, invalid = vocab.from_model(stream[:, 0], "midi")
            assert invalid == 0
            windows.append((e.span[0], ids))
            if e.target == "midi" and not e.clipped:  # the reference decodes on its own too
                notes, bad = decode_target(vocab, "midi", target_tokens(e), seconds=e.span[1] - e.span[0])
                assert bad == 0
                expected, _ = vocab.midi.decode_window(ids, start=0, end=round((e.span[1] - e.span[0]) * 100) / 100)
                assert notes == expected
        notes, decode_stats = vocab.midi.decode(windows)
        assert decode_stats.invalid_tokens == 0
        assert notes == _row_notes(row, vocab)


def test_time_slices_carry_their_audio_frames(rows, small_examples, vocab):
    from unimusic.tokenize import decode_audio_codes

    examples, _ = small_examples
    by_row = _by_row(examples[("audio->midi", "corpus")])
    for row in rows:
        codes = decode_audio_codes(row)
        rate = row["audio_frame_rate"]
        covered = set()
        for e in by_row[_row_key(row)]:
            f0, f1 = math.floor(e.span[0] * rate + 1e-9), min(codes.shape[1], math.ceil(e.span[1] * rate - 1e-9))
            frames, invalid = decode_target(vocab, "audio", e.src[1:])
            assert invalid == 0 and len(e.src) - 1 <= SMALL.source - 1
            np.testing.assert_array_equal(frames, codes[:, f0:f1])
            covered.update(range(f0, f1))
        assert covered == set(range(codes.shape[1]))


def test_mixed_directions_use_played_measures_only(rows, default_examples, vocab):
    """A measure this occurrence does not play (a first ending on the second pass) has no audio:
    mixed directions leave it out, score-only directions keep it."""
    examples, stats = default_examples
    partial_rows = [r for r in rows if set(r["played_measures"]) != set(r["measures"])]
    assert partial_rows  # the jig's repeats with volta endings
    unplayed = sum(len(set(r["measures"]) - set(r["played_measures"])) for r in rows)
    assert stats["audio->lmx"]["unplayed_measures"] == unplayed
    assert "unplayed_measures" not in stats["image->lmx"]
    by_row = _by_row(examples[("audio->lmx", "corpus")])
    for row in partial_rows:
        played = [row["measures"].index(m) for m in row["played_measures"]]
        got = by_row[_row_key(row)]
        assert [m for e in got for m in range(e.span[2], e.span[3] + 1)] == played


def test_a_repeat_inside_one_system_starts_a_new_group(rows, vocab, rules):
    """Rule check on a real row made to play its measures twice (a repeat within the system):
    a group never jumps back in the score, so each pass is its own slice."""
    row = next(r for r in rows if r["played_measures"] == r["measures"] and len(r["measures"]) == 4)
    duration = row["end"] - row["start"]
    twice = dict(row, played_measures=row["measures"] * 2, end=row["start"] + 2 * duration,
                 measure_start=list(row["measure_start"]) + [t + duration for t in row["measure_start"]],
                 measure_end=list(row["measure_end"]) + [t + duration for t in row["measure_end"]])
    got = examples_for_row(twice, "lmx->midi", vocab=vocab, rules=rules)
    d = round(duration * 100) / 100
    assert [e.span for e in got] == [(0.0, pytest.approx(d), 0, 3), (pytest.approx(d), pytest.approx(2 * d), 0, 3)]
    np.testing.assert_array_equal(got[0].src, got[1].src)  # the same measures' LMX on both passes


def test_continuation_prefix_is_the_preceding_audio(rows, vocab, rules):
    from unimusic.tokenize import decode_audio_codes

    caps = Caps(source=128, target=128, prefix_frames=24)
    examples, stats = build_examples(rows, ["midi->audio", "image->audio"], vocab=vocab, rules=rules, caps=caps)
    for task in ("midi->audio", "image->audio"):
        got = examples[(task, "corpus")]
        later = [e for e in got if e.span[0] > 0]
        with_prefix = [e for e in got if e.prefix]
        assert stats[task]["continuations"] == len(with_prefix)
        assert 0.25 < len(with_prefix) / len(later) < 0.75  # continuation_fraction 0.5
        assert all(e.span[0] > 0 for e in with_prefix)
        rows_by_key = {_row_key(r): r for r in rows}
        for e in with_prefix:
            codes = decode_audio_codes(rows_by_key[e.row])
            f0 = math.floor(e.span[0] * rows_by_key[e.row]["audio_frame_rate"] + 1e-9)
            assert e.prefix == min(24, f0)
            prefix, invalid = decode_target(vocab, "audio", e.tgt[1 : 1 + e.prefix])
            assert invalid == 0
            np.testing.assert_array_equal(prefix, codes[:, f0 - e.prefix : f0])
            body, _ = decode_target(vocab, "audio", target_tokens(e))
            np.testing.assert_array_equal(body[:, :1], codes[:, f0 : f0 + 1])  # the target starts where the prefix ends
            assert len(e.tgt) <= caps.target
    # deterministic: the same rows give the same examples
    again, _ = build_examples(rows, ["midi->audio"], vocab=vocab, rules=rules, caps=caps)
    assert [(e.row, e.span, e.prefix) for e in again[("midi->audio", "corpus")]] == [
        (e.row, e.span, e.prefix) for e in examples[("midi->audio", "corpus")]]


def test_missing_modalities_skip_the_row(rows, vocab, rules):
    row = dict(rows[0], image_codes=None, image_code_shape=None)
    assert examples_for_row(row, "image->lmx", vocab=vocab, rules=rules) == []
    assert examples_for_row(row, "audio->midi", vocab=vocab, rules=rules)
    _, stats = build_examples([row], ["lmx->image", "lmx->midi"], vocab=vocab, rules=rules)
    assert stats["lmx->image"]["skipped:no_image_codes"] == 1 and stats["lmx->image"]["examples"] == 0
    assert stats["lmx->midi"]["used"] == 1
    fewer = dict(rows[0], measures=rows[0]["measures"][:-1], measure_x=rows[0]["measure_x"][:-1])
    _, stats = build_examples([fewer], ["midi->lmx"], vocab=vocab, rules=rules)
    assert stats["midi->lmx"]["skipped:lmx_measure_count"] == 1
    with pytest.raises(InputError, match="above the MIDI codec window"):
        examples_for_row(rows[0], "audio->midi", vocab=vocab, rules=rules, caps=Caps(max_seconds=12))
    with pytest.raises(InputError, match="not a supported direction"):
        examples_for_row(rows[0], "midi->image", vocab=vocab, rules=rules)
    with pytest.raises(InputError, match="source"):
        Caps(source=1)


# -- mixing ----------------------------------------------------------------------------------------


def test_weight_ramps_linearly_between_two_steps():
    w = DirectionWeight("audio->image", 1.0, start_weight=0.0, ramp=(100, 300))
    assert [w.at(s) for s in (0, 100, 150, 200, 300, 10_000)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert DirectionWeight("image->lmx", 2.0).at(0) == DirectionWeight("image->lmx", 2.0).at(10**6) == 2.0
    with pytest.raises(InputError):
        DirectionWeight("image->lmx", -1.0)
    with pytest.raises(InputError):
        DirectionWeight("image->lmx", 1.0, ramp=(5, 2))


def test_mix_probabilities():
    keys = [("image->lmx", "corpus"), ("audio->image", "corpus"), ("image->lmx", "olimpic")]
    weights = parse_weights("image->lmx=2, audio->image=0..1@100..300, audio->midi=5")
    assert weights[1] == DirectionWeight("audio->image", 1.0, "*", 0.0, (100, 300))
    before = mix_probabilities(weights, 0, keys)
    assert before == {("audio->image", "corpus"): 0.0, ("image->lmx", "corpus"): 0.5, ("image->lmx", "olimpic"): 0.5}
    inside = mix_probabilities(weights, 200, keys)
    assert inside[("audio->image", "corpus")] == pytest.approx(0.5 / 2.5)
    after = mix_probabilities(weights, 300, keys)
    assert after[("audio->image", "corpus")] == pytest.approx(1 / 3) and sum(after.values()) == pytest.approx(1)
    # a dataset's own weight, the wildcard shares the rest
    own = mix_probabilities({"image->lmx@olimpic": 3, "image->lmx": 1}, 0, keys)
    assert own == {("audio->image", "corpus"): 0.0, ("image->lmx", "corpus"): 0.25, ("image->lmx", "olimpic"): 0.75}
    assert mix_probabilities(None, 0, keys) == {k: pytest.approx(1 / 3) for k in keys}
    with pytest.raises(InputError, match="all zero at step 0"):
        mix_probabilities("audio->image=0..1@100..300,audio->midi=1", 0, keys)
    with pytest.raises(InputError, match="given twice"):
        parse_weights("image->lmx=1,image->lmx=2")
    with pytest.raises(InputError, match="not a supported direction"):
        parse_weights("image->video=1")


# -- batches ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(small_examples):
    return ExamplePool(small_examples[0], seed=7)


WEIGHTS = "image->lmx=1,audio->midi=2,midi->audio=1,lmx->midi=1"


def _ids(batch):
    key, examples = batch
    return key, [id(e) for e in examples]


def test_pool_batches_are_a_function_of_seed_step_rank(pool, small_examples):
    kw = dict(weights=WEIGHTS, max_tokens=2048, max_batch=16)
    resumed = ExamplePool(small_examples[0], seed=7)
    differ = 0
    for step in range(40):
        a = pool.batch(step, 0, **kw)
        assert _ids(a) == _ids(pool.batch(step, 0, **kw)) == _ids(resumed.batch(step, 0, **kw))
        b = pool.batch(step, 1, **kw)
        assert a[0] == b[0]  # every worker trains the same direction on a step
        differ += _ids(a) != _ids(b)
        assert all(e.task == a[0][0] for e in a[1])
    assert differ >= 35
    other = ExamplePool(small_examples[0], seed=8)
    assert [other.direction(s, weights=WEIGHTS) for s in range(40)] != [pool.direction(s, weights=WEIGHTS)
                                                                        for s in range(40)]
    counts = collections.Counter(pool.direction(s, weights=WEIGHTS)[0] for s in range(1000))
    assert set(counts) == {"image->lmx", "audio->midi", "midi->audio", "lmx->midi"}
    assert 0.33 < counts["audio->midi"] / 1000 < 0.47


def test_bucketing_keeps_batch_lengths_close(pool):
    rng = np.random.default_rng(0)
    spread_bucketed, spread_random = [], []
    for step in range(200):
        key, batch = pool.batch(step, step % 4, weights=None, max_tokens=1500, max_batch=12)
        assert 1 <= len(batch) <= 12
        s, t = max(len(e.src) for e in batch), max(len(e.tgt) for e in batch)
        assert len(batch) == 1 or len(batch) * (s + t) <= 1500
        if len(batch) < 2:
            continue
        lengths = [e.length for e in batch]
        spread_bucketed.append(max(lengths) - min(lengths))
        everything = pool.examples[key]
        random = [everything[i].length for i in rng.choice(len(everything), len(batch), replace=False)]
        spread_random.append(max(random) - min(random))
    assert len(spread_bucketed) > 100
    assert np.mean(spread_bucketed) < 0.3 * np.mean(spread_random)
    (key, (single,)) = pool.batch(3, 0, weights=None, max_tokens=1, max_batch=8)  # at least one
    assert single.task == key[0]


def test_collate_pads_and_masks_what_is_not_scored(rows, vocab, rules):
    caps = Caps(source=128, target=128, prefix_frames=24)
    got, _ = build_examples(rows, ["midi->audio"], vocab=vocab, rules=rules, caps=caps)
    examples = got[("midi->audio", "corpus")]
    batch_examples = [next(e for e in examples if e.prefix)] + [e for e in examples if not e.prefix][:3]
    pad = vocab.pad
    batch = collate(batch_examples, pad=pad)
    b = len(batch_examples)
    s_max = max(len(e.src) for e in batch_examples)
    t_max = max(len(e.tgt) for e in batch_examples) - 1
    assert batch["src"].shape == (b, s_max, SLOTS) and batch["src_pos"].shape == (b, s_max, 2)
    assert batch["tgt_in"].shape == batch["tgt_out"].shape == (b, t_max, SLOTS)
    assert batch["tgt_pos"].shape == (b, t_max, 2) and batch["src_mask"].dtype == bool
    assert (batch["task"], batch["source"], batch["target"]) == ("midi->audio", "midi", "audio")
    for i, e in enumerate(batch_examples):
        s, t = len(e.src), len(e.tgt) - 1
        assert batch["src_mask"][i].sum() == s and batch["tgt_mask"][i].sum() == t
        np.testing.assert_array_equal(batch["src"][i, :s], e.src)
        assert np.all(batch["src"][i, s:] == pad)
        np.testing.assert_array_equal(batch["tgt_in"][i, :t], e.tgt[:-1])
        np.testing.assert_array_equal(batch["tgt_pos"][i, :t], e.tgt_pos[:-1])
        out = batch["tgt_out"][i]
        assert np.all(out[: e.prefix] == pad)  # the continuation prefix is context only
        np.testing.assert_array_equal(out[e.prefix : t], e.tgt[1 + e.prefix :])
        np.testing.assert_array_equal(out[e.prefix : t - 1], target_tokens(e))
        assert out[t - 1, 0] == vocab.eos and np.all(out[t - 1, 1:] == pad)  # EOS scored on slot 0 only
        assert np.all(out[t:] == pad) and np.all(batch["tgt_in"][i, t:] == pad)
        assert batch["prefix"][i] == e.prefix
    assert batch_examples[0].prefix > 0
    with pytest.raises(InputError, match="mixes directions"):
        other = build_examples(rows[:1], ["audio->midi"], vocab=vocab, rules=rules)[0][("audio->midi", "corpus")]
        collate([batch_examples[0], other[0]], pad=pad)


def test_decode_target_is_tolerant(small_examples, vocab):
    examples, _ = small_examples
    e = examples[("image->lmx", "corpus")][0]
    tokens = target_tokens(e)
    ids, invalid = decode_target(vocab, "lmx", tokens)
    assert invalid == 0 and len(ids) == len(tokens)
    noisy = np.concatenate([tokens[:3], [[vocab.sos("midi"), 0, 0, 0]], tokens[3:], [[vocab.eos, 0, 0, 0]], tokens])
    assert decode_target(vocab, "lmx", noisy) == (ids, 1)  # stops at EOS, drops the SOS
    assert decode_target(vocab, "lmx", noisy[:, 0]) == (ids, 1)
    m = next(x for x in examples[("audio->midi", "corpus")] if len(target_tokens(x)) > 4)
    notes, invalid = decode_target(vocab, "midi", target_tokens(m), seconds=m.span[1] - m.span[0])
    assert invalid == 0
    garbage = np.concatenate([target_tokens(m), [[vocab.ranges["lmx"].start, 0, 0, 0]]])
    assert decode_target(vocab, "midi", garbage, seconds=m.span[1] - m.span[0]) == (notes, 1)
    img = examples[("lmx->image", "corpus")][0]
    codes, invalid = decode_target(vocab, "image", target_tokens(img))
    h = codes.shape[1]
    assert invalid == 0 and codes.shape == (4, h, img.columns[1] - img.columns[0])
    cut, invalid = decode_target(vocab, "image", target_tokens(img)[:-1])  # an incomplete last column
    assert invalid == h - 1 and cut.shape[2] == codes.shape[2] - 1
    empty, invalid = decode_target(vocab, "image", target_tokens(img)[1:])  # no height token: nothing to decode
    assert empty.size == 0 and invalid == len(target_tokens(img)) - 1
