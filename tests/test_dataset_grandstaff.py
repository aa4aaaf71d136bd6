"""GrandStaff on its layout replica: the official "types" partition (and the rule without
it), the import end to end, rows checked by hand against the **kern, and a rerun."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.replicas import make, upload
from tests.replicas.grandstaff import CORRUPT_IMAGE, EXCERPTS, FOLDER, MISSING, UNREADABLE_KERN

KEY_PREFIX = FOLDER.removeprefix("grandstaff_dataset/")


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return make("grandstaff", tmp_path_factory.mktemp("grandstaff-replica"))


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("grandstaff-import")
    return out, import_local("grandstaff", replica.src, str(out))


def read_rows(out: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    tables = [pq.read_table(f) for f in sorted(Path(out, "shards").glob("*.parquet"))]
    return {r["example"]: r for table in tables for r in table.to_pylist()}


def kern_pitches(kern: str) -> list[str]:
    """Every note of a **kern text as step+octave, read by hand: 'c' is C4, 'cc' C5, 'C' C3, 'CC' C2."""
    out = []
    for line in kern.splitlines():
        if not line or line[0] in "*!=":
            continue
        for token in (t for field in line.split("\t") for t in field.split(" ") if t != "."):
            letters = re.search(r"([A-Ga-g])\1*", token)
            if letters is None:  # a rest
                continue
            run = letters.group(0)
            octave = 3 + len(run) if run[0].islower() else 4 - len(run)
            out.append(f"{run[0].upper()}{octave}")
    return out


def test_scan_keeps_the_types_partition(replica):
    from unimusic import datasets

    examples, errors = datasets.get("grandstaff").scan(replica.src)
    assert len(examples) == replica.examples
    partition = Path(replica.src, "partitions_grandstaff", "types")
    official = {Path(line).stem: f.stem for f in partition.glob("*.txt") for line in f.read_text().split()}
    del official[MISSING]
    assert {e.key: e.split for e in examples} == {f"{KEY_PREFIX}/{name}": split for name, split in official.items()}
    assert errors == [{"path": str(Path(replica.src, FOLDER, MISSING + ".krn")), "stage": "scan",
                       "message": "listed in partitions_grandstaff/types/train.txt but no such excerpt"}]
    only_bekern = next(e for e in examples if e.key.endswith("original_m-4-5"))
    assert only_bekern.file("score").endswith(".bekrn") and only_bekern.meta_dict["distorted_image"] is False
    # The bare archive (no partition lists): originals are test, the transpositions train/val.
    bare, errors = datasets.get("grandstaff").scan(str(Path(replica.src, "grandstaff_dataset")))
    assert not errors and len(bare) == len(EXCERPTS)
    originals = {f"{KEY_PREFIX}/{n}" for n in EXCERPTS if n.startswith("original")}
    assert {e.key for e in bare if e.split == "test"} == originals
    assert {e.split for e in bare if "original" not in e.key} <= {"train", "val"}


def test_list_lines_resolve_whatever_their_extension_and_folders():
    from unimusic.datasets.grandstaff import _resolve

    index = {"chopin/mazurkas/m/original_m-1-5": {}}
    for line in ("grandstaff_dataset/chopin/mazurkas/m/original_m-1-5.krn", "chopin/mazurkas/m/original_m-1-5",
                 "Data/GrandStaff/grandstaff_dataset/chopin/mazurkas/m/original_m-1-5.ekrn\n",
                 "chopin/mazurkas/m/original_m-1-5_distorted.jpg"):
        assert _resolve(line, index) == "chopin/mazurkas/m/original_m-1-5"
    assert _resolve("chopin/mazurkas/m/original_m-9-9.krn", index) is None


def test_a_folder_without_excerpts_is_refused(tmp_path):
    from unimusic import datasets
    from unimusic.errors import InputError

    (tmp_path / "README.txt").write_text("hello")
    with pytest.raises(InputError, match="not a GrandStaff folder"):
        datasets.get("grandstaff").scan(str(tmp_path))


def test_import_end_to_end(replica, imported):
    out, manifest = imported
    assert manifest["examples"] == replica.examples and manifest["dataset"] == "grandstaff"
    assert "research-only" in manifest["licence"] and manifest["commercial_use"] is False
    assert manifest["rows"] == replica.good == len(read_rows(out))
    assert manifest["rows_per_split"] == replica.rows_per_split
    assert manifest["rows_with"] == {"image": replica.good, "lmx": replica.good, "midi": 0, "audio": 0}
    assert manifest["failures"] == replica.errors == len(manifest["errors"])
    by_file = {Path(e["path"]).relative_to(replica.src).as_posix(): e for e in manifest["errors"]}
    assert set(by_file) == {f"{FOLDER}/{MISSING}.krn", f"{FOLDER}/{UNREADABLE_KERN}.krn",
                            f"{FOLDER}/{CORRUPT_IMAGE}.jpg"}
    assert "cannot parse as kern" in by_file[f"{FOLDER}/{UNREADABLE_KERN}.krn"]["message"]
    assert by_file[f"{FOLDER}/{CORRUPT_IMAGE}.jpg"]["message"] == "unreadable image"


def test_rows_by_hand(replica, imported):
    import cv2

    from tests.replicas.grandstaff import corpus_kern, excerpt
    from unimusic.datasets.grandstaff import grand_staff_lmx, kern_from_bekern
    from unimusic.tokens.lmx import LmxCodec

    rows = read_rows(imported[0])
    row = rows[f"{KEY_PREFIX}/original_m-2-3"]
    kern = Path(replica.src, FOLDER, "original_m-2-3.krn").read_text()
    tokens = [LmxCodec().tokens[i] for i in row["lmx"]]
    assert tokens == grand_staff_lmx(kern.encode(), source="x.krn")
    # By hand: one piano part on two staves (treble, bass), four sharps, 3/4, every note of the **kern.
    assert not any(t.startswith("part:") for t in tokens) and {"staff:1", "staff:2"} <= set(tokens)
    assert tokens[:9] == ["measure", "key:fifths:4", "time", "beats:3", "beat-type:4", "clef:G2", "staff:1", "clef:F4",
                          "staff:2"] and tokens.count("measure") == 2
    pitches = [t for t in tokens if re.fullmatch(r"[A-G]\d", t)]
    assert Counter(pitches) == Counter(kern_pitches(kern)) and len(pitches) == 22
    assert row["split"] == "test" and row["work_id"] == f"grandstaff/{KEY_PREFIX}"
    image = cv2.imdecode(np.frombuffer(row["image_png"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.ndim == 2 and image.shape == (row["height"], row["width"])
    assert image.shape[0] % 16 == 0 and image.shape[1] % 16 == 0
    # The excerpt that has only .bekrn: the same LMX as its **kern.
    only_bekern = rows[f"{KEY_PREFIX}/original_m-4-5"]
    kern = excerpt(corpus_kern(), 4, 5)
    assert [LmxCodec().tokens[i] for i in only_bekern["lmx"]] == grand_staff_lmx(kern.encode(), source="y.krn")
    assert kern_from_bekern(Path(replica.src, FOLDER, "original_m-2-3.bekrn").read_bytes(), source="z").decode() == \
        Path(replica.src, FOLDER, "original_m-2-3.krn").read_text()


def test_rerun_writes_no_shard(replica, imported):
    from unimusic.datasets.importer import import_local

    out, manifest = imported
    shards = sorted(Path(out, "shards").glob("*"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    again = import_local("grandstaff", replica.src, str(out))
    assert sorted(Path(out, "shards").glob("*")) == shards and {p: p.stat().st_mtime_ns for p in shards} == mtimes
    assert again["rows"] == manifest["rows"] and again["errors"] == manifest["errors"]


def test_scan_and_rows_from_s3(s3_server, replica):
    from unimusic import datasets
    from unimusic.datasets.base import ImportConfig

    root = Path(replica.src)
    upload(root, endpoint=s3_server, bucket="grandstaff-replica", prefix="gs")
    adapter = datasets.get("grandstaff")
    examples, errors = adapter.scan("s3://grandstaff-replica/gs/")
    local, local_errors = adapter.scan(replica.src)
    assert [(e.key, e.split, e.meta) for e in examples] == [(e.key, e.split, e.meta) for e in local]
    assert [e["path"] for e in errors] == [f"s3://grandstaff-replica/gs/{FOLDER}/{MISSING}.krn"] == \
        [f"s3://grandstaff-replica/gs/{Path(e['path']).relative_to(root).as_posix()}" for e in local_errors]
    (row,) = adapter.rows(next(e for e in examples if e.key.endswith("original_m-4-5")), ImportConfig())
    assert row["split"] == "test" and row["lmx"] and row["image_png"]
