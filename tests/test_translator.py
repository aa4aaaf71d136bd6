"""The multitask translator (unimusic.models.translator): shapes, learning, generation.

CPU-only and small: a model smaller than ``tiny`` (d 64, one layer each side), random
valid batches of every direction built with the data contract (task / SOS / EOS steps,
K slots, 2-axis positions from ``stream_positions``), two short trainings on fixed
synthetic tasks (a copy task in four directions; an ambiguous distribution where
greedy decoding is provably worse than beam search).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimusic.errors import InputError
from unimusic.models.positions import stream_positions
from unimusic.models.translator import (
    MASK_VALUE,
    PRESETS,
    Generated,
    Translator,
    TranslatorConfig,
    build_translator,
    translator_config,
    translator_kwargs,
)
from unimusic.tokens.vocabulary import MODALITIES, TASKS, Vocabulary

VOCAB = Vocabulary()
K = max(VOCAB.config.image_codebooks, VOCAB.config.audio_codebooks)
PAD, EOS, SEP = VOCAB.pad, VOCAB.eos, VOCAB.sep
LEVELS = {"lmx": 1, "midi": 1, "image": VOCAB.config.image_codebooks, "audio": VOCAB.config.audio_codebooks}
SMALL = translator_config("tiny", d_model=64, heads=4, encoder_layers=1, decoder_layers=1, ffn=128, depth_layers=1,
                          dropout=0.0, max_positions=64)


@pytest.fixture(autouse=True)
def _seeded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def small_model(seed: int = 0, config: TranslatorConfig = SMALL) -> Translator:
    torch.manual_seed(seed)
    return build_translator(config, VOCAB)


# -- streams and batches (the data contract) ---------------------------------------------


def step(*codes: int) -> np.ndarray:
    row = np.full(K, PAD, dtype=np.int64)
    row[: len(codes)] = codes
    return row


def code(modality: str, level: int, value: int) -> int:
    return VOCAB.ranges[f"{modality}:{level}"].start + value


def random_stream(modality: str, rng: np.random.Generator, steps: int) -> np.ndarray:
    """A valid (n, K) stream of ``modality`` (no SOS/EOS) with about ``steps`` steps."""
    if modality in ("lmx", "midi"):
        r = VOCAB.ranges[modality]
        return np.stack([step(int(t)) for t in rng.integers(r.start, r.stop, steps)])
    levels = LEVELS[modality]

    def frame():
        return step(*(code(modality, k, int(rng.integers(0, VOCAB.config.audio_codebook_size))) for k in range(levels)))

    if modality == "audio":
        return np.stack([frame() for _ in range(steps)])
    rows, height = [], int(rng.integers(1, 4))
    rows.append(step(VOCAB.height_token(height)))
    for i in range(steps):
        if i == steps // 2 and steps > 3:  # a second system
            rows += [step(SEP), step(VOCAB.height_token(height))]
        rows.append(frame())
    return np.stack(rows)


def make_batch(model: Translator, source: str, target: str, sources: list, targets: list) -> dict:
    """The training batch of the data contract for (n, K) source and target streams."""
    rules = model.position_rules
    src_rows = [np.concatenate([step(VOCAB.task(source, target))[None], s]) for s in sources]
    tgt_rows = [np.concatenate([step(VOCAB.sos(target))[None], t, step(EOS)[None]]) for t in targets]
    b, s_len, t_len = len(sources), max(map(len, src_rows)), max(len(t) - 1 for t in tgt_rows)
    src = np.full((b, s_len, K), PAD, np.int64)
    src_pos = np.zeros((b, s_len, 2), np.int64)
    src_mask = np.zeros((b, s_len), bool)
    tgt_in = np.full((b, t_len, K), PAD, np.int64)
    tgt_out = np.full((b, t_len, K), PAD, np.int64)
    tgt_pos = np.zeros((b, t_len, 2), np.int64)
    for i, (sr, tr) in enumerate(zip(src_rows, tgt_rows)):
        src[i, : len(sr)] = sr
        src_pos[i, : len(sr)] = stream_positions(rules, source, sr[:, 0])
        src_mask[i, : len(sr)] = True
        n = len(tr) - 1
        tgt_in[i, :n] = tr[:-1]
        tgt_out[i, :n] = tr[1:]
        tgt_pos[i, :n] = stream_positions(rules, target, tr[:, 0])[:-1]
    t = torch.as_tensor
    return dict(src=t(src), src_pos=t(src_pos), src_mask=t(src_mask), source=source, tgt_in=t(tgt_in),
                tgt_pos=t(tgt_pos), target=target, tgt_out=t(tgt_out))


def source_only(batch: dict) -> dict:
    return {k: batch[k] for k in ("src", "src_pos", "src_mask", "source", "target")}


def allowed(modality: str, level: int, token: int) -> bool:
    ranges = VOCAB.ranges
    if modality in ("lmx", "midi"):
        return token in ranges[modality] or token == EOS
    if level > 0:
        return token in ranges[f"{modality}:{level}"]
    if modality == "audio":
        return token in ranges["audio:0"] or token == EOS
    return token in ranges["image:0"] or token in ranges["image_height"] or token in (SEP, EOS)


# -- forward and loss -----------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained() -> Translator:
    return small_model(1).eval()


@pytest.mark.parametrize("task", TASKS)
def test_forward_and_loss_shapes(task):
    source, target = task.split("->")
    model = small_model(0)
    rng = np.random.default_rng(abs(hash(task)) % 2**32)
    sources = [random_stream(source, rng, n) for n in (3, 7, 5)]
    targets = [random_stream(target, rng, n) for n in (4, 2, 6)]
    batch = make_batch(model, source, target, sources, targets)
    logits = model(**batch)
    b, t = batch["tgt_in"].shape[:2]
    levels = LEVELS[target]
    assert logits.shape == (b, t, levels, VOCAB.size)
    # logits outside the target level's ranges are masked, inside they are not
    m = MODALITIES.index(target)
    for k in range(levels):
        inside = model.allowed_mask[m, k]
        assert torch.all(logits[..., k, ~inside] == MASK_VALUE)
        assert torch.all(logits[..., k, inside] > MASK_VALUE / 2)
        ids = inside.nonzero()[:, 0].tolist()
        assert all(allowed(target, k, i) for i in ids[:: max(1, len(ids) // 50)])
    out = model.loss(**batch)
    scored = batch["tgt_out"][..., :levels] != PAD
    assert out["tokens"] == int(scored.sum())
    assert 0 <= out["correct"] <= out["tokens"]
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 1.0  # untrained: about log(allowed ids)
    # the loss is the cross-entropy of forward()'s masked logits (computed over allowed ids only)
    labels = batch["tgt_out"][..., :levels].reshape(-1)
    flat = logits.reshape(-1, VOCAB.size).float()
    expected = torch.nn.functional.cross_entropy(flat, labels, ignore_index=PAD)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert out["correct"] == int(((flat.argmax(-1) == labels) & (labels != PAD)).sum())
    out["loss"].backward()
    assert model.token_emb.weight.grad is not None
    assert torch.all(model.token_emb.weight.grad[PAD] == 0)
    depth_grad = model.depth[0].mlp.up.weight.grad
    assert (depth_grad is not None) == (levels > 1)  # the depth decoder only for multi-codebook targets


def test_forward_refuses_bad_inputs(untrained):
    rng = np.random.default_rng(0)
    batch = make_batch(untrained, "image", "audio", [random_stream("image", rng, 3)], [random_stream("audio", rng, 3)])
    with pytest.raises(InputError, match="tgt_out"):
        untrained(**{**batch, "tgt_out": None})
    with pytest.raises(InputError, match="video"):
        untrained(**{**batch, "target": "video"})
    with pytest.raises(InputError):
        untrained(**{**batch, "src_pos": batch["src_pos"][:, :-1]})
    as_numpy = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    with torch.no_grad():  # numpy arrays (a collate function's output) are accepted
        assert torch.equal(untrained(**as_numpy), untrained(**batch))
    wrong = batch["tgt_out"].clone()
    wrong[0, 0, 1] = code("audio", 2, 5)  # a level-2 code at level 1
    with pytest.raises(InputError, match="level 1"):
        untrained.loss(**{**batch, "tgt_out": wrong})


# -- training on a copy task in four directions -----------------------------------------

COPY_DIRECTIONS = (("lmx", "midi"), ("midi", "audio"), ("lmx", "image"), ("image", "lmx"))


def copy_example(source: str, target: str, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A source stream carrying ``values`` (0..7) and its target: the same values, mapped."""

    def stream(modality: str) -> np.ndarray:
        if modality == "lmx":
            return np.stack([step(VOCAB.ranges["lmx"].start + 3 + v) for v in values])
        if modality == "midi":
            return np.stack([step(VOCAB.ranges["midi"].start + 300 + v) for v in values])
        if modality == "audio":
            return np.stack([step(*(code("audio", k, (v * (k + 1) + k) % 8) for k in range(4))) for v in values])
        cells = [step(*(code("image", k, (v + 3 * k) % 8) for k in range(4))) for v in values]
        return np.stack([step(VOCAB.height_token(1)), *cells])

    return stream(source), stream(target)


