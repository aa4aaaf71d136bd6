"""ASAP v1.1 (Aligned Scores and Performances): MusicXML scores, performance MIDI with beat and
downbeat annotations, audio through MAESTRO. Layout from https://github.com/fosfrancesco/asap-dataset
(README, metadata.csv, initialize_dataset.py at commit afc815c):

    asap-dataset/
        metadata.csv            composer, title, folder, xml_score, midi_score, midi_performance,
                                performance_annotations, midi_score_annotations,
                                maestro_midi_performance, maestro_audio_performance, start, end,
                                audio_performance (paths relative to the folder)
        asap_annotations.json   the same annotations as one table (not read here)
        Bach/Fugue/bwv_848/xml_score.musicxml, midi_score.mid, Lee01M.mid,
                           Lee01M_annotations.txt (TSV: time, time, ``db``/``b``/``bR`` with
                           ``,<time signature>,<key>`` on changes)

Audio is not in the repository. ``maestro_audio_performance`` reads ``{maestro}/2006/...wav``;
``{maestro}`` is the MAESTRO folder named by ``$UNIMUSIC_MAESTRO_ROOT`` or else a ``maestro/``
folder (or symlink) inside SRC. ``start``/``end`` (seconds) cut that recording as ASAP's
``initialize_dataset.py`` does: [start, end], with 0.5 s of silence in front when start > 0
(ASAP's MIDI has the same 0.5 s lead). An ``audio_performance`` file already in SRC (a set
initialized by that script) is used as it is. No audio: MIDI-only rows, not an error.

Splits: ASAP has none. A performance that is in MAESTRO keeps MAESTRO's split (the
``maestro-v*.csv`` at the MAESTRO root, matched by file name); the other performances of its
piece take that piece's (most common) MAESTRO split; pieces without one are hashed. A piece is
(composer, title), as the README advises: two score folders can hold one piece (``17-1`` and
``17-1_no_repeat``), so hashing by folder could leak a piece across splits.

Rows: one example per performance. When the downbeats match the score's measures one to one
(or all but a pickup measure whose beats come before the first downbeat), rows are groups of
consecutive measures of at most ``segment_seconds`` (at least one) with their LMX; otherwise
(repeats, split measures, skipped beats) time segments without LMX, ``"aligned": false`` in
the row's meta. Uncertain: whether a final closing downbeat is ever annotated (the last measure
ends at the last note's release here); ``asap_annotations.json``'s ``downbeats_score_map``
(which the reference U-MusT pairs with the downbeats) would align repeats too -- not read here.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter

from unimusic.datasets.base import DatasetInfo, Example, ImportConfig, base_row, hashed_split, make_example, \
    performance_rows, read_audio, scan_error
from unimusic.errors import InputError

COLUMNS = ("composer", "title", "folder", "xml_score", "midi_performance", "performance_annotations")
MAESTRO_ENV = "UNIMUSIC_MAESTRO_ROOT"
PAD_SECONDS = 0.5  # initialize_dataset.py's silence before a cut MAESTRO recording (start > 0)

INFO = DatasetInfo(
    name="asap",
    title="ASAP v1.1 (Aligned Scores and Performances)",
    licence="CC BY-NC-SA 4.0 (non-commercial, share-alike); audio from MAESTRO, CC BY-NC-SA 4.0",
    commercial_use=False,
    homepage="https://github.com/fosfrancesco/asap-dataset",
    modalities=("lmx", "midi", "audio"),
    splits="none official: MAESTRO's split for performances in MAESTRO (and the rest of their piece), "
           "else hashed by composer/title",
    layout=f"the asap-dataset folder (metadata.csv); audio from ${MAESTRO_ENV} or SRC/maestro/",
    citation="Foscarin et al., ASAP: a dataset of aligned scores and performances for piano transcription, "
             "ISMIR 2020",
)


def _abs(path: str) -> str:
    from unimusic import storage

    return path.rstrip("/") if storage.is_remote(path) else os.path.abspath(path)


def maestro_index(root: str) -> tuple[str | None, set[str], dict[str, str]]:
    """(MAESTRO folder or None, its files, {year/stem: our split}) for the audio and the splits."""
    from unimusic import storage
    from unimusic.datasets.base import official_split
    from unimusic.datasets.maestro import read_table

    env = os.environ.get(MAESTRO_ENV, "").strip()
    if env and not storage.exists(env):
        raise InputError(env, f"${MAESTRO_ENV} names no file or folder")
    base = _abs(env) if env else storage.join(_abs(root), "maestro")
    if not env and not storage.exists(base):
        return None, set(), {}
    files = set(storage.list_files(base))
    tables = sorted((p for p in files if p.rsplit("/", 1)[-1].startswith("maestro-v") and p.endswith(".csv")
                     and p[len(base):].count("/") <= 2), key=lambda p: (p.count("/"), p))
    if not tables:
        return base, files, {}
    splits = {}
    for i, r in enumerate(read_table(tables[0]), start=2):
        split = official_split(r["split"], source=f"{tables[0]}#line={i}")
        for name in (r["audio_filename"], r["midi_filename"]):
            splits[name.rsplit(".", 1)[0]] = split
    return tables[0].rsplit("/", 1)[0], files, splits


def read_metadata(path: str) -> list[dict]:
    from unimusic import storage

    reader = csv.DictReader(io.StringIO(storage.read_bytes(path).decode("utf-8-sig")))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(path, f"not an ASAP metadata table: missing column(s) {missing}")
    return [{k: (v or "").strip() for k, v in r.items() if k} for r in reader]


def read_annotations(data: bytes, *, source: str) -> tuple[list[float], list[float]]:
    """An annotation TSV -> (downbeat times, beat times before the first downbeat)."""
    downbeats, lead, last = [], [], float("-inf")
    for number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        try:
            t, label = float(cols[0]), cols[2].split(",")[0].strip()
        except (IndexError, ValueError):
            raise InputError(source, f"parse: line {number} is not 'time<TAB>time<TAB>label'") from None
        if label not in ("db", "b", "bR"):
            raise InputError(source, f"parse: line {number}: label {label!r} is not db, b or bR")
        if t < last:
            raise InputError(source, f"align: line {number}: time {t} s is before the line above ({last} s)")
        last = t
        if label == "db":
            downbeats.append(t)
        elif not downbeats:
            lead.append(t)
    return downbeats, lead


class AsapAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        from unimusic import storage

        root = _abs(root)
        present = set(storage.list_files(root))
        table = storage.join(root, "metadata.csv")
        if table not in present:
            raise InputError(root, "not an ASAP folder: no metadata.csv")
        maestro, maestro_files, maestro_splits = maestro_index(root)
        found, errors, seen = [], [], set()
        for i, r in enumerate(read_metadata(table), start=2):
            where = f"{table}#line={i}"
            empty = [c for c in COLUMNS if not r.get(c)]
            if empty:
                errors.append(scan_error(where, f"empty {', '.join(empty)}"))
                continue
            key = r["midi_performance"].rsplit(".", 1)[0]
            if key in seen:
                errors.append(scan_error(where, f"performance {r['midi_performance']} listed twice"))
                continue
            seen.add(key)
            files = {role: storage.join(root, r[c]) for role, c in
                     (("score", "xml_score"), ("midi", "midi_performance"), ("annotations", "performance_annotations"))}
            lost = [p for p in files.values() if p not in present]
            if lost:
                errors.append(scan_error(lost[0], f"listed in metadata.csv line {i} but missing"))
                continue
            rel = r.get("maestro_audio_performance", "").replace("{maestro}", "").lstrip("/")
            meta = {"composer": r["composer"], "title": r["title"], "folder": r["folder"],
                    "performer": key.rsplit("/", 1)[-1], "maestro": rel or None, "audio_start": None, "audio_end": None}
            local = storage.join(root, r["audio_performance"]) if r.get("audio_performance") else None
            if local in present:
                files["audio"] = local
            elif rel and maestro and storage.join(maestro, rel) in maestro_files:
                files["audio"] = storage.join(maestro, rel)
                try:
                    meta.update(audio_start=_seconds(r.get("start")), audio_end=_seconds(r.get("end")))
                except ValueError as exc:
                    errors.append(scan_error(where, f"start/end: {exc}"))
                    continue
            work = f"{r['composer']}/{r['title']}"
            found.append((key, files, meta, work, maestro_splits.get(rel.rsplit(".", 1)[0]) if rel else None))
        by_work: dict[str, Counter] = {}
        for *_, work, split in found:
            by_work.setdefault(work, Counter()).update([split] if split else [])
        examples = []
        for key, files, meta, work, split in found:
            common = sorted(by_work[work].items(), key=lambda kv: (-kv[1], kv[0]))
            split = split or (common[0][0] if common else hashed_split(work))
            examples.append(make_example(key, split, files, meta, work=work))
        return examples, errors

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        from unimusic import storage
        from unimusic.datasets.maestro import sustained_notes
        from unimusic.render.slicing import measure_count
        from unimusic.scores import musicxml_bytes

        score, midi, annotations = (example.require(r) for r in ("score", "midi", "annotations"))
        notes = sustained_notes(storage.read_bytes(midi), name=midi)
        if not notes:
            raise InputError(midi, "midi: the performance has no notes")
        downbeats, lead = read_annotations(storage.read_bytes(annotations), source=annotations)
        xml = musicxml_bytes(score, storage.read_bytes(score))
        n = measure_count(xml, source=score)
        audio = self.audio(example, config)
        row = base_row(self.info, example, config, source=midi)
        facts = {"downbeats": len(downbeats), "score_measures": n}
        if downbeats and (len(downbeats) == n or (len(downbeats) == n - 1 and lead)):
            starts = ([lead[0]] if len(downbeats) < n else []) + downbeats
            return self.measure_rows(row, example, config, xml=xml, starts=starts, notes=notes, audio=audio,
                                     facts=facts)
        rows = performance_rows(row, notes=notes, audio=audio, config=config, source=midi)
        meta = json.dumps({**example.meta_dict, **facts, "aligned": False}, sort_keys=True)
        return [dict(r, meta=meta) for r in rows]

    def measure_rows(self, row, example, config, *, xml, starts, notes, audio, facts) -> list[dict]:
        """Rows of consecutive measures (as many as fit in segment_seconds) with their LMX."""
        from unimusic.render.lmx import linearize
        from unimusic.render.slicing import slice_measures
        from unimusic.tokens.lmx import LmxCodec

        score, midi = example.require("score"), example.require("midi")
        ends = starts[1:] + [max(max(n.end for n in notes), starts[-1] + 1.0 / config.midi.steps_per_second)]
        groups, i = [], 0
        while i < len(starts):
            j = i
            while j + 1 < len(starts) and ends[j + 1] - starts[i] <= config.segment_seconds:
                j += 1
            groups.append((i, j))
            i = j + 1
        rows = performance_rows(row, notes=notes, audio=audio, config=config,
                                spans=[(starts[i], ends[j]) for i, j in groups], source=midi)
        if len(rows) != len(groups):
            raise InputError(example.require("annotations"), "align: a measure is shorter than one MIDI step")
        meta = json.dumps({**example.meta_dict, **facts, "aligned": True}, sort_keys=True)
        codec = LmxCodec()
        for r, (i, j) in zip(rows, groups):
            where, span = f"{score} measures {i + 1}-{j + 1}", range(i, j + 1)
            tokens = linearize(slice_measures(xml, i, j + 1, source=where), source=where)
            at = lambda t: round(min(max(t - r["start"], 0.0), r["end"] - r["start"]), 6)  # noqa: E731
            r.update(lmx=codec.encode(tokens, source=where), measures=list(span), played_measures=list(span),
                     measure_start=[at(starts[k]) for k in span], measure_end=[at(ends[k]) for k in span], meta=meta)
        return rows

    def audio(self, example: Example, config: ImportConfig):
        """The performance's audio on the MIDI's timeline (MAESTRO recordings cut as ASAP cuts them)."""
        import numpy as np

        path = example.file("audio")
        if path is None:
            return None
        audio = read_audio(path, sample_rate=config.sample_rate, max_seconds=config.max_example_seconds)
        meta, sr = example.meta_dict, config.sample_rate
        start, end = meta.get("audio_start"), meta.get("audio_end")
        if start is None and end is None:
            return audio
        cut = audio[int(round((start or 0.0) * sr)): int(round(end * sr)) if end is not None else audio.size]
        if cut.size == 0:
            raise InputError(path, f"audio: cut [{start}, {end}] s of metadata.csv is empty")
        if start:
            cut = np.concatenate([np.zeros(int(round(PAD_SECONDS * sr)), dtype=np.float32), cut])
        return cut


def _seconds(text: str | None) -> float | None:
    """A start/end cell: seconds, or None when blank, zero or NaN (no cut); ValueError otherwise."""
    value = float(text) if text else 0.0
    return value if value > 0 else None


ADAPTER = AsapAdapter()
