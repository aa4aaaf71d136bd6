"""ASAP import on its layout replica: scan and splits (MAESTRO's or hashed), import end to end,
measure rows checked by hand (LMX of the measures, notes of the downbeat span), the unaligned
performance, MAESTRO audio cut where ASAP cuts it, the MAESTRO root setting, rerun, S3 scan."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.replicas.asap import MAESTRO_STEM, SEGMENT_SECONDS, make

PIECE_66, PIECE_10 = "Bach/Chorales/bwv_66_6", "Bach/Chorales/bwv_10_7"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("asap-replica")


@pytest.fixture(scope="module")
def replica(root):
    return make(root)


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out = tmp_path_factory.mktemp("asap-imported") / "out"
    manifest = import_local("asap", replica.src, str(out), config=ImportConfig(**replica.config))
    return out, manifest


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: (r["example"], r["system"]))


def downbeats(replica, performer: str, folder: str) -> tuple[list[float], list[float]]:
    """(downbeats, beats before the first one) read straight from the annotation TSV."""
    text = Path(replica.src, folder, f"{performer}_annotations.txt").read_text()
    lines = [line.split("\t") for line in text.split("\n") if line]
    db = [float(t) for t, _, label in lines if label.startswith("db")]
    return db, [float(t) for t, _, label in lines if float(t) < db[0]]


def q(t: float) -> float:
    """A time on the 10 ms grid, rounded as performance_rows rounds span ends."""
    return round(t * 100) / 100


def test_scan_lists_performances_with_maestro_or_hashed_splits(replica):
    from unimusic import datasets
    from unimusic.datasets.base import hashed_split

    examples, errors = datasets.get("asap").scan(replica.src)
    assert len(examples) == replica.examples
    by_key = {e.key: e for e in examples}
    assert sorted(k.rsplit("/", 1)[1] for k in by_key) == ["Alpha01M", "Beta02M", "Broken06M", "Delta04M", "Gamma03M"]
    # Alpha01M is in MAESTRO: its split is the MAESTRO table's, and its piece's other performance follows it.
    table = list(csv.DictReader(Path(replica.src, "maestro", "maestro-v3.0.0.csv").read_text().splitlines()))
    maestro_split = {"validation": "val"}.get(table[0]["split"], table[0]["split"])
    assert maestro_split != hashed_split("Bach/Chorale_bwv_66_6")
    assert by_key[f"{PIECE_66}/Alpha01M"].split == by_key[f"{PIECE_66}/Beta02M"].split == maestro_split
    assert {by_key[f"{PIECE_10}/{p}"].split for p in ("Gamma03M", "Delta04M", "Broken06M")} == {
        hashed_split("Bach/Chorale_bwv_10_7")}
    assert {e.work for e in examples} == {"Bach/Chorale_bwv_66_6", "Bach/Chorale_bwv_10_7"}
    # Audio only where MAESTRO has the recording (ASAP's own audio_performance file is absent).
    assert [k for k, e in by_key.items() if e.file("audio")] == [f"{PIECE_66}/Alpha01M"]
    assert by_key[f"{PIECE_66}/Alpha01M"].file("audio").endswith(f"/maestro/{MAESTRO_STEM}.wav")
    assert by_key[f"{PIECE_66}/Alpha01M"].meta_dict["audio_start"] == 3.0
    assert [(Path(e["path"]).name, e["stage"]) for e in errors] == [("Lost05M.mid", "scan")]


def test_maestro_root_from_the_environment(replica, root, tmp_path, monkeypatch):
    from unimusic import datasets
    from unimusic.datasets.base import hashed_split
    from unimusic.errors import InputError

    adapter = datasets.get("asap")
    monkeypatch.setenv("UNIMUSIC_MAESTRO_ROOT", str(root / "maestro-v3.0.0"))
    examples, _ = adapter.scan(replica.src)
    alpha = next(e for e in examples if e.key.endswith("Alpha01M"))
    assert alpha.file("audio") == str(root / "maestro-v3.0.0" / f"{MAESTRO_STEM}.wav")
    monkeypatch.setenv("UNIMUSIC_MAESTRO_ROOT", str(tmp_path))  # a MAESTRO folder without the file or table
    examples, _ = adapter.scan(replica.src)
    assert not any(e.file("audio") for e in examples)
    assert {e.split for e in examples if e.work == "Bach/Chorale_bwv_66_6"} == {hashed_split("Bach/Chorale_bwv_66_6")}
    monkeypatch.setenv("UNIMUSIC_MAESTRO_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere.*UNIMUSIC_MAESTRO_ROOT"):
        adapter.scan(replica.src)


def test_an_initialized_asap_folder_reads_its_own_cut_audio(replica, tmp_path):
    import shutil

    from unimusic import datasets

    src = tmp_path / "asap"  # as after ASAP's initialize_dataset.py: the cut WAV sits beside the MIDI
    shutil.copytree(replica.src, src, symlinks=True)
    shutil.copy(Path(replica.src, "maestro", f"{MAESTRO_STEM}.wav"), src / PIECE_66 / "Alpha01M.wav")
    alpha = next(e for e in datasets.get("asap").scan(str(src))[0] if e.key.endswith("Alpha01M"))
    assert alpha.file("audio") == str(src / PIECE_66 / "Alpha01M.wav") and alpha.meta_dict["audio_start"] is None


def test_import_end_to_end(replica, imported):
    from unimusic.datasets.asap import INFO

    out, manifest = imported
    rows = read_rows(out)
    assert manifest["examples"] == replica.examples and manifest["rows"] == len(rows)
    assert manifest["rows_per_split"] == {"train": 0, "val": 0, "test": 0} | replica.rows_per_split
    aligned = [r for r in rows if json.loads(r["meta"])["aligned"]]
    assert {r["example"].rsplit("/", 1)[1] for r in aligned} == {"Alpha01M", "Beta02M", "Gamma03M"}
    assert manifest["rows_with"] == {"image": 0, "lmx": len(aligned), "midi": len(rows),
                                     "audio": sum(r["example"].endswith("Alpha01M") for r in rows)}
    assert manifest["failures"] == replica.errors == len(manifest["errors"])
    assert sorted((Path(e["path"]).name, e["stage"]) for e in manifest["errors"]) == [
        ("Broken06M.mid", "rows"), ("Lost05M.mid", "scan")]
    assert manifest["licence"] == INFO.licence and not manifest["commercial_use"]
    for r in rows:  # every row within segment_seconds unless it is a single measure
        assert r["end"] - r["start"] <= SEGMENT_SECONDS + 1e-9 or len(r["measures"] or []) == 1


def test_a_measure_row_by_hand(replica, imported):
    from unimusic.render.lmx import linearize
    from unimusic.render.slicing import slice_measures
    from unimusic.tokens.lmx import LmxCodec
    from unimusic.tokens.midi import MidiEventCodec, notes_from_midi

    rows = read_rows(imported[0])
    row = next(r for r in rows if r["example"] == f"{PIECE_10}/Gamma03M" and r["system"] == 1)
    first, last = row["measures"][0], row["measures"][-1]
    assert row["measures"] == list(range(first, last + 1)) and first > 0
    xml = Path(replica.src, PIECE_10, "xml_score.musicxml").read_bytes()
    tokens, invalid = LmxCodec().decode(row["lmx"])
    assert invalid == 0 and tokens == linearize(slice_measures(xml, first, last + 1))
    db, lead = downbeats(replica, "Gamma03M", PIECE_10)
    assert not lead and len(db) == 5  # one downbeat per measure of the score
    start, end = q(db[first]), q(db[last + 1])
    assert (row["start"], row["end"]) == (start, end)
    assert row["measure_start"] == [round(max(db[k] - start, 0), 6) for k in row["measures"]]
    notes = MidiEventCodec().normalize(notes_from_midi(Path(replica.src, PIECE_10, "Gamma03M.mid").read_bytes()))
    sounding = [n for n in notes if n.start < end and n.end > start]  # those starting in the span, and ties in
    assert sum(start <= n.start < end for n in notes) > 4 and len(row["notes"]) == len(sounding)
    assert sorted((n["pitch"], n["start"]) for n in row["notes"]) == sorted(
        (n.pitch, round(max(n.start, start) - start, 6)) for n in sounding)
    # The pickup measure: the beat before the first downbeat opens measure 0.
    pickup = next(r for r in rows if r["example"] == f"{PIECE_66}/Beta02M" and r["system"] == 0)
    db, lead = downbeats(replica, "Beta02M", PIECE_66)
    assert pickup["measures"][0] == 0 and len(lead) == 1 and pickup["start"] == q(lead[0])
    assert pickup["measure_start"][1] == round(db[0] - pickup["start"], 6)


def test_the_unaligned_performance_gives_time_segments_without_lmx(imported):
    rows = [r for r in read_rows(imported[0]) if r["example"].endswith("Delta04M")]
    assert len(rows) >= 2
    for r in rows:
        meta = json.loads(r["meta"])
        assert meta["aligned"] is False and (meta["downbeats"], meta["score_measures"]) == (4, 5)
        assert r["lmx"] is None and r["measures"] is None and r["notes"] and r["audio_flac"] is None
    assert [r["start"] for r in rows] == [i * SEGMENT_SECONDS for i in range(len(rows))]


HOP = 128  # samples per envelope frame (2.9 ms at 44.1 kHz)


def onsets(audio: np.ndarray) -> np.ndarray:
    """Where the sound gets louder, frame by frame (an onset envelope: lines up notes, not waveforms)."""
    frames = audio[: audio.size // HOP * HOP].reshape(-1, HOP)
    energy = np.log1p(1000 * np.sqrt((frames ** 2).mean(axis=1)))
    return np.maximum(np.diff(energy, prepend=energy[:1]), 0)


def test_maestro_audio_is_cut_where_asap_cuts_it(replica, imported):
    from scipy.signal import correlate

    from unimusic.render.synthesize import decode_audio, default_soundfonts, synthesize

    rows = [r for r in read_rows(imported[0]) if r["audio_flac"] is not None]
    assert rows and {r["example"] for r in rows} == {f"{PIECE_66}/Alpha01M"}
    pieces = [decode_audio(r["audio_flac"]) for r in rows]
    for r, (audio, sr) in zip(rows, pieces):
        assert sr == 44100 and audio.size == round(r["end"] * sr) - round(r["start"] * sr)
    assert all(a["end"] == b["start"] for a, b in zip(rows, rows[1:]))  # the rows tile the performance
    # Played alone on its own timeline, the performance must line up with the rows (lag ~0): not
    # with the MAESTRO recording's timeline (2.5 s later, after a stray chord), nor without ASAP's 0.5 s lead.
    reference = onsets(synthesize(Path(replica.src, PIECE_66, "Alpha01M.mid").read_bytes(),
                                  soundfont=default_soundfonts()[0]))
    audio, sr = np.concatenate([a for a, _ in pieces]), 44100
    first, margin = round(rows[0]["start"] * sr / HOP), round(0.7 * sr / HOP)
    ref = np.pad(reference, (margin, margin))[first: first + 2 * margin + audio.size // HOP]
    lag = int(np.argmax(correlate(ref, onsets(audio), mode="valid", method="fft"))) - margin
    assert abs(lag * HOP / sr) < 0.01


def test_rerun_writes_no_new_shard(replica, imported):
    from unimusic.datasets.base import ImportConfig
    from unimusic.datasets.importer import import_local

    out, manifest = imported
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = import_local("asap", replica.src, str(out), config=ImportConfig(**replica.config))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    assert again["rows"] == manifest["rows"] and again["rows_per_split"] == manifest["rows_per_split"]


def test_scan_and_rows_from_s3(s3_server, replica, root):
    import boto3

    from unimusic import datasets
    from unimusic.datasets.base import ImportConfig

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="asap-replica")
    for base, prefix in ((Path(replica.src), "asap"), (root / "maestro-v3.0.0", "asap/maestro")):
        for f in base.rglob("*"):
            if f.is_file() and "maestro" not in f.relative_to(base).parts[:1]:
                s3.put_object(Bucket="asap-replica", Key=f"{prefix}/{f.relative_to(base)}", Body=f.read_bytes())
    adapter = datasets.get("asap")
    local, local_errors = adapter.scan(replica.src)
    remote, remote_errors = adapter.scan("s3://asap-replica/asap")
    assert [(e.key, e.split, e.work, [r for r, _ in e.files]) for e in remote] == [
        (e.key, e.split, e.work, [r for r, _ in e.files]) for e in local]
    assert all(p.startswith("s3://asap-replica/asap/") for e in remote for _, p in e.files)
    assert [Path(e["path"]).name for e in remote_errors] == [Path(e["path"]).name for e in local_errors]
    config = ImportConfig(**replica.config)
    pick = lambda examples: next(e for e in examples if e.key.endswith("Alpha01M"))  # noqa: E731
    a, b = adapter.rows(pick(remote), config), adapter.rows(pick(local), config)
    assert [(r["lmx"], r["notes"], r["audio_flac"]) for r in a] == [(r["lmx"], r["notes"], r["audio_flac"]) for r in b]
