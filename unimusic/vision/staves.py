"""Staff systems on page images and video frames: OpenCV and numpy, no learned weights.

The front end of page OMR and of score-video ingestion. :func:`detect_systems`
finds the five-line staves of a grayscale page (or a frame that shows one),
groups them into systems and returns each system's crop box in reading order;
:func:`crop_systems` cuts those boxes and passes them through the one crop
normalization (:func:`unimusic.vision.normalize.normalize_crop`).

Method, step by step (every threshold is a :class:`DetectConfig` field):

1. *Page and paper*: constant-colour rows and columns at the image's edges that are
   clearly darker than the paper (a video letterbox, and the page edge blended into
   it) are not page. Inside, the paper brightness is estimated by a grey closing
   (max then min filter, wider than any stroke) on a reduced, median-filtered copy
   and divided out, and the commonest level is made white: grey paper, uneven
   lighting and shading become white. What stays far darker than the paper is not
   page either. Everything that is not page is white from here on. Ink (for the
   boxes) is the normalized page below an Otsu threshold, without specks.
2. *Line response*: a grey closing (bridges pinholes) and opening with a long
   horizontal kernel keep staff lines (and long beams) with their darkness; a first
   pass uses a kernel from the image size, the second one of ``line_kernel`` line
   spacings. No fixed threshold: faint, thin, blurred lines keep a weak response.
3. *Spacing*: in sampled columns the line response is thinned to one row per line;
   distances between consecutive lines (and between lines 2, 3, 4 apart, divided)
   vote, weighted by darkness, in quarter-pixel bins. No clear winner: no staves
   (text, noise). Nothing found at that spacing: half of it is tried (every other
   line too faint at small scales).
4. *Skew*: the thin horizontal strokes (a vertical top-hat: thick sloped beams drop
   out) are summed in vertical strips; for each trial angle the strips' row
   profiles are shifted by the drop of a line at that angle and added; the sharpest
   sums (sum of squares, coarse then fine) give candidate angles. A candidate is
   kept only if the staves found on the page turned by it are sharper (their lines'
   darkness more concentrated in one row) than upright. Boxes are then in the
   coordinates of that deskewed page (:func:`deskew`, :attr:`DetectedSystem.skew`).
5. *Staves*: per side-by-side column (found from gaps in the x extent of the line
   response), row-projection peaks of the line response are line candidates,
   weighed by their length; five at a regular spacing near the page's make a staff
   (one may be missing: weak, broken, merged with a beam). The staff's x extent is
   where at least three of its lines are present. Patterns of an odd size that are
   also short, and patterns far fainter than the page's staves or than the paper's
   noise, are dropped.
6. *Systems*: two vertically neighbouring staves belong to one system when a
   vertical stroke at least a staff space tall crosses the whole gap between them
   in some column (system start line, bracket, brace, or barlines drawn through
   the gap). Without any connector on the page, a strictly periodic pattern of
   small and large gaps still groups staves (spacing fallback); otherwise every
   staff is its own system.
7. *Boxes*, as :func:`unimusic.render.systems._cut_page` defines the ground truth:
   neighbouring systems are cut on the emptiest row of the gap between them (the
   middle of the widest blank band); a system keeps the ink of its own rows; its box
   runs from the top line minus ``margin`` staff heights to the bottom line plus
   ``margin``, grown to its own ink plus ``content_pad``, and horizontally over the
   staff lines and its ink, plus ``side_pad`` each side. Beyond the truth's
   definition (its pages hold systems only): above the first and below the last
   system, ink behind a blank band of ``edge_gap`` staff heights (a title, a page
   number, a footer) is not the system's.

Side-by-side columns are read left column first, each top to bottom.
Measured on Verovio pages, video frames and degraded scans: tests/test_staves.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from unimusic.errors import InputError
from unimusic.render.systems import CONTENT_PAD, SIDE_PAD
from unimusic.vision.normalize import CropConfig, normalize_crop

_CROP = CropConfig()


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    # Box definition (the same numbers as the engraved ground truth).
    margin: float = _CROP.margin  # staff heights kept above the top / below the bottom staff line
    content_pad: float = CONTENT_PAD  # staff heights of white around the system's own ink
    side_pad: float = SIDE_PAD  # staff heights of white left and right
    # Paper and ink.
    background_window: float = 1 / 30  # paper estimate: closing window, fraction of the longer image side
    page_level: float = 0.5  # page = paper estimate >= page_level x the bright paper level
    letterbox_tolerance: int = 24  # grey levels: edge rows/columns within this range...
    letterbox_level: float = 0.8  # ...and darker than this x the paper's brightness are letterbox
    ink_level_min: float = 0.35  # Otsu's ink threshold clamped to this..max (fraction of the paper level)
    ink_level_max: float = 0.85
    speck_area: float = 0.2  # ink components smaller than this x spacing^2 (px) are noise
    # Skew.
    max_skew: float = 3.0  # degrees searched either way
    min_skew: float = 0.1  # degrees; a smaller estimate leaves the page untouched
    skew_keep: float = 0.9  # deskew only if the staves are then sharper than this x upright (_Found.sharpness)
    # Staff lines.
    min_spacing: float = 2.0  # px between staff lines: finer pages are not searched
    min_vote_share: float = 0.15  # share of the line-distance votes the spacing must win (_spacing)
    half_spacing_votes: float = 0.25  # half the spacing is tried too when it has this share of the winner's votes
    line_level: int = 20  # line response (darkness 0..255) that counts as a staff line pixel, or less:
    line_level_share: float = 0.4  # this share of the fainter staff-line pixels' darkness (_line_level),
    min_line_level: int = 4  # but at least this above what is left of the paper
    line_kernel: float = 4.0  # opening length in line spacings...
    min_line_run: int = 9  # ...and at least this many px
    spacing_range: tuple[float, float] = (0.75, 1.33)  # a staff's spacing vs the page's most common one
    line_tolerance: float = 0.3  # a line may sit 0.5 px + this fraction of the spacing off the regular grid
    peak_level: float = 0.03  # line peaks below this fraction of the column's strongest are ignored
    line_strength_ratio: float = 0.25  # weakest line of a staff vs its strongest
    min_staff_length: float = 2.0  # staff heights
    max_space_ink: float = 0.6  # a staff's spaces may be at most this much ink (notes, beams); more is a solid shape
    faint_staff: float = 0.4  # a staff whose lines are less dark than this x the page's median staff is dropped,
    noise_margin: float = 3.0  # ...or than this x the paper's noise (standard deviation, _noise) + min_line_level
    odd_size: float = 0.2  # a staff this much taller/shorter than the page's median is dropped when also short
    column_gap: float = 1.5  # staff heights of line-free width that separate side-by-side columns
    # Systems.
    connector_coverage: float = 0.8  # fraction of a gap's rows a connector must cover
    connector_reach: float = 1.0  # staff heights left of the staves searched for braces/brackets
    spacing_ratio: float = 0.6  # spacing fallback: within-system gaps below this x the between-system ones
    # Staff heights of blank rows (beyond the margin) that cut off far ink above the first
    # and below the last system of a column (a title, a page number).
    edge_gap: float = 1.0

    def __post_init__(self):
        def bad(name, value, why):
            raise InputError("detect config", f"{name} {why}, got {value!r}")

        for f in dataclasses.fields(self):
            if isinstance(getattr(self, f.name), bool):
                bad(f.name, getattr(self, f.name), "must be a number")

        for name in ("margin", "content_pad", "side_pad", "min_skew", "connector_reach", "noise_margin"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                bad(name, v, "must be a finite number >= 0")
        for name in ("background_window", "page_level", "letterbox_level", "skew_keep", "peak_level", "line_level_share", "line_strength_ratio", "connector_coverage", "spacing_ratio", "speck_area", "odd_size", "faint_staff", "min_vote_share", "half_spacing_votes", "max_space_ink"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 1):
                bad(name, v, "must be in (0, 1]")
        for name in ("max_skew", "min_spacing", "line_kernel", "min_staff_length", "column_gap", "edge_gap", "line_tolerance"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(name, v, "must be a finite number > 0")
        if self.max_skew > 45:
            bad("max_skew", self.max_skew, "must be at most 45 degrees")
        if not 0 < self.ink_level_min < self.ink_level_max < 1:
            bad("ink_level_min/max", (self.ink_level_min, self.ink_level_max), "must satisfy 0 < min < max < 1")
        try:
            lo, hi = self.spacing_range
            ok = 0 < lo < 1 < hi < math.inf
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad("spacing_range", self.spacing_range, "must be (low, high) with 0 < low < 1 < high")
        if not (isinstance(self.min_line_run, (int, np.integer)) and 3 <= self.min_line_run <= 1000):
            bad("min_line_run", self.min_line_run, "must be an integer 3..1000")
        for name in ("line_level", "min_line_level", "letterbox_tolerance"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255):
                bad(name, v, "must be an integer grey level 0..255")
        if not 1 <= self.min_line_level <= self.line_level:
            bad("min_line_level", self.min_line_level, f"must be 1..line_level ({self.line_level})")


@dataclasses.dataclass(frozen=True)
class Staff:
    top: float  # y of the top staff line (centre), page px
    bottom: float  # y of the bottom staff line
    left: float  # x extent of the staff lines, half-open [left, right)
    right: float

    @property
    def height(self) -> float:
        return self.bottom - self.top


@dataclasses.dataclass(frozen=True)
class DetectedSystem:
    box: tuple[int, int, int, int]  # (left, top, right, bottom), half-open, page px (same definition as EngravedSystem.page_box)
    staves: tuple[Staff, ...]
    staff_height: float  # median staff height of the system (px)
    # Degrees the page was rotated (counter-clockwise, about the image centre, as
    # cv2.getRotationMatrix2D) before detection; boxes are in that deskewed page.
    skew: float = 0.0
    # (left, top, right, bottom): the part of the (deskewed) page whose ink belongs to this
    # system; crop_systems paints the rest of the box white (neighbours' rows, letterbox).
    own: tuple[int, int, int, int] | None = None


# --------------------------------------------------------------------------- input


def _check_gray(gray, source: str) -> np.ndarray:
    if not isinstance(gray, np.ndarray):
        raise InputError(source, f"expected a numpy array, got {type(gray).__name__}")
    if gray.ndim != 2:
        raise InputError(source, f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        raise InputError(source, f"expected uint8 pixels, got {gray.dtype}")
    if gray.size == 0:
        raise InputError(source, f"empty image (shape {gray.shape})")
    return np.ascontiguousarray(gray)


def to_gray(image: np.ndarray, *, source: str = "<image>") -> np.ndarray:
    """BGR, BGRA (composited over white) or grey uint8 -> 2-D uint8 grey."""
    import cv2

    if not isinstance(image, np.ndarray):
        raise InputError(source, f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(source, f"expected uint8 pixels, got {image.dtype}")
    if image.size == 0:
        raise InputError(source, f"empty image (shape {image.shape})")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0])
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY).astype(np.uint16)
        alpha = image[:, :, 3].astype(np.uint16)
        return ((gray * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    raise InputError(source, f"expected a grey, BGR or BGRA image, got shape {image.shape}")


def deskew(gray: np.ndarray, angle: float) -> np.ndarray:
    """``gray`` rotated counter-clockwise by ``angle`` degrees about its centre, same size, white fill."""
    import cv2

    if angle == 0:
        return gray
    h, w = gray.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


# --------------------------------------------------------------------------- paper and ink


@dataclasses.dataclass
class _Page:
    norm: np.ndarray  # uint8, paper 255, non-page white
    page_box: tuple[int, int, int, int]  # bounding box of the page area (x0, y0, x1, y1)
    threshold: int  # ink: norm < threshold


def _odd(v: float) -> int:
    v = max(1, int(round(v)))
    return v if v % 2 else v + 1


def _uniform_border(gray: np.ndarray, tol: int, dark: float) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) inside the rows and columns at the image's edges that have one
    colour (within ``tol``) darker than ``dark`` (a letterbox, the blended page edge);
    None for an image that is all such rows."""
    h, w = gray.shape
    x0, y0, x1, y1 = 0, 0, w, h

    def keep(sub: np.ndarray, axis: int) -> np.ndarray:
        hi, lo = sub.max(axis=axis), sub.min(axis=axis)
        return np.flatnonzero((hi.astype(np.int16) - lo > tol) | (hi >= dark))

    for _ in range(3):
        cols = keep(gray[y0:y1, x0:x1], 0)
        if not cols.size:
            return None
        nx0, nx1 = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
        rows = keep(gray[y0:y1, nx0:nx1], 1)
        if not rows.size:
            return None
        ny0, ny1 = y0 + int(rows[0]), y0 + int(rows[-1]) + 1
        if (nx0, ny0, nx1, ny1) == (x0, y0, x1, y1):
            break
        x0, y0, x1, y1 = nx0, ny0, nx1, ny1
    # Next to a letterbox, up to two more constant rows/columns of any brightness are the
    # page edge blended with it by scaling.
    def flat(line: np.ndarray) -> bool:
        return line.size > 0 and int(line.max()) - int(line.min()) <= tol

    for _ in range(2):
        if x0 > 0 and x1 - x0 > 2 and flat(gray[y0:y1, x0]):
            x0 += 1
        if x1 < w and x1 - x0 > 2 and flat(gray[y0:y1, x1 - 1]):
            x1 -= 1
        if y0 > 0 and y1 - y0 > 2 and flat(gray[y0, x0:x1]):
            y0 += 1
        if y1 < h and y1 - y0 > 2 and flat(gray[y1 - 1, x0:x1]):
            y1 -= 1
    return x0, y0, x1, y1


