"""MusicNet: 330 freely-licensed chamber music recordings with aligned note labels.

Layout (the Zenodo release, https://zenodo.org/records/5120004: ``musicnet.tar.gz``
plus ``musicnet_metadata.csv`` and ``musicnet_midis.tar.gz`` beside it)::

    musicnet/
        train_data/<id>.wav      320 recordings (44.1 kHz)
        train_labels/<id>.csv    start_time, end_time, instrument, note, start_beat,
                                 end_beat, note_value
        test_data/<id>.wav       10 recordings
        test_labels/<id>.csv
    musicnet_metadata.csv        id, composer, composition, movement, ensemble, source,
                                 transcriber, catalog_name, seconds
    musicnet_midis/...           MIDI of the scores the labels were aligned from: not read

Certain (Thickstun's ``pytorch_musicnet`` loader, the metadata header): the folder
names, the label columns, label times are integer *sample* indices at 44.1 kHz,
``note`` is a MIDI pitch. ``instrument`` is a 1-based General MIDI program: the 11
codes used (1 piano, 7 harpsichord, 41 violin, 42 viola, 43 cello, 44 contrabass,
61 horn, 69 oboe, 71 bassoon, 72 clarinet, 74 flute) are exactly those instruments'
1-based GM numbers, so rows carry ``program = instrument - 1``. Labels have no
velocity (rows use 100).

Assumed, so tolerated: the folders may sit at any depth under SRC (the tarball's
``musicnet/``, Kaggle's ``musicnet/musicnet/``) and ``musicnet_metadata.csv``
anywhere under SRC (the shallowest wins); without it examples carry no metadata.
Splits are the release's train/test folders (there is no validation set);
movements of one composition share a ``work``. A recording without its labels (or
labels without a recording) is a scan error; a label file is parsed strictly in
``rows`` (bad header or row: ``InputError`` naming the file and line).

Licence: CC BY 4.0 as recalled from the Zenodo record; not confirmed from a primary
source when this adapter was written (the recordings themselves come from
freely-licensed sources: Isabella Stewart Gardner Museum, European Archive, Musopen).
"""

from __future__ import annotations

import csv
import io

from unimusic.datasets.base import DatasetInfo, Example, ImportConfig, base_row, make_example, official_split, \
    performance_rows, read_audio, scan_error
from unimusic.errors import InputError

LABEL_RATE = 44100  # label times are sample indices at this rate
LABEL_COLUMNS = ("start_time", "end_time", "instrument", "note")  # the ones read (of 7)
METADATA = "musicnet_metadata.csv"
# folder name -> (official split, role)
FOLDERS = {"train_data": ("train", "audio"), "train_labels": ("train", "labels"),
           "test_data": ("test", "audio"), "test_labels": ("test", "labels")}
SUFFIX = {"audio": ".wav", "labels": ".csv"}

INFO = DatasetInfo(
    name="musicnet",
    title="MusicNet",
    licence="CC BY 4.0 (the Zenodo record's licence; recordings come from freely-licensed sources)",
    commercial_use=True,
    homepage="https://zenodo.org/records/5120004",
    modalities=("midi", "audio"),
    splits="the release's folders: train_data / test_data (no validation set)",
    layout="the folder musicnet.tar.gz extracts to (train_data, train_labels, test_data, test_labels) or a "
           "parent of it; musicnet_metadata.csv anywhere below SRC",
    citation="Thickstun, Harchaoui and Kakade, Learning Features of Music from Scratch, ICLR 2017",
)


def _name(path: str) -> tuple[str, str]:
    """(parent folder name, file name) of a local path or S3 URL."""
    parts = path.rstrip("/").split("/")
    return (parts[-2] if len(parts) > 1 else ""), parts[-1]


def read_metadata(path: str) -> dict[str, dict]:
    """``musicnet_metadata.csv`` as {id: row}."""
    from unimusic import storage

    reader = csv.DictReader(io.StringIO(storage.read_bytes(path).decode("utf-8-sig")))
    if "id" not in (reader.fieldnames or []):
        raise InputError(path, f"not a MusicNet metadata table: no 'id' column (have {reader.fieldnames})")
    return {str(r["id"]).strip(): {k: (v or "").strip() for k, v in r.items() if k} for r in reader}