COPY_VALUES = [list(np.random.default_rng(i).integers(0, 8, 2 + i % 4)) for i in range(16)]


def copy_batch(model, source, target, values=COPY_VALUES) -> dict:
    pairs = [copy_example(source, target, v) for v in values]
    return make_batch(model, source, target, [p[0] for p in pairs], [p[1] for p in pairs])


@pytest.fixture(scope="module")
def copy_model():
    """SMALL trained on the copy task (all four directions, fixed 16 examples each); losses per direction."""
    model = small_model(0)
    batches = {d: copy_batch(model, *d) for d in COPY_DIRECTIONS}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = {d: [] for d in COPY_DIRECTIONS}
    started = time.perf_counter()
    for _ in range(150):
        optimizer.zero_grad()
        for d, batch in batches.items():
            out = model.loss(**batch)
            out["loss"].backward()
            losses[d].append(out["loss"].item())
        optimizer.step()
    print(f"copy training: {time.perf_counter() - started:.1f} s, final losses "
          f"{ {f'{s}->{t}': round(v[-1], 4) for (s, t), v in losses.items()} }")
    return model.eval(), losses


def test_training_learns(copy_model):
    model, losses = copy_model
    for direction, values in losses.items():
        initial, final = values[0], float(np.mean(values[-5:]))
        assert initial > 4.0, direction  # about log(number of allowed ids)
        assert final < 0.3 * initial, (direction, initial, final)
        assert final < 0.5, (direction, initial, final)


