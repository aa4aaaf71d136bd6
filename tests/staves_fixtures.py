"""Pages with known staff systems for tests/test_staves.py (Verovio and LilyPond engravings of
real music21-corpus pieces) and the ways they are altered: scanner-like degradations and
video frames (scaled page inside a letterbox). Truth boxes are transformed alongside.
"""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from multiprocessing import get_context
from pathlib import Path

import numpy as np

Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True, eq=False)
class TruthPage:
    name: str  # "<piece>@<seed>[/piano] p<page>" plus the alteration
    image: np.ndarray  # uint8 grey
    boxes: tuple[Box, ...]  # EngravedSystem.page_box of the page's systems, in reading order
    staves: tuple[int, ...] = ()  # staves per system where known (LilyPond)


# --------------------------------------------------------------------------- Verovio


def engrave_pages(arg: tuple[str, int, bool]) -> list[TruthPage]:
    """(corpus relpath, engrave_options_for seed, piano reduction?) -> its pages with truth boxes."""
    from unimusic.music21_corpus import CorpusPiece, load_musicxml
    from unimusic.render.engrave import engrave_options_for
    from unimusic.render.reduction import piano_reduction
    from unimusic.render.systems import engrave_piece

    rel, seed, reduce = arg
    piece = CorpusPiece(rel)
    xml = load_musicxml(piece)
    if reduce:
        xml = piano_reduction(xml, source=rel)
        if xml is None:
            return []
    ep = engrave_piece(xml, options=engrave_options_for(piece.piece_id, seed=seed), source=rel)
    name = f"{rel}@{seed}{'/piano' if reduce else ''}"
    return [
        TruthPage(f"{name} p{i}", page, tuple(s.page_box for s in ep.systems if s.page == i))
        for i, page in enumerate(ep.pages, start=1)
    ]


def engrave_all(args, processes: int = 2) -> list[TruthPage]:
    with get_context("fork").Pool(processes) as pool:
        return [p for pages in pool.map(engrave_pages, args, chunksize=1) for p in pages]


# --------------------------------------------------------------------------- geometry


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def transform_box(box: Box, scale: float, dx: float, dy: float) -> Box:
    l, t, r, b = box
    return (round(l * scale + dx), round(t * scale + dy), round(r * scale + dx), round(b * scale + dy))


def evaluate(pages: list[TruthPage], detect) -> tuple[list[float], list[bool], list[str]]:
    """Per truth system: IoU with the detected system of the same reading-order index
    (pages with the right count) or the best-overlapping one; per page: exact count?"""
    ious, counts, notes = [], [], []
    for page in pages:
        found = [d.box for d in detect(page.image)]
        counts.append(len(found) == len(page.boxes))
        for i, t in enumerate(page.boxes):
            if len(found) == len(page.boxes):
                v = iou(found[i], t)
            else:
                v = max((iou(f, t) for f in found), default=0.0)
            ious.append(v)
            if v < 0.9:
                notes.append(f"{page.name} system {i}: IoU {v:.2f} found {found[i] if len(found) == len(page.boxes) else found} truth {t}")
        if len(found) != len(page.boxes):
            notes.append(f"{page.name}: {len(found)} systems found, {len(page.boxes)} true")
    return ious, counts, notes


# --------------------------------------------------------------------------- video frames


