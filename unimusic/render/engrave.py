"""Engraving MusicXML with Verovio: SVG pages, and PNG through cairosvg.

This is the one place that talks to Verovio for pictures, so every caller
engraves the same way. :func:`engrave_options_for` draws a layout per piece
(page width, spacing, music font) so that a model trained on the corpus does
not learn a single engraving style; ``unimusic.render.systems`` cuts the pages
into staff systems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re

from unimusic.errors import InputError

# The SMuFL fonts this Verovio build ships (each checked to draw its own glyphs:
# tests/test_systems.py). Verovio silently falls back to Leipzig for an unknown
# name, so the name is validated here instead.
FONTS = ("Leipzig", "Bravura", "Gootville", "Leland", "Petaluma")

# Ranges engrave_options_for draws from (Verovio's defaults lie inside them).
PAGE_WIDTH_RANGE = (1500, 2600)  # at scale 40: about 375..650 px wide systems at 18 px per staff
SPACING_STAFF_RANGE = (8, 20)  # MEI units (half staff spaces) between staves of a system
SPACING_SYSTEM_RANGE = (4, 16)  # MEI units between systems
SPACING_LINEAR_RANGE = (0.2, 0.35)
SPACING_NON_LINEAR_RANGE = (0.5, 0.7)


@dataclasses.dataclass(frozen=True)
class EngraveOptions:
    page_width: int = 2100  # Verovio units (tenths of mm at scale 100)
    page_height: int = 2970
    scale: int = 40
    font: str = "Leipzig"
    adjust_page_height: bool = True
    spacing_staff: int = 12  # Verovio default: minimal space between staves, MEI units
    spacing_system: int = 4  # Verovio default: minimal space between systems, MEI units
    spacing_linear: float = 0.25  # Verovio default: horizontal spacing, linear factor
    spacing_non_linear: float = 0.6  # Verovio default: horizontal spacing, non-linear factor

    def verovio(self) -> dict:
        if self.font not in FONTS:
            raise InputError("engraving options", f"font {self.font!r} (have {', '.join(FONTS)})")
        if not 0 <= self.spacing_staff <= 48 or not 0 <= self.spacing_system <= 48:
            raise InputError("engraving options", "spacing_staff and spacing_system must be 0..48 MEI units")
        if not 0 <= self.spacing_linear <= 1 or not 0 <= self.spacing_non_linear <= 1:
            raise InputError("engraving options", "spacing_linear and spacing_non_linear must be 0..1")
        return {
            "pageWidth": self.page_width,
            "pageHeight": self.page_height,
            "scale": self.scale,
            "font": self.font,
            "adjustPageHeight": self.adjust_page_height,
            "spacingStaff": self.spacing_staff,
            "spacingSystem": self.spacing_system,
            "spacingLinear": self.spacing_linear,
            "spacingNonLinear": self.spacing_non_linear,
            "xmlIdSeed": 1,  # deterministic ids: the same input engraves to the same bytes
        }


def engrave_options_for(piece_id: str, *, seed: int = 0) -> EngraveOptions:
    """Layout options for one piece, drawn from a RNG seeded by (seed, piece_id).

    hashlib rather than hash(): Python salts str hashes per process, and the
    corpus must engrave identically on every worker and every rerun.
    """
    digest = hashlib.sha256(f"unimusic.engrave\0{seed}\0{piece_id}".encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return EngraveOptions(
        page_width=rng.randint(*PAGE_WIDTH_RANGE),
        font=rng.choice(FONTS),
        spacing_staff=rng.randint(*SPACING_STAFF_RANGE),
        spacing_system=rng.randint(*SPACING_SYSTEM_RANGE),
        spacing_linear=round(rng.uniform(*SPACING_LINEAR_RANGE), 3),
        spacing_non_linear=round(rng.uniform(*SPACING_NON_LINEAR_RANGE), 3),
    )


def engrave_svg_pages(xml: bytes | str, *, options: EngraveOptions = EngraveOptions(), source: str = "<musicxml>") -> list[str]:
    """One SVG string per page."""
    text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
    toolkit = new_toolkit()
    toolkit.setOptions(options.verovio())
    if not toolkit.loadData(text):
        raise InputError(source, "Verovio could not load the MusicXML")
    pages = toolkit.getPageCount()
    if pages < 1:
        raise InputError(source, "Verovio engraved no page")
    return [toolkit.renderToSVG(page) for page in range(1, pages + 1)]


# Verovio writes metronome notes in tempo marks as SMuFL characters in its music
# font, embedded as a WOFF2 @font-face that cairosvg cannot use (it draws a
# missing-glyph box). The common ones become Unicode notes from a system font;
# any other music-font character in text is dropped.
_SMUFL_TEXT = re.compile(r'<tspan font-family="(?:%s)"([^>]*)>([^<]*)</tspan>' % "|".join(FONTS))
_SMUFL_TO_UNICODE = {"\ueca5": "\u2669", "\ueca7": "\u266a"}  # metNoteQuarterUp, metNote8thUp


def _text_glyphs_for_cairo(svg: str) -> str:
    def sub(m: re.Match) -> str:
        text = "".join(_SMUFL_TO_UNICODE.get(ch, "") for ch in m.group(2))
        return f'<tspan font-family="DejaVu Sans, sans-serif"{m.group(1)}>{text}</tspan>' if text else ""

    return _SMUFL_TEXT.sub(sub, svg)


def svg_to_png(svg: str, *, background: str = "white", scale: float = 1.0) -> bytes:
    import cairosvg

    svg = _text_glyphs_for_cairo(svg)
    return cairosvg.svg2png(bytestring=svg.encode("utf-8"), background_color=background, scale=scale)


def svg_to_gray(svg: str, *, scale: float = 1.0):
    """Rasterize an SVG to a uint8 grayscale array (0 black, 255 white)."""
    import cv2
    import numpy as np

    png = svg_to_png(svg, scale=scale)
    gray = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:  # pragma: no cover - cairosvg always writes a PNG
        raise InputError("<svg>", "cairosvg produced no decodable image")
    return gray


def new_toolkit():
    """A Verovio toolkit that reports errors only: its warnings (e.g. a slur left
    open at the end of a system slice) are expected here and drown real output."""
    import verovio

    verovio.enableLog(verovio.LOG_ERROR)
    return verovio.toolkit()
