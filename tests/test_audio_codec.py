"""Audio codec on descript-audio-codec: shapes, chunking, training, official and own weight files, metrics.

Everything runs on small randomly initialized DAC models (same rates as the
official 44 kHz model: hop 512) with fixed seeds; the training test uses real
audio: music21 corpus pieces rendered with FluidSynth.
"""

from __future__ import annotations

import copy
import dataclasses
import fractions
import functools
import io
import json
import math

import numpy as np
import pytest
import torch

from unimusic.errors import InputError
from unimusic.models import audio_codec as ac
from unimusic.models.audio_codec import (
    PRESETS,
    AudioCodec,
    AudioCodecConfig,
    CodecTrainer,
    build_codec,
    dac_kwargs,
    load_codec,
    load_official,
    mel_distance,
    save_codec,
    snr_db,
)

SR = 44100
HOP = 512
# the smallest useful DAC: hop 512, 4 codebooks of which the translator keeps 3
SMALL = AudioCodecConfig(encoder_dim=8, decoder_dim=64, n_codebooks=4, codebooks_used=3)
# cheapest discriminator of DAC's kinds: one STFT (MRD) band discriminator, no period ones
LIGHT_DISC = {"rates": [], "periods": [], "fft_sizes": [512]}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors on a shared machine: one thread is faster and does not disturb others."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_codec() -> AudioCodec:
    return AudioCodec(build_codec(SMALL, seed=0), SMALL)


def _corpus_midi(relpath: str) -> bytes:
    import music21

    from unimusic.music21_corpus import CorpusPiece

    score = music21.converter.parse(CorpusPiece(relpath).path)
    return music21.midi.translate.streamToMidiFile(score).writestr()


