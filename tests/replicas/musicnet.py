"""A small MusicNet replica (layout of the Zenodo release, see unimusic/datasets/musicnet.py).

Three recordings are rendered from music21-corpus chorales (the first 4 measures,
engraved by Verovio, one instrument per part, synthesized by FluidSynth at 44.1 kHz);
their label CSVs are written from the very notes that were played, times in samples.
Recording 1727 starts after 1 s of silence, so its first label row is at sample 44100.

Broken copies, as a real download can have them:

* 1729: the WAV is random bytes (fails in ``rows``);
* 1730: a label row holds a non-number (fails in ``rows``);
* 2107: the label CSV has the wrong header (fails in ``rows``);
* 1731: a recording without a label file, 2108: labels without a recording (scan errors).
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

from tests.replicas import Replica

RATE = 44100
SEGMENT_SECONDS = 4.0  # the import the facts are for (as the MAESTRO replica)
HEADER = ("start_time", "end_time", "instrument", "note", "start_beat", "end_beat", "note_value")
METADATA_HEADER = ("id", "composer", "composition", "movement", "ensemble", "source", "transcriber",
                   "catalog_name", "seconds")
# id, split folder prefix, corpus piece, ensemble, MusicNet instrument code (1-based GM) per part, lead-in seconds
PIECES = (
    ("1727", "train", "bach/bwv66.6", "Piano Quartet", (1, 41, 42, 43), 1.0),
    ("1728", "train", "bach/bwv26.6", "Solo Piano", (1, 1, 1, 1), 0.0),
    ("2106", "test", "bach/bwv253", "Wind Quartet", (74, 69, 72, 71), 0.0),
)
NOTE_VALUES = {0.5: "Eighth", 1.0: "Quarter", 1.5: "Dotted Quarter", 2.0: "Half", 3.0: "Dotted Half", 4.0: "Whole"}


def segments(total: float, segment_seconds: float, steps_per_second: int = 100) -> int:
    """How many rows a performance of ``total`` seconds (its audio or last note end, whichever
    is later) is cut into: ``segment_seconds`` windows over it, its end rounded up to the grid."""
    steps = math.ceil(total * steps_per_second - 1e-6)
    return -(-steps // round(segment_seconds * steps_per_second))


def snapped_end(start: float, end: float, steps_per_second: int = 100) -> float:
    """A pitched note's end on the codec grid (at least one step long)."""
    s, e = (math.floor(x * steps_per_second + 0.5) for x in (start, end))
    return max(e, s + 1) / steps_per_second


def render(name: str, codes: tuple[int, ...], lead: float):
    """(audio, label rows) of the first 4 measures of a corpus piece, one GM program per part."""
    import pretty_midi
    from music21 import corpus

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.slicing import slice_measures
    from unimusic.render.synthesize import default_soundfonts, synthesize
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_from_music21
    from unimusic.tokens.midi import load_midi

    xml = slice_measures(musicxml_from_music21(corpus.parse(name), name), 0, 4, source=name)
    parts = load_midi(engrave_piece(xml, options=EngraveOptions(), source=name).midi, name=name).instruments
    played = pretty_midi.PrettyMIDI(resolution=1000, initial_tempo=120.0)
    rows = []
    for part, code in zip(parts, codes, strict=True):
        inst = pretty_midi.Instrument(program=code - 1)
        for n in part.notes:
            start, end = round((n.start + lead) * RATE), round((n.end + lead) * RATE)
            inst.notes.append(pretty_midi.Note(velocity=90, pitch=n.pitch, start=start / RATE, end=end / RATE))
            beats = round((n.end - n.start) * 2, 3)  # Verovio plays these chorales at 120 bpm
            rows.append((start, end, code, n.pitch, round(n.start * 2, 3), beats, NOTE_VALUES.get(beats, "Unknown")))
        played.instruments.append(inst)
    audio = synthesize(played, soundfont=default_soundfonts()[0], sample_rate=RATE, name=name)
    return audio, sorted(rows)


def write_labels(path: Path, rows, header=HEADER) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make(root: Path, *, segment_seconds: float = SEGMENT_SECONDS) -> Replica:
    """Write the replica under ``root``; facts for an import with ``segment_seconds`` rows."""
    import numpy as np
    import soundfile as sf

    base = Path(root) / "musicnet"
    for folder in ("train_data", "train_labels", "test_data", "test_labels"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    meta = []
    rows_per_split = {"train": 0, "val": 0, "test": 0}
    for rec_id, split, name, ensemble, codes, lead in PIECES:
        audio, rows = render(name, codes, lead)
        sf.write(base / f"{split}_data" / f"{rec_id}.wav", audio, RATE, subtype="PCM_16")
        write_labels(base / f"{split}_labels" / f"{rec_id}.csv", rows)
        total = max([audio.size / RATE] + [snapped_end(r[0] / RATE, r[1] / RATE) for r in rows])
        rows_per_split[split] += segments(total, segment_seconds)
        meta.append((rec_id, "Bach", name, "1. Chorale", ensemble, "music21 corpus", "unimusic", name,
                     round(audio.size / RATE)))
    # The broken ones.
    data, labels = base / "train_data", base / "train_labels"
    (data / "1729.wav").write_bytes(np.random.default_rng(1729).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    shutil.copy(labels / "1727.csv", labels / "1729.csv")
    shutil.copy(data / "1728.wav", data / "1730.wav")
    good = list(csv.reader((labels / "1728.csv").read_text().splitlines()))[1:]
    write_labels(labels / "1730.csv", good[:3] + [["4410", "x", "1", "60", "0", "1", "Quarter"]] + good[3:])
    shutil.copy(base / "test_data" / "2106.wav", base / "test_data" / "2107.wav")
    write_labels(base / "test_labels" / "2107.csv", good, header=("onset", "offset", "program", "pitch"))
    shutil.copy(data / "1728.wav", data / "1731.wav")  # no labels
    shutil.copy(base / "test_labels" / "2106.csv", base / "test_labels" / "2108.csv")  # no recording
    for rec_id in ("1729", "1730", "2107", "1731", "2108"):
        meta.append((rec_id, "Bach", "broken copy", "", "Solo Piano", "unimusic", "unimusic", "", 8))
    with open(Path(root) / "musicnet_metadata.csv", "w", newline="") as f:  # downloaded beside the tarball
        w = csv.writer(f)
        w.writerow(METADATA_HEADER)
        w.writerows(sorted(meta))
    return Replica(src=str(root), examples=len(PIECES) + 3, good=len(PIECES), errors=3 + 2,
                   rows_per_split=rows_per_split, modalities=("midi", "audio"),
                   config={"segment_seconds": segment_seconds})
