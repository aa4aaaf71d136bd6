"""A MAESTRO v3.0.0 replica: ``maestro-v3.0.0/`` with its CSV and JSON tables and year
folders of ``.midi``/``.wav`` pairs named like the release's, from music21-corpus pieces.

Performances are a few measures of chorales engraved and played by Verovio, synthesized by
FluidSynth (stereo WAV, 44.1 kHz and one at 48 kHz as the 2018 recordings are), with a
sustain pedal stretch in one file. Broken on purpose: a row whose WAV is missing (scan
error) and a row whose WAV is not audio (row error).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from tests.replicas import Replica

PIECES = (  # (music21 corpus piece, measures, split, year, sample rate)
    ("bach/bwv66.6", 3, "train", "2004", 44100),
    ("bach/bwv84.5", 3, "train", "2018", 48000),
    ("bach/bwv86.6", 3, "validation", "2006", 44100),
    ("bach/bwv153.1", 3, "test", "2009", 44100),
)
SEGMENT_SECONDS = 4.0
PEDAL = (1.0, 2.5)  # sustain down/up (s) added to the first performance


def performance(piece: str, measures: int):
    """(MIDI bytes, duration) of the first ``measures`` measures of a corpus piece played by Verovio."""
    from music21 import corpus

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.slicing import slice_measures
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_from_music21

    xml = musicxml_from_music21(corpus.parse(piece), piece)
    xml = slice_measures(xml, 0, measures, source=piece)
    ep = engrave_piece(xml, options=EngraveOptions(), source=piece)
    return ep.midi, ep.duration


def with_pedal(midi: bytes, down: float, up: float) -> bytes:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi))
    for inst in pm.instruments:  # one pedal for the whole piano (Verovio writes a track per staff)
        inst.control_changes += [pretty_midi.ControlChange(64, 127, down), pretty_midi.ControlChange(64, 0, up)]
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def write_wav(path: Path, midi: bytes, sample_rate: int) -> float:
    import numpy as np
    import soundfile as sf

    from unimusic.render.synthesize import default_soundfonts, synthesize

    audio = synthesize(midi, soundfont=default_soundfonts()[0], sample_rate=sample_rate)
    sf.write(path, np.stack([audio, audio * 0.9], axis=1), sample_rate, subtype="PCM_16")
    return audio.size / sample_rate


def file_stem(year: str, i: int) -> str:
    return f"{year}/MIDI-Unprocessed_{i:02d}_R1_{year}_01-04_ORIG_MID--AUDIO_{i:02d}_R1_{year}_wav--{i + 1}"


def make(root: Path) -> Replica:
    from unimusic.tokens.midi import notes_from_midi

    base = root / "maestro-v3.0.0"
    rows, rows_per_split = [], {}
    for i, (piece, measures, split, year, sr) in enumerate(PIECES):
        stem = file_stem(year, i)
        (base / year).mkdir(parents=True, exist_ok=True)
        midi, _ = performance(piece, measures)
        if i == 0:
            midi = with_pedal(midi, *PEDAL)
        (base / f"{stem}.midi").write_bytes(midi)
        seconds = write_wav(base / f"{stem}.wav", midi, sr)
        end = max(seconds, max(n.end for n in notes_from_midi(midi)))
        ours = {"validation": "val"}.get(split, split)
        rows_per_split[ours] = rows_per_split.get(ours, 0) + math.ceil(math.ceil(end * 100 - 1e-6) / 100 / SEGMENT_SECONDS - 1e-9)
        rows.append({"canonical_composer": "Johann Sebastian Bach", "canonical_title": f"Chorale {piece}",
                     "split": split, "year": year, "midi_filename": f"{stem}.midi", "audio_filename": f"{stem}.wav",
                     "duration": round(seconds, 6)})
    # Broken rows: the WAV was never copied; the WAV is not audio.
    (base / "2011").mkdir(exist_ok=True)
    lost = file_stem("2011", 7)
    (base / f"{lost}.midi").write_bytes((base / f"{file_stem('2004', 0)}.midi").read_bytes())
    corrupt = file_stem("2011", 8)
    (base / f"{corrupt}.midi").write_bytes((base / f"{file_stem('2004', 0)}.midi").read_bytes())
    (base / f"{corrupt}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 8)
    for stem, split in ((lost, "train"), (corrupt, "test")):
        rows.append({"canonical_composer": "Johann Sebastian Bach", "canonical_title": "Broken", "split": split,
                     "year": "2011", "midi_filename": f"{stem}.midi", "audio_filename": f"{stem}.wav",
                     "duration": 1.0})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (base / "maestro-v3.0.0.csv").write_text(buffer.getvalue())
    columns = {c: {str(i): r[c] for i, r in enumerate(rows)} for c in rows[0]}
    (base / "maestro-v3.0.0.json").write_text(json.dumps(columns))
    return Replica(src=str(base), examples=len(rows) - 1, good=len(PIECES), errors=2,
                   rows_per_split=rows_per_split, modalities=("midi", "audio"),
                   config={"segment_seconds": SEGMENT_SECONDS})
