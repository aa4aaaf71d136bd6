"""The one crop normalization: staff height, patch padding, bad input."""

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.vision.normalize import CropConfig, normalize_crop


def staff_image(*, spacing: float, width: int = 300, top: float = 20.0, staves: int = 1, gap: float = 40.0) -> np.ndarray:
    """White image with five-line staves drawn 1 px thick at the given line spacing."""
    h = int(top * 2 + staves * 4 * spacing + (staves - 1) * gap) + 1
    img = np.full((h, width), 255, np.uint8)
    for s in range(staves):
        y0 = top + s * (4 * spacing + gap)
        for i in range(5):
            img[int(round(y0 + i * spacing)), 10 : width - 10] = 0
    return img


def line_rows(img: np.ndarray) -> list[float]:
    """Darkness-weighted centres of the rows that hold staff lines."""
    dark = (255 - img.astype(float)).mean(axis=1)
    rows = dark > 0.3 * dark.max()
    centres, r = [], 0
    while r < len(rows):
        if rows[r]:
            s = r
            while r < len(rows) and rows[r]:
                r += 1
            w = dark[s:r]
            centres.append(float((np.arange(s, r) * w).sum() / w.sum()))
        r += 1
    return centres


@pytest.mark.parametrize("spacing", [4.5, 6.0, 9.0, 12.5, 20.0])
def test_staff_lands_on_reference_height(spacing):
    img = staff_image(spacing=spacing)
    out = normalize_crop(img, staff_height=4 * spacing)
    lines = line_rows(out)
    assert len(lines) == 5
    assert abs((lines[-1] - lines[0]) - 18.0) <= 1.0
    assert out.dtype == np.uint8 and out.ndim == 2


def test_padding_to_multiple_and_white():
    img = np.zeros((37, 50), np.uint8)  # black content: padding must be the only white
    out = normalize_crop(img, staff_height=18.0)  # factor 1: no resampling
    assert out.shape == (48, 64)
    assert (out[:37, :50] == 0).all()
    assert (out[37:, :] == 255).all() and (out[:, 50:] == 255).all()


def test_exact_multiple_gets_no_padding_and_no_resampling():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 96), dtype=np.uint8)
    out = normalize_crop(img, staff_height=18.0)
    assert out.shape == (64, 96)
    assert np.array_equal(out, img)
    assert out is not img  # a new array: callers may write into it


def test_scaling_size_and_other_configs():
    img = np.full((100, 200), 255, np.uint8)
    out = normalize_crop(img, staff_height=36.0)  # halves
    assert out.shape == (64, 112)  # 50 -> 64, 100 -> 112
    cfg = CropConfig(staff_height_px=24.0, multiple=8)
    out = normalize_crop(img, staff_height=12.0, config=cfg)  # doubles
    assert out.shape == (200, 400)


def test_shrinking_keeps_thin_lines_visible():
    # INTER_AREA averages: a 2 px line shrunk 4x stays a gray line, never vanishes.
    img = staff_image(spacing=20.0, width=400)
    img = np.minimum(img, np.roll(img, 1, axis=0))  # 2 px thick lines
    out = normalize_crop(img, staff_height=80.0)
    assert len(line_rows(out)) == 5
    assert out.min() < 200


def test_multi_staff_system():
    img = staff_image(spacing=10.0, staves=3, gap=60.0)
    out = normalize_crop(img, staff_height=40.0)
    lines = line_rows(out)
    assert len(lines) == 15
    for s in range(3):
        assert abs(lines[5 * s + 4] - lines[5 * s] - 18.0) <= 1.0


@pytest.mark.parametrize(
    "img, staff",
    [
        (np.full((10, 10, 3), 255, np.uint8), 18.0),  # colour
        (np.full((10,), 255, np.uint8), 18.0),  # 1-D
        (np.full((0, 10), 255, np.uint8), 18.0),  # empty
        (np.full((10, 0), 255, np.uint8), 18.0),
        (np.full((10, 10), 1.0, np.float32), 18.0),  # not uint8
        (np.full((10, 10), 255, np.uint8), 0.0),
        (np.full((10, 10), 255, np.uint8), -3.0),
        (np.full((10, 10), 255, np.uint8), float("nan")),
        (np.full((10, 10), 255, np.uint8), float("inf")),
        ([[255, 255]], 18.0),  # not an array
    ],
)
def test_bad_input(img, staff):
    with pytest.raises(InputError):
        normalize_crop(img, staff_height=staff)


def test_bad_config():
    with pytest.raises(InputError):
        CropConfig(staff_height_px=0)
    with pytest.raises(InputError):
        CropConfig(multiple=0)
    with pytest.raises(InputError):
        CropConfig(margin=-1)
