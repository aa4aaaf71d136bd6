"""Ray Data job: scores -> engraved, synthesized, aligned per-system Parquet shards.

    python -m pipelines.build_corpus music21 --out corpus/ --limit 50
    unimusic corpus build s3://bucket/scores/ --out s3://bucket/corpus/

Inputs are planned into shards (a fixed number of pieces each, named by a hash of
the inputs and the config); each shard is one Ray Data row handled by an actor
(`ShardBuilder`, set-up cost paid once per actor), which writes the shard
atomically and then its sidecar JSON. A rerun skips shards whose files exist,
so it never duplicates rows; a killed actor is restarted by Ray Data and its
shard rebuilt from scratch (the partial file never became visible). The driver
writes ``manifest.json`` from every shard's sidecar at the end.
"""

from __future__ import annotations

import dataclasses
import os
import time

from unimusic.corpus import CorpusConfig, ShardResult, ShardSpec, build_shard, plan_shards, resolve_inputs, write_manifest


class ShardBuilder:
    """Ray Data callable class: one shard spec in, one shard summary out."""

    def __init__(self, *, out_dir: str, config: dict):
        from unimusic.config import from_dict

        self.out_dir = out_dir
        self.config = from_dict(CorpusConfig, config)

    def __call__(self, batch: dict) -> dict:
        import json

        out = {"result": []}
        for name, sources in zip(batch["name"], batch["sources"]):
            spec = ShardSpec(str(name), tuple(str(s) for s in sources))
            result = build_shard(spec, self.out_dir, self.config)
            out["result"].append(json.dumps(dataclasses.asdict(result)))
        return out


# Storage settings of the driver reach the workers, whenever Ray was started.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


def forwarded_env() -> dict:
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {"runtime_env": {"env_vars": env}} if env else {}


def input_bytes(sources) -> int:
    total = 0
    for source in sources:
        try:
            total += os.path.getsize(source) if "://" not in source else 0
        except OSError:
            pass
    return total


def actor_pool(concurrency: int | None, items: int, resources: dict | None = None):
    """The actor pool for ``items`` one-CPU tasks: one actor per CPU by default. With custom
    ``resources`` (a node type's, e.g. ``{"preprocess": 1}``) the pool grows from one actor up
    to what those resources allow now, or to ``concurrency`` on an autoscaling cluster whose
    nodes of that type are not up yet."""
    import ray

    total = ray.cluster_resources()
    size = max(1, min(concurrency or int(total.get("CPU", 1)), items))
    if not resources:
        return ray.data.ActorPoolStrategy(size=size)
    if concurrency:  # the user's ceiling: the autoscaler adds nodes of that type as the pool grows
        return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(concurrency, items)))
    fits = min(int(total.get(name, 0) // amount) for name, amount in resources.items())
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(size, fits)))


def init_ray(num_cpus: int | None = None, *, log_to_driver: bool = False) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Every process of the job (Train controllers included) gets the driver's storage settings.
    job_env = forwarded_env().get("runtime_env")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=log_to_driver, runtime_env=job_env)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, configure_logging=False,
                 runtime_env=job_env)


def build_corpus(
    *,
    inputs: str,
    out_dir: str,
    config: CorpusConfig = CorpusConfig(),
    limit: int | None = None,
    collections: tuple[str, ...] = (),
    concurrency: int | None = None,
    num_cpus: int | None = None,
    resources: dict | None = None,
) -> dict:
    """Run the job; returns the manifest (also written to ``out_dir/manifest.json``).
    ``resources``: custom Ray resources each shard builder needs (e.g. ``{"preprocess": 1}``
    to keep it on preprocessing nodes)."""
    import json

    import ray

    from unimusic import storage

    sources = resolve_inputs(inputs, limit=limit, collections=collections)
    shards = plan_shards(sources, config)
    init_ray(num_cpus)
    storage.makedirs(out_dir)
    t0 = time.perf_counter()
    # Biggest shards first: the last shard to finish is then a small one, so
    # workers are not left idle behind one long piece (names stay deterministic).
    ordered = sorted(shards, key=lambda s: -input_bytes(s.sources))
    ds = ray.data.from_items(
        [{"name": s.name, "sources": list(s.sources)} for s in ordered], override_num_blocks=len(shards)
    )
    ds = ds.map_batches(
        ShardBuilder,
        fn_constructor_kwargs={"out_dir": out_dir, "config": dataclasses.asdict(config)},
        batch_size=1,
        compute=actor_pool(concurrency, len(shards), resources),
        num_cpus=1,
        **({"resources": dict(resources)} if resources else {}),
        **forwarded_env(),
    )
    results = [ShardResult(**json.loads(r["result"])) for r in ds.iter_rows()]
    manifest = write_manifest(out_dir, results, config, inputs=inputs)
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["shards_skipped"] = sum(r.skipped for r in results)
    manifest["shards_written"] = len(results) - manifest["shards_skipped"]
    return manifest


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["corpus", "build", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
