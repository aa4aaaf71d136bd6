"""OLiMPiC on its layout replica: official splits of both subsets, the import end to end,
one row checked against its files, and a rerun that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.replicas import make, upload
from tests.replicas.olimpic import BAD_TOKEN, CORRUPT_IMAGE, MISSING, UNKNOWN_TOKEN

SUBSETS = {"synthetic": "olimpic-1.0-synthetic", "scanned": "olimpic-1.0-scanned"}


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return make("olimpic", tmp_path_factory.mktemp("olimpic-replica"))


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("olimpic-import")
    return out, import_local("olimpic", replica.src, str(out))


def listed(replica) -> dict[str, str]:
    """{subset/sample: our split} as the replica's split files say."""
    out = {}
    for subset, folder in SUBSETS.items():
        for f in Path(replica.src, folder).glob("samples.*.txt"):
            split = {"dev": "val"}.get(f.name.split(".")[1], f.name.split(".")[1])
            out.update({f"{subset}/{line}": split for line in f.read_text().split()})
    return out


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted(Path(out, "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_scan_keeps_both_subsets_official_splits(replica):
    from unimusic import datasets

    examples, errors = datasets.get("olimpic").scan(replica.src)
    assert len(examples) == replica.examples
    expected = listed(replica)
    del expected[f"synthetic/{MISSING}"]
    assert {e.key: e.split for e in examples} == expected
    assert {e.split for e in examples if e.key.startswith("scanned/")} == {"val", "test"}  # no scanned train
    assert errors == [{"path": str(Path(replica.src, SUBSETS["synthetic"], MISSING + ".png")), "stage": "scan",
                       "message": "listed in olimpic-1.0-synthetic/samples.train.txt but missing"}]
    # One subset folder on its own is a source too; its label comes from the folder name.
    alone, errors = datasets.get("olimpic").scan(str(Path(replica.src, SUBSETS["scanned"])))
    assert not errors and sorted(e.key for e in alone) == sorted(k for k in expected if k.startswith("scanned/"))


def test_a_folder_without_split_lists_is_refused(tmp_path):
    from unimusic import datasets
    from unimusic.errors import InputError

    (tmp_path / "samples").mkdir()
    with pytest.raises(InputError, match="not an OLiMPiC folder"):
        datasets.get("olimpic").scan(str(tmp_path))


def test_import_end_to_end(replica, imported):
    out, manifest = imported
    assert manifest["examples"] == replica.examples and manifest["dataset"] == "olimpic"
    assert manifest["licence"].startswith("CC BY-SA") and manifest["commercial_use"] is True
    assert manifest["rows"] == replica.good == len(read_rows(out))
    assert manifest["rows_per_split"] == replica.rows_per_split
    assert manifest["rows_with"] == {"image": replica.good, "lmx": replica.good, "midi": 0, "audio": 0}
    assert manifest["failures"] == replica.errors == len(manifest["errors"])
    by_file = {Path(e["path"]).relative_to(replica.src).as_posix(): e for e in manifest["errors"]}
    synthetic = SUBSETS["synthetic"]
    assert set(by_file) == {f"{synthetic}/{MISSING}.png", f"{synthetic}/{CORRUPT_IMAGE}.png",
                            f"{synthetic}/{BAD_TOKEN}.lmx"}
    assert by_file[f"{synthetic}/{CORRUPT_IMAGE}.png"]["message"] == "unreadable image"
    assert UNKNOWN_TOKEN in by_file[f"{synthetic}/{BAD_TOKEN}.lmx"]["message"]


def test_one_row_by_hand(replica, imported):
    import cv2

    from unimusic.tokens.lmx import LmxCodec

    rows = {r["example"]: r for r in read_rows(imported[0])}
    sample = "samples/1002/p1-s1"  # listed in both subsets' samples.dev.txt
    for subset, folder in SUBSETS.items():
        row = rows[f"{subset}/{sample}"]
        assert sample in Path(replica.src, folder, "samples.dev.txt").read_text().split() and row["split"] == "val"
        tokens = Path(replica.src, folder, sample + ".lmx").read_text().split()
        assert [LmxCodec().tokens[i] for i in row["lmx"]] == tokens
        image = cv2.imdecode(np.frombuffer(row["image_png"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.ndim == 2 and image.dtype == np.uint8 and image.shape == (row["height"], row["width"])
        assert image.shape[0] % 16 == 0 and image.shape[1] % 16 == 0 and image.min() < 64 < 192 < image.max()
        assert row["variant"] == f"olimpic-{subset}" and row["piece_id"] == f"olimpic/{subset}/{sample}"
        assert row["work_id"] == "olimpic/score-1002"  # a score's scan and engraving stay together
        assert json.loads(row["meta"])["subset"] == subset and row["source"].endswith(sample + ".lmx")


def test_a_crop_with_other_staves_than_its_lmx_is_refused(imported):
    from unimusic.datasets.base import staff_count, system_crop
    from unimusic.errors import InputError

    row = read_rows(imported[0])[0]
    image = Path(row["source"]).with_suffix(".png").read_bytes()  # the sample's own picture
    tokens = ["clef:G2", "staff:1", "clef:F4", "staff:2"]
    system_crop(image, source="x.png", staves=staff_count(tokens))  # a grand staff, as drawn
    with pytest.raises(InputError, match=r"x.png: image: .*\[2\] staves.*LMX has 3"):
        system_crop(image, source="x.png", staves=staff_count(tokens + ["staff:3"]))


def test_rerun_writes_no_shard(replica, imported):
    from unimusic.datasets.importer import import_local

    out, manifest = imported
    shards = sorted(Path(out, "shards").glob("*"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    again = import_local("olimpic", replica.src, str(out))
    assert sorted(Path(out, "shards").glob("*")) == shards and {p: p.stat().st_mtime_ns for p in shards} == mtimes
    assert again["rows"] == manifest["rows"] and again["errors"] == manifest["errors"]


def test_scan_and_rows_from_s3(s3_server, replica):
    from unimusic import datasets
    from unimusic.datasets.base import ImportConfig

    root = Path(replica.src)
    upload(root, endpoint=s3_server, bucket="olimpic-replica", prefix="dl")
    adapter = datasets.get("olimpic")
    examples, errors = adapter.scan("s3://olimpic-replica/dl")
    local, local_errors = adapter.scan(replica.src)
    assert [(e.key, e.split) for e in examples] == [(e.key, e.split) for e in local]
    assert [e["path"] for e in errors] == ["s3://olimpic-replica/dl/" + Path(e["path"]).relative_to(root).as_posix()
                                           for e in local_errors]
    example = next(e for e in examples if e.key == "scanned/samples/1003/p1-s1")
    assert example.file("image") == "s3://olimpic-replica/dl/olimpic-1.0-scanned/samples/1003/p1-s1.png"
    (row,) = adapter.rows(example, ImportConfig())
    assert row["split"] == "test" and row["lmx"] and row["image_png"]
