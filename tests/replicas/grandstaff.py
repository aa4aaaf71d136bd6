"""A small GrandStaff replica in the SMT layout: ``grandstaff_dataset/<composer>/<collection>/
<piece>/<excerpt>.{krn,bekrn,jpg}`` (+ ``_distorted.jpg``) and the official "types" split in
``partitions_grandstaff/types/{train,val,test}.txt`` (lines ``grandstaff_dataset/.../x.krn``).

Excerpts are cut by barlines from the music21 corpus's Chopin mazurka op. 6 no. 2 (a
KernScores encoding, as GrandStaff's are): the **kern header (clefs, key, metre), the
measures, ``==`` and ``*-``; the ``**dynam`` spine is dropped. Verovio renders each excerpt
from the **kern itself (as GrandStaff's images were made) and the page, cropped to the
system with white margins, is saved with cv2.imwrite as JPG. The ``.bekrn`` twin splits
every note into sub-tokens with ``@`` and decorations with ``·`` under an ``**ekern_1.0``
header (our approximation of the bekern tokenizer). Names follow the real ones
(``original_m-2-3``, ``maj2_up_m-6-7``...), but the "transposed" excerpts are not
transposed: only the split lists and the fallback rule read names.

Broken on purpose: a train entry with no files, a train excerpt whose **kern music21 cannot
read (a record with more fields than spines), and a train image of random bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tests.replicas import Replica

PIECE = "chopin/mazurka06-2.krn"
FOLDER = "grandstaff_dataset/chopin/mazurkas/mazurka06-2"
# excerpt name -> (first measure, last measure, split, files written)
EXCERPTS = {
    "original_m-2-3": (2, 3, "test", ("krn", "bekrn", "jpg", "distorted")),
    "original_m-4-5": (4, 5, "test", ("bekrn", "jpg")),
    "maj2_up_m-6-7": (6, 7, "train", ("krn", "bekrn", "jpg", "distorted")),
    "min3_down_m-8-9": (8, 9, "train", ("krn", "bekrn", "jpg")),  # unreadable **kern
    "maj3_down_m-10-11": (10, 11, "train", ("krn", "bekrn", "jpg")),  # image of random bytes
    "maj2_down_m-12-13": (12, 13, "val", ("krn", "bekrn", "jpg", "distorted")),
}
MISSING = "min3_up_m-14-15"  # listed in train.txt, no files
UNREADABLE_KERN = "min3_down_m-8-9"
CORRUPT_IMAGE = "maj3_down_m-10-11"
BAD_RECORD = "4c\t4e\t4g"  # three fields under two spines


def corpus_kern() -> list[str]:
    from music21 import corpus

    path = next(p for p in corpus.getPaths() if str(p).endswith(PIECE))
    return Path(path).read_text().splitlines()


def _without_dynam(line: str) -> str:
    return "\t".join(line.split("\t")[:-1])  # the **dynam spine is the last column


def excerpt(lines: list[str], first: int, last: int) -> str:
    """Measures first..last of a grand-staff **kern file, its header kept, **dynam dropped."""
    start = next(i for i, line in enumerate(lines) if line.startswith("**"))
    head, body, measure = [], [], None
    for line in lines[start:]:
        bar = re.match(r"=(\d+)", line)
        if line.startswith("="):
            measure = int(bar.group(1)) if bar else None
            if measure == first or measure == last + 1:
                assert line.count("\t") == 2, f"spines split at barline {measure}"
        if measure is None and not line.startswith("="):
            if line.startswith("**") or re.match(r"\*(clef|k\[|M\d)", line):
                head.append(_without_dynam(line))
        elif measure is not None and first <= measure <= last and not line.startswith("!"):
            body.append(_without_dynam(line))
    return "\n".join(head + body + ["==\t==", "*-\t*-"]) + "\n"


def bekern(kern: str) -> str:
    """The bekern form: note tokens split into sub-tokens ('@') and decorations ('·')."""
    def token(tok: str) -> str:
        m = re.fullmatch(r"([\[(]*)(\d+\.*)([a-gA-Gr]+)([#\-n]*)(.*)", tok)
        if not m:
            return tok
        opening, duration, pitch, accidental, rest = m.groups()
        core = "@".join(p for p in (duration, pitch, accidental) if p)
        return "·".join(c for c in (opening, core, *rest) if c)

    out = []
    for line in kern.splitlines():
        if line.startswith("**"):
            out.append("\t".join("**ekern_1.0" for _ in line.split("\t")))
        elif line.startswith(("*", "=", "!")):
            out.append(line)
        else:
            out.append("\t".join(" ".join(token(t) for t in field.split(" ")) for field in line.split("\t")))
    return "\n".join(out) + "\n"


def render(kern: str) -> np.ndarray:
    """Verovio's rendering of the excerpt (one system), cropped with white margins."""
    from unimusic.render.engrave import EngraveOptions, new_toolkit, svg_to_gray

    toolkit = new_toolkit()
    toolkit.setOptions({**EngraveOptions().verovio(), "header": "none", "footer": "none"})
    assert toolkit.loadData(kern) and toolkit.getPageCount() == 1
    svg = toolkit.renderToSVG(1)
    assert svg.count('class="system"') == 1, "excerpt engraves to more than one system"
    page = svg_to_gray(svg, scale=2.0)
    rows, cols = np.flatnonzero((page < 128).any(axis=1)), np.flatnonzero((page < 128).any(axis=0))
    pad = 40
    crop = page[max(0, rows[0] - pad): rows[-1] + pad, max(0, cols[0] - pad): cols[-1] + pad]
    return np.pad(crop, pad, constant_values=255)


