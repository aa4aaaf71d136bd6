"""OLiMPiC 1.0 (Mayer et al., ICDAR 2024): pianoform system images with LMX, synthetic and scanned.

Layout, from the authors' build code and README (https://github.com/ufal/olimpic-icdar24,
``app/datasets/build_dataset_index.py``, ``zeus/create_pickle.py``; releases
``olimpic-1.0-synthetic.2024-02-12.tar.gz`` and ``olimpic-1.0-scanned.2024-02-12.tar.gz``),
certain:

* each release extracts to one folder (``olimpic-1.0-synthetic/``, ``olimpic-1.0-scanned/``)
  holding ``samples/<score id>/p<page>-s<system>.{png,lmx,musicxml}`` and the split lists
  ``samples.train.txt``, ``samples.dev.txt``, ``samples.test.txt`` (scanned: dev and test only);
* a split list names one sample per line, as its path relative to that folder without
  extension (``samples/5052375/p1-s2``);
* ``.lmx`` is one line of space-separated tokens; the PNGs are 8-bit grayscale, black on
  white (synthetic: MuseScore's alpha inverted; scanned: IMSLP scans), the system's
  staff box grown by half its height on every side, so parts of neighbouring staves
  (the voice part above the piano) can be in the picture.

SRC is one such folder, or a folder holding both (the folder names say which subset is
which: a name containing "scanned" or "synthetic"; otherwise the folder's own name).
Assumed, not seen in a real copy: a ``.jpg`` image is accepted where no ``.png`` exists
(``create_pickle.py`` tries both). The ``.musicxml`` files are not read.

Rows: one per sample, the image normalized like our crops and the LMX as the set gives
it. Rows are refused (an error record) when the image's system does not have the staff
count of its LMX: the crop detector keeps every staff joined to the system by the
barline, and a visible voice staff would otherwise give a 3-staff picture a 2-staff label.
"""

from __future__ import annotations

import os
import posixpath
import re

from unimusic.datasets.base import (DatasetInfo, Example, ImportConfig, base_row, image_lmx_row, make_example,
                                    official_split, scan_error, staff_count)
from unimusic.errors import InputError

INFO = DatasetInfo(
    name="olimpic",
    title="OLiMPiC 1.0 (OpenScore Lieder Linearized MusicXML Piano Corpus), synthetic and scanned",
    licence="CC BY-SA (the README's words; version not stated, 4.0 assumed)",
    commercial_use=True,
    homepage="https://github.com/ufal/olimpic-icdar24",
    modalities=("image", "lmx"),
    splits="official: samples.train/dev/test.txt of each subset (dev -> val); scanned has dev and test only",
    layout="an extracted olimpic-1.0-synthetic/ or olimpic-1.0-scanned/ folder, or a folder holding both",
    citation="Jiří Mayer, Milan Straka, Jan Hajič jr., Pavel Pecina. Practical End-to-End Optical Music "
             "Recognition for Pianoform Music. ICDAR 2024, pp. 55-73. "
             "https://doi.org/10.1007/978-3-031-70552-6_4",
)

SPLIT_FILE = re.compile(r"(?:(?P<folder>[^/]+)/)?samples\.(?P<split>[^./]+)\.txt")
SAMPLE_NAME = re.compile(r"p(?P<page>\d+)-s(?P<system>\d+)")
IMAGE_SUFFIXES = (".png", ".jpg")
LISTED_SUFFIXES = (".png", ".jpg", ".lmx", ".musicxml")


def normalized_root(root: str) -> str:
    """``root`` as storage.list_files spells the paths under it (local paths absolute)."""
    from unimusic import storage

    return str(root).rstrip("/") if storage.is_remote(root) else os.path.abspath(root)


def relative_files(root: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    """{path relative to root ('/'-separated): full path} of every file under root with a suffix."""
    from unimusic import storage

    prefix = normalized_root(root).rstrip("/") + "/"
    out = {}
    for path in storage.list_files(root, suffixes=suffixes):
        if not path.startswith(prefix):
            raise InputError(path, f"listed under {root} but not below it")
        out[path[len(prefix):].replace(os.sep, "/")] = path
    return out


def read_text(path: str) -> str:
    """A text file (local or s3://); InputError if it is not UTF-8."""
    from unimusic import storage

    try:
        return storage.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "read: not UTF-8 text") from None


def subset_label(folder: str, root: str) -> str:
    """'synthetic' or 'scanned' from the subset folder's name (SRC's own name for a split list at the top)."""
    name = (folder or posixpath.basename(normalized_root(root).rstrip("/")) or "olimpic").lower()
    return "scanned" if "scanned" in name else "synthetic" if "synthetic" in name else name


class OlimpicAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        from unimusic import storage

        files = relative_files(root, (".txt", *IMAGE_SUFFIXES, ".lmx"))
        lists = [(m, rel) for rel in sorted(files) if (m := SPLIT_FILE.fullmatch(rel))]
        if not lists:
            raise InputError(root, "not an OLiMPiC folder (no samples.<split>.txt in it or in a folder below it)")
        examples, errors, seen = [], [], set()
        for m, rel in lists:
            folder, list_path = m.group("folder") or "", files[rel]
            try:
                split = official_split(m.group("split"), source=list_path)
            except InputError as exc:
                errors.append(scan_error(list_path, exc.problem))
                continue
            label = subset_label(folder, root)
            for line in read_text(list_path).splitlines():
                base = line.strip()
                for suffix in LISTED_SUFFIXES:
                    base = base[: -len(suffix)] if base.lower().endswith(suffix) else base
                if not base:
                    continue
                here = f"{folder}/{base}" if folder else base
                image = next((files[here + s] for s in IMAGE_SUFFIXES if here + s in files), None)
                lmx = files.get(here + ".lmx")
                key = f"{label}/{base}"
                if image is None or lmx is None:
                    missing = here + (".png" if image is None else ".lmx")
                    where = storage.join(normalized_root(root), missing)
                    errors.append(scan_error(where, f"listed in {rel} but missing"))
                elif key in seen:
                    errors.append(scan_error(list_path, f"lists {base} twice"))
                else:
                    seen.add(key)
                    examples.append(self._example(key, split, base, label, rel, image, lmx))
        return examples, errors

    @staticmethod
    def _example(key, split, base, label, listed_in, image, lmx) -> Example:
        parts = base.split("/")
        score = parts[-2] if len(parts) >= 2 else parts[0]
        meta = {"subset": label, "score": score, "sample": parts[-1], "listed_in": listed_in}
        m = SAMPLE_NAME.fullmatch(parts[-1])
        if m:
            meta.update(page=int(m.group("page")), system=int(m.group("system")))
        # One work per Lieder score: its synthetic and scanned systems stay together.
        return make_example(key, split, {"image": image, "lmx": lmx}, meta, work=f"score-{score}")

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        from unimusic import storage

        image_path, lmx_path = example.require("image"), example.require("lmx")
        tokens = read_text(lmx_path).split()
        variant = f"{INFO.name}-{example.meta_dict.get('subset', 'synthetic')}"
        row = base_row(INFO, example, config, source=lmx_path, variant=variant)
        image_lmx_row(row, image=None, lmx=tokens, source=lmx_path)  # cheap checks first
        image_lmx_row(row, image=storage.read_bytes(image_path), lmx=None, source=image_path,
                      staves=staff_count(tokens))
        return [row]


ADAPTER = OlimpicAdapter()