@pytest.mark.parametrize("direction", COPY_DIRECTIONS, ids=lambda d: "->".join(d))
def test_generation_stops_at_eos(copy_model, direction):
    model, _ = copy_model
    values = [COPY_VALUES[i] for i in (0, 5, 3, 2)]  # lengths 2, 3, 5, 4: rows stop at different steps
    batch = copy_batch(model, *direction, values)
    generated = model.generate(**source_only(batch), max_steps=20)
    levels = LEVELS[direction[1]]
    for g, v in zip(generated, values):
        expected = copy_example(*direction, v)[1][:, :levels]
        assert isinstance(g, Generated)
        assert g.stopped
        assert g.tokens.dtype == np.int64 and g.tokens.shape == expected.shape
        assert np.array_equal(g.tokens, expected)  # EOS not included, rows went on after others stopped
        assert np.isfinite(g.score) and g.score <= 0
    lengths = {len(g.tokens) for g in generated}
    assert len(lengths) > 1


@pytest.mark.parametrize("direction", COPY_DIRECTIONS, ids=lambda d: "->".join(d))
def test_without_eos_generation_runs_to_max_steps(copy_model, direction):
    model = copy.deepcopy(copy_model[0])
    model.allowed_mask[:, :, EOS] = False
    batch = copy_batch(model, *direction, COPY_VALUES[:2])
    generated = model.generate(**source_only(batch), max_steps=7)
    for g in generated:
        assert not g.stopped
        assert g.tokens.shape == (7, LEVELS[direction[1]])
        assert EOS not in g.tokens


def test_prefix_is_context_not_output(copy_model):
    model, _ = copy_model
    values = [COPY_VALUES[i] for i in (3, 2, 5)]
    batch = copy_batch(model, "midi", "audio", values)
    expected = [copy_example("midi", "audio", v)[1] for v in values]
    prefix = [expected[0][:2], expected[1][:1], expected[2][:0]]  # different lengths: some steps forced
    for use_cache in (True, False):
        generated = model.generate(**source_only(batch), max_steps=20, prefix=prefix, use_cache=use_cache)
        for g, e, p in zip(generated, expected, prefix):
            assert g.stopped
            assert np.array_equal(g.tokens, e[len(p):])
    with pytest.raises(InputError, match="prefix"):
        model.generate(**source_only(batch), max_steps=3, prefix=[expected[0][:2, :1]] * 3)


