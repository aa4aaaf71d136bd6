"""Score-image RQ-VAE (unimusic.models.rqvae) and the weight files (unimusic.models.weights).

Small and CPU-only: shapes on the ``tiny`` preset, a few dozen training steps of a
smaller config on real engraved crops (Verovio via engrave_piece), dead-code
restarts, file round trips and refusals, and the reconstruction metrics.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from unimusic.errors import InputError
from unimusic.models.rqvae import (
    FORMAT_VERSION,
    KIND,
    PRESETS,
    RQVAE,
    RQVAEConfig,
    build_rqvae,
    codebook_perplexity,
    ink_f1,
    load_rqvae,
    psnr,
    rqvae_kwargs,
    save_rqvae,
    to_uint8,
)
from unimusic.models.weights import load_weights, read_meta, save_weights, weight_paths

# Smaller than tiny: a training step on 8 windows of 64x256 takes ~0.1 s.
SMALL = RQVAEConfig(
    channels=(16, 32, 32, 64),
    res_blocks=1,
    code_dim=32,
    codebook_size=256,
    commitment_warmup=10,
    dead_code_threshold=0.1,
)
PIECES = ("bach/bwv86.6.mxl", "ryansMammoth/TomDeeringsRamblesReel.abc")


@pytest.fixture(autouse=True)
def _seeded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores; results do not depend on it
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model() -> RQVAE:
    torch.manual_seed(0)
    return build_rqvae(PRESETS["tiny"]).eval()


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Real staff-system crops: a four-part chorale and a fiddle tune."""
    from unimusic.music21_corpus import CorpusPiece, load_musicxml
    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.systems import engrave_piece

    out = []
    for rel in PIECES:
        piece = engrave_piece(load_musicxml(CorpusPiece(rel)), options=EngraveOptions(), source=rel)
        out += [s.image for s in piece.systems]
    assert all(im.dtype == np.uint8 and im.shape[0] % 16 == 0 and im.shape[1] % 16 == 0 for im in out)
    return out


def windows(crops, rng, n, h=64, w=256, min_ink=0.03) -> torch.Tensor:
    """``n`` random h x w windows (white-padded) holding at least ``min_ink`` ink pixels."""
    out = []
    while len(out) < n:
        im = crops[rng.integers(len(crops))]
        y = rng.integers(0, max(1, im.shape[0] - h + 1))
        x = rng.integers(0, max(1, im.shape[1] - w + 1))
        win = np.full((h, w), 255, np.uint8)
        part = im[y : y + h, x : x + w]
        win[: part.shape[0], : part.shape[1]] = part
        if (win < 128).mean() >= min_ink:
            out.append(win)
    return torch.from_numpy(np.stack(out))


