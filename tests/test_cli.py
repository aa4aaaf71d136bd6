"""The CLI on real corpus files, and every bad-file case: one line, non-zero exit."""

import random
import subprocess
import sys
from pathlib import Path

import music21
import pytest

from unimusic.cli import main
from unimusic.metrics import note_f1
from unimusic.tokens.midi import MidiCodecConfig, MidiEventCodec, notes_from_midi
from unimusic.music21_corpus import corpus_root
from unimusic.render.lmx import linearize
from unimusic.tokens.lmx import tokens_from_text

CHORALE = corpus_root() / "bach/bwv66.6.mxl"
KERN = corpus_root() / "palestrina/Agnus_01.krn"
ABC = corpus_root() / "ryansMammoth/HasteToTheWeddingJig.abc"


@pytest.fixture(scope="module")
def midi_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("midi") / "bwv66.6.mid"
    music21.converter.parse(CHORALE).write("midi", fp=str(path))
    return path


def run_cli(*args):
    return main([str(a) for a in args])


def test_score_to_lmx_to_musicxml(tmp_path, capsys):
    lmx = tmp_path / "bwv66.6.lmx"
    assert run_cli("convert", CHORALE, lmx) == 0
    tokens = tokens_from_text(lmx.read_text())
    assert tokens.count("part:1") == tokens.count("measure") and "part:4" in tokens
    xml = tmp_path / "back.musicxml"
    assert run_cli("convert", lmx, xml) == 0
    original = music21.converter.parse(CHORALE)
    restored = music21.converter.parse(xml)
    for a, b in zip(original.parts, restored.parts):
        assert [n.pitch.nameWithOctave for n in a.recurse().notes] == [n.pitch.nameWithOctave for n in b.recurse().notes]
    assert linearize(xml.read_bytes()) == tokens


@pytest.mark.parametrize("source", [KERN, ABC], ids=["kern", "abc"])
def test_kern_and_abc_to_lmx(tmp_path, source):
    out = tmp_path / "x.lmx"
    assert run_cli("convert", source, out) == 0
    assert tokens_from_text(out.read_text()).count("measure") > 4


def test_midi_to_events_to_midi(tmp_path, midi_file, capsys):
    events = tmp_path / "x.events"
    assert run_cli("convert", midi_file, events, "--window", "4") == 0
    text = events.read_text()
    assert text.startswith("# unimusic midi-events") and len(text.splitlines()) > 3
    out = tmp_path / "x.mid"
    assert run_cli("convert", events, out) == 0
    codec = MidiEventCodec(config=MidiCodecConfig(window_seconds=4))
    reference = codec.normalize(notes_from_midi(midi_file))
    restored = notes_from_midi(out)
    assert len(reference) > 100
    assert note_f1(reference, restored, onset_tolerance=0.01, offset=True, offset_tolerance=0.01)["f1"] == 1.0
    # decoding with the wrong window would break this: the header carries it
    assert "window=4.0" in text


def test_info_on_each_kind(tmp_path, midi_file, capsys):
    assert run_cli("info", CHORALE, "--json") == 0
    out = capsys.readouterr().out
    assert '"parts": 4' in out and '"measures": 10' in out
    assert run_cli("info", midi_file) == 0
    assert "notes" in capsys.readouterr().out
    lmx = tmp_path / "k.lmx"
    run_cli("convert", KERN, lmx)
    capsys.readouterr()
    assert run_cli("info", lmx) == 0
    assert "measures" in capsys.readouterr().out


def _bad_files(tmp_path, midi_file):
    good_xml = (corpus_root() / "demos/two-parts.xml").read_bytes()
    good_lmx = "\n".join(linearize(good_xml))
    rng = random.Random(7)
    cases = {
        "truncated.mid": (midi_file.read_bytes()[: len(midi_file.read_bytes()) // 3], "MIDI"),
        "malformed.musicxml": (good_xml[: len(good_xml) // 2], "malformed XML"),
        "garbage.mxl": (bytes(rng.randrange(256) for _ in range(4000)), "mxl"),
        "garbage.krn": (bytes(rng.randrange(256) for _ in range(4000)), "kern"),
        "empty.abc": (b"", "empty"),
        "wrong-extension.mid": (good_xml, "extension says MIDI"),
        "wrong-extension.musicxml": (midi_file.read_bytes(), "looks like midi"),
        "unknown-token.lmx": (good_lmx.replace("quarter", "quater", 1).encode(), "unknown LMX token 'quater'"),
        "unknown.xyz": (b"hello", "not a score file"),
    }
    paths = {}
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths[path] = expected
    return paths


@pytest.mark.parametrize("command", ["convert", "info"])
def test_bad_files_one_line_nonzero(tmp_path, midi_file, capsys, command):
    for path, expected in _bad_files(tmp_path, midi_file).items():
        args = ["convert", path, tmp_path / "out.musicxml"] if command == "convert" else ["info", path]
        if command == "convert" and path.suffix == ".lmx":
            args[-1] = tmp_path / "out.musicxml"
        code = run_cli(*args)
        err = capsys.readouterr().err
        assert code == 2, (path.name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("unimusic: error: "), (path.name, err)
        assert str(path) in lines[0] and expected.lower() in lines[0].lower(), (path.name, lines[0])
        assert "Traceback" not in err


def test_missing_file_and_unsupported_conversion(tmp_path, capsys):
    assert run_cli("info", tmp_path / "nope.mid") == 2
    assert "no such file" in capsys.readouterr().err
    assert run_cli("convert", CHORALE, tmp_path / "x.wav") == 2
    assert "no deterministic conversion" in capsys.readouterr().err


def test_console_script_subprocess(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00")
    exe = Path(sys.executable).parent / "unimusic"
    result = subprocess.run([str(exe), "info", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"unimusic: error: {bad}")
    assert "Traceback" not in result.stderr
    ok = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "convert" in ok.stdout


def test_engrave_and_piano_roll_pictures(tmp_path, midi_file, capsys):
    import cv2

    lmx = tmp_path / "c.lmx"
    assert run_cli("convert", CHORALE, lmx) == 0
    png = tmp_path / "c.png"
    assert run_cli("convert", lmx, png) == 0
    image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 500
    ink = (image < 128).mean()
    assert 0.01 < ink < 0.5, ink  # engraved staves, not a blank or black page
    svg = tmp_path / "k.svg"
    assert run_cli("convert", KERN, svg) == 0 and "<svg" in svg.read_text()
    assert run_cli("convert", CHORALE, tmp_path / "x.png", "--page", "9") == 2
    assert "--page 9" in capsys.readouterr().err
    roll = tmp_path / "roll.png"
    assert run_cli("convert", midi_file, roll) == 0
    picture = cv2.imread(str(roll))
    assert picture is not None and picture.shape[1] >= 600
