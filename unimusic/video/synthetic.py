"""Synthetic score-following videos with exact ground truth, for testing video ingestion.

A real corpus piece is engraved with landscape-wide systems (``engrave_piece``,
its pages rastered directly at the staff height wanted in the frame, so nothing
is resampled and the truth boxes are exact), its systems are grouped into
"slides" of 1-3 consecutive systems, and each slide is drawn centred on white
paper (a dark letterbox where the paper's aspect differs from the frame's). The slide on screen follows the
music: a new slide appears at the true time of its first played measure (cut),
or a crossfade / vertical scroll is centred on that time. Optional title card,
text-only page in a silent gap mid-piece, and outro card; an optional
"poor-scan" look (gray paper, noise, blur) marks slides the pipeline must skip.

Frames are piped raw (gray) into ffmpeg, one frame at a time (a static slide's
bytes are written repeatedly), with the FluidSynth rendering of the piece's
MIDI as a WAV second input. ``make_video`` writes ``<out>.truth.json``:

* ``slides[i].start``: time of the first frame showing slide i fully (frame n is
  at n / fps); ``end``: time of the first frame that no longer shows it fully.
* ``transitions[i]`` lies between slides i and i+1 (start = slides[i].end,
  end = slides[i+1].start; a cut has start == end).
* ``systems``: ground-truth system boxes ``[x0, y0, x1, y1]`` (right/bottom
  exclusive) in frame pixels, for ``kind == "music"`` slides only.
* ``music``: video times of the first played measure's start and the last
  played measure's end (silent gaps included in between).
* ``sample_rate``: the audio stream's rate: 44100 (AAC) or 48000 (Opus, which
  has no 44.1 kHz mode; the WAV fed to ffmpeg is always 44100 Hz).

Everything drawn (and the truth) is a function of the spec alone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import random
import shutil
import subprocess
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np

from unimusic.errors import InputError

SAMPLE_RATE = 44100  # the synthesized audio (WAV input of ffmpeg; AAC keeps it)
OPUS_RATE = 48000  # Opus streams are always 48 kHz
CONTAINERS = ("mp4", "webm")
TRANSITIONS = ("cut", "crossfade", "scroll")
PIECE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")
MIN_STAFF, MAX_STAFF = 12.0, 40.0  # staff height in the frame
MAX_SYSTEMS = 3  # systems per slide
PAPER_MARGIN = 0.04  # of the paper height, kept free above and below a slide's systems
OUTRO_DELAY = 0.5  # s after the music's end: the outro transition is centred there
END_HOLD = 1.0  # s the last music slide stays after the music's end (no outro)
TAIL_FADE = 0.3  # s after the music's end over which the release tail fades to zero
CUT_FADE = 0.01  # s of fade around the silent text-page gap
AUDIO_GAIN = 0.7  # peak of the mixed audio (headroom for lossy codecs)
TEXT_PAGE = "II. Movement"
OUTRO_TEXT = "Thanks for listening"
DARK_PAPER = 150  # poor-scan paper gray
DARK_INK = 35


# -- spec ----------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    piece: str  # music21 corpus path (as list_pieces returns), e.g. "bach/bwv66.6.mxl"
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    container: str = "mp4"  # "mp4" (H.264 yuv420p + AAC) or "webm" (VP9 + Opus)
    transition: str = "cut"  # "cut" | "crossfade" | "scroll" (animated vertical scroll to the next page)
    transition_seconds: float = 0.6  # ignored for cut
    title_seconds: float = 0.0  # >0: a silent title card (title, composer) before the music
    outro_seconds: float = 0.0  # >0: a text-only outro card after the music (silent)
    text_page_seconds: float = 0.0  # >0: a text-only slide mid-piece, in a silent gap (the music pauses)
    max_measures: int = 24  # the piece is cut to its first N measures
    systems_per_page: int | None = None  # None: what fits (1-3 systems per slide)
    dark: bool = False  # poor-scan look: gray paper, noise, slight blur
    piano_reduction: bool = False  # four-part score -> grand staff
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``InputError`` naming the first bad field (``VideoSpec.<field>``)."""

        def bad(field: str, problem: str):
            raise InputError(f"VideoSpec.{field}", problem)

        p = self.piece
        if not isinstance(p, str) or not p or p.startswith("/") or ".." in p.split("/") or not p.endswith(PIECE_SUFFIXES):
            bad("piece", f"must be a music21 corpus path ending in {'/'.join(PIECE_SUFFIXES)}, got {p!r}")
        for field, lo, hi in (("width", 160, 3840), ("height", 120, 2160)):
            v = getattr(self, field)
            if not _is_int(v) or not lo <= v <= hi or v % 2:
                bad(field, f"must be an even integer in {lo}..{hi} (yuv420p), got {v!r}")
        if not _is_real(self.fps) or not 1 <= self.fps <= 120:
            bad("fps", f"must be a number in 1..120, got {self.fps!r}")
        if self.container not in CONTAINERS:
            bad("container", f"must be one of {', '.join(CONTAINERS)}, got {self.container!r}")
        if self.transition not in TRANSITIONS:
            bad("transition", f"must be one of {', '.join(TRANSITIONS)}, got {self.transition!r}")
        if not _is_real(self.transition_seconds) or not 0 <= self.transition_seconds <= 5:
            bad("transition_seconds", f"must be a number in 0..5, got {self.transition_seconds!r}")
        if self.transition != "cut" and self.transition_seconds < 0.05:
            bad("transition_seconds", f"a {self.transition} needs at least 0.05 s, got {self.transition_seconds!r}")
        for field in ("title_seconds", "outro_seconds", "text_page_seconds"):
            v = getattr(self, field)
            if not _is_real(v) or not 0 <= v <= 60:
                bad(field, f"must be a number in 0..60 s, got {v!r}")
            if 0 < v < 0.5:
                bad(field, f"must be 0 (none) or at least 0.5 s, got {v!r}")
        if not _is_int(self.max_measures) or not 1 <= self.max_measures <= 400:
            bad("max_measures", f"must be an integer in 1..400, got {self.max_measures!r}")
        if self.systems_per_page is not None and (not _is_int(self.systems_per_page) or not 1 <= self.systems_per_page <= MAX_SYSTEMS):
            bad("systems_per_page", f"must be None or an integer in 1..{MAX_SYSTEMS}, got {self.systems_per_page!r}")
        for field in ("dark", "piano_reduction"):
            if getattr(self, field) not in (True, False):
                bad(field, f"must be a bool, got {getattr(self, field)!r}")
        if not _is_int(self.seed):
            bad("seed", f"must be an integer, got {self.seed!r}")


