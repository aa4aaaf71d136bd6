"""Does multitask training help? The tiny translator trained three ways for the same budget.

    .venv/bin/python benchmarks/multitask_vs_single.py --tokens artifacts/tokens [--steps 300] \\
        [--eval-examples 32] [--workers 2] [--out benchmarks/out/multitask_vs_single]

The reference paper's claim, checked on our data: a translator trained on every direction
does better on OMR and on transcription than one trained on that direction alone. Three runs
of the ``tiny`` preset with the same steps, the same ``max_tokens`` per batch, the same seed and
workers:

1. OMR only: ``tasks=("image->lmx",)``;
2. transcription only: ``tasks=("audio->midi",)``;
3. multitask: all directions (the TrainJob default). Its budget is shared: each step trains
   one direction, so it spends about 1/10 of its steps on each of the two compared here.

Each model is exported and evaluated on the held-out (val/test) examples
(:func:`pipelines.train.evaluate_exported`): OMR symbol error rate (lower is better),
transcription note onset F1 (higher is better), teacher-forced loss and token accuracy.
Prints one Markdown table (single-task model vs multitask model per direction, and their
ratio) and writes ``OUT/table.md`` and ``OUT/summary.json``.

Ray: the script starts its own local cluster (``address="local"``, never an existing one:
``RAY_ADDRESS`` is ignored), used by the three runs and shut down at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OMR, AMT = "image->lmx", "audio->midi"


def progress(message: str) -> None:
    print(f"[multitask_vs_single] {message}", flush=True)


def read_log(log_dir: str) -> list[dict]:
    path = Path(log_dir, "metrics.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def direction_counts(records: list[dict], job) -> dict | None:
    """Per direction: examples in rank 0's training pool (the run's ``start`` record) and the
    steps that trained it. The step's direction is a pure function of (seed, step, available
    directions, mix) (``ExamplePool.direction``), recomputed here and checked against the
    directions the log recorded; None when the log does not allow it."""
    from types import SimpleNamespace

    from unimusic.multitask import ExamplePool, parse_weights

    start = next((r for r in records if r.get("event") == "start"), None)
    if not start or not isinstance(start.get("examples"), dict):
        return None
    pool = {k: int(n) for k, n in start["examples"].items() if n}
    keys = sorted(tuple(k.split("|", 1)) for k in pool)
    try:
        # ExamplePool.direction reads the pool's keys and seed only.
        probe = SimpleNamespace(keys=keys, seed=job.seed)
        weights = parse_weights(job.mix) if job.mix else None
        schedule = [ExamplePool.direction(probe, step, weights=weights)[0] for step in range(job.steps)]
    except Exception as exc:  # noqa: BLE001 - a convenience figure: report why it is missing
        progress(f"per-direction step counts unavailable ({type(exc).__name__}: {exc})")
        return None
    logged = [(int(r["step"]), r["task"]) for r in records if r.get("event") == "train" and "task" in r]
    if any(schedule[step - 1] != task for step, task in logged if 1 <= step <= len(schedule)):
        progress("per-direction step counts unavailable (recomputed directions disagree with the log)")
        return None
    steps = Counter(schedule)
    pool_by_task: Counter = Counter()
    for key, n in pool.items():
        pool_by_task[key.split("|", 1)[0]] += n
    return {task: {"steps": steps.get(task, 0), "pool_examples": pool_by_task[task]} for task in sorted(pool_by_task)}


def start_ray(workers: int, cpus_per_worker: float) -> None:
    """A fresh local Ray cluster for this process (what ``pipelines.build_corpus.init_ray`` does,
    but never attaching to another job's cluster)."""
    import ray

    from pipelines.build_corpus import forwarded_env

    if ray.is_initialized():
        return
    num_cpus = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker) + 1)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=False,
             runtime_env=forwarded_env().get("runtime_env"))


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _ratio(multi, single) -> str:
    if not isinstance(multi, (int, float)) or not isinstance(single, (int, float)) or single == 0:
        return "n/a"
    return f"{multi / single:.3f}"


def _better(multi, single, higher_is_better: bool | None) -> str:
    if higher_is_better is None or not isinstance(multi, (int, float)) or not isinstance(single, (int, float)):
        return ""
    if multi == single:
        return "tie"
    return "multitask" if (multi > single) == higher_is_better else "single-task"


