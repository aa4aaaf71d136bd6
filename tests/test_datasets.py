"""Data set import: the registry and CLI, and MAESTRO end to end on its layout replica
(through Ray Data, resumable, from a folder and from the local S3 server)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.replicas import MODULES as REPLICA_MODULES
from tests.replicas import make, upload

SEGMENT = "segment_seconds=4.0"
BOUNDARY = 3.75


@pytest.fixture(scope="module")
def maestro(tmp_path_factory):
    return make("maestro", tmp_path_factory.mktemp("maestro-replica"))


def read_rows(out: str) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for f in sorted(Path(out, "shards").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def test_every_adapter_is_listed_with_its_licence_and_has_a_replica(capsys):
    from unimusic import datasets
    from unimusic.cli import main

    assert main(["datasets", "list"]) == 0
    shown = capsys.readouterr().out
    for adapter in datasets.all_adapters():
        info = adapter.info
        assert info.name in shown and info.licence and info.homepage.startswith("https://")
        assert set(info.modalities) <= {"image", "lmx", "midi", "audio"}
    assert set(REPLICA_MODULES) == set(datasets.names())


def test_unknown_set_and_bad_source_are_one_line_errors(tmp_path, capsys):
    from unimusic.cli import main

    assert main(["datasets", "import", "maestro-v9", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "maestro-v9" in err and "unknown" in err and "Traceback" not in err
    assert main(["datasets", "import", "maestro", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "no such" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["datasets", "import", "maestro", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "not a MAESTRO folder" in err and "Traceback" not in err


def test_maestro_scan_keeps_the_official_split(maestro):
    from unimusic import datasets

    examples, errors = datasets.get("maestro").scan(maestro.src)
    assert len(examples) == maestro.examples
    table = list(csv.DictReader(io.StringIO(Path(maestro.src, "maestro-v3.0.0.csv").read_text())))
    official = {r["midi_filename"].rsplit(".", 1)[0]: {"validation": "val"}.get(r["split"], r["split"]) for r in table}
    assert {e.key: e.split for e in examples} == {k: v for k, v in official.items() if k in {e.key for e in examples}}
    assert [e["stage"] for e in errors] == ["scan"] and errors[0]["path"].endswith("wav--8.wav")
    # The column-oriented JSON table says the same when the CSV is absent.
    from unimusic.datasets.maestro import read_table

    assert [r["split"] for r in read_table(str(Path(maestro.src, "maestro-v3.0.0.json")))] == [r["split"] for r in table]


def test_maestro_import_through_ray(maestro, tmp_path, ray_session, capsys):
    from unimusic.cli import main
    from unimusic.render.synthesize import decode_audio
    from unimusic.tokens.midi import MidiCodecConfig, MidiEventCodec
    from unimusic.tokens.midi import notes_from_midi

    out = str(tmp_path / "maestro")
    assert main(["datasets", "import", "maestro", maestro.src, "--out", out, SEGMENT, "-q"]) == 0
    printed = capsys.readouterr().out
    assert "CC BY-NC-SA 4.0" in printed and "NOT for commercial use" in printed
    manifest = json.loads(Path(out, "manifest.json").read_text())
    assert manifest["licence"].startswith("CC BY-NC-SA 4.0") and manifest["dataset"] == "maestro"
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | maestro.rows_per_split
    assert manifest["rows_with"] == {"image": 0, "lmx": 0, "midi": manifest["rows"], "audio": manifest["rows"]}
    assert manifest["failures"] == maestro.errors == len(manifest["errors"])
    assert {e["stage"] for e in manifest["errors"]} == {"scan", "rows"}
    assert any(e["path"].endswith("wav--9.wav") and "unreadable audio" in e["message"] for e in manifest["errors"])

    rows = read_rows(out)
    assert len(rows) == manifest["rows"]
    # By hand: the validation performance's first row holds the MIDI file's notes that start in
    # [0, 4) s (two voices in unison on one key are one note), cut at 4 s, and exactly 4 s of
    # audio at 44.1 kHz.
    row = next(r for r in rows if r["split"] == "val" and r["system"] == 0)
    midi_path = Path(maestro.src, json.loads(row["meta"])["midi_filename"])
    keys = sorted({(n.pitch, round(n.start, 3)) for n in notes_from_midi(midi_path.read_bytes()) if n.start < 4.0})
    got = sorted((n["pitch"], n["start"]) for n in row["notes"])
    assert [p for p, _ in got] == [p for p, _ in keys] and len(keys) > 20
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, keys)) <= 0.005  # the codec's 10 ms grid
    assert max(n["end"] for n in row["notes"]) <= 4.0
    audio, sr = decode_audio(row["audio_flac"])
    assert sr == 44100 and audio.size == 4 * 44100 and np.abs(audio).max() > 0.01
    # The event windows decode back to the notes column.
    codec = MidiEventCodec(config=MidiCodecConfig())
    decoded, stats = codec.decode([(w["start"], w["tokens"]) for w in row["midi_windows"]])
    assert stats.invalid_tokens == 0 and sorted((n.pitch, round(n.start, 2)) for n in decoded) == \
        sorted((n["pitch"], round(n["start"], 2)) for n in row["notes"])
    # The 48 kHz recording is resampled: its rows hold 44.1 kHz audio of the same length.
    r48 = next(r for r in rows if "2018/" in json.loads(r["meta"])["audio_filename"] and r["system"] == 0)
    assert decode_audio(r48["audio_flac"])[0].size == 4 * 44100

    # A rerun writes nothing; a shard whose sidecar is gone is rebuilt, alone.
    shards = sorted(Path(out, "shards").glob("*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    assert main(["datasets", "import", "maestro", maestro.src, "--out", out, SEGMENT, "-q"]) == 0
    assert {p: p.stat().st_mtime_ns for p in shards} == mtimes
    shards[0].with_suffix(".json").unlink()
    from pipelines.import_dataset import import_dataset
    from unimusic.datasets.base import ImportConfig

    again = import_dataset(name="maestro", source=maestro.src, out_dir=out, config=ImportConfig(segment_seconds=4.0),
                           progress=False)
    assert (again["shards_written"], again["shards_skipped"]) == (1, len(shards) - 1)
    assert again["rows"] == manifest["rows"] and shards[0].stat().st_mtime_ns != mtimes[shards[0]]


def test_sustain_pedal_extends_notes_by_hand(maestro):
    from unimusic.datasets.maestro import sustained_notes
    from unimusic.tokens.midi import notes_from_midi
    from tests.replicas.maestro import PEDAL, file_stem

    data = Path(maestro.src, file_stem("2004", 0) + ".midi").read_bytes()
    raw, held = notes_from_midi(data), sustained_notes(data, name="x")
    assert len(raw) == len(held)
    down, up = PEDAL
    for before, after in zip(sorted(raw, key=lambda n: (n.start, n.pitch)), held):
        restruck = [n.start for n in raw if n.pitch == before.pitch and before.start < n.start < up]
        if down <= before.end < up and not restruck:
            assert after.end == pytest.approx(up, abs=1e-3)
        elif not (down <= before.end < up):
            assert after.end == pytest.approx(before.end, abs=1e-3)
    assert any(down <= n.end < up for n in raw)


def test_limit_keeps_every_split(maestro):
    from unimusic import datasets
    from unimusic.datasets.importer import limit_examples

    examples, _ = datasets.get("maestro").scan(maestro.src)
    limited = limit_examples(examples, 1)
    assert sorted(e.split for e in limited) == ["test", "train", "val"]


@pytest.mark.slow  # a moto server and a Ray import: the default tier keeps the local run
def test_maestro_import_from_s3(s3_server, ray_session, maestro, tmp_path):
    import boto3

    from pipelines.import_dataset import import_dataset
    from unimusic.datasets.base import ImportConfig

    s3 = boto3.client("s3", endpoint_url=s3_server)
    root = Path(maestro.src)
    upload(root, endpoint=s3_server, bucket="datasets-import", prefix="maestro-v3.0.0")
    manifest = import_dataset(name="maestro", source="s3://datasets-import/maestro-v3.0.0",
                              out_dir="s3://datasets-import/corpora/maestro", config=ImportConfig(segment_seconds=4.0),
                              progress=False)
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | maestro.rows_per_split
    assert manifest["failures"] == maestro.errors
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="datasets-import", Prefix="corpora/maestro/")["Contents"]]
    assert "corpora/maestro/manifest.json" in keys and "corpora/maestro/errors.parquet" in keys
    assert sum(k.endswith(".parquet") and "/shards/" in k for k in keys) == len(manifest["shards"])
    assert math.isclose(sum(s["rows"] for s in manifest["shards"]), manifest["rows"])


def test_imported_rows_tokenize_with_their_missing_forms_left_empty(maestro, tmp_path):
    """An imported performance set has no images: its rows get audio codes and no image codes."""
    import pyarrow.parquet as pq

    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local
    from unimusic.models.shipped import shipped_path
    from unimusic.tokenize import Tokenizers, decode_audio_codes, decode_image_codes, tokenize_table

    out = tmp_path / "maestro"
    import_local("maestro", maestro.src, str(out), config=ImportConfig(segment_seconds=4.0), limit=1)
    table = pq.read_table(sorted((out / "shards").glob("*.parquet"))[0])
    tokenizers = Tokenizers.load(shipped_path("image"), shipped_path("audio"))
    tokenized, errors, seconds = tokenize_table(table, tokenizers, source="maestro")
    assert errors == [] and tokenized.num_rows == table.num_rows
    rows = tokenized.to_pylist()
    assert all(decode_image_codes(r) is None for r in rows)
    codes = [decode_audio_codes(r) for r in rows]
    assert all(c is not None and c.shape[1] > 0 for c in codes)
    assert seconds == pytest.approx(sum(r["end"] - r["start"] for r in rows), rel=0.05)


@pytest.fixture(scope="module")
def maestro_imported(maestro, tmp_path_factory):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("maestro-imported")
    # Row boundaries off the beat (chorale beats are 0.5 s): notes sound across them.
    import_local("maestro", maestro.src, str(out), config=ImportConfig(segment_seconds=BOUNDARY))
    return out


def test_eval_items_join_each_performance_back_whole(maestro, maestro_imported):
    """A performance cut into rows is one item again: every note once, with its true onset."""
    from unimusic.datasets.maestro import sustained_notes
    from unimusic.evaluation import items_from_dataset

    items = items_from_dataset(str(maestro_imported), split="val")
    assert len(items) == 1 and items[0].audio is not None and items[0].lmx is None and items[0].image is None
    meta = json.loads(read_rows(str(maestro_imported))[0]["meta"])  # any row: the folder layout
    table = list(csv.DictReader(io.StringIO(Path(maestro.src, "maestro-v3.0.0.csv").read_text())))
    source = next(r for r in table if r["split"] == "validation")
    assert meta  # rows carry the table's metadata
    expected = sustained_notes(Path(maestro.src, source["midi_filename"]).read_bytes(), name="x")
    key = lambda n: (n.pitch, round(n.start * 100))  # noqa: E731
    got = sorted(items[0].notes, key=key)
    assert [n.pitch for n in got] == [n.pitch for n in sorted({key(n): n for n in expected}.values(), key=key)]
    crossing = [n for n in expected if n.start < BOUNDARY < n.end]
    assert crossing, "the replica should hold a note sounding across the row boundary"
    for n in crossing:  # joined back: one note from its onset to its end
        match = [m for m in got if m.pitch == n.pitch and abs(m.start - n.start) < 0.011]
        assert len(match) == 1 and abs(match[0].end - n.end) < 0.011
    rows = [r for r in read_rows(str(maestro_imported)) if r["split"] == "val"]
    assert items[0].audio.samples.size == round(sum(r["end"] - r["start"] for r in rows) * 44100)


def test_eval_on_an_imported_split_is_one_command(maestro_imported, tmp_path, capsys):
    from unimusic.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--dataset", str(maestro_imported), "--split", "test", "--peers", "", "--pictures", "0",
                 "--out", str(out), "-q"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert [r["direction"] for r in report["rows"]] == ["audio->midi"]  # what MAESTRO can score
    row = report["rows"][0]
    assert row["items"] == 1 and row["failed"] == 0 and 0.0 <= row["onset_f1"] <= 1.0 and row["n_ref"] > 20
    assert report["source"] == str(maestro_imported) and report["split"] == "test"
    # A plain corpus is refused with a pointer to --tokens.
    assert main(["eval", "--dataset", str(tmp_path), "--out", str(out)]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.slow  # every replica built and imported through Ray Data (each adapter's own test uses the plain loop)
@pytest.mark.parametrize("name", sorted(REPLICA_MODULES))
def test_every_replica_imports_through_ray(name, tmp_path, ray_session):
    from pipelines.import_dataset import import_dataset
    from unimusic import datasets
    from unimusic.datasets.base import ImportConfig

    replica = make(name, tmp_path / "replica")
    config = ImportConfig(**replica.config)
    manifest = import_dataset(name=name, source=replica.src, out_dir=str(tmp_path / "out"), config=config,
                              progress=False)
    assert manifest["licence"] == datasets.get(name).info.licence
    assert manifest["examples"] == replica.examples and manifest["failures"] == replica.errors
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | replica.rows_per_split
    for form in replica.modalities:
        assert manifest["rows_with"][form] == manifest["rows"] > 0
    again = import_dataset(name=name, source=replica.src, out_dir=str(tmp_path / "out"), config=config,
                           progress=False)
    assert again["shards_written"] == 0 and again["rows"] == manifest["rows"]


def test_omr_ser_on_an_imported_olimpic_split(tmp_path):
    """OLiMPiC's test split: the image->lmx row scores every imported system against its LMX."""
    import pyarrow.parquet as pq

    from unimusic.cli import main
    from unimusic.datasets.importer import import_local

    replica = make("olimpic", tmp_path / "olimpic")
    imported = tmp_path / "imported"
    import_local("olimpic", replica.src, str(imported))
    test_rows = sum(t.column("split").to_pylist().count("test")
                    for t in (pq.read_table(f, columns=["split"]) for f in (imported / "shards").glob("*.parquet")))
    out = tmp_path / "eval"
    assert main(["eval", "--dataset", str(imported), "--split", "test", "--pictures", "1", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert [r["direction"] for r in report["rows"]] == ["image->lmx"]
    row = report["rows"][0]
    assert row["items"] == test_rows > 0 and row["failed"] == 0 and row["ser"] >= 0 and row["ref_tokens"] > 50
    assert list((out / "pictures").glob("*.png"))  # the input crop with the prediction engraved under it
