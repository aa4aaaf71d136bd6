"""Batch translation with Ray Data (pipelines/batch_translate.py, `unimusic translate-batch`)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest


def _musicxml(piece: str, measures: tuple[int, int]) -> bytes:
    from music21 import corpus
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    return GeneralObjectExporter(corpus.parse(piece).measures(*measures)).parse()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A folder of real scores and MIDI (one nested two folders down) plus corrupt files."""
    from unimusic import io_files
    from unimusic.inference import score_to_notes

    root = tmp_path_factory.mktemp("batch") / "src"
    (root / "sub" / "deep").mkdir(parents=True)
    bach = _musicxml("bach/bwv66.6", (1, 4))
    (root / "bach.musicxml").write_bytes(bach)
    (root / "sub" / "deep" / "chorale.musicxml").write_bytes(_musicxml("bach/bwv1.6", (1, 3)))
    midi = root / "bach-notes.mid"
    io_files.write_output(io_files.Midi(notes=tuple(score_to_notes(bach))), midi)
    (root / "truncated.mid").write_bytes(midi.read_bytes()[:40])
    (root / "noise.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "notes.musicxml").write_text("these are my notes about the concert, not a score\n")
    (root / "readme.txt").write_text("not an input: .txt is no input extension\n")
    return root


GOOD = {"bach.musicxml": "bach.mid", "bach-notes.mid": "bach-notes.mid",
        "sub/deep/chorale.musicxml": "sub/deep/chorale.mid"}
BAD = ("truncated.mid", "noise.wav", "notes.musicxml")


def _pitches(notes) -> list[int]:
    return sorted(int(n.pitch) for n in notes)


def _manifest(text: str) -> dict[str, dict]:
    return {os.path.basename(r["input"]) if "/sub/" not in r["input"] else "sub/deep/chorale.musicxml": r
            for r in map(json.loads, text.splitlines())}


def test_folder_to_midi_manifest_and_rerun(sources, tmp_path, ray_session):
    from pipelines.batch_translate import translate_batch
    from unimusic import io_files
    from unimusic.inference import Translator

    out = tmp_path / "out"
    summary = translate_batch(str(sources), to="midi", out=str(out), actors=2, batch_size=2)
    assert (summary["inputs"], summary["done"], summary["failed"], summary["skipped"]) == (6, 3, 3, 0)
    assert json.loads((out / "summary.json").read_text())["done"] == 3
    for src, dst in GOOD.items():  # the same notes as translating the file alone
        expected = Translator().translate(io_files.read_input(sources / src).value, "midi").value.notes
        assert _pitches(io_files.read_input(out / dst).value.notes) == _pitches(expected), src
    rows = _manifest((out / "manifest.jsonl").read_text())
    assert set(rows) == set(GOOD) | set(BAD)
    for name in GOOD:
        assert rows[name]["status"] == "done" and rows[name]["error"] is None
        assert rows[name]["files"] == [str(out / GOOD[name])]
    assert rows["bach.musicxml"]["modality"] == "score" and rows["bach.musicxml"]["hops"] == ["convert score->midi"]
    for name in BAD:
        assert rows[name]["status"] == "failed" and name in rows[name]["error"], rows[name]
        assert not (out / (os.path.splitext(name)[0] + ".mid")).exists()
    assert not (out / "readme.mid").exists()

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mid")}
    again = translate_batch(str(sources), to="midi", out=str(out), actors=1)
    assert (again["done"], again["failed"], again["skipped"]) == (0, 3, 3)  # the bad ones are retried
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mid")} == mtimes
    assert set(_manifest((out / "manifest.jsonl").read_text())) == set(GOOD) | set(BAD)

    # a run killed before its manifest: its (atomically written) outputs are still skipped
    (out / "manifest.jsonl").unlink()
    resumed = translate_batch(str(sources), to="midi", out=str(out), actors=1)
    assert (resumed["done"], resumed["failed"], resumed["skipped"]) == (0, 3, 3)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mid")} == mtimes

    forced = translate_batch(str(sources / "**" / "*.musicxml"), to="midi", out=str(out), overwrite=True)
    assert (forced["inputs"], forced["done"], forced["skipped"]) == (3, 2, 0)  # a glob; keeps sub/deep/
    assert (out / "sub" / "deep" / "chorale.mid").stat().st_mtime_ns != mtimes[out / "sub" / "deep" / "chorale.mid"]


def test_output_names_mirror_the_tree_and_collisions_keep_full_names():
    from pipelines.batch_translate import plan_outputs

    assert plan_outputs(["a.mid", "a.musicxml", "x/b.png"], "musicxml") == \
        ["a.mid.musicxml", "a.musicxml.musicxml", "x/b.musicxml"]


def test_model_actor_path(sources, tmp_path, ray_session):
    """LMX -> MIDI through the shipped model: the actor loads the checkpoint and decodes."""
    from pipelines.batch_translate import translate_batch
    from unimusic import io_files
    from unimusic.inference import Options, score_to_lmx

    src = tmp_path / "lmx"
    src.mkdir()
    for piece in ("bach/bwv66.6", "bach/bwv1.6"):
        tokens = score_to_lmx(_musicxml(piece, (1, 1)))
        (src / f"{piece.split('/')[1]}.lmx").write_text(" ".join(tokens) + "\n")
    out = tmp_path / "out"
    summary = translate_batch(str(src), to="midi", out=str(out), options=Options(engine="model"), actors=1)
    assert (summary["done"], summary["failed"]) == (2, 0)
    for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()):
        assert row["hops"] == ["model lmx->midi"] and row["modality"] == "lmx"
        assert isinstance(io_files.read_input(row["output"]).value, io_files.Midi)


