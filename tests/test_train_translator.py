"""The translator training job on Ray Train: DeepSpeed ZeRO-2 and DDP on 2 CPU workers learn,
their first losses are pinned, a run stopped at step k and resumed repeats the remaining
losses, a killed worker restarts from the latest checkpoint, and the export loads without
DeepSpeed or Ray with the training checkpoint's logits."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from unimusic.errors import InputError

# Two train works and one test work (split by work id at test_fraction 0.3).
PIECES = ["bach/bwv66.6.mxl", "bach/bwv145.5.mxl", "bach/bwv86.6.mxl"]
# The first losses of the smoke job (seed 0, 2 workers) on that corpus. Both engines do the same
# arithmetic (fp32 AdamW, the same clipping, averaged gradients), so one pin serves both.
FIRST_LOSSES = [7.278386872390221, 6.245689618963945, 7.086729830457964, 6.901537769345989]
PINNED = {"deepspeed": FIRST_LOSSES, "ddp": FIRST_LOSSES}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, ray_session):
    """A real corpus of three chorales, tokenized with the shipped tokenizers. The scores are read
    from the bundled music21 corpus in place: piece ids (which seed engraving and performance
    augmentation) are then the same in every session, so the data and the pinned losses are too."""
    from pipelines.tokenize import tokenize_corpus
    from unimusic.corpus import CorpusConfig, build_shard, plan_shards, write_manifest
    from unimusic.models.shipped import shipped_path
    from unimusic.music21_corpus import corpus_root

    config = CorpusConfig(pieces_per_shard=1, val_fraction=0.0, test_fraction=0.3, piano_reductions=False)
    corpus = str(tmp_path_factory.mktemp("corpus"))
    sources = [str(corpus_root() / p) for p in PIECES]
    results = [build_shard(spec, corpus, config) for spec in plan_shards(sources, config)]
    manifest = write_manifest(corpus, results, config, inputs="test")
    assert manifest["rows_per_split"]["train"] > 0 and manifest["rows_per_split"]["test"] > 0, manifest["rows_per_split"]
    out = str(tmp_path_factory.mktemp("tokens"))
    tokenize_corpus(corpus_dir=corpus, out_dir=out, image_weights=shipped_path("image"), audio_weights=shipped_path("audio"),
                    concurrency=2)
    return {"corpus": corpus, "tokens": out}


def _run(tokens: dict, runs: Path, name: str, job, **kwargs):
    from pipelines.train import train
    from pipelines.train_common import RunConfig

    workers = kwargs.pop("workers", 2)
    return train(tokens_dir=tokens["tokens"], job=job, run=RunConfig(name=name, storage_path=str(runs), workers=workers,
                                                                      cpus_per_worker=0.5), **kwargs)


def _info(summary: dict) -> dict:
    return json.loads((Path(summary["checkpoint"]) / "unimusic.json").read_text())


def _smoke(engine: str):
    from pipelines.train import JOB_PRESETS

    return dataclasses.replace(JOB_PRESETS["smoke"], engine=engine)


def _learns_pins_and_resumes(tokens, tmp_path, engine: str) -> dict:
    job = _smoke(engine)
    runs = tmp_path / "runs"
    whole = _run(tokens, runs, "whole", job)
    info = _info(whole)
    losses = np.array(info["losses"])
    assert info["step"] == job.steps and len(losses) == job.steps and np.isfinite(losses).all()
    assert info["engine"] == engine and info["world_size"] == 2
    assert losses[-8:].mean() < 0.8 * losses[:8].mean(), losses  # it learns
    print(f"{engine} first losses: {losses[:4].tolist()}")
    if PINNED[engine] is not None:
        np.testing.assert_allclose(losses[: len(PINNED[engine])], PINNED[engine], rtol=1e-4)

    # Stopped at step 16 (a checkpoint), then resumed by name: the remaining losses repeat.
    part = _run(tokens, runs, "part", job, stop_at=16)
    assert _info(part)["step"] == 16
    rest = _run(tokens, runs, "part", job)
    resumed = _info(rest)
    assert resumed["step"] == job.steps
    np.testing.assert_allclose(resumed["losses"], losses, rtol=1e-4)
    return {"whole": whole, "losses": losses, "runs": runs, "job": job}


@pytest.fixture(scope="module")
def deepspeed_run(tokens, tmp_path_factory):
    return _learns_pins_and_resumes(tokens, tmp_path_factory.mktemp("ds"), "deepspeed")


def test_deepspeed_zero2_learns_pins_and_resumes(deepspeed_run):
    ckpt = Path(deepspeed_run["whole"]["checkpoint"])
    # ZeRO-2 on two workers: one optimizer shard per rank, merged into one checkpoint.
    shards = sorted(p.name for p in (ckpt / "state").glob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2, shards
    logs = Path(deepspeed_run["whole"]["log_dir"])
    records = [json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "eval" and r["eval"] for r in records)
    evals = [r for r in records if r["event"] == "eval"][-1]["eval"]
    assert "image->lmx" in evals and "ser" in evals["image->lmx"] and "note_f1" in evals["audio->midi"]
    assert list((logs / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_ddp_learns_pins_and_resumes(tokens, tmp_path):
    _learns_pins_and_resumes(tokens, tmp_path, "ddp")


def test_rerun_with_another_recipe_is_refused(tokens, deepspeed_run):
    with pytest.raises(InputError, match=r"differs in steps"):
        _run(tokens, deepspeed_run["runs"], "whole", dataclasses.replace(deepspeed_run["job"], steps=40))


def test_export_gives_the_training_checkpoints_logits(tokens, deepspeed_run, tmp_path):
    import torch

    from pipelines.train import export_checkpoint
    from unimusic.models.positions import PositionRules
    from unimusic.models.translator import build_translator
    from unimusic.models.translator_io import load_translator

    run_dir = deepspeed_run["runs"] / "whole"
    written = export_checkpoint(str(run_dir), str(tmp_path / "model"))  # a run folder: its latest checkpoint
    assert written["step"] == deepspeed_run["job"].steps
    model, config, vocab, meta = load_translator(tmp_path / "model")
    assert config == deepspeed_run["job"].model and meta["step"] == deepspeed_run["job"].steps

    # The training checkpoint's module weights, as DeepSpeed saved them.
    ds = torch.load(Path(deepspeed_run["whole"]["checkpoint"]) / "state" / "mp_rank_00_model_states.pt",
                    map_location="cpu", weights_only=False)
    trained = build_translator(config, vocab)
    trained.load_state_dict({k[len("translator."):]: v for k, v in ds["module"].items()})
    trained.eval()

    from unimusic.multitask import collate

    rules = PositionRules.from_vocabulary(vocab, max_positions=config.max_positions)
    for examples in _some_examples(tokens["tokens"], vocab, rules).values():
        batch = {k: (torch.as_tensor(v) if hasattr(v, "dtype") else v) for k, v in collate(examples, pad=vocab.pad).items()}
        args = {k: batch[k] for k in ("src", "src_pos", "src_mask", "source", "tgt_in", "tgt_pos", "target", "tgt_out")}
        with torch.no_grad():
            torch.testing.assert_close(model(**args), trained(**args), rtol=1e-5, atol=1e-5)


def _some_examples(tokens_dir: str, vocab, rules) -> dict:
    """Two examples of some directions (single-stream and multi-codebook targets) from the first tokenized rows."""
    from unimusic.multitask import Caps, build_examples

    rows = _rows(tokens_dir)
    examples, _ = build_examples(rows[:4], ("image->lmx", "audio->midi", "midi->audio", "lmx->image"), vocab=vocab,
                                 rules=rules, caps=Caps(source=96, target=96, max_seconds=4.0), dataset="test")
    return {k: v[:2] for k, v in examples.items() if v}


def _rows(tokens_dir: str) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for f in sorted(Path(tokens_dir, "shards").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: (r["piece_id"], r["system"], r["occurrence"]))


def _train_worker_pids() -> list[int]:
    """PIDs of this test session's Ray Train workers (not those of other Ray clusters on the machine)."""
    from ray._private import state

    return [a["Pid"] for a in state.actors().values() if a.get("ActorClassName") == "RayTrainWorker" and a.get("State") == "ALIVE"
            and int(a.get("Pid") or 0) > 0]  # pid 0 (not recorded yet) would be os.kill(0): our own group


