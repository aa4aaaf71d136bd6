"""The YouTube Score Video Dataset of U-MusT: metadata of score-following videos (no media).

Layout (https://github.com/MALerLab/youtube-score-video-dataset, README at commit bbfe510):

    metadata/ytsv_metadata.csv   12,317 rows: YT Id, Title of Video, User, Duration, Composer Full
                                 Name, Title of Piece, Opus Number, Instrumentation, Category, Piano
                                 Included, String Included, Wind Included, Voice Included, Year,
                                 Staff Count
    mp4/<YT Id>.mp4              the videos, downloaded by the user (not distributed)

SRC is that CSV, or a folder holding it (``ytsv_metadata.csv``, else the one CSV with a ``YT Id``
column) and, optionally, downloaded videos named ``<YT Id>.<ext>`` anywhere below. The composer
and piece columns were extracted from the video titles by a language model (the README says
so), hence :func:`normalize_composer`.

Splits: none official. A ``split`` column wins when present; else an id listed in a
``test_included_yt_ids.csv`` beside the table (U-MusT's ``dataset_pair_paths/`` file: videos
of pieces in other sets' test splits) is test; else hashed by work (normalized composer and
piece title), so uploads of one piece stay together.

Rows: one per video with metadata only (image, LMX, MIDI and audio null; the meta JSON has the
id, URL, titles, raw and normalized composer, and the local video when present). The forms come
from the video pipeline (``unimusic videos ingest VIDEOS --metadata videos.csv``); ``extras``
writes that ``videos.csv``. Uncertain: the canonical spellings below are our choice.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import unicodedata

from unimusic.datasets.base import DatasetInfo, Example, ImportConfig, base_row, hashed_split, make_example, \
    official_split, scan_error
from unimusic.errors import InputError

TABLE = "ytsv_metadata.csv"
TEST_IDS = "test_included_yt_ids.csv"
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")
# The table's columns -> meta keys (others keep their name, snake_cased).
COLUMN_KEYS = {"YT Id": "id", "Title of Video": "title", "User": "user", "Duration": "duration",
               "Composer Full Name": "composer", "Title of Piece": "piece", "Opus Number": "opus",
               "Instrumentation": "instrumentation", "Category": "category", "Year": "year", "Staff Count": "staves"}
REQUIRED = ("YT Id", "Title of Video", "Composer Full Name")
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")

# Canonical names ("Canonical|other spelling;other spelling"): the most frequent composers of
# ytsv_metadata.csv, in that order (a bare surname picks the first), and every composer the
# table spells two ways. Accents, case, initials and "Last, First" need no entry.
CANONICAL = (
    "Domenico Scarlatti", "Johann Sebastian Bach", "Frédéric Chopin|Fryderyk Chopin;Frederick Chopin",
    "Joseph Haydn|Franz Joseph Haydn", "Wolfgang Amadeus Mozart", "Franz Liszt|Ferenc Liszt",
    "Ludwig van Beethoven", "Sergei Rachmaninoff|Sergei Rachmaninov;Sergey Rachmaninoff;Rachmaninov",
    "Franz Schubert", "Johannes Brahms", "Max Reger", "Alexander Scriabin|Alexander Skryabin;Skryabin",
    "Claude Debussy", "Robert Schumann", "Charles-Valentin Alkan", "Isaac Albéniz",
    "Pyotr Tchaikovsky|Pyotr Ilyich Tchaikovsky;Peter Ilyich Tchaikovsky;Tchaikowsky",
    "Felix Mendelssohn|Felix Mendelssohn Bartholdy", "Moritz Moszkowski",
    "Dmitri Shostakovich|Dmitry Shostakovich", "Cécile Chaminade", "Camille Saint-Saëns",
    "Sergei Prokofiev|Sergey Prokofiev", "Nikolai Medtner",
    "Edvard Grieg", "Maurice Ravel", "Niccolò Paganini", "Antonín Dvořák", "Gabriel Fauré", "Béla Bartók",
    "George Frideric Handel|Georg Friedrich Händel;Georg Friedrich Handel", "Carl Philipp Emanuel Bach",
    "Johann Christian Bach", "Wilhelm Friedemann Bach", "Clara Schumann|Clara Wieck",
    "Ferruccio Busoni|Feruccio Busoni",
    "Józef Wieniawski", "Henryk Wieniawski", "Ernst Theodor Amadeus Hoffmann", "Ignaz Brüll",
    "Volfgangs Dārziņš", "Jan Pieterszoon Sweelinck", "Hans Gál", "Louis Diémer", "Andrés Segovia", "Armas Järnefelt",
    "Adam Závodský", "Nikolay Amani|Nicolas Amani", "Louise Adolpha Le Beau|Luise Le Beau", "Pavel Pabst|Paul Pabst",
    "Charles Martin Loeffler", "Ralph Vaughan Williams|Vaughan Williams", "Leopold Godowsky",
    "Giovanni Pierluigi da Palestrina|Giovanni Perluigi da Palestrina;Palestrina",
)
PARTICLES = {"van", "von", "de", "da", "di", "du", "der", "den", "le", "la", "del", "dos", "y"}
SEPARATORS = re.compile(r"(\s*/\s*|\s+&\s+|\s+and\s+)")


def _key(name: str) -> str:
    """Accents, case and punctuation removed: 'J.S. Bach' -> 'j s bach'."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w-]+", " ", plain.lower()).split())


