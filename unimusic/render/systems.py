"""Engrave a score with Verovio and cut it into staff systems with their timing.

Facts about Verovio 6.4.1 this module relies on (each checked by tests/test_systems.py):

* SVG structure: ``<svg width="Wpx" height="Hpx">`` > ``<svg class="definition-scale"
  viewBox="0 0 VW VH">`` > ``<g class="page-margin" transform="translate(tx, ty)">`` >
  ``<g class="system">`` > (``<g class="ending">`` >) ``<g class="measure">`` >
  ``<g class="staff">`` whose direct ``<path d="Mx1 y Lx2 y">`` children are that
  measure's staff lines. ViewBox units are tenths of the layout units (pageWidth
  2100 -> viewBox width 21000; a staff space is 180, i.e. 2 MEI units of 90);
  W = pageWidth * scale/100, so at scale 40 one viewBox unit is 0.04 px. The inner viewBox is fitted into W x H with
  SVG's default ``xMidYMid meet`` (H is rounded up, leaving a sub-pixel offset).
* ``svgAdditionalAttribute: ["measure@n"]`` writes ``data-n`` on each measure group;
  after renumbering the MusicXML 1..N, n-1 is the measure index.
* ``svgBoundingBoxes`` adds ``<g class="... bounding-box"><rect/></g>`` to every
  element; their union over a system is its content extent (notes above/below the
  staff, lyrics, dynamics, measure numbers). The groups are stripped before
  rasterizing; the stripped SVG draws exactly the pixels of a plain render.
* ``renderToTimemap({"includeMeasures": True, "includeRests": True})`` lists events in
  playback order with ``tstamp`` in ms; each measure start carries ``measureOn``. Repeats
  are expanded: the second pass of a measure has id ``<id>-rend2`` (``-rend3``...), and
  volta endings are taken in order (1st ending on the first pass, 2nd on the next).
  A D.C. is followed too, without repeats on the second pass (mozart/k80/movement4:
  "Da Capo ma senza replicarlo"), where music21's expandRepeats() repeats again.
  ``renderToMIDI`` plays that same expanded timeline (same onsets, same tempo).
* Verovio's boxes are mostly right but a few are stale: a tie or slur continued
  across a system break can keep a box on the neighbouring system. Crops are
  therefore split between systems on blank rows of the raster (near the middle of
  the gap between the content boxes, ties/slurs left out) and keep all ink of
  their own rows; rows of a neighbour are painted white. The pages carry no
  title or footer (header/footer "none"), so every ink pixel belongs to a system.

Repeats are expanded (the corpus rule in DESIGN.md): ``playback`` lists every
played measure with its own span, so a system played twice has two time spans.
"""

from __future__ import annotations

import dataclasses
import math
import re
import xml.etree.ElementTree as ET

import numpy as np

from unimusic.errors import InputError
from unimusic.render.engrave import EngraveOptions, new_toolkit, svg_to_gray
from unimusic.render.slicing import measure_count, renumber_measures
from unimusic.vision.normalize import CropConfig, normalize_crop

SVG = "{http://www.w3.org/2000/svg}"
CONTENT_PAD = 0.25  # staff heights of white kept around a system's ink
SIDE_PAD = 0.5  # staff heights of white left and right of a system
# Boxes of curves that cross a system break can sit on the neighbouring system
# (seen: a tie's box above the next system); they are left out of the split guess.
STALE_BOXES = ("tie", "slur", "phrase", "lv")
TIMEMAP_OPTIONS = {"includeMeasures": True, "includeRests": True}
_LINE = re.compile(r"^\s*M\s*(-?[\d.]+)[ ,]+(-?[\d.]+)\s*L\s*(-?[\d.]+)[ ,]+(-?[\d.]+)\s*$")
_TRANSLATE = re.compile(r"translate\(\s*(-?[\d.]+)[ ,]+(-?[\d.]+)\s*\)")
# A bounding-box group holds a <rect> (and sometimes a <title>), never another <g>.
_BBOX = re.compile(r'<g id="bbox-[^"]*"[^>]*?(?:/>|>(?:(?!<g\b).)*?</g>)', re.DOTALL)
_REND = re.compile(r"-rend\d+$")


