"""Corpus build throughput: systems per second with 1 vs 2 Ray workers, and against
a plain single-process loop over the same functions, all in one run.

    .venv/bin/python benchmarks/corpus_build.py [--pieces 12]

Goal from the issue: 2 workers >= 1.8x one worker. The machine is noisy and has
2 cores; read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--collections", default="bach,ryansMammoth,essenFolksong,oneills1850")
    parser.add_argument("--repeats", type=int, default=2, help="Ray runs per worker count; the best is kept")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from pipelines.build_corpus import build_corpus, init_ray
    from unimusic.corpus import CorpusConfig, resolve_inputs, rows_for_source

    collections = tuple(args.collections.split(","))
    sources = resolve_inputs("music21", limit=args.pieces, collections=collections)
    config = CorpusConfig(pieces_per_shard=1)

    t0 = time.perf_counter()
    systems = 0
    for source in sources:
        with open(source, "rb") as fh:
            systems += len(rows_for_source(source, fh.read(), config)[0])
    plain = time.perf_counter() - t0

    init_ray(num_cpus=2)
    timings: dict[int, float] = {}
    runs: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):  # interleaved, so drift in machine load hits both alike
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                manifest = build_corpus(inputs="music21", out_dir=out, config=config, limit=args.pieces,
                                        collections=collections, concurrency=workers)
                runs[workers].append(time.perf_counter() - t0)
                assert manifest["rows"] == systems, (manifest["rows"], systems)
    timings = {w: min(t) for w, t in runs.items()}

    print(f"{len(sources)} pieces, {systems} rows (systems x passes)")
    print(f"plain loop:      {plain:7.1f} s  {systems / plain:6.2f} systems/s")
    for workers, seconds in timings.items():
        print(f"Ray, {workers} worker(s): {seconds:7.1f} s  {systems / seconds:6.2f} systems/s"
              f"  (best of {', '.join(f'{t:.1f}' for t in runs[workers])})")
    print(f"2 workers vs 1:  {timings[1] / timings[2]:.2f}x (goal >= 1.8x)")
    print(f"1 worker vs plain loop: {plain / timings[1]:.2f}x (Ray's overhead on one core)")


if __name__ == "__main__":
    main()
