"""Ray Train job: the multitask translator over tokenized corpus shards (DeepSpeed or DDP).

    unimusic train --tokens artifacts/tokens --preset tiny --name translator --storage runs/
    unimusic export runs/translator exports/translator

Every worker reads the tokenized rows of the ``train`` split through Ray Data (only
the columns the examples need) and keeps its share (rows sorted by a stable key,
every ``world``-th), then builds the examples of every direction from them
(``unimusic.multitask``: slicing over-long systems at measure boundaries, audio
continuation prefixes). A step's batch is a pure function of (seed, step, rank):
the direction from the mixing weights at that step (the same on every worker),
the examples by length bucketing. So the data needs no iterator state: a resumed
run (same name, or a worker restarted by Ray Train's ``FailureConfig``) continues
with exactly the batches and losses of an uninterrupted one. Dropout draws are
seeded by (seed, step, rank) for the same reason.

Engines: DeepSpeed (default; ZeRO stage 0-3, bf16 on GPU, gradient clipping,
torch AdamW so nothing is compiled) or plain ``DistributedDataParallel``. Both use
gloo on CPU workers, nccl on GPUs. The learning rate is set every step (linear
warm-up, cosine decay), so it never depends on a scheduler's saved state.

A checkpoint is the engine's own files (DeepSpeed: one model-states file and one
optimizer shard per rank, merged by Ray Train into one checkpoint directory; DDP:
``state.pt`` read with ``weights_only=True``) plus ``unimusic.json`` (model config,
vocabulary and its hash, step, engine, world size, the per-step losses so far) and
``job.json``. A run restarted with another worker count (elastic ``min_workers``)
loads the DeepSpeed module weights only (ZeRO 0-2: the optimizer moments restart)
and says so; DDP state is world-size independent. ``export_checkpoint`` consolidates
the shards (DeepSpeed's ``zero_to_fp32``) into safetensors + JSON that load without
DeepSpeed or Ray (:func:`unimusic.models.translator_io.load_translator`).

Rank 0 evaluates every ``eval_every`` steps on held-out (val/test) examples per
direction: teacher-forced loss and token accuracy, and the direction's metric on
greedy decodes (SER for LMX targets, note onset F1 for MIDI targets; code accuracy
for image/audio targets). Metrics go to stdout (JSON lines), ``metrics.jsonl`` and
TensorBoard event files under the run's log folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time

from pipelines.train_common import HELD_OUT, JOB_FILE, RunConfig, learning_rate, report_every
from unimusic.errors import InputError
from unimusic.models.translator import TranslatorConfig, translator_config
from unimusic.multitask import Caps, row_key
from unimusic.tokens.vocabulary import TASKS

INFO_FILE = "unimusic.json"
DS_TAG = "state"  # DeepSpeed checkpoint tag inside every checkpoint directory
CHECKPOINT_FORMAT = 1
ENGINES = ("deepspeed", "ddp")
ROW_COLUMNS = [
    "piece_id", "variant", "system", "occurrence", "measures", "measure_x", "played_measures", "measure_start",
    "measure_end", "lmx", "notes", "start", "end", "vocab_hash",
    "image_codes", "image_code_shape", "audio_codes", "audio_code_shape", "audio_frame_rate",
]


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """What a translator run trains (the resume check compares all of it)."""

    model: TranslatorConfig = translator_config("tiny")
    tasks: tuple[str, ...] = TASKS
    mix: str = ""  # mixing weights, e.g. "image->lmx=2,audio->midi=1@0:200:0.5" (see multitask.parse_weights); "" = equal
    caps: Caps = Caps()
    engine: str = "deepspeed"
    zero_stage: int = 2
    bf16: bool = True  # on GPU workers only (CPU trains in fp32)
    steps: int = 300
    max_tokens: int = 6144  # padded (source + target) steps per worker per batch
    max_batch: int = 16
    lr: float = 1e-3
    warmup_steps: int = 30
    lr_floor: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1  # torch threads per worker
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int = 0  # 0: at the end only
    eval_examples: int = 8  # held-out examples per direction
    eval_max_steps: int = 320  # generation cap for the metrics

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise InputError("config key 'engine'", f"{self.engine!r} is not one of {', '.join(ENGINES)}")
        if not 0 <= self.zero_stage <= 3:
            raise InputError("config key 'zero_stage'", f"expected 0..3, got {self.zero_stage}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise InputError("config key 'tasks'", f"unknown direction(s) {unknown} (have {', '.join(TASKS)})")
        for name in ("steps", "max_tokens", "max_batch", "threads", "eval_max_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"config key {name!r}", "must be >= 1")


SMOKE_MODEL = translator_config("tiny", d_model=64, heads=2, encoder_layers=1, decoder_layers=1, ffn=128, depth_layers=1,
                                dropout=0.0, max_positions=512)
JOB_PRESETS = {
    # tests and CI: seconds per run
    "smoke": TrainJob(model=SMOKE_MODEL, tasks=("image->lmx", "audio->midi", "lmx->midi", "midi->audio"),
                      caps=Caps(source=96, target=96, max_seconds=4.0), steps=32, max_tokens=768, max_batch=8, lr=3e-3,
                      warmup_steps=4, checkpoint_every=8, log_every=8, eval_examples=2, eval_max_steps=48),
    # the main job's few hundred steps on 2 cores
    "tiny": TrainJob(),
    # benchmarks/learn_tiny.py and the translator shipped in unimusic/weights: about 55 minutes of 2 CPU cores
    "learn": TrainJob(steps=2000, checkpoint_every=250, eval_every=500, eval_examples=16),
}


# -- rows and examples ------------------------------------------------------------


def worker_rows(rows: list[dict], *, rank: int, world: int) -> list[dict]:
    """This worker's share of ``rows``: sorted by a stable key, every ``world``-th (deterministic)."""
    return sorted(rows, key=row_key)[rank::world]


