"""Video ingestion speed: seconds of video per CPU-second, and 1 vs 2 Ray workers, in one run.

    .venv/bin/python benchmarks/video_ingest.py [--videos 8] [--dir FOLDER_OF_VIDEOS]

Without --dir, score-following videos are generated from corpus pieces first
(unimusic.video.synthetic.standard_specs). CPU time counts this process and
its children (ffmpeg), so "x real time per core" is video seconds / CPU seconds.
Goals from the issue: >= 30x real time per core; 2 CPUs vs 1 printed as a ratio.
The machine is noisy and has 2 cores: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--dir", default=None, help="use these videos instead of generating them")
    parser.add_argument("--repeats", type=int, default=2, help="Ray runs per worker count; the best is kept")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from pipelines.build_corpus import init_ray
    from pipelines.ingest_videos import ingest_videos
    from unimusic.video.ingest import analyze_video, resolve_videos
    from unimusic.video.media import probe
    from unimusic.video.slides import segment_video

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir
        if folder is None:
            from unimusic.video.synthetic import make_video, standard_specs

            folder = os.path.join(tmp, "videos")
            os.makedirs(folder)
            t0 = time.perf_counter()
            for i, spec in enumerate(standard_specs(args.videos, seed=0)):
                make_video(spec, os.path.join(folder, f"video{i:03d}.{spec.container}"))
            print(f"generated {args.videos} videos in {time.perf_counter() - t0:.1f} s")
        videos = resolve_videos(folder)
        seconds = sum(probe(v).duration for v in videos)

        # Per core: one process, one video at a time.
        c0 = _cpu()
        for v in videos:
            segment_video(probe(v))
        seg_cpu = _cpu() - c0
        c0 = _cpu()
        slides = 0
        for v in videos:
            result = analyze_video(v)
            assert not result.errors, result.errors
            slides += len(result.rows)
        full_cpu = _cpu() - c0
        print(f"{len(videos)} videos, {seconds:.0f} s of video, {slides} slides")
        print(f"decode + slide segmentation: {seconds / seg_cpu:6.1f}x real time per core ({seg_cpu:.1f} CPU-s)")
        print(f"whole ingest of a video:     {seconds / full_cpu:6.1f}x real time per core ({full_cpu:.1f} CPU-s)"
              " (+ audio, staff systems, crops, PNG/FLAC); goal >= 30x")

        init_ray(num_cpus=2)
        runs: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for workers in (1, 2):  # interleaved, so drift in machine load hits both alike
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    manifest = ingest_videos(inputs=folder, out_dir=out, concurrency=workers)
                    runs[workers].append(time.perf_counter() - t0)
                    assert manifest["videos_failed"] == 0, manifest["errors"]
        best = {w: min(t) for w, t in runs.items()}
        for workers, wall in best.items():
            print(f"Ray, {workers} worker(s): {wall:6.1f} s wall, {seconds / wall:6.1f}x real time"
                  f"  (best of {', '.join(f'{t:.1f}' for t in runs[workers])})")
        print(f"2 CPUs vs 1: {best[1] / best[2]:.2f}x")


if __name__ == "__main__":
    main()