def comparison_rows(results: dict, *, log_every: int = 10) -> list[dict]:
    """The table's rows: (direction, metric, single-task value, multitask value, ...)."""
    specs = [
        # direction, held-out key or special, label, higher is better
        (OMR, "ser", "SER (held-out, lower is better)", False),
        (OMR, "loss", "loss (held-out, teacher-forced)", False),
        (OMR, "accuracy", "token accuracy (held-out)", True),
        (OMR, "train_loss", f"train loss (last {log_every} steps of the direction)", False),
        (OMR, "steps", "training steps on the direction", None),
        (AMT, "note_f1", "note onset F1 (held-out, 50 ms, higher is better)", True),
        (AMT, "loss", "loss (held-out, teacher-forced)", False),
        (AMT, "accuracy", "token accuracy (held-out)", True),
        (AMT, "train_loss", f"train loss (last {log_every} steps of the direction)", False),
        (AMT, "steps", "training steps on the direction", None),
    ]
    single_of = {OMR: "omr-only", AMT: "transcription-only"}
    rows = []
    for task, key, label, higher in specs:
        values = []
        for model in (single_of[task], "multitask"):
            r = results[model]
            if key == "train_loss":
                value = r["final"].get(f"train_loss/{task}")
            elif key == "steps":
                counts = r.get("directions") or {}
                value = counts.get(task, {}).get("steps")
            else:
                value = r["held_out"].get(task, {}).get(key)
            values.append(value)
        single, multi = values
        rows.append({"direction": task, "metric": label, "key": key, "single": single, "multitask": multi,
                     "single_model": single_of[task], "ratio": _ratio(multi, single),
                     "better": _better(multi, single, higher)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| direction | metric | single-task model | multitask model | multitask / single | better |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['direction']} | {r['metric']} | {_fmt(r['single'])} | {_fmt(r['multitask'])} "
                     f"| {r['ratio']} | {r['better']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="artifacts/tokens")
    parser.add_argument("--out", default="benchmarks/out/multitask_vs_single")
    parser.add_argument("--steps", type=int, default=300, help="training steps of every run (default 300)")
    parser.add_argument("--eval-examples", type=int, default=32, help="held-out examples per direction")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.pop("RAY_ADDRESS", None):
        progress("RAY_ADDRESS ignored: this benchmark runs on its own local Ray cluster")

    from pipelines.train import JOB_PRESETS, evaluate_exported, export_checkpoint, train
    from pipelines.train_common import RunConfig
    from unimusic.tokens.vocabulary import TASKS

    out = Path(args.out).resolve()
    runs = out / "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = JOB_PRESETS["tiny"]
    models = {
        "omr-only": (OMR,),
        "transcription-only": (AMT,),
        "multitask": tuple(TASKS),
    }
    jobs = {
        label: dataclasses.replace(base, tasks=tasks, steps=args.steps, eval_every=10**6, eval_examples=0,
                                   checkpoint_every=args.steps)
        for label, tasks in models.items()
    }
    results: dict = {}
    n = 2 * len(jobs) + 1
    stage = 0
    cpus_per_worker = 1.0
    progress(f"starting a local Ray cluster ({args.workers} workers x {cpus_per_worker:g} CPU)")
    start_ray(args.workers, cpus_per_worker)
    try:
        for label, job in jobs.items():
            stage += 1
            name = f"{label}-{stamp}"
            progress(f"[{stage}/{n}] training {label} ({', '.join(job.tasks) if len(job.tasks) < 3 else f'{len(job.tasks)} directions'}): "
                     f"{job.steps} steps, max_tokens {job.max_tokens}, seed {job.seed}, {args.workers} workers")
            t0 = time.perf_counter()
            summary = train(tokens_dir=args.tokens, job=job, log_dir=str(out / "logs" / name),
                            run=RunConfig(name=name, storage_path=str(runs), workers=args.workers,
                                          cpus_per_worker=cpus_per_worker))
            seconds = round(time.perf_counter() - t0, 1)
            model_path = str(out / "models" / label)
            export = export_checkpoint(summary["checkpoint"], model_path)
            directions = direction_counts(read_log(summary["log_dir"]), job)
            results[label] = {"tasks": list(job.tasks), "run": name, "seconds": seconds, "final": summary["final"],
                              "log_dir": summary["log_dir"], "model": model_path, "export": export,
                              "directions": directions}
            progress(f"[{stage}/{n}] {label}: trained in {seconds} s, final loss "
                     f"{_fmt(summary['final'].get('loss'))}, exported to {model_path}")
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    for label in jobs:
        stage += 1
        progress(f"[{stage}/{n}] evaluating {label} on up to {args.eval_examples} held-out examples per direction")
        t0 = time.perf_counter()
        results[label]["held_out"] = evaluate_exported(results[label]["model"], tokens_dir=args.tokens,
                                                       per_task=args.eval_examples, caps=jobs[label].caps,
                                                       max_steps=jobs[label].eval_max_steps, tasks=(OMR, AMT))
        progress(f"[{stage}/{n}] {label}: evaluated in {time.perf_counter() - t0:.1f} s")

    stage += 1
    progress(f"[{stage}/{n}] comparing")
    multi_dirs = results["multitask"]["directions"]
    if multi_dirs:
        for task in (OMR, AMT):
            d = multi_dirs.get(task, {})
            progress(f"multitask model trained {task} on {d.get('steps', 0)} of {args.steps} steps "
                     f"(rank-0 pool: {d.get('pool_examples', 0)} examples); the single-task model on all {args.steps}")
    rows = comparison_rows(results, log_every=base.log_every)
    table = markdown_table(rows)
    header = (f"Multitask vs single-task tiny translator: {args.steps} steps each, max_tokens "
              f"{base.max_tokens} per worker batch, seed {base.seed}, {args.workers} workers; held-out: up to "
              f"{args.eval_examples} examples per direction ({args.tokens}). Ratio < 1 is better for SER and losses, "
              "> 1 for F1 and accuracy.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(header + "\n\n" + table + "\n")
    summary = {
        "tokens": args.tokens, "steps": args.steps, "max_tokens": base.max_tokens, "seed": base.seed,
        "workers": args.workers, "eval_examples": args.eval_examples, "models": results, "table": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print()
    print(header)
    print()
    print(table, flush=True)
    progress(f"wrote {out / 'table.md'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
