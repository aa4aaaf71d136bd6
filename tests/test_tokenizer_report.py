"""Tokenizer quality reports (unimusic.models.tokenizer_report) and the basic-pitch judge (unimusic.judge).

Real music: a music21 corpus jig rendered with FluidSynth (audio), a reel engraved
with Verovio (crops). The models are untrained (tiny presets, fixed seeds): their
reconstructions must score badly. Two stand-ins that reconstruct perfectly check
the metric plumbing (ratio 1, F1 1); they live only here.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from tests.test_synthesize import FLUIDR3, corpus_midi, first_seconds
from unimusic import judge
from unimusic.errors import InputError
from unimusic.models.tokenizer_report import (
    GRID_BAND,
    GRID_GAP,
    GRID_LABEL_HEIGHT,
    audio_report,
    held_out_clips,
    held_out_crops,
    image_report,
)
from unimusic.tokens.midi import Note, notes_from_midi

SR = 44100
JIG = "ryansMammoth/SheriffMuldoonsJig.abc"
CHORALE = "bach/bwv66.6.mxl"
REEL = "ryansMammoth/TomDeeringsRamblesReel.abc"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores; results do not depend on it
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def jig() -> tuple[np.ndarray, list[Note]]:
    """The first 6 s of a jig: audio (44.1 kHz) and the notes it plays."""
    from unimusic.render.synthesize import synthesize

    pm = first_seconds(corpus_midi(JIG), 6.0)
    return synthesize(pm, soundfont=FLUIDR3), notes_from_midi(pm)


@pytest.fixture(scope="module")
def jig_transcription(jig) -> list[Note]:
    return judge.transcribe(jig[0], SR)


def shifted(notes: list[Note], dt: float) -> list[Note]:
    return [dataclasses.replace(n, start=n.start + dt, end=n.end + dt) for n in notes]


# -- the judge ----------------------------------------------------------------------


def test_judge_hears_the_notes_and_only_those(jig, jig_transcription):
    _, notes = jig
    est = jig_transcription
    assert est and all(isinstance(n, Note) and n.program == 0 and n.end >= n.start for n in est)
    assert est == sorted(est, key=lambda n: (n.start, n.pitch, n.end))
    assert judge.onset_f1(notes, est) > 0.5
    # controls: a different piece, the same notes a second late
    chorale = notes_from_midi(first_seconds(corpus_midi(CHORALE), 6.0))
    assert judge.onset_f1(chorale, est) < 0.2
    assert judge.onset_f1(shifted(notes, 1.0), est) < 0.2
    # programs are ignored, reference drums left out
    other_program = [dataclasses.replace(n, program=40) for n in notes]
    drum = Note(start=0.0, end=0.1, pitch=38, is_drum=True)
    assert judge.onset_f1(other_program + [drum], est) == judge.onset_f1(notes, est)
    scores = judge.onset_scores(notes, est)
    assert scores["n_ref"] == len(notes) and scores["n_est"] == len(est)
    assert judge.pooled_f1([scores]) == pytest.approx(scores["f1"])


def test_judge_silence_and_bad_input():
    assert judge.transcribe(np.zeros(SR, np.float32), SR) == []
    assert judge.transcribe(np.zeros(0, np.float32), SR) == []
    bad = np.zeros(1000, np.float32)
    bad[10] = np.nan
    with pytest.raises(InputError, match="NaN"):
        judge.transcribe(bad, SR)
    with pytest.raises(InputError):
        judge.transcribe(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(InputError):
        judge.transcribe(np.zeros(100, np.int16), SR)
    with pytest.raises(InputError, match="sample_rate"):
        judge.transcribe(np.zeros(100, np.float32), 0)
    with pytest.raises(InputError, match="onset_tolerance"):
        judge.onset_f1([], [], onset_tolerance=0)
    assert judge.onset_f1([], []) == 1.0


# -- image report -------------------------------------------------------------------


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Real staff-system crops of a reel (as tests/test_rqvae.py makes them), two sizes."""
    from unimusic.music21_corpus import CorpusPiece, load_musicxml
    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.systems import engrave_piece

    piece = engrave_piece(load_musicxml(CorpusPiece(REEL)), options=EngraveOptions(), source=REEL)
    out = [s.image for s in piece.systems[:4]]
    # plus a smaller one, so the grid pads panels
    out.append(np.ascontiguousarray(out[0][:, : out[0].shape[1] // 32 * 16]))
    return out


class PixelCopyStandIn:
    """Test-only stand-in for an RQ-VAE: patch 1, one code per pixel (its value); decoding
    shifts the picture ``shift`` pixels right (0: a perfect reconstruction)."""

    patch = 1
    codebook_size = 256
    training = False

    def __init__(self, shift: int = 0):
        self.shift = shift

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def encode(self, images):
        return torch.from_numpy(np.asarray(images)).long()[:, None]

    def decode(self, codes):
        return torch.roll(codes.float() / 255.0, self.shift, dims=-1)


def expected_grid_size(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(len(shapes)))
    rows = math.ceil(len(shapes) / cols)
    row_h = [max(h for h, _ in shapes[r * cols : (r + 1) * cols]) for r in range(rows)]
    col_w = [max(w for _, w in shapes[c::cols]) for c in range(cols)]
    height = sum(GRID_LABEL_HEIGHT + 3 * h + 2 * GRID_BAND for h in row_h) + (rows + 1) * GRID_GAP
    return height, sum(col_w) + (cols + 1) * GRID_GAP


def test_image_report_on_an_untrained_model(crops, tmp_path):
    import cv2

    from unimusic.models.rqvae import PRESETS, build_rqvae, codebook_perplexity, ink_f1, to_uint8

    torch.manual_seed(0)
    model = build_rqvae(PRESETS["tiny"]).eval()
    png = str(tmp_path / "grid.png")
    report = image_report(model, crops, out_png=png, max_grid=3)
    assert report["crops"] == len(crops) and report["pixels"] == sum(c.size for c in crops)
    assert report["ink_f1"] < 0.5 and report["crop_f1_min"] <= report["crop_f1_median"] < 0.5
    recons = [to_uint8(model.decode(model.encode(c[None].copy())))[0] for c in crops]
    assert report["crop_f1"] == pytest.approx([ink_f1(c, r) for c, r in zip(crops, recons)])
    codes = np.concatenate([model.encode(c[None].copy())[0].reshape(model.codebooks, -1).numpy() for c in crops], axis=1)
    assert report["codebook_perplexity"] == pytest.approx(codebook_perplexity(codes, model.codebook_size))
    # the picture: 3 of the crops shown, original / reconstruction / difference each
    image = cv2.imread(png)
    assert report["png"] == png
    assert image.shape[:2] == expected_grid_size([c.shape for c in crops[:3]])
    # the difference maps are the only coloured pixels: red = missed ink, blue = invented ink
    red = (image == (0, 0, 255)).all(-1).sum()
    blue = (image == (255, 0, 0)).all(-1).sum()
    assert red + blue > 0  # an untrained model misses or invents ink


def test_image_report_pools_over_all_pixels(crops):
    from unimusic.models.rqvae import ink_f1

    report = image_report(PixelCopyStandIn(shift=1), crops)
    recons = [np.roll(c, 1, axis=1) for c in crops]
    a = np.concatenate([c.ravel() for c in crops]) < 128
    b = np.concatenate([r.ravel() for r in recons]) < 128
    tp, fp, fn = (a & b).sum(), (~a & b).sum(), (a & ~b).sum()
    assert report["ink_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert report["crop_f1"] == pytest.approx([ink_f1(c, r) for c, r in zip(crops, recons)])
    assert report["ink_f1"] != pytest.approx(float(np.mean(report["crop_f1"])), abs=1e-4)  # pooled, not averaged
    assert report["crop_f1_min"] == pytest.approx(min(report["crop_f1"]))
    assert report["crop_f1_median"] == pytest.approx(float(np.median(report["crop_f1"])))
    diff = np.concatenate([c.ravel() for c in crops]).astype(float) - np.concatenate([r.ravel() for r in recons])
    assert report["psnr"] == pytest.approx(10 * math.log10(255**2 / np.mean(diff**2)))
    assert report["png"] is None


def test_image_report_plumbing_with_a_perfect_stand_in(crops, tmp_path):
    import cv2

    png = str(tmp_path / "perfect.png")
    report = image_report(PixelCopyStandIn(), crops, out_png=png)
    assert report["ink_f1"] == 1.0 and report["psnr"] == math.inf and report["crop_f1_min"] == 1.0
    image = cv2.imread(png)
    assert image.shape[:2] == expected_grid_size([c.shape for c in crops])
    assert not (image == (0, 0, 255)).all(-1).any() and not (image == (255, 0, 0)).all(-1).any()
    with pytest.raises(InputError, match="crop 1"):
        image_report(PixelCopyStandIn(), [crops[0], crops[0].astype(np.float32)])
    with pytest.raises(InputError, match="multiples of 16"):
        from unimusic.models.rqvae import PRESETS, build_rqvae

        image_report(build_rqvae(PRESETS["tiny"]), [np.full((24, 32), 255, np.uint8)])
    with pytest.raises(InputError, match="crops"):
        image_report(PixelCopyStandIn(), [])
    with pytest.raises(InputError, match="max_grid"):
        image_report(PixelCopyStandIn(), crops, max_grid=0)


# -- audio report -------------------------------------------------------------------


class PerfectCodecStandIn:
    """Test-only stand-in for an AudioCodec whose codes are the samples (44.1 kHz input only)."""

    sample_rate = SR

    def encode(self, audio, sample_rate):
        assert sample_rate == SR
        return np.asarray(audio, np.float32).copy()

    def decode(self, codes):
        return codes


def cut(audio: np.ndarray, notes: list[Note], t0: float, t1: float):
    part = audio[round(t0 * SR) : round(t1 * SR)]
    kept = [Note(start=n.start - t0, end=min(n.end, t1) - t0, pitch=n.pitch) for n in notes if t0 <= n.start < t1]
    return part, SR, kept


def test_audio_report_on_an_untrained_codec(jig, tmp_path):
    import cv2
    import soundfile as sf

    from unimusic.models.audio_codec import PRESETS, AudioCodec, build_codec

    audio, _, notes = cut(*jig, 0.0, 3.0)
    codec = AudioCodec(build_codec(PRESETS["tiny"], seed=0), PRESETS["tiny"])
    out = str(tmp_path / "audio")
    report = audio_report(codec, [(audio, SR, notes)], out_dir=out)
    assert report["clips"] == 1 and report["seconds"] == pytest.approx(3.0)
    assert report["original_f1"] > 0.5
    assert report["f1_ratio"] < 0.5  # an untrained codec destroys the music
    assert report["snr_db"] < 3 and report["mel_distance"] > 1
    for name in ("original", "reconstruction"):
        data, sr = sf.read(f"{out}/{name}.wav", dtype="float32")
        assert sr == SR and data.shape == audio.shape
    original, _ = sf.read(f"{out}/original.wav", dtype="float32")
    np.testing.assert_array_equal(original, audio)
    spectrogram = cv2.imread(f"{out}/spectrogram.png")
    assert spectrogram is not None and spectrogram.size > 0 and spectrogram.std() > 0
    saved = json.loads(open(f"{out}/audio_report.json").read())
    assert saved["f1_ratio"] == pytest.approx(report["f1_ratio"]) and saved["clips"] == 1


def test_audio_report_plumbing_with_a_perfect_stand_in(jig, jig_transcription):
    audio, notes = jig
    clips = [cut(audio, notes, 0.0, 3.0), cut(audio, notes, 3.0, 6.0)]
    report = audio_report(PerfectCodecStandIn(), clips)
    assert report["f1_ratio"] == 1.0 and report["snr_db"] == math.inf and report["mel_distance"] == 0.0
    assert report["files"] is None and report["seconds"] == pytest.approx(6.0, abs=1 / SR)
    # pooled over clips: matches and note counts summed, then one F1
    per = [c["original"] for c in report["per_clip"]]
    assert sum(p["n_ref"] for p in per) == sum(len(c[2]) for c in clips)
    pooled = 2 * sum(p["n_match"] for p in per) / sum(p["n_ref"] + p["n_est"] for p in per)
    assert report["original_f1"] == pytest.approx(pooled) and pooled > 0.5
    with pytest.raises(InputError, match="clip 0"):
        audio_report(PerfectCodecStandIn(), [(audio.astype(np.int16), SR, notes)])
    with pytest.raises(InputError, match="clips"):
        audio_report(PerfectCodecStandIn(), [])


# -- corpus inputs ------------------------------------------------------------------


def write_shard(path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from unimusic.corpus import row_schema

    pq.write_table(pa.Table.from_pylist(rows, schema=row_schema()), str(path))


def test_held_out_crops_and_clips_read_the_corpus_shards(tmp_path):
    import cv2

    from unimusic.render.synthesize import encode_flac

    def row(split, value, occurrence=0, seconds=1.0, notes=()):
        image = np.full((16, 32), value, np.uint8)
        tone = (0.1 * np.sin(np.arange(int(seconds * SR)) * 2 * np.pi * (200 + value) / SR)).astype(np.float32)
        return {
            "split": split,
            "occurrence": occurrence,
            "image_png": cv2.imencode(".png", image)[1].tobytes(),
            "audio_flac": encode_flac(tone, SR),
            "sample_rate": SR,
            "notes": [
                {"start": s, "end": e, "pitch": p, "velocity": 90, "program": 0, "is_drum": d} for s, e, p, d in notes
            ],
        }

    shards = tmp_path / "corpus" / "shards"
    shards.mkdir(parents=True)
    notes = [(0.0, 0.5, 60, False), (0.2, 0.3, 38, True), (0.6, 1.5, 64, False), (1.2, 1.4, 67, False)]
    write_shard(shards / "shard-b.parquet", [row("test", 30), row("train", 40), row("val", 50, notes=notes, seconds=2.0)])
    write_shard(shards / "shard-a.parquet", [row("val", 10), row("test", 20, occurrence=1), row("train", 0)])
    corpus = str(tmp_path / "corpus")

    values = lambda images: [int(im[0, 0]) for im in images]  # noqa: E731
    assert values(held_out_crops(corpus)) == [10, 30, 50]  # sorted shards, row order, repeats skipped
    assert values(held_out_crops(corpus, distinct=False)) == [10, 20, 30, 50]
    assert values(held_out_crops(corpus, splits=("train",))) == [0, 40]
    assert values(held_out_crops(corpus, limit=2)) == [10, 30]
    assert held_out_crops(corpus)[0].shape == (16, 32)

    clips = held_out_clips(corpus, splits=("val",))
    assert [c[0].size for c in clips] == [SR, 2 * SR] and all(c[1] == SR for c in clips)
    assert clips[1][2] == [Note(0.0, 0.5, 60, 90), Note(0.6, 1.5, 64, 90), Note(1.2, 1.4, 67, 90)]  # drum dropped
    short = held_out_clips(corpus, splits=("val",), max_seconds=1.0)
    assert short[1][0].size == SR and short[1][2] == [Note(0.0, 0.5, 60, 90), Note(0.6, 1.0, 64, 90)]
    assert len(held_out_clips(corpus, limit=1)) == 1
    with pytest.raises(InputError, match="split"):
        held_out_crops(corpus, splits=("dev",))
    with pytest.raises(InputError):
        held_out_crops(str(tmp_path / "missing"))
