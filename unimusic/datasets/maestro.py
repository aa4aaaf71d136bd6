"""MAESTRO v3.0.0: piano performances, audio aligned with Disklavier MIDI (~3 ms).

Layout (the release zip ``maestro-v3.0.0.zip``, https://magenta.tensorflow.org/datasets/maestro):

    maestro-v3.0.0/
        maestro-v3.0.0.csv      canonical_composer, canonical_title, split, year,
                                midi_filename, audio_filename, duration
        maestro-v3.0.0.json     the same table, column-oriented ({"split": {"0": "train", ...}})
        2004/MIDI-Unprocessed_..._wav--1.midi
        2004/MIDI-Unprocessed_..._wav--1.wav
        ...

File names in the table are relative to the folder holding it. Splits are the
table's train / validation / test (validation -> ``val``). Audio is 44.1-48 kHz
16-bit stereo WAV; rows hold it mono at ``ImportConfig.sample_rate``.

SRC may be the ``maestro-v3.0.0`` folder or its parent; the CSV is preferred, the
JSON is read when there is no CSV. Other versions (v1, v2) use the same columns
under their own file names (``maestro-v2.0.0.csv``) and are accepted.

Sustain pedal: the MIDI keeps pedal events; like the published transcription
work on MAESTRO, a note released while the pedal (CC64 >= 64) is down sounds
until the pedal lifts (or the same key is struck again), and that is the note's
end in the rows.
"""

from __future__ import annotations

import csv
import io
import json

from unimusic.datasets.base import DatasetInfo, Example, ImportConfig, base_row, make_example, official_split, \
    performance_rows, read_audio, scan_error
from unimusic.errors import InputError

COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration")

INFO = DatasetInfo(
    name="maestro",
    title="MAESTRO v3.0.0 (MIDI and Audio Edited for Synchronous TRacks and Organization)",
    licence="CC BY-NC-SA 4.0 (non-commercial, share-alike)",
    commercial_use=False,
    homepage="https://magenta.tensorflow.org/datasets/maestro",
    modalities=("midi", "audio"),
    splits="the table's split column: train / validation / test",
    layout="the maestro-v3.0.0 folder (maestro-v3.0.0.csv or .json beside the year folders)",
    citation="Hawthorne et al., Enabling Factorized Piano Music Modeling and Generation with the MAESTRO "
             "Dataset, ICLR 2019",
)


def find_table(root: str) -> str:
    """The metadata table under ``root`` (itself or one folder down); CSV before JSON."""
    from unimusic import storage

    candidates = [p for p in storage.list_files(root, suffixes=(".csv", ".json"))
                  if p.rsplit("/", 1)[-1].startswith("maestro-v")]
    candidates = [p for p in candidates if p[len(root.rstrip("/")):].count("/") <= 2]
    if not candidates:
        raise InputError(root, "not a MAESTRO folder: no maestro-v*.csv or maestro-v*.json found")
    return sorted(candidates, key=lambda p: (not p.endswith(".csv"), p.count("/"), p))[0]


def read_table(path: str) -> list[dict]:
    """Rows of the metadata table (CSV or column-oriented JSON) as dicts of strings."""
    from unimusic import storage

    text = storage.read_bytes(path).decode("utf-8-sig")
    if path.endswith(".json"):
        try:
            columns = json.loads(text)
            index = sorted(columns["midi_filename"], key=int)
            rows = [{c: str(columns.get(c, {}).get(i, "")) for c in COLUMNS} for i in index]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(path, f"not a MAESTRO JSON table ({type(exc).__name__}: {exc})") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"not a MAESTRO table: missing column(s) {missing}")
        rows = list(reader)
    return rows


class MaestroAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        from unimusic import storage

        table = find_table(root)
        folder = table.rsplit("/", 1)[0]
        present = set(storage.list_files(folder, suffixes=(".midi", ".mid", ".wav", ".flac", ".mp3")))
        examples, errors = [], []
        for i, r in enumerate(read_table(table), start=2):
            where = f"{table}#line={i}"
            try:
                split = official_split(r["split"], source=where)
            except InputError as exc:
                errors.append(scan_error(where, exc.problem))
                continue
            midi, audio = storage.join(folder, r["midi_filename"]), storage.join(folder, r["audio_filename"])
            lost = [p for p in (midi, audio) if p not in present]
            if lost:
                errors.append(scan_error(lost[0], f"listed in {table.rsplit('/', 1)[-1]} line {i} but missing"))
                continue
            key = r["midi_filename"].rsplit(".", 1)[0]
            meta = {"composer": r["canonical_composer"], "title": r["canonical_title"], "year": r["year"],
                    "duration": float(r["duration"] or 0), "midi_filename": r["midi_filename"],
                    "audio_filename": r["audio_filename"]}
            # One composition played by several pianists stays in one split already (MAESTRO's own rule);
            # rows are grouped by composition for any further splitting.
            work = f"{r['canonical_composer']}/{r['canonical_title']}"
            examples.append(make_example(key, split, {"midi": midi, "audio": audio}, meta, work=work))
        return examples, errors

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        from unimusic import storage

        midi_path, audio_path = example.require("midi"), example.require("audio")
        notes = sustained_notes(storage.read_bytes(midi_path), name=midi_path)
        audio = read_audio(audio_path, sample_rate=config.sample_rate, max_seconds=config.max_example_seconds)
        row = base_row(self.info, example, config, source=audio_path)
        return performance_rows(row, notes=notes, audio=audio, config=config, source=midi_path)


def sustained_notes(data: bytes, *, name: str) -> list:
    """The notes of a MIDI file with note ends extended while the sustain pedal is down."""

    from unimusic.tokens.midi import Note, load_midi

    pm = load_midi(data, name=name)
    notes = []
    for inst in pm.instruments:
        pedal = sorted((c.time, c.value >= 64) for c in inst.control_changes if c.number == 64)
        downs = []  # (down, up) intervals
        start = None
        for t, down in pedal:
            if down and start is None:
                start = t
            elif not down and start is not None:
                downs.append((start, t))
                start = None
        if start is not None:
            downs.append((start, max([n.end for n in inst.notes] + [start])))
        raw = sorted(inst.notes, key=lambda n: (n.start, n.pitch))
        next_onset: dict[int, list[float]] = {}
        for n in raw:
            next_onset.setdefault(n.pitch, []).append(n.start)
        for n in raw:
            end = n.end
            for a, b in downs:
                if a <= n.end < b:
                    end = b
                    break
            later = [s for s in next_onset[n.pitch] if s > n.start]
            if later:
                end = min(end, later[0]) if end > n.end else end
            notes.append(Note(start=float(n.start), end=float(max(end, n.end)), pitch=int(n.pitch),
                              velocity=int(n.velocity), program=int(inst.program), is_drum=bool(inst.is_drum)))
    return sorted(notes, key=lambda n: (n.start, n.pitch))


ADAPTER = MaestroAdapter()
