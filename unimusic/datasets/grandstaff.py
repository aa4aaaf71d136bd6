"""GrandStaff (Ríos-Vila et al., IJDAR 2023): single-system piano images with **kern.

Layout, certain (file lists of the authors' and others' loaders: github.com/antoniorv6/SMT
``data.py`` and ``config/GrandStaff/*.json`` before the move to Hugging Face, the
``partitions_grandstaff`` generator script, github.com/ufal/olimpic-icdar24 ``Makefile`` and
``app/datasets/grandstaff``; dataset page https://grfia.dlsi.ua.es/sheet-music-transformer):

* ``grandstaff.tgz`` (https://grfia.dlsi.ua.es/musicdocs/grandstaff.tgz) extracts to
  ``<composer>/<collection>/<piece>/<excerpt>.*``, e.g.
  ``chopin/mazurkas/mazurka06-2/original_m-1-5.krn``; an excerpt has ``.krn`` (plain
  **kern), ``.bekrn`` (basic extended kern: tokens split by ``@``, decorations by ``·``,
  header ``**ekern_1.0``), ``.jpg`` (Verovio rendering) and ``_distorted.jpg`` (the
  "Camera GrandStaff" photocopy look). ``original_*`` excerpts are the pieces as encoded,
  the others (``maj2_up_``, ``min3_down_``...) transpositions of them;
* the official split ("types"): ``partitions_grandstaff/types/{train,val,test}.txt``,
  one excerpt per line as ``grandstaff_dataset/<composer>/.../<excerpt>.<ext>`` relative to
  the folder holding ``grandstaff_dataset/`` and ``partitions_grandstaff/`` (the SMT layout);
  test = the 7,000 originals, train/val = the transpositions.

SRC is the extracted folder (composer folders at the top), or the SMT folder holding
``grandstaff_dataset/`` and ``partitions_grandstaff/``. Assumed, not seen in a real copy:
that those split lists are not inside ``grandstaff.tgz`` itself; a GrandStaff-LMX overlay
(OLiMPiC's ``grandstaff-lmx``) brings ``samples.{train,dev,test}.txt`` at the top, used when
no ``partitions_grandstaff/types`` lists exist; with neither, ``original_*`` excerpts are
test and the rest a stable 90/10 train/val hash (the official rule, not its exact draw).
Listed lines are matched to excerpts whatever their extension and leading folders.

Rows: one per excerpt, the clean ``.jpg`` (``_distorted.jpg`` is not used; meta says whether
it exists) and LMX converted by our converters from ``.krn`` (``.bekrn`` or ``.ekrn`` when
there is no ``.krn``). The two **kern spines are one piano part on two staves, as in
OLiMPiC's LMX (``staff:1``/``staff:2``), not two parts. Known: about 80 excerpts merge the
two spines (``*v *v``) and music21 cannot read them; they become error records.
"""

from __future__ import annotations

import posixpath
import re

from unimusic.datasets.base import (DatasetInfo, Example, ImportConfig, base_row, hashed_split, image_lmx_row,
                                    make_example, official_split, scan_error, staff_count)
from unimusic.datasets.olimpic import normalized_root, read_text, relative_files
from unimusic.errors import InputError

INFO = DatasetInfo(
    name="grandstaff",
    title="GrandStaff: single-system pianoform scores (images and **kern)",
    licence="unverified: none stated on the dataset page (the archive's LICENSE file not seen; **kern from "
            "KernScores): research-only until checked",
    commercial_use=False,
    homepage="https://grfia.dlsi.ua.es/sheet-music-transformer",
    modalities=("image", "lmx"),
    splits="official 'types' partition (partitions_grandstaff/types: originals = test); else samples.*.txt; "
           "else originals = test, rest hashed 90/10 train/val",
    layout="the extracted grandstaff.tgz (composer folders), or a folder with grandstaff_dataset/ and "
           "partitions_grandstaff/",
    citation="Antonio Ríos-Vila, David Rizo, José M. Iñesta, Jorge Calvo-Zaragoza. End-to-end optical music "
             "recognition for pianoform sheet music. IJDAR 26, 2023. https://doi.org/10.1007/s10032-023-00432-z",
)

SCORE_ROLES = {".krn": "krn", ".bekrn": "bekrn", ".ekrn": "ekrn"}  # in order of preference
IMAGE_SUFFIXES = (".jpg", ".png")
DISTORTED = "_distorted.jpg"
PARTITION = re.compile(r"(?P<dir>(?:.*/)?)partitions_grandstaff/types/(?P<split>train|val|test)\.txt")
OVERLAY = re.compile(r"samples\.(?P<split>[^./]+)\.txt")
EXCERPT = re.compile(r"(?P<kind>.+?)_m-(?P<first>-?\d+)-(?P<last>-?\d+)")
EKERN_HEADER = re.compile(r"\*\*b?ekern(?:_[0-9.]+)?")