def read_labels(path: str) -> list:
    """A label CSV -> notes in seconds (strict: a bad header or row raises, naming the line)."""
    from unimusic import storage
    from unimusic.tokens.midi import Note

    reader = csv.DictReader(io.StringIO(storage.read_bytes(path).decode("utf-8-sig")))
    missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(path, f"not a MusicNet label file: missing column(s) {missing} (header {reader.fieldnames})")
    notes = []
    for line, r in enumerate(reader, start=2):
        try:
            start, end, instrument, pitch = (int(str(r[c]).strip()) for c in LABEL_COLUMNS)
        except (TypeError, ValueError):
            raise InputError(path, f"line {line}: expected whole numbers in {list(LABEL_COLUMNS)}, got "
                                   f"{[r.get(c) for c in LABEL_COLUMNS]}") from None
        if not 0 <= start <= end:
            raise InputError(path, f"line {line}: bad times start_time={start} end_time={end} (samples)")
        if not 1 <= instrument <= 128:
            raise InputError(path, f"line {line}: instrument {instrument} outside 1..128 (1-based GM program)")
        if not 0 <= pitch <= 127:
            raise InputError(path, f"line {line}: note {pitch} outside 0..127")
        notes.append(Note(start=start / LABEL_RATE, end=end / LABEL_RATE, pitch=pitch, program=instrument - 1))
    return notes


class MusicNetAdapter:
    info = INFO

    def scan(self, root: str) -> tuple[list[Example], list[dict]]:
        from unimusic import storage

        found: dict[str, dict] = {}  # id -> {"split", "audio", "labels"}
        metadata, errors = [], []
        for path in storage.list_files(root, suffixes=(".wav", ".csv")):
            folder, name = _name(path)
            if name == METADATA:
                metadata.append(path)
                continue
            if folder not in FOLDERS:
                continue
            split, role = FOLDERS[folder]
            if not name.lower().endswith(SUFFIX[role]):
                continue
            rec = found.setdefault(name.rsplit(".", 1)[0], {"split": split})
            if role in rec or rec["split"] != split:
                errors.append(scan_error(path, f"recording {name.rsplit('.', 1)[0]} appears twice (also "
                                               f"{rec.get(role) or rec.get('audio') or rec.get('labels')})"))
                rec["duplicate"] = True
                continue
            rec[role] = path
        if not found:
            raise InputError(root, "not a MusicNet folder: no train_data/, train_labels/, test_data/ or "
                                   "test_labels/ files found")
        table = {}
        if metadata:
            path = min(metadata, key=lambda p: (p.count("/"), p))
            try:
                table = read_metadata(path)
            except InputError as exc:
                errors.append(scan_error(exc.source, exc.problem))
        examples = []
        for key in sorted(found):
            rec = found[key]
            if rec.get("duplicate"):
                continue
            if "audio" not in rec or "labels" not in rec:
                have, lack = ("audio", "labels") if "audio" in rec else ("labels", "audio")
                folder = f"{rec['split']}_{'data' if lack == 'audio' else 'labels'}"
                expected = storage.join(rec[have].rsplit("/", 2)[0], folder, key + SUFFIX[lack])
                errors.append(scan_error(expected, f"missing: recording {key} has {have} but no {lack} file"))
                continue
            meta = {"id": key, **table.get(key, {})}
            # Movements of one composition stay together for any further splitting.
            work = f"{meta.get('composer', '')}/{meta['composition']}" if meta.get("composition") else key
            split = official_split(rec["split"], source=rec["audio"])
            examples.append(make_example(key, split, {"audio": rec["audio"], "labels": rec["labels"]}, meta,
                                         work=work))
        return examples, errors

    def rows(self, example: Example, config: ImportConfig) -> list[dict]:
        audio_path, labels_path = example.require("audio"), example.require("labels")
        notes = read_labels(labels_path)
        audio = read_audio(audio_path, sample_rate=config.sample_rate, max_seconds=config.max_example_seconds)
        row = base_row(self.info, example, config, source=audio_path)
        return performance_rows(row, notes=notes, audio=audio, config=config, source=labels_path)


ADAPTER = MusicNetAdapter()
