"""Ray Data job: corpus shards -> the same rows plus image codes (RQ-VAE) and audio codes (DAC).

    python -m pipelines.tokenize artifacts/corpus --out artifacts/corpus-tokens
    unimusic corpus tokenize s3://bucket/corpus/ --out s3://bucket/corpus-tokens/

Every shard listed in the corpus manifest is one Ray Data row handled by an actor
(`ShardTokenizer`, which loads both models once), written to
``OUT/shards/<corpus shard>-<tokset>.parquet`` atomically and then its sidecar
JSON; ``tokset`` hashes the tokenizers' hashes and the code version
(:func:`unimusic.tokenize.tokenizer_set`). A rerun with the same tokenizers skips
done shards; other weights write a new shard set beside the old one. The driver
writes ``manifest.json`` (which lists only this run's shard set: read a tokenized
corpus through its manifest) and ``errors.parquet`` at the end.

The weights paths must be readable by every worker (local Ray: any local path).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a script: this folder must not shadow the standard library's `tokenize`
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import dataclasses  # noqa: E402
import time  # noqa: E402

from pipelines.build_corpus import actor_pool, forwarded_env, init_ray  # noqa: E402
from unimusic.errors import InputError  # noqa: E402
from unimusic.tokenize import (  # noqa: E402
    TokenizeResult,
    Tokenizers,
    corpus_shard_paths,
    describe_tokenizer,
    done_result,
    read_corpus_manifest,
    tokenize_shard,
    write_manifest,
)


class ShardTokenizer:
    """Ray Data callable class: one corpus shard path in, one result (JSON) out; models loaded once."""

    def __init__(self, *, out_dir: str, image_weights: str | None, audio_weights: str | None,
                 image_hash: str | None, audio_hash: str | None):
        import torch

        torch.set_num_threads(1)  # one actor per CPU
        self.out_dir = out_dir
        self.tokenizers = Tokenizers.load(image_weights, audio_weights)
        found = (self.tokenizers.image_hash, self.tokenizers.audio_hash)
        if found != (image_hash, audio_hash):  # the files changed since the driver looked
            raise InputError("tokenizers", f"weights changed during the run (driver saw {(image_hash, audio_hash)}, "
                                           f"worker loaded {found})")

    def __call__(self, batch: dict) -> dict:
        import json

        out = {"result": []}
        for source in batch["source"]:
            result = tokenize_shard(str(source), self.out_dir, self.tokenizers)
            out["result"].append(json.dumps(dataclasses.asdict(result)))
        return out


def tokenize_corpus(
    *,
    corpus_dir: str,
    out_dir: str,
    image_weights: str | os.PathLike | None,
    audio_weights: str | os.PathLike | None,
    concurrency: int | None = None,
    num_cpus: int | None = None,
    resources: dict | None = None,
) -> dict:
    """Run the job (``resources``: custom Ray resources per actor); returns the manifest (also written to ``out_dir/manifest.json``) plus
    ``seconds``, ``shards_written``, ``shards_skipped`` and ``other_shard_files`` (parquet files
    under ``out_dir/shards`` that this run's manifest does not list, e.g. of other tokenizers)."""
    import json

    import ray

    from unimusic import storage

    corpus_dir, out_dir = str(corpus_dir), str(out_dir)
    if image_weights is None and audio_weights is None:
        raise InputError("tokenizers", "neither image nor audio weights given: nothing to do")
    if storage.join(corpus_dir, "") == storage.join(out_dir, "") or (
        not storage.is_remote(corpus_dir) and not storage.is_remote(out_dir)
        and os.path.abspath(corpus_dir) == os.path.abspath(out_dir)
    ):
        raise InputError(out_dir, "output folder is the corpus folder; give a new one")
    corpus_manifest = read_corpus_manifest(corpus_dir)
    sources = corpus_shard_paths(corpus_dir, corpus_manifest)
    # Absolute: workers need not share the driver's working folder.
    image_weights = None if image_weights is None else os.path.abspath(os.fspath(image_weights))
    audio_weights = None if audio_weights is None else os.path.abspath(os.fspath(audio_weights))
    # Fail here, with one clear line, on a missing / changed / wrong-kind weights file.
    loaded = Tokenizers.load(image_weights, audio_weights)
    image_hash, audio_hash, tokset = loaded.image_hash, loaded.audio_hash, loaded.tokset
    del loaded
    described = {
        "image": describe_tokenizer(image_weights, "image") if image_weights is not None else None,
        "audio": describe_tokenizer(audio_weights, "audio") if audio_weights is not None else None,
    }
    storage.makedirs(out_dir)
    t0 = time.perf_counter()
    # Done shards are read here: a rerun with nothing left to do starts no actor (and loads no model).
    results, todo = [], []
    for source in sources:
        done = done_result(source, out_dir, tokset)
        (results.append(done) if done else todo.append(source))
    if todo:
        init_ray(num_cpus)
        size = {s.get("name"): s.get("bytes", 0) for s in corpus_manifest["shards"] if isinstance(s, dict)}
        # Biggest shards first: the last shard to finish is then a small one.
        ordered = sorted(todo, key=lambda p: -(size.get(os.path.basename(p)) or 0))
        ds = ray.data.from_items([{"source": s} for s in ordered], override_num_blocks=len(ordered))
        ds = ds.map_batches(
            ShardTokenizer,
            fn_constructor_kwargs={
                "out_dir": out_dir,
                "image_weights": image_weights,
                "audio_weights": audio_weights,
                "image_hash": image_hash,
                "audio_hash": audio_hash,
            },
            batch_size=1,
            compute=actor_pool(concurrency, len(todo), resources),
            num_cpus=1,
            **({"resources": dict(resources)} if resources else {}),
            **forwarded_env(),
        )
        results += [TokenizeResult(**json.loads(r["result"])) for r in ds.iter_rows()]
    manifest = write_manifest(out_dir, results, corpus_dir=corpus_dir, corpus_manifest=corpus_manifest,
                              tokenizers=described)
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["shards_skipped"] = sum(r.skipped for r in results)
    manifest["shards_written"] = sum(bool(r.sha256) and not r.skipped for r in results)
    listed = {s["name"] for s in manifest["shards"]}
    manifest["other_shard_files"] = sum(
        os.path.basename(p) not in listed
        for p in storage.list_files(storage.join(out_dir, "shards"), suffixes=(".parquet",))
    ) if storage.exists(storage.join(out_dir, "shards")) else 0
    return manifest


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["corpus", "tokenize", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
