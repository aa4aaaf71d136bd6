"""MusicNet import on its layout replica: scan, import end to end, one row by hand, rerun, S3 scan."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tests.replicas import upload
from tests.replicas.musicnet import RATE, SEGMENT_SECONDS, make


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return make(tmp_path_factory.mktemp("musicnet-replica"))


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("musicnet-imported") / "out"
    manifest = import_local("musicnet", replica.src, str(out), config=ImportConfig(**replica.config))
    return out, manifest


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def labels(replica, split: str, rec_id: str) -> list[dict]:
    path = Path(replica.src, "musicnet", f"{split}_labels", f"{rec_id}.csv")
    return list(csv.DictReader(path.read_text().splitlines()))


def step(samples: str) -> int:
    """A label time (samples at 44.1 kHz) on the codec's 10 ms grid."""
    return math.floor(int(samples) / RATE * 100 + 0.5)


def test_scan_follows_the_release_folders(replica):
    from unimusic import datasets

    examples, errors = datasets.get("musicnet").scan(replica.src)
    assert len(examples) == replica.examples
    assert {e.key: e.split for e in examples} == {"1727": "train", "1728": "train", "1729": "train", "1730": "train",
                                                  "2106": "test", "2107": "test"}
    for e in examples:  # the split is the folder the recording sits in; its labels are the same split's
        assert Path(e.file("audio")).parent.name == f"{e.split}_data"
        assert Path(e.file("labels")).parent.name == f"{e.split}_labels"
    first = next(e for e in examples if e.key == "1727")
    assert first.meta_dict["ensemble"] == "Piano Quartet" and first.work == "Bach/bach/bwv66.6"
    # A recording without labels, labels without a recording: scan errors naming the missing file.
    assert sorted((Path(e["path"]).parent.name, Path(e["path"]).name, e["stage"]) for e in errors) == [
        ("test_data", "2108.wav", "scan"), ("train_labels", "1731.csv", "scan")]


def test_scan_refuses_a_folder_that_is_not_musicnet(tmp_path):
    from unimusic import datasets
    from unimusic.errors import InputError

    (tmp_path / "train_data").mkdir()
    with pytest.raises(InputError, match="not a MusicNet folder"):
        datasets.get("musicnet").scan(str(tmp_path))


def test_import_end_to_end(replica, imported):
    _, manifest = imported
    assert manifest["dataset"] == "musicnet" and manifest["licence"].startswith("CC BY 4.0")
    assert manifest["commercial_use"] is True and manifest["examples"] == replica.examples
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | replica.rows_per_split
    rows = manifest["rows"]
    assert rows == sum(replica.rows_per_split.values()) and rows > replica.good  # several rows per recording
    assert manifest["rows_with"] == {"image": 0, "lmx": 0, "midi": rows, "audio": rows}
    assert manifest["failures"] == replica.errors == len(manifest["errors"])
    bad = {Path(e["path"]).name: e for e in manifest["errors"]}
    assert set(bad) == {"1731.csv", "2108.wav", "1729.wav", "1730.csv", "2107.csv"}
    assert bad["1729.wav"]["stage"] == "rows" and "unreadable audio" in bad["1729.wav"]["message"]
    assert "line 5" in bad["1730.csv"]["message"] and "'x'" in bad["1730.csv"]["message"]
    assert "missing column" in bad["2107.csv"]["message"]


def test_first_row_by_hand(replica, imported):
    from unimusic.render.synthesize import decode_audio

    out, _ = imported
    rows = read_rows(out)
    row = next(r for r in rows if r["example"] == "1727" and r["system"] == 0)
    assert (row["split"], row["start"], row["end"]) == ("train", 0.0, SEGMENT_SECONDS)
    table = labels(replica, "train", "1727")
    # Every label row starting before the row's end, keyed as the codec keeps them
    # (program = instrument - 1, pitch, onset step): the row's notes, no more, no less.
    keys = sorted({(int(r["instrument"]) - 1, int(r["note"]), step(r["start_time"])) for r in table
                   if step(r["start_time"]) < SEGMENT_SECONDS * 100})
    got = sorted((n["program"], n["pitch"], round(n["start"] * 100)) for n in row["notes"])
    assert got == keys and len(keys) > 10
    assert {p for p, _, _ in got} == {0, 40, 41, 42}  # piano, violin, viola, cello
    # Samples -> seconds: the recording starts after 1 s of silence, its first label at sample 44100.
    first = min(table, key=lambda r: (int(r["start_time"]), int(r["note"])))
    assert int(first["start_time"]) == 44100 and min(n["start"] for n in row["notes"]) == 1.0
    note = next(n for n in row["notes"] if n["start"] == 1.0 and n["pitch"] == int(first["note"])
                and n["program"] == int(first["instrument"]) - 1)
    assert note["end"] == pytest.approx(step(first["end_time"]) / 100)
    audio, sr = decode_audio(row["audio_flac"])
    assert sr == RATE and audio.size == round(SEGMENT_SECONDS * RATE)
    assert abs(audio[: RATE // 2]).max() < 1e-3 < abs(audio[RATE:]).max()  # the silent lead-in, then music
    assert [r["start"] for r in rows if r["example"] == "1727"] == [i * SEGMENT_SECONDS for i in range(3)]


def test_rerun_writes_no_new_shard(replica, imported):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out, manifest = imported
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = import_local("musicnet", replica.src, str(out), config=ImportConfig(**replica.config))
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    assert again["rows"] == manifest["rows"] and again["failures"] == manifest["failures"]


def test_scan_and_rows_from_s3(s3_server, replica):
    from unimusic import datasets
    from unimusic.datasets.base import ImportConfig

    root = Path(replica.src)
    upload(root, endpoint=s3_server, bucket="musicnet-replica", prefix="dl")
    adapter = datasets.get("musicnet")
    local, local_errors = adapter.scan(replica.src)
    remote, remote_errors = adapter.scan("s3://musicnet-replica/dl")
    assert [(e.key, e.split, e.work) for e in remote] == [(e.key, e.split, e.work) for e in local]
    assert all(p.startswith("s3://musicnet-replica/dl/musicnet/") for e in remote for _, p in e.files)
    assert [e["path"].rsplit("/", 2)[1:] for e in remote_errors] == [e["path"].rsplit("/", 2)[1:] for e in local_errors]
    config = ImportConfig(**replica.config)
    rows = adapter.rows(next(e for e in remote if e.key == "2106"), config)
    assert [r["notes"] for r in rows] == [r["notes"] for r in adapter.rows(next(e for e in local if e.key == "2106"),
                                                                           config)]