def in_frame(page: TruthPage, staff_px: float, *, letterbox: int = 0, frame=(1280, 720), reference: float = 18.0) -> TruthPage:
    """The page scaled to ``staff_px`` px per staff and centred in a ``frame`` (w, h) of
    colour ``letterbox``; a page taller or wider than the frame gets a canvas of the frame's
    aspect ratio with a 5% border instead (a high-resolution frame)."""
    import cv2

    k = staff_px / reference
    img = cv2.resize(page.image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    h, w = img.shape
    fw, fh = frame
    if h > fh * 0.95 or w > fw * 0.95:
        fh = int(max(h * 1.1, w * 1.1 * frame[1] / frame[0]))
        fw = int(fh * frame[0] / frame[1])
    canvas = np.full((fh, fw), letterbox, np.uint8)
    dy, dx = (fh - h) // 2, (fw - w) // 2
    canvas[dy : dy + h, dx : dx + w] = img
    boxes = tuple(transform_box(b, k, dx, dy) for b in page.boxes)
    return TruthPage(f"{page.name} frame@{staff_px:g}px/{letterbox}", canvas, boxes, page.staves)


# --------------------------------------------------------------------------- scan-like degradations


def upscale(page: TruthPage, k: float = 2.0) -> TruthPage:
    """A scan-resolution copy (staff height 18 k px)."""
    import cv2

    img = cv2.resize(page.image, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    return TruthPage(f"{page.name} x{k:g}", img, tuple(transform_box(b, k, 0, 0) for b in page.boxes), page.staves)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Counter-clockwise rotation about the centre, white fill (detection undoes it, so
    the truth boxes stay those of the upright page)."""
    import cv2

    h, w = img.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)


def pad(page: TruthPage, px: int) -> TruthPage:
    img = np.pad(page.image, px, constant_values=255)
    return TruthPage(page.name, img, tuple(transform_box(b, 1, px, px) for b in page.boxes), page.staves)


def blur(img, sigma):
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigma)


def noise(img, sigma, salt=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
    if salt:
        hit = rng.random(img.shape)
        out[hit < salt / 2] = 0
        out[hit > 1 - salt / 2] = 255
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg(img, quality):
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def thicken(img, k=2):
    """Bolder ink (min filter): over-inked print, a dark scan."""
    import cv2

    return cv2.erode(img, np.ones((k, k), np.uint8))


def thin(img, k=2):
    """Thinner ink (max filter): a light scan."""
    import cv2

    return cv2.dilate(img, np.ones((k, k), np.uint8))


def paper(img, ink=70, white=205, shade=0.7):
    """Lower contrast on grey paper, with lighting falling off towards one corner to ``shade``."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 - (1 - shade) * ((xx / w) * 0.6 + (yy / h) * 0.4)
    out = (ink + img.astype(np.float32) * (white - ink) / 255.0) * light
    return np.clip(out, 0, 255).astype(np.uint8)


DEGRADATIONS = {
    "rotate+1.5": lambda im: rotate(im, 1.5),
    "rotate-1.2": lambda im: rotate(im, -1.2),
    "blur1.5": lambda im: blur(im, 1.5),
    "noise15+salt": lambda im: noise(im, 15, salt=0.003),
    "jpeg20": lambda im: jpeg(im, 20),
    "thicken3": lambda im: thicken(im, 3),
    "thin2": lambda im: thin(im, 2),
    "greypaper": lambda im: paper(im),
    "combined": lambda im: jpeg(noise(blur(paper(rotate(im, -0.8), ink=60, white=215, shade=0.8), 1.0), 6), 40),
}


def degrade(page: TruthPage, name: str) -> TruthPage:
    return TruthPage(f"{page.name} {name}", DEGRADATIONS[name](page.image), page.boxes, page.staves)


# --------------------------------------------------------------------------- LilyPond

_PAPER = "\n\\paper {{ system-count = {systems} systems-per-page = {per_page} }}\n"


def staves_per_system(xml: bytes) -> int:
    root = ET.fromstring(xml)
    total = 0
    for part in root.iter("part"):
        staves = [int(s.text) for s in part.iter("staves") if (s.text or "").strip().isdigit()]
        total += max(staves, default=1)
    return total


def lilypond_pages(arg: tuple[str, bool, int, int, int]) -> list[TruthPage]:
    """Engrave a corpus piece with LilyPond (musicxml2ly, then lilypond --png) with a forced
    layout: ``systems`` systems in all, ``per_page`` on every page but the last
    (``\\paper { system-count, systems-per-page }``, the MusicXML's own breaks dropped
    with musicxml2ly --npl). The truth is that layout; the test checks that LilyPond
    honoured it by the number of pages it wrote. Returns pages with staves per system
    (every staff of every part, as LilyPond keeps empty staves) and no boxes."""
    import cv2

    from unimusic.music21_corpus import CorpusPiece, load_musicxml
    from unimusic.render.reduction import piano_reduction

    rel, reduce, systems, per_page, dpi = arg
    xml = load_musicxml(CorpusPiece(rel))
    if reduce:
        xml = piano_reduction(xml, source=rel)
    n_staves = staves_per_system(xml)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "in.xml").write_bytes(xml)
        subprocess.run(["musicxml2ly", "--npl", "-o", str(d / "in.ly"), str(d / "in.xml")], check=True, capture_output=True)
        ly = (d / "in.ly").read_text()
        (d / "in.ly").write_text(ly + _PAPER.format(systems=systems, per_page=per_page))
        subprocess.run(
            ["lilypond", "--png", f"-dresolution={dpi}", "-dno-point-and-click", "-o", str(d / "out"), str(d / "in.ly")],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        files = sorted(d.glob("out*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
        images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    n_pages = math.ceil(systems / per_page)
    assert len(images) == n_pages, f"{rel}: LilyPond wrote {len(images)} pages, the forced layout has {n_pages}"
    out = []
    for i, img in enumerate(images):
        count = min(per_page, systems - i * per_page)
        out.append(TruthPage(f"lilypond {rel}{'/piano' if reduce else ''} {dpi}dpi p{i + 1}", img, (), (n_staves,) * count))
    return out
