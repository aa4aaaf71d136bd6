"""Throughput of the symbolic codecs, against baselines measured in the same run.

    .venv/bin/python benchmarks/codecs.py [--pieces 40]

* LMX: linearize + delinearize of each score vs music21 parsing the same MusicXML
  (the step every score already pays); ratio > 1 means the codec is cheaper.
* MIDI: encode + decode (all windows) vs pretty_midi reading the same file.
Machines here are noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import io
import time


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    import music21
    import pretty_midi

    from unimusic.music21_corpus import load_musicxml, sample_pieces
    from unimusic.render.lmx import delinearize, linearize
    from unimusic.tokens.midi import MidiEventCodec, notes_from_midi

    pieces = sample_pieces(args.pieces, seed=args.seed)
    xmls = [load_musicxml(p) for p in pieces]
    midis = [music21.midi.translate.streamToMidiFile(music21.converter.parse(x, format="musicxml")).writestr() for x in xmls]
    tokens = [linearize(x) for x in xmls]
    n_tokens = sum(map(len, tokens))

    def lmx_codec():
        for x in xmls:
            delinearize(linearize(x))

    def music21_parse():
        for x in xmls:
            music21.converter.parse(x, format="musicxml", forceSource=True)

    codec = MidiEventCodec()
    notes = [notes_from_midi(m) for m in midis]
    n_notes = sum(map(len, notes))

    def midi_codec():
        for ns in notes:
            codec.decode(codec.encode(ns))

    def pretty_midi_load():
        for m in midis:
            pretty_midi.PrettyMIDI(io.BytesIO(m))

    t_lmx, t_m21 = best_of(lmx_codec), best_of(music21_parse, repeat=1)
    t_midi, t_pm = best_of(midi_codec), best_of(pretty_midi_load)
    print(f"{len(pieces)} pieces, {n_tokens} LMX tokens, {n_notes} MIDI notes")
    print(f"LMX linearize+delinearize: {t_lmx:.3f} s ({n_tokens / t_lmx:,.0f} tokens/s)")
    print(f"music21 MusicXML parse:    {t_m21:.3f} s   -> codec is {t_m21 / t_lmx:.1f}x faster than the parse")
    print(f"MIDI encode+decode:        {t_midi:.3f} s ({n_notes / t_midi:,.0f} notes/s)")
    print(f"pretty_midi file read:     {t_pm:.3f} s   -> ratio codec/read time {t_midi / t_pm:.2f}")


if __name__ == "__main__":
    main()