@functools.lru_cache(maxsize=None)
def corpus_audio(relpath: str, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a corpus piece, rendered (44.1 kHz mono float32)."""
    from unimusic.render.synthesize import FLUIDR3_GM, default_soundfonts, synthesize
    from unimusic.tokens.midi import notes_from_midi, notes_to_midi

    notes = [
        dataclasses.replace(n, end=min(n.end, seconds))
        for n in notes_from_midi(_corpus_midi(relpath))
        if n.start < seconds - 0.05
    ]
    fonts = default_soundfonts()
    audio = synthesize(notes_to_midi(notes), soundfont=FLUIDR3_GM if FLUIDR3_GM in fonts else fonts[0])
    assert audio.dtype == np.float32 and audio.size >= seconds * SR * 0.9
    return audio


def jig() -> np.ndarray:
    return corpus_audio("ryansMammoth/SheriffMuldoonsJig.abc", 6.0)


def chorale() -> np.ndarray:
    return corpus_audio("bach/bwv66.6.mxl", 4.0)


# -- config ----------------------------------------------------------------------


def test_config_presets_and_validation():
    official = PRESETS["official-44khz"]
    assert official == AudioCodecConfig() and official.hop == 512 and official.latent_dim == 1024
    assert official.frame_rate == pytest.approx(86.1328125)
    assert (official.n_codebooks, official.codebooks_used, official.codebook_size) == (9, 4, 1024)
    tiny = PRESETS["tiny"]
    assert tiny.hop == 512 and tiny.sample_rate == SR and tiny.n_codebooks == 4 == tiny.codebooks_used
    assert tiny.encoder_dim <= 32 and tiny.decoder_dim <= 256
    # lists (from JSON) become tuples; None latent_dim resolves to DAC's default
    cfg = AudioCodecConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(SMALL))))
    assert cfg == SMALL and isinstance(cfg.encoder_rates, tuple) and cfg.latent_dim == 8 * 16
    assert dac_kwargs(SMALL)["encoder_rates"] == [2, 4, 8, 8]

    bad = [
        ({"codebooks_used": 5}, "codebooks_used"),
        ({"decoder_rates": (8, 8, 4)}, "decoder_rates"),
        ({"decoder_dim": 100}, "decoder_dim"),
        ({"encoder_rates": (2, 3, 8, 8), "decoder_rates": (8, 8, 3, 2)}, "encoder_rates"),
        ({"encoder_dim": 0}, "encoder_dim"),
        ({"sample_rate": 44100.0}, "sample_rate"),
        ({"codebook_size": 1}, "codebook_size"),
        ({"quantizer_dropout": 1.5}, "quantizer_dropout"),
    ]
    for change, field in bad:
        with pytest.raises(InputError) as err:
            dataclasses.replace(SMALL, **change)
        assert err.value.source == f"AudioCodecConfig.{field}", (change, err.value)
    with pytest.raises(InputError, match="unknown config field"):
        AudioCodecConfig.from_dict({"hop": 512})
    with pytest.raises(InputError, match="does not match config"):
        AudioCodec(build_codec(SMALL, seed=0), dataclasses.replace(SMALL, n_codebooks=5))


def test_build_codec_seed_is_reproducible_and_local():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_codec(SMALL, seed=7).state_dict()
    after = torch.rand(1)
    b = build_codec(SMALL, seed=7).state_dict()
    assert torch.equal(before, after)  # the global RNG was not consumed
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- encode / decode -----------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 511, 512, 513, SR + 7])
def test_encode_decode_shapes(small_codec, n):
    rng = np.random.default_rng(n)
    audio = (0.3 * rng.standard_normal(n)).astype(np.float32)
    codes = small_codec.encode(audio, SR)
    T = math.ceil(n / HOP)
    assert codes.shape == (SMALL.codebooks_used, T) and codes.dtype == np.int16
    assert codes.min() >= 0 and codes.max() < SMALL.codebook_size
    out = small_codec.decode(codes)
    assert out.shape == (T * HOP,) and out.dtype == np.float32 and np.all(np.abs(out) <= 1)
    # all codebooks decode too (k = n_codebooks), same length
    assert small_codec.decode(np.zeros((SMALL.n_codebooks, T), np.int32)).shape == (T * HOP,)


def test_encode_edge_cases_and_errors(small_codec):
    K = SMALL.codebooks_used
    assert small_codec.encode(np.zeros(0, np.float32), SR).shape == (K, 0)
    assert small_codec.decode(np.zeros((K, 0), np.int16)).shape == (0,)
    # another sample rate is resampled first: 1 s at 48 kHz -> 1 s at 44.1 kHz
    one_second = (0.3 * np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000)).astype(np.float32)
    assert small_codec.encode(one_second, 48000).shape == (K, math.ceil(SR / HOP))
    assert small_codec.encode(one_second.astype(np.float64), 48000).dtype == np.int16
    for bad in (np.zeros((2, 100), np.float32), np.zeros(100, np.int16), np.array([0.0, np.nan])):
        with pytest.raises(InputError):
            small_codec.encode(bad, SR)
    with pytest.raises(InputError, match="sample_rate"):
        small_codec.encode(np.zeros(10, np.float32), 44100.5)
    for bad_codes in (np.full((K, 3), SMALL.codebook_size), np.full((K, 3), -1), np.zeros((5, 3), int), np.zeros(3, int)):
        with pytest.raises(InputError, match="codes"):
            small_codec.decode(bad_codes)
    with pytest.raises(InputError, match="integer codes"):
        small_codec.decode(np.zeros((K, 3), np.float32))


def test_chunked_encode_and_decode_match_whole(small_codec):
    audio = jig()[: 3 * SR]  # 259 frames
    whole = small_codec.encode(audio, SR, chunk_seconds=None)
    chunked = small_codec.encode(audio, SR, chunk_seconds=0.4)  # 34-frame chunks: 8 of them
    assert chunked.shape == whole.shape == (SMALL.codebooks_used, 259)
    agree = float(np.mean(chunked == whole))
    print(f"chunked vs whole encode: {agree:.4%} of codes equal")
    assert agree > 0.99

    dec_whole = small_codec.decode(whole, chunk_frames=None)
    dec_chunked = small_codec.decode(whole, chunk_frames=40)  # 7 chunks, 6 crossfades
    snr = snr_db(dec_whole, dec_chunked)
    print(f"chunked vs whole decode: SNR {snr:.1f} dB")
    assert dec_chunked.shape == dec_whole.shape and snr > 30
    # a last chunk shorter than the crossfade (81 = 2 * 40 + 1 frames) and chunks of one frame
    for T, chunk in ((81, 40), (83, 41), (12, 1)):
        part = whole[:, :T]
        assert snr_db(small_codec.decode(part, chunk_frames=None), small_codec.decode(part, chunk_frames=chunk)) > 30
    # control: without context the chunk edges differ (the context is what makes chunking exact)
    no_context = small_codec.decode(whole, chunk_frames=40, context_frames=0, crossfade_frames=0)
    assert snr_db(dec_whole, no_context) < snr - 20


# -- training -------------------------------------------------------------------------


def _windows(audio: np.ndarray, rng: np.random.Generator, batch: int) -> torch.Tensor:
    """``batch`` random windows of 0.5-1 s (one length per batch)."""
    n = int(rng.integers(SR // 2, SR))
    starts = rng.integers(0, audio.size - n, batch)
    return torch.from_numpy(np.stack([audio[s : s + n] for s in starts]))[:, None]


def test_trainer_lowers_mel_loss_on_corpus_audio():
    audio = jig()
    held_out = chorale()[:SR]  # another piece, never trained on
    model = build_codec(SMALL, seed=0)
    codec = AudioCodec(model, SMALL)

    def held_out_mel() -> float:
        return mel_distance(held_out, codec.decode(codec.encode(held_out, SR))[: held_out.size], SR)

    before = held_out_mel()
    rng = np.random.default_rng(0)
    # 6 warm-up steps (mel + VQ losses, ~0.3 s each), then 6 full GAN steps (~1 s each)
    trainer = CodecTrainer(model, lr=1e-3, discriminator_kwargs=LIGHT_DISC, adversarial_start=6)
    logs = [trainer.step(_windows(audio, rng, 1)) for _ in range(12)]
    after = held_out_mel()
    mel = [r["mel/loss"] for r in logs]
    print("mel loss per step:", " ".join(f"{m:.2f}" for m in mel), f"| held-out mel distance {before:.2f} -> {after:.2f}")
    expected = {"loss", "mel/loss", "waveform/loss", "adv/gen_loss", "adv/feat_loss", "adv/disc_loss",
                "vq/commitment_loss", "vq/codebook_loss", "other/grad_norm", "other/grad_norm_d",
                "other/learning_rate", "step"}  # fmt: skip
    assert set(logs[-1]) == expected and all(math.isfinite(v) for r in logs for v in r.values())
    assert trainer.step_count == 12 and logs[-1]["step"] == 12
    assert "adv/disc_loss" not in logs[5]
    # the per-step loss is noisy (each step sees other windows; seeds 0-2 give
    # last/first ratios 0.74, 0.73, 0.88); the held-out distance is steadier (0.56-0.62)
    first, last = np.mean(mel[:3]), np.mean(mel[-3:])
    assert last < 0.9 * first, mel
    assert after < 0.8 * before, (before, after)
    assert model.training  # encode/decode ran in eval mode and restored the trainer's train mode


def test_trainer_resumes_exactly_and_checks_batches():
    audio = jig()
    rng = np.random.default_rng(1)
    b1, b2 = _windows(audio, rng, 1), _windows(audio, rng, 1)
    a = CodecTrainer(build_codec(SMALL, seed=0), lr=1e-3, discriminator_kwargs=LIGHT_DISC, adversarial_start=1)
    first = a.step(b1)
    assert "adv/disc_loss" not in first  # warm-up step: mel + VQ only
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # tensors and plain data only: loads with weights_only=True
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    ra = a.step(b2)

    b = CodecTrainer(build_codec(SMALL, seed=99), lr=1e-3, discriminator_kwargs=LIGHT_DISC, adversarial_start=1)
    b.load_state_dict(state)
    assert b.step_count == 1
    rb = b.step(b2)
    assert "adv/disc_loss" in rb
    assert ra.keys() == rb.keys() and all(ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7) for k in ra), (ra, rb)
    ga, gb = a.generator.state_dict(), b.generator.state_dict()
    assert all(torch.allclose(ga[k], gb[k], atol=1e-6) for k in ga)

    for bad in (torch.zeros(1, 2, 8000), torch.zeros(1, 1, 1000), torch.zeros(8000), torch.full((1, 1, 8000), float("nan"))):
        with pytest.raises(InputError, match="batch"):
            a.step(bad)
    with pytest.raises(InputError, match="loss_weights"):
        CodecTrainer(build_codec(SMALL, seed=0), loss_weights={"mel": 1.0})


# -- official weights files ------------------------------------------------------------


def test_official_format_loads_through_load_official(tmp_path):
    cfg = dataclasses.replace(SMALL, n_codebooks=5, codebooks_used=5)
    model = build_codec(cfg, seed=3)
    path = tmp_path / "weights.pth"
    model.save(str(path), package=False)  # dac's own saver: {"state_dict", "metadata": {"kwargs"}}
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "metadata"} and raw["metadata"]["kwargs"]["n_codebooks"] == 5

    loaded = load_official(path=path, codebooks_used=3)
    assert loaded.config == dataclasses.replace(cfg, codebooks_used=3)
    original = AudioCodec(model, loaded.config)
    sa, sb = model.state_dict(), loaded.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    audio = chorale()[:SR]
    codes = loaded.encode(audio, SR)
    assert codes.shape == (3, 87)
    assert np.array_equal(codes, original.encode(audio, SR))
    assert np.array_equal(loaded.decode(codes), original.decode(codes))
    # K is capped at the checkpoint's codebooks
    assert load_official(path=path, codebooks_used=9).codebooks_used == 5


def test_load_official_errors(tmp_path, monkeypatch):
    import dac

    calls = []

    def offline(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("Failed to resolve 'github.com'")

    monkeypatch.setattr(dac.utils, "download", offline)
    with pytest.raises(InputError) as err:
        load_official()
    assert calls == [{"model_type": "44khz", "model_bitrate": "8kbps"}]
    message = str(err.value)
    assert "unavailable offline" in message and "path=" in message and "ConnectionError" in message
    with pytest.raises(InputError, match="model_type"):
        load_official("48khz")
    with pytest.raises(InputError, match="no such"):
        load_official(path=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="weights_only"):
        load_official(path=garbage)
    # a pickle that would build an arbitrary object is refused, not executed
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "metadata": {"kwargs": {}}, "x": fractions.Fraction(1, 3)}, evil)
    with pytest.raises(InputError, match="weights_only"):
        load_official(path=evil)
    # right container, wrong architecture
    wrong = tmp_path / "wrong.pth"
    sd = build_codec(SMALL, seed=0).state_dict()
    torch.save({"state_dict": sd, "metadata": {"kwargs": {**dac_kwargs(SMALL), "decoder_dim": 128}}}, wrong)
    with pytest.raises(InputError, match="do not fit"):
        load_official(path=wrong)


# -- own weights files -------------------------------------------------------------------


def test_save_load_codec_round_trip_and_refusals(small_codec, tmp_path):
    from unimusic.models.weights import save_weights

    paths = save_codec(small_codec, tmp_path / "codec", meta={"steps": 0})
    record = json.loads(paths[1].read_text())
    assert record["kind"] == "audio_codec" and record["format_version"] == ac.FORMAT_VERSION
    assert record["config"]["encoder_rates"] == [2, 4, 8, 8] and record["steps"] == 0
    loaded = load_codec(tmp_path / "codec", expected_config=SMALL)
    assert loaded.config == SMALL
    audio = jig()[:SR]
    codes = small_codec.encode(audio, SR)
    assert np.array_equal(loaded.encode(audio, SR), codes)
    assert np.array_equal(loaded.decode(codes), small_codec.decode(codes))

    with pytest.raises(InputError, match="config mismatch"):
        load_codec(tmp_path / "codec", expected_config=dataclasses.replace(SMALL, codebooks_used=2))
    with pytest.raises(InputError, match="config mismatch"):
        load_codec(tmp_path / "codec", expected_config=PRESETS["tiny"])
    save_weights(small_codec.model.state_dict(), {"kind": "audio_codec", "format_version": 99, "config": SMALL}, tmp_path / "v99")
    with pytest.raises(InputError, match="format_version"):
        load_codec(tmp_path / "v99")
    save_weights(small_codec.model.state_dict(), {"kind": "rqvae", "format_version": 1, "config": SMALL}, tmp_path / "other")
    with pytest.raises(InputError, match="kind"):
        load_codec(tmp_path / "other")


# -- metrics -----------------------------------------------------------------------------


def test_mel_distance_and_snr():
    rng = np.random.default_rng(5)
    clean = chorale()[:SR]
    assert mel_distance(clean, clean, SR) == 0.0
    assert snr_db(clean, clean) == math.inf
    noise = rng.standard_normal(clean.size).astype(np.float32)
    levels = [0.003, 0.03, 0.3]
    mels = [mel_distance(clean, clean + a * noise, SR) for a in levels]
    snrs = [snr_db(clean, clean + a * noise) for a in levels]
    print("mel distance vs noise level:", mels, "SNR:", snrs)
    assert 0 < mels[0] < mels[1] < mels[2]
    assert snrs[0] > snrs[1] > snrs[2]
    # SNR is exact: a unit-power signal with noise of power 0.01 -> 20 dB
    tone = np.sqrt(2) * np.sin(np.arange(SR) * 2 * np.pi * 440 / SR)
    assert snr_db(tone, tone + 0.1 * rng.standard_normal(SR)) == pytest.approx(20.0, abs=0.2)
    assert mel_distance(clean[:100], clean[:100] * 0.5, SR) > 0  # short inputs are padded, not refused
    with pytest.raises(InputError, match="length"):
        snr_db(clean, clean[:-1])
    with pytest.raises(InputError, match="length"):
        mel_distance(clean, clean[:-1], SR)