# -- engraving (cached: plan_video and make_video of one spec engrave once) -------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Seeded drawing choices of one video."""

    staff_px: float  # target staff height in the frame
    paper: str  # "full" | "pillar" (4:3 paper) | "inset" (paper inside a letterbox ring)
    content_frac: float  # engraved page width / paper width
    font: str
    spacing_linear: float
    spacing_non_linear: float
    spacing_staff: int
    spacing_system: int
    letterbox: int  # gray of the letterbox
    card_dark: bool  # title/text/outro cards: light text on dark, else dark on white
    soundfont_index: int


def _rng(spec: VideoSpec, what: str) -> random.Random:
    key = f"unimusic.video\0{what}\0{spec.seed}\0{spec.piece}\0{spec.width}x{spec.height}\0{spec.piano_reduction}"
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _layout(spec: VideoSpec) -> _Layout:
    from unimusic.render.engrave import FONTS

    rng = _rng(spec, "layout")
    staff = min(38.0, max(12.5, spec.height / 30.0 * rng.uniform(0.85, 1.2)))
    paper = rng.choice(("full", "full", "pillar", "inset"))
    if paper == "pillar" and spec.width / spec.height < 4 / 3 + 0.1:
        paper = "inset"
    return _Layout(
        staff_px=staff,
        paper=paper,
        content_frac=rng.uniform(0.84, 0.94),
        font=rng.choice(FONTS),
        spacing_linear=round(rng.uniform(0.3, 0.45), 3),
        spacing_non_linear=round(rng.uniform(0.6, 0.75), 3),
        spacing_staff=rng.randint(8, 16),
        spacing_system=rng.randint(6, 16),
        letterbox=rng.choice((0, 24, 48)),
        card_dark=rng.random() < 0.4,
        soundfont_index=rng.randrange(1 << 16),
    )


def _text(el) -> str:
    return " ".join((el.text or "").split()) if el is not None else ""


