"""One score-following video -> Parquet rows of (slide, staff systems, audio span), with quality flags.

Stages per video (each a module of its own): probe and decode frames
(:mod:`unimusic.video.media`), segment slides (:mod:`unimusic.video.slides`),
extract the audio and measure its level, detect staff systems on every slide
(:mod:`unimusic.vision.staves`, crops normalized by the one
:func:`unimusic.vision.normalize.normalize_crop`), then apply the quality
filters of the reference work's documented design:

* a video whose mean of per-system median pixel intensity is below
  ``min_video_intensity`` (200) is excluded (poor scans); the mean is over the
  systems that pass the size checks below, when there are any;
* a system must be ``min_system_height``..``max_system_height`` (70..390) px tall
  after normalization, and less tall than wide;
* a system whose height is an outlier within its video (``|z| > max_height_z``,
  1.2) is excluded; heights with zero spread have no outliers;
* a segment (the slide's audio span) must last ``min_segment_seconds`` ..
  ``max_segment_seconds`` (3..20 s);
* leading and trailing slides that are mostly silent (RMS below ``silence_dbfs``,
  -50 dBFS, for more than ``silent_slide_fraction`` of their time) are dropped:
  title cards, intros, outros;
* a slide with no staff system (a text-only card) is dropped.

Every slide becomes a row, kept or not: ``flags`` says which filters dropped it
and ``keep`` is true when none did (systems carry their own flags), so a user
can re-filter without decoding the video again. Drop counts go to the manifest.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import time

import numpy as np

from unimusic import __version__
from unimusic.errors import InputError
from unimusic.video.slides import SlideConfig, iter_video_slides
from unimusic.vision.normalize import CropConfig
from unimusic.vision.staves import DetectConfig

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")

# Slide flags, in the order filters run.
LEADING_SILENCE = "leading_silence"
TRAILING_SILENCE = "trailing_silence"
NO_SYSTEMS = "no_systems"
DARK_VIDEO = "dark_video"
SEGMENT_SHORT = "segment_short"
SEGMENT_LONG = "segment_long"
NO_KEPT_SYSTEMS = "no_kept_systems"
# System flags.
HEIGHT_RANGE = "height_range"
NOT_WIDE = "not_wider_than_tall"
HEIGHT_OUTLIER = "height_outlier"
SLIDE_FLAGS = (LEADING_SILENCE, TRAILING_SILENCE, NO_SYSTEMS, DARK_VIDEO, SEGMENT_SHORT, SEGMENT_LONG, NO_KEPT_SYSTEMS)
SYSTEM_FLAGS = (HEIGHT_RANGE, NOT_WIDE, HEIGHT_OUTLIER)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    min_video_intensity: float = 200.0
    min_system_height: int = 70
    max_system_height: int = 390
    max_height_z: float = 1.2
    min_segment_seconds: float = 3.0
    max_segment_seconds: float = 20.0
    silence_dbfs: float = -50.0
    silent_slide_fraction: float = 0.5

    def __post_init__(self):
        if not 0 <= self.min_system_height <= self.max_system_height:
            raise InputError("filter config", "need 0 <= min_system_height <= max_system_height")
        if not 0 <= self.min_segment_seconds <= self.max_segment_seconds:
            raise InputError("filter config", "need 0 <= min_segment_seconds <= max_segment_seconds")
        if not self.max_height_z > 0:
            raise InputError("filter config 'max_height_z'", "must be positive")
        if not 0 <= self.silent_slide_fraction <= 1:
            raise InputError("filter config 'silent_slide_fraction'", "must be 0..1")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    slides: SlideConfig = SlideConfig()
    detect: DetectConfig = DetectConfig()
    crop: CropConfig = CropConfig()
    filters: FilterConfig = FilterConfig()
    sample_rate: int = 44100
    audio_pad: float = 0.25  # seconds added before a slide's start and after the next transition's end
    rms_window: float = 0.05  # seconds per RMS frame of the silence measure
    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def __post_init__(self):
        if not 8000 <= self.sample_rate <= 192000:
            raise InputError("video config 'sample_rate'", f"must be 8000..192000, got {self.sample_rate!r}")
        if not self.audio_pad >= 0:
            raise InputError("video config 'audio_pad'", "must be >= 0")
        if not 0 < self.rms_window <= 1:
            raise InputError("video config 'rms_window'", "must be in (0, 1] s")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise InputError("video config val_fraction/test_fraction", "must add up to less than 1")

    def hash(self) -> str:
        from unimusic.tokens.codec import content_hash

        return content_hash({"config": dataclasses.asdict(self), "code": __version__})


def video_id_of(source: str) -> str:
    """The file name without extension (a YouTube id for downloaded collections), made path-safe."""
    stem = re.split(r"[\\/]", source.rstrip("/"))[-1]
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "video"


def _png(gray: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", gray)
    if not ok:
        raise InputError("image", "PNG encoding failed")
    return buf.tobytes()


def _silent_fraction(levels: np.ndarray, window: float, start: float, end: float, threshold: float) -> float:
    i0, i1 = int(math.floor(start / window)), int(math.ceil(end / window))
    part = levels[max(0, i0) : max(0, i1)]
    if part.size == 0:
        return 1.0
    return float(np.mean(part < threshold))


@dataclasses.dataclass
class VideoResult:
    """What one video gave: rows for the shard plus counts for the manifest."""

    source: str
    video_id: str
    rows: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)  # [{"path", "stage", "message"}]
    duration: float = 0.0
    seconds: float = 0.0  # wall time spent on it
    drops: dict = dataclasses.field(default_factory=dict)  # {"slides": {flag: n}, "systems": {flag: n}, "videos": {flag: n}}


def _localize(source: str, tmp_dir: str) -> str:
    """A local path for ``source``: itself, or a streamed copy of a remote object (never read whole into memory)."""
    from unimusic import storage

    if not storage.is_remote(source):
        return source
    fs, path = storage.filesystem(source)
    suffix = os.path.splitext(path)[1] or ".video"
    fd, local = tempfile.mkstemp(suffix=suffix, dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
            while chunk := src.read(8 << 20):
                out.write(chunk)
    except OSError as exc:
        raise InputError(source, f"could not read ({exc})") from None
    return local


def analyze_video(source: str, *, config: VideoConfig = VideoConfig(), metadata: dict | None = None) -> VideoResult:
    """Run every stage on one video. Problems with the file become ``errors`` (stage named), not exceptions."""
    t0 = time.perf_counter()
    result = VideoResult(source=source, video_id=video_id_of(source))
    stage = ["read"]  # the stage reached, named in an error
    with tempfile.TemporaryDirectory(prefix="unimusic-video-") as tmp:
        try:
            local = _localize(source, tmp)
            stage[0] = "probe"
            result.rows = _rows(source, local, result, config, metadata or {}, tmp, stage)
        except InputError as exc:
            result.rows = []
            result.errors.append({"path": source, "stage": stage[0], "message": exc.problem})
        except Exception as exc:  # a bug or a library failure on odd data: recorded, the run goes on
            result.rows = []
            result.errors.append({"path": source, "stage": stage[0],
                                  "message": f"internal error ({type(exc).__name__}: {exc})"})
    result.seconds = time.perf_counter() - t0
    return result


def _rows(source, local, result: VideoResult, config: VideoConfig, metadata: dict, tmp: str, stage: list) -> list[dict]:
    from unimusic.corpus import split_of
    from unimusic.render.synthesize import encode_flac
    from unimusic.video.media import extract_audio, probe
    from unimusic.vision.staves import crop_systems, detect_systems

    f = config.filters
    info = probe(local)
    info = dataclasses.replace(info, path=local)
    result.duration = info.duration
    stage[0] = "audio"
    if not info.has_audio:
        raise InputError(source, "the video has no audio track")
    track = extract_audio(info, sample_rate=config.sample_rate, tmp_dir=tmp)
    try:
        stage[0] = "slides"
        # Slides stream in; each is reduced at once to its PNG and its systems' crops
        # (PNG + the numbers the filters need), so frames never pile up.
        report: list = []
        slides: list[dict] = []
        for slide in iter_video_slides(info, config=config.slides, report=report):
            found = detect_systems(slide.image, config=config.detect, source=f"{source} slide {slide.index}")
            crops = crop_systems(slide.image, found, crop=config.crop) if found else []
            slides.append({
                "index": slide.index, "start": slide.start, "end": slide.end, "next_start": slide.next_start,
                "png": _png(slide.image), "width": int(slide.image.shape[1]), "height": int(slide.image.shape[0]),
                "systems": [
                    {"png": _png(crop), "box": [int(v) for v in det.box], "staff_height": float(det.staff_height),
                     "staves": len(det.staves), "height": int(crop.shape[0]), "width": int(crop.shape[1]),
                     "median_intensity": float(np.median(crop)), "flags": []}
                    for det, crop in zip(found, crops)
                ],
            })
        decoded = report[0].seconds if report else 0.0
        # A file cut short still decodes its first part: compare with what the container promised.
        if decoded < info.duration - max(1.0, 0.05 * info.duration):
            raise InputError(source, f"truncated or damaged: frames stop at {decoded:.1f} s of {info.duration:.1f} s")
        if track.duration < info.duration - max(1.0, 0.05 * info.duration):
            raise InputError(source, f"truncated or damaged: audio stops at {track.duration:.1f} s of {info.duration:.1f} s")
        if not slides:
            raise InputError(source, "no static slide found (the picture never holds still)")

        stage[0] = "silence"
        levels = track.rms_dbfs(window=config.rms_window)
        silent = [_silent_fraction(levels, config.rms_window, s["start"], s["end"], f.silence_dbfs) for s in slides]
        flags: list[list[str]] = [[] for _ in slides]
        mostly_silent = [x > f.silent_slide_fraction for x in silent]
        for i in range(len(slides)):  # leading run
            if not mostly_silent[i]:
                break
            flags[i].append(LEADING_SILENCE)
        for i in reversed(range(len(slides))):  # trailing run
            if not mostly_silent[i] or LEADING_SILENCE in flags[i]:
                break
            flags[i].append(TRAILING_SILENCE)

        stage[0] = "filters"
        for slide, fl in zip(slides, flags):
            if not slide["systems"]:
                fl.append(NO_SYSTEMS)
        for s in slides:
            for sy in s["systems"]:
                if not f.min_system_height <= sy["height"] <= f.max_system_height:
                    sy["flags"].append(HEIGHT_RANGE)
                if sy["height"] >= sy["width"]:
                    sy["flags"].append(NOT_WIDE)
        # Video-level intensity: the mean over systems of each crop's median pixel, over
        # the systems of plausible size (a stray detection on a title card is no scan).
        sized = [sy for s in slides for sy in s["systems"] if not sy["flags"]] or [sy for s in slides for sy in s["systems"]]
        medians = [sy["median_intensity"] for sy in sized]
        video_intensity = float(np.mean(medians)) if medians else float("nan")
        dark = bool(medians) and video_intensity < f.min_video_intensity
        # Height outliers among this video's systems that passed the size checks,
        # on slides no earlier filter dropped.
        pool = [sy for s, fl in zip(slides, flags) if not fl for sy in s["systems"] if not sy["flags"]]
        heights = np.array([sy["height"] for sy in pool], dtype=np.float64)
        if heights.size >= 2 and heights.std() > 0:
            z = (heights - heights.mean()) / heights.std()
            for sy, zk in zip(pool, z):
                if abs(zk) > f.max_height_z:
                    sy["flags"].append(HEIGHT_OUTLIER)

        rows = []
        stage[0] = "rows"
        split = split_of(result.video_id, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
        for slide, fl, sil in zip(slides, flags, silent):
            if dark:
                fl.append(DARK_VIDEO)
            a0 = max(0.0, slide["start"] - config.audio_pad)
            a1 = min(info.duration, slide["next_start"] + config.audio_pad)
            if a1 - a0 < f.min_segment_seconds:
                fl.append(SEGMENT_SHORT)
            elif a1 - a0 > f.max_segment_seconds:
                fl.append(SEGMENT_LONG)
            if slide["systems"] and all(sy["flags"] for sy in slide["systems"]):
                fl.append(NO_KEPT_SYSTEMS)
            audio = track.read(a0, a1)
            rows.append({
                "video_id": result.video_id,
                "source": source,
                "split": split,
                "title": metadata.get("title"),
                "composer": metadata.get("composer"),
                "instrumentation": metadata.get("instrumentation"),
                "slide_index": slide["index"],
                "start": round(slide["start"], 4),
                "end": round(slide["end"], 4),
                "next_start": round(slide["next_start"], 4),
                "audio_start": round(a0, 4),
                "audio_end": round(a1, 4),
                "sample_rate": config.sample_rate,
                "audio_flac": encode_flac(audio, config.sample_rate) if audio.size else None,
                "silent_fraction": round(sil, 4),
                "slide_png": slide["png"],
                "slide_width": slide["width"],
                "slide_height": slide["height"],
                "systems": [{**sy, "keep": not sy["flags"]} for sy in slide["systems"]],
                "video_intensity": None if math.isnan(video_intensity) else round(video_intensity, 3),
                "flags": list(fl),
                "keep": not fl,
            })
        result.drops = {
            "videos": {DARK_VIDEO: int(dark)},
            "slides": {name: sum(name in fl for fl in flags) for name in SLIDE_FLAGS},
            "systems": {name: sum(name in sy["flags"] for s in slides for sy in s["systems"]) for name in SYSTEM_FLAGS},
        }
        return rows
    finally:
        track.close()


def row_schema():
    import pyarrow as pa

    system = pa.struct([
        ("png", pa.binary()),
        ("box", pa.list_(pa.int32())),
        ("staff_height", pa.float32()),
        ("staves", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("median_intensity", pa.float32()),
        ("flags", pa.list_(pa.string())),
        ("keep", pa.bool_()),
    ])
    return pa.schema([
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("title", pa.string()),
        ("composer", pa.string()),
        ("instrumentation", pa.string()),
        ("slide_index", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("next_start", pa.float64()),
        ("audio_start", pa.float64()),
        ("audio_end", pa.float64()),
        ("sample_rate", pa.int32()),
        ("audio_flac", pa.binary()),
        ("silent_fraction", pa.float32()),
        ("slide_png", pa.binary()),
        ("slide_width", pa.int32()),
        ("slide_height", pa.int32()),
        ("systems", pa.list_(system)),
        ("video_intensity", pa.float32()),
        ("flags", pa.list_(pa.string())),
        ("keep", pa.bool_()),
    ])


# -- inputs, shards, manifest ---------------------------------------------------------


def resolve_videos(spec: str, *, limit: int | None = None) -> list[str]:
    """Video paths for a file, a folder, a glob or an s3:// prefix/glob (by extension)."""
    from pathlib import Path

    from unimusic import storage

    if storage.is_remote(spec) or any(ch in spec for ch in "*?["):
        paths = storage.list_files(spec, suffixes=VIDEO_SUFFIXES)
    else:
        p = Path(spec)
        if p.is_file():
            paths = [str(p)]
        elif p.is_dir():
            paths = storage.list_files(str(p), suffixes=VIDEO_SUFFIXES)
        else:
            raise InputError(spec, "no such file or folder (and not a glob or an s3:// prefix)")
    paths = sorted(paths)[:limit] if limit is not None else sorted(paths)
    if not paths:
        raise InputError(spec, f"no video files found (looked for {', '.join(VIDEO_SUFFIXES)})")
    return paths


