"""Tokenizer training jobs on Ray Train: they learn, they survive a killed worker with the
same losses as an uninterrupted run, they resume by name, they export loadable weights."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_corpus_pipeline import copy_pieces
from unimusic.errors import InputError

# Two train works and one test work (split by work id at test_fraction 0.3).
PIECES = ["bach/bwv66.6.mxl", "bach/bwv145.5.mxl", "bach/bwv86.6.mxl"]


@pytest.fixture(scope="module")
def train_corpus(tmp_path_factory, ray_session):
    from pipelines.build_corpus import build_corpus
    from unimusic.corpus import CorpusConfig

    inputs = copy_pieces(PIECES, tmp_path_factory.mktemp("scores"))
    out = str(tmp_path_factory.mktemp("train-corpus"))
    manifest = build_corpus(
        inputs=str(inputs), out_dir=out,
        config=CorpusConfig(pieces_per_shard=1, val_fraction=0.0, test_fraction=0.3, piano_reductions=False),
    )
    assert manifest["rows_per_split"]["train"] > 0 and manifest["rows_per_split"]["test"] > 0, manifest["rows_per_split"]
    return out


def _state(summary: dict) -> dict:
    return torch.load(Path(summary["checkpoint"]) / "state.pt", map_location="cpu", weights_only=True)


def _train_worker_pids() -> list[int]:
    """PIDs of this test session's Ray Train workers (not those of other Ray clusters on the machine)."""
    from ray._private import state

    return [a["Pid"] for a in state.actors().values() if a.get("ActorClassName") == "RayTrainWorker" and a.get("State") == "ALIVE"
            and int(a.get("Pid") or 0) > 0]  # pid 0 (not recorded yet) would be os.kill(0): our own group


def _kill_after_first_checkpoint(run_dir: Path, killed: list[int]) -> threading.Thread:
    def killer():
        deadline = time.time() + 300
        while time.time() < deadline:
            if list(run_dir.glob("checkpoint_*/state.pt")):
                pids = _train_worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_rqvae_job_learns_and_survives_a_killed_worker(train_corpus, tmp_path):
    from pipelines.train_common import RunConfig
    from pipelines.train_rqvae import JOB_PRESETS, train_rqvae

    job = dataclasses.replace(JOB_PRESETS["smoke"], steps=48, checkpoint_every=6)
    runs = tmp_path / "runs"
    whole = train_rqvae(corpus_dir=train_corpus, run=RunConfig(name="whole", storage_path=str(runs), cpus_per_worker=0.5), job=job)
    losses = np.array(_state(whole)["losses"])
    assert len(losses) == 48 and np.isfinite(losses).all()
    assert losses[-8:].mean() < 0.7 * losses[:4].mean(), losses  # it learns

    killed: list[int] = []
    thread = _kill_after_first_checkpoint(runs / "killed", killed)
    again = train_rqvae(corpus_dir=train_corpus, run=RunConfig(name="killed", storage_path=str(runs), cpus_per_worker=0.5), job=job)
    thread.join(timeout=5)
    assert killed, "no training worker was killed: the test proved nothing"
    state = _state(again)
    assert state["step"] == 48
    # Resumed from its last checkpoint, it repeats exactly the losses of the uninterrupted run.
    np.testing.assert_allclose(state["losses"], losses, rtol=1e-5)

    # A rerun of a finished run resumes at its end; the same name with another recipe is refused.
    with pytest.raises(InputError, match=r"differs in steps\)"):
        train_rqvae(corpus_dir=train_corpus, run=RunConfig(name="whole", storage_path=str(runs), cpus_per_worker=0.5),
                    job=dataclasses.replace(job, steps=41))


def test_rqvae_export_loads_and_reports_held_out_numbers(train_corpus, tmp_path):
    from pipelines.train_common import RunConfig
    from pipelines.train_rqvae import JOB_PRESETS, train_rqvae
    from unimusic.models.rqvae import load_rqvae
    from unimusic.models.tokenizer_report import held_out_crops, image_report

    job = dataclasses.replace(JOB_PRESETS["smoke"], steps=12)
    summary = train_rqvae(
        corpus_dir=train_corpus, run=RunConfig(name="export", storage_path=str(tmp_path / "runs"), cpus_per_worker=0.5),
        job=job, export=str(tmp_path / "rq"), picture=str(tmp_path / "rq.png"),
    )
    exported = summary["export"]
    model, config = load_rqvae(tmp_path / "rq")
    assert config == job.model
    crops = held_out_crops(train_corpus)
    again = image_report(model, crops)
    assert again["ink_f1"] == pytest.approx(exported["ink_f1"]) and again["psnr"] == pytest.approx(exported["psnr"])
    assert (tmp_path / "rq.png").stat().st_size > 1000


def test_codec_job_learns_and_exports(train_corpus, tmp_path):
    from pipelines.train_codec import JOB_PRESETS, train_codec
    from pipelines.train_common import RunConfig
    from unimusic.models.audio_codec import AudioCodec, build_codec, load_codec
    from unimusic.models.tokenizer_report import audio_report, held_out_clips

    job = dataclasses.replace(JOB_PRESETS["smoke"], steps=10, adversarial_start=8, checkpoint_every=5)
    summary = train_codec(
        corpus_dir=train_corpus, run=RunConfig(name="codec", storage_path=str(tmp_path / "runs"), cpus_per_worker=0.5),
        job=job, export=str(tmp_path / "codec"), report_dir=str(tmp_path / "report"),
    )
    state = _state(summary)
    assert state["trainer"]["step"] == 10 and len(state["losses"]) == 10
    codec = load_codec(tmp_path / "codec")
    clips = held_out_clips(train_corpus, limit=2)
    untrained = audio_report(AudioCodec(build_codec(job.model, seed=job.seed), job.model), clips)
    trained = audio_report(codec, clips)
    assert trained["mel_distance"] < untrained["mel_distance"] - 0.3, (trained, untrained)  # it learns
    for name in ("spectrogram.png", "original.wav", "reconstruction.wav"):
        assert (tmp_path / "report" / name).stat().st_size > 1000


def test_cli_train_tokenizer(train_corpus, tmp_path, capsys):
    from unimusic.cli import main

    code = main(["train-tokenizer", "image", "--corpus", train_corpus, "--preset", "smoke", "--storage", str(tmp_path / "runs"),
                 "--cpus-per-worker", "0.5", "--export", str(tmp_path / "w" / "rq"), "steps=6", "checkpoint_every=3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "weights: " in out and (tmp_path / "w" / "rq.safetensors").is_file() and "ink_f1" in out

    code = main(["train-tokenizer", "image", "--corpus", str(tmp_path / "nowhere"), "--preset", "smoke",
                 "--storage", str(tmp_path / "runs2")])
    err = capsys.readouterr().err
    assert code != 0 and "nowhere" in err and "manifest" in err and "Traceback" not in err
    code = main(["train-tokenizer", "audio", "--corpus", train_corpus, "--preset", "nope"])
    assert code != 0 and "nope" in capsys.readouterr().err