# eq=False: arrays have no single truth value, so field-wise == would raise.
@dataclasses.dataclass(frozen=True, eq=False)
class EngravedSystem:
    index: int  # system index in reading order across pages (0-based)
    page: int  # 1-based page
    measures: tuple[int, ...]  # 0-based measure indices (document order) shown in this system
    image: np.ndarray  # normalized crop (normalize_crop), uint8 gray
    measure_x: tuple[tuple[int, int], ...]  # per measure: half-open x-range [x0, x1) in `image` pixels
    # Where the crop came from: (left, top, right, bottom) in EngravedPiece.pages[page - 1];
    # ground truth for system detection on whole pages.
    page_box: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class MeasurePlayback:
    measure: int  # 0-based measure index
    start: float  # seconds; playback order, repeats expanded (a measure played twice appears twice)
    end: float


@dataclasses.dataclass(frozen=True, eq=False)
class EngravedPiece:
    systems: tuple[EngravedSystem, ...]
    playback: tuple[MeasurePlayback, ...]
    midi: bytes  # Verovio's MIDI of the same performance timeline as `playback`
    musicxml: bytes  # the MusicXML that was engraved (measures renumbered 1..N)
    duration: float  # seconds: end of the last played measure
    pages: tuple[np.ndarray, ...] = ()  # page rasters (uint8 gray) the crops were cut from


@dataclasses.dataclass
class _System:
    page: int
    line_top: float  # px at raster scale 1 (the SVG's own px)
    line_bottom: float
    staff_height: float  # px at raster scale 1, median over the system's staves
    rects: list[tuple[float, float, float, float]]  # Verovio's bounding boxes (x0, y0, x1, y1), page px (scale 1)
    staff_x: tuple[float, float]
    measures: list[tuple[int, str, float, float]]  # (n, id, x0, x1), x in page px (scale 1)


def _classes(el: ET.Element) -> list[str]:
    return (el.get("class") or "").split()


def _page_transform(root: ET.Element, source: str):
    """(scale, offset_x, offset_y): viewBox units inside page-margin -> px at raster scale 1."""
    try:
        width = float(root.get("width", "").removesuffix("px"))
        height = float(root.get("height", "").removesuffix("px"))
        inner = next(el for el in root if el.tag == SVG + "svg")
        vx, vy, vw, vh = (float(v) for v in inner.get("viewBox").split())
        margin = next(el for el in inner.iter(SVG + "g") if "page-margin" in _classes(el))
        tx, ty = (float(v) for v in _TRANSLATE.search(margin.get("transform", "")).groups())
    except (StopIteration, AttributeError, ValueError, TypeError) as exc:
        raise InputError(source, f"unexpected Verovio SVG layout ({type(exc).__name__}: {exc})") from None
    s = min(width / vw, height / vh)  # preserveAspectRatio xMidYMid meet
    ox = (width - vw * s) / 2 - vx * s + tx * s
    oy = (height - vh * s) / 2 - vy * s + ty * s
    return s, ox, oy


def _parse_page(svg: str, page: int, source: str) -> list[_System]:
    root = ET.fromstring(svg)
    s, ox, oy = _page_transform(root, source)
    systems = []
    for sys_el in root.iter(SVG + "g"):
        cls = _classes(sys_el)
        if "system" not in cls or "bounding-box" in cls:
            continue
        ys, heights, content, staff_x0, staff_x1, measures = [], [], [], [], [], []
        for el in sys_el.iter(SVG + "g"):
            cls = _classes(el)
            if "bounding-box" in cls:
                if cls[0] in STALE_BOXES:
                    continue
                for rect in el.findall(SVG + "rect"):
                    x, y = float(rect.get("x", 0)), float(rect.get("y", 0))
                    content.append((x, y, x + float(rect.get("width", 0)), y + float(rect.get("height", 0))))
            elif "measure" in cls:
                mx0, mx1 = math.inf, -math.inf
                for staff in el.iter(SVG + "g"):
                    if "staff" not in _classes(staff):
                        continue
                    lines = []
                    for path in staff.findall(SVG + "path"):
                        m = _LINE.match(path.get("d", ""))
                        if m and m.group(2) == m.group(4):
                            x1, y, x2 = float(m.group(1)), float(m.group(2)), float(m.group(3))
                            lines.append(y)
                            mx0, mx1 = min(mx0, x1, x2), max(mx1, x1, x2)
                    if lines:
                        ys += [min(lines), max(lines)]
                        distinct = sorted(set(lines))
                        if len(distinct) >= 2:
                            heights.append(4 * (distinct[-1] - distinct[0]) / (len(distinct) - 1))
                n = el.get("data-n")
                if n is None or not n.isdigit() or not math.isfinite(mx0):
                    raise InputError(source, f"page {page}: a measure without number or staff lines in Verovio's SVG")
                measures.append((int(n), el.get("id"), mx0 * s + ox, mx1 * s + ox))
                staff_x0.append(mx0)
                staff_x1.append(mx1)
        if not measures:
            continue
        if not heights:
            raise InputError(source, f"page {page}: a system without a multi-line staff")
        top, bottom = min(ys), max(ys)
        systems.append(
            _System(
                page=page,
                line_top=top * s + oy,
                line_bottom=bottom * s + oy,
                staff_height=float(np.median(heights)) * s,
                rects=[(x0 * s + ox, y0 * s + oy, x1 * s + ox, y1 * s + oy) for x0, y0, x1, y1 in content],
                staff_x=(min(staff_x0) * s + ox, max(staff_x1) * s + ox),
                measures=measures,
            )
        )
    systems.sort(key=lambda sy: sy.line_top)
    return systems


