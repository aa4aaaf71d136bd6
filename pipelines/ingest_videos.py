"""Ray Data job: score-following videos -> per-video Parquet shards of slides, systems and audio spans.

    python -m pipelines.ingest_videos videos/ --out video-corpus/ --metadata videos.csv
    unimusic videos ingest s3://bucket/videos/ --out s3://bucket/video-corpus/

Each video is one Ray Data row handled by an actor (`VideoIngester`); it writes
its shard atomically (Parquet, then the sidecar JSON), so a rerun skips finished
videos and a killed actor's video is simply done again. Videos that cannot be
used (corrupt, truncated, no audio, not a video, no slide) are recorded in the
manifest and ``errors.parquet``; the run completes. Splits are by video id.
"""

from __future__ import annotations

import dataclasses
import time

from pipelines.build_corpus import input_bytes, forwarded_env, init_ray
from unimusic.video.ingest import VideoConfig, VideoShardResult, ingest_video, read_metadata, resolve_videos, video_id_of, write_manifest


class VideoIngester:
    """Ray Data callable class: one video path in, one shard summary (JSON) out."""

    def __init__(self, *, out_dir: str, config: dict, metadata: dict):
        from unimusic.config import from_dict

        self.out_dir = out_dir
        self.config = from_dict(VideoConfig, config)
        self.metadata = metadata

    def __call__(self, batch: dict) -> dict:
        import json

        out = {"result": []}
        for source in batch["source"]:
            source = str(source)
            result = ingest_video(source, self.out_dir, config=self.config, metadata=self.metadata.get(video_id_of(source)))
            out["result"].append(json.dumps(dataclasses.asdict(result)))
        return out


def ingest_videos(
    *,
    inputs: str,
    out_dir: str,
    config: VideoConfig = VideoConfig(),
    metadata_csv: str | None = None,
    limit: int | None = None,
    concurrency: int | None = None,
    num_cpus: int | None = None,
) -> dict:
    """Run the job; returns the manifest (also written to ``out_dir/manifest.json``)."""
    import json

    import ray

    from unimusic import storage

    sources = resolve_videos(inputs, limit=limit)
    metadata = read_metadata(metadata_csv) if metadata_csv else {}
    init_ray(num_cpus)
    storage.makedirs(out_dir)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = max(1, min(concurrency or cpus, len(sources)))
    t0 = time.perf_counter()
    ordered = sorted(sources, key=lambda s: -input_bytes([s]))  # longest first: no straggler at the end
    ds = ray.data.from_items([{"source": s} for s in ordered], override_num_blocks=len(ordered))
    ds = ds.map_batches(
        VideoIngester,
        fn_constructor_kwargs={"out_dir": out_dir, "config": dataclasses.asdict(config), "metadata": metadata},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        **forwarded_env(),
    )
    results = [VideoShardResult(**json.loads(r["result"])) for r in ds.iter_rows()]
    manifest = write_manifest(out_dir, results, config, inputs=inputs)
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["shards_skipped"] = sum(r.skipped for r in results)
    manifest["shards_written"] = sum(1 for r in results if not r.skipped and not r.errors)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["videos", "ingest", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
