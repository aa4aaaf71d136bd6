"""MIDI -> audio synthesis (FluidSynth), augmentation, FLAC and segment cutting.

The music comes from music21's corpus (MIDI written by music21 itself). The
check that the audio really holds the notes is independent of the renderer:
basic-pitch (its shipped ONNX model, offline) transcribes the audio and the
onsets are compared with the source MIDI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import time

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.metrics import note_f1
from unimusic.render import synthesize as synth
from unimusic.render.synthesize import (
    Augmentation,
    SynthConfig,
    apply_augmentation,
    cut_segment,
    decode_audio,
    default_soundfonts,
    draw_augmentation,
    encode_flac,
    load_midi,
    render_augmented,
    synthesize,
)
from unimusic.tokens.midi import Note, notes_from_midi, notes_to_midi

SR = 44100
SOUNDFONTS = default_soundfonts()
FLUIDR3 = synth.FLUIDR3_GM if synth.FLUIDR3_GM in SOUNDFONTS else SOUNDFONTS[0]
TIMGM = next((s for s in SOUNDFONTS if s.endswith("TimGM6mb.sf2")), SOUNDFONTS[-1])


@functools.lru_cache(maxsize=None)
def corpus_midi(relpath: str) -> bytes:
    """MIDI bytes of a music21 corpus piece, written by music21."""
    import music21

    from unimusic.music21_corpus import CorpusPiece

    score = music21.converter.parse(CorpusPiece(relpath).path)
    return music21.midi.translate.streamToMidiFile(score).writestr()


def first_seconds(midi: bytes, seconds: float):
    """The notes starting in the first ``seconds`` (cut there) as a PrettyMIDI."""
    notes = [
        dataclasses.replace(n, end=min(n.end, seconds)) for n in notes_from_midi(midi) if n.start < seconds - 0.05
    ]
    return notes_to_midi(notes)


def _envelope(audio: np.ndarray, frame: int = 441) -> np.ndarray:
    n = audio.size // frame
    return np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))


# -- basic-pitch (the judge) -----------------------------------------------------


@functools.lru_cache(maxsize=1)
def _basic_pitch_model():
    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import Model

    return Model(ICASSP_2022_MODEL_PATH)


def transcribe(audio: np.ndarray, sample_rate: int, tmp_path) -> list[Note]:
    """basic-pitch notes (all program 0) of float audio."""
    import soundfile as sf
    from basic_pitch.inference import predict

    path = os.path.join(tmp_path, f"bp-{time.monotonic_ns()}.wav")
    sf.write(path, audio, sample_rate)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Predicting MIDI for ..."
        _, _, events = predict(path, _basic_pitch_model())
    os.unlink(path)
    return [Note(start=float(s), end=float(max(e, s)), pitch=int(p), program=0) for s, e, p, _amp, _bends in events]


def pitched_program0(pm_or_bytes) -> list[Note]:
    """Reference notes for onset F1 with programs ignored (drums left out)."""
    return [dataclasses.replace(n, program=0) for n in notes_from_midi(pm_or_bytes) if not n.is_drum]


def shifted(notes: list[Note], dt: float) -> list[Note]:
    return [dataclasses.replace(n, start=n.start + dt, end=n.end + dt) for n in notes]


def test_basic_pitch_uses_its_shipped_onnx_model():
    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import Model

    assert str(ICASSP_2022_MODEL_PATH).endswith("nmp.onnx") and os.path.isfile(ICASSP_2022_MODEL_PATH)
    assert _basic_pitch_model().model_type == Model.MODEL_TYPES.ONNX


# the audio really contains the notes: 2 real pieces, both soundfonts, augmented
TRANSCRIPTION_CASES = [
    ("bach/bwv66.6.mxl", None, FLUIDR3),  # chorale, whole piece (~22 s), music21's own MIDI file
    ("ryansMammoth/SheriffMuldoonsJig.abc", 14.0, TIMGM),  # ABC folk tune, first 14 s
]


@pytest.mark.parametrize("relpath, seconds, soundfont", TRANSCRIPTION_CASES)
def test_synthesized_audio_contains_the_notes(relpath, seconds, soundfont, tmp_path):
    midi = corpus_midi(relpath)
    source = midi if seconds is None else first_seconds(midi, seconds)
    aug = dataclasses.replace(draw_augmentation(relpath, seed=7), soundfont=soundfont)
    assert aug.tempo_scale != 1.0 and aug.reverb > 0  # augmented, not the identity
    audio, played = render_augmented(source, aug)
    ref = pitched_program0(played)
    est = transcribe(audio, SR, tmp_path)
    score = note_f1(ref, est, onset_tolerance=0.05)
    assert score["f1"] >= 0.5, score
    # controls: the same transcription does not fit wrong references
    assert note_f1(shifted(ref, 0.3), est, onset_tolerance=0.05)["f1"] < 0.35
    transposed = [dataclasses.replace(n, pitch=n.pitch + 1) for n in ref]
    assert note_f1(transposed, est, onset_tolerance=0.05)["f1"] < 0.35
    # and the un-augmented timing fits worse than the played (augmented) timing
    unaugmented = note_f1(pitched_program0(source), est, onset_tolerance=0.05)["f1"]
    assert unaugmented < score["f1"] - 0.2


# -- synthesis -------------------------------------------------------------------


@pytest.mark.parametrize("soundfont", SOUNDFONTS, ids=lambda s: os.path.basename(s))
def test_duration_follows_the_midi(soundfont):
    midi = corpus_midi("bach/bwv66.6.mxl")
    end = load_midi(midi).get_end_time()
    audio = synthesize(midi, soundfont=soundfont)
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = audio.size / SR
    assert end <= seconds <= end + 2.5, (end, seconds)
    assert np.isclose(np.max(np.abs(audio)), synth.PEAK, atol=1e-6)
    assert np.max(np.abs(audio)) <= synth.PEAK
    env = _envelope(audio)
    # sound all through the piece (no dropouts of more than 0.5 s), quiet at the very end
    loud = env > 1e-3
    assert loud[: int(end * 100) - 20].reshape(-1)[::50].all()
    assert env[-3:].max() < 1e-3


def test_note_timing_is_sample_accurate_and_release_is_kept():
    pm = notes_to_midi([Note(start=1.0, end=1.5, pitch=60, velocity=100)])
    audio = synthesize(pm, soundfont=FLUIDR3)
    first = int(np.flatnonzero(np.abs(audio) > 1e-3)[0])
    assert abs(first - SR) <= 0.004 * SR, first / SR  # onset within 4 ms (FluidSynth's 64-sample blocks)
    assert np.max(np.abs(audio[: int(0.99 * SR)])) == 0.0
    # the release after the note-off is rendered, and the file ends once it has died away
    assert audio.size > int(1.6 * SR)
    assert np.sqrt(np.mean(audio[int(1.5 * SR) : int(1.55 * SR)] ** 2)) > 1e-3
    assert np.max(np.abs(audio[-64:])) < 1e-3


def test_sustain_pedal_rings_on_and_still_ends():
    import pretty_midi

    plain = notes_to_midi([Note(start=0.0, end=0.3, pitch=72, velocity=100)])
    pedal = notes_to_midi([Note(start=0.0, end=0.3, pitch=72, velocity=100)])
    pedal.instruments[0].control_changes.append(pretty_midi.ControlChange(64, 127, 0.0))  # never lifted
    a_plain = synthesize(plain, soundfont=FLUIDR3)
    a_pedal = synthesize(pedal, soundfont=FLUIDR3)
    assert a_pedal.size > a_plain.size + int(0.3 * SR)  # the pedal held the note beyond its note-off
    assert a_pedal.size <= int((0.3 + synth.MAX_TAIL_SECONDS + 0.2) * SR)


@pytest.mark.parametrize("soundfont", SOUNDFONTS, ids=lambda s: os.path.basename(s))
def test_drums_render(soundfont):
    import pretty_midi

    onsets = [0.5, 1.0, 1.5, 2.0]
    drum_notes = [Note(start=t, end=t + 0.1, pitch=p, velocity=110, is_drum=True) for t, p in zip(onsets, (36, 38, 42, 49))]
    drums = notes_to_midi(drum_notes)
    assert drums.instruments[0].is_drum
    audio = synthesize(drums, soundfont=soundfont)
    env = _envelope(audio, 441)  # 10 ms frames
    for t in onsets:
        i = int(round(t * 100))
        before, after = env[i - 8 : i - 1].max(), env[i : i + 5].max()
        assert after > 0.05 and after > 5 * before, (t, before, after)
    # a pitched instrument playing the same keys sounds different: the drum kit was used
    pitched = notes_to_midi([dataclasses.replace(n, is_drum=False) for n in drum_notes])
    other = synthesize(pitched, soundfont=soundfont)
    n = min(audio.size, other.size)
    assert np.corrcoef(audio[:n], other[:n])[0, 1] < 0.5
    # drums mixed with a melody: both present
    mixed = notes_to_midi(drum_notes + [Note(start=0.0, end=2.5, pitch=67, velocity=80, program=73)])
    assert {(i.is_drum, i.program) for i in mixed.instruments} == {(True, 0), (False, 73)}
    assert isinstance(mixed, pretty_midi.PrettyMIDI)
    both = synthesize(mixed, soundfont=soundfont)
    assert np.sqrt(np.mean(both[int(0.2 * SR) : int(0.45 * SR)] ** 2)) > 1e-3  # the flute before the first drum


def test_rendering_is_deterministic_and_cache_independent():
    midi = corpus_midi("bach/bwv66.6.mxl")
    pm = first_seconds(midi, 6.0)
    a = synthesize(pm, soundfont=FLUIDR3, reverb=0.2)
    b = synthesize(pm, soundfont=FLUIDR3, reverb=0.2)
    synth.clear_soundfont_cache()  # reloading the soundfont must give the same audio
    synth._ir_cache.clear()  # and so must rebuilding the reverb's impulse response
    c = synthesize(pm, soundfont=FLUIDR3, reverb=0.2)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    dry = synthesize(pm, soundfont=FLUIDR3)
    assert not np.array_equal(dry, a)
    assert a.size > dry.size  # the reverb tail
    assert np.corrcoef(dry, a[: dry.size])[0, 1] > 0.5  # still the same music
    other = synthesize(pm, soundfont=TIMGM)
    if TIMGM != FLUIDR3:
        n = min(other.size, dry.size)
        assert not np.allclose(other[:n], dry[:n], atol=1e-3)


def test_parts_are_independent_channels():
    """Two parts with different programs sound like the sum of each part alone."""
    mel = [Note(start=0.0, end=1.0, pitch=64, velocity=90, program=0)]
    bass = [Note(start=0.0, end=1.0, pitch=40, velocity=90, program=32)]

    def raw(notes):
        # un-normalized render: undo the peak normalization by rendering through the private path
        return synth._render_fluidsynth(notes_to_midi(notes), FLUIDR3, SR, "test")

    both, a, b = raw(mel + bass), raw(mel), raw(bass)
    n = max(both.size, a.size, b.size)
    pad = lambda x: np.pad(x, (0, n - x.size))  # noqa: E731
    assert np.allclose(pad(both), pad(a) + pad(b), atol=2e-4)


def test_empty_midi_gives_silence():
    pm = notes_to_midi([])
    audio = synthesize(pm, soundfont=TIMGM)
    assert audio.dtype == np.float32 and not np.any(audio)


def test_bad_soundfont_and_bad_midi_are_input_errors(tmp_path):
    midi = corpus_midi("bach/bwv66.6.mxl")
    missing = str(tmp_path / "nope.sf2")
    fake = tmp_path / "fake.sf2"
    fake.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(100))
    for sf, problem in ((missing, "no such soundfont"), (str(fake), "not a SoundFont"), (str(tmp_path), "not a file")):
        with pytest.raises(InputError) as err:
            synthesize(midi, soundfont=sf)
        assert err.value.source == sf and problem in err.value.problem
    with pytest.raises(InputError) as err:
        SynthConfig(soundfonts=(missing,)).resolved_soundfonts()
    assert err.value.source == missing
    # a file that looks like a soundfont but FluidSynth refuses
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00sfbkLIST" + bytes(8))
    with pytest.raises(InputError) as err:
        synthesize(midi, soundfont=str(broken))
    assert err.value.source == str(broken)

    bad_inputs = [
        (b"", "<MIDI bytes>", "empty"),
        (b"not a midi file at all", "<MIDI bytes>", "no MThd"),
        (midi[:40], "<MIDI bytes>", "MIDI file"),
        (str(tmp_path / "missing.mid"), str(tmp_path / "missing.mid"), "no such file"),
        (12345, "12345", "expected MIDI bytes"),
    ]
    for bad, source, problem in bad_inputs:
        with pytest.raises(InputError) as err:
            synthesize(bad, soundfont=TIMGM)
        assert err.value.source == source and problem in err.value.problem, err.value
    with pytest.raises(InputError) as err:
        synthesize(b"garbage", soundfont=TIMGM, name="piece.mid")
    assert err.value.source == "piece.mid"
    with pytest.raises(InputError):
        synthesize(midi, soundfont=TIMGM, reverb=1.5)


# -- augmentation ----------------------------------------------------------------


def test_augmentation_is_deterministic_per_piece_and_varies():
    ids = [f"bach/bwv{i}" for i in range(40)]
    first = [draw_augmentation(i) for i in ids]
    assert first == [draw_augmentation(i) for i in ids]  # same id, same draw (no global RNG state)
    assert first != [draw_augmentation(i, seed=1) for i in ids]  # the seed matters
    cfg = SynthConfig()
    assert len({a.tempo_scale for a in first}) == len(ids)
    assert len({a.velocity_scale for a in first}) == len(ids)
    assert {a.soundfont for a in first} == set(SOUNDFONTS)  # every soundfont is used
    for a in first:
        assert cfg.tempo_range[0] <= a.tempo_scale <= cfg.tempo_range[1]
        assert cfg.velocity_range[0] <= a.velocity_scale <= cfg.velocity_range[1]
        assert cfg.reverb_range[0] <= a.reverb <= cfg.reverb_range[1]
    tempos = np.array([a.tempo_scale for a in first])
    assert tempos.min() < 0.95 and tempos.max() > 1.05  # spread over the range
    # identity when augmentation is off
    off = draw_augmentation("bach/bwv1", config=SynthConfig(augment=False))
    assert off == Augmentation(soundfont=SOUNDFONTS[0], tempo_scale=1.0, velocity_scale=1.0, reverb=0.0)


def test_augmentation_config_soundfonts_and_validation(tmp_path):
    mine = tmp_path / "mine.sf2"
    mine.write_bytes(open(TIMGM, "rb").read())
    cfg = SynthConfig(soundfonts=(str(mine),), tempo_range=(1.0, 1.0))
    aug = draw_augmentation("x", config=cfg)
    assert aug.soundfont == str(mine) and aug.tempo_scale == 1.0
    assert synthesize(notes_to_midi([Note(0.0, 0.5, 60)]), soundfont=aug.soundfont).size > 0
    for bad in (
        dict(tempo_range=(1.1, 0.9)),
        dict(tempo_range=(0.0, 1.0)),
        dict(velocity_range=(1.0,)),
        dict(reverb_range=(0.0, 2.0)),
        dict(sample_rate=100),
        dict(soundfonts="one.sf2"),
    ):
        with pytest.raises(InputError):
            SynthConfig(**bad)


def test_tempo_scaling_scales_every_time_exactly():
    import pretty_midi

    midi = corpus_midi("bach/bwv66.6.mxl")
    original = load_midi(midi)
    original.instruments[0].control_changes += [pretty_midi.ControlChange(64, 127, 3.25), pretty_midi.ControlChange(64, 0, 3.75)]
    original.instruments[0].pitch_bends.append(pretty_midi.PitchBend(512, 4.5))
    before = [(n.start, n.end, n.pitch, n.velocity) for i in original.instruments for n in i.notes]
    scale = 1.25
    aug = Augmentation(soundfont=TIMGM, tempo_scale=scale, velocity_scale=1.0, reverb=0.0)
    out = apply_augmentation(original, aug)
    after = [(n.start, n.end, n.pitch, n.velocity) for i in out.instruments for n in i.notes]
    assert after == [(s / scale, e / scale, p, v) for s, e, p, v in before]  # exact
    assert [(n.start, n.end, n.pitch, n.velocity) for i in original.instruments for n in i.notes] == before  # input untouched
    assert [c.time for c in out.instruments[0].control_changes[-2:]] == [3.25 / scale, 3.75 / scale]
    assert out.instruments[0].pitch_bends[-1].time == 4.5 / scale
    assert out.get_end_time() == pytest.approx(original.get_end_time() / scale)
    # the tempo map was scaled too: written to a file, the new times survive
    buf = io.BytesIO()
    out.write(buf)
    reread = notes_from_midi(buf.getvalue())
    expected = sorted((s / scale, p) for s, _e, p, _v in before)
    assert len(reread) == len(expected)
    assert np.allclose(sorted(n.start for n in reread), [s for s, _ in expected], atol=2e-3)
    # and the audio follows: faster tempo, shorter audio
    slow = synthesize(apply_augmentation(midi, dataclasses.replace(aug, tempo_scale=0.9)), soundfont=TIMGM)
    fast = synthesize(out, soundfont=TIMGM)
    end = original.get_end_time()
    assert end / scale <= fast.size / SR <= end / scale + 2.5
    assert end / 0.9 <= slow.size / SR <= end / 0.9 + 2.5


def test_velocity_scaling_clips_to_midi_range():
    pm = notes_to_midi([Note(0.0, 0.5, 60 + i, velocity=v) for i, v in enumerate((1, 40, 100, 127))])
    up = apply_augmentation(pm, Augmentation(TIMGM, 1.0, 1.3, 0.0))
    assert [n.velocity for n in up.instruments[0].notes] == [1, 52, 127, 127]
    down = apply_augmentation(pm, Augmentation(TIMGM, 1.0, 0.3, 0.0))
    assert [n.velocity for n in down.instruments[0].notes] == [1, 12, 30, 38]
    assert [n.velocity for n in pm.instruments[0].notes] == [1, 40, 100, 127]  # input untouched
    with pytest.raises(InputError):
        apply_augmentation(pm, Augmentation(TIMGM, 0.0, 1.0, 0.0))


# -- FLAC and segments -------------------------------------------------------------


def test_flac_round_trip_is_lossless_at_16_bits():
    audio = synthesize(first_seconds(corpus_midi("bach/bwv66.6.mxl"), 5.0), soundfont=TIMGM, reverb=0.1)
    data = encode_flac(audio, SR)
    assert data[:4] == b"fLaC"
    decoded, sr = decode_audio(data)
    assert sr == SR and decoded.dtype == np.float32 and decoded.size == audio.size
    assert np.array_equal(decoded, synth.quantize_int16(audio) / 32768.0)  # exactly the int16 quantization
    assert np.max(np.abs(decoded - audio)) <= 0.5 / 32768 + 1e-7
    again, _ = decode_audio(encode_flac(decoded, SR))
    assert np.array_equal(again, decoded)  # a second round trip changes nothing
    assert len(data) < audio.size * 2  # compressed below raw 16-bit PCM
    # extremes clip instead of wrapping around
    edge, _ = decode_audio(encode_flac(np.array([1.0, -1.0, 1.5, -1.5, 0.0], np.float32), 8000))
    assert edge[0] > 0.999 and edge[1] == -1.0 and edge[2] > 0.999 and edge[3] == -1.0
    # stereo input is averaged to mono on decode; bad bytes are InputErrors
    stereo, _ = decode_audio(encode_flac(np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1), 8000))
    assert np.allclose(stereo, 0.125)
    with pytest.raises(InputError) as err:
        decode_audio(b"definitely not audio", name="clip.flac")
    assert err.value.source == "clip.flac"
    with pytest.raises(InputError):
        decode_audio(data[: len(data) // 3][:100])
    with pytest.raises(InputError):
        encode_flac(np.zeros(0, np.float32), SR)
    with pytest.raises(InputError):
        encode_flac(np.array([0.0, np.nan]), SR)


def test_cut_segment_lengths_and_content():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(10 * SR).astype(np.float32)
    for _ in range(500):
        start = float(rng.uniform(0, 12))
        end = start + float(rng.uniform(0, 6))
        seg = cut_segment(audio, SR, start=start, end=end)
        assert seg.size == round(end * SR) - round(start * SR)
        assert abs(seg.size / SR - (end - start)) <= 1 / SR + 1e-9 <= 0.01
        i0 = round(start * SR)
        have = audio[i0 : i0 + seg.size]
        assert np.array_equal(seg[: have.size], have)
        assert not np.any(seg[have.size :])  # zero padding past the end
    # consecutive segments tile the audio exactly
    bounds = np.cumsum(np.r_[0, rng.uniform(0.3, 2.0, 12)])
    bounds = bounds[bounds < 10.0].tolist() + [10.0]
    tiles = [cut_segment(audio, SR, start=a, end=b) for a, b in zip(bounds[:-1], bounds[1:])]
    assert np.array_equal(np.concatenate(tiles), audio)
    for bad in (dict(start=-0.1, end=1.0), dict(start=2.0, end=1.0), dict(start=float("nan"), end=1.0)):
        with pytest.raises(InputError):
            cut_segment(audio, SR, **bad)


# -- slow tier ---------------------------------------------------------------------


def _lag_corrected_f1(ref: list[Note], est: list[Note], tolerance: float = 0.05) -> tuple[float, float]:
    """Onset F1 after removing one global onset lag (slow-attack timbres speak late)."""
    deltas = []
    for r in ref:
        near = [e.start - r.start for e in est if e.pitch == r.pitch and abs(e.start - r.start) < 0.25]
        if near:
            deltas.append(min(near, key=abs))
    lag = float(np.median(deltas)) if deltas else 0.0
    return note_f1(shifted(ref, lag), est, onset_tolerance=tolerance)["f1"], lag


@pytest.mark.slow
def test_corpus_sample_transcribes_back(tmp_path):
    """A seeded corpus sample (chorales, kern, ABC, quartets, piano), augmented as the corpus build does."""
    from unimusic.music21_corpus import sample_pieces

    results, synth_time, bp_time, audio_seconds = [], 0.0, 0.0, 0.0
    for piece in sample_pieces(16, seed=11):
        try:
            midi = corpus_midi(piece.relpath)
        except Exception:  # noqa: BLE001 - music21 cannot write MIDI for some scores
            continue
        pm = first_seconds(midi, 20.0)
        if not any(i.notes for i in pm.instruments):
            continue
        aug = draw_augmentation(piece.piece_id, seed=3)
        t0 = time.perf_counter()
        audio, played = render_augmented(pm, aug)
        t1 = time.perf_counter()
        est = transcribe(audio, SR, tmp_path)
        t2 = time.perf_counter()
        synth_time, bp_time, audio_seconds = synth_time + t1 - t0, bp_time + t2 - t1, audio_seconds + audio.size / SR
        ref = pitched_program0(played)
        f1, lag = _lag_corrected_f1(ref, est)
        control, _ = _lag_corrected_f1(shifted(ref, 0.5), est)
        results.append((piece.relpath, os.path.basename(aug.soundfont), round(f1, 3), round(lag, 3), round(control, 3)))
    print("\n".join(map(str, results)))
    print(f"synthesis {synth_time / audio_seconds:.4f} s per audio s; basic-pitch {bp_time / audio_seconds:.4f} s per audio s")
    assert len(results) >= 10
    scores = [r[2] for r in results]
    assert np.median(scores) >= 0.6
    assert min(scores) >= 0.3, results
    assert all(r[4] < r[2] for r in results), results  # a 0.5 s shifted reference always fits worse
