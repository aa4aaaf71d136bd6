"""Tokenize-stage throughput on CPU: systems/s and audio-seconds/s with 1 vs 2 Ray actors, in one run.

    .venv/bin/python benchmarks/tokenize_corpus.py [--corpus artifacts/corpus] [--image-weights P] [--audio-weights P]

Every run writes to a fresh output folder (nothing is skipped). By default the
first ``--rows-per-shard`` rows of every corpus shard are copied into a temporary
corpus first, so the run stays short and the shards stay even (0: the whole
corpus). Weights default to the shipped ones, else random-init tiny ones (the
same network size, so the same speed). The times include starting the actors
and loading the models. The machine is noisy and has 2 cores; read the ratio.
"""

from __future__ import annotations

import os
import sys

# Run as a script: this folder must not shadow the standard library's `tokenize`.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def _weights(given: str | None, modality: str, scratch: str) -> tuple[str, str]:
    """(path, how it was chosen)."""
    from unimusic.errors import InputError
    from unimusic.models.shipped import shipped_path

    if given:
        return given, "given"
    try:
        return str(shipped_path(modality)), "shipped"
    except InputError:
        pass
    path = os.path.join(scratch, f"{modality}-tiny-random")
    if modality == "image":
        import torch

        from unimusic.models.rqvae import PRESETS, build_rqvae, save_rqvae

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            save_rqvae(build_rqvae(PRESETS["tiny"]), PRESETS["tiny"], path)
    else:
        from unimusic.models.audio_codec import PRESETS, AudioCodec, build_codec, save_codec

        save_codec(AudioCodec(build_codec(PRESETS["tiny"], seed=0), PRESETS["tiny"]), path)
    return path, "random-init tiny (no shipped weights yet)"


def _subset(corpus: str, rows_per_shard: int, scratch: str) -> str:
    """A corpus of the first rows of every shard (same manifest fields, fewer rows)."""
    import io

    import pyarrow.parquet as pq

    from unimusic import storage
    from unimusic.tokenize import corpus_shard_paths, read_corpus_manifest

    manifest = read_corpus_manifest(corpus)
    out = os.path.join(scratch, "corpus")
    shards = []
    for path in corpus_shard_paths(corpus, manifest):
        table = pq.read_table(io.BytesIO(storage.read_bytes(path))).slice(0, rows_per_shard)
        name = os.path.basename(path)
        os.makedirs(os.path.join(out, "shards"), exist_ok=True)
        pq.write_table(table, os.path.join(out, "shards", name), compression="zstd")
        shards.append({"name": name, "rows": table.num_rows, "bytes": os.path.getsize(os.path.join(out, "shards", name))})
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(dict(manifest, shards=shards, rows=sum(s["rows"] for s in shards), errors=[], failures=0), f)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="artifacts/corpus")
    parser.add_argument("--image-weights", default=None)
    parser.add_argument("--audio-weights", default=None)
    parser.add_argument("--rows-per-shard", type=int, default=16, help="copy this many rows of each shard (0: all)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per actor count; the best is kept")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from pipelines.build_corpus import init_ray
    from pipelines.tokenize import tokenize_corpus

    with tempfile.TemporaryDirectory() as scratch:
        image, image_how = _weights(args.image_weights, "image", scratch)
        audio, audio_how = _weights(args.audio_weights, "audio", scratch)
        corpus = _subset(args.corpus, args.rows_per_shard, scratch) if args.rows_per_shard > 0 else args.corpus
        init_ray(num_cpus=2)
        runs: dict[int, list[float]] = {1: [], 2: []}
        manifest = None
        for i in range(args.repeats):
            for actors in (1, 2):  # interleaved, so drift in machine load hits both alike
                out = os.path.join(scratch, f"tokens-{actors}-{i}")
                t0 = time.perf_counter()
                manifest = tokenize_corpus(corpus_dir=corpus, out_dir=out, image_weights=image, audio_weights=audio,
                                           concurrency=actors)
                runs[actors].append(time.perf_counter() - t0)
                assert manifest["shards_skipped"] == 0 and manifest["shards_written"] == len(manifest["shards"])

    timings = {a: min(t) for a, t in runs.items()}
    rows, audio_s = manifest["rows"], manifest["audio_seconds"]
    print(f"corpus {args.corpus}" + (f" (first {args.rows_per_shard} rows of each shard)" if args.rows_per_shard > 0 else ""))
    print(f"{len(manifest['shards'])} shards, {rows} systems, {audio_s:.0f} s of audio, {manifest['failures']} errors")
    print(f"image tokenizer: {image_how} {manifest['tokenizers']['image']['hash']}")
    print(f"audio tokenizer: {audio_how} {manifest['tokenizers']['audio']['hash']}")
    for actors, seconds in timings.items():
        print(f"Ray, {actors} actor(s): {seconds:7.1f} s  {rows / seconds:6.2f} systems/s  "
              f"{audio_s / seconds:6.1f} audio-s/s  (best of {', '.join(f'{t:.1f}' for t in runs[actors])})")
    print(f"2 actors vs 1:  {timings[1] / timings[2]:.2f}x")


if __name__ == "__main__":
    main()
