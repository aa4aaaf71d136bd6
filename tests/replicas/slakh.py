"""A small Slakh2100 (flac_redux) replica (layout: see unimusic/datasets/slakh.py).

Three tracks (train, validation, test), each from the first 4 measures of a
music21-corpus chorale engraved by Verovio, with five stems as Slakh has them:

* S00 piano (soprano part), S01 electric bass (bass part), S02 drums (a kick and
  hi-hat pattern): rendered (each synthesized alone by FluidSynth with its own
  program, 44.1 kHz mono) and summed into ``mix.flac``;
* S03 choir (alto part): MIDI saved but ``audio_rendered: false`` (not in the mix);
* S04 sound effect: ``midi_saved: false``, ``audio_rendered: false``, no files.

Stem MIDI files keep the engraver's program 0 (drums: the drum channel); the
instruments are in metadata.yaml (``program_num``; drums 128), which the adapter
must follow. Broken or excluded copies of Track00001:

* train/Track00002: MIDI/S01.mid deleted though metadata says it was saved (scan error);
* train/Track00003: mix.flac is random bytes (fails in ``rows``);
* test/Track01877: no metadata.yaml (scan error);
* omitted/Track00049: a complete track under ``omitted/`` (excluded, no error).
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

from tests.replicas import Replica
from tests.replicas.musicnet import segments, snapped_end

RATE = 44100
SEGMENT_SECONDS = 4.0  # the import the facts are for (as the MAESTRO replica)
TRACKS = (("train", "Track00001", "bach/bwv66.6"), ("validation", "Track01501", "bach/bwv26.6"),
          ("test", "Track01876", "bach/bwv253"))
# stem id -> (part index or "drums" or None, program_num, is_drum, inst_class, midi_program_name, plugin,
#             audio_rendered, midi_saved)
STEMS = {
    "S00": (0, 0, False, "Piano", "Acoustic Grand Piano", "grand_piano.nkm", True, True),
    "S01": (3, 33, False, "Bass", "Electric Bass (finger)", "scarbee_jay_bass.nkm", True, True),
    "S02": ("drums", 128, True, "Drums", "Drums", "session_kit_full.nkm", True, True),
    "S03": (1, 52, False, "Strings (continued)", "Choir Aahs", "choir_o.nkm", False, True),
    "S04": (None, 103, False, "Sound Effects", "FX 8 (sci-fi)", "None", False, False),
}


def drum_pattern(seconds: float) -> list:
    """Kick on every beat (120 bpm), closed hi-hat on every eighth."""
    import pretty_midi

    notes = []
    for i in range(int(seconds / 0.25)):
        t = i * 0.25
        notes.append(pretty_midi.Note(velocity=70, pitch=42, start=t, end=t + 0.1))
        if i % 2 == 0:
            notes.append(pretty_midi.Note(velocity=110, pitch=36, start=t, end=t + 0.1))
    return notes


def write_track(folder: Path, name: str) -> float:
    """Render one track into ``folder``; returns the seconds its rows cover."""
    import numpy as np
    import pretty_midi
    import soundfile as sf
    import yaml
    from music21 import corpus

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.slicing import slice_measures
    from unimusic.render.synthesize import default_soundfonts, synthesize
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_from_music21
    from unimusic.tokens.midi import DRUM_DURATION_STEPS, load_midi

    xml = slice_measures(musicxml_from_music21(corpus.parse(name), name), 0, 4, source=name)
    piece = engrave_piece(xml, options=EngraveOptions(), source=name)
    parts = load_midi(piece.midi, name=name).instruments
    (folder / "MIDI").mkdir(parents=True)
    (folder / "stems").mkdir()
    rendered, ends, everything = [], [], pretty_midi.PrettyMIDI(resolution=1000, initial_tempo=120.0)
    for sid, (part, program, drum, _cls, _prog_name, _plugin, audio_rendered, _saved) in STEMS.items():
        if part is None:
            continue
        notes = drum_pattern(piece.duration) if part == "drums" else parts[part].notes
        as_written = pretty_midi.PrettyMIDI(resolution=1000, initial_tempo=120.0)
        as_written.instruments.append(pretty_midi.Instrument(program=0, is_drum=drum, name=sid))
        as_written.instruments[0].notes.extend(notes)
        as_written.write(str(folder / "MIDI" / f"{sid}.mid"))
        played = pretty_midi.Instrument(program=0 if drum else program, is_drum=drum, name=sid)
        played.notes.extend(notes)
        everything.instruments.append(played)
        if audio_rendered:
            single = pretty_midi.PrettyMIDI(resolution=1000, initial_tempo=120.0)
            single.instruments.append(played)
            audio = synthesize(single, soundfont=default_soundfonts()[0], sample_rate=RATE, name=f"{name} {sid}")
            sf.write(folder / "stems" / f"{sid}.flac", audio * 0.5, RATE, subtype="PCM_16")
            rendered.append(audio * 0.5)
            ends += [(math.floor(n.start * 100 + 0.5) + DRUM_DURATION_STEPS) / 100 if drum
                     else snapped_end(n.start, n.end) for n in notes]
    everything.write(str(folder / "all_src.mid"))
    mix = np.zeros(max(a.size for a in rendered), dtype=np.float32)
    for a in rendered:
        mix[: a.size] += a
    gain = 0.9 / float(np.abs(mix).max())
    sf.write(folder / "mix.flac", mix * gain, RATE, subtype="PCM_16")
    uuid = hashlib.md5(name.encode()).hexdigest()
    meta = {"UUID": uuid, "audio_dir": "stems", "lmd_midi_dir": f"lmd_matched/X/{uuid}.mid", "midi_dir": "MIDI",
            "normalization_factor": -13.0, "normalized": True, "overall_gain": gain, "target_peak": -1.0,
            "stems": {sid: {"audio_rendered": r, "inst_class": c, "integrated_loudness": -14.0, "is_drum": d,
                            "midi_program_name": pn, "midi_saved": s, "plugin_name": pl, "program_num": p}
                      for sid, (_part, p, d, c, pn, pl, r, s) in STEMS.items()}}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return max([mix.size / RATE] + ends)


def make(root: Path, *, segment_seconds: float = SEGMENT_SECONDS) -> Replica:
    """Write the replica under ``root``; facts for an import with ``segment_seconds`` rows."""
    import numpy as np

    base = Path(root) / "slakh2100_flac_redux"
    rows_per_split = {"train": 0, "val": 0, "test": 0}
    for split, track, name in TRACKS:
        total = write_track(base / split / track, name)
        rows_per_split[{"validation": "val"}.get(split, split)] += segments(total, segment_seconds)
    first = base / "train" / "Track00001"
    for target in ("train/Track00002", "train/Track00003", "test/Track01877", "omitted/Track00049"):
        shutil.copytree(first, base / target)
    (base / "train/Track00002/MIDI/S01.mid").unlink()
    noise = np.random.default_rng(3).integers(0, 256, 4096, np.uint8).tobytes()
    (base / "train/Track00003/mix.flac").write_bytes(noise)
    (base / "test/Track01877/metadata.yaml").unlink()
    return Replica(src=str(root), examples=len(TRACKS) + 1, good=len(TRACKS), errors=2 + 1,
                   rows_per_split=rows_per_split, modalities=("midi", "audio"),
                   config={"segment_seconds": segment_seconds})