@functools.lru_cache(maxsize=1)
def _index() -> tuple[dict[str, str], list[tuple[list[str], str, str]]]:
    exact, people = {}, []
    for entry in CANONICAL:
        canonical, _, others = entry.partition("|")
        for spelling in [canonical, *filter(None, others.split(";"))]:
            exact.setdefault(_key(spelling), canonical)
        *given, surname = _key(canonical).split()
        people.append((given, surname, canonical))
    return exact, people


def _one(name: str) -> str:
    name = " ".join(name.split())
    if name.count(",") == 1:  # "Bach, Johann Sebastian" -> "Johann Sebastian Bach"
        last, first = (p.strip() for p in name.split(","))
        name = f"{first} {last}".strip()
    # Initials run together ("J.S. Bach", "CPE Bach"; not the words of an all-caps name) become one letter each.
    words = name.split()
    name = " ".join(" ".join(w.replace(".", "")) if re.fullmatch(r"(?:[A-Z]\.?){2,3}", w) and
                    ("." in w or (i < len(words) - 1 and not name.isupper())) else w for i, w in enumerate(words))
    exact, people = _index()
    key = _key(name)
    if key in exact:
        return exact[key]
    *given, surname = key.split() or [""]
    for g, s, canonical in people:  # given names or initials, in order, as a prefix of the canonical's
        if s == surname and len(given) <= len(g) and all(a == b or (len(a) == 1 and b.startswith(a))
                                                         for a, b in zip(given, g)):
            return canonical
    # Unknown: an all-caps or all-lower name gets capitals (particles and Roman numerals aside);
    # a bare capital before the surname gets its dot; anything else stays as written.
    words, recase = name.split(), name.isupper() or name.islower()
    for i, word in enumerate(words):
        if recase and not re.fullmatch(r"[IVX]+\.?", word):
            word = word.lower() if i and word.lower() in PARTICLES else word.capitalize()
        words[i] = word + "." if re.fullmatch(r"[A-Z]", word) and i < len(words) - 1 else word
    return " ".join(words)


def normalize_composer(name: str) -> str:
    """One spelling per composer (the table's composer field, music21's, a user's): canonical
    names for the known ones, a tidied form otherwise; "A/B" (arranger) and "A & B" keep their parts."""
    parts = SEPARATORS.split(str(name or "").strip())
    return "".join({"/": "/", "&": " & ", "and": " & "}.get(p.strip(), p) if i % 2 else _one(p)
                   for i, p in enumerate(parts))


INFO = DatasetInfo(
    name="score-videos",
    title="YouTube Score Video Dataset (U-MusT): score-following video metadata",
    licence="metadata CC BY-NC-SA 4.0 (non-commercial, share-alike; code MIT); the videos belong to their "
            "YouTube uploaders: not redistributable, fetch them only as YouTube's terms allow",
    commercial_use=False,
    homepage="https://github.com/MALerLab/youtube-score-video-dataset",
    modalities=(),
    splits=f"none official: a split column if any, else {TEST_IDS} ids -> test, else hashed by composer/piece",
    layout=f"{TABLE} (or its folder, optionally with videos named <YT Id>.<ext>)",
    citation="Jung et al., U-MusT: A Unified Framework for Cross-modal Translation of Score Images, Symbolic "
             "Music, and Performance Audio, IEEE/ACM TASLP 2025",
)


class ScoreVideosAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        from unimusic import storage

        files = storage.list_files(root)
        tables = [p for p in files if p.endswith(".csv") and p.rsplit("/", 1)[-1] not in (TEST_IDS, "videos.csv")]
        named = [p for p in tables if p.rsplit("/", 1)[-1] == TABLE]
        table = (named or tables or [None])[0]
        if table is None or (not named and len(tables) > 1):
            raise InputError(root, f"no {TABLE} (nor a single other CSV) found")
        rows, fields = _read_csv(table)
        if missing := [c for c in REQUIRED if c not in fields]:
            raise InputError(table, f"not a score-video table: missing column(s) {missing}")
        videos = {p.rsplit("/", 1)[-1].rsplit(".", 1)[0]: p for p in files if p.lower().endswith(VIDEO_SUFFIXES)}
        forced = {r.get("YT Id", "").strip() for p in files if p.endswith("/" + TEST_IDS) for r in _read_csv(p)[0]}
        split_column = next((f for f in fields if f.strip().lower() == "split"), None)
        examples, errors, first_line = [], [], {}
        for i, r in enumerate(rows, start=2):
            where, vid = f"{table}#line={i}", r["YT Id"].strip()
            if not VIDEO_ID.fullmatch(vid):
                errors.append(scan_error(where, f"YT Id {vid!r} is not a YouTube video id" if vid else "empty YT Id"))
                continue
            if vid in first_line:
                errors.append(scan_error(where, f"YT Id {vid} already on line {first_line[vid]}"))
                continue
            first_line[vid] = i
            meta = {COLUMN_KEYS.get(c, re.sub(r"\W+", "_", c.strip().lower())): (v or "").strip()
                    for c, v in r.items() if c}
            composer = normalize_composer(meta["composer"])
            meta.update(url=f"https://www.youtube.com/watch?v={vid}", composer_normalized=composer,
                        video=videos.get(vid))
            work = f"{composer}/{_key(meta.get('piece') or meta['title'])}"
            try:
                split = official_split(r[split_column], source=where) if split_column else \
                    "test" if vid in forced else hashed_split(work)
            except InputError as exc:
                errors.append(scan_error(where, exc.problem))
                continue
            examples.append(make_example(vid, split, {"video": videos.get(vid)}, meta, work=work))
        return examples, errors

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        """One metadata row (no forms): the video pipeline makes the image/audio rows."""
        return [base_row(self.info, example, config, source=example.file("video") or example.meta_dict["url"])]

    def extras(self, examples, out_dir: str) -> list[str]:
        """``videos.csv`` for ``unimusic videos ingest --metadata`` (composers normalized)."""
        from unimusic import storage

        path = storage.join(out_dir, "videos.csv")
        write_video_metadata(examples, path)
        return [path]


def _read_csv(path: str) -> tuple[list[dict], list[str]]:
    from unimusic import storage

    reader = csv.DictReader(io.StringIO(storage.read_bytes(path).decode("utf-8-sig")))
    return list(reader), list(reader.fieldnames or [])


def write_video_metadata(items, path: str) -> str:
    """Examples or rows (anything with this adapter's meta) -> the id,title,composer,instrumentation
    CSV that :func:`unimusic.video.ingest.read_metadata` reads."""
    from unimusic import storage

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "title", "composer", "instrumentation"])
    for item in items:
        meta = json.loads(item.meta if isinstance(item, Example) else item["meta"])
        writer.writerow([meta["id"], meta.get("piece") or meta.get("title", ""), normalize_composer(meta["composer"]),
                         meta.get("category") or meta.get("instrumentation", "")])
    storage.write_bytes(path, buffer.getvalue().encode("utf-8"))
    return path


ADAPTER = ScoreVideosAdapter()
