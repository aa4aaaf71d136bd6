"""Slakh2100 (flac_redux) import on its layout replica: scan (omitted/ left out), import end to
end, one row by hand against the stem MIDI files and metadata.yaml, rerun, S3 scan."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.replicas import upload
from tests.replicas.slakh import RATE, SEGMENT_SECONDS, make


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return make(tmp_path_factory.mktemp("slakh-replica"))


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("slakh-imported") / "out"
    manifest = import_local("slakh2100", replica.src, str(out), config=ImportConfig(**replica.config))
    return out, manifest


def track(replica, split: str, name: str) -> Path:
    return Path(replica.src, "slakh2100_flac_redux", split, name)


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_scan_takes_splits_from_folders_and_leaves_omitted_out(replica):
    from unimusic import datasets
    from unimusic.datasets.slakh import scan_tracks

    examples, errors = datasets.get("slakh2100").scan(replica.src)
    assert len(examples) == replica.examples
    assert {e.key: e.split for e in examples} == {"Track00001": "train", "Track00003": "train", "Track01501": "val",
                                                  "Track01876": "test"}
    assert sorted((Path(e["path"]).parent.name, Path(e["path"]).name, e["stage"]) for e in errors) == [
        ("MIDI", "S01.mid", "scan"), ("Track01877", "metadata.yaml", "scan")]
    assert "Track00002" in errors[[Path(e["path"]).name for e in errors].index("S01.mid")]["path"]
    # omitted/ holds a complete track: neither an example nor an error, only counted.
    omitted = list(Path(replica.src, "slakh2100_flac_redux", "omitted").iterdir())
    assert len(omitted) == 1 and scan_tracks(replica.src).omitted == 1
    assert not any("omitted" in p for e in examples for _, p in e.files) and not any("omitted" in e["path"]
                                                                                       for e in errors)


def test_example_meta_keeps_the_stem_list(replica):
    import yaml

    from unimusic import datasets

    examples, _ = datasets.get("slakh2100").scan(replica.src)
    first = next(e for e in examples if e.key == "Track00001")
    doc = yaml.safe_load((track(replica, "train", "Track00001") / "metadata.yaml").read_text())
    meta = first.meta_dict
    assert [(s["id"], s["program_num"], s["is_drum"], s["class"]) for s in meta["stems"]] == [
        (sid, s["program_num"], s["is_drum"], s["inst_class"]) for sid, s in sorted(doc["stems"].items())]
    # Rendered stems give the notes; S03 (MIDI saved, audio not rendered) and S04 (nothing saved) do not.
    assert meta["stems_in_rows"] == ["S00", "S01", "S02"]
    assert sorted(r for r, _ in first.files) == ["metadata", "midi:S00", "midi:S01", "midi:S02", "mix"]
    assert (track(replica, "train", "Track00001") / "MIDI" / "S03.mid").is_file()
    assert first.work == doc["UUID"]


def test_scan_refuses_a_folder_that_is_not_slakh(tmp_path):
    from unimusic import datasets
    from unimusic.errors import InputError

    (tmp_path / "train").mkdir()
    with pytest.raises(InputError, match="not a Slakh folder"):
        datasets.get("slakh2100").scan(str(tmp_path))


def test_import_end_to_end(replica, imported):
    _, manifest = imported
    assert manifest["dataset"] == "slakh2100" and manifest["licence"] == "CC BY 4.0"
    assert manifest["excluded"] == {"omitted": 1}  # the authors' omitted/ tracks, counted in the manifest
    assert manifest["commercial_use"] is True and manifest["examples"] == replica.examples
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | replica.rows_per_split
    rows = manifest["rows"]
    assert rows == sum(replica.rows_per_split.values()) and rows > replica.good  # several rows per track
    assert manifest["rows_with"] == {"image": 0, "lmx": 0, "midi": rows, "audio": rows}
    assert manifest["failures"] == replica.errors == len(manifest["errors"])
    row_errors = [e for e in manifest["errors"] if e["stage"] != "scan"]
    assert len(row_errors) == 1 and row_errors[0]["path"].endswith("Track00003/mix.flac")
    assert "unreadable audio" in row_errors[0]["message"]


def test_first_row_by_hand(replica, imported):
    import pretty_midi
    import yaml

    from unimusic.render.synthesize import decode_audio

    out, _ = imported
    row = next(r for r in read_rows(out) if r["example"] == "Track00001" and r["system"] == 0)
    assert (row["split"], row["start"], row["end"]) == ("train", 0.0, SEGMENT_SECONDS)
    folder = track(replica, "train", "Track00001")
    stems = yaml.safe_load((folder / "metadata.yaml").read_text())["stems"]
    keys = set()
    for sid, stem in stems.items():
        if not stem["audio_rendered"]:
            continue
        (inst,) = pretty_midi.PrettyMIDI(str(folder / "MIDI" / f"{sid}.mid")).instruments
        assert inst.program == 0  # the file says piano: metadata.yaml is what was rendered
        for n in inst.notes:
            onset = math.floor(n.start * 100 + 0.5)
            if onset < SEGMENT_SECONDS * 100:  # a drum hit is its pitch at a step; a pitched note has a program
                keys.add((0, n.pitch, onset, True) if stem["is_drum"] else (stem["program_num"], n.pitch, onset, False))
    got = sorted((n["program"], n["pitch"], round(n["start"] * 100), n["is_drum"]) for n in row["notes"])
    assert got == sorted(keys) and len(keys) > 20
    assert {(p, d) for p, _, _, d in got} == {(0, False), (33, False), (0, True)}  # piano, bass, drums; no choir
    audio, sr = decode_audio(row["audio_flac"])
    assert sr == RATE and audio.size == round(SEGMENT_SECONDS * RATE) and abs(audio).max() > 0.01


def test_rerun_writes_no_new_shard(replica, imported):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out, manifest = imported
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = import_local("slakh2100", replica.src, str(out), config=ImportConfig(**replica.config))
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    assert again["rows"] == manifest["rows"] and again["failures"] == manifest["failures"]


def test_scan_and_rows_from_s3(s3_server, replica):
    from unimusic import datasets
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.slakh import scan_tracks

    root = Path(replica.src)
    upload(root, endpoint=s3_server, bucket="slakh-replica", prefix="data")
    adapter = datasets.get("slakh2100")
    local, local_errors = adapter.scan(replica.src)
    found = scan_tracks("s3://slakh-replica/data")
    assert [(e.key, e.split, e.meta) for e in found.examples] == [(e.key, e.split, e.meta) for e in local]
    prefix = "s3://slakh-replica/data/slakh2100_flac_redux/"
    assert all(p.startswith(prefix) for e in found.examples for _, p in e.files)
    assert [e["path"].rsplit("/", 3)[1:] for e in found.errors] == [e["path"].rsplit("/", 3)[1:] for e in local_errors]
    assert found.omitted == 1
    config = ImportConfig(**replica.config)
    remote_rows = adapter.rows(next(e for e in found.examples if e.key == "Track01501"), config)
    local_rows = adapter.rows(next(e for e in local if e.key == "Track01501"), config)
    assert [r["notes"] for r in remote_rows] == [r["notes"] for r in local_rows]