def _window(gray: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """gray[r0:r1, c0:c1] with white wherever the window leaves the page."""
    out = np.full((r1 - r0, c1 - c0), 255, dtype=np.uint8)
    h, w = gray.shape
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if sr0 < sr1 and sc0 < sc1:
        out[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = gray[sr0:sr1, sc0:sc1]
    return out


def _content(sy: _System, k: float, above: float, below: float) -> tuple[float, float, float, float]:
    """The system's content box in raster px: staff lines plus those of Verovio's boxes
    that lie between the neighbouring systems' staff lines (a stale box elsewhere is ignored)."""
    x0, x1 = sy.staff_x[0] * k, sy.staff_x[1] * k
    y0, y1 = sy.line_top * k, sy.line_bottom * k
    for rx0, ry0, rx1, ry1 in sy.rects:
        ry0, ry1 = ry0 * k, ry1 * k
        if ry0 > above and ry1 < below:
            x0, y0, x1, y1 = min(x0, rx0 * k), min(y0, ry0), max(x1, rx1 * k), max(y1, ry1)
    return x0, y0, x1, y1


def _cuts(gray: np.ndarray, systems: list[_System], k: float) -> list[int]:
    """Row where each system's crop ends and the next one's begins (len(systems) - 1 of them)."""
    ink = (gray < 255).sum(axis=1)
    lines = [(sy.line_top * k, sy.line_bottom * k) for sy in systems]
    bounds = [-math.inf] + [lt for lt, _ in lines[1:]], [lb for _, lb in lines[:-1]] + [math.inf]
    boxes = [_content(sy, k, above, below) for sy, above, below in zip(systems, *bounds)]
    cuts = []
    for (a_lb, b_lt), a, b in zip(zip(bounds[1][:-1], bounds[0][1:]), boxes, boxes[1:]):
        # Halfway between the content boxes (Verovio keeps them apart by
        # spacingSystem), moved to the nearest blank row so no symbol is split.
        guess = (a[3] + b[1]) / 2 if a[3] <= b[1] else (a_lb + b_lt) / 2
        rows = np.arange(max(0, math.ceil(a_lb) + 1), min(len(ink), math.floor(b_lt)))
        if rows.size == 0:
            cuts.append(round(guess))
            continue
        cuts.append(int(rows[np.lexsort((np.abs(rows + 0.5 - guess), ink[rows]))[0]]))
    return cuts


def _cut_page(gray: np.ndarray, systems: list[_System], k: float, crop: CropConfig):
    """Crop every system of one page; yields (system, normalized image, measure_x, page_box)."""
    h, w = gray.shape
    cuts = [0] + _cuts(gray, systems, k) + [h]
    ink_rows = (gray < 255).any(axis=1)
    for i, sy in enumerate(systems):
        staff = sy.staff_height * k
        lt, lb = sy.line_top * k, sy.line_bottom * k
        # The rows between the cuts are this system's: all ink there is kept, with
        # at least `margin` staff heights above/below the staff lines.
        own = np.flatnonzero(ink_rows[cuts[i] : cuts[i + 1]]) + cuts[i]
        margin, pad = crop.margin * staff, CONTENT_PAD * staff
        top, bottom = lt - margin, lb + margin
        if own.size:
            top, bottom = min(top, own[0] - pad), max(bottom, own[-1] + 1 + pad)
        r0, r1 = math.floor(top), math.ceil(bottom)
        win = _window(gray, r0, r1, 0, w)
        rows = np.arange(r0, r1)
        # Rows that belong to a neighbour are painted white: no neighbour ink, nothing cut.
        win[(rows < cuts[i]) | (rows >= cuts[i + 1])] = 255
        ink_cols = np.flatnonzero((win < 255).any(axis=0))
        left, right = sy.staff_x[0] * k, sy.staff_x[1] * k
        if ink_cols.size:
            left, right = min(left, ink_cols[0]), max(right, ink_cols[-1] + 1)
        side = SIDE_PAD * staff
        c0, c1 = math.floor(left - side), math.ceil(right + side)
        win = _window(win, 0, r1 - r0, c0, c1)
        image = normalize_crop(win, staff_height=staff, config=crop)
        f = crop.staff_height_px / staff
        measure_x = tuple((round((mx0 * k - c0) * f), round((mx1 * k - c0) * f)) for _, _, mx0, mx1 in sy.measures)
        yield sy, image, measure_x, (c0, r0, c1, r1)


def _playback(timemap: list[dict], index_of: dict[str, int], source: str) -> tuple[list[MeasurePlayback], float]:
    events = sorted(timemap, key=lambda e: float(e.get("tstamp", 0)))
    if not events:
        raise InputError(source, "Verovio's timemap is empty")
    end = max(float(e.get("tstamp", 0)) for e in events) / 1000.0
    starts = []
    for e in events:
        if "measureOn" in e:
            mid = _REND.sub("", e["measureOn"])
            if mid not in index_of:
                raise InputError(source, f"timemap measure {e['measureOn']!r} is not in the engraving")
            starts.append((index_of[mid], float(e["tstamp"]) / 1000.0))
    if not starts:
        raise InputError(source, "Verovio's timemap has no measures")
    out = []
    for (m, t0), (_, t1) in zip(starts, starts[1:] + [(None, end)]):
        out.append(MeasurePlayback(measure=m, start=t0, end=t1))
    return out, end


def engrave_piece(xml: bytes, *, options: EngraveOptions, crop: CropConfig = CropConfig(), source: str = "<musicxml>") -> EngravedPiece:
    """Engrave ``xml``, cut one normalized image per staff system, and time every measure.

    Deterministic: the same input and options give identical pixels and bytes.
    """
    import base64

    xml = renumber_measures(xml, source=source)
    n_measures = measure_count(xml, source=source)
    toolkit = new_toolkit()
    settings = options.verovio()
    # No title/credits above the first system, no page footer: pages hold systems only.
    settings.update(header="none", footer="none", svgAdditionalAttribute=["measure@n"], svgBoundingBoxes=True)
    toolkit.setOptions(settings)
    if not toolkit.loadData(xml.decode("utf-8")):
        raise InputError(source, "Verovio could not load the MusicXML")
    n_pages = toolkit.getPageCount()
    if n_pages < 1:
        raise InputError(source, "Verovio engraved no page")
    svgs = [toolkit.renderToSVG(p) for p in range(1, n_pages + 1)]
    layouts = [_parse_page(svg, p, source) for p, svg in enumerate(svgs, start=1)]

    order = [m[0] for page in layouts for sy in page for m in sy.measures]
    if order != list(range(1, n_measures + 1)):
        raise InputError(source, f"Verovio engraved measures {order[:8]}..., expected 1..{n_measures} in order")
    index_of = {m[1]: m[0] - 1 for page in layouts for sy in page for m in sy.measures}

    # One raster scale for the piece: its median staff lands on the reference
    # height, so normalize_crop does not resample (unless staff sizes differ).
    staff = float(np.median([sy.staff_height for page in layouts for sy in page]))
    k = crop.staff_height_px / staff
    pages, systems = [], []
    for svg, page_systems in zip(svgs, layouts):
        clean = _BBOX.sub("", svg)
        if "bounding-box" in clean:
            raise InputError(source, "could not strip Verovio's bounding boxes from the SVG")
        gray = svg_to_gray(clean, scale=k)
        gray.flags.writeable = False  # frozen results: arrays are read-only too
        pages.append(gray)
        for sy, image, measure_x, box in _cut_page(gray, page_systems, k, crop):
            image.flags.writeable = False
            systems.append(
                EngravedSystem(
                    index=len(systems),
                    page=sy.page,
                    measures=tuple(m[0] - 1 for m in sy.measures),
                    image=image,
                    measure_x=measure_x,
                    page_box=box,
                )
            )

    playback, end = _playback(toolkit.renderToTimemap(TIMEMAP_OPTIONS), index_of, source)
    midi = base64.b64decode(toolkit.renderToMIDI())
    return EngravedPiece(
        systems=tuple(systems),
        playback=tuple(playback),
        midi=midi,
        musicxml=xml,
        duration=end,
        pages=tuple(pages),
    )