@pytest.mark.slow  # a moto server and a second pass: the default tier keeps the local runs
def test_s3_batch(s3_server, ray_session, sources):
    import boto3

    from pipelines.batch_translate import translate_batch
    from unimusic import io_files, storage

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="batch-translate")
    for rel in ("bach.musicxml", "sub/deep/chorale.musicxml", "noise.wav"):
        s3.put_object(Bucket="batch-translate", Key=f"in/{rel}", Body=(sources / rel).read_bytes())
    out = "s3://batch-translate/out"
    summary = translate_batch("s3://batch-translate/in/", to="midi", out=out, actors=1)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    rows = {r["input"]: r for r in map(json.loads, storage.read_bytes(f"{out}/manifest.jsonl").decode().splitlines())}
    assert rows["s3://batch-translate/in/noise.wav"]["status"] == "failed"
    assert "noise.wav" in rows["s3://batch-translate/in/noise.wav"]["error"]
    assert rows["s3://batch-translate/in/sub/deep/chorale.musicxml"]["output"] == f"{out}/sub/deep/chorale.mid"
    for name in ("bach.mid", "sub/deep/chorale.mid"):
        value = io_files.read_bytes(storage.read_bytes(f"{out}/{name}"), name=name).value
        assert isinstance(value, io_files.Midi) and len(value.notes) > 10
    assert json.loads(storage.read_bytes(f"{out}/summary.json"))["done"] == 2
    again = translate_batch("s3://batch-translate/in/", to="midi", out=out, actors=1)
    assert (again["done"], again["skipped"]) == (0, 2)


def test_cli(sources, tmp_path, ray_session, capsys):
    from unimusic.cli import main

    out = tmp_path / "cli-out"
    assert main(["translate-batch", str(sources), "--to", "midi", "--out", str(out), "--actors", "1", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "3 done, 3 failed, 0 skipped of 6 input(s)" in printed and str(out / "manifest.jsonl") in printed
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["translate-batch", str(empty), "--to", "midi", "--out", str(out)]) == 2
    assert "no input files found" in capsys.readouterr().err
    assert main(["translate-batch", str(sources), "--to", "video", "--out", str(out)]) == 2
    assert "unknown target" in capsys.readouterr().err