def test_max_steps_zero_and_argument_checks(untrained):
    rng = np.random.default_rng(0)
    batch = make_batch(untrained, "audio", "midi", [random_stream("audio", rng, 3)], [random_stream("midi", rng, 2)])
    assert untrained.generate(**source_only(batch), max_steps=0)[0].tokens.shape == (0, 1)
    for bad in (dict(strategy="nope"), dict(strategy="sample", temperature=0.0), dict(strategy="sample", top_p=0.0),
                dict(max_steps=-1), dict(strategy="beam", beam_size=0)):
        with pytest.raises(InputError):
            untrained.generate(**{**source_only(batch), "max_steps": 3, **bad})
    batch = make_batch(untrained, "midi", "audio", [random_stream("midi", rng, 3)], [random_stream("audio", rng, 2)])
    with pytest.raises(InputError, match="beam"):
        untrained.generate(**source_only(batch), max_steps=3, strategy="beam")


# -- masks, sampling, KV cache ------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), task=st.sampled_from(TASKS), temperature=st.floats(0.3, 5.0),
       top_p=st.sampled_from([1.0, 0.9, 0.3]))
def test_sampled_tokens_stay_in_their_ranges(untrained, seed, task, temperature, top_p):
    source, target = task.split("->")
    rng = np.random.default_rng(seed)
    batch = make_batch(untrained, source, target, [random_stream(source, rng, n) for n in (2, 4)],
                       [random_stream(target, rng, 1)] * 2)
    generator = torch.Generator().manual_seed(seed)
    generated = untrained.generate(**source_only(batch), max_steps=6, strategy="sample", temperature=temperature,
                                   top_p=top_p, generator=generator)
    code0 = VOCAB.ranges[f"{target}:0"] if LEVELS[target] > 1 else None
    for g in generated:
        assert g.tokens.shape[1] == LEVELS[target] and len(g.tokens) <= 6
        assert g.stopped or len(g.tokens) == 6
        for row in g.tokens.tolist():
            assert allowed(target, 0, row[0]) and row[0] != EOS
            for k, token in enumerate(row[1:], start=1):
                if code0 is not None and row[0] not in code0:
                    assert token == PAD  # a special step has no other levels
                else:
                    assert allowed(target, k, token), (target, k, token)


def test_sampling_is_reproducible(untrained):
    rng = np.random.default_rng(3)
    batch = make_batch(untrained, "lmx", "image", [random_stream("lmx", rng, 4)] * 3,
                       [random_stream("image", rng, 2)] * 3)

    def run(seed):
        out = untrained.generate(**source_only(batch), max_steps=5, strategy="sample", temperature=2.0,
                                 generator=torch.Generator().manual_seed(seed))
        return [g.tokens for g in out]

    first, again, other = run(7), run(7), run(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("task", ["audio->lmx", "lmx->image", "midi->audio"])
def test_kv_cache_equals_full_recomputation(untrained, task):
    source, target = task.split("->")
    model = copy.deepcopy(untrained)
    model.allowed_mask[:, :, EOS] = False  # full-length sequences
    rng = np.random.default_rng(5)
    batch = make_batch(model, source, target, [random_stream(source, rng, n) for n in (3, 6)],
                       [random_stream(target, rng, 1)] * 2)
    levels = LEVELS[target]
    prefix = [random_stream(target, rng, 3)[:2, :levels], random_stream(target, rng, 1)[:0, :levels]]
    kwargs = dict(**source_only(batch), max_steps=8, keep_logits=True, prefix=prefix)
    cached, full = model.generate(**kwargs), model.generate(**kwargs, use_cache=False)
    for a, b in zip(cached, full):
        assert np.array_equal(a.tokens, b.tokens)
        assert a.logits.shape == (8, levels, VOCAB.size)
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)
        assert a.score == pytest.approx(b.score, abs=1e-3)
    # the generated steps, teacher-forced through forward(), give the same distributions
    for i, g in enumerate(cached):
        stream = np.full((len(prefix[i]) + len(g.tokens), K), PAD, np.int64)
        stream[:, :levels] = np.concatenate([prefix[i], g.tokens])
        one = make_batch(model, source, target, [batch["src"][i, batch["src_mask"][i]][1:].numpy()], [stream])
        with torch.no_grad():
            logp = torch.log_softmax(model(**one).float(), dim=-1)[0, len(prefix[i]):-1].numpy()
        scored = np.isfinite(g.logits)
        np.testing.assert_allclose(logp[scored], g.logits[scored], atol=1e-4)


