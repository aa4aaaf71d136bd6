"""Score-video ingestion end to end on videos generated from corpus pieces (unimusic.video.synthetic).

Default tier: a handful of varied videos through the Ray Data job (local and
s3://), resume, broken files, filters, bounded memory. Slow tier: the quality
gates of the issue on 20+ videos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.video_checks import VideoScore, score_video
from unimusic.errors import InputError


def _pick(specs, count):
    """A varied subset: every transition kind, a title card, an outro, a text page, webm, the dark video."""
    chosen = []

    def take(pred):
        for s in specs:
            if pred(s) and s not in chosen:
                chosen.append(s)
                return

    take(lambda s: s.title_seconds > 0 and s.transition == "crossfade")
    take(lambda s: s.outro_seconds > 0 and s.container == "webm")
    take(lambda s: s.text_page_seconds > 0)
    take(lambda s: s.transition == "scroll")
    take(lambda s: s.dark)
    take(lambda s: s.transition == "cut")
    for s in specs:
        if len(chosen) >= count:
            break
        if s not in chosen:
            chosen.append(s)
    return chosen[:count]


def _make_videos(root, specs):
    from unimusic.video.synthetic import make_video

    os.makedirs(root, exist_ok=True)
    truths = {}
    for i, spec in enumerate(specs):
        path = os.path.join(root, f"video{i:03d}.{spec.container}")
        truths[path] = make_video(spec, path)
    return truths


@pytest.fixture(scope="session")
def small_video_set(tmp_path_factory):
    from unimusic.video.synthetic import standard_specs

    root = str(tmp_path_factory.mktemp("videos"))
    truths = _make_videos(os.path.join(root, "good"), _pick(standard_specs(20, seed=0), 6))
    return root, truths


def _rows_by_video(out_dir):
    import pyarrow.parquet as pq

    rows = {}
    for name in sorted(os.listdir(os.path.join(out_dir, "shards"))):
        if name.endswith(".parquet"):
            for row in pq.read_table(os.path.join(out_dir, "shards", name)).to_pylist():
                rows.setdefault(row["source"], []).append(row)
    return rows


def _gates(truths, rows) -> VideoScore:
    total = VideoScore()
    for path, truth in truths.items():
        total.add(score_video(rows.get(path, []), truth))
    return total


def _report(total: VideoScore) -> str:
    ious = np.array(total.ious) if total.ious else np.zeros(1)
    errs = np.array(total.turn_errors) if total.turn_errors else np.zeros(1)
    return (f"turns {total.turns_ok}/{total.turns} within 0.2 s (edge error median {np.median(errs):.3f} s, "
            f"max {errs.max():.3f} s); systems IoU>=0.9 {total.systems_ok}/{total.systems} "
            f"(IoU p5 {np.percentile(ious, 5):.3f}, median {np.median(ious):.3f}); "
            f"exact system count {total.pages_exact}/{total.music_slides}; "
            f"non-music slides kept: {total.surviving_non_music}")


@pytest.fixture(scope="session")
def ingested(small_video_set, ray_session, tmp_path_factory):
    from pipelines.ingest_videos import ingest_videos

    root, truths = small_video_set
    out = str(tmp_path_factory.mktemp("video-corpus"))
    manifest = ingest_videos(inputs=os.path.join(root, "good"), out_dir=out)
    return out, manifest, truths


def test_ingest_writes_one_shard_per_video_with_manifest(ingested):
    out, manifest, truths = ingested
    assert manifest["videos"] == len(truths) and manifest["videos_failed"] == 0, manifest["errors"]
    on_disk = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert on_disk["slides"] == manifest["slides"] > 0
    rows = _rows_by_video(out)
    assert set(rows) == set(truths)
    assert sum(len(r) for r in rows.values()) == manifest["slides"]
    assert sum(r["keep"] for rs in rows.values() for r in rs) == manifest["slides_kept"] > 0
    # Every filter has a count, and the counts agree with the rows' flags.
    for name, n in manifest["dropped"]["slides"].items():
        assert n == sum(name in r["flags"] for rs in rows.values() for r in rs), name
    for name, n in manifest["dropped"]["systems"].items():
        assert n == sum(name in s["flags"] for rs in rows.values() for r in rs for s in r["systems"]), name
    # One split per video.
    for rs in rows.values():
        assert len({r["split"] for r in rs}) == 1


def test_slides_boundaries_and_systems_match_the_truth(ingested):
    out, _, truths = ingested
    rows = _rows_by_video(out)
    clean = {p: t for p, t in truths.items() if not any(s["kind"] == "dark" for s in t["slides"])}
    total = _gates(clean, rows)
    print("\nvideo gates (default tier): " + _report(total))
    assert total.turns > 0 and total.turns_ok >= 0.98 * total.turns
    assert not total.surviving_non_music
    assert total.systems_ok >= 0.95 * total.systems
    assert total.pages_exact >= 0.95 * total.music_slides


def test_title_text_outro_and_dark_slides_are_dropped_with_their_reasons(ingested):
    out, manifest, truths = ingested
    rows = _rows_by_video(out)
    from tests.video_checks import truth_slide_at

    seen = set()
    for path, truth in truths.items():
        for row in rows[path]:
            slide = truth_slide_at(truth, (row["start"] + row["end"]) / 2)
            kind = slide["kind"] if slide else None
            if kind == "title":
                assert "leading_silence" in row["flags"] and not row["keep"]
            elif kind == "outro":
                assert "trailing_silence" in row["flags"] and not row["keep"]
            elif kind == "text":
                assert "no_systems" in row["flags"] and not row["keep"], (path, row["flags"])
            elif kind == "dark":
                assert "dark_video" in row["flags"] and not row["keep"]
                assert row["video_intensity"] < 200
            seen.add(kind)
    assert {"title", "outro", "text", "dark", "music"} <= seen
    assert manifest["dropped"]["videos"]["dark_video"] == 1


def test_rows_carry_audio_spans_and_normalized_crops(ingested):
    import cv2

    from unimusic.render.synthesize import decode_audio

    out, _, truths = ingested
    rows = _rows_by_video(out)
    path = next(p for p, t in truths.items() if not any(s["kind"] == "dark" for s in t["slides"]))
    kept = [r for r in rows[path] if r["keep"]]
    assert kept
    for row in kept:
        audio, sr = decode_audio(row["audio_flac"])
        assert sr == row["sample_rate"] == 44100
        assert abs(len(audio) / sr - (row["audio_end"] - row["audio_start"])) < 0.01
        assert row["audio_start"] <= row["start"] and row["audio_end"] >= row["next_start"] - 1e-6
        assert 3.0 <= row["audio_end"] - row["audio_start"] <= 20.0
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 10 ** (-50 / 20)  # music, not silence
        slide = cv2.imdecode(np.frombuffer(row["slide_png"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert slide.shape == (row["slide_height"], row["slide_width"])
        for system in row["systems"]:
            crop = cv2.imdecode(np.frombuffer(system["png"], np.uint8), cv2.IMREAD_UNCHANGED)
            assert crop.ndim == 2 and crop.shape == (system["height"], system["width"])
            assert crop.shape[0] % 16 == 0 and crop.shape[1] % 16 == 0
            if system["keep"]:
                assert 70 <= crop.shape[0] <= 390 and crop.shape[0] < crop.shape[1]


def test_rerun_skips_finished_videos_and_redoes_a_missing_one(ingested, ray_session):
    from pipelines.ingest_videos import ingest_videos

    out, manifest, truths = ingested
    root = os.path.dirname(next(iter(truths)))
    again = ingest_videos(inputs=root, out_dir=out)
    assert again["shards_skipped"] == len(truths) and again["shards_written"] == 0
    assert again["slides"] == manifest["slides"]
    victim = sorted(n for n in os.listdir(os.path.join(out, "shards")) if n.endswith(".parquet"))[0]
    os.unlink(os.path.join(out, "shards", victim))
    third = ingest_videos(inputs=root, out_dir=out)
    assert third["shards_written"] == 1 and third["shards_skipped"] == len(truths) - 1
    assert third["slides"] == manifest["slides"]  # nothing lost, nothing duplicated


def test_broken_files_are_recorded_and_the_run_completes(small_video_set, ray_session, tmp_path):
    from pipelines.ingest_videos import ingest_videos
    from unimusic.video.synthetic import make_broken_files

    root, truths = small_video_set
    good = next(p for p in truths if p.endswith(".mp4"))
    broken_dir = tmp_path / "mixed"
    broken = make_broken_files(str(broken_dir), from_video=good)
    assert set(broken.values()) >= {"corrupt", "truncated", "no_audio", "not_video", "empty"}
    shutil.copy(good, broken_dir / "good.mp4")
    manifest = ingest_videos(inputs=str(broken_dir), out_dir=str(tmp_path / "out"))
    failed = {e["path"]: e for e in manifest["errors"]}
    assert set(failed) == set(broken), failed
    assert manifest["videos_ok"] == 1 and manifest["slides_kept"] > 0
    for path, kind in broken.items():
        message = failed[path]["message"]
        if kind == "no_audio":
            assert "no audio" in message
        elif kind == "empty":
            assert "empty" in message
        elif kind == "truncated":
            assert "truncated" in message or "readable" in message
        else:
            assert "not a readable video" in message or "not a video" in message
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out" / "errors.parquet").num_rows == len(broken)


def test_s3_input_and_output(small_video_set, s3_server, ray_session, tmp_path):
    import boto3
    import pyarrow.parquet as pq

    from pipelines.ingest_videos import ingest_videos
    from unimusic import storage

    root, truths = small_video_set
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="videos-in")
    client.create_bucket(Bucket="videos-out")
    path = next(p for p, t in truths.items() if p.endswith(".webm"))
    with open(path, "rb") as f:
        client.put_object(Bucket="videos-in", Key="yt/abc123.webm", Body=f.read())
    csv_text = "id,title,composer,instrumentation\nabc123,Chorale,J. S. Bach,piano\n"
    client.put_object(Bucket="videos-in", Key="meta.csv", Body=csv_text.encode())
    manifest = ingest_videos(inputs="s3://videos-in/yt/", out_dir="s3://videos-out/run1",
                             metadata_csv="s3://videos-in/meta.csv")
    assert manifest["videos_ok"] == 1, manifest["errors"]
    shard = manifest["shards"][0]["name"]
    local = tmp_path / "shard.parquet"
    local.write_bytes(storage.read_bytes(f"s3://videos-out/run1/shards/{shard}"))
    rows = pq.read_table(local).to_pylist()
    assert rows and all(r["video_id"] == "abc123" and r["composer"] == "J. S. Bach" for r in rows)
    assert storage.exists("s3://videos-out/run1/manifest.json")


def test_segmentation_memory_does_not_grow_with_the_video(small_video_set, tmp_path):
    """A video 8x as long needs no more memory: frames stream through, never the whole video."""
    import tracemalloc

    from unimusic.video.media import probe
    from unimusic.video.slides import iter_video_slides

    root, truths = small_video_set
    src = next(p for p in truths if p.endswith(".mp4"))
    long = tmp_path / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "7", "-i", src, "-c", "copy", str(long)], check=True)
    peaks, counts = [], []
    for path in (src, str(long)):
        info = probe(path)
        tracemalloc.start()
        counts.append(sum(1 for _ in iter_video_slides(info)))  # each slide dropped once seen
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    short_info, long_info = probe(src), probe(str(long))
    assert long_info.duration > 7 * short_info.duration and counts[1] >= 7 * counts[0] > 0
    decoded_bytes = long_info.duration * 5 * long_info.width * long_info.height  # the full frames it saw
    assert peaks[1] < 1.3 * peaks[0] + 4e6, peaks
    assert peaks[1] < decoded_bytes / 20, (peaks, decoded_bytes)


def test_cli_videos_ingest(small_video_set, tmp_path):
    root, truths = small_video_set
    path = next(iter(truths))
    out = tmp_path / "cli"
    proc = subprocess.run(
        [os.path.join(os.path.dirname(os.sys.executable), "unimusic"), "videos", "ingest", path, "--out", str(out),
         "--num-cpus", "1", "filters.max_height_z=2.5"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dropped by filter" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["filters"]["max_height_z"] == 2.5
    bad = subprocess.run(
        [os.path.join(os.path.dirname(os.sys.executable), "unimusic"), "videos", "ingest", str(tmp_path / "nope"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "no such file or folder" in bad.stderr and "Traceback" not in bad.stderr


def test_probe_and_audio_errors_name_the_file(tmp_path):
    from unimusic.video.media import probe

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    with pytest.raises(InputError, match="notes.mp4"):
        probe(str(text))
    with pytest.raises(InputError, match="file not found"):
        probe(str(tmp_path / "missing.mp4"))


@pytest.mark.slow
def test_quality_gates_on_twenty_videos(ray_session, tmp_path_factory):
    from pipelines.ingest_videos import ingest_videos
    from unimusic.video.synthetic import standard_specs

    root = str(tmp_path_factory.mktemp("videos20"))
    specs = standard_specs(24, seed=1)
    truths = _make_videos(root, specs)
    out = str(tmp_path_factory.mktemp("video-corpus20"))
    manifest = ingest_videos(inputs=root, out_dir=out)
    assert manifest["videos_failed"] == 0, manifest["errors"]
    rows = _rows_by_video(out)
    clean = {p: t for p, t in truths.items() if not any(s["kind"] == "dark" for s in t["slides"])}
    total = _gates(clean, rows)
    print(f"\nvideo gates ({len(truths)} videos, {manifest['video_seconds']:.0f} s): " + _report(total))
    print("dropped: " + json.dumps(manifest["dropped"]))
    assert len(clean) >= 20
    assert total.turns_ok >= 0.98 * total.turns
    assert not total.surviving_non_music
    assert total.systems_ok >= 0.95 * total.systems
    assert total.pages_exact >= 0.95 * total.music_slides