@pytest.mark.slow
def test_killed_worker_restarts_from_the_latest_checkpoint(tokens, deepspeed_run, tmp_path):
    runs = tmp_path / "runs"
    killed: list[int] = []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline:
            if list((runs / "killed").glob("checkpoint_*/unimusic.json")):
                pids = _train_worker_pids()
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.append(pids[-1])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = _run(tokens, runs, "killed", deepspeed_run["job"])
    thread.join(timeout=5)
    assert killed, "no training worker was killed: the test proved nothing"
    info = _info(summary)
    assert info["step"] == deepspeed_run["job"].steps
    np.testing.assert_allclose(info["losses"], deepspeed_run["losses"], rtol=1e-4)


@pytest.mark.slow
def test_another_worker_count_resumes_from_the_weights(tokens, deepspeed_run, tmp_path, capfd):
    job = deepspeed_run["job"]
    runs = tmp_path / "runs"
    _run(tokens, runs, "elastic", job, stop_at=16)
    summary = _run(tokens, runs, "elastic", job, workers=1)
    info = _info(summary)
    assert info["step"] == job.steps and info["world_size"] == 1
    # Model weights continue (the first steps after the restart are close to the 2-worker run's),
    # optimizer moments restart.
    assert info["losses"][:16] == pytest.approx(list(deepspeed_run["losses"][:16]), rel=1e-4)
    assert "world size 2 -> 1" in capfd.readouterr().out


