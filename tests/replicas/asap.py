"""An ASAP replica: ``metadata.csv`` and ``Composer/Group/piece/`` folders with
``xml_score.musicxml``, ``<Performer>.mid`` and ``<Performer>_annotations.txt`` (ASAP's TSV),
plus a MAESTRO folder (``maestro-v3.0.0.csv``, one year folder) reached through a ``maestro``
symlink inside SRC, as the adapter documents.

Scores are the first measures of two music21 chorales (one with its pickup measure, one cut
after it). A "performance" is Verovio's playback of the score at another tempo; its downbeats
are the measure starts of that playback. Performance ``Alpha01M`` is also in MAESTRO: the
recording there starts with an unrelated chord and reaches the piece at ``start`` s, cut the
way ASAP's initialize_dataset.py cuts (0.5 s of silence kept in front). ``Delta04M`` misses a
downbeat (rows without LMX). Broken on purpose: ``Lost05M.mid`` is listed but absent (scan
error), ``Broken06M.mid`` is not MIDI (row error).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from tests.replicas import Replica

SEGMENT_SECONDS = 6.0
LEAD = 0.5  # ASAP's cut performances start 0.5 s in (initialize_dataset.py's padding)
MAESTRO_START = 3.0  # where Alpha01M starts in its MAESTRO recording
MAESTRO_STEM = "2004/MIDI-Unprocessed_01_R1_2004_01-02_ORIG_MID--AUDIO_01_R1_2004_02_Track02_wav"
# piece folder -> (music21 corpus piece, measures [first, stop), pickup?, composer, title); no repeat signs
PIECES = {
    "Bach/Chorales/bwv_66_6": ("bach/bwv66.6", 0, 5, True, "Bach", "Chorale_bwv_66_6"),
    "Bach/Chorales/bwv_10_7": ("bach/bwv10.7", 0, 5, False, "Bach", "Chorale_bwv_10_7"),
}
# performer -> (piece folder, tempo factor, time shift, downbeat dropped)
PERFORMANCES = {
    "Alpha01M": ("Bach/Chorales/bwv_66_6", 1.1, LEAD, None),
    "Beta02M": ("Bach/Chorales/bwv_66_6", 0.95, 0.0, None),
    "Gamma03M": ("Bach/Chorales/bwv_10_7", 1.05, 0.0, None),
    "Delta04M": ("Bach/Chorales/bwv_10_7", 1.2, 0.0, 2),
}
LOST, BROKEN = "Lost05M", "Broken06M"


def score_and_playback(piece: str, first: int, stop: int):
    """(MusicXML of the cut score, Verovio's notes, [(measure start, end)] in seconds, time signature, fifths)."""
    from music21 import corpus

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.slicing import slice_measures
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_from_music21
    from unimusic.tokens.midi import notes_from_midi

    score = corpus.parse(piece)
    ts = score.recurse().getElementsByClass("TimeSignature")[0]
    fifths = score.recurse().getElementsByClass("KeySignature")[0].sharps
    xml = slice_measures(musicxml_from_music21(score, piece), first, stop, source=piece)
    ep = engrave_piece(xml, options=EngraveOptions(), source=piece)
    assert len(ep.playback) == stop - first, f"{piece}: playback repeats measures"
    return xml, notes_from_midi(ep.midi), [(m.start, m.end) for m in ep.playback], ts, fifths


def performed(notes, factor: float, shift: float) -> list:
    import dataclasses

    return [dataclasses.replace(n, start=n.start * factor + shift, end=n.end * factor + shift) for n in notes]


def midi_bytes(notes) -> bytes:
    from unimusic.tokens.midi import notes_to_midi

    buffer = io.BytesIO()
    notes_to_midi(notes).write(buffer)
    return buffer.getvalue()


def annotation_lines(measures, *, beats: int, ts: str, fifths: int, pickup: bool, drop: int | None) -> str:
    """ASAP's TSV for measure spans (seconds): a ``db`` and the beats of each measure (only
    beats for a pickup), key on the first line, time signature on the first downbeat."""
    lines, downbeats = [], 0
    for index, (start, end) in enumerate(measures):
        is_pickup = pickup and index == 0
        count = max(1, round((end - start) / ((measures[1][1] - measures[1][0]) / beats))) if is_pickup else beats
        for b in range(count):
            t = round(start + b * (end - start) / count, 6)
            label = "b" if is_pickup or b or index == drop else "db"
            if label == "db":
                label += f",{ts}" * (downbeats == 0)
                downbeats += 1
            if not lines:
                label += ("," if "," in label else ",,") + str(fifths)
            lines.append(f"{t}\t{t}\t{label}")
    return "\n".join(lines) + "\n"


def expected_rows(measures: list[tuple[float, float]], last_note_end: float, *, aligned: bool) -> int:
    """Rows the import makes: greedy groups of measures within SEGMENT_SECONDS, or time segments."""
    if not aligned:  # note ends snap to the 10 ms grid, then segments tile [0, last end]
        return math.ceil(math.floor(last_note_end * 100 + 0.5) / 100 / SEGMENT_SECONDS - 1e-9)
    starts = [s for s, _ in measures]
    ends = starts[1:] + [last_note_end]
    rows, i = 0, 0
    while i < len(starts):
        j = i
        while j + 1 < len(starts) and ends[j + 1] - starts[i] <= SEGMENT_SECONDS:
            j += 1
        rows, i = rows + 1, j + 1
    return rows


def write_maestro(root: Path, notes, split: str, end: float) -> None:
    """A MAESTRO folder whose one recording holds a stray chord, then the performance from MAESTRO_START."""
    import numpy as np
    import soundfile as sf

    from unimusic.render.synthesize import default_soundfonts, synthesize
    from unimusic.tokens.midi import Note

    stray = [Note(start=0.0, end=0.3, pitch=p, velocity=100) for p in (36, 43, 48)]
    moved = stray + performed(notes, 1.0, MAESTRO_START - LEAD)
    (root / "2004").mkdir(parents=True)
    midi = midi_bytes(moved)
    (root / f"{MAESTRO_STEM}.midi").write_bytes(midi)
    audio = synthesize(midi, soundfont=default_soundfonts()[0], sample_rate=44100)
    sf.write(root / f"{MAESTRO_STEM}.wav", np.stack([audio, audio * 0.9], axis=1), 44100, subtype="PCM_16")
    rows = [{"canonical_composer": "Johann Sebastian Bach", "canonical_title": "Chorale BWV 66.6", "split": split,
             "year": "2004", "midi_filename": f"{MAESTRO_STEM}.midi", "audio_filename": f"{MAESTRO_STEM}.wav",
             "duration": round(end, 6)}]
    write_csv(root / "maestro-v3.0.0.csv", rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def make(root: Path) -> Replica:
    from unimusic.datasets.base import hashed_split

    src = root / "asap-dataset"
    played, rows, rows_per_split, splits = {}, [], {}, {}
    # Alpha01M's piece takes MAESTRO's split: one the hash would not give, so the test can tell.
    maestro_split = next(s for s in ("test", "validation") if s != hashed_split("Bach/Chorale_bwv_66_6"))
    for folder, (piece, first, stop, pickup, composer, title) in PIECES.items():
        xml, notes, measures, ts, fifths = score_and_playback(piece, first, stop)
        (src / folder).mkdir(parents=True)
        (src / folder / "xml_score.musicxml").write_bytes(xml)
        (src / folder / "midi_score.mid").write_bytes(midi_bytes(notes))  # listed by ASAP, not read
        text = annotation_lines(measures, beats=ts.numerator, ts=ts.ratioString, fifths=fifths, pickup=pickup,
                                drop=None)
        (src / folder / "midi_score_annotations.txt").write_text(text)
        splits[folder] = {"validation": "val"}.get(maestro_split, maestro_split) if folder == PERFORMANCES[
            "Alpha01M"][0] else hashed_split(f"{composer}/{title}")
        for performer, (where, factor, shift, drop) in PERFORMANCES.items():
            if where != folder:
                continue
            perf_notes = performed(notes, factor, shift)
            perf_measures = [(s * factor + shift, e * factor + shift) for s, e in measures]
            (src / folder / f"{performer}.mid").write_bytes(midi_bytes(perf_notes))
            text = annotation_lines(perf_measures, beats=ts.numerator, ts=ts.ratioString, fifths=fifths,
                                    pickup=pickup, drop=drop)
            (src / folder / f"{performer}_annotations.txt").write_text(text)
            played[performer] = perf_notes
            written = read_back(src / folder / f"{performer}.mid", src / folder / f"{performer}_annotations.txt")
            count = expected_rows(*written, aligned=drop is None)
            rows_per_split[splits[folder]] = rows_per_split.get(splits[folder], 0) + count
            rows.append(metadata_row(folder, performer, composer, title))
    (src / "Bach/Chorales/bwv_10_7" / f"{BROKEN}.mid").write_bytes(b"MThd" + b"\x00garbage" * 8)
    for performer in (LOST, BROKEN):
        (src / "Bach/Chorales/bwv_10_7" / f"{performer}_annotations.txt").write_text("0.5\t0.5\tdb,4/4,2\n")
        rows.append(metadata_row("Bach/Chorales/bwv_10_7", performer, "Bach", "Chorale_bwv_10_7"))
    alpha = rows[0]
    end = max(n.end for n in played["Alpha01M"]) - LEAD + MAESTRO_START + 0.5
    alpha.update(maestro_midi_performance=f"{{maestro}}/{MAESTRO_STEM}.midi",
                 maestro_audio_performance=f"{{maestro}}/{MAESTRO_STEM}.wav", start=MAESTRO_START, end=round(end, 6),
                 audio_performance=f"{alpha['folder']}/Alpha01M.wav")  # not initialized: the MAESTRO file is read
    write_csv(src / "metadata.csv", rows)
    write_maestro(root / "maestro-v3.0.0", played["Alpha01M"], maestro_split, end)
    (src / "maestro").symlink_to(root / "maestro-v3.0.0", target_is_directory=True)
    return Replica(src=str(src), examples=len(rows) - 1, good=len(PERFORMANCES), errors=2,
                   rows_per_split=rows_per_split, modalities=("midi",), config={"segment_seconds": SEGMENT_SECONDS})


def metadata_row(folder: str, performer: str, composer: str, title: str) -> dict:
    return {"composer": composer, "title": title, "folder": folder, "xml_score": f"{folder}/xml_score.musicxml",
            "midi_score": f"{folder}/midi_score.mid", "midi_performance": f"{folder}/{performer}.mid",
            "performance_annotations": f"{folder}/{performer}_annotations.txt",
            "midi_score_annotations": f"{folder}/midi_score_annotations.txt", "maestro_midi_performance": "",
            "maestro_audio_performance": "", "start": "", "end": "", "audio_performance": ""}


def read_back(midi: Path, annotations: Path) -> tuple[list[tuple[float, float]], float]:
    """(measure spans from the annotation file's downbeats and pickup beat, last note end from the MIDI file)."""
    from unimusic.tokens.midi import notes_from_midi

    lines = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
    labels = [(float(t), label.split(",")[0]) for t, _, label in lines]
    first_db = next(i for i, (_, label) in enumerate(labels) if label == "db")
    starts = ([labels[0][0]] if first_db else []) + [t for t, label in labels if label == "db"]
    last = max(n.end for n in notes_from_midi(midi.read_bytes()))
    return list(zip(starts, starts[1:] + [last])), last