def tokens_manifest(tokens_dir: str, vocab) -> dict:
    """The tokenized corpus's manifest, checked on the driver: a tokenize-stage output whose
    vocabulary is this code's (so no worker fails later on it)."""
    from unimusic import storage

    path = storage.join(tokens_dir, "manifest.json")
    if not storage.exists(path):
        raise InputError(tokens_dir, "no manifest.json: not a tokenized corpus (run `unimusic corpus tokenize`)")
    try:
        manifest = json.loads(storage.read_bytes(path))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not JSON ({exc})") from None
    if "tokenize_format" not in manifest or not manifest.get("tokenizers"):
        raise InputError(tokens_dir, "a corpus without image/audio codes: tokenize it first "
                         "(`unimusic corpus tokenize CORPUS --out TOKENS`)")
    vocab.check(manifest.get("vocab_hash", "?"), what=path)
    return manifest


def shard_columns(tokens_dir: str) -> list[str]:
    """The row columns examples need that the shards have (older corpora lack ``variant``)."""
    import io

    import pyarrow.parquet as pq

    from pipelines.train_common import corpus_shards
    from unimusic import storage

    first = corpus_shards(tokens_dir)[0]
    names = set(pq.read_schema(io.BytesIO(storage.read_bytes(first))).names)
    missing = [c for c in ("lmx", "notes", "image_codes", "audio_codes", "measure_x") if c not in names]
    if missing:
        raise InputError(first, f"shard lacks column(s) {', '.join(missing)}: not a tokenized corpus shard")
    return [c for c in ROW_COLUMNS if c in names]


def dataset_name(tokens_dir: str, manifest: dict) -> str:
    source = manifest.get("source", {}).get("corpus") or tokens_dir
    return str(source).rstrip("/").rsplit("/", 1)[-1] or "corpus"


def make_examples(rows: list[dict], job: TrainJob, *, vocab, rules, dataset: str):
    from unimusic.multitask import build_examples

    return build_examples(rows, job.tasks, vocab=vocab, rules=rules, caps=job.caps, dataset=dataset)