def test_cli_train_and_export(tokens, tmp_path, capsys):
    from unimusic.cli import main

    code = main(["train", "--tokens", tokens["tokens"], "--preset", "smoke", "--storage", str(tmp_path / "runs"),
                 "--cpus-per-worker", "0.5", "--export", str(tmp_path / "m"), "steps=4", "checkpoint_every=2", "engine=ddp"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "trained to step 4" in out and (tmp_path / "m.safetensors").is_file()
    assert main(["export", str(tmp_path / "runs" / "translator-smoke"), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again.json").is_file()


def test_cli_refuses_untokenized_corpus_and_bad_checkpoint(tokens, tmp_path, capsys):
    from unimusic.cli import main

    assert main(["train", "--tokens", tokens["corpus"], "--preset", "smoke", "--storage", str(tmp_path / "runs"),
                 "--cpus-per-worker", "0.5", "steps=2"]) != 0
    err = capsys.readouterr().err
    assert "tokenize" in err and "Traceback" not in err
    assert main(["export", str(tmp_path), str(tmp_path / "x")]) == 2
    assert "no unimusic.json" in capsys.readouterr().err
    assert main(["train", "--tokens", tokens["tokens"], "--preset", "smoke", "engine=horovod"]) == 2
    assert "engine" in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoints_on_s3_resume_and_export(s3_server, tokens, deepspeed_run, tmp_path):
    """Checkpoints on a real S3 API (moto_server): a run stopped at step 16 resumes from S3 with the
    same losses, and the export reads the run folder from S3."""
    import boto3

    from pipelines.train import export_checkpoint
    from unimusic import storage
    from unimusic.models.translator_io import load_translator

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="train-test")
    job, storage_path = deepspeed_run["job"], "s3://train-test/runs"
    from pipelines.train import train
    from pipelines.train_common import RunConfig

    run = RunConfig(name="s3run", storage_path=storage_path, workers=2, cpus_per_worker=0.5)
    train(tokens_dir=tokens["tokens"], job=job, run=run, stop_at=16, log_dir=str(tmp_path / "logs"))
    assert any(f.endswith("/unimusic.json") for f in storage.list_files(f"{storage_path}/s3run"))
    summary = train(tokens_dir=tokens["tokens"], job=job, run=run, log_dir=str(tmp_path / "logs"), export=str(tmp_path / "direct"))
    assert summary["checkpoint"].startswith(f"{storage_path}/s3run/checkpoint_")  # a URI the user can pass on
    assert (tmp_path / "direct.safetensors").is_file()  # the job's own export read the checkpoint from S3
    written = export_checkpoint(f"{storage_path}/s3run", str(tmp_path / "model"))
    assert written["step"] == job.steps
    _, _, _, meta = load_translator(tmp_path / "model")
    assert meta["final_loss"] == pytest.approx(deepspeed_run["losses"][-1], rel=1e-4)


def test_export_refuses_damaged_checkpoints(deepspeed_run, tmp_path):
    import shutil

    from pipelines.train import export_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(deepspeed_run["whole"]["checkpoint"], ckpt)
    for shard in (ckpt / "state").glob("zero_pp_rank_1_*"):
        shard.unlink()  # one rank's optimizer shard lost
    with pytest.raises(InputError, match="cannot read the deepspeed checkpoint files"):
        export_checkpoint(str(ckpt), str(tmp_path / "m"))
    (ckpt / "unimusic.json").write_text("{broken")
    with pytest.raises(InputError, match="not JSON"):
        export_checkpoint(str(ckpt), str(tmp_path / "m"))


@pytest.mark.slow
def test_zero3_trains_evaluates_and_exports(tokens, deepspeed_run, tmp_path):
    """ZeRO-3 partitions the parameters themselves: evaluation runs on every rank (generation
    gathers them) and the export gathers every rank's shard."""
    from pipelines.train import export_checkpoint
    from unimusic.models.translator_io import load_translator

    job = dataclasses.replace(deepspeed_run["job"], zero_stage=3, eval_every=8)
    summary = _run(tokens, tmp_path / "runs", "zero3", job, stop_at=8)
    info = _info(summary)
    assert info["step"] == 8 and info["zero_stage"] == 3
    # The same arithmetic as ZeRO-2 (same schedule, same batches) up to the order of the partitioned
    # gradient reductions, whose rounding differences grow over the steps.
    np.testing.assert_allclose(info["losses"][:4], deepspeed_run["losses"][:4], rtol=1e-4)
    np.testing.assert_allclose(info["losses"], deepspeed_run["losses"][:8], rtol=2e-3)
    records = [json.loads(line) for line in (Path(summary["log_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["event"] == "eval"]
    written = export_checkpoint(summary["checkpoint"], str(tmp_path / "m"))
    assert written["step"] == 8
    load_translator(tmp_path / "m")