def kern_from_bekern(data: bytes, *, source: str) -> bytes:
    """(B)ekern text -> plain **kern: join the sub-tokens and decorations again."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(source, "read: not UTF-8 text") from None
    return EKERN_HEADER.sub("**kern", text).replace("@", "").replace("·", "").encode()


def grand_staff_lmx(kern: bytes, *, source: str) -> list[str]:
    """LMX of a two-spine **kern excerpt as one piano part on two staves (music21 reads the
    spines as two parts; grouping them as staves gives the MusicXML a piano part has)."""
    from music21 import layout, stream

    from unimusic.render.lmx import linearize
    from unimusic.scores import musicxml_from_music21, parse_with_music21

    score = parse_with_music21(kern, "kern", source)
    parts = list(score.parts)
    if len(parts) != 2:
        raise InputError(source, f"parse: expected two **kern spines (a grand staff), music21 read {len(parts)}")
    try:
        if not all(isinstance(p, stream.PartStaff) for p in parts):
            staves = []
            for part in parts:
                staff = stream.PartStaff(id=part.id)
                for element in list(part):
                    staff.insert(part.elementOffset(element), element)
                score.replace(part, staff)
                staves.append(staff)
            score.insert(0, layout.StaffGroup(staves, name="Piano", symbol="brace"))
        return linearize(musicxml_from_music21(score, source), source=source)
    except InputError:
        raise
    except Exception as exc:  # music21's own errors: one line naming the file
        raise InputError(source, f"{type(exc).__name__}: {exc}") from None


def _index(files: dict[str, str]) -> dict[str, dict[str, str]]:
    """{excerpt path without extension: {role: full path}}."""
    out: dict[str, dict[str, str]] = {}
    for rel, full in files.items():
        if rel.lower().endswith(DISTORTED):
            out.setdefault(rel[: -len(DISTORTED)], {})["distorted"] = full
            continue
        stem, ext = posixpath.splitext(rel)
        role = SCORE_ROLES.get(ext.lower()) or ("image" if ext.lower() in IMAGE_SUFFIXES else None)
        if role:
            out.setdefault(stem, {}).setdefault(role, full)
    return out


def _split_lists(files: dict[str, str]) -> list[tuple[str, str]]:
    """[(split name, list path relative to SRC)]: the official partition if present, else the overlay's."""
    partitions = [(m.group("dir"), m.group("split"), rel) for rel in files if (m := PARTITION.fullmatch(rel))]
    if partitions:
        top = min((d for d, _, _ in partitions), key=len)  # the outermost partitions_grandstaff/
        return sorted((s, rel) for d, s, rel in partitions if d == top)
    return sorted((m.group("split"), rel) for rel in files if (m := OVERLAY.fullmatch(rel)))


def _stem(line: str) -> str:
    """A list line without its extension (any file of the excerpt may be named)."""
    base = line.strip()
    if base.lower().endswith(DISTORTED):
        return base[: -len(DISTORTED)]
    stem, ext = posixpath.splitext(base)
    return stem if ext.lower() in (*SCORE_ROLES, *IMAGE_SUFFIXES, ".lmx", ".musicxml") else base


def _resolve(line: str, index: dict) -> str | None:
    """The excerpt a list line names, whatever its extension and leading folders SRC lacks."""
    parts = _stem(line).strip("/").split("/")
    return next(("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in index), None)


class GrandStaffAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        from unimusic import storage

        files = relative_files(root, (*SCORE_ROLES, *IMAGE_SUFFIXES, ".txt"))
        index, top = _index(files), normalized_root(root)
        if not index:
            raise InputError(root, "not a GrandStaff folder (no .krn, .bekrn or .jpg files below it)")
        examples, errors, seen = [], [], {}
        lists = _split_lists(files)
        listed = []  # (excerpt or None, split, list file, line)
        for name, rel in lists:
            try:
                split = official_split(name, source=files[rel])
            except InputError as exc:
                errors.append(scan_error(files[rel], exc.problem))
                continue
            for line in read_text(files[rel]).splitlines():
                if line.strip():
                    listed.append((_resolve(line, index), split, rel, line.strip()))
        if not lists:  # no split lists: every excerpt, split by the official rule
            for base in sorted(index):
                kind = posixpath.basename(base).split("_m-")[0]
                split = "test" if kind == "original" else hashed_split(base, val_fraction=0.1, test_fraction=0.0)
                listed.append((base, split, "", base))
        for base, split, rel, line in listed:
            roles = index.get(base or "", {})
            score = next((roles[r] for r in SCORE_ROLES.values() if r in roles), None)
            if base is None or score is None or "image" not in roles:
                what = ".krn" if score is None else ".jpg"
                problem = (f"listed in {rel} but no such excerpt" if base is None else
                           f"the excerpt has no {what} file" + (f" (listed in {rel})" if rel else ""))
                errors.append(scan_error(storage.join(top, (base or _stem(line)) + what), problem))
            elif base in seen:
                errors.append(scan_error(files[rel], f"lists {base} again (already in {seen[base]})"))
            else:
                seen[base] = rel or "(no split list)"
                examples.append(self._example(base, split, roles, score, rel))
        return examples, errors

    @staticmethod
    def _example(base: str, split: str, roles: dict, score: str, listed_in: str) -> Example:
        key = base[len("grandstaff_dataset/"):] if base.startswith("grandstaff_dataset/") else base
        folders, excerpt = posixpath.split(key)
        meta = {"excerpt": excerpt, "score_format": posixpath.splitext(score)[1][1:], "image": "clean",
                "distorted_image": "distorted" in roles, "listed_in": listed_in or None}
        meta.update(zip(("composer", "collection", "piece"), folders.split("/")))
        m = EXCERPT.fullmatch(excerpt)
        if m:
            meta.update(transposition=m.group("kind"), measures=[int(m.group("first")), int(m.group("last"))])
        return make_example(key, split, {"score": score, "image": roles["image"]}, meta, work=folders or key)

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        from unimusic import storage

        score_path, image_path = example.require("score"), example.require("image")
        data = storage.read_bytes(score_path)
        if not score_path.lower().endswith(".krn"):
            data = kern_from_bekern(data, source=score_path)
        tokens = grand_staff_lmx(data, source=score_path)
        row = base_row(INFO, example, config, source=score_path)
        image_lmx_row(row, image=None, lmx=tokens, source=score_path)
        image_lmx_row(row, image=storage.read_bytes(image_path), lmx=None, source=image_path,
                      staves=staff_count(tokens))
        return [row]


ADAPTER = GrandStaffAdapter()
