"""A small OLiMPiC 1.0 replica: both release folders, laid out as the authors' build writes them.

``olimpic-1.0-synthetic/`` and ``olimpic-1.0-scanned/`` each hold
``samples/<score id>/p<page>-s<system>.{png,lmx,musicxml}`` and ``samples.<split>.txt``
(one ``samples/<score id>/p1-s1`` per line; the scanned release has dev and test only and,
like the real one, LMX files for systems that have no scan). Three Bach chorales reduced to
a grand staff stand in for Lieder piano parts; each system is cut from the engraved page
(the system's box, grown as the real crops are) and saved as 8-bit grayscale PNG, black on
white; "scans" get a slight rotation, blur and noise.

Broken on purpose: a train entry whose files are missing, a dev image of random bytes,
and a test LMX file with a token outside the vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.replicas import Replica

# score id -> (music21 corpus piece, official split name)
SCORES = {"1001": ("bach/bwv66.6", "train"), "1002": ("bach/bwv3.6", "dev"), "1003": ("bach/bwv6.6", "test")}
SPLIT_OF = {"train": "train", "dev": "val", "test": "test"}
UPSCALE = 2.5  # our rasters have 18 px staves; MuseScore's PNG export is closer to 45
MISSING = "samples/1001/p9-s1"  # listed in samples.train.txt, no files
CORRUPT_IMAGE = "samples/1002/p2-s1"  # synthetic dev: the PNG is random bytes
BAD_TOKEN = "samples/1003/p2-s1"  # synthetic test: the LMX has an unknown token
UNKNOWN_TOKEN = "flourish:grand"


def _systems(piece: str) -> list[dict]:
    """Each system of the piece's grand-staff reduction: name, PNG crop, LMX tokens, MusicXML."""
    import cv2
    from music21 import corpus

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.lmx import linearize
    from unimusic.render.reduction import piano_reduction
    from unimusic.render.slicing import slice_measures
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_from_music21

    xml = piano_reduction(musicxml_from_music21(corpus.parse(piece), piece), source=piece)
    # Systems as far apart as MuseScore sets them (about 10 staff spaces; Verovio's default is 2).
    ep = engrave_piece(xml, options=EngraveOptions(spacing_system=20), source=piece)
    out, per_page = [], {}
    for sy in ep.systems:
        image = cv2.resize(_olimpic_crop(np.asarray(ep.pages[sy.page - 1]), sy.page_box), None, fx=UPSCALE,
                           fy=UPSCALE, interpolation=cv2.INTER_CUBIC)
        sliced = slice_measures(ep.musicxml, sy.measures[0], sy.measures[-1] + 1, source=piece)
        per_page[sy.page] = per_page.get(sy.page, 0) + 1
        out.append({"name": f"p{sy.page}-s{per_page[sy.page]}", "image": image, "xml": sliced,
                    "lmx": linearize(sliced, source=piece)})
    return out


def _olimpic_crop(page: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The real set's crop: the box of the system's staff lines grown by half its height on
    every side, white beyond the page (whatever else lies in that window stays)."""
    left, top, right, bottom = max(0, box[0]), max(0, box[1]), box[2], box[3]
    window = page[top:bottom, left:right] < 200  # thin lines are grey at this raster scale
    lines = np.flatnonzero(window.mean(axis=1) > 0.5)  # staff-line rows: dark over most of the width
    y0, y1 = top + int(lines[0]), top + int(lines[-1]) + 1
    grow = (y1 - y0) // 2
    canvas = np.full((y1 - y0 + 2 * grow, right - left + 2 * grow), 255, np.uint8)
    r0, r1 = max(0, y0 - grow), min(page.shape[0], y1 + grow)
    c0, c1 = max(0, left - grow), min(page.shape[1], right + grow)
    canvas[r0 - (y0 - grow): r1 - (y0 - grow), c0 - (left - grow): c1 - (left - grow)] = page[r0:r1, c0:c1]
    return canvas


def _scanned(image: np.ndarray, seed: int) -> np.ndarray:
    """A scan-like copy: grey paper, a 0.4 degree tilt, blur and sensor noise."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = image.shape
    tilt = cv2.getRotationMatrix2D((w / 2, h / 2), 0.4, 1.0)
    out = cv2.warpAffine(image, tilt, (w, h), borderValue=255).astype(np.float32)
    out = cv2.GaussianBlur(out * (225 / 255) + 15, (3, 3), 0) + rng.normal(0, 6, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _write(folder: Path, base: str, *, png: bytes | None, lmx: str, xml: bytes) -> None:
    (folder / base).parent.mkdir(parents=True, exist_ok=True)
    if png is not None:
        (folder / f"{base}.png").write_bytes(png)
    (folder / f"{base}.lmx").write_text(lmx)
    (folder / f"{base}.musicxml").write_bytes(xml)


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def make(root: Path) -> Replica:
    synthetic, scanned = root / "olimpic-1.0-synthetic", root / "olimpic-1.0-scanned"
    lists = {"synthetic": {"train": [], "dev": [], "test": []}, "scanned": {"dev": [], "test": []}}
    rows = {"train": 0, "val": 0, "test": 0}
    first = {}
    for score, (piece, split) in SCORES.items():
        systems = _systems(piece)
        first[score] = systems[0]
        for k, sy in enumerate(systems):
            base = f"samples/{score}/{sy['name']}"
            text = " ".join(sy["lmx"]) + "\n"
            _write(synthetic, base, png=_png(sy["image"]), lmx=text, xml=sy["xml"])
            lists["synthetic"][split].append(base)
            rows[SPLIT_OF[split]] += 1
            if split in lists["scanned"]:  # every system's LMX, a scan of the first only
                png = _png(_scanned(sy["image"], seed=int(score))) if k == 0 else None
                _write(scanned, base, png=png, lmx=text, xml=sy["xml"])
                if png is not None:
                    lists["scanned"][split].append(base)
                    rows[SPLIT_OF[split]] += 1

    lists["synthetic"]["train"].append(MISSING)
    rng = np.random.default_rng(7)
    good_1002, good_1003 = first["1002"], first["1003"]
    _write(synthetic, CORRUPT_IMAGE, png=rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
           lmx=" ".join(good_1002["lmx"]) + "\n", xml=good_1002["xml"])
    lists["synthetic"]["dev"].append(CORRUPT_IMAGE)
    bad = list(good_1003["lmx"])
    bad.insert(len(bad) // 2, UNKNOWN_TOKEN)
    _write(synthetic, BAD_TOKEN, png=_png(good_1003["image"]), lmx=" ".join(bad) + "\n", xml=good_1003["xml"])
    lists["synthetic"]["test"].append(BAD_TOKEN)

    for folder, subset in ((synthetic, "synthetic"), (scanned, "scanned")):
        for split, bases in lists[subset].items():
            (folder / f"samples.{split}.txt").write_text("".join(b + "\n" for b in bases))
    good = sum(rows.values())
    return Replica(src=str(root), examples=good + 2, good=good, errors=3, rows_per_split=rows,
                   modalities=("image", "lmx"))
