"""Slide segmentation of score-following videos by frame differencing.

A score-following video shows a page (a "slide") while its music plays, then
changes to the next one by a hard cut, a cross-fade or a scroll. Frames are
sampled at ``SlideConfig.sample_fps`` per second (the reference samples 3 per
second; we default to 10 for boundaries within 0.05 s), shrunk to a small gray
thumbnail by ffmpeg and compared with the first frame of the current run: a frame that
differs in more than ``change_fraction`` of its pixels (by more than
``pixel_threshold`` gray levels) starts a new run. Runs that last at least
``min_static_seconds`` are static sections (slides); everything between two
of them is a transition, however it was animated.

Comparing with the run's first frame rather than the previous frame is what
catches slow cross-fades, whose consecutive frames differ very little.

Full-resolution frames arrive at ``image_fps``; only a bounded set per run is
kept (every ``stride``-th one, the stride doubling as the run grows), from which
the middle one becomes the slide image: memory does not grow with the video.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import numpy as np

from unimusic.errors import InputError


@dataclasses.dataclass(frozen=True)
class SlideConfig:
    sample_fps: float = 10.0
    analysis_width: int = 320  # thumbnail width for differencing (px)
    pixel_threshold: int = 24  # gray levels (after area averaging) that count as a change; codec noise stays below
    change_fraction: float = 0.001  # fraction of thumbnail pixels changed -> a different picture
    min_static_seconds: float = 0.5  # shorter stable runs are part of a transition
    # Full-resolution frames come at image_fps (a divisor of sample_fps keeps the grids
    # aligned); a static section of min_static_seconds holds at least one. Piping full
    # frames costs: 5 per second took 1.5x the CPU of 2.5 per second (benchmarks/video_ingest.py).
    image_fps: float = 2.5
    keep_frames: int = 8  # full-resolution candidates kept per run for the middle frame

    def __post_init__(self):
        if not 0 < self.sample_fps <= 120:
            raise InputError("slide config 'sample_fps'", f"must be in (0, 120], got {self.sample_fps!r}")
        if self.analysis_width < 16:
            raise InputError("slide config 'analysis_width'", f"must be >= 16, got {self.analysis_width!r}")
        if not 0 <= self.pixel_threshold < 255:
            raise InputError("slide config 'pixel_threshold'", f"must be 0..254, got {self.pixel_threshold!r}")
        if not 0 <= self.change_fraction < 1:
            raise InputError("slide config 'change_fraction'", f"must be in [0, 1), got {self.change_fraction!r}")
        if not self.min_static_seconds >= 0:
            raise InputError("slide config 'min_static_seconds'", "must be >= 0")
        if not 0 < self.image_fps <= self.sample_fps:
            raise InputError("slide config 'image_fps'", f"must be in (0, sample_fps], got {self.image_fps!r}")
        if self.image_fps * self.min_static_seconds < 1 - 1e-9:
            raise InputError("slide config 'image_fps'", "a static section of min_static_seconds must hold a full frame: "
                             f"need image_fps >= 1 / min_static_seconds, got {self.image_fps!r}")
        if self.keep_frames < 1:
            raise InputError("slide config 'keep_frames'", "must be >= 1")


@dataclasses.dataclass(frozen=True, eq=False)
class Slide:
    index: int
    start: float  # seconds: the slide is fully shown from here...
    end: float  # ...until here (exclusive), where the next transition begins
    next_start: float  # where the following slide begins (end of the transition); == end for the last
    image: np.ndarray  # full-resolution uint8 gray frame from the middle of the section
    image_time: float  # when that frame is shown


def changed_fraction(a: np.ndarray, b: np.ndarray, pixel_threshold: int) -> float:
    return float(np.count_nonzero(np.abs(a - b) > pixel_threshold)) / a.size


class _Run:
    """A run of samples showing the same picture; keeps a bounded spread of its full frames."""

    def __init__(self, index: int, anchor: np.ndarray, keep: int):
        self.start = self.last = index
        self.anchor = anchor
        self.keep = keep
        self.stride = 1
        self.seen = 0  # full frames offered so far
        self.frames: list[tuple[int, np.ndarray]] = []

    def add(self, index: int, image: np.ndarray | None) -> None:
        self.last = index
        if image is None:
            return
        if self.seen % self.stride == 0:
            self.frames.append((index, image))
            if len(self.frames) > self.keep:  # thin out: keep every other, double the stride
                self.frames = self.frames[::2]
                self.stride *= 2
        self.seen += 1

    def middle(self) -> tuple[int, np.ndarray] | None:
        if not self.frames:
            return None
        mid = (self.start + self.last) / 2
        return min(self.frames, key=lambda item: abs(item[0] - mid))


def iter_slides(samples: Iterable, *, config: SlideConfig = SlideConfig(), duration: float | None = None) -> Iterator[Slide]:
    """Static sections of a stream of :class:`unimusic.video.media.Sample` taken at
    ``config.sample_fps``, yielded as soon as the next one begins (at most two slide
    images are alive at a time, whatever the video's length).

    Boundaries are placed halfway between the last sample of one picture and the
    first sample of the next (error at most half a sample period for cuts).
    """
    step = 1.0 / config.sample_fps
    min_len = config.min_static_seconds * config.sample_fps - 1e-9
    run: _Run | None = None
    pending: list | None = None  # [start, end, image time, image] of the last static run, not yet yielded
    index = 0
    n = -1

    def closed(r: _Run):
        middle = r.middle()
        if r.last - r.start + 1 < min_len or middle is None:
            return None
        start = 0.0 if r.start == 0 else (r.start - 0.5) * step
        return [start, (r.last + 0.5) * step, middle[0] * step, middle[1], r.last]

    for n, sample in enumerate(samples):
        small = sample.thumb.astype(np.int16)
        if run is None or changed_fraction(small, run.anchor, config.pixel_threshold) > config.change_fraction:
            if run is not None and (done := closed(run)) is not None:
                if pending is not None:
                    start, end, t_img, image, _ = pending
                    yield Slide(index=index, start=start, end=end, next_start=done[0], image=image, image_time=t_img)
                    index += 1
                pending = done
            run = _Run(n, small, config.keep_frames)
        run.add(n, sample.image)
    total = (n + 1) * step
    end_time = min(total, duration) if duration else total
    last = closed(run) if run is not None else None
    for item in (pending, last):
        if item is None:
            continue
        start, end, t_img, image, last_index = item
        end = end_time if last_index == n else min(end, end_time)
        next_start = last[0] if item is pending and last is not None else end
        yield Slide(index=index, start=start, end=end, next_start=next_start, image=image, image_time=t_img)
        index += 1


def segment_samples(samples: Iterable, *, config: SlideConfig = SlideConfig(), duration: float | None = None) -> list[Slide]:
    """All slides of a sample stream (:func:`iter_slides` as a list)."""
    return list(iter_slides(samples, config=config, duration=duration))


def iter_video_slides(info, *, config: SlideConfig = SlideConfig(), report: list | None = None) -> Iterator[Slide]:
    """Decode ``info``'s video once (:func:`unimusic.video.media.iter_samples`) and yield its slides."""
    from unimusic.video.media import iter_samples

    samples = iter_samples(info, fps=config.sample_fps, thumb_width=config.analysis_width,
                           image_fps=config.image_fps, report=report)
    return iter_slides(samples, config=config, duration=info.duration)


def segment_video(info, *, config: SlideConfig = SlideConfig(), report: list | None = None) -> list[Slide]:
    """All slides of a video (holds every slide image: use :func:`iter_video_slides` for long videos)."""
    return list(iter_video_slides(info, config=config, report=report))
