"""What the tokenizer training jobs share: run settings, Ray Train set-up, checkpoints, data reading.

A run is a Ray Train ``TorchTrainer`` named ``RunConfig(name, storage_path)``.
Ray Train keeps the run's checkpoints under ``storage_path/name`` (local or
``s3://``) and a restarted run with the same name and storage starts from the
latest one, so a killed job resumes where it stopped. A worker that dies is
restarted from the latest checkpoint too (``max_failures``).

Training checkpoints are our own files: one ``state.pt`` of tensors and plain
data (``torch.save``), read back with ``torch.load(weights_only=True)``, so
loading never unpickles arbitrary objects. The exported, shipped form of a
model is safetensors + JSON (``unimusic.models.weights``).

Data order is a function of (seed, epoch, rank): Ray Data reads the corpus
shards in a fixed order (``preserve_order``) and the random windows come from a
generator seeded by (seed, epoch, rank); a resumed run regenerates and skips the
batches of the current epoch it already consumed, so its losses continue those
of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time

from unimusic.errors import InputError

HELD_OUT = ("val", "test")  # the splits every job evaluates on
STATE_FILE = "state.pt"
JOB_FILE = "job.json"  # the job config, beside each checkpoint


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where and how a training run executes (not what it trains)."""

    name: str = "tokenizer"
    storage_path: str = "runs"  # local folder or s3://bucket/prefix; checkpoints live in storage_path/name
    workers: int = 1
    min_workers: int = 0  # > 0: elastic, between min_workers and workers as the cluster allows
    cpus_per_worker: float = 1.0  # fractional on small machines so Ray Data can still feed the workers
    use_gpu: bool = False
    max_failures: int = 2  # worker failures survived per run (restart from the latest checkpoint)
    keep_checkpoints: int = 2
    resources: dict = dataclasses.field(default_factory=dict)  # custom Ray resources per worker (a node type's)

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise InputError("run name", f"expected a plain folder name, got {self.name!r}")
        if not (isinstance(self.workers, int) and self.workers >= 1):
            raise InputError("run workers", f"expected an integer >= 1, got {self.workers!r}")
        if not (isinstance(self.min_workers, int) and 0 <= self.min_workers <= self.workers):
            raise InputError("run min_workers", f"expected 0 (fixed) or 1..workers, got {self.min_workers!r}")
        if not (self.cpus_per_worker > 0):
            raise InputError("run cpus_per_worker", f"expected > 0, got {self.cpus_per_worker!r}")
        if self.max_failures < -1:
            raise InputError("run max_failures", "expected >= -1 (-1: unlimited)")
        if self.keep_checkpoints < 1:
            raise InputError("run keep_checkpoints", "expected >= 1")


def learning_rate(step: int, *, base: float, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor * base`` at ``total``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    progress = min(1.0, step / max(1, total))
    return base * warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def corpus_shards(corpus_dir: str) -> list[str]:
    """The Parquet shard files of a corpus (sorted); InputError if there are none."""
    from unimusic import storage

    if not storage.exists(storage.join(corpus_dir, "manifest.json")):
        raise InputError(corpus_dir, "not a corpus: no manifest.json (build one with `unimusic corpus build`)")
    files = sorted(storage.list_files(storage.join(corpus_dir, "shards"), suffixes=(".parquet",)))
    if not files:
        raise InputError(corpus_dir, "corpus has no shards")
    return files


def read_split(corpus_dir: str, *, columns: list[str], splits: tuple[str, ...] = ("train",)):
    """A Ray Data dataset of ``columns`` of the corpus rows in ``splits``, in a fixed order."""
    import ray
    from ray.data.expressions import col

    from unimusic import storage

    files = corpus_shards(corpus_dir)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the training loop reports its own progress
    fs, _ = storage.filesystem(files[0])
    paths = [storage.filesystem(f)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=fs).select_columns([*columns, "split"])
    return ds.filter(expr=col("split").is_in(list(splits)))


def report_every(step: int, every: int, total: int) -> bool:
    return every > 0 and (step % every == 0 or step == total)


def save_checkpoint(state: dict, metrics: dict, *, job_config: dict) -> None:
    """Report ``metrics`` with a checkpoint holding ``state`` (rank 0 writes it; every rank reports)."""
    import json

    import ray.train
    import torch

    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, os.path.join(tmp, STATE_FILE))
            with open(os.path.join(tmp, JOB_FILE), "w") as f:
                json.dump(job_config, f, sort_keys=True)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def load_checkpoint_state(checkpoint) -> dict | None:
    """The state saved by :func:`save_checkpoint` in a Ray Train checkpoint (tensors and plain data only)."""
    import torch

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = os.path.join(folder, STATE_FILE)
        if not os.path.isfile(path):
            raise InputError(str(checkpoint.path), f"checkpoint lacks {STATE_FILE}")
        return torch.load(path, map_location="cpu", weights_only=True)


