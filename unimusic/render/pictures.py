"""Pictures of model outputs for people: an OMR input beside its engraved prediction,
and a reference/prediction piano roll with its note F1.

Heavy libraries (OpenCV, NumPy, Verovio, matplotlib) are imported inside the
functions: importing this module is cheap and has no side effects. Model output is
taken as it comes: a prediction that decodes to nothing or cannot be engraved gives
a picture that says so, never an exception.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from unimusic.render.engrave import EngraveOptions

GAP = 12  # px of white between the panels
LABEL_HEIGHT = 18  # px of the strip holding a panel's label
MAX_HEIGHT_RATIO = 1.25  # the engraved prediction is at most this many times as tall as the input crop
MAX_RASTER_WIDTH = 12000  # px: wider engravings are rasterized at a smaller scale (then shrunk anyway)
_SVG_WIDTH = re.compile(r'<svg[^>]*?\swidth="([\d.]+)px"')


class _OneSystem(EngraveOptions):
    """Verovio options for a prediction: no header or footer, no system breaks (the whole
    prediction on one line), and a page as wide as its content."""

    def verovio(self) -> dict:
        settings = super().verovio()
        settings.update(header="none", footer="none", breaks="none", adjustPageWidth=True)
        return settings


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts draw ASCII only.
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(text))


def _label_strip(text: str, width: int, *, height: int = LABEL_HEIGHT):
    """A white (height, width) strip with ``text`` in black, shrunk to fit the width."""
    import cv2
    import numpy as np

    strip = np.full((height, width), 255, np.uint8)
    text = _ascii(text)
    if not text or width < 8:
        return strip
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = 0.45
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    if w > width - 6:
        scale = max(0.25, scale * (width - 6) / w)
        (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(strip, text, (3, min(height - 4, (height + h) // 2)), font, scale, 0, thickness, cv2.LINE_AA)
    return strip


def _message_panel(lines: Sequence[str], width: int, height: int):
    """A light gray (height, width) panel with ``lines`` of text: what stands in for a picture."""
    import numpy as np

    panel = np.full((max(height, LABEL_HEIGHT * (len(lines) + 1)), width), 235, np.uint8)
    for i, line in enumerate(lines):
        strip = _label_strip(line, width)
        strip[strip == 255] = 235
        y = LABEL_HEIGHT // 2 + i * LABEL_HEIGHT
        panel[y : y + LABEL_HEIGHT] = strip
    return panel


def _ink_box(gray, *, threshold: int = 200, pad: int = 4):
    """The image cut to its ink (plus ``pad`` px of white); None when there is no ink."""
    import numpy as np

    ink = gray < threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return None
    r0, r1 = max(0, rows[0] - pad), min(gray.shape[0], rows[-1] + 1 + pad)
    c0, c1 = max(0, cols[0] - pad), min(gray.shape[1], cols[-1] + 1 + pad)
    return gray[r0:r1, c0:c1]


def _fit(gray, width: int, max_height: int):
    """``gray`` resized (aspect kept) to ``width`` px, or less where it would be taller than
    ``max_height``, then padded with white on the right to exactly ``width`` px."""
    import cv2
    import numpy as np

    h, w = gray.shape
    factor = min(width / w, max_height / h)
    size = (min(width, max(1, round(w * factor))), max(1, round(h * factor)))
    if size != (w, h):
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    if gray.shape[1] < width:
        gray = np.hstack([gray, np.full((gray.shape[0], width - gray.shape[1]), 255, np.uint8)])
    return gray


def engrave_prediction(lmx_tokens, *, width: int | None = None,
                       max_height: int | None = None) -> tuple[object | None, dict, str]:
    """(uint8 gray picture cut to its ink or None, decode stats, why there is no picture).

    With ``width`` the SVG is rasterized again at the scale that makes the ink about that
    wide, or less where the picture would then be taller than ``max_height`` (crisp staff
    lines rather than a resized raster). The picture's size is approximate.
    """
    from unimusic.render.engrave import engrave_svg_pages, svg_to_gray
    from unimusic.render.lmx import delinearize
    from unimusic.tokens.lmx import tokens_from_text

    if isinstance(lmx_tokens, str):
        tokens = list(tokens_from_text(lmx_tokens))
    else:
        tokens = [str(t) for t in (lmx_tokens if lmx_tokens is not None else ())]
    stats = {"tokens": len(tokens), "invalid_tokens": 0, "reasons": {}}
    if not tokens:
        return None, stats, "empty prediction (no tokens)"
    try:
        xml, decoded = delinearize(tokens)
        stats = decoded.as_dict()
        if stats["invalid_tokens"] >= stats["tokens"]:
            return None, stats, f"nothing to engrave: all {stats['tokens']} tokens dropped"
        svg = engrave_svg_pages(xml, options=_OneSystem(), source="<prediction>")[0]
        match = _SVG_WIDTH.search(svg)
        svg_width = float(match.group(1)) if match else 0.0
        scale = min(1.0, MAX_RASTER_WIDTH / svg_width) if svg_width > 0 else 1.0
        picture = _ink_box(svg_to_gray(svg, scale=scale))
        if picture is not None and width:  # again, at the scale that makes the ink ``width`` px wide
            factor = width / picture.shape[1]
            if max_height:
                factor = min(factor, max_height / picture.shape[0])
            scale *= factor
            if svg_width > 0:
                scale = min(scale, MAX_RASTER_WIDTH / svg_width)
            picture = _ink_box(svg_to_gray(svg, scale=scale))
    except Exception as exc:  # model output: any failure becomes a message, not an exception
        return None, stats, f"cannot be engraved: {type(exc).__name__}: {exc}"[:200]
    if picture is None:
        return None, stats, "the engraving has no ink"
    return picture, stats, ""


def omr_side_by_side(crop, lmx_tokens, path: str | Path, *, title: str = "") -> Path:
    """One PNG: the OMR input ``crop`` (uint8 gray, 0 ink) on top, the engraved prediction
    ``lmx_tokens`` below, scaled to the crop's width; a text panel instead when the
    prediction is empty or cannot be engraved. The PNG is exactly as wide as the crop."""
    import cv2
    import numpy as np

    crop = np.asarray(crop)
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY if crop.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if crop.dtype != np.uint8:
        crop = np.clip(crop, 0, 255).astype(np.uint8)
    width = crop.shape[1]
    # A short prediction is not blown up past the input's size: at most MAX_HEIGHT_RATIO
    # times the crop's height, left-aligned on white.
    max_height = max(LABEL_HEIGHT * 2, round(crop.shape[0] * MAX_HEIGHT_RATIO))
    picture, stats, why = engrave_prediction(lmx_tokens, width=width, max_height=max_height)
    label = f"prediction ({stats['tokens']} tokens, {stats['invalid_tokens']} dropped)"
    if picture is not None:
        lower = _fit(picture, width, max_height)
    else:
        lower = _message_panel([why], width, max(LABEL_HEIGHT * 2, crop.shape[0] // 2))
    parts = []
    if title:
        parts.append(_label_strip(title, width))
    parts += [
        _label_strip("input", width),
        crop,
        np.full((GAP, width), 255, np.uint8),
        _label_strip(label, width),
        lower,
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(parts)):
        raise OSError(f"could not write {path}")
    return path


def roll_comparison(reference: Sequence, estimate: Sequence, path: str | Path, *, title: str = "") -> Path:
    """Reference and predicted notes as one piano roll; the title carries the note F1
    (onsets within 50 ms, :func:`unimusic.metrics.note_f1`)."""
    from unimusic.errors import InputError
    from unimusic.metrics import note_f1
    from unimusic.render.pianoroll import piano_roll_png

    reference, estimate = list(reference), list(estimate)
    try:
        scores = note_f1(reference, estimate)
        score = f"onset F1 {scores['f1']:.3f} (P {scores['precision']:.3f}, R {scores['recall']:.3f}, 50 ms)"
    except InputError as exc:  # a prediction with impossible notes: still draw it
        score = f"onset F1 n/a ({exc})"
    full = f"{title}: {score}" if title else score
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return piano_roll_png([("reference", reference), ("prediction", estimate)], path, title=full)
