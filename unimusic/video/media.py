"""Reading videos with ffmpeg, as streams: probe, sampled gray frames, mono audio.

Nothing here holds a whole video in memory: frames come one at a time through a
pipe from an ``ffmpeg`` process (decoding all frames, emitting ``fps`` of them per
second, gray), and the audio track is written by ffmpeg to a temporary FLAC file
that is read back span by span. Every failure is an :class:`InputError` naming
the file and what was wrong with it (not a video, no audio track, truncated...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import tempfile
from typing import Iterator

import numpy as np

from unimusic.errors import InputError

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
# ffprobe presents a still image as a one-frame video stream of these codecs.
IMAGE_CODECS = ("png", "mjpeg", "bmp", "gif", "webp", "tiff", "jpeg2000", "pgm", "ppm", "pbm")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    duration: float  # seconds, container (or stream) duration
    has_audio: bool
    video_codec: str
    audio_codec: str | None = None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _rate(text: str | None) -> float:
    try:
        num, _, den = (text or "0/0").partition("/")
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def probe(path: str) -> VideoInfo:
    """Stream facts from ffprobe; an unreadable file or one without a video stream is an InputError."""
    if not os.path.exists(path):
        raise InputError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise InputError(path, "empty file (0 bytes)")
    cmd = [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InputError(path, f"not a readable video (ffprobe: {_last_line(proc.stderr)})")
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        raise InputError(path, "not a readable video (ffprobe printed no stream list)") from None
    streams = info.get("streams", [])
    # Cover art in audio files is a one-frame "video" stream; it is not a video.
    video = [s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video:
        raise InputError(path, "not a video: no video stream (ffprobe found: %s)" % (", ".join(s.get("codec_type", "?") for s in streams) or "nothing"))
    v = video[0]
    if v.get("codec_name") in IMAGE_CODECS and not audio:
        raise InputError(path, f"not a video: a single {v.get('codec_name')} image")
    fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
    if not 0 < fps <= 1000:
        raise InputError(path, f"video stream has no usable frame rate ({v.get('avg_frame_rate')!r})")
    durations = [info.get("format", {}).get("duration"), v.get("duration")]
    duration = next((float(d) for d in durations if d not in (None, "N/A")), 0.0)
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width < 16 or height < 16:
        raise InputError(path, f"video frames of {width}x{height} px are too small")
    if not duration > 0:
        raise InputError(path, "video has no duration")
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        has_audio=bool(audio),
        video_codec=str(v.get("codec_name")),
        audio_codec=str(audio[0].get("codec_name")) if audio else None,
    )


class _Stderr:
    """ffmpeg's stderr goes to a temp file: a pipe nobody reads can fill up and block it."""

    def __enter__(self):
        self.file = tempfile.TemporaryFile(mode="w+b")
        return self.file

    def __exit__(self, *exc):
        self.file.close()


def _stderr_text(file) -> str:
    file.seek(0)
    return file.read().decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True)
class DecodeReport:
    frames: int  # thumbnails decoded
    seconds: float  # time of the last thumbnail + one sample period


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """One sampled moment: a small gray thumbnail for differencing; ``image`` is the
    full-resolution gray frame for the samples that also carry one (``image_fps``)."""

    time: float
    thumb: np.ndarray
    image: np.ndarray | None = None


def _drain(stream, size: int, out: "queue.Queue") -> None:
    """Read fixed-size frames from ``stream`` into ``out`` until EOF (None marks the end)."""
    try:
        while True:
            buf = stream.read(size)
            if len(buf) < size:  # EOF, or a partial frame at a damaged end
                break
            out.put(buf)
    finally:
        out.put(None)


def thumbnail_size(info: VideoInfo, width: int) -> tuple[int, int]:
    """(w, h) of the analysis thumbnails: ``width`` wide (even), never larger than the video."""
    w = min(width, info.width) // 2 * 2
    h = max(2, round(info.height * w / info.width / 2) * 2)
    return w, h


