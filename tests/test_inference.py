"""Whole-input translation (unimusic.inference), the `translate`/`eval` CLI, and the eval metrics.

Inputs are generated from a real chorale of the music21 corpus (bach/bwv66.6): its
first measures engraved (Verovio), played (Verovio's MIDI) and synthesized
(FluidSynth). Model directions run the shipped checkpoint; outputs are checked for
validity with the libraries users open them with (music21, pretty_midi, soundfile, OpenCV).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from unimusic.errors import InputError
from unimusic.tokens.midi import Note


@pytest.fixture(scope="module")
def piece():
    """First 3 measures of bwv66.6: MusicXML, LMX, one system crop, notes, audio."""
    import music21

    from unimusic.render.engrave import EngraveOptions
    from unimusic.render.lmx import linearize
    from unimusic.render.slicing import slice_measures
    from unimusic.render.synthesize import default_soundfonts, synthesize
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_bytes
    from unimusic.tokens.midi import notes_from_midi

    xml = slice_measures(musicxml_bytes(str(music21.corpus.getWork("bach/bwv66.6"))), 0, 3)
    engraved = engrave_piece(xml, options=EngraveOptions())
    notes = notes_from_midi(engraved.midi, name="bwv66.6")
    audio = synthesize(engraved.midi, soundfont=default_soundfonts()[0], sample_rate=44100)
    return {"xml": xml, "lmx": linearize(xml), "crop": np.array(engraved.systems[0].image), "notes": notes,
            "audio": audio, "page": np.array(engraved.pages[0])}


@pytest.fixture(scope="module")
def translator():
    from unimusic.inference import Translator

    return Translator.load()


# -- plans ---------------------------------------------------------------------------------


def test_plans_pick_converters_model_and_cascades():
    from unimusic.inference import plan_hops
    from unimusic.tokens.vocabulary import TASKS

    assert plan_hops("score", "midi", model_tasks=TASKS) == [("convert", "score", "midi")]
    assert plan_hops("score", "musicxml", model_tasks=TASKS) == []
    assert plan_hops("image", "musicxml", model_tasks=TASKS) == [("model", "image", "lmx"), ("convert", "lmx", "score")]
    assert plan_hops("midi", "audio", model_tasks=TASKS) == [("convert", "midi", "audio")]
    assert plan_hops("midi", "audio", engine="model", model_tasks=TASKS) == [("model", "midi", "audio")]
    assert plan_hops("score", "audio", engine="model", model_tasks=TASKS) == [
        ("convert", "score", "midi"), ("model", "midi", "audio")]
    assert plan_hops("image", "audio", via=("lmx",), model_tasks=TASKS) == [
        ("model", "image", "lmx"), ("convert", "lmx", "audio")]
    with pytest.raises(InputError, match="no deterministic converter"):
        plan_hops("audio", "midi", engine="convert", model_tasks=TASKS)
    with pytest.raises(InputError, match="neither the model nor a converter"):
        plan_hops("audio", "midi", model_tasks=("image->lmx",))
    with pytest.raises(InputError, match="unknown target"):
        plan_hops("audio", "pdf", model_tasks=TASKS)


# -- stitching on deterministic paths ----------------------------------------------------------


def test_midi_windows_stitched_equal_the_unsplit_piece(piece):
    """What audio->midi assembly does with the model's windows, done with the codec's own
    windows of a real piece: split at time_windows, decode with tie sections -> the same notes."""
    from unimusic.inference import time_windows
    from unimusic.tokens.vocabulary import Vocabulary

    codec = Vocabulary().midi
    notes = codec.normalize(piece["notes"])
    seconds = max(n.end for n in notes)
    windows = time_windows(seconds, max_seconds=2.3)
    assert len(windows) >= 3 and windows[0][0] == 0 and abs(windows[-1][1] - seconds) < 0.011
    encoded = [(t0, codec.encode_window([n for n in notes if n.start < t1 and n.end >= t0], start=t0, end=t1))
               for t0, t1 in windows]
    stitched, stats = codec.decode(encoded)
    whole, _ = codec.decode([(0.0, codec.encode_window(notes, start=0.0, end=seconds))], window_seconds=seconds + 1)
    assert stats.invalid_tokens == 0
    key = lambda ns: sorted((round(n.start, 2), round(n.end, 2), n.pitch, n.program) for n in ns)  # noqa: E731
    assert key(stitched) == key(notes) == key(whole)
    # a tie across a window edge really occurs in this piece
    assert any(n.start < t < n.end for n in notes for t, _ in windows[1:])


def test_overlapping_audio_windows_crossfade_back_to_the_signal(piece):
    from unimusic.inference import crossfade_join, time_windows

    audio, sr = piece["audio"], 44100
    windows = time_windows(len(audio) / sr, max_seconds=1.5, overlap=0.25)
    assert all(b > a for a, b in windows) and all(w[0] < v[1] for v, w in zip(windows, windows[1:]))
    parts = [(t0, audio[int(round(t0 * sr)) : int(round(t1 * sr))]) for t0, t1 in windows]
    joined = crossfade_join(parts, sample_rate=sr, fade=0.25)
    n = min(len(joined), len(audio))
    assert n >= len(audio) - sr // 100
    np.testing.assert_allclose(joined[:n], audio[:n], atol=1e-5)


def test_lmx_measure_groups_join_back_to_the_piece(piece):
    from unimusic.inference import group_measures, split_measures

    tokens = piece["lmx"]
    measures = split_measures(tokens)
    assert len(measures) == tokens.count("measure") == 3
    groups = group_measures([len(m) for m in measures], budget=max(len(m) for m in measures) + 5)
    assert len(groups) >= 2
    assert [t for a, b in groups for m in measures[a:b] for t in m] == tokens


def test_image_chunks_cover_every_column_and_cut_at_barlines(piece):
    from unimusic.inference import barline_columns, image_chunks

    crop = piece["crop"]
    bars = barline_columns(crop)
    assert len(bars) >= 2  # 3 measures: at least the two inner barlines
    w = crop.shape[1] // 16
    chunks = image_chunks(w, crop.shape[0] // 16, bars, budget=1 + (crop.shape[0] // 16) * (w // 2 + 2))
    assert chunks[0][0] == 0 and chunks[-1][1] == w and len(chunks) >= 2
    assert all(b > a for a, b in chunks) and all(nxt[0] <= cur[1] for cur, nxt in zip(chunks, chunks[1:]))
    inner = [c for _, c in chunks[:-1]]
    assert any(abs(c * 16 - x) <= 16 for c in inner for x in bars)


# -- every direction on the shipped checkpoint --------------------------------------------------


def _valid(value, tmp_path, name):
    """Write a result and read it back with the library a user would use."""
    from unimusic import io_files

    if isinstance(value, io_files.Lmx):
        from unimusic.inference import lmx_to_score

        value = io_files.Score(musicxml=lmx_to_score(value.tokens)[0])
    if isinstance(value, io_files.Score):
        import music21

        path = tmp_path / f"{name}.musicxml"
        io_files.write_output(value, path)
        return music21.converter.parse(str(path))
    if isinstance(value, io_files.Midi):
        import pretty_midi

        path = tmp_path / f"{name}.mid"
        io_files.write_output(value, path)
        return pretty_midi.PrettyMIDI(str(path))
    if isinstance(value, io_files.Audio):
        import soundfile

        path = tmp_path / f"{name}.wav"
        io_files.write_output(value, path)
        data, sr = soundfile.read(str(path))
        assert sr == value.sample_rate and len(data) > 0
        return data
    import cv2

    path = tmp_path / f"{name}.png"
    io_files.write_output(value, path)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.size
    return image


@pytest.mark.parametrize("source,to", [
    ("image", "musicxml"), ("image", "midi"), ("image", "audio"),
    ("audio", "midi"), ("audio", "lmx"), pytest.param("audio", "image", marks=pytest.mark.slow),  # ~20 s
    ("midi", "audio"), ("midi", "lmx"), ("lmx", "midi"), ("lmx", "image"),
])
def test_each_model_direction_gives_a_valid_file(translator, piece, tmp_path, source, to):
    from unimusic import io_files
    from unimusic.inference import Options, Systems

    audio = io_files.Audio(samples=piece["audio"][: 44100 * 3], sample_rate=44100)
    short = [n for n in piece["notes"] if n.start < 3.0]
    values = {"image": Systems(crops=(piece["crop"],)), "audio": audio,
              "midi": io_files.Midi(notes=tuple(dataclasses.replace(n, end=min(n.end, 3.0)) for n in short)),
              "lmx": io_files.Lmx(tokens=tuple(piece["lmx"]))}
    result = translator.translate(values[source], to, options=Options(engine="model"))
    assert result.hops[0] == f"model {source}->{'lmx' if to == 'musicxml' else to}"
    assert result.chunks >= 1 and result.error is None
    _valid(result.value, tmp_path, f"{source}-{to}")
    if to == "audio":
        assert result.value.seconds > 0.5


def test_page_image_is_cut_into_systems_and_joined(translator, piece):
    from unimusic import io_files

    result = translator.translate(io_files.Pages(images=(piece["page"],)), "musicxml")
    assert result.chunks >= 1
    assert result.value.musicxml.startswith(b"<?xml")


def test_long_audio_is_windowed_and_batched(translator, piece):
    """14 s of audio: several windows in one batch; the stitched notes stay inside the audio."""
    from unimusic import io_files
    from unimusic.inference import Options

    audio = np.concatenate([piece["audio"]] * 2)[: 44100 * 14]
    result = translator.translate(io_files.Audio(samples=audio, sample_rate=44100), "midi",
                                  options=Options(batch_size=4))
    assert result.chunks >= 3
    assert all(0 <= n.start < n.end <= 14.0 + 1e-6 for n in result.value.notes)


def test_converter_paths_are_exact(piece):
    """Deterministic directions need no checkpoint and keep the notes."""
    from unimusic import io_files
    from unimusic.inference import Translator

    t = Translator()
    midi = t.translate(io_files.Score(musicxml=piece["xml"]), "midi").value
    assert sorted((round(n.start, 2), n.pitch) for n in midi.notes) == \
        sorted((round(n.start, 2), n.pitch) for n in piece["notes"])
    lmx = t.translate(io_files.Score(musicxml=piece["xml"]), "lmx").value
    assert list(lmx.tokens) == piece["lmx"]
    with pytest.raises(InputError, match="converter"):
        t.translate(io_files.Midi(notes=tuple(piece["notes"])), "lmx")


@pytest.mark.slow
def test_batched_equals_one_by_one(translator, piece):
    """Greedy decoding of a batch gives each item what it gets alone."""
    from unimusic.inference import Systems

    crops = [Systems(crops=(piece["crop"],)), Systems(crops=(piece["crop"][:, : piece["crop"].shape[1] // 32 * 16],))]
    together = translator.translate_many(crops, "lmx")
    alone = [translator.translate(c, "lmx") for c in crops]
    assert [r.value.tokens for r in together] == [r.value.tokens for r in alone]


# -- bad input -------------------------------------------------------------------------------


def _cli(*args):
    from unimusic.cli import main

    return main(list(args))


def test_cli_translate_score_and_model_directions(piece, tmp_path, capsys):
    src = tmp_path / "bwv66.musicxml"
    src.write_bytes(piece["xml"])
    assert _cli("translate", str(src), "--to", "midi", "-q") == 0
    assert (tmp_path / "bwv66.mid").is_file()
    png = tmp_path / "page.png"
    import cv2

    cv2.imwrite(str(png), piece["page"])
    out = tmp_path / "omr.musicxml"
    assert _cli("translate", str(png), "-o", str(out), "--picture", "-q") == 0
    import music21

    music21.converter.parse(str(out))
    assert cv2.imread(str(out) + ".png") is not None
    printed = capsys.readouterr().out
    assert "model image->lmx" in printed and "picture:" in printed
    from unimusic import io_files

    pdf = tmp_path / "page.pdf"
    io_files.write_output(io_files.Pages(images=(piece["page"], piece["page"])), pdf)
    assert _cli("translate", str(pdf), "--to", "lmx", "-q") == 0
    tokens = (tmp_path / "page.lmx").read_text().split()
    assert "measure" in tokens
    assert "2 chunk(s)" in capsys.readouterr().out  # one system per page, both pages read


def test_cli_bad_inputs_exit_nonzero_with_one_line(tmp_path, capsys):
    import cv2

    cases = {}
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty.wav"] = "empty"
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    cases["notes.docx"] = "supported"
    (tmp_path / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    cases["broken.mid"] = "MIDI"
    blank = np.full((600, 800), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "blank.png"), blank)
    cases["blank.png"] = "no staff systems"
    for name, words in cases.items():
        code = _cli("translate", str(tmp_path / name), "--to", "lmx", "-q")
        err = capsys.readouterr().err
        assert code == 2, name
        assert name in err and words.lower() in err.lower(), (name, err)
        assert "Traceback" not in err
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + b"\x00" * 100)
    assert _cli("translate", str(big), "--to", "lmx", "-q") == 2
    assert "big.wav" in capsys.readouterr().err


def test_cli_silent_audio_warns_and_gives_an_empty_midi(tmp_path, capsys):
    import pretty_midi
    import soundfile

    soundfile.write(str(tmp_path / "silence.wav"), np.zeros(44100 * 2, dtype=np.float32), 44100)
    assert _cli("translate", str(tmp_path / "silence.wav"), "--to", "midi", "-q") == 0
    err = capsys.readouterr().err
    assert "silent audio" in err and "the result is empty" in err
    midi = pretty_midi.PrettyMIDI(str(tmp_path / "silence.mid"))
    assert sum(len(i.notes) for i in midi.instruments) == 0


def test_cli_several_inputs_one_bad_still_translates_the_rest(piece, tmp_path, capsys):
    good = tmp_path / "a.musicxml"
    good.write_bytes(piece["xml"])
    bad = tmp_path / "b.musicxml"
    bad.write_bytes(b"<score-partwise><part")
    out = tmp_path / "out"
    assert _cli("translate", str(good), str(bad), "--to", "midi", "-o", str(out), "-q") == 2
    assert (out / "a.mid").is_file() and not (out / "b.mid").exists()
    assert "b.musicxml" in capsys.readouterr().err


# -- eval metrics, checked by hand --------------------------------------------------------------


def test_pooled_note_scores_by_hand():
    from unimusic.evaluation import pooled_note_scores

    ref1 = [Note(start=0.0, end=0.5, pitch=60, velocity=80, program=0),
            Note(start=1.0, end=1.5, pitch=64, velocity=80, program=40)]
    est1 = [Note(start=0.03, end=0.9, pitch=60, velocity=80, program=52),  # onset ok (program ignored), offset off
            Note(start=1.2, end=1.5, pitch=64, velocity=80, program=0)]  # onset 200 ms late
    ref2 = [Note(start=0.0, end=1.0, pitch=67, velocity=80, program=0)]
    est2 = [Note(start=0.0, end=1.02, pitch=67, velocity=80, program=0),
            Note(start=2.0, end=2.5, pitch=70, velocity=80, program=0)]
    s = pooled_note_scores([(ref1, est1), (ref2, est2)])
    # onset matches: 60 and 67 -> 2 of 3 reference, 2 of 4 estimated: F1 = 2*2/(3+4)
    assert s["onset_f1"] == pytest.approx(4 / 7)
    # onset+offset (offset within max(50 ms, 20 % of the duration)): only 67 -> 2*1/7
    assert s["onset_offset_f1"] == pytest.approx(2 / 7)
    assert (s["n_ref"], s["n_est"]) == (3, 4)


def test_symbol_error_rate_is_pooled_by_hand():
    from unimusic.metrics import symbol_error_rate

    refs = [["measure", "clef:G2", "C4", "quarter"], ["measure", "D4", "half"]]
    ests = [["measure", "clef:G2", "E4", "quarter"], ["measure", "D4", "half", "dot"]]
    s = symbol_error_rate(refs, ests)
    assert (s["edits"], s["ref_tokens"]) == (2, 7)  # one substitution, one insertion
    assert s["ser"] == pytest.approx(2 / 7)


@pytest.fixture(scope="module")
def corpus_rows(tmp_path_factory):
    """A plain corpus (no Ray) of one chorale; its work id hashes to 0.40, so it is a test piece."""
    from unimusic.corpus import CorpusConfig, build_shard, plan_shards, write_manifest
    from unimusic.music21_corpus import corpus_root

    config = CorpusConfig(pieces_per_shard=1, val_fraction=0.0, test_fraction=0.5, piano_reductions=False)
    out = str(tmp_path_factory.mktemp("corpus"))
    results = [build_shard(spec, out, config) for spec in plan_shards([str(corpus_root() / "bach/bwv66.6.mxl")], config)]
    write_manifest(out, results, config, inputs="test")
    return out


def test_eval_table_on_corpus_rows(translator, corpus_rows, tmp_path):
    """Corpus rows through two directions, the FluidSynth reference and a peer; both files written."""
    import json

    from unimusic import evaluation

    items = evaluation.items_from_tokens(corpus_rows, split="test", limit=2)
    assert len(items) == 2 and all(it.lmx and it.notes and it.audio.seconds > 1 for it in items)
    chosen = [d for d in evaluation.DIRECTIONS if d.name in ("image->lmx", "audio->midi", "midi->audio (FluidSynth)")]
    report = evaluation.evaluate(translator, items, directions=chosen, peers=("basic-pitch", "basic-pitch:1"),
                                 log=lambda *_: None, pictures_dir=str(tmp_path / "pictures"), pictures=1)
    rows = {r["direction"]: r for r in report["rows"]}
    assert rows["audio->midi (basic-pitch) (first 1 items)"]["items"] == 1
    assert rows["audio->midi (ours, first 1 items)"]["items"] == 1
    assert 0 <= rows["image->lmx"]["ser"] and rows["image->lmx"]["items"] == 2
    assert 0 <= rows["audio->midi"]["onset_f1"] <= 1 and rows["audio->midi"]["seconds_per_audio_second"] > 0
    assert rows["midi->audio (FluidSynth)"]["onset_f1"] > 0.1  # the judge hears real synthesis
    assert rows["audio->midi (basic-pitch)"]["onset_f1"] > 0.1
    json_path, md_path = evaluation.write_report(report, str(tmp_path))
    assert json.load(open(json_path))["rows"] and "| image->lmx |" in open(md_path).read()
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 2  # the OMR picture and the piano roll


def test_eval_on_a_folder_of_paired_files(translator, piece, tmp_path):
    import cv2
    import soundfile

    from unimusic import evaluation

    (tmp_path / "bwv66.musicxml").write_bytes(piece["xml"])
    cv2.imwrite(str(tmp_path / "bwv66.png"), piece["page"])
    soundfile.write(str(tmp_path / "bwv66.wav"), piece["audio"], 44100)
    (tmp_path / "readme.txt").write_text("not music")
    items = evaluation.items_from_folder(str(tmp_path))
    assert [it.name for it in items] == ["bwv66"]
    assert items[0].lmx == tuple(piece["lmx"]) and len(items[0].notes) == len(piece["notes"])
    chosen = [d for d in evaluation.DIRECTIONS if d.name == "image->lmx"]
    report = evaluation.evaluate(translator, items, directions=chosen, peers=(), log=lambda *_: None)
    assert report["rows"][0]["items"] == 1 and "ser" in report["rows"][0]


def test_peer_specs():
    from unimusic.evaluation import parse_peers

    assert parse_peers(["basic-pitch", "transkun:8"]) == [("basic-pitch", None), ("transkun", 8)]
    for bad in ("crepe", "transkun:0", "transkun:x"):
        with pytest.raises(InputError):
            parse_peers([bad])