def _title_composer(xml: bytes, piece: str) -> tuple[str, str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        root = None
    title = composer = ""
    if root is not None:
        for el in root.iter():
            if isinstance(el.tag, str) and "}" in el.tag:
                el.tag = el.tag.split("}", 1)[1]
        title = _text(root.find("work/work-title")) or _text(root.find("movement-title"))
        for creator in root.findall("identification/creator"):
            if creator.get("type") == "composer" and _text(creator):
                composer = _text(creator)
                break
    for suffix in PIECE_SUFFIXES:
        title = title.removesuffix(suffix)
    if not title or title.lower().startswith("music21"):
        title = Path(piece).stem.replace("_", " ")
    return title, composer


@functools.lru_cache(maxsize=8)
def _engrave(piece: str, piano_reduction: bool, max_measures: int, options, staff_px: float):
    """(EngravedPiece, title, composer) of a corpus piece, pages rastered at ``staff_px``."""
    from unimusic.music21_corpus import CorpusPiece, load_musicxml
    from unimusic.render.reduction import piano_reduction as reduce
    from unimusic.render.slicing import measure_count, slice_measures
    from unimusic.render.systems import engrave_piece
    from unimusic.vision.normalize import CropConfig

    corpus_piece = CorpusPiece(piece)
    if not corpus_piece.path.is_file():
        raise InputError("VideoSpec.piece", f"{piece!r} is not a file of music21's corpus")
    xml = load_musicxml(corpus_piece)
    title, composer = _title_composer(xml, piece)
    if piano_reduction:
        reduced = reduce(xml, source=piece)
        if reduced is None:
            raise InputError("VideoSpec.piano_reduction", f"{piece} is not four single-staff parts: no piano reduction")
        xml = reduced
    n = measure_count(xml, source=piece)
    if n > max_measures:
        xml = slice_measures(xml, 0, max_measures, source=piece)
    engraved = engrave_piece(xml, options=options, crop=CropConfig(staff_height_px=staff_px), source=piece)
    return engraved, title, composer


@functools.lru_cache(maxsize=8)
def _synthesize(midi: bytes, soundfont_index: int, name: str) -> np.ndarray:
    from unimusic.render.synthesize import default_soundfonts, synthesize

    soundfonts = default_soundfonts()
    audio = synthesize(midi, soundfont=soundfonts[soundfont_index % len(soundfonts)], sample_rate=SAMPLE_RATE, name=name)
    audio.flags.writeable = False
    return audio


# -- drawing -------------------------------------------------------------------


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _card(spec: VideoSpec, layout: _Layout, lines: list[tuple[str, float]]) -> np.ndarray:
    """A text-only full frame: ``lines`` of (text, relative size), centred."""
    import cv2

    W, H = spec.width, spec.height
    bg, fg = (28, 235) if layout.card_dark else (255, 0)
    frame = np.full((H, W), bg, np.uint8)
    font = cv2.FONT_HERSHEY_TRIPLEX
    items = []
    for text, rel in lines:
        text = _ascii(text).strip()
        if not text:
            continue
        scale = H / 360 * rel
        thick = 2 if rel >= 1.4 else 1  # OpenCV 5 draws a TrueType face: thickness is its weight
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        if tw > 0.86 * W:  # shrink long titles to fit
            scale *= 0.86 * W / tw
            (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        items.append((text, scale, thick, tw, th, base))
    gap = H // 18
    total = sum(th + base for *_, th, base in items) + gap * (len(items) - 1)
    y = (H - total) // 2
    for text, scale, thick, tw, th, base in items:
        y += th
        cv2.putText(frame, text, ((W - tw) // 2, y), font, scale, fg, thick, cv2.LINE_AA)
        y += base + gap
    return frame


def _system_ink(system, page: np.ndarray, cut_top: int, cut_bottom: int) -> np.ndarray:
    """The pixels of ``system.page_box`` that belong to the system (neighbours' ink white).

    ``system.image`` is that window when engrave_piece did not resample it (the
    usual case: one staff size per piece); otherwise the page window with the
    rows outside [cut_top, cut_bottom) painted white.
    """
    from unimusic.render.systems import _window

    left, top, right, bottom = system.page_box
    window = _window(page, top, bottom, left, right)
    h, w = window.shape
    img = system.image
    if img.shape[0] >= h and img.shape[1] >= w:
        own = img[:h, :w]
        ink = own < 255
        if ink.any() and np.array_equal(own[ink], window[ink]) and not (img[h:] < 255).any() and not (img[:, w:] < 255).any():
            return own
    rows = np.arange(top, bottom)
    out = window.copy()
    out[(rows < cut_top) | (rows >= cut_bottom)] = 255
    return out


@dataclasses.dataclass(frozen=True)
class _Group:
    page: int  # 1-based engraving page
    systems: tuple[int, ...]  # indices into EngravedPiece.systems
    measures: tuple[int, int]  # first, last


def _groups(engraved, spec: VideoSpec, max_height: float) -> list[_Group]:
    """Consecutive systems of one page per slide: systems_per_page of them, or as many as fit."""
    systems = engraved.systems
    groups: list[_Group] = []
    current: list[int] = []

    def close():
        if current:
            ms = [m for i in current for m in systems[i].measures]
            groups.append(_Group(page=systems[current[0]].page, systems=tuple(current), measures=(min(ms), max(ms))))
            current.clear()

    for i, sy in enumerate(systems):
        if current:
            same_page = systems[current[0]].page == sy.page
            if spec.systems_per_page is not None:
                full = len(current) >= spec.systems_per_page
            else:
                height = sy.page_box[3] - systems[current[0]].page_box[1]
                full = len(current) >= MAX_SYSTEMS or height > max_height
            if full or not same_page:
                close()
        current.append(i)
    close()
    return groups


def _paper_box(spec: VideoSpec, layout: _Layout) -> tuple[int, int, int, int]:
    W, H = spec.width, spec.height
    if layout.paper == "pillar":
        pw = min(W, round(H * 4 / 3))
        x0 = (W - pw) // 2
        return x0, 0, x0 + pw, H
    if layout.paper == "inset":
        pw, ph = round(W * 0.92), round(H * 0.9)
        x0, y0 = (W - pw) // 2, (H - ph) // 2
        return x0, y0, x0 + pw, y0 + ph
    return 0, 0, W, H


def _music_frames(spec: VideoSpec, layout: _Layout, engraved, groups: list[_Group], paper_box):
    """Per group: (frame, truth boxes in frame px). Pages are rastered at the frame's
    staff height, so systems are pasted 1:1: the truth boxes are page boxes shifted."""
    W, H = spec.width, spec.height
    px0, py0, px1, py1 = paper_box
    pw, ph = px1 - px0, py1 - py0
    systems = engraved.systems
    # Row where each system's own ink ends and the next one's begins (fallback masking only).
    cuts = {}
    for a, b in zip(systems, systems[1:]):
        if a.page == b.page:
            cuts[a.index] = (a.page_box[3] + b.page_box[1]) // 2 if a.page_box[3] > b.page_box[1] else a.page_box[3]
    out = []
    for group in groups:
        page = engraved.pages[group.page - 1]
        members = [systems[i] for i in group.systems]
        top = min(s.page_box[1] for s in members)
        bottom = max(s.page_box[3] for s in members)
        # The page keeps its horizontal layout (centred on the paper), the group is centred vertically.
        min_left = min(0, min(s.page_box[0] for s in members))
        max_right = max(page.shape[1], max(s.page_box[2] for s in members))
        ox = px0 + min(max((pw - page.shape[1]) // 2, -min_left), pw - max_right)
        oy = py0 + (ph - (bottom - top)) // 2 - top
        frame = np.full((H, W), layout.letterbox, np.uint8)
        frame[py0:py1, px0:px1] = 255
        boxes = []
        for s in members:
            ink = _system_ink(s, page, cuts.get(s.index - 1, -(1 << 30)), cuts.get(s.index, 1 << 30))
            left, t, right, b = s.page_box
            x0, y0 = left + ox, t + oy
            x1, y1 = x0 + ink.shape[1], y0 + ink.shape[0]
            if x0 < px0 or y0 < py0 or x1 > px1 or y1 > py1:
                raise InputError("VideoSpec.piece", f"system {s.index} does not fit the slide (internal layout error)")
            region = frame[y0:y1, x0:x1]
            np.minimum(region, ink, out=region)
            boxes.append([x0, y0, x1, y1])
        out.append((frame, boxes))
    return out


def _darken(spec: VideoSpec, frame: np.ndarray, paper_box, index: int) -> np.ndarray:
    """Poor-scan look on the paper area: gray paper, gray ink, noise, slight blur."""
    import cv2

    x0, y0, x1, y1 = paper_box
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"dark\0{spec.seed}\0{spec.piece}\0{index}".encode()).digest()[:8], "big"))
    paper = frame[y0:y1, x0:x1].astype(np.float32)
    paper = DARK_INK + paper * ((DARK_PAPER - DARK_INK) / 255.0)
    paper += rng.normal(0.0, 9.0, paper.shape).astype(np.float32)
    paper = cv2.GaussianBlur(paper, (0, 0), 1.1)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(np.round(paper), 0, 255).astype(np.uint8)
    return out


# -- plan ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class VideoPlan:
    """Everything ``make_video`` writes, before encoding.

    ``truth`` is the truth dict (``"video"`` is filled in by make_video);
    ``images[i]`` is the frame drawn for ``truth["slides"][i]`` (uint8 gray H x W);
    ``paper_boxes[i]`` its paper rectangle (x0, y0, x1, y1) in the frame (the
    whole frame for text cards); ``frame_ranges[i]`` the half-open frame range
    [first, end) showing slide i fully; ``audio`` the float32 mono track at
    SAMPLE_RATE, ``n_frames`` / fps seconds long.
    """

    spec: VideoSpec
    truth: dict
    images: tuple[np.ndarray, ...]
    paper_boxes: tuple[tuple[int, int, int, int], ...]
    frame_ranges: tuple[tuple[int, int], ...]
    n_frames: int
    audio: np.ndarray

    def frame(self, n: int) -> np.ndarray:
        """Frame ``n`` exactly as it is sent to the encoder."""
        if not 0 <= n < self.n_frames:
            raise IndexError(f"frame {n} outside 0..{self.n_frames - 1}")
        for i, (a, b) in enumerate(self.frame_ranges):
            if a <= n < b:
                return self.images[i]
            if i + 1 < len(self.frame_ranges) and b <= n < self.frame_ranges[i + 1][0]:
                return self._transition(i, n)
        raise AssertionError("frame ranges do not tile the video")  # pragma: no cover

    def _transition(self, i: int, n: int) -> np.ndarray:
        a = self.frame_ranges[i][1]
        b = self.frame_ranges[i + 1][0]
        alpha = (n - a + 1) / (b - a + 1)  # strictly between 0 and 1
        first, second = self.images[i], self.images[i + 1]
        kind = self.truth["transitions"][i]["kind"]
        if kind == "scroll":
            h = first.shape[0]
            eased = alpha * alpha * (3 - 2 * alpha)
            off = min(h - 1, max(1, round(eased * h)))
            return np.concatenate([first[off:], second[:off]], axis=0)
        mixed = first.astype(np.float32) * (1 - alpha) + second.astype(np.float32) * alpha
        return np.round(mixed).astype(np.uint8)


def _frame_index(t: float, fps: float) -> int:
    return int(math.floor(t * fps + 0.5 + 1e-9))


def plan_video(spec: VideoSpec) -> VideoPlan:
    """Draw every slide and lay out the timeline and audio of ``spec`` (no encoding)."""
    from unimusic.render.engrave import EngraveOptions

    if not isinstance(spec, VideoSpec):
        raise InputError("VideoSpec", f"expected a VideoSpec, got {type(spec).__name__}")
    spec.validate()
    layout = _layout(spec)
    W, H, fps = spec.width, spec.height, float(spec.fps)
    paper_box = _paper_box(spec, layout)
    pfw, pfh = paper_box[2] - paper_box[0], paper_box[3] - paper_box[1]
    usable_h = pfh * (1 - 2 * PAPER_MARGIN)
    staff = layout.staff_px
    for _attempt in range(4):
        options = EngraveOptions(
            # At scale 40 a staff is 28.8 px of Verovio's SVG and its page margins are 50
            # units each side: the page raster is (page_width * 0.4) * staff / 28.8 px wide.
            page_width=int(round(pfw * layout.content_frac * 72 / staff)),
            page_height=60000,
            adjust_page_height=True,
            scale=40,
            font=layout.font,
            spacing_staff=layout.spacing_staff,
            spacing_system=layout.spacing_system,
            spacing_linear=layout.spacing_linear,
            spacing_non_linear=layout.spacing_non_linear,
        )
        engraved, title, composer = _engrave(spec.piece, spec.piano_reduction, spec.max_measures, options, round(staff, 3))
        # Slides: group systems; a smaller staff if a group (or the page) does not fit the paper.
        groups = _groups(engraved, spec, usable_h)
        need_h = max(
            max(engraved.systems[i].page_box[3] for i in g.systems) - min(engraved.systems[i].page_box[1] for i in g.systems)
            for g in groups
        )
        need_w = max(
            max(engraved.pages[g.page - 1].shape[1], *(engraved.systems[i].page_box[2] for i in g.systems))
            - min(0, *(engraved.systems[i].page_box[0] for i in g.systems))
            for g in groups
        )
        shrink = max(need_h / usable_h, need_w / (pfw * 0.98))
        if shrink <= 1:
            break
        staff = staff / shrink * 0.97
        if staff < MIN_STAFF:
            field = "systems_per_page" if spec.systems_per_page else "height"
            raise InputError(f"VideoSpec.{field}", f"the systems of {spec.piece} need a staff under {MIN_STAFF:g} px to fit a {W}x{H} frame")
    else:
        raise InputError("VideoSpec.piece", f"could not fit the systems of {spec.piece} into a {W}x{H} frame")
    synth = _synthesize(engraved.midi, layout.soundfont_index, spec.piece)
    drawn = _music_frames(spec, layout, engraved, groups, paper_box)
    if spec.dark:
        drawn = [(_darken(spec, frame, paper_box, i), boxes) for i, (frame, boxes) in enumerate(drawn)]

    # Runs of playback on one slide (repeats may return to an earlier slide).
    group_of = {m: gi for gi, g in enumerate(groups) for i in g.systems for m in engraved.systems[i].measures}
    runs: list[list] = []  # [group, music start, index of the first playback entry]
    for k, entry in enumerate(engraved.playback):
        gi = group_of[entry.measure]
        if not runs or runs[-1][0] != gi:
            runs.append([gi, entry.start, k])
    duration = engraved.duration

    d = float(spec.transition_seconds) if spec.transition != "cut" else 0.0
    pause = None  # music time where the text page interrupts
    if spec.text_page_seconds > 0:
        middle = duration / 2
        if len(runs) > 1:
            k = min(range(1, len(runs)), key=lambda r: (abs(runs[r][1] - middle), r))
            pause = runs[k][1]
        else:
            starts = [e.start for e in engraved.playback[1:]]
            if not starts:
                raise InputError("VideoSpec.text_page_seconds", f"{spec.piece} plays a single measure: no place for a text page")
            pause = min(starts, key=lambda t: (abs(t - middle), t))
            k = 1 + next(i for i, e in enumerate(engraved.playback[1:]) if e.start == pause)
            runs.insert(1, [runs[0][0], pause, k])
    gap = spec.text_page_seconds + d if pause is not None else 0.0
    music_start = spec.title_seconds + d / 2 if spec.title_seconds > 0 else 0.0

    def video_time(t: float) -> float:
        return music_start + t + (gap if pause is not None and t >= pause - 1e-9 else 0.0)

    music_end = video_time(duration)  # the pause is a measure start, before the end

    # Displayed slides: (kind, group or None, boundary time where the next one takes over).
    shown: list[tuple[str, int | None]] = []
    boundaries: list[float] = []
    if spec.title_seconds > 0:
        shown.append(("title", None))
        boundaries.append(music_start)
    music_kind = "dark" if spec.dark else "music"
    for r, (gi, t0, _) in enumerate(runs):
        if r > 0:
            if pause is not None and abs(t0 - pause) < 1e-9 and shown[-1][0] != "text":
                boundaries.append(music_start + pause)
                shown.append(("text", None))
                boundaries.append(music_start + pause + gap)
            else:
                boundaries.append(video_time(t0))
        shown.append((music_kind, gi))
    if spec.outro_seconds > 0:
        boundaries.append(music_end + OUTRO_DELAY)
        shown.append(("outro", None))
        end_time = music_end + OUTRO_DELAY + d / 2 + spec.outro_seconds
    else:
        end_time = music_end + END_HOLD
    n_frames = _frame_index(end_time, fps)

    # Frame ranges: transitions centred on the boundaries, shortened next to short slides.
    edges = [0.0] + boundaries + [n_frames / fps]
    ranges: list[list[int]] = [[0, 0] for _ in shown]
    ranges[-1][1] = n_frames
    for j, T in enumerate(boundaries):
        if d == 0:
            a = b = _frame_index(T, fps)
        else:
            dj = min(d, 0.45 * (T - edges[j]), 0.45 * (edges[j + 2] - T))
            a, b = _frame_index(T - dj / 2, fps), _frame_index(T + dj / 2, fps)
            if b <= a:
                b = a + 1
        ranges[j][1], ranges[j + 1][0] = a, b
    for (kind, _), (a, b) in zip(shown, ranges):
        if b <= a:
            raise InputError("VideoSpec.transition_seconds", f"a {kind} slide of {spec.piece} would not be shown fully for one frame")

    cards = {}
    if spec.title_seconds > 0:
        cards["title"] = _card(spec, layout, [(title, 1.4), (composer, 0.9)])
    if pause is not None:
        cards["text"] = _card(spec, layout, [(TEXT_PAGE, 1.5)])
    if spec.outro_seconds > 0:
        cards["outro"] = _card(spec, layout, [(OUTRO_TEXT, 1.3)])

    full = (0, 0, W, H)
    slides, images, papers = [], [], []
    for i, ((kind, gi), (a, b)) in enumerate(zip(shown, ranges)):
        record = {"index": i, "kind": kind, "start": round(a / fps, 6), "end": round(b / fps, 6), "page": None, "systems": [], "measures": None}
        if gi is None:
            images.append(cards[kind])
            papers.append(full)
        else:
            frame, boxes = drawn[gi]
            images.append(frame)
            papers.append(paper_box)
            if kind == "music":
                record.update(page=groups[gi].page, systems=[list(bx) for bx in boxes], measures=list(groups[gi].measures))
        slides.append(record)
    transitions = [
        {"kind": spec.transition, "start": slides[j]["end"], "end": slides[j + 1]["start"]} for j in range(len(slides) - 1)
    ]

    # Audio: the rendering placed on the video timeline, silent in the gaps.
    sr = SAMPLE_RATE
    n_samples = int(round(n_frames / fps * sr))
    audio = np.zeros(n_samples, np.float32)
    peak = float(np.max(np.abs(synth))) if synth.size else 0.0
    music = synth * np.float32(AUDIO_GAIN / peak) if peak > 0 else synth.copy()
    tail = int(round((duration + TAIL_FADE) * sr))
    music = music[:tail].copy()
    fade_from = int(round(duration * sr))
    if music.size > fade_from:
        music[fade_from:] *= np.linspace(1.0, 0.0, music.size - fade_from, dtype=np.float32)
    pieces = [(0, music)]
    if pause is not None:
        cut = int(round(pause * sr))
        first, second = music[:cut].copy(), music[cut:].copy()
        nf = min(first.size, int(CUT_FADE * sr))
        if nf:
            first[-nf:] *= np.linspace(1.0, 0.0, nf, dtype=np.float32)
        nf = min(second.size, int(CUT_FADE * sr))
        if nf:
            second[:nf] *= np.linspace(0.0, 1.0, nf, dtype=np.float32)
        pieces = [(0, first), (int(round((pause + gap) * sr)), second)]
    base = int(round(music_start * sr))
    for offset, chunk in pieces:
        i0 = base + offset
        if i0 >= n_samples:
            continue
        chunk = chunk[: n_samples - i0]
        audio[i0 : i0 + chunk.size] += chunk
    if spec.outro_seconds > 0:  # silent outro, whatever rang before
        audio[min(n_samples, int(round((music_end + TAIL_FADE) * sr))) :] = 0.0
    audio.flags.writeable = False

    truth = {
        "video": "",
        "width": W,
        "height": H,
        "fps": fps,
        "duration": round(n_frames / fps, 6),
        "container": spec.container,
        "sample_rate": OPUS_RATE if spec.container == "webm" else SAMPLE_RATE,
        "slides": slides,
        "transitions": transitions,
        "music": {"start": round(music_start, 6), "end": round(music_end, 6)},
    }
    for img in images:
        img.flags.writeable = False
    return VideoPlan(
        spec=spec,
        truth=truth,
        images=tuple(images),
        paper_boxes=tuple(papers),
        frame_ranges=tuple((a, b) for a, b in ranges),
        n_frames=n_frames,
        audio=audio,
    )


# -- encoding ------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise InputError("ffmpeg", "not found on PATH (install ffmpeg)")
    return path


def _rate(fps: float) -> str:
    fr = Fraction(fps).limit_denominator(1001)
    return f"{fr.numerator}/{fr.denominator}"


def _codec_args(container: str) -> list[str]:
    if container == "mp4":
        return ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "mp4"]
    return [
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "40",
        "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "96k", "-f", "webm",
    ]  # fmt: skip


def _encode(plan: VideoPlan, out_path: str) -> None:
    import soundfile as sf

    spec = plan.spec
    with tempfile.TemporaryDirectory(prefix="unimusic-video-") as tmp:
        wav = os.path.join(tmp, "audio.wav")
        sf.write(wav, np.asarray(plan.audio), SAMPLE_RATE, subtype="PCM_16")
        log_path = os.path.join(tmp, "ffmpeg.log")
        cmd = [
            _ffmpeg(), "-y", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{spec.width}x{spec.height}", "-r", _rate(spec.fps), "-i", "-",
            "-i", wav, "-map", "0:v:0", "-map", "1:a:0", *_codec_args(spec.container), out_path,
        ]  # fmt: skip
        with open(log_path, "w+b") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
            try:
                static = [img.tobytes() for img in plan.images]
                for i, (a, b) in enumerate(plan.frame_ranges):
                    for _ in range(a, b):
                        proc.stdin.write(static[i])
                    if i + 1 < len(plan.frame_ranges):
                        for n in range(b, plan.frame_ranges[i + 1][0]):
                            proc.stdin.write(plan._transition(i, n).tobytes())
            except BrokenPipeError:
                pass  # ffmpeg stopped reading: its log says why
            except BaseException:
                proc.kill()
                raise
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                rc = proc.wait()
            log.seek(0)
            message = log.read().decode("utf-8", "replace")
        if rc != 0:
            if os.path.isfile(out_path):  # a partial file is no video
                os.remove(out_path)
            raise InputError("ffmpeg", _last_line(message))


def make_video(spec: VideoSpec, out_path: str) -> dict:
    """Write the video of ``spec`` to ``out_path`` and its truth to ``out_path + ".truth.json"``.

    Returns the truth dict (format in the module docstring). Slide kinds: "title",
    "music", "text", "outro", and "dark" for the music slides of a ``dark`` video
    (no systems, page or measures: the pipeline must exclude them). Bad spec values
    raise ``InputError("VideoSpec.<field>", ...)``; an ffmpeg failure raises
    ``InputError("ffmpeg", <its last stderr line>)`` and leaves no video file.
    """
    plan = plan_video(spec)
    out_path = os.fspath(out_path)
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        raise InputError(out_path, "the output folder does not exist")
    _encode(plan, out_path)
    truth = dict(plan.truth, video=os.path.basename(out_path))
    with open(out_path + ".truth.json", "w", encoding="utf-8") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    return truth


# -- standard set ----------------------------------------------------------------

# Vetted pieces (four-part chorales reduce to a grand staff; the reels repeat): (piece, max_measures).
FOUR_STAVES = (
    ("bach/bwv269.mxl", 16),
    ("bach/bwv66.6.mxl", 24),
    ("bach/bwv104.6.mxl", 24),
    ("bach/bwv11.6.mxl", 16),
    ("bach/bwv10.7.mxl", 14),
)
GRAND_STAFF = (
    ("bach/bwv66.6.mxl", 24),
    ("bach/bwv269.mxl", 16),
    ("bach/bwv103.6.mxl", 24),
    ("bach/bwv140.7.mxl", 18),
    ("bach/bwv101.7.mxl", 15),
)
SINGLE_STAFF = (
    ("ryansMammoth/LadusReel.abc", 12),
    ("ryansMammoth/7thRegimentReel.abc", 16),
    ("ryansMammoth/AWillieWeHaveMissdYouStrathspey.abc", 18),
    ("ryansMammoth/LadiesTriumph.abc", 24),
    ("ryansMammoth/HasteToTheWeddingJig.abc", 16),
)
# One row per standard video: (staves, width, height, fps, container, transition, seconds,
# title, outro, text page, systems per page, dark). Every variant occurs in the first 20.
_TEMPLATES = (
    ("four", 1280, 720, 30, "mp4", "cut", 0.0, 2.5, 0.0, 0.0, None, False),
    ("single", 854, 480, 25, "webm", "crossfade", 0.6, 0.0, 0.0, 2.5, 1, False),
    ("grand", 1920, 1080, 24, "mp4", "scroll", 0.8, 0.0, 2.5, 0.0, None, False),
    ("four", 854, 480, 30, "mp4", "cut", 0.0, 0.0, 0.0, 0.0, 1, True),
    ("grand", 1280, 720, 25, "webm", "crossfade", 0.5, 2.0, 2.0, 2.0, 1, False),
    ("single", 1280, 720, 24, "mp4", "scroll", 0.6, 2.0, 0.0, 0.0, 1, False),
    ("four", 1920, 1080, 25, "webm", "cut", 0.0, 0.0, 2.0, 2.0, 2, False),
    ("single", 1280, 720, 30, "mp4", "crossfade", 1.0, 0.0, 0.0, 0.0, None, False),
    ("grand", 854, 480, 24, "webm", "cut", 0.0, 3.0, 0.0, 0.0, 2, False),
    ("four", 1280, 720, 24, "mp4", "scroll", 0.5, 0.0, 0.0, 3.0, 1, False),
    ("single", 1920, 1080, 30, "webm", "cut", 0.0, 2.0, 2.0, 0.0, None, False),
    ("grand", 1280, 720, 30, "mp4", "crossfade", 0.6, 0.0, 0.0, 0.0, 1, False),
    ("four", 854, 480, 25, "mp4", "crossfade", 0.4, 2.0, 0.0, 0.0, 2, False),
    ("single", 854, 480, 30, "mp4", "cut", 0.0, 0.0, 0.0, 2.0, 2, False),
    ("grand", 1280, 720, 24, "webm", "scroll", 0.6, 0.0, 2.0, 0.0, 2, False),
    ("single", 1280, 720, 25, "mp4", "crossfade", 0.6, 0.0, 0.0, 0.0, 3, False),
    ("single", 1280, 720, 25, "webm", "scroll", 0.7, 2.5, 0.0, 2.0, 1, False),
    ("grand", 1920, 1080, 30, "mp4", "cut", 0.0, 0.0, 0.0, 0.0, 1, False),
    ("four", 1280, 720, 30, "webm", "cut", 0.0, 0.0, 2.5, 0.0, 1, False),
    ("single", 854, 480, 24, "mp4", "crossfade", 0.8, 2.0, 2.0, 2.0, 3, False),
)


def standard_specs(count: int = 20, *, seed: int = 0) -> list[VideoSpec]:
    """A deterministic, varied list of ``count`` specs; the first 20 cover every variant
    (cut/crossfade/scroll, title, outro, text page, 854x480/1280x720/1920x1080,
    24/25/30 fps, mp4/webm, single staff/grand staff/four staves, one dark video).
    ``seed`` changes the pieces and every video's layout, not the variants."""
    if not _is_int(count) or count < 0:
        raise InputError("standard_specs count", f"must be a non-negative integer, got {count!r}")
    if not _is_int(seed):
        raise InputError("standard_specs seed", f"must be an integer, got {seed!r}")
    rng = random.Random(seed)
    pools = {"four": list(FOUR_STAVES), "grand": list(GRAND_STAFF), "single": list(SINGLE_STAFF)}
    for pool in pools.values():
        rng.shuffle(pool)
    used = {k: 0 for k in pools}
    specs = []
    for i in range(count):
        staves, w, h, fps, container, transition, seconds, title, outro, text, spp, dark = _TEMPLATES[i % len(_TEMPLATES)]
        pool = pools[staves]
        piece, measures = pool[used[staves] % len(pool)]
        used[staves] += 1
        if h >= 1080:  # full-HD frames cost the most to encode: shorter videos
            measures = min(measures, 12)
        specs.append(
            VideoSpec(
                piece=piece,
                width=w,
                height=h,
                fps=float(fps),
                container=container,
                transition=transition,
                transition_seconds=seconds if transition != "cut" else 0.6,
                title_seconds=title,
                outro_seconds=outro,
                text_page_seconds=text,
                max_measures=measures,
                systems_per_page=spp,
                dark=dark,
                piano_reduction=staves == "grand",
                seed=seed * 1000 + i,
            )
        )
    return specs


# -- files that must be rejected ---------------------------------------------------


def make_broken_files(out_dir: str, *, from_video: str) -> dict[str, str]:
    """Write files a video reader must reject; returns {path: kind}.

    Kinds: "corrupt" (random bytes named .mp4), "truncated" (the first 40% of
    ``from_video``, same extension; an mp4 written by make_video keeps its index
    at the end, so this is unreadable), "no_audio" (``from_video`` remuxed
    without its audio stream), "not_video" (a text file and a PNG image, both
    named .mp4; the PNG probes as a still image without audio) and "empty".
    """
    import cv2

    out_dir = os.fspath(out_dir)
    from_video = os.fspath(from_video)
    if not os.path.isfile(from_video):
        raise InputError(from_video, "no such video file")
    os.makedirs(out_dir, exist_ok=True)
    ext = os.path.splitext(from_video)[1] or ".mp4"
    data = Path(from_video).read_bytes()
    digest = hashlib.sha256(data[:65536]).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    out: dict[str, str] = {}

    def put(name: str, content: bytes, kind: str):
        path = os.path.join(out_dir, name)
        Path(path).write_bytes(content)
        out[path] = kind

    put("corrupt.mp4", rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(), "corrupt")
    put("truncated" + ext, data[: int(len(data) * 0.4)], "truncated")
    put("not_video.mp4", b"This is not a video.\nJust a few lines of text.\n" * 20, "not_video")
    img = np.full((120, 200), 255, np.uint8)
    cv2.putText(img, "not a video", (10, 65), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 0, 2)
    put("image.mp4", cv2.imencode(".png", img)[1].tobytes(), "not_video")
    put("empty.mp4", b"", "empty")
    no_audio = os.path.join(out_dir, "no_audio" + ext)
    proc = subprocess.run(
        [_ffmpeg(), "-y", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", from_video, "-an", "-c", "copy", no_audio],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise InputError("ffmpeg", _last_line(proc.stderr))
    out[no_audio] = "no_audio"
    return out