def iter_samples(info: VideoInfo, *, fps: float, thumb_width: int = 320, image_fps: float = 4.0,
                 report: list | None = None) -> Iterator[Sample]:
    """Decode the video once; yield :class:`Sample` at ``fps`` per second in time order.

    One ffmpeg process decodes every frame and writes two raw streams: gray
    thumbnails at ``fps`` (scaled by ffmpeg) on stdout, and full-resolution
    frames at ``image_fps`` on a second pipe (yuv420p: for the usual yuv420p
    source nothing is converted, and the luma plane is the gray image). Both
    pipes are drained by threads, so ffmpeg never blocks on one while we wait on
    the other. A full frame is attached to the sample at the same time (the
    grids are aligned when ``fps`` is a multiple of ``image_fps``) or to the
    next sample after it. Frame n of a stream is at n / rate: ffmpeg's ``fps``
    filter picks the frame shown at each grid time, whatever the source timing.
    If ``report`` is a list, a :class:`DecodeReport` is appended at the end.
    """
    import queue
    import threading

    if not fps > 0 or not image_fps > 0:
        raise InputError("sample fps", f"must be positive, got {fps!r} / {image_fps!r}")
    tw, th = thumbnail_size(info, thumb_width)
    w, h = info.width, info.height
    luma = w * h
    full_size = luma + 2 * ((w + 1) // 2) * ((h + 1) // 2)
    read_fd, write_fd = os.pipe()
    graph = (
        f"[0:v]fps={fps!r}:round=near,split=2[a][b];"
        f"[a]scale={tw}:{th}:flags=area,format=gray[t];"
        f"[b]fps={image_fps!r}:round=near,format=yuv420p[f]"
    )
    cmd = [
        FFMPEG, "-v", "error", "-nostdin", "-threads", "1", "-filter_threads", "1", "-i", info.path,
        "-an", "-sn", "-dn", "-filter_complex", graph,
        "-map", "[t]", "-f", "rawvideo", "pipe:1",
        "-map", "[f]", "-f", "rawvideo", f"pipe:{write_fd}",
    ]
    # Bounded queues are the backpressure that keeps memory flat when we are slower than
    # ffmpeg: both streams come from one decoder in step, so the image queue never runs
    # more than a frame or two ahead of the thumbnails (no deadlock on a full queue).
    thumbs: queue.Queue = queue.Queue(maxsize=64)
    images: queue.Queue = queue.Queue(maxsize=4)
    with _Stderr() as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # the child has its copy; EOF reaches us when it exits
        image_stream = os.fdopen(read_fd, "rb", buffering=full_size)
        readers = [
            threading.Thread(target=_drain, args=(proc.stdout, tw * th, thumbs), daemon=True),
            threading.Thread(target=_drain, args=(image_stream, full_size, images), daemon=True),
        ]
        for r in readers:
            r.start()
        n = 0
        k = 0  # index of the next full frame
        pending = images.get()
        try:
            while (buf := thumbs.get()) is not None:
                t = n / fps
                image = None
                # Attach every full frame due by this sample (the latest wins).
                while pending is not None and k / image_fps <= t + 1e-9:
                    image = np.frombuffer(pending, dtype=np.uint8, count=luma).reshape(h, w)
                    k += 1
                    pending = images.get()
                yield Sample(time=t, thumb=np.frombuffer(buf, dtype=np.uint8).reshape(th, tw), image=image)
                n += 1
        finally:
            if proc.poll() is None:
                proc.kill()  # stopped early: the pipes reach EOF once ffmpeg is gone
            code = proc.wait()
            for r in readers:  # a reader may wait on a full queue: keep emptying them
                while r.is_alive():
                    for q in (thumbs, images):
                        try:
                            q.get_nowait()
                        except queue.Empty:
                            pass
                    r.join(timeout=0.01)
            proc.stdout.close()
            image_stream.close()
        text = _stderr_text(err)
    if code != 0 and n == 0:
        raise InputError(info.path, f"video could not be decoded (ffmpeg: {_last_line(text)})")
    if report is not None:
        report.append(DecodeReport(frames=n, seconds=n / fps))


@dataclasses.dataclass
class AudioTrack:
    """A video's audio as a temporary mono 16-bit WAV file (cheaper to write than FLAC); read spans without loading it whole."""

    path: str
    sample_rate: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def read(self, start: float, end: float) -> np.ndarray:
        """float32 samples of [start, end) s; zero-padded beyond the track."""
        import soundfile as sf

        i0, i1 = int(round(max(0.0, start) * self.sample_rate)), int(round(max(0.0, end) * self.sample_rate))
        out = np.zeros(max(0, i1 - i0), dtype=np.float32)
        if i0 < self.frames and i1 > i0:
            with sf.SoundFile(self.path) as f:
                f.seek(i0)
                have = f.read(min(i1, self.frames) - i0, dtype="float32", always_2d=True)[:, 0]
            out[: have.size] = have
        return out

    def rms_dbfs(self, *, window: float) -> np.ndarray:
        """RMS level in dBFS of consecutive ``window``-second frames (read in blocks)."""
        import soundfile as sf

        hop = max(1, int(round(window * self.sample_rate)))
        levels = []
        with sf.SoundFile(self.path) as f:
            for block in f.blocks(blocksize=hop * 256, dtype="float32", always_2d=True):
                x = block[:, 0]
                n = x.size // hop * hop
                frames = x[:n].reshape(-1, hop) if n else np.zeros((0, hop), np.float32)
                if x.size > n:  # the tail frame of the block (only the last block has one)
                    tail = np.zeros(hop, np.float32)
                    tail[: x.size - n] = x[n:]
                    frames = np.vstack([frames, tail[None]])
                rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
                levels.append(20 * np.log10(np.maximum(rms, 1e-10)))
        return np.concatenate(levels) if levels else np.zeros(0)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def extract_audio(info: VideoInfo, *, sample_rate: int = 44100, tmp_dir: str | None = None) -> AudioTrack:
    """The first audio stream, mixed to mono and resampled, into a temporary 16-bit WAV file."""
    import soundfile as sf

    if not info.has_audio:
        raise InputError(info.path, "the video has no audio track")
    fd, out = tempfile.mkstemp(suffix=".wav", dir=tmp_dir)
    os.close(fd)
    cmd = [
        FFMPEG, "-v", "error", "-nostdin", "-y", "-i", info.path, "-vn", "-sn", "-dn", "-map", "0:a:0",
        "-ac", "1", "-ar", str(int(sample_rate)), "-c:a", "pcm_s16le", out,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        os.unlink(out)
        raise InputError(info.path, f"audio track could not be decoded (ffmpeg: {_last_line(proc.stderr)})")
    try:
        frames = sf.info(out).frames
    except Exception as exc:  # libsndfile's error types vary by version
        os.unlink(out)
        raise InputError(info.path, f"audio track could not be read back ({exc})") from None
    if frames == 0:
        os.unlink(out)
        raise InputError(info.path, "the audio track is empty")
    return AudioTrack(path=out, sample_rate=int(sample_rate), frames=int(frames))
