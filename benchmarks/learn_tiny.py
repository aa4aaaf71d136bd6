"""Learning benchmark: the tiny translator on corpus token shards, for a fixed CPU budget.

    .venv/bin/python benchmarks/learn_tiny.py --tokens artifacts/tokens [--steps 3000] [--out benchmarks/out/learn_tiny]

1. Throughput, in one run of this script (machines here are noisy): the same short job
   with DeepSpeed ZeRO-2 and with DDP on 2 workers, and with DeepSpeed on 1 worker;
   training tokens per second (real source + target tokens, all workers) after warm-up,
   printed as ratios (goal: DeepSpeed overhead <= 10 %).
2. Learning: the ``learn`` preset (about 30 minutes of 2 cores) with DeepSpeed on 2 workers,
   then the exported model is evaluated on the held-out (val/test) examples of every
   direction: OMR SER (image->lmx), transcription onset F1 (audio->midi), LMX->MIDI note F1,
   MIDI->LMX SER, and teacher-forced token accuracy for the code targets.
Prints one JSON summary and writes it to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tokens_per_second(log_dir: str, *, skip: int = 1) -> float:
    rates = [r["tokens_per_s"] for r in map(json.loads, Path(log_dir, "metrics.jsonl").read_text().splitlines())
             if r.get("event") == "train" and "tokens_per_s" in r]
    rates = rates[skip:] or rates
    return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="artifacts/tokens")
    parser.add_argument("--out", default="benchmarks/out/learn_tiny")
    parser.add_argument("--steps", type=int, default=None, help="learning steps (default: the learn preset's)")
    parser.add_argument("--throughput-steps", type=int, default=60)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--eval-examples", type=int, default=32, help="held-out examples per direction")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from pipelines.train import JOB_PRESETS, evaluate_exported, export_checkpoint, train
    from pipelines.train_common import RunConfig

    out = Path(args.out).resolve()
    runs = out / "runs"
    summary: dict = {"tokens": args.tokens}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not args.skip_throughput:
        base = dataclasses.replace(JOB_PRESETS["tiny"], steps=args.throughput_steps, checkpoint_every=10**6,
                                   log_every=10, eval_every=10**6, eval_examples=0)
        rates = {}
        for label, engine, workers in (("deepspeed-2", "deepspeed", 2), ("ddp-2", "ddp", 2), ("deepspeed-1", "deepspeed", 1)):
            job = dataclasses.replace(base, engine=engine)
            name = f"tp-{label}-{stamp}"
            result = train(tokens_dir=args.tokens, job=job, log_dir=str(out / "logs" / name),
                           run=RunConfig(name=name, storage_path=str(runs), workers=workers, cpus_per_worker=1.0))
            rates[label] = tokens_per_second(result["log_dir"])
            print(f"{label}: {rates[label]:.0f} tokens/s", flush=True)
        summary["throughput"] = {
            "tokens_per_s": rates,
            "deepspeed_over_ddp": round(rates["deepspeed-2"] / rates["ddp-2"], 3),
            "deepspeed_overhead_pct": round(100 * (rates["ddp-2"] / rates["deepspeed-2"] - 1), 1),
            "two_over_one_worker": round(rates["deepspeed-2"] / rates["deepspeed-1"], 3),
        }
    if not args.skip_learning:
        job = JOB_PRESETS["learn"]
        if args.steps:
            job = dataclasses.replace(job, steps=args.steps)
        name = f"learn-{stamp}"
        t0 = time.perf_counter()
        result = train(tokens_dir=args.tokens, job=job, log_dir=str(out / "logs" / name),
                       run=RunConfig(name=name, storage_path=str(runs), workers=2, cpus_per_worker=1.0))
        seconds = time.perf_counter() - t0
        model_path = str(out / "translator-learn")
        export_checkpoint(result["checkpoint"], model_path)
        summary["learning"] = {
            "steps": job.steps, "seconds": round(seconds, 1), "final": result["final"],
            "held_out": evaluate_exported(model_path, tokens_dir=args.tokens, per_task=args.eval_examples,
                                          caps=job.caps, max_steps=job.eval_max_steps),
            "model": model_path,
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