def _paper(gray: np.ndarray, cfg: DetectConfig) -> _Page:
    """Paper-normalized page (paper 255), the page's bounding box and the ink threshold.

    Constant-colour rows and columns at the edges (a letterbox) are not page; inside,
    the paper is estimated by a grey closing on a reduced copy and divided out, and
    what is far darker than the paper (a dark surround that is not constant) is not page
    either. Whatever is not page is white in the result.
    """
    import cv2

    h, w = gray.shape
    blank = _Page(np.full_like(gray, 255), (0, 0, w, h), 0)
    # The paper's brightness, however little of the frame the page fills (median: not a speck).
    bright = float(cv2.medianBlur(np.ascontiguousarray(gray[:: max(1, h // 300), :: max(1, w // 300)]), 3).max())
    inner = _uniform_border(gray, cfg.letterbox_tolerance, cfg.letterbox_level * bright)
    if inner is None:
        return blank
    x0, y0, x1, y1 = inner
    sub = gray[y0:y1, x0:x1]
    sh, sw = sub.shape
    # The paper is estimated on a copy about 400 px on its longer side (at least halved),
    # median-filtered so that the closing's maximum does not pick up noise.
    f = max(2, int(max(sh, sw) // 400))
    small = cv2.resize(sub, (max(1, sw // f), max(1, sh // f)), interpolation=cv2.INTER_AREA)
    small = cv2.medianBlur(small, 3)
    k = _odd(max(3.0, cfg.background_window * max(sh, sw) / f))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    bg_small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    level = float(np.percentile(bg_small, 95))
    if level < 8:  # black: no paper anywhere
        return blank
    page_small = (bg_small >= cfg.page_level * level).astype(np.uint8)
    bg = cv2.resize(bg_small, (sw, sh), interpolation=cv2.INTER_LINEAR)
    norm_sub = cv2.divide(sub, np.maximum(bg, 1), scale=255)
    # The commonest level (the paper, lit evenly now) becomes white.
    mode = int(np.argmax(np.bincount(norm_sub[::3, ::3].ravel(), minlength=256)[64:])) + 64
    if mode < 255:
        norm_sub = cv2.convertScaleAbs(norm_sub, alpha=255.0 / mode)
    box = (x0, y0, x1, y1)
    if not page_small.all():
        # Shrink the page by the up-sampling blur so the page edge is not ink.
        page = cv2.resize(page_small, (sw, sh), interpolation=cv2.INTER_NEAREST)
        page = cv2.erode(page, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * f + 3, 2 * f + 3)), borderType=cv2.BORDER_REPLICATE)
        norm_sub[page == 0] = 255
        ys, xs = np.nonzero(page_small)
        box = (x0 + int(xs.min() * f), y0 + int(ys.min() * f), x0 + int(min(sw, (xs.max() + 1) * f)), y0 + int(min(sh, (ys.max() + 1) * f)))
    if (x0, y0, x1, y1) == (0, 0, w, h):
        norm = norm_sub
    else:
        norm = np.full_like(gray, 255)
        norm[y0:y1, x0:x1] = norm_sub
    otsu, _ = cv2.threshold(norm_sub, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = int(np.clip(otsu, cfg.ink_level_min * 255, cfg.ink_level_max * 255))
    return _Page(norm, box, thr)


def _vertical_runs(ink: np.ndarray) -> np.ndarray:
    """Lengths of vertical runs of ink in about 300 sampled columns."""
    h, w = ink.shape
    step = max(1, w // 300)
    padded = np.zeros((h + 2, (w + step - 1) // step), np.int8)
    padded[1:-1] = ink[:, ::step]
    d = np.diff(padded, axis=0)
    starts = np.flatnonzero(d.T == 1)
    ends = np.flatnonzero(d.T == -1)
    return ends - starts


def _spacing(resp: np.ndarray, level: float, cfg: DetectConfig) -> tuple[float, float, float] | None:
    """(line spacing, line thickness, half share) in px from the line response, or None.

    In sampled columns, line pixels (``resp >= level``) are thinned to one row per line
    (the vertical maximum, so that lines a pixel or two apart stay apart). The distances
    between vertically consecutive lines, and between lines two, three and four apart
    divided by two, three and four (exact for evenly spaced staff lines even when each
    single distance is rounded), vote in quarter-pixel bins; the spacing is the mean of
    the votes near the winning bin. The thickness is the commonest vertical run length;
    the half share is the weight of the votes for half the spacing relative to the winner's.
    """
    h, w = resp.shape
    step = max(1, w // 300)
    cols = np.ascontiguousarray(resp[:, ::step].T).astype(np.int16)  # (columns, rows)
    on = cols >= level
    up = np.empty_like(cols)
    up[:, 0] = -1
    up[:, 1:] = cols[:, :-1]
    down = np.empty_like(cols)
    down[:, -1] = -1
    down[:, :-1] = cols[:, 1:]
    c_peak, y_peak = np.nonzero(on & (cols >= up) & (cols > down))
    if y_peak.size < 20:
        return None
    padded = np.zeros((cols.shape[0], h + 2), np.int8)
    padded[:, 1:-1] = on
    d = np.diff(padded, axis=1)
    _, y_start = np.nonzero(d == 1)
    _, y_end = np.nonzero(d == -1)
    black = y_end - y_start
    c_start, centre = c_peak, y_peak.astype(np.float64)
    strength = cols[c_peak, y_peak].astype(np.float64)
    max_d = max(4.0, h / 8)
    votes, weights = [], []
    for k in (1, 2, 3, 4):
        same = c_start[k:] == c_start[:-k]
        votes.append(((centre[k:] - centre[:-k]) / k)[same])
        weights.append(np.minimum(strength[k:], strength[:-k])[same])
    votes, weights = np.concatenate(votes), np.concatenate(weights)
    keep = (votes >= cfg.min_spacing) & (votes <= max_d)
    votes, weights = votes[keep], weights[keep]
    if votes.size < 20:
        return None
    # Each vote weighs as much as the fainter of its two lines: faint noise barely counts.
    hist = np.bincount(np.round(votes * 4).astype(np.int64), weights=weights)
    smooth = np.convolve(hist, np.ones(3), mode="same")
    mode = np.argmax(smooth) / 4.0
    near = np.abs(votes - mode) <= max(0.5, 0.1 * mode)
    if weights[near].sum() < cfg.min_vote_share * weights.sum():
        return None  # no regular spacing: text, noise (staves win a third of the votes and more)
    near = votes[near]
    # Votes for half the spacing (every other line missed at a small scale?), relative.
    half_bin = int(round(mode * 2))
    half_share = float(smooth[half_bin] / smooth.max()) if 0 <= half_bin < len(smooth) else 0.0
    spacing = float(near.mean())
    thick_hist = np.bincount(black[black < spacing])
    thickness = float(np.argmax(thick_hist)) if thick_hist.size else 1.0
    return spacing, max(1.0, thickness), half_share


def _line_response(dark: np.ndarray, length: int, bridge: int) -> np.ndarray:
    """Darkness of long horizontal strokes: grey closing (bridges gaps of ``bridge`` px)
    then opening with a ``length`` px horizontal kernel."""
    import cv2

    resp = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, np.ones((1, bridge), np.uint8))
    return cv2.morphologyEx(resp, cv2.MORPH_OPEN, np.ones((1, length), np.uint8))


def _estimate_skew(dark: np.ndarray, cfg: DetectConfig) -> list[float]:
    """Candidate angles (degrees, best first) by which the lines rise to the right, i.e.
    the counter-clockwise turns that would make them horizontal; [] when nothing is found.
    Besides the best, other local maxima scoring at least 80% of it are candidates.

    The page is summed in vertical strips; for a trial angle each strip's row
    profile is shifted by the drop of a line at that angle and the profiles are
    added: the sum of squares of the result peaks when lines line up.
    """
    import cv2

    h, w = dark.shape
    n_strips = int(min(16, max(4, w // 48)))
    strip_w = w // n_strips
    if strip_w < 4:
        return []
    prof = cv2.resize(dark[:, : strip_w * n_strips], (n_strips, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    if not prof.any():
        return []
    # Rows beyond the reach of any trial shift are zeros on either side.
    xc = ((np.arange(n_strips) + 0.5) * strip_w - w / 2).astype(np.float32)
    reach = int(math.ceil(math.tan(math.radians(cfg.max_skew + 0.5)) * w / 2)) + 2
    padded = np.zeros((h + 2 * reach, n_strips), np.float32)
    padded[reach : reach + h] = prof
    flat = padded.T.ravel()  # strip-major: strip j's rows at j * (h + 2 reach)
    base = (np.arange(n_strips) * (h + 2 * reach) + reach)[None, :]
    rows = np.arange(h)[:, None]

    def score(angle: float, interpolate: bool) -> float:
        shift = math.tan(math.radians(angle)) * xc
        if not interpolate:
            aligned = flat[rows + (base + np.rint(shift).astype(np.int64))].sum(axis=1)
        else:
            i0 = np.floor(shift)
            frac = (shift - i0)[None, :]
            idx = rows + (base + i0.astype(np.int64))
            aligned = (flat[idx] * (1 - frac) + flat[idx + 1] * frac).sum(axis=1)
        return float(np.dot(aligned, aligned))

    coarse = np.arange(-cfg.max_skew, cfg.max_skew + 1e-9, 0.25)
    sc = np.array([score(a, False) for a in coarse])
    peaks = [i for i in range(len(sc)) if (i == 0 or sc[i] >= sc[i - 1]) and (i == len(sc) - 1 or sc[i] > sc[i + 1])]
    peaks = sorted(peaks, key=lambda i: -sc[i])[:3]
    peaks = [i for i in peaks if sc[i] >= 0.8 * sc[peaks[0]]]
    out = []
    step = 0.05
    for i in peaks:
        fine = coarse[i] + np.arange(-0.25, 0.25 + 1e-9, step)
        s = [score(a, True) for a in fine]
        j = int(np.argmax(s))
        angle = float(fine[j])
        if 0 < j < len(s) - 1:
            denom = s[j - 1] - 2 * s[j] + s[j + 1]
            if denom < 0:
                angle += step * 0.5 * (s[j - 1] - s[j + 1]) / denom
        out.append(angle)
    return out


# --------------------------------------------------------------------------- staff lines


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, end) runs of True in a 1-D bool array."""
    m = np.concatenate(([False], mask, [False]))
    d = np.flatnonzero(m[1:] != m[:-1])
    return list(zip(d[::2].tolist(), d[1::2].tolist()))


def _line_peaks(prof: np.ndarray, line_bin: np.ndarray, spacing: float, thickness: float, cfg: DetectConfig):
    """Line candidates (y, length) from a row projection ``prof`` of the line response.

    The length (:func:`_line_length`) is the number of columns of ``line_bin`` (line pixels of the same
    region) that hold the line: a staff line's is its staff's length whatever
    its thickness or sub-pixel position, a thick beam's only the beam's.
    """
    import cv2

    prof = prof.astype(np.float32)
    if prof.max() <= 0:
        return np.zeros(0), np.zeros(0)
    half = max(1, int(round(spacing * 0.35)))
    pm = cv2.dilate(prof.reshape(-1, 1), np.ones((2 * half + 1, 1), np.uint8)).ravel()
    thr = cfg.peak_level * float(prof.max())
    is_max = (prof >= pm) & (prof > thr)
    r = max(1, int(math.ceil(thickness / 2)))
    ys, ss = [], []
    n = len(prof)
    for a, b in _runs(is_max):
        lo, hi = max(0, a - r), min(n, b + r)
        w = prof[lo:hi]
        y = float((np.arange(lo, hi) * w).sum(dtype=np.float64) / w.sum(dtype=np.float64))
        ys.append(y)
        ss.append(_line_length(line_bin, y, r))
    ys, ss = np.array(ys), np.array(ss)
    if ys.size:
        # Plateaus that touch (a thick line split into two maxima) become one.
        keep = np.ones(len(ys), bool)
        for i in range(1, len(ys)):
            if keep[i - 1] and ys[i] - ys[i - 1] < 0.5 * spacing:
                j = i if ss[i] < ss[i - 1] else i - 1
                keep[j] = False
        ys, ss = ys[keep], ss[keep]
    return ys, ss


def _line_length(line_bin: np.ndarray, y: float, r: int) -> float:
    """Columns of ``line_bin`` with a line pixel within ``r`` rows of row ``y``."""
    c = int(round(y))
    if c + r < 0 or c - r >= line_bin.shape[0]:
        return 0.0
    return float(np.count_nonzero(line_bin[max(0, c - r) : c + r + 1].any(axis=0)))


def _line_darkness(resp: np.ndarray, y: float, r: int, left: float, right: float) -> float:
    """Median over the line's columns of its darkest pixel within ``r`` rows of ``y``."""
    c = int(round(y))
    band = resp[max(0, c - r) : c + r + 1, int(left) : int(right)]
    return float(np.median(band.max(axis=0))) if band.size else 0.0


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line y = intercept + slope * k through (k, y) points (two or more)."""
    n = len(points)
    mk = sum(k for k, _ in points) / n
    my = sum(y for _, y in points) / n
    skk = sum((k - mk) ** 2 for k, _ in points)
    slope = sum((k - mk) * (y - my) for k, y in points) / skk
    return my - slope * mk, slope


def _group_staves(ys: np.ndarray, ss: np.ndarray, strength_at, spacing: float, cfg: DetectConfig) -> list[list[float]]:
    """Five-line patterns (line y positions) among the candidates, best first, not overlapping.

    A pattern starts at a candidate and the next one (line 1) or the one after a
    missing line (line 2); the remaining lines are looked for where the regular
    grid fitted so far puts them. At most one line may be missing.
    """
    import bisect

    lo, hi = cfg.spacing_range[0] * spacing, cfg.spacing_range[1] * spacing
    y = [float(v) for v in ys]
    st = [float(v) for v in ss]
    n = len(y)

    def nearest(target: float, tol: float) -> int | None:
        i = bisect.bisect_left(y, target)
        best = None
        for j in (i - 1, i):
            if 0 <= j < n and abs(y[j] - target) <= tol and (best is None or abs(y[j] - target) < abs(y[best] - target)):
                best = j
        return best

    proposals = []
    for i in range(n):
        for j in range(i + 1, n):
            gap = y[j] - y[i]
            if gap > 2 * hi:
                break
            for kj in (1, 2):
                delta = gap / kj
                if not lo <= delta <= hi:
                    continue
                matched = {0: i, kj: j}
                missing = kj - 1
                intercept, slope = y[i], delta
                for k in range(kj + 1, 5):
                    found = nearest(intercept + slope * k, 0.5 + cfg.line_tolerance * slope)
                    if found is None:
                        missing += 1
                        if missing > 1:
                            break
                    else:
                        matched[k] = found
                        intercept, slope = _fit([(q, y[m]) for q, m in matched.items()])
                if missing > 1:
                    continue
                # A matched peak far weaker than the others is not a line of this staff
                # (a beam or a hairpin at the right height): it counts as missing.
                strongest = max(st[m] for m in matched.values())
                weak = [q for q, m in matched.items() if st[m] < cfg.line_strength_ratio * strongest]
                if missing + len(weak) > 1 or len(matched) - len(weak) < 4:
                    continue
                for q in weak:
                    del matched[q]
                if weak:
                    intercept, slope = _fit([(q, y[m]) for q, m in matched.items()])
                if not lo <= slope <= hi:
                    continue
                strengths = [st[m] for m in matched.values()]
                lines = [y[matched[k]] if k in matched else intercept + slope * k for k in range(5)]
                if 4 not in matched:
                    # Four lines found from the top: the fifth is above or below, whichever is longer.
                    above, below = lines[0] - slope, lines[3] + slope
                    lines = [above] + lines[:4] if strength_at(above) > strength_at(below) else lines[:4] + [below]
                # Five lines beat four; then the weakest line decides (a beam next to
                # a staff makes a strong peak, but never five regular ones).
                proposals.append(((len(matched), min(strengths)), lines, slope))
    proposals.sort(key=lambda p: p[0], reverse=True)
    taken: list[tuple[float, float]] = []
    out = []
    for _, lines, slope in proposals:
        a, b = lines[0] - 0.5 * slope, lines[-1] + 0.5 * slope
        if any(a < tb and ta < b for ta, tb in taken):
            continue
        taken.append((a, b))
        out.append(lines)
    return sorted(out)


def _staff_extent(resp: np.ndarray, floor: float, lines: list[float], x0: int, x1: int, thickness: float, height: float, cfg: DetectConfig):
    """(left, right, darkness) of a staff: [left, right) where at least three of its lines
    are at least half as dark as the staff's lines typically are (and above ``floor``);
    gaps up to a staff height are bridged, the longest stretch wins; darkness: the
    lines' typical darkness there. None when shorter than ``min_staff_length``."""
    h = resp.shape[0]
    r = max(1, int(math.ceil(thickness / 2)))
    bands = []
    for y in lines:
        a, b = max(0, int(math.floor(y)) - r), min(h, int(math.ceil(y)) + r + 1)
        bands.append(resp[a:b, x0:x1].max(axis=0) if b > a else np.zeros(x1 - x0, resp.dtype))
    bands = np.array(bands)
    typical = [float(np.median(v[v >= floor])) for v in bands if np.count_nonzero(v >= floor)]
    if not typical:
        return None
    thr = max(floor, 0.5 * float(np.median(typical)))
    present = np.count_nonzero(bands >= thr, axis=0) >= 3
    runs = _runs(present)
    if not runs:
        return None
    merged = [list(runs[0])]
    for a, b in runs[1:]:
        if a - merged[-1][1] <= height:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    a, b = max(merged, key=lambda ab: int(present[ab[0] : ab[1]].sum()))
    if b - a < cfg.min_staff_length * height:
        return None
    return x0 + a, x0 + b, float(np.median(bands[:, a:b].max(axis=0)))


# --------------------------------------------------------------------------- systems


def _connected(dark: np.ndarray, level: float, a: Staff, b: Staff, spacing: float, thickness: float, cfg: DetectConfig) -> bool:
    """Does ink cross the whole gap between staff ``a`` and staff ``b`` below it?

    Only vertical strokes at least a staff space tall count (a grey opening with a
    vertical kernel: noise, text and note heads do not survive); a curved brace is
    caught by letting each row's stroke lie within a staff space of the others.
    """
    import cv2

    h, w = dark.shape
    r0 = int(math.ceil(a.bottom + thickness / 2 + 1))
    r1 = int(math.floor(b.top - thickness / 2 - 1))
    if r1 - r0 < 1:
        return True  # staves touch
    if max(a.left, b.left) >= min(a.right, b.right):
        return False  # not above one another
    reach = cfg.connector_reach * max(a.height, b.height)
    x0 = int(max(0, min(a.left, b.left) - reach))
    x1 = int(min(w, max(a.right, b.right) + 1))
    region = dark[max(0, r0 - 2) : min(h, r1 + 2), x0:x1]
    tall = max(3, int(round(spacing)))
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((tall, 1), np.uint8))
    region = region[r0 - max(0, r0 - 2) :][: r1 - r0]
    k = _odd(spacing)
    region = cv2.dilate((region >= level).view(np.uint8), np.ones((1, k), np.uint8))
    coverage = region.mean(axis=0)
    return bool(coverage.max() >= cfg.connector_coverage) if coverage.size else False


def _group_systems(dark, level, staves: list[Staff], spacing, thickness, cfg) -> list[list[Staff]]:
    if not staves:
        return []
    links = [_connected(dark, level, a, b, spacing, thickness, cfg) for a, b in zip(staves, staves[1:])]
    if not any(links) and len(staves) >= 4:
        links = _periodic_links(staves, cfg) or links
    groups = [[staves[0]]]
    for s, linked in zip(staves[1:], links):
        if linked:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _periodic_links(staves: list[Staff], cfg: DetectConfig) -> list[bool] | None:
    """Spacing fallback: k staves per system when the gaps inside systems are all
    clearly smaller than every gap between them (at least two systems)."""
    gaps = [b.top - a.bottom for a, b in zip(staves, staves[1:])]
    n = len(staves)
    for k in range(2, 7):
        if n % k or n // k < 2:
            continue
        inside = [g for i, g in enumerate(gaps) if i % k != k - 1]
        between = [g for i, g in enumerate(gaps) if i % k == k - 1]
        if max(inside) < cfg.spacing_ratio * min(between):
            return [i % k != k - 1 for i in range(len(gaps))]
    return None


def _cut(rowcnt: np.ndarray, a: int, b: int, fallback: float) -> int:
    """The emptiest row of [a, b): middle of the widest band of such rows."""
    if b <= a:
        return int(round(fallback))
    seg = rowcnt[a:b]
    low = seg.min()
    runs = _runs(seg == low)
    s, e = max(runs, key=lambda r: (r[1] - r[0], -abs((r[0] + r[1]) / 2 - (fallback - a))))
    return a + (s + e - 1) // 2 if e - s > 1 else a + s


def _columns(resp_bin: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """x-ranges of side-by-side columns of staff lines."""
    occupied = np.count_nonzero(resp_bin, axis=0) >= 3
    runs = _runs(occupied)
    if not runs:
        return []
    merged = [list(runs[0])]
    for a, b in runs[1:]:
        if a - merged[-1][1] < gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


# --------------------------------------------------------------------------- API


@dataclasses.dataclass
class _Found:
    ink: np.ndarray  # uint8 0/1
    dark: np.ndarray  # 255 - normalized page
    spacing: float = 0.0
    thickness: float = 1.0
    resp: np.ndarray | None = None  # line response
    columns: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    staves: list[list[Staff]] = dataclasses.field(default_factory=list)  # per column, top to bottom
    # Sum over staff lines of length x the share of the line's response (within half a
    # spacing) that lies in its darkest row: thin lines along the rows score high; lines
    # that cross rows (a skew) and thick beams low.
    sharpness: float = 0.0
    level: float = 0.0  # line response that counts as a line pixel
    floor: float = 0.0  # the least line response that may


def _line_level(resp: np.ndarray, cfg: DetectConfig) -> tuple[float, float]:
    """(level, floor): line response that counts as a line pixel, and the least that may.

    The floor lies ``min_line_level`` above what is left of the paper; the level is
    ``line_level``, or ``line_level_share`` of the darkness of the fainter staff-line pixels
    (the lower quartile in the rows with the most response) when lines are faint (thin lines
    blurred or scaled down), but not below the floor."""
    floor = float(np.median(resp[::4, ::4])) + cfg.min_line_level
    rows = resp.sum(axis=1, dtype=np.int64)
    top = np.argsort(rows)[-max(5, resp.shape[0] // 50) :]
    sample = resp[top]
    sample = sample[sample > 0]
    if not sample.size:
        return max(floor, float(cfg.line_level)), floor
    return float(np.clip(cfg.line_level_share * np.percentile(sample, 25), floor, max(floor, cfg.line_level))), floor


def _noise(dark: np.ndarray) -> float:
    """Standard deviation of pixel noise, from the median absolute horizontal Laplacian
    (2x - left - right has sqrt(6) times the noise's deviation) on every fourth row;
    smooth shading and blur do not count, the paper's grain does."""
    rows = dark[::4].astype(np.int16)
    lap = np.abs(2 * rows[:, 1:-1] - rows[:, :-2] - rows[:, 2:])
    return float(np.median(lap)) / (0.6745 * math.sqrt(6))


def _find_staves(norm: np.ndarray, threshold: int, cfg: DetectConfig, est: tuple[float, float] | None = None) -> _Found:
    """Staves of a (deskewed) normalized page, per side-by-side column.

    ``est``: (spacing, thickness) when already known (the same page at another angle).
    """
    import cv2

    h, w = norm.shape
    ink, dark = (norm < threshold).view(np.uint8), cv2.bitwise_not(norm)
    if est is not None:
        return _search(ink, dark, *est, cfg)
    # Staff lines: first with a kernel from the image size, then with one from the spacing.
    resp = _line_response(dark, max(9, max(h, w) // 40), 3)
    level, _ = _line_level(resp, cfg)
    est = _spacing(resp, level, cfg)
    if est is None:
        return _Found(ink=ink, dark=dark)
    spacing, thickness, half_share = est
    found = _search(ink, dark, spacing, thickness, cfg)
    if spacing / 2 >= cfg.min_spacing and (not any(found.staves) or half_share >= cfg.half_spacing_votes):
        # Every other line too faint to count (thin lines at a small scale): half the spacing,
        # kept when its staves are the sharper.
        half = _search(ink, dark, spacing / 2, thickness, cfg)
        if half.sharpness > found.sharpness:
            return half
    return found


def _search(ink: np.ndarray, dark: np.ndarray, spacing: float, thickness: float, cfg: DetectConfig) -> _Found:
    """Staves with lines ``spacing`` px apart, per side-by-side column."""
    found = _Found(ink=ink, dark=dark)
    resp = _line_response(found.dark, max(cfg.min_line_run, int(round(cfg.line_kernel * spacing))), max(3, _odd(spacing / 4)))
    level, found.floor = _line_level(resp, cfg)
    resp_bin = resp >= level
    found.level = level
    found.spacing, found.thickness, found.resp = spacing, thickness, resp
    found.columns = _columns(resp_bin, cfg.column_gap * 4 * spacing)
    r = max(1, int(math.ceil(thickness / 2)))
    candidates = []  # (column, lines, extent)
    for ci, (cx0, cx1) in enumerate(found.columns):
        prof = resp[:, cx0:cx1].sum(axis=1, dtype=np.float64) / 255.0
        # Lengths count faint pixels too (down to the floor): thin lines at small scales are
        # fainter on some rows than on others.
        line_bin = resp[:, cx0:cx1] >= found.floor
        ys, ss = _line_peaks(prof, line_bin, spacing, thickness, cfg)
        for lines in _group_staves(ys, ss, lambda y: _line_length(line_bin, y, r), spacing, cfg):
            ext = _staff_extent(resp, found.floor, lines, cx0, cx1, thickness, lines[-1] - lines[0], cfg)
            if ext is not None:
                candidates.append((ci, lines, ext))
    # A short pattern of another size than the page's staves is not a staff (text, a hairpin
    # crossing beams...): real small staves (cue, ossia) are rarely that short.
    # Nor is a pattern far fainter than the page's staves (noise that happens to line up).
    if candidates:
        med_h = float(np.median([c[1][-1] - c[1][0] for c in candidates]))
        med_len = float(np.median([c[2][1] - c[2][0] for c in candidates]))
        med_dark = float(np.median([c[2][2] for c in candidates]))
        # Lines must also stand out of the paper's noise.
        least = max(cfg.faint_staff * med_dark, cfg.noise_margin * _noise(found.dark) + cfg.min_line_level)
        candidates = [
            c for c in candidates
            if (abs((c[1][-1] - c[1][0]) / med_h - 1) <= cfg.odd_size or c[2][1] - c[2][0] >= 0.5 * med_len)
            and c[2][2] >= least
        ]
    found.staves = [[] for _ in found.columns]
    for ci, lines, ext in candidates:
        found.staves[ci].append(Staff(top=lines[0], bottom=lines[-1], left=float(ext[0]), right=float(ext[1])))
        half = max(1, int(round(0.5 * (lines[-1] - lines[0]) / 4)))
        for y in lines:
            c = int(round(y))
            band = resp[max(0, c - half) : c + half + 1, ext[0] : ext[1]].sum(axis=1, dtype=np.float64)
            if band.size and band.sum() > 0:
                found.sharpness += (ext[1] - ext[0]) * float(band.max() / band.sum())
    return found


def _space_ink(ink: np.ndarray, staff: Staff) -> float:
    """Share of ink along the middle rows of a staff's four spaces, over its extent."""
    x0, x1 = int(round(staff.left)), int(round(staff.right))
    if x1 - x0 < 2:
        return 1.0
    space = staff.height / 4
    rows = [r for r in (int(round(staff.top + (k + 0.5) * space)) for k in range(4)) if 0 <= r < ink.shape[0]]
    if not rows:
        return 1.0
    return float(np.mean([np.count_nonzero(ink[r, x0:x1]) / (x1 - x0) for r in rows]))


PAGE_EDGE_PX = 3  # rows/columns at the inside of a page's edge that blend with the surround


def detect_systems(gray: np.ndarray, *, config: DetectConfig = DetectConfig(), source: str = "<image>") -> list[DetectedSystem]:
    """Staff systems of a grey page or video frame, in reading order ([] when there is no staff).

    ``gray``: 2-D uint8 (0 black, 255 white). Boxes are (left, top, right, bottom),
    half-open, in page px (of the deskewed page when ``skew`` is not 0).
    """
    import cv2

    cfg = config
    gray = _check_gray(gray, source)
    h, w = gray.shape
    if min(h, w) < 16:
        return []  # too small to hold a staff
    page = _paper(gray, cfg)
    found = found0 = _find_staves(page.norm, page.threshold, cfg)
    # Skew from thin horizontal strokes only (thick sloped beams would pull it) ...
    runs = _vertical_runs(found.ink)
    t0 = int(np.argmax(np.bincount(runs))) if runs.size else 1
    thin = cv2.morphologyEx(found.dark, cv2.MORPH_TOPHAT, np.ones((2 * max(1, t0) + 1, 1), np.uint8))
    skew = 0.0
    best = cfg.skew_keep * found.sharpness
    for angle in _estimate_skew(thin, cfg):
        if abs(angle) < cfg.min_skew:
            continue  # upright: that is the page as it is
        # ... and kept only when the staff lines of the deskewed page run straighter along
        # the rows (a long sloped beam next to a short staff can outweigh its lines).
        # The spacing does not depend on the angle: when staves were found upright, the
        # deskewed page is searched with their spacing (noise can fake a regular pattern).
        est = (found0.spacing, found0.thickness) if any(found0.staves) else None
        turned = _find_staves(deskew(page.norm, angle), page.threshold, cfg, est)
        if turned.sharpness > best:
            found, skew, best = turned, angle, turned.sharpness
    # Five "lines" whose spaces are mostly ink are the edges of a solid shape (bold
    # lettering on a title card, a filled box), not a staff.
    found.staves = [[st for st in col if _space_ink(found.ink, st) <= cfg.max_space_ink] for col in found.staves]
    if not any(found.staves):
        return []
    ink, dark, spacing, thickness = found.ink, found.dark, found.spacing, found.thickness

    # Ink without specks (noise) for the boxes; a page without grain or lone ink pixels
    # is taken as it is (the components are the slowest step).
    lone = cv2.boxFilter(ink, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT) == 1
    if _noise(dark) < 1.0 and np.count_nonzero(lone & (ink > 0)) <= ink.size // 100_000:
        clean = ink.astype(bool)
    else:
        _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
        min_area = max(2, int(round(cfg.speck_area * spacing * spacing)))
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area
        keep[0] = False
        clean = keep[labels] if not keep[1:].all() else ink.astype(bool)

    # The page's own edge, blended into a letterbox or a border, is not ink of any system.
    ex0, ey0, ex1, ey1 = page.page_box
    edge = PAGE_EDGE_PX
    if ex0 > 0:
        clean[:, : ex0 + edge] = False
    if ey0 > 0:
        clean[: ey0 + edge, :] = False
    if ex1 < w:
        clean[:, max(0, ex1 - edge) :] = False
    if ey1 < h:
        clean[max(0, ey1 - edge) :, :] = False

    out: list[DetectedSystem] = []
    columns = found.columns
    bounds = [0] + [(a1 + b0) // 2 for (_, a1), (b0, _) in zip(columns, columns[1:])] + [w]
    px0, py0, px1, py1 = page.page_box
    # Connectors may be as thin and faint as staff lines: half the lines' darkness counts.
    r = max(1, int(math.ceil(thickness / 2)))
    line_dark = np.median([_line_darkness(found.resp, y, r, s.left, s.right) for st in found.staves for s in st for y in (s.top, s.bottom)])
    conn_level = max(found.level, 0.5 * line_dark)
    for ci, ((cx0, cx1), staves) in enumerate(zip(columns, found.staves)):
        if not staves:
            continue
        groups = _group_systems(dark, conn_level, staves, spacing, thickness, cfg)
        bx0, bx1 = max(bounds[ci], px0), min(bounds[ci + 1], px1)
        region = clean[:, bx0:bx1]
        rowcnt = np.count_nonzero(region, axis=1)
        tops = [g[0].top for g in groups]
        bottoms = [g[-1].bottom for g in groups]
        heights = [float(np.median([s.height for s in g])) for g in groups]
        cuts = [
            _cut(rowcnt, int(math.ceil(lb)) + 1, int(math.floor(lt)), (lb + lt) / 2)
            for lb, lt in zip(bottoms[:-1], tops[1:])
        ]
        # Page edges: far ink beyond a wide blank band (a title, a page number) is not the system's.
        first_top = _edge_cut_above(rowcnt, tops[0] - cfg.margin * heights[0], cfg.edge_gap * heights[0], py0)
        last_bottom = _edge_cut_below(rowcnt, bottoms[-1] + cfg.margin * heights[-1], cfg.edge_gap * heights[-1], py1)
        cuts = [first_top] + cuts + [last_bottom]
        for i, g in enumerate(groups):
            sh = heights[i]
            c_top, c_bot = cuts[i], cuts[i + 1]
            own = np.flatnonzero(rowcnt[c_top:c_bot]) + c_top
            top, bottom = tops[i] - cfg.margin * sh, bottoms[i] + cfg.margin * sh
            pad = cfg.content_pad * sh
            if own.size:
                top, bottom = min(top, own[0] - pad), max(bottom, own[-1] + 1 + pad)
            r0, r1 = math.floor(top), math.ceil(bottom)
            ra, rb = max(r0, c_top), min(r1, c_bot)
            left, right = min(s.left for s in g), max(s.right for s in g)
            if rb > ra:
                cols = np.flatnonzero(region[ra:rb].any(axis=0))
                if cols.size:
                    left, right = min(left, bx0 + cols[0]), max(right, bx0 + cols[-1] + 1)
            side = cfg.side_pad * sh
            c0, c1 = math.floor(left - side), math.ceil(right + side)
            out.append(
                DetectedSystem(
                    box=(int(c0), int(r0), int(c1), int(r1)),
                    staves=tuple(g),
                    staff_height=sh,
                    skew=float(skew),
                    own=(int(bx0), int(max(c_top, py0)), int(bx1), int(min(c_bot, py1))),
                )
            )
    return out


def _edge_cut_above(rowcnt: np.ndarray, start: float, gap: float, floor: int) -> int:
    """First row of the top system's own rows: ``floor`` (the page top), or the middle of
    the lowest blank band of at least ``gap`` rows above ``start``."""
    s = int(math.floor(start))
    bands = [(a, b) for a, b in _runs(rowcnt[floor:max(floor, s)] == 0) if b - a >= max(1, gap)]
    return floor + (bands[-1][0] + bands[-1][1]) // 2 if bands else floor


def _edge_cut_below(rowcnt: np.ndarray, start: float, gap: float, ceil_: int) -> int:
    """End row of the bottom system's own rows: ``ceil_`` (the page bottom), or the middle
    of the highest blank band of at least ``gap`` rows below ``start``."""
    s = int(math.ceil(start))
    bands = [(a, b) for a, b in _runs(rowcnt[s:ceil_] == 0) if b - a >= max(1, gap)] if s < ceil_ else []
    return s + (bands[0][0] + bands[0][1]) // 2 if bands else ceil_


def crop_systems(gray: np.ndarray, systems, *, crop: CropConfig = CropConfig(), source: str = "<image>") -> list[np.ndarray]:
    """Each system's box cut from the page (white outside the page and outside the
    system's own part: neighbours' rows, letterbox), then :func:`normalize_crop`."""
    gray = _check_gray(gray, source)
    rotated: dict[float, np.ndarray] = {}
    out = []
    for sy in systems:
        page = rotated.get(sy.skew)
        if page is None:
            page = rotated[sy.skew] = deskew(gray, sy.skew)
        c0, r0, c1, r1 = sy.box
        if c1 <= c0 or r1 <= r0:
            raise InputError(source, f"empty system box {sy.box}")
        win = np.full((r1 - r0, c1 - c0), 255, np.uint8)
        h, w = page.shape
        ox0, oy0, ox1, oy1 = sy.own if sy.own is not None else (0, 0, w, h)
        sx0, sy0, sx1, sy1 = max(c0, ox0, 0), max(r0, oy0, 0), min(c1, ox1, w), min(r1, oy1, h)
        if sx0 < sx1 and sy0 < sy1:
            win[sy0 - r0 : sy1 - r0, sx0 - c0 : sx1 - c0] = page[sy0:sy1, sx0:sx1]
        out.append(normalize_crop(win, staff_height=sy.staff_height, config=crop))
    return out
