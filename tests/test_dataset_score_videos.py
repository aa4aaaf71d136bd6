"""Score-video metadata (U-MusT's YouTube table) on its layout replica: composer normalization
rule by rule, scan (ids, splits, errors), import end to end, the videos.csv the video pipeline
reads, other SRC forms, rerun."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.replicas.score_videos import COLUMNS, TEST_INCLUDED, VIDEOS, make


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("score-videos-replica")


@pytest.fixture(scope="module")
def replica(root):
    return make(root)


@pytest.fixture(scope="module")
def expected(replica, root):
    return json.loads((root / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("score-videos-imported") / "out"
    return out, import_local("score-videos", replica.src, str(out))


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def table(replica) -> Path:
    return Path(replica.src, "metadata", "ytsv_metadata.csv")


# -- composer names ------------------------------------------------------------------------


def test_initials_expand_to_the_canonical_name():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("J.S. Bach") == "Johann Sebastian Bach"
    assert normalize_composer("JS Bach") == "Johann Sebastian Bach"
    assert normalize_composer("C.P.E. Bach") == "Carl Philipp Emanuel Bach"
    assert normalize_composer("F. Chopin") == "Frédéric Chopin"


def test_last_first_order_case_accents_and_spaces():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("Bach, Johann Sebastian") == "Johann Sebastian Bach"
    assert normalize_composer("Beethoven, Ludwig van") == "Ludwig van Beethoven"
    assert normalize_composer("BACH") == "Johann Sebastian Bach"
    assert normalize_composer("Frederic Chopin") == "Frédéric Chopin"
    assert normalize_composer("  Frédéric \t Chopin ") == "Frédéric Chopin"


def test_a_bare_surname_is_the_table_s_most_frequent_composer_of_that_name():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("Chopin") == "Frédéric Chopin"
    assert normalize_composer("Schumann") == "Robert Schumann"


def test_other_spellings_in_the_table():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("Fryderyk Chopin") == "Frédéric Chopin"
    assert normalize_composer("Georg Friedrich Händel") == "George Frideric Handel"
    assert normalize_composer("Feruccio Busoni") == "Ferruccio Busoni"  # a typo in ytsv_metadata.csv
    assert normalize_composer("Sergei Rachmaninov") == "Sergei Rachmaninoff"


def test_another_composer_of_the_same_surname_stays_apart():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("Michael Haydn") == "Michael Haydn"
    assert normalize_composer("Clara Schumann") == "Clara Schumann"


def test_arrangers_and_co_composers_keep_their_parts():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("F. Chopin / Leopold Godowsky") == "Frédéric Chopin/Leopold Godowsky"
    assert normalize_composer("Albert Dietrich & SCHUMANN and Brahms") == \
        "Albert Dietrich & Robert Schumann & Johannes Brahms"


def test_unknown_names_are_tidied_not_invented():
    from unimusic.datasets.score_videos import normalize_composer

    assert normalize_composer("strauss, richard") == "Richard Strauss"
    assert normalize_composer("MANUEL DE FALLA") == "Manuel de Falla"
    assert normalize_composer("JOHANN STRAUSS II") == "Johann Strauss II"
    assert normalize_composer("George M Cohan") == "George M. Cohan"
    assert normalize_composer("Simeon ten Holt") == "Simeon ten Holt"
    assert normalize_composer("") == ""


# -- the replica ---------------------------------------------------------------------------


def test_scan_lists_videos_with_their_splits_and_errors(replica, expected):
    from unimusic import datasets

    examples, errors = datasets.get("score-videos").scan(replica.src)
    assert len(examples) == replica.examples and [e.key for e in examples] == list(expected)
    assert {e.key: e.split for e in examples} == {k: v["split"] for k, v in expected.items()}
    assert all(expected[k]["split"] == "test" for k in TEST_INCLUDED)
    assert {e.key for e in examples if e.file("video")} == set(VIDEOS)
    assert all(Path(e.file("video")).name == f"{e.key}.mp4" for e in examples if e.file("video"))
    # Two uploads of one piece, composer spelled two ways: one work, one split.
    by_key = {e.key: e for e in examples}
    for a, b in (("bWv84x5aaaA", "bWv84x5bbbB"), ("maz62eeee_E", "maz62ffff_F")):
        assert by_key[a].meta_dict["composer"] != by_key[b].meta_dict["composer"]
        assert by_key[a].work == by_key[b].work and by_key[a].split == by_key[b].split
    assert [(e["path"].rsplit("#", 1)[1], e["stage"], e["message"]) for e in errors] == [
        ("line=5", "scan", "empty YT Id"), ("line=12", "scan", "YT Id op18n1dd-dD already on line 6")]
    assert all(e["path"].startswith(str(table(replica))) for e in errors)


def test_import_end_to_end(replica, imported, expected):
    from unimusic.datasets.score_videos import INFO

    out, manifest = imported
    rows = read_rows(out)
    assert manifest["examples"] == replica.examples and manifest["rows"] == len(rows) == replica.good
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | replica.rows_per_split
    assert manifest["rows_with"] == {"image": 0, "lmx": 0, "midi": 0, "audio": 0}  # metadata only
    assert manifest["failures"] == replica.errors and all(str(table(replica)) in e["path"] for e in manifest["errors"])
    assert manifest["licence"] == INFO.licence and "CC BY-NC-SA" in INFO.licence and not manifest["commercial_use"]
    assert manifest["extras"] == [str(out / "videos.csv")]  # the adapter's hook: the video pipeline's CSV
    raw = {}  # the first row of each id (a repeated id is a scan error)
    for r in csv.DictReader(io.StringIO(table(replica).read_text(encoding="utf-8"))):
        raw.setdefault(r["YT Id"], r)
    for row in rows:
        meta, vid = json.loads(row["meta"]), row["example"]
        assert meta["id"] == vid and meta["url"] == f"https://www.youtube.com/watch?v={vid}"
        assert meta["composer"] == raw[vid]["Composer Full Name"] and meta["title"] == raw[vid]["Title of Video"]
        assert meta["composer_normalized"] == expected[vid]["composer"]
        assert (meta["video"] is not None) == (vid in VIDEOS) and row["source"] == (meta["video"] or meta["url"])
        assert row["image_png"] is row["lmx"] is row["notes"] is row["audio_flac"] is None


def test_videos_csv_is_what_the_video_pipeline_reads(replica, imported, expected, tmp_path):
    from unimusic import datasets
    from unimusic.datasets.score_videos import write_video_metadata
    from unimusic.video.ingest import read_metadata

    adapter = datasets.get("score-videos")
    examples, _ = adapter.scan(replica.src)
    written = adapter.extras(examples, str(tmp_path / "out"))
    assert written == [str(tmp_path / "out" / "videos.csv")]
    metadata = read_metadata(written[0])
    assert {k: (v["composer"], v["title"]) for k, v in metadata.items()} == {
        k: (v["composer"], v["title"]) for k, v in expected.items()}
    assert metadata["maz62eeee_E"]["instrumentation"] == "piano solo"
    # The import wrote the same file; the imported rows carry the same metadata.
    assert read_metadata(str(imported[0] / "videos.csv")) == metadata
    write_video_metadata(read_rows(imported[0]), str(tmp_path / "from-rows.csv"))
    assert read_metadata(str(tmp_path / "from-rows.csv")) == metadata


def test_src_may_be_the_csv_and_a_split_column_wins(replica, tmp_path):
    from unimusic import datasets
    from unimusic.errors import InputError

    adapter = datasets.get("score-videos")
    examples, errors = adapter.scan(str(table(replica)))
    assert len(examples) == replica.examples and len(errors) == 2 and not any(e.file("video") for e in examples)
    rows = list(csv.DictReader(io.StringIO(table(replica).read_text(encoding="utf-8"))))
    ids = [r["YT Id"] for r in rows if r["YT Id"]][:3]
    with open(tmp_path / "ytsv_metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "split"])
        writer.writeheader()
        writer.writerows(dict(r, split=s) for r, s in zip(rows, ("validation", "test", "holdout")))
    examples, errors = adapter.scan(str(tmp_path))
    assert [(e.key, e.split) for e in examples] == [(ids[0], "val"), (ids[1], "test")]
    assert len(errors) == 1 and "holdout" in errors[0]["message"]
    (tmp_path / "ytsv_metadata.csv").write_text("id,name\nabc,def\n")
    with pytest.raises(InputError, match="missing column"):
        adapter.scan(str(tmp_path))
    (tmp_path / "ytsv_metadata.csv").unlink()
    with pytest.raises(InputError, match="ytsv_metadata.csv"):
        adapter.scan(str(tmp_path))


def test_rerun_writes_no_new_shard(replica, imported):
    from unimusic.datasets.importer import import_local

    out, manifest = imported
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = import_local("score-videos", replica.src, str(out))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    assert again["rows"] == manifest["rows"]