def held_out_examples(examples_by_key: dict, *, per_task: int) -> dict:
    """The first ``per_task`` examples of each direction (rows in a stable order): a fixed eval set."""
    out: dict = {}
    for (task, _dataset), examples in sorted(examples_by_key.items()):
        out.setdefault(task, [])
        out[task].extend(examples[: max(0, per_task - len(out[task]))])
    return {t: e for t, e in out.items() if e}


def to_tensors(arrays: dict, device) -> dict:
    import torch

    out = {}
    for k, v in arrays.items():
        out[k] = torch.as_tensor(v, device=device) if hasattr(v, "dtype") else v
    return out


# -- the model wrapper both engines train ----------------------------------------


def training_module(translator):
    """``translator`` wrapped so that ``forward(batch)`` is the training loss (what engines call)."""
    import torch

    class TranslatorLoss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.translator = inner

        def forward(self, batch: dict):
            return self.translator.loss(
                src=batch["src"], src_pos=batch["src_pos"], src_mask=batch["src_mask"], source=batch["source"],
                tgt_in=batch["tgt_in"], tgt_pos=batch["tgt_pos"], target=batch["target"], tgt_out=batch["tgt_out"],
            )

    return TranslatorLoss(translator)


def deepspeed_config(job: TrainJob, *, use_gpu: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # batches are token-bucketed; DeepSpeed only needs a number
        "gradient_accumulation_steps": 1,
        "gradient_clipping": job.grad_clip,
        "zero_optimization": {"stage": job.zero_stage},
        "bf16": {"enabled": bool(use_gpu and job.bf16)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class Engine:
    """DeepSpeed or DDP behind one small interface (forward/backward/step, save/load, the bare model)."""

    def __init__(self, module, job: TrainJob, *, device, use_gpu: bool):
        import torch

        self.job, self.kind = job, job.engine
        optimizer = torch.optim.AdamW(module.parameters(), lr=job.lr, betas=(0.9, 0.98), weight_decay=job.weight_decay)
        if self.kind == "deepspeed":
            import deepspeed

            self.engine, self.optimizer, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizer, config=deepspeed_config(job, use_gpu=use_gpu), dist_init_required=False
            )
            self.module = self.engine.module
        else:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            module = module.to(device)
            distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            # Directions differ in the parameters they use (the depth decoder): unused ones are allowed.
            self.engine = DistributedDataParallel(module, find_unused_parameters=True) if distributed else module
            self.module, self.optimizer = module, optimizer
        self.device = device

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, batch: dict) -> dict:
        import torch

        out = self.engine(batch)
        if self.kind == "deepspeed":
            self.engine.backward(out["loss"])
            self.engine.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.job.grad_clip)
            self.optimizer.step()
        return out

    def evaluate(self, held_out: dict, *, vocab) -> dict:
        """:func:`evaluate` on the bare translator; under ZeRO-3 every rank gathers the full
        parameters first (and every rank evaluates, so the gathers match)."""
        if self.kind == "deepspeed" and self.job.zero_stage == 3:
            import deepspeed

            from unimusic.models.translator import build_translator

            # Gathered weights go into a plain copy: ZeRO-3's hooks would release them again
            # after each submodule call inside the evaluation.
            inner = self.module.translator
            with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=None):
                state = {n: p.detach().clone() for n, p in inner.named_parameters(remove_duplicate=False)}
            plain = build_translator(self.job.model, vocab).to(self.device)
            missing = plain.load_state_dict(state, strict=False).missing_keys
            if any(n in dict(plain.named_parameters(remove_duplicate=False)) for n in missing):
                raise RuntimeError(f"ZeRO-3 evaluation copy lacks parameters {missing}")
            return evaluate(plain, held_out, vocab=vocab, job=self.job, device=self.device)
        return evaluate(self.module.translator, held_out, vocab=vocab, job=self.job, device=self.device)

    def save(self, folder: str, *, rank: int) -> None:
        import torch

        if self.kind == "deepspeed":
            self.engine.save_checkpoint(folder, tag=DS_TAG)  # every rank writes its shard
        elif rank == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()},
                       os.path.join(folder, "state.pt"))

    def load(self, folder: str, info: dict, *, world: int) -> str:
        """Restore from a checkpoint folder; returns how ("exact" or a one-line reason)."""
        import torch

        if self.kind == "deepspeed":
            if info["world_size"] == world:
                self.engine.load_checkpoint(folder, tag=DS_TAG)
                return "exact"
            if info["zero_stage"] == 3:
                raise InputError(folder, f"ZeRO-3 shards of {info['world_size']} workers cannot resume on {world}: "
                                 "`unimusic export` the checkpoint and start a new run from it")
            self.engine.load_checkpoint(folder, tag=DS_TAG, load_module_only=True, load_optimizer_states=False,
                                        load_lr_scheduler_states=False)
            return f"world size {info['world_size']} -> {world}: model weights restored, optimizer moments restarted"
        state = torch.load(os.path.join(folder, "state.pt"), map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return "exact"


# -- evaluation --------------------------------------------------------------------


def evaluate(translator, held_out: dict, *, vocab, job: TrainJob, device) -> dict:
    """Per direction: teacher-forced loss/accuracy and the direction's metric on greedy decodes."""
    import numpy as np
    import torch

    from unimusic.metrics import note_f1, symbol_error_rate
    from unimusic.multitask import collate, decode_target, target_tokens

    was_training = translator.training
    translator.eval()
    results = {}
    with torch.no_grad():
        for task, examples in sorted(held_out.items()):
            batch = to_tensors(collate(examples, pad=vocab.pad), device)
            out = translator.loss(**{k: batch[k] for k in ("src", "src_pos", "src_mask", "source", "tgt_in", "tgt_pos",
                                                             "target", "tgt_out")})
            entry = {"loss": round(float(out["loss"]), 4), "accuracy": round(int(out["correct"]) / max(1, int(out["tokens"])), 4),
                     "examples": len(examples)}
            target = examples[0].target
            if target in ("lmx", "midi"):
                generated = translator.generate(
                    src=batch["src"], src_pos=batch["src_pos"], src_mask=batch["src_mask"], source=examples[0].source,
                    target=target, max_steps=job.eval_max_steps, strategy="greedy",
                )
                seconds = [(e.span[1] - e.span[0]) if target == "midi" else None for e in examples]
                refs = [decode_target(vocab, target, target_tokens(e), seconds=s)[0] for e, s in zip(examples, seconds)]
                ests = [decode_target(vocab, target, g.tokens, seconds=s)[0] for g, s in zip(generated, seconds)]
                entry["stopped"] = sum(bool(g.stopped) for g in generated)
                if target == "lmx":
                    ser = symbol_error_rate(refs, ests)
                    entry.update(ser=round(ser["ser"], 4), edits=ser["edits"], ref_tokens=ser["ref_tokens"])
                else:
                    scores = [note_f1(r, e)["f1"] for r, e in zip(refs, ests)]
                    entry["note_f1"] = round(float(np.mean(scores)), 4)
            results[task] = entry
    translator.train(was_training)
    return results


# -- logging -----------------------------------------------------------------------


class MetricsLog:
    """Rank 0's metrics: one JSON line to stdout and ``metrics.jsonl``; scalars to TensorBoard."""

    def __init__(self, folder: str | None):
        self.folder, self.writer, self.file = folder, None, None
        if folder:
            os.makedirs(folder, exist_ok=True)
            self.file = open(os.path.join(folder, "metrics.jsonl"), "a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=os.path.join(folder, "tensorboard"))
            except ImportError:  # tensorboard is a dependency; without it the JSONL still has everything
                self.writer = None

    def write(self, record: dict, *, brief: dict | None = None) -> None:
        """Log ``record``; stdout gets ``brief`` instead when given (long records stay in the file)."""
        line = json.dumps(record, sort_keys=True)
        print(json.dumps(brief, sort_keys=True) if brief is not None else line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()
        if self.writer:
            step = int(record.get("step", 0))
            for key, value in _flatten(record).items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif not isinstance(v, bool):
            out[key] = v
    return out


# -- the worker loop ------------------------------------------------------------------


def _seed(*parts: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _common_keys(keys: set, world: int) -> set:
    """Directions every worker has examples of (all workers must train the same one per step)."""
    import torch.distributed as dist

    if world == 1:
        return keys
    gathered = [None] * world
    dist.all_gather_object(gathered, sorted(keys))
    common = set(map(tuple, gathered[0]))
    for g in gathered[1:]:
        common &= set(map(tuple, g))
    return common


def _all_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def train_loop(config: dict) -> None:
    """Ray Train worker loop (see the module docstring)."""
    import numpy as np
    import ray.train
    import torch

    from unimusic.config import from_dict
    from unimusic.models.positions import PositionRules
    from unimusic.models.translator import build_translator
    from unimusic.multitask import ExamplePool, collate, parse_weights
    from unimusic.tokens.vocabulary import Vocabulary

    job = from_dict(TrainJob, config["job"])
    torch.set_num_threads(job.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    use_gpu = bool(config.get("use_gpu"))
    device = torch.device("cuda", ray.train.torch.get_device().index or 0) if use_gpu else torch.device("cpu")
    vocab = Vocabulary()
    rules = PositionRules.from_vocabulary(vocab, max_positions=job.model.max_positions)

    rows = worker_rows(list(ray.train.get_dataset_shard("train").iter_rows()), rank=rank, world=world)
    examples, build_stats = make_examples(rows, job, vocab=vocab, rules=rules, dataset=config["dataset"])
    keys = _common_keys({k for k, v in examples.items() if v}, world)
    if not keys:
        raise InputError(config["tokens"], f"worker {rank} has no training examples for {', '.join(job.tasks)}")
    pool = ExamplePool({k: examples[k] for k in keys}, seed=job.seed)
    weights = parse_weights(job.mix) if job.mix else None

    torch.manual_seed(job.seed)  # the same initial weights on every worker
    translator = build_translator(job.model, vocab)
    engine = Engine(training_module(translator), job, device=device, use_gpu=use_gpu)

    step, losses, resumed = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, INFO_FILE)) as f:
                info = json.load(f)
            vocab.check(info["vocab_hash"], what=f"checkpoint {checkpoint.path}")
            resumed = engine.load(folder, info, world=world)
            step, losses = int(info["step"]), list(info["losses"])

    log = MetricsLog(config.get("log_dir")) if rank == 0 else None
    held_out = None
    if rank == 0 or job.zero_stage == 3:  # ZeRO-3 generation needs every rank
        held_rows = sorted(ray.train.get_dataset_shard("held_out").iter_rows(), key=row_key)
        held_examples, _ = make_examples(held_rows, job, vocab=vocab, rules=rules, dataset=config["dataset"])
        held_out = held_out_examples(held_examples, per_task=job.eval_examples)
    if log:
        start = {"event": "start", "step": step, "steps": job.steps, "workers": world, "engine": job.engine,
                 "zero_stage": job.zero_stage, "resumed": resumed, "parameters": sum(p.numel() for p in translator.parameters()),
                 "examples": {f"{t}|{d}": len(v) for (t, d), v in sorted(examples.items())}}
        log.write({**start, "build": build_stats}, brief=start)

    stop_at = int(config.get("stop_at") or job.steps)
    window = {"loss": 0.0, "real": 0.0, "n": 0, "seconds": 0.0}
    per_task: dict[str, list[float]] = {}
    started, first_step = time.perf_counter(), step
    while step < min(job.steps, stop_at):
        t0 = time.perf_counter()
        engine.set_lr(learning_rate(step, base=job.lr, warmup=job.warmup_steps, total=job.steps, floor=job.lr_floor))
        key, batch_examples = pool.batch(step, rank, weights=weights, max_tokens=job.max_tokens, max_batch=job.max_batch)
        arrays = collate(batch_examples, pad=vocab.pad)
        batch = to_tensors(arrays, device)
        torch.manual_seed(_seed(job.seed, step, rank))  # dropout: a function of the step, so resumes repeat it
        out = engine.train_step(batch)
        real = float(arrays["src_mask"].sum() + arrays["tgt_mask"].sum())
        loss_sum, tokens, real_sum = _all_sum([float(out["loss"]) * int(out["tokens"]), float(out["tokens"]), real])
        loss = loss_sum / max(1.0, tokens)
        step += 1
        losses.append(loss)
        per_task.setdefault(key[0], []).append(loss)
        window["loss"] += loss
        window["real"] += real_sum
        window["n"] += 1
        window["seconds"] += time.perf_counter() - t0

        metrics = {"step": step, "loss": loss, "task": key[0]}
        if report_every(step, job.log_every, job.steps) or step == stop_at:
            metrics.update({
                "loss_mean": window["loss"] / max(1, window["n"]), "lr": engine.optimizer.param_groups[0]["lr"],
                "tokens_per_s": round(window["real"] / max(1e-9, window["seconds"]), 1),
                "seconds": round(time.perf_counter() - started, 1), "steps": job.steps,
                "eta_s": round((time.perf_counter() - started) / max(1, step - first_step) * (job.steps - step)),
                "train_loss": {t: round(float(np.mean(v[-job.log_every:])), 4) for t, v in sorted(per_task.items())},
            })
            window = {"loss": 0.0, "real": 0.0, "n": 0, "seconds": 0.0}
            if log:
                log.write({"event": "train", **metrics})
        if held_out is not None and (report_every(step, job.eval_every, job.steps) or step == job.steps):
            results = engine.evaluate(held_out, vocab=vocab)
            metrics["eval"] = results
            if log:
                log.write({"event": "eval", "step": step, "eval": results})
        if report_every(step, job.checkpoint_every, job.steps) or step in (job.steps, stop_at):
            _save(engine, job, metrics, step=step, losses=losses, rank=rank, world=world, vocab=vocab, config=config)
    if log:
        log.write({"event": "end", "step": step, "seconds": round(time.perf_counter() - started, 1)})
        log.close()


def _save(engine: Engine, job: TrainJob, metrics: dict, *, step: int, losses: list, rank: int, world: int, vocab, config) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        engine.save(tmp, rank=rank)
        if rank == 0:
            info = {
                "format": CHECKPOINT_FORMAT, "kind": "unimusic-translator-checkpoint", "step": step,
                "engine": job.engine, "zero_stage": job.zero_stage if job.engine == "deepspeed" else None,
                "world_size": world, "model": job.model.to_dict(), "vocab_hash": vocab.hash,
                "vocabulary": vocab.describe(), "tasks": list(job.tasks), "losses": losses,
                "tokenizers": config.get("tokenizers", {}),
            }
            with open(os.path.join(tmp, INFO_FILE), "w") as f:
                json.dump(info, f)
            with open(os.path.join(tmp, JOB_FILE), "w") as f:
                json.dump(config["job"], f, sort_keys=True)
        ray.train.report(_scalars(metrics), checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in _flatten(metrics).items() if isinstance(v, (int, float, str))}


# -- driver ------------------------------------------------------------------------


def default_log_dir(run: RunConfig) -> str:
    from unimusic import storage

    if storage.is_remote(run.storage_path):
        return os.path.abspath(os.path.join("runs-logs", run.name))
    return os.path.abspath(os.path.join(run.storage_path, run.name, "logs"))


def train(
    *,
    tokens_dir: str,
    run: RunConfig = RunConfig(name="translator"),
    job: TrainJob = TrainJob(),
    export: str | None = None,
    num_cpus: int | None = None,
    stop_at: int | None = None,
    log_dir: str | None = None,
) -> dict:
    """Train (or resume) the run on a tokenized corpus; export the final model if ``export`` is given.

    ``stop_at``: end this invocation (with a checkpoint) at that step; rerunning the same
    name without it continues to ``job.steps`` exactly as an uninterrupted run would.
    """
    from pipelines.train_common import fit_on_splits
    from unimusic.tokens.vocabulary import Vocabulary

    manifest = tokens_manifest(tokens_dir, Vocabulary())
    if num_cpus is None and not os.environ.get("RAY_ADDRESS"):
        # A local cluster needs a CPU beside the training workers for Ray Data's read tasks.
        num_cpus = max(os.cpu_count() or 1, math.ceil(run.workers * run.cpus_per_worker) + 1)
    loop_config = {
        "job": json.loads(json.dumps(dataclasses.asdict(job))), "tokens": tokens_dir, "dataset": dataset_name(tokens_dir, manifest),
        "tokenizers": {m: {k: t.get(k) for k in ("hash", "kind", "weights", "config_hash", "sha256")}
                       for m, t in manifest["tokenizers"].items()},
        "use_gpu": run.use_gpu, "stop_at": stop_at, "log_dir": log_dir or default_log_dir(run),
    }
    if job.engine == "deepspeed":
        # DeepSpeed JIT-compiles a small CPU op on first use; keep it between runs.
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/unimusic/torch_extensions"))
    # Every worker reads all train rows and keeps its own share (``worker_rows``): a deterministic split.
    result, summary = fit_on_splits(train_loop, loop_config, corpus_dir=tokens_dir, columns=shard_columns(tokens_dir),
                                    run=run, num_cpus=num_cpus, split_train=False,
                                    env={"TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", "")})
    summary["log_dir"] = loop_config["log_dir"]
    if export and result.checkpoint is not None and (stop_at is None or stop_at >= job.steps):
        summary["export"] = export_checkpoint(summary["checkpoint"], export)
    return summary


# -- export ------------------------------------------------------------------------


def latest_checkpoint(path: str) -> str:
    """``path`` itself when it is a checkpoint folder, else its newest ``checkpoint_*`` child with ``unimusic.json``."""
    from unimusic import storage

    if storage.exists(storage.join(path, INFO_FILE)):
        return path
    found = sorted(
        f.rsplit("/", 2)[-2] for f in storage.list_files(path, suffixes=(".json",))
        if f.endswith("/" + INFO_FILE) and f.rsplit("/", 2)[-2].startswith("checkpoint_")
    )
    if not found:
        raise InputError(path, f"neither a translator checkpoint nor a run folder holding one (no {INFO_FILE})")
    return storage.join(path, found[-1])


def export_checkpoint(checkpoint: str, out: str) -> dict:
    """Consolidate a training checkpoint (local or s3://; a checkpoint or a run folder) into
    ``out.safetensors`` + ``out.json``; returns what was written."""
    import torch

    from unimusic import storage
    from unimusic.config import from_dict
    from unimusic.models.translator_io import save_translator
    from unimusic.tokens.vocabulary import Vocabulary, VocabularyConfig

    path = latest_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        local = path
        if storage.is_remote(path):
            local = os.path.join(tmp, "checkpoint")
            _download_folder(path, local)
        try:
            with open(os.path.join(local, INFO_FILE)) as f:
                info = json.load(f)
        except json.JSONDecodeError as exc:
            raise InputError(os.path.join(path, INFO_FILE), f"not JSON ({exc})") from None
        if not isinstance(info, dict) or info.get("kind") != "unimusic-translator-checkpoint":
            raise InputError(path, f"{INFO_FILE} is not a translator checkpoint record")
        try:
            if info["engine"] == "deepspeed":
                state = _deepspeed_state(local, zero_stage=info["zero_stage"])
            else:
                state = torch.load(os.path.join(local, "state.pt"), map_location="cpu", weights_only=True)["model"]
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # missing or damaged engine files
            raise InputError(path, f"cannot read the {info['engine']} checkpoint files: {type(exc).__name__}: {exc}") from None
    prefix = "translator."
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    vocab = Vocabulary(VocabularyConfig.from_dict(info["vocabulary"]["config"]))
    vocab.check(info["vocab_hash"], what=f"checkpoint {path}")
    config = from_dict(TranslatorConfig, info["model"])
    written = save_translator(state, config=config, vocab=vocab, path=out,
                              extra={"step": info["step"], "tasks": info["tasks"], "checkpoint": path,
                                     "engine": info["engine"], "tokenizers": info.get("tokenizers", {}), "final_loss": info["losses"][-1] if info["losses"] else None})
    return {"checkpoint": path, "step": info["step"], **written}


def _download_folder(remote: str, local: str) -> None:
    import pyarrow.fs

    from unimusic import storage

    fs, root = storage.filesystem(remote)
    pyarrow.fs.copy_files(root, local, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())


def _deepspeed_state(folder: str, *, zero_stage: int) -> dict:
    """fp32 module weights from DeepSpeed's files (ZeRO 1-3: gathered from every rank's shard)."""
    import torch

    if zero_stage and zero_stage > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(folder, tag=DS_TAG)
    # Stage 0: the module states file holds the full weights (DeepSpeed's own file: not weights-only).
    data = torch.load(os.path.join(folder, DS_TAG, "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False)
    return data["module"]


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["train", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())


def evaluate_exported(model_path: str, *, tokens_dir: str, per_task: int = 32, caps: Caps | None = None,
                      max_steps: int = 320, splits: tuple[str, ...] = HELD_OUT,
                      tasks: tuple[str, ...] | None = None) -> dict:
    """Held-out metrics per direction of an exported model (no Ray): what benchmarks report.
    ``tasks``: only these of the model's directions (default: all it was trained on)."""
    import io

    import pyarrow.parquet as pq

    from pipelines.train_common import corpus_shards
    from unimusic import storage
    from unimusic.models.positions import PositionRules
    from unimusic.models.translator_io import load_translator
    from unimusic.multitask import build_examples

    model, config, vocab, meta = load_translator(model_path)
    rules = PositionRules.from_vocabulary(vocab, max_positions=config.max_positions)
    rows = []
    columns = [*shard_columns(tokens_dir), "split"]
    for f in corpus_shards(tokens_dir):
        table = pq.read_table(io.BytesIO(storage.read_bytes(f)), columns=columns)
        rows += [r for r in table.to_pylist() if r["split"] in splits]
    rows.sort(key=row_key)
    trained = tuple(meta.get("tasks") or TASKS)
    job = TrainJob(model=config, tasks=tuple(t for t in trained if tasks is None or t in tasks),
                   eval_max_steps=max_steps, caps=caps or Caps())
    examples, stats = build_examples(rows, job.tasks, vocab=vocab, rules=rules, caps=job.caps, dataset="held_out")
    held_out = held_out_examples(examples, per_task=per_task)
    import torch

    results = {}
    for task, items in held_out.items():  # batches of 8: generation memory stays small
        parts = [evaluate(model, {task: items[i : i + 8]}, vocab=vocab, job=job, device=torch.device("cpu"))[task]
                 for i in range(0, len(items), 8)]
        merged = {"examples": sum(p["examples"] for p in parts)}
        for key in ("loss", "accuracy", "note_f1"):
            if key in parts[0]:
                merged[key] = round(sum(p[key] * p["examples"] for p in parts) / merged["examples"], 4)
        if "edits" in parts[0]:  # SER pooled over the whole set
            merged["edits"], merged["ref_tokens"] = sum(p["edits"] for p in parts), sum(p["ref_tokens"] for p in parts)
            merged["ser"] = round(merged["edits"] / max(1, merged["ref_tokens"]), 4)
        results[task] = merged
    return results
