"""A replica of the YouTube Score Video Dataset's metadata: ``metadata/ytsv_metadata.csv`` with
the table's exact columns, a few downloaded videos in ``mp4/<YT Id>.mp4`` (the README's
layout) and U-MusT's ``test_included_yt_ids.csv``.

Composers and titles come from music21-corpus pieces' own metadata (``J.S. Bach``,
``Beethoven, Ludwig van``, ``Chopin, Frederic``...), spelled again the ways YouTube titles spell
them (upper case, "Last, First", accents). Two uploads of one piece with different spellings
must land in one work. Broken on purpose: a row without an id and a repeated id (scan errors).
``expected.json`` beside SRC holds the facts the test checks: per id the canonical composer
(hand-written truth about those corpus pieces) and the split.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from pathlib import Path

from tests.replicas import Replica

COLUMNS = ("YT Id", "Title of Video", "User", "Duration", "Composer Full Name", "Title of Piece", "Opus Number",
           "Instrumentation", "Category", "Piano Included", "String Included", "Wind Included", "Voice Included",
           "Year", "Staff Count")
# (YT id, corpus piece, how the upload spells the composer (None: as music21 does), canonical composer,
#  instrumentation, category, staff count)
UPLOADS = (
    ("bWv84x5aaaA", "bach/bwv84.5", None, "Johann Sebastian Bach", "quartet", "choral", "4-0"),
    ("bWv84x5bbbB", "bach/bwv84.5", "Bach, Johann Sebastian", "Johann Sebastian Bach", "quartet", "choral", "4-0"),
    ("k80mvt1cccC", "mozart/k80/movement1", None, "Wolfgang Amadeus Mozart", "quartet", "string quartet", "4-0"),
    ("op18n1dd-dD", "beethoven/opus18no1/movement1", None, "Ludwig van Beethoven", "quartet", "string quartet", "4-0"),
    ("maz62eeee_E", "chopin/mazurka06-2", None, "Frédéric Chopin", "solo", "piano solo", "0-2"),
    ("maz62ffff_F", "chopin/mazurka06-2", "FRÉDÉRIC  CHOPIN", "Frédéric Chopin", "solo", "piano solo", "0-2"),
    ("op17m3ggggG", "schumann_clara/opus17/movement3", None, "Clara Schumann", "trio", "piano trio", "2-2"),
    ("agnus0hhhhH", "palestrina/agnus_0", None, "Giovanni Pierluigi da Palestrina", "choral", "choral", "5-0"),
    ("linden-iiiI", "schubert/lindenbaum", "franz schubert", "Franz Schubert", "duet", "voice and piano", "1-2"),
)
VIDEOS = ("bWv84x5aaaA", "maz62eeee_E")  # downloaded
TEST_INCLUDED = ("op17m3ggggG",)  # U-MusT's test_included_yt_ids.csv


def piece_metadata(piece: str) -> tuple[str, str]:
    """(composer, title) as the corpus file gives them (title: movement name, else the file name)."""
    from music21 import corpus

    md = corpus.parse(piece).metadata
    title = md.title or md.movementName or piece.rsplit("/", 1)[-1]
    return md.composer or "", title.removesuffix(".mxl").removesuffix(".xml")


def work_key(composer: str, title: str) -> str:
    """The work a video belongs to: composer / title without accents, case or punctuation."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", title) if not unicodedata.combining(c))
    words = re.sub(r"[^\w-]+", " ", plain.lower()).split()
    return f"{composer}/{' '.join(words)}"


def make(root: Path) -> Replica:
    from unimusic.datasets.base import hashed_split

    src = root / "youtube-score-video-dataset"
    (src / "metadata").mkdir(parents=True)
    (src / "mp4").mkdir()
    rows, expected, rows_per_split, cache = [], {}, {}, {}
    for vid, piece, spelling, canonical, instrumentation, category, staves in UPLOADS:
        composer, title = cache.setdefault(piece, piece_metadata(piece))
        spelled = spelling or composer
        rows.append({"YT Id": vid, "Title of Video": f"{spelled} - {title} (with Score)", "User": "SV_ScoreVideos",
                     "Duration": "3:21", "Composer Full Name": spelled, "Title of Piece": title, "Opus Number": "",
                     "Instrumentation": instrumentation, "Category": category,
                     "Piano Included": str("piano" in category), "String Included": str("string" in category),
                     "Wind Included": "False", "Voice Included": str(category in ("choral", "voice and piano")),
                     "Year": "", "Staff Count": staves})
        split = "test" if vid in TEST_INCLUDED else hashed_split(work_key(canonical, title))
        expected[vid] = {"composer": canonical, "split": split, "title": title}
        rows_per_split[split] = rows_per_split.get(split, 0) + 1
    rows.insert(3, dict(rows[1], **{"YT Id": ""}))  # no id
    rows.append(dict(rows[4], **{"Title of Video": "re-upload"}))  # an id seen before
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (src / "metadata" / "ytsv_metadata.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (src / "test_included_yt_ids.csv").write_text("YT Id,dataset\n" + "".join(f"{v},musicnet\n" for v in TEST_INCLUDED))
    for vid in VIDEOS:
        (src / "mp4" / f"{vid}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video")
    (root / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False), encoding="utf-8")
    return Replica(src=str(src), examples=len(UPLOADS), good=len(UPLOADS), errors=2, rows_per_split=rows_per_split,
                   modalities=())