# -- beam search ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ambiguous_model():
    """SMALL trained on: 'a' (p=0.6) then one of 3 equally likely tokens, or 'b' (p=0.4) then 'c'."""
    lmx = VOCAB.ranges["lmx"].start
    a, b, c, xs = lmx + 10, lmx + 11, lmx + 12, (lmx + 20, lmx + 21, lmx + 22)
    targets = [[a, x] for x in xs for _ in range(2)] + [[b, c]] * 4  # 6 x 'a .', 4 x 'b c'
    model = small_model(2)
    source = np.stack([step(VOCAB.ranges["midi"].start + 7)])
    batch = make_batch(model, "midi", "lmx", [source] * len(targets),
                       [np.stack([step(t) for t in seq]) for seq in targets])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(120):
        optimizer.zero_grad()
        out = model.loss(**batch)
        out["loss"].backward()
        optimizer.step()
    return model.eval(), batch, (a, b, c)


def test_beam_search_beats_greedy(ambiguous_model):
    model, batch, (a, b, c) = ambiguous_model
    one = {k: (v[:1] if isinstance(v, torch.Tensor) else v) for k, v in source_only(batch).items()}
    greedy = model.generate(**one, max_steps=5)[0]
    assert greedy.stopped and greedy.tokens[0, 0] == a  # the locally best first token
    for use_cache in (True, False):
        beam = model.generate(**one, max_steps=5, strategy="beam", beam_size=3, use_cache=use_cache)[0]
        assert beam.stopped
        assert beam.tokens[:, 0].tolist() == [b, c]
        assert greedy.score < beam.score - 0.3  # log 0.2 vs log 0.4
        assert beam.score == pytest.approx(np.log(0.4), abs=0.15)
    # beam of width 1 is greedy
    narrow = model.generate(**one, max_steps=5, strategy="beam", beam_size=1)[0]
    assert np.array_equal(narrow.tokens, greedy.tokens) and narrow.score == pytest.approx(greedy.score, abs=1e-4)


def test_beam_search_batch_and_limits(ambiguous_model, copy_model):
    model, _ = copy_model
    values = [COPY_VALUES[i] for i in (0, 5, 3)]
    batch = copy_batch(model, "image", "lmx", values)
    beams = model.generate(**source_only(batch), max_steps=20, strategy="beam", beam_size=3)
    for g, v in zip(beams, values):
        assert g.stopped and np.array_equal(g.tokens, copy_example("image", "lmx", v)[1][:, :1])
    short = model.generate(**source_only(batch), max_steps=2, strategy="beam", beam_size=3)
    assert all(not g.stopped and g.tokens.shape == (2, 1) for g in short)


# -- config and builder ---------------------------------------------------------------------


def test_presets_and_parameter_counts():
    counts = {}
    for name in ("tiny", "base"):
        model = build_translator(translator_config(name), VOCAB)
        counts[name] = model.count_parameters()
    print(f"parameters: {counts}")
    assert 2_000_000 < counts["tiny"] < 8_000_000
    assert 40_000_000 < counts["base"] < 120_000_000
    large = translator_config("large")
    shape = (large.encoder_layers, large.decoder_layers, large.d_model, large.heads, large.ffn)
    assert shape == (12, 12, 1024, 16, 4096)
    kwargs = translator_kwargs(large, VOCAB)  # plain arguments, nothing instantiated
    assert kwargs["codebooks"] == (1, 1, 4, 4) and kwargs["vocab_size"] == VOCAB.size
    assert kwargs["position_rules"].max_positions == large.max_positions
    assert kwargs["level_ranges"][MODALITIES.index("image")][0] == (
        (VOCAB.ranges["image:0"].start, VOCAB.ranges["image:0"].stop),
        (VOCAB.ranges["image_height"].start, VOCAB.ranges["image_height"].stop), (SEP, SEP + 1), (EOS, EOS + 1))
    assert set(PRESETS) == {"tiny", "base", "large"}


def test_untied_head():
    model = small_model(0, dataclasses.replace(SMALL, tie_embeddings=False))
    assert model.head is not None
    assert model.count_parameters() == small_model(0).count_parameters() + VOCAB.size * SMALL.d_model


def test_config_errors_and_round_trip():
    with pytest.raises(InputError, match="huge"):
        translator_config("huge")
    with pytest.raises(InputError, match="layers"):
        translator_config("tiny", layers=3)
    with pytest.raises(InputError, match="heads"):
        translator_config("tiny", heads=3)
    with pytest.raises(InputError, match="dropout"):
        translator_config("tiny", dropout=1.5)
    config = translator_config("base", dropout=0.2, tie_embeddings=False)
    assert TranslatorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    from unimusic.config import from_dict

    assert from_dict(TranslatorConfig, config.to_dict()) == config