def check_resume(run: RunConfig, job_config: dict) -> None:
    """Refuse to resume a run whose checkpoints were written under another job config (a silent mix of
    two recipes)."""
    import json

    from unimusic import storage

    folder = storage.join(run.storage_path, run.name)
    if not storage.exists(folder):
        return
    records = sorted(f for f in storage.list_files(folder, suffixes=(".json",)) if f.rsplit("/", 1)[-1] == JOB_FILE)
    if not records:
        return
    saved = json.loads(storage.read_bytes(records[-1]))
    job_config = json.loads(json.dumps(job_config))  # tuples -> lists, as saved
    if saved != job_config:
        changed = sorted(k for k in set(saved) | set(job_config) if saved.get(k) != job_config.get(k))
        raise InputError(
            f"run {run.name!r} in {run.storage_path}",
            f"its checkpoints were written with another job config (differs in {', '.join(changed)}); "
            "use a new run name, or the same settings to resume",
        )


def rng_state() -> dict:
    import torch

    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])


class ResumableBatches:
    """Endless batches from ``make_epoch(epoch)`` (a generator for one epoch), epoch after epoch,
    keeping this worker's data position (epoch, batches consumed in it) for checkpoints.

    ``saved`` is the per-worker positions list of the checkpoint resumed from (None: a fresh
    run). Its batches already consumed in the current epoch are regenerated and skipped, so the
    data continues exactly; with another worker count the run restarts at the next epoch.
    """

    def __init__(self, make_epoch, *, saved: list | None, rank: int, world: int):
        self.make_epoch, self.rank, self.world = make_epoch, rank, world
        positions = [tuple(p) for p in saved] if saved else [(0, 0)] * world
        if len(positions) != world:
            positions = [(max(p[0] for p in positions) + 1, 0)] * world
        self.epoch, self.offset = positions[rank]
        self._stream = self._batches()

    def _batches(self):
        while True:
            produced = 0
            for i, batch in enumerate(self.make_epoch(self.epoch)):
                produced += 1
                if i < self.offset:
                    continue  # consumed before the checkpoint this run resumed from
                self.offset = i + 1
                yield batch
            if produced == 0:
                raise InputError("corpus", f"worker {self.rank} got no training windows (too few train rows?)")
            self.epoch, self.offset = self.epoch + 1, 0

    def __next__(self):
        return next(self._stream)

    def positions(self) -> list[list[int]]:
        """Every worker's (epoch, offset), gathered (a collective call when there are several workers)."""
        import torch.distributed as dist

        if self.world == 1:
            return [[self.epoch, self.offset]]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, (self.epoch, self.offset))
        return [list(p) for p in gathered]


def allreduce_gradients(*modules) -> None:
    """Average gradients over workers (no-op on one worker). Explicit, so models need no DDP wrapper."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for module in modules:
        for p in module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def run_trainer(loop, loop_config: dict, *, run: RunConfig, datasets: dict, unsplit: tuple[str, ...] = (),
                env: dict | None = None):
    """Fit a TorchTrainer (gloo on CPU); returns the Ray Train result (its checkpoint is the latest).

    Datasets named in ``unsplit`` reach every worker whole (held-out data for rank 0's evaluation).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.build_corpus import forwarded_env
    from unimusic import storage

    fs, root = storage.filesystem(run.storage_path)
    if not storage.is_remote(run.storage_path):
        os.makedirs(root, exist_ok=True)
    resources = {"CPU": run.cpus_per_worker, **run.resources}
    if run.use_gpu:
        resources["GPU"] = 1
    env = {**forwarded_env().get("runtime_env", {}).get("env_vars", {}), **{k: v for k, v in (env or {}).items() if v}}
    check_resume(run, loop_config["job"])
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=(run.min_workers, run.workers) if run.min_workers else run.workers,
                                               use_gpu=run.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=root,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.keep_checkpoints),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=[k for k in datasets if k not in unsplit]),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training run {run.name!r} failed: {result.error}") from result.error
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


def fit_on_splits(loop, loop_config: dict, *, corpus_dir: str, columns: list[str], run: RunConfig,
                  num_cpus: int | None = None, env: dict | None = None, split_train: bool = True) -> tuple[object, dict]:
    """Start Ray (workers print their progress lines), fit ``loop`` on the corpus's ``train`` rows
    (split over workers, or whole on every worker with ``split_train=False``) with the held-out rows
    whole on every worker; returns the Ray Train result
    and a summary (run, storage, seconds, latest checkpoint, final metrics)."""
    from pipelines.build_corpus import init_ray

    init_ray(num_cpus, log_to_driver=True)
    datasets = {
        "train": read_split(corpus_dir, columns=columns, splits=("train",)),
        "held_out": read_split(corpus_dir, columns=columns, splits=HELD_OUT),
    }
    unsplit = ("held_out",) if split_train else ("train", "held_out")
    result = run_trainer(loop, loop_config, run=run, datasets=datasets, unsplit=unsplit, env=env)
    from unimusic import storage

    checkpoint = result.checkpoint.path if result.checkpoint else None
    if checkpoint and storage.is_remote(run.storage_path):  # Ray gives the path inside the bucket
        checkpoint = storage.join(run.storage_path, run.name, checkpoint.rstrip("/").rsplit("/", 1)[-1])
    summary = {"run": run.name, "storage": run.storage_path, "seconds": result.seconds, "checkpoint": checkpoint,
               "final": result.metrics}
    return result, summary