METADATA_COLUMNS = ("title", "composer", "instrumentation")


def read_metadata(path: str) -> dict[str, dict]:
    """A metadata CSV -> {video id: {title, composer, instrumentation}}; the id column is
    ``id`` (or ``video_id`` / ``youtube_id``) and matches the video file name without extension."""
    import csv
    import io

    from unimusic import storage

    text = storage.read_bytes(path).decode("utf-8-sig", "replace")
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    key = next((k for k in ("id", "video_id", "youtube_id") if k in fields), None)
    if key is None:
        raise InputError(path, f"metadata CSV needs an 'id' column (has: {', '.join(fields) or 'no header'})")
    out = {}
    for row in reader:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        vid = row.get(key)
        if vid:
            out[vid] = {c: row.get(c) or None for c in METADATA_COLUMNS}
    return out


def shard_name(source: str, config: VideoConfig) -> str:
    import hashlib

    digest = hashlib.sha256(f"{config.hash()}\n{source}".encode()).hexdigest()[:12]
    return f"{video_id_of(source)[:48]}-{digest}"


@dataclasses.dataclass
class VideoShardResult:
    shard: str
    source: str
    video_id: str = ""
    split: str = ""
    rows: int = 0
    slides_kept: int = 0
    systems: int = 0
    systems_kept: int = 0
    bytes: int = 0
    sha256: str = ""
    duration: float = 0.0
    seconds: float = 0.0
    drops: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)
    skipped: bool = False


