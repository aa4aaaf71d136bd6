"""The one normalization of staff-system crops, shared by training data, inference and video.

Every system image the model sees goes through :func:`normalize_crop`: scaled so
that a five-line staff measures ``CropConfig.staff_height_px`` pixels from top
to bottom line, then padded with white at right/bottom to a multiple of the
patch size. Engraved crops (``unimusic.render.systems``) and crops detected on
pages or video frames must both call it, so the two never drift apart (the
reference implementation preprocessed training and inference differently).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from unimusic.errors import InputError


@dataclasses.dataclass(frozen=True)
class CropConfig:
    staff_height_px: float = 18.0  # reference: 18 px per five-line staff (top to bottom line)
    multiple: int = 16  # image tokens are 16x16 patches: both sides padded to a multiple
    # Space kept above the top staff line and below the bottom line, in staff
    # heights, when a system is cut from a page (engraving and detection alike);
    # rows that belong to a neighbouring system are painted white instead.
    margin: float = 1.5
    pad_value: int = 255  # white

    def __post_init__(self):
        if not (self.staff_height_px > 0 and math.isfinite(self.staff_height_px)):
            raise InputError("crop config", f"staff_height_px must be positive, got {self.staff_height_px!r}")
        if self.multiple < 1:
            raise InputError("crop config", f"multiple must be >= 1, got {self.multiple!r}")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise InputError("crop config", f"margin must be >= 0, got {self.margin!r}")
        if not 0 <= self.pad_value <= 255:
            raise InputError("crop config", f"pad_value must be 0..255, got {self.pad_value!r}")


def scale_factor(*, staff_height: float, config: CropConfig = CropConfig()) -> float:
    """Factor that maps a staff of ``staff_height`` px onto the reference height."""
    if not (isinstance(staff_height, (int, float, np.floating, np.integer)) and math.isfinite(staff_height) and staff_height > 0):
        raise InputError("crop", f"staff height must be a positive number of pixels, got {staff_height!r}")
    return float(config.staff_height_px) / float(staff_height)


def padded_size(size: int, multiple: int) -> int:
    return max(multiple, -(-size // multiple) * multiple)


def normalize_crop(gray: np.ndarray, *, staff_height: float, config: CropConfig = CropConfig()) -> np.ndarray:
    """Scale a grayscale system crop to the reference staff height and pad it to the patch grid.

    ``gray``: 2-D uint8 (0 black, 255 white). ``staff_height``: distance in
    pixels of ``gray`` from the top to the bottom line of a five-line staff.
    Returns a new C-contiguous uint8 array whose height and width are
    multiples of ``config.multiple``; the content sits at the top-left corner.
    """
    import cv2

    if not isinstance(gray, np.ndarray):
        raise InputError("crop", f"expected a numpy array, got {type(gray).__name__}")
    if gray.ndim != 2:
        raise InputError("crop", f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise InputError("crop", f"empty image (shape {gray.shape})")
    if gray.dtype != np.uint8:
        raise InputError("crop", f"expected uint8 pixels, got {gray.dtype}")
    factor = scale_factor(staff_height=staff_height, config=config)
    h, w = gray.shape
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    if (new_h, new_w) == (h, w):
        scaled = gray  # already at the reference size: no resampling at all
    else:
        # INTER_AREA averages when shrinking (no aliasing of thin staff lines);
        # INTER_LINEAR when enlarging (INTER_AREA degenerates to nearest there).
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        scaled = cv2.resize(gray, (new_w, new_h), interpolation=interp)
    out_h, out_w = padded_size(new_h, config.multiple), padded_size(new_w, config.multiple)
    out = np.full((out_h, out_w), config.pad_value, dtype=np.uint8)
    out[:new_h, :new_w] = scaled
    return out
