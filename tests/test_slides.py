"""Unit tests of the slide-segmentation rule on sample streams (one rule each).

End-to-end segmentation of real (generated) score videos is in test_video_ingest.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.video.media import Sample
from unimusic.video.slides import SlideConfig, segment_samples

FPS = 10.0


def _picture(seed: int, shape=(90, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full(shape, 255, np.uint8)
    for _ in range(40):  # dark blobs, like note heads
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        img[y : y + 4, x : x + 4] = 0
    return img


def _stream(timeline, *, fps=FPS, noise=0.0, seed=0):
    """timeline: list of (seconds, picture or (picture_a, picture_b) for a linear cross-fade)."""
    rng = np.random.default_rng(seed)
    samples, t0 = [], 0.0
    n = 0
    for seconds, pic in timeline:
        count = round(seconds * fps)
        for i in range(count):
            if isinstance(pic, tuple):
                a = (i + 1) / (count + 1)
                frame = ((1 - a) * pic[0].astype(float) + a * pic[1].astype(float))
            else:
                frame = pic.astype(float)
            if noise:
                frame = frame + rng.normal(0, noise, frame.shape)
            frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
            samples.append(Sample(time=n / fps, thumb=frame, image=frame if n % 2 == 0 else None))
            n += 1
        t0 += seconds
    return samples


def test_hard_cut_gives_two_slides_split_halfway_between_samples():
    a, b = _picture(1), _picture(2)
    slides = segment_samples(_stream([(3.0, a), (4.0, b)]))
    assert len(slides) == 2
    assert slides[0].start == 0.0 and slides[1].end == pytest.approx(7.0)
    # The last sample of `a` is at 2.9 s, the first of `b` at 3.0 s.
    assert slides[0].end == pytest.approx(2.95) and slides[1].start == pytest.approx(2.95)
    assert slides[0].next_start == pytest.approx(slides[1].start)
    assert np.array_equal(slides[0].image, a) and np.array_equal(slides[1].image, b)


def test_slow_crossfade_is_a_transition_not_a_slide():
    # Consecutive samples of a 2 s fade differ by only 1/21 of the full change each:
    # comparing with the run's first frame is what splits them.
    a, b = _picture(1), _picture(2)
    slides = segment_samples(_stream([(3.0, a), (2.0, (a, b)), (3.0, b)]))
    assert len(slides) == 2
    assert slides[0].end == pytest.approx(3.0, abs=0.25)
    assert slides[1].start == pytest.approx(5.0, abs=0.25)
    assert slides[0].next_start == slides[1].start


def test_codec_like_noise_does_not_split_a_slide():
    a = _picture(3)
    slides = segment_samples(_stream([(6.0, a)], noise=4.0))
    assert len(slides) == 1 and slides[0].end == pytest.approx(6.0)


def test_a_flash_shorter_than_min_static_is_no_slide():
    a, b, c = _picture(1), _picture(2), _picture(4)
    slides = segment_samples(_stream([(2.0, a), (0.3, b), (2.0, c)]), config=SlideConfig(min_static_seconds=0.5))
    assert len(slides) == 2
    assert slides[0].next_start == pytest.approx(slides[1].start) and slides[1].start > slides[0].end


def test_long_slide_keeps_a_bounded_set_of_frames_and_picks_the_middle():
    a = _picture(5)
    samples = _stream([(120.0, a)])
    slides = segment_samples(samples, config=SlideConfig(keep_frames=4))
    assert len(slides) == 1
    assert abs(slides[0].image_time - 60.0) <= 120.0 / 4  # within one stride of the middle


def test_empty_stream_gives_no_slides():
    assert segment_samples([]) == []


@pytest.mark.parametrize(
    "field,value",
    [("sample_fps", 0), ("analysis_width", 8), ("pixel_threshold", 300), ("change_fraction", 1.5),
     ("min_static_seconds", -1), ("image_fps", 50), ("keep_frames", 0)],
)
def test_bad_slide_config_names_the_field(field, value):
    with pytest.raises(InputError, match=field):
        SlideConfig(**{field: value})