def ingest_video(source: str, out_dir: str, *, config: VideoConfig = VideoConfig(), metadata: dict | None = None) -> VideoShardResult:
    """Analyze one video and write its shard (Parquet, then a sidecar JSON) atomically.

    A shard whose two files exist is skipped (resume). A failed video writes
    nothing, so a rerun tries it again; its error is in the result.
    """
    import hashlib
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from unimusic import storage

    name = shard_name(source, config)
    parquet_path = storage.join(out_dir, "shards", name + ".parquet")
    sidecar_path = storage.join(out_dir, "shards", name + ".json")
    if storage.exists(parquet_path) and storage.exists(sidecar_path):
        done = VideoShardResult(**json.loads(storage.read_bytes(sidecar_path)))
        done.skipped = True
        return done
    analysis = analyze_video(source, config=config, metadata=metadata)
    result = VideoShardResult(shard=name, source=source, video_id=analysis.video_id, duration=analysis.duration,
                              seconds=round(analysis.seconds, 3), drops=analysis.drops, errors=analysis.errors)
    if analysis.errors:
        return result
    rows = analysis.rows
    table = pa.Table.from_pylist(rows, schema=row_schema())
    meta = {b"unimusic": json.dumps({"config_hash": config.hash(), "code_version": __version__}).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    payload = buffer.getvalue()
    storage.makedirs(storage.join(out_dir, "shards"))
    storage.write_bytes(parquet_path, payload)
    result.split = rows[0]["split"] if rows else ""
    result.rows = len(rows)
    result.slides_kept = sum(r["keep"] for r in rows)
    result.systems = sum(len(r["systems"]) for r in rows)
    result.systems_kept = sum(s["keep"] for r in rows if r["keep"] for s in r["systems"])
    result.bytes = len(payload)
    result.sha256 = hashlib.sha256(payload).hexdigest()
    # The sidecar is written last: a shard counts as done only once both exist.
    storage.write_bytes(sidecar_path, json.dumps(dataclasses.asdict(result), indent=1).encode())
    return result


def write_manifest(out_dir: str, results, config: VideoConfig, *, inputs: str) -> dict:
    import json

    from unimusic import storage
    from unimusic.corpus import errors_table

    results = sorted(results, key=lambda r: r.source)
    ok = [r for r in results if not r.errors]
    errors = [e for r in results for e in r.errors]

    def total(kind: str, names) -> dict:
        return {n: sum(r.drops.get(kind, {}).get(n, 0) for r in ok) for n in names}

    manifest = {
        "inputs": inputs,
        "code_version": __version__,
        "config_hash": config.hash(),
        "config": dataclasses.asdict(config),
        "videos": len(results),
        "videos_ok": len(ok),
        "videos_failed": len(results) - len(ok),
        "video_seconds": round(sum(r.duration for r in ok), 3),
        "slides": sum(r.rows for r in ok),
        "slides_kept": sum(r.slides_kept for r in ok),
        "systems": sum(r.systems for r in ok),
        "systems_kept": sum(r.systems_kept for r in ok),
        # How many videos / slides / systems each filter dropped (one item can be dropped by several).
        "dropped": {"videos": total("videos", (DARK_VIDEO,)), "slides": total("slides", SLIDE_FLAGS),
                    "systems": total("systems", SYSTEM_FLAGS)},
        "rows_per_split": {s: sum(r.rows for r in ok if r.split == s) for s in ("train", "val", "test")},
        "shards": [
            {"name": r.shard + ".parquet", "source": r.source, "video_id": r.video_id, "rows": r.rows,
             "slides_kept": r.slides_kept, "bytes": r.bytes, "sha256": r.sha256, "split": r.split}
            for r in ok
        ],
        "failures": len(errors),
        "errors": errors,
    }
    storage.write_bytes(storage.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1).encode())
    storage.write_bytes(storage.join(out_dir, "errors.parquet"), errors_table(errors))
    return manifest
