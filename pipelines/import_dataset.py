"""Ray Data job: a public data set, as its authors distribute it -> corpus-schema Parquet shards.

    unimusic datasets import maestro /data/maestro-v3.0.0 --out corpora/maestro
    python -m pipelines.import_dataset maestro s3://bucket/maestro-v3.0.0/ --out s3://bucket/corpora/maestro/

The adapter's ``scan`` runs on the driver (index files only); examples are planned into
shards (names hash the examples and the config) and each shard is one Ray Data row
handled by an actor (:class:`ImportShardBuilder`), which writes the shard atomically and
then its sidecar. A rerun skips shards whose two files exist, so an interrupted import
resumes; the driver writes ``manifest.json`` (with the set's licence) and
``errors.parquet`` at the end. Nothing is downloaded: SRC is a copy the user has.
"""

from __future__ import annotations

import dataclasses
import time

from pipelines.build_corpus import actor_pool, forwarded_env, init_ray
from unimusic.datasets.base import ImportConfig


class ImportShardBuilder:
    """Ray Data callable class: one planned shard (JSON) in, its summary (JSON) out."""

    def __init__(self, *, name: str, out_dir: str, config: dict):
        from unimusic import datasets
        from unimusic.config import from_dict

        self.adapter = datasets.get(name)
        self.out_dir = out_dir
        self.config = from_dict(ImportConfig, config)

    def __call__(self, batch: dict) -> dict:
        import json

        from unimusic.datasets.importer import ImportShardSpec, build_import_shard, example_from_json

        out = {"result": []}
        for name, examples in zip(batch["name"], batch["examples"]):
            spec = ImportShardSpec(str(name), tuple(example_from_json(str(e)) for e in examples))
            result, modalities = build_import_shard(spec, self.out_dir, self.adapter, self.config)
            out["result"].append(json.dumps(dataclasses.asdict(result) | {"modalities": modalities}))
        return out


def import_dataset(
    *,
    name: str,
    source: str,
    out_dir: str,
    config: ImportConfig = ImportConfig(),
    limit: int | None = None,
    concurrency: int | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    resources: dict | None = None,
) -> dict:
    """Run the import; returns the manifest (also written to ``out_dir/manifest.json``).
    ``resources``: custom Ray resources per shard builder (e.g. preprocessing nodes')."""
    import ray

    from unimusic import datasets, storage
    from unimusic.datasets.importer import example_to_json, limit_examples, plan_import_shards, result_from_json, \
        write_import_manifest

    adapter = datasets.get(name)
    t0 = time.perf_counter()
    examples, scan_errors = adapter.scan(source)
    examples = limit_examples(examples, limit)
    storage.makedirs(out_dir)
    specs = plan_import_shards(examples, config, dataset=adapter.info.name)
    results = []
    if specs:
        init_ray(num_cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress)
        ds = ray.data.from_items(
            [{"name": s.name, "examples": [example_to_json(e) for e in s.examples]} for s in specs],
            override_num_blocks=len(specs),
        )
        ds = ds.map_batches(
            ImportShardBuilder,
            fn_constructor_kwargs={"name": adapter.info.name, "out_dir": out_dir, "config": dataclasses.asdict(config)},
            batch_size=1,
            compute=actor_pool(concurrency, len(specs), resources),
            num_cpus=1,
            **({"resources": dict(resources)} if resources else {}),
            **forwarded_env(),
        )
        results = [result_from_json(r["result"]) for r in ds.iter_rows()]
    manifest = write_import_manifest(out_dir, adapter=adapter, source=source, config=config, results=results,
                                     scan_errors=scan_errors, examples=examples)
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["shards_skipped"] = sum(r.skipped for r, _ in results)
    manifest["shards_written"] = len(results) - manifest["shards_skipped"]
    return manifest


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["datasets", "import", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
