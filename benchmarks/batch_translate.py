"""Batch translation throughput on CPU: inputs/s with 1 vs 2 Ray actors, in one run.

    .venv/bin/python benchmarks/batch_translate.py [--inputs 48] [--measures 4] [--checkpoint P]

Makes ``--inputs`` LMX files (``--measures`` measures each, cut from the music21
corpus's Bach chorales) and translates them to MIDI with ``engine=model`` (the
shipped translator's LMX -> MIDI direction, so every input is a model decode),
once with one actor and once with two, each into a fresh output folder (nothing
is skipped). The times are the whole ``translate_batch`` call: starting the
actors, loading the checkpoint once per actor, reading, decoding, writing the
MIDI files and the manifest. Ray gets 2 CPUs; each actor runs torch on one thread.
The machine is noisy and has 2 cores; read the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_inputs(folder: str, count: int, measures: int) -> int:
    """``count`` LMX files cut from Bach chorales; returns how many tokens they hold in all."""
    from music21 import corpus
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    from unimusic.inference import score_to_lmx

    os.makedirs(folder, exist_ok=True)
    tokens = made = 0
    for path in corpus.getComposer("bach"):
        if made >= count:
            break
        try:
            score = corpus.parse(path)
        except Exception:  # a corpus file music21 cannot read: take the next one
            continue
        for start in (1, 1 + measures, 1 + 2 * measures):
            if made >= count:
                break
            try:
                lmx = score_to_lmx(GeneralObjectExporter(score.measures(start, start + measures - 1)).parse())
            except Exception:
                continue
            if not lmx:
                continue
            with open(os.path.join(folder, f"{made:03d}-{os.path.basename(str(path)).split('.')[0]}-m{start}.lmx"),
                      "w") as f:
                f.write(" ".join(lmx) + "\n")
            tokens += len(lmx)
            made += 1
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=48, help="LMX files to translate")
    parser.add_argument("--measures", type=int, default=4, help="measures per input")
    parser.add_argument("--checkpoint", default=None, help="exported translator (default: the shipped one)")
    parser.add_argument("--batch-size", type=int, default=4, help="inputs per actor call")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipelines.batch_translate import translate_batch
    from unimusic.inference import Options

    scratch = tempfile.mkdtemp(prefix="bench-batch-translate-")
    src = os.path.join(scratch, "lmx")
    t0 = time.perf_counter()
    tokens = make_inputs(src, args.inputs, args.measures)
    count = len(os.listdir(src))
    print(f"{count} LMX inputs ({args.measures} measure(s) each, {tokens} tokens in all) made in "
          f"{time.perf_counter() - t0:.1f} s under {src}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rates = {}
    for actors in (1, 2):
        out = os.path.join(scratch, f"out-{actors}")
        summary = translate_batch(src, to="midi", out=out, checkpoint=args.checkpoint,
                                  options=Options(engine="model"), actors=actors, batch_size=args.batch_size)
        rates[actors] = summary["done"] / summary["seconds"]
        with open(summary["manifest"]) as f:
            busy = sum(json.loads(line)["seconds"] for line in f if line.strip())
        print(f"Ray, {actors} actor(s): {summary['seconds']:7.1f} s  {rates[actors]:6.2f} inputs/s  "
              f"({summary['done']} done, {summary['failed']} failed; {busy:.1f} s in the actors' calls, "
              f"checkpoint loads included; the rest is starting actors and scheduling)")
    ray.shutdown()
    print(f"2 actors vs 1:  {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