def distorted(image: np.ndarray) -> np.ndarray:
    """A photocopy-like copy (blur, noise); the adapter does not read it."""
    import cv2

    noise = np.random.default_rng(3).normal(0, 12, image.shape)
    return np.clip(cv2.GaussianBlur(image.astype(np.float32), (5, 5), 0) + noise, 0, 255).astype(np.uint8)


def make(root: Path) -> Replica:
    import cv2

    lines = corpus_kern()
    folder = root / FOLDER
    folder.mkdir(parents=True)
    lists = {"train": [], "val": [], "test": []}
    rows = {"train": 0, "val": 0, "test": 0}
    for name, (first, last, split, written) in EXCERPTS.items():
        kern = excerpt(lines, first, last)
        image = render(kern)
        if name == UNREADABLE_KERN:
            kern = kern.replace("\n==", f"\n{BAD_RECORD}\n==")
        if "krn" in written:
            (folder / f"{name}.krn").write_text(kern)
        (folder / f"{name}.bekrn").write_text(bekern(kern))
        if name == CORRUPT_IMAGE:
            (folder / f"{name}.jpg").write_bytes(np.random.default_rng(5).integers(0, 256, 5000, np.uint8).tobytes())
        else:
            cv2.imwrite(str(folder / f"{name}.jpg"), image)
        if "distorted" in written:
            cv2.imwrite(str(folder / f"{name}_distorted.jpg"), distorted(image))
        lists[split].append(f"{FOLDER}/{name}.krn")
        rows[split] += name not in (UNREADABLE_KERN, CORRUPT_IMAGE)
    lists["train"].append(f"{FOLDER}/{MISSING}.krn")
    partitions = root / "partitions_grandstaff" / "types"
    partitions.mkdir(parents=True)
    for split, entries in lists.items():
        (partitions / f"{split}.txt").write_text("".join(e + "\n" for e in entries))
    good = sum(rows.values())
    return Replica(src=str(root), examples=len(EXCERPTS), good=good, errors=len(EXCERPTS) - good + 1,
                   rows_per_split=rows, modalities=("image", "lmx"))