def train(model, batches, lr=2e-3, warmup=20):
    """Adam with a linear learning-rate warm-up (without it the first full-size Adam
    steps push the decoder onto the blank-page mean, where it stays for hundreds of steps)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    outs = []
    for step, batch in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        outs.append(out)
    return outs


# -- config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("channels", ()),
        ("channels", (16, 0, 32)),
        ("channels", (16, 32.5)),
        ("res_blocks", -1),
        ("code_dim", 0),
        ("codebooks", 0),
        ("codebook_size", 1),
        ("codebook_size", True),
        ("ema_decay", 1.0),
        ("ema_decay", 0),
        ("commitment", -0.1),
        ("commitment", float("nan")),
        ("commitment_warmup", -1),
        ("dead_code_threshold", -1.0),
        ("ink_weight", 0.0),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(InputError, match=f"RQVAEConfig.{field}"):
        RQVAEConfig(**{field: value})


def test_presets_and_builder():
    assert RQVAEConfig(channels=[8, 16]).channels == (8, 16)  # lists (YAML/JSON) become tuples
    for name, config in PRESETS.items():
        assert config.patch == 16 and config.codebooks == 4 and config.codebook_size == 1024, name
    kwargs = rqvae_kwargs(PRESETS["tiny"])
    assert set(kwargs) == {f.name for f in dataclasses.fields(RQVAEConfig)}
    assert all(isinstance(v, (int, float, tuple)) for v in kwargs.values())
    model = RQVAE(**kwargs)
    assert model.patch == 16
    base = build_rqvae(PRESETS["base"]).eval()
    assert 5e6 < sum(p.numel() for p in base.parameters()) < 5e7
    assert base.encode(torch.full((1, 32, 48), 255, dtype=torch.uint8)).shape == (1, 4, 2, 3)
    with pytest.raises(InputError):
        rqvae_kwargs({"channels": (8,)})


# -- shapes, inputs, determinism ----------------------------------------------------------


@pytest.mark.parametrize("size", [(16, 16), (80, 336), (144, 1008)])
@pytest.mark.parametrize("batch", [1, 3])
def test_encode_decode_shapes(tiny_model, size, batch):
    h, w = size
    images = torch.randint(0, 256, (batch, h, w), dtype=torch.uint8)
    codes = tiny_model.encode(images)
    assert codes.dtype == torch.long and codes.shape == (batch, 4, h // 16, w // 16)
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024
    recon = tiny_model.decode(codes)
    assert recon.dtype == torch.float32 and recon.shape == (batch, 1, h, w)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    assert to_uint8(recon).shape == (batch, h, w) and to_uint8(recon).dtype == np.uint8


def test_input_forms_agree(tiny_model):
    images = torch.randint(0, 256, (2, 32, 48), dtype=torch.uint8)
    codes = tiny_model.encode(images)
    assert torch.equal(tiny_model.encode(images[:, None]), codes)  # [B, 1, H, W]
    assert torch.equal(tiny_model.encode(images.numpy()), codes)  # numpy uint8
    assert torch.equal(tiny_model.encode(images.float() / 255.0), codes)  # float, white = 1


@pytest.mark.parametrize("size", [(15, 16), (16, 24), (100, 336), (16, 0)])
def test_sizes_off_the_patch_grid_are_refused(tiny_model, size):
    with pytest.raises(InputError, match=f"{size[0]}x{size[1]}"):
        tiny_model.encode(torch.full((1, *size), 255, dtype=torch.uint8))


def test_bad_inputs_are_refused(tiny_model):
    with pytest.raises(InputError, match="shape"):
        tiny_model.encode(torch.zeros(16, 16, dtype=torch.uint8))  # no batch axis
    with pytest.raises(InputError, match="shape"):
        tiny_model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))  # colour
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        tiny_model.encode(torch.full((1, 16, 16), 2.0))
    with pytest.raises(InputError, match="int32|uint8 or float"):
        tiny_model.encode(torch.zeros(1, 16, 16, dtype=torch.int32))
    codes = torch.zeros(1, 4, 1, 2, dtype=torch.long)
    with pytest.raises(InputError, match="values"):
        tiny_model.decode(codes + 1024)
    with pytest.raises(InputError, match="shape"):
        tiny_model.decode(codes[:, :3])
    with pytest.raises(InputError, match="integer"):
        tiny_model.decode(codes.float())


def test_eval_mode_is_deterministic_and_pure(tiny_model):
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (3, 48, 64), dtype=np.uint8))
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    codes = tiny_model.encode(images)
    assert torch.equal(tiny_model.encode(images), codes)
    # Per position and per image: no batch statistics, no global image statistics.
    assert torch.equal(tiny_model.encode(images[1:2]), codes[1:2])
    recon = tiny_model.decode(codes)
    assert torch.equal(tiny_model.decode(codes.clone()), recon)
    # (Convolution kernels may sum in another order for another batch size.)
    assert torch.allclose(tiny_model.decode(codes[2:3]), recon[2:3], atol=1e-5)
    out = tiny_model(images)  # eval-mode forward: no EMA update, no restart
    assert torch.equal(out.codes, codes)
    assert out.restarts.sum() == 0
    assert torch.allclose(out.recon, recon, atol=1e-5)
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_encode_never_updates_codebooks_even_in_training_mode():
    model = build_rqvae(SMALL).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- training ----------------------------------------------------------------------


def test_training_on_real_crops_lowers_loss_and_uses_codes(crops):
    rng = np.random.default_rng(0)
    model = build_rqvae(SMALL)
    untrained = copy.deepcopy(model).eval()
    outs = train(model, [windows(crops, rng, 8) for _ in range(60)])
    loss = [float(o.loss.detach()) for o in outs]
    first, last = np.mean(loss[:10]), np.mean(loss[-10:])
    assert last < 0.7 * first, (first, last)
    assert all(math.isfinite(v) for v in loss)
    final = outs[-1]
    assert final.perplexity.shape == (SMALL.codebooks,) and final.used_codes.shape == (SMALL.codebooks,)
    assert (final.used_codes > 1).all(), final.used_codes
    assert (final.perplexity > 1).all(), final.perplexity
    assert int(model.train_steps) == 60 and model.commitment_weight() == SMALL.commitment
    # Held-out windows in eval mode (running latent statistics): codes spread over
    # every level, and the reconstruction is closer than the untrained model's.
    model.eval()
    held = windows(crops, np.random.default_rng(7), 6)
    codes = model.encode(held)
    ppl = codebook_perplexity(codes, SMALL.codebook_size)
    assert len(ppl) == SMALL.codebooks and all(p > 1.5 for p in ppl), ppl
    with torch.no_grad():
        trained_loss, untrained_loss = float(model(held).recon_loss), float(untrained(held).recon_loss)
    assert trained_loss < 0.8 * untrained_loss, (trained_loss, untrained_loss)
    recon = to_uint8(model.decode(codes))
    assert 0.0 <= ink_f1(held.numpy(), recon) <= 1.0 and 0.0 < psnr(held.numpy(), recon) < math.inf


def test_commitment_warms_up():
    model = build_rqvae(SMALL)
    assert model.commitment_weight() == 0.0
    model.train_steps.fill_(5)
    assert model.commitment_weight() == pytest.approx(SMALL.commitment / 2)
    no_warmup = build_rqvae(dataclasses.replace(SMALL, commitment_warmup=0))
    assert no_warmup.commitment_weight() == SMALL.commitment


def test_dead_codes_are_restarted(crops):
    rng = np.random.default_rng(3)
    model = build_rqvae(SMALL)
    q = model.quantizer
    # Every entry of every level the same vector: all positions land on entry 0
    # (ties go to the lowest index) and the other entries are dead.
    q.embed.copy_(torch.ones_like(q.embed) / math.sqrt(SMALL.code_dim))
    q.cluster_size.zero_()
    q.cluster_size[:, 0] = 1.0  # only entry 0 has ever been used
    q.embed_sum.copy_(q.embed * q.cluster_size[..., None])
    q.initialized.fill_(True)  # no data-dependent init: only restarts can revive entries
    batch = windows(crops, rng, 8)
    model.eval()
    assert model(batch).used_codes.tolist() == [1] * SMALL.codebooks
    outs = train(model, [windows(crops, rng, 8) for _ in range(15)])
    assert outs[0].restarts.tolist() == [SMALL.codebook_size - 1] * SMALL.codebooks  # all dead ones, at once
    model.eval()
    used = model(batch).used_codes
    assert (used > 10).all(), used


def test_no_restarts_when_threshold_is_zero(crops):
    model = build_rqvae(dataclasses.replace(SMALL, dead_code_threshold=0.0))
    outs = train(model, [windows(crops, np.random.default_rng(4), 4) for _ in range(3)])
    assert all(int(o.restarts.sum()) == 0 for o in outs)


# -- files ------------------------------------------------------------------------


@pytest.fixture()
def saved(tmp_path):
    model = build_rqvae(SMALL)
    train(model, [torch.randint(0, 256, (2, 32, 64), dtype=torch.uint8)])  # EMA buffers off their init
    model.eval()
    path = tmp_path / "img" / "rqvae"
    st, js = save_rqvae(model, SMALL, path, metrics={"ink_f1": 0.5})
    assert st == weight_paths(path)[0] and st.is_file() and js.is_file()
    return model, path


def test_save_load_round_trip(saved):
    model, path = saved
    loaded, config = load_rqvae(path, expected_config=SMALL)
    assert config == SMALL and not loaded.training
    images = torch.randint(0, 256, (2, 48, 96), dtype=torch.uint8)
    assert torch.equal(loaded.encode(images), model.encode(images))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    meta = read_meta(path)
    assert meta["kind"] == KIND and meta["format_version"] == FORMAT_VERSION
    assert meta["config"]["channels"] == list(SMALL.channels) and meta["metrics"] == {"ink_f1": 0.5}
    assert len(meta["sha256"]) == 64 and len(meta["config_hash"]) == 16
    assert load_rqvae(str(path) + ".safetensors")[1] == SMALL  # a given suffix is fine


def test_loading_refuses_other_kind_version_config(saved):
    _, path = saved
    with pytest.raises(InputError, match="kind 'rqvae', expected 'audio_codec'"):
        load_weights(path, kind="audio_codec", format_version=FORMAT_VERSION)
    with pytest.raises(InputError, match="format_version"):
        load_weights(path, kind=KIND, format_version=FORMAT_VERSION + 1)
    other = dataclasses.replace(SMALL, code_dim=16)
    with pytest.raises(InputError, match="code_dim") as err:
        load_rqvae(path, expected_config=other)
    assert "rqvae.json" in str(err.value)
    # A record edited to claim another version is refused as that version.
    json_path = weight_paths(path)[1]
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(InputError, match="format_version 99"):
        load_rqvae(path)
    # A config edited by hand no longer matches its hash.
    meta["config"]["code_dim"] = 16
    json_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="config_hash"):
        load_rqvae(path)


def test_loading_refuses_tampered_or_missing_files(saved):
    _, path = saved
    st_path, json_path = weight_paths(path)
    data = bytearray(st_path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    st_path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256") as err:
        load_rqvae(path)
    assert "rqvae.safetensors" in str(err.value)
    st_path.unlink()
    with pytest.raises(InputError, match="missing"):
        load_rqvae(path)
    json_path.unlink()
    with pytest.raises(InputError, match="no such weights record"):
        load_rqvae(path)


def test_weights_helpers_are_generic(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class CodecConfig:
        rate: int = 24000
        bands: tuple[int, ...] = (1, 2)

    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    state["alias"] = state["a.weight"][0]  # shared storage is copied, not refused
    save_weights(state, {"kind": "audio_codec", "format_version": 3, "config": CodecConfig(), "step": 7, "f1": np.float32(0.5)}, tmp_path / "c")
    loaded, meta = load_weights(tmp_path / "c", kind="audio_codec", format_version=3, expected_config=CodecConfig())
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert meta["step"] == 7 and meta["f1"] == 0.5 and meta["config"] == {"rate": 24000, "bands": [1, 2]}
    with pytest.raises(InputError, match="rate"):
        load_weights(tmp_path / "c", kind="audio_codec", format_version=3, expected_config=CodecConfig(rate=16000))
    with pytest.raises(InputError, match="kind"):
        save_weights(state, {"format_version": 1, "config": {}}, tmp_path / "d")
    with pytest.raises(InputError, match="not a tensor"):
        save_weights({"x": [1, 2]}, {"kind": "k", "format_version": 1, "config": {}}, tmp_path / "d")
    with pytest.raises(InputError, match="sha256"):
        save_weights(state, {"kind": "k", "format_version": 1, "config": {}, "sha256": "x"}, tmp_path / "d")
    with pytest.raises(InputError, match="JSON"):
        save_weights(state, {"kind": "k", "format_version": 1, "config": {"f": object()}}, tmp_path / "d")


# -- metrics ----------------------------------------------------------------------


def test_ink_f1_and_psnr():
    rng = np.random.default_rng(0)
    page = np.full((2, 32, 64), 255, np.uint8)
    page[:, 8:10, :] = 0  # a staff line
    page[:, :, 20:22] = rng.integers(0, 100, (2, 32, 2), dtype=np.uint8)  # a stem
    assert ink_f1(page, page) == 1.0
    assert psnr(page, page) == math.inf
    white = np.full_like(page, 255)
    assert ink_f1(page, white) == 0.0
    assert ink_f1(white, page) == 0.0  # ink invented everywhere it is drawn
    assert ink_f1(white, white) == 1.0  # nothing to find, nothing invented
    half = page.copy()
    half[:, :, 32:] = 255  # the right half of the ink lost
    assert 0.5 < ink_f1(page, half) < 1.0
    assert 0 < psnr(page, white) < psnr(page, half) < math.inf
    assert psnr(page, 255 - page) == pytest.approx(10 * math.log10(255**2 / np.mean((2.0 * page - 255) ** 2)))
    with pytest.raises(InputError, match="shape"):
        ink_f1(page, page[:1])
    with pytest.raises(InputError, match="uint8"):
        psnr(page, page.astype(np.float32))


def test_to_uint8_and_perplexity():
    recon = torch.tensor([[[[0.0, 0.5, 1.0, 1.2]]]])
    assert to_uint8(recon).tolist() == [[[0, 128, 255, 255]]]
    codes = torch.stack([torch.arange(16).reshape(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)], 1)
    assert codebook_perplexity(codes, 16) == pytest.approx([16.0, 1.0])
    with pytest.raises(InputError):
        codebook_perplexity(codes, 8)


# -- torch.distributed ------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights everywhere
        model = build_rqvae(dataclasses.replace(SMALL, codebook_size=64, dead_code_threshold=0.5))
        torch.manual_seed(100 + rank)  # different data and different local draws per worker
        for _ in range(3):
            out = model(torch.randint(0, 256, (2, 32, 64), dtype=torch.uint8))
            out.loss.backward()
        q = model.quantizer
        torch.save({"embed": q.embed, "cluster_size": q.cluster_size, "restarts": out.restarts}, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_codebooks_stay_identical_across_distributed_workers(tmp_path):
    """Counts and sums all-reduced, init and restart vectors from rank 0: one codebook for all."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True, start_method="spawn"
    )
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(a["embed"], b["embed"]) and torch.equal(a["cluster_size"], b["cluster_size"])
    assert int(a["restarts"].sum()) > 0  # restarts were exercised (and drawn identically)
