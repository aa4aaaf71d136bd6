"""Engraving MusicXML with Verovio: SVG pages, and PNG through cairosvg.

The corpus pipeline will add layout options (fonts, spacing); this is the one
place that talks to Verovio, so every caller engraves the same way.
"""

from __future__ import annotations

import dataclasses

from unimusic.errors import InputError

FONTS = ("Leipzig", "Bravura", "Gootville", "Leland", "Petaluma")


@dataclasses.dataclass(frozen=True)
class EngraveOptions:
    page_width: int = 2100  # Verovio units (tenths of mm at scale 100)
    page_height: int = 2970
    scale: int = 40
    font: str = "Leipzig"
    adjust_page_height: bool = True

    def verovio(self) -> dict:
        if self.font not in FONTS:
            raise InputError("engraving options", f"font {self.font!r} (have {', '.join(FONTS)})")
        return {
            "pageWidth": self.page_width,
            "pageHeight": self.page_height,
            "scale": self.scale,
            "font": self.font,
            "adjustPageHeight": self.adjust_page_height,
            "xmlIdSeed": 1,  # deterministic ids: the same input engraves to the same bytes
        }


def engrave_svg_pages(xml: bytes | str, *, options: EngraveOptions = EngraveOptions(), source: str = "<musicxml>") -> list[str]:
    """One SVG string per page."""
    import verovio

    text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
    toolkit = verovio.toolkit()
    toolkit.setOptions(options.verovio())
    if not toolkit.loadData(text):
        raise InputError(source, "Verovio could not load the MusicXML")
    pages = toolkit.getPageCount()
    if pages < 1:
        raise InputError(source, "Verovio engraved no page")
    return [toolkit.renderToSVG(page) for page in range(1, pages + 1)]


def svg_to_png(svg: str, *, background: str = "white", scale: float = 1.0) -> bytes:
    import cairosvg

    return cairosvg.svg2png(bytestring=svg.encode("utf-8"), background_color=background, scale=scale)
