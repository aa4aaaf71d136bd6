"""The tokenize stage on Ray Data: corpus shards in, the same rows plus image/audio codes out."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from unimusic.corpus import CorpusConfig
from unimusic.errors import InputError
from unimusic.music21_corpus import corpus_root

# One one-row piece and one seven-row chorale, a shard each: about 27 s of audio.
PIECES = ["demos/multiple-verses.xml", "bach/bwv66.6.mxl"]
ROW_KEY = ("piece_id", "variant", "system", "occurrence")


def _build_corpus(sources: list[str], out: Path) -> dict:
    """A real corpus (engraved + synthesized by the corpus code), without Ray."""
    from unimusic.corpus import build_shard, plan_shards, write_manifest

    config = CorpusConfig(pieces_per_shard=1, piano_reductions=False)
    results = [build_shard(spec, str(out), config) for spec in plan_shards(sources, config)]
    return write_manifest(str(out), results, config, inputs="test")


def _read_rows(out_dir: str, manifest: dict) -> list[dict]:
    import pyarrow.parquet as pq

    from unimusic import storage

    rows = []
    for shard in manifest["shards"]:
        data = storage.read_bytes(storage.join(out_dir, "shards", shard["name"]))
        rows += pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    """Random-init tiny tokenizers (two image ones, one audio one) saved like real weights."""
    import torch

    from unimusic.models.audio_codec import PRESETS as CODEC_PRESETS
    from unimusic.models.audio_codec import AudioCodec, build_codec, save_codec
    from unimusic.models.rqvae import PRESETS, build_rqvae, save_rqvae

    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, seed in (("image", 0), ("image2", 1)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_rqvae(build_rqvae(PRESETS["tiny"]), PRESETS["tiny"], folder / name)
        paths[name] = str(folder / name)
    save_codec(AudioCodec(build_codec(CODEC_PRESETS["tiny"], seed=0), CODEC_PRESETS["tiny"]), folder / "audio")
    paths["audio"] = str(folder / "audio")
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("corpus")
    manifest = _build_corpus([str(corpus_root() / p) for p in PIECES], out)
    assert manifest["failures"] == 0 and len(manifest["shards"]) == 2
    return {"dir": str(out), "manifest": manifest}


@pytest.fixture(scope="module")
def tokenized(corpus, weights, tmp_path_factory, ray_session) -> dict:
    from pipelines.tokenize import tokenize_corpus

    out = str(tmp_path_factory.mktemp("tokens"))
    manifest = tokenize_corpus(corpus_dir=corpus["dir"], out_dir=out, image_weights=weights["image"],
                               audio_weights=weights["audio"], concurrency=2)
    return {"dir": out, "manifest": manifest}


def test_codes_are_the_models_codes(corpus, tokenized, weights):
    import pyarrow.parquet as pq
    import torch

    from unimusic.models.audio_codec import load_codec
    from unimusic.models.rqvae import load_rqvae
    from unimusic.models.shipped import tokenizer_hash
    from unimusic.render.synthesize import decode_audio
    from unimusic.tokenize import decode_audio_codes, decode_image_codes, decode_png_gray

    model, config = load_rqvae(weights["image"])
    codec = load_codec(weights["audio"])
    image_hash, audio_hash = tokenizer_hash(weights["image"]), tokenizer_hash(weights["audio"])
    rows = _read_rows(tokenized["dir"], tokenized["manifest"])
    assert rows
    for row in rows:  # shapes of every row
        image, audio = decode_image_codes(row), decode_audio_codes(row)
        assert image.dtype == np.int16 and image.shape == (config.codebooks, row["height"] // 16, row["width"] // 16)
        samples, sr = decode_audio(row["audio_flac"])
        frames = math.ceil(len(samples) * 44100 / sr / codec.hop)
        assert audio.shape == (codec.codebooks_used, frames) and list(row["audio_code_shape"]) == [codec.codebooks_used, frames]
        assert row["image_tokenizer"] == image_hash and row["audio_tokenizer"] == audio_hash
        assert row["audio_frame_rate"] == pytest.approx(codec.frame_rate)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actors: the same float path
    try:
        for row in (rows[0], rows[len(rows) // 2], rows[-1]):  # the models really ran on these inputs
            expected = model.encode(decode_png_gray(row["image_png"])[None])[0].numpy()
            np.testing.assert_array_equal(decode_image_codes(row), expected)
            samples, sr = decode_audio(row["audio_flac"])
            np.testing.assert_array_equal(decode_audio_codes(row), codec.encode(samples, sr))
    finally:
        torch.set_num_threads(threads)
    name = tokenized["manifest"]["shards"][0]["name"]
    meta = json.loads(pq.read_schema(Path(tokenized["dir"]) / "shards" / name).metadata[b"unimusic"])
    assert meta["image_tokenizer"] == image_hash and meta["audio_tokenizer"] == audio_hash
    assert meta["config_hash"] == corpus["manifest"]["config_hash"] and meta["tokset"] == tokenized["manifest"]["tokset"]


def test_every_row_once_and_manifest(corpus, tokenized, weights):
    import pyarrow.parquet as pq

    manifest = tokenized["manifest"]
    rows_in = _read_rows(corpus["dir"], corpus["manifest"])
    rows_out = _read_rows(tokenized["dir"], manifest)
    key = lambda r: tuple(r[k] for k in ROW_KEY)  # noqa: E731
    assert manifest["failures"] == 0 and manifest["rows"] == len(rows_out) == len(rows_in) - manifest["failures"]
    assert Counter(map(key, rows_out)) == Counter(map(key, rows_in)) and len(set(map(key, rows_out))) == len(rows_out)
    by_key = {key(r): r for r in rows_in}
    for row in rows_out:  # every input column kept as it was
        assert {k: row[k] for k in by_key[key(row)]} == by_key[key(row)]
    assert manifest["shards_written"] == 2 and manifest["shards_skipped"] == 0
    assert manifest["source"]["config_hash"] == corpus["manifest"]["config_hash"] == manifest["config_hash"]
    assert manifest["tokenizers"]["image"]["weights"] == weights["image"]
    assert manifest["tokenizers"]["image"]["kind"] == "rqvae" and manifest["tokenizers"]["audio"]["kind"] == "audio_codec"
    assert manifest["rows_per_split"] == corpus["manifest"]["rows_per_split"]
    assert manifest["audio_seconds"] > 20
    on_disk = json.loads((Path(tokenized["dir"]) / "manifest.json").read_text())
    assert on_disk["rows"] == manifest["rows"] and on_disk["tokset"] == manifest["tokset"]
    for shard in on_disk["shards"]:
        data = (Path(tokenized["dir"]) / "shards" / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        assert shard["name"] == shard["source"].replace(".parquet", f"-{manifest['tokset']}.parquet")
    assert pq.read_table(Path(tokenized["dir"]) / "errors.parquet").num_rows == 0


def test_rerun_skips_every_shard(corpus, tokenized, weights):
    from pipelines.tokenize import tokenize_corpus

    shards = Path(tokenized["dir"]) / "shards"
    before = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    again = tokenize_corpus(corpus_dir=corpus["dir"], out_dir=tokenized["dir"], image_weights=weights["image"],
                            audio_weights=weights["audio"])
    assert again["shards_skipped"] == len(corpus["manifest"]["shards"]) and again["shards_written"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in shards.iterdir()} == before
    assert again["rows"] == tokenized["manifest"]["rows"] and again["shards"] == tokenized["manifest"]["shards"]


def test_other_weights_write_another_shard_set(corpus, tokenized, weights, tmp_path):
    from pipelines.tokenize import tokenize_corpus
    from unimusic.tokenize import decode_audio_codes, decode_image_codes, tokenizer_set

    out = tmp_path / "tokens"
    shutil.copytree(tokenized["dir"], out)
    manifest = tokenize_corpus(corpus_dir=corpus["dir"], out_dir=str(out), image_weights=weights["image2"],
                               audio_weights=None, concurrency=1)
    first = {s["name"] for s in tokenized["manifest"]["shards"]}
    names = {s["name"] for s in manifest["shards"]}
    assert len(names) == 2 and not names & first and manifest["tokset"] != tokenized["manifest"]["tokset"]
    assert manifest["shards_written"] == 2 and manifest["other_shard_files"] == 2
    rows = _read_rows(str(out), manifest)
    assert len(rows) == tokenized["manifest"]["rows"]
    assert all(decode_audio_codes(r) is None and r["audio_tokenizer"] is None for r in rows)
    assert all(decode_image_codes(r) is not None for r in rows) and manifest["tokenizers"]["audio"] is None
    # the name depends on each tokenizer and nothing else
    assert tokenizer_set("a", "b") == tokenizer_set("a", "b") != tokenizer_set("a", "c") != tokenizer_set(None, "c")


def test_corrupt_rows_are_recorded_and_the_rest_written(corpus, weights, tmp_path, ray_session):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.tokenize import tokenize_corpus

    shard = max(corpus["manifest"]["shards"], key=lambda s: s["rows"])
    table = pq.read_table(Path(corpus["dir"]) / "shards" / shard["name"]).slice(0, 3)
    pngs, flacs = table.column("image_png").to_pylist(), table.column("audio_flac").to_pylist()
    pngs[0] = b"\x89PNG but not really"
    flacs[1] = b"fLaC" + bytes(100)
    table = table.set_column(table.schema.get_field_index("image_png"), "image_png", pa.array(pngs, pa.binary()))
    table = table.set_column(table.schema.get_field_index("audio_flac"), "audio_flac", pa.array(flacs, pa.binary()))
    src = tmp_path / "corrupt"
    (src / "shards").mkdir(parents=True)
    pq.write_table(table, src / "shards" / "shard-corrupt.parquet")
    (src / "shards" / "shard-broken.parquet").write_bytes(b"PAR1 this is no parquet file")
    (src / "manifest.json").write_text(json.dumps({
        "config_hash": corpus["manifest"]["config_hash"], "rows": 3,
        "shards": [{"name": "shard-corrupt.parquet", "rows": 3}, {"name": "shard-broken.parquet", "rows": 1}],
    }))
    out = tmp_path / "tokens"
    manifest = tokenize_corpus(corpus_dir=str(src), out_dir=str(out), image_weights=weights["image"],
                               audio_weights=weights["audio"], concurrency=1)
    errors = {(Path(e["path"]).name, e["stage"]) for e in manifest["errors"]}
    assert errors == {("shard-corrupt.parquet#row=0", "tokenize-image"), ("shard-corrupt.parquet#row=1", "tokenize-audio"),
                      ("shard-broken.parquet", "tokenize-read")}
    assert all(e["message"] for e in manifest["errors"]) and manifest["failures"] == 3
    assert manifest["rows"] == 1 and manifest["input_rows"] == 3 and len(manifest["shards"]) == 1
    rows = _read_rows(str(out), manifest)
    assert [r["system"] for r in rows] == [table.column("system")[2].as_py()]
    assert pq.read_table(out / "errors.parquet").num_rows == 3


def test_not_a_corpus_is_refused(tmp_path, tokenized, weights):
    from pipelines.tokenize import tokenize_corpus

    for src, words in ((tmp_path / "nothing", "manifest.json"), (Path(tokenized["dir"]), "already")):
        with pytest.raises(InputError) as info:
            tokenize_corpus(corpus_dir=str(src), out_dir=str(tmp_path / "out"), image_weights=weights["image"],
                            audio_weights=None)
        assert info.value.source == str(src) and words in info.value.problem
    with pytest.raises(InputError):  # audio weights given as image weights
        tokenize_corpus(corpus_dir=tokenized["manifest"]["source"]["corpus"], out_dir=str(tmp_path / "out"),
                        image_weights=weights["audio"], audio_weights=None)


def test_cli_tokenize(corpus, tokenized, weights, tmp_path, capsys):
    from unimusic.cli import main

    code = main(["corpus", "tokenize", corpus["dir"], "--out", tokenized["dir"], "--image-weights", weights["image"],
                 "--audio-weights", weights["audio"]])
    out = capsys.readouterr().out
    assert code == 0 and tokenized["dir"] in out.splitlines()[-1] and tokenized["manifest"]["tokset"] in out
    missing = tmp_path / "missing"
    code = main(["corpus", "tokenize", str(missing), "--out", str(tmp_path / "o"), "--image-weights", weights["image"],
                 "--no-audio"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("unimusic: error: ") and str(missing) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["corpus", "tokenize", corpus["dir"], "--out", str(tmp_path / "o"), "--no-image", "--no-audio"]) == 2


def test_s3_round_trip(s3_server, ray_session, corpus, weights):
    import boto3

    from pipelines.tokenize import tokenize_corpus
    from unimusic import storage

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="tokenize-test")
    shard = min(corpus["manifest"]["shards"], key=lambda s: s["rows"])  # the one-row piece
    base = Path(corpus["dir"])
    s3.put_object(Bucket="tokenize-test", Key=f"corpus/shards/{shard['name']}", Body=(base / "shards" / shard["name"]).read_bytes())
    s3.put_object(Bucket="tokenize-test", Key="corpus/manifest.json",
                  Body=json.dumps(dict(corpus["manifest"], shards=[shard])).encode())
    out = "s3://tokenize-test/tokens"
    manifest = tokenize_corpus(corpus_dir="s3://tokenize-test/corpus", out_dir=out, image_weights=weights["image"],
                               audio_weights=weights["audio"], concurrency=1)
    assert manifest["rows"] == shard["rows"] and manifest["failures"] == 0
    assert json.loads(storage.read_bytes(f"{out}/manifest.json"))["tokset"] == manifest["tokset"]
    rows = _read_rows(out, manifest)
    assert len(rows) == shard["rows"] and rows[0]["image_codes"] and rows[0]["audio_codes"]
    again = tokenize_corpus(corpus_dir="s3://tokenize-test/corpus", out_dir=out, image_weights=weights["image"],
                            audio_weights=weights["audio"])
    assert again["shards_skipped"] == 1 and again["shards_written"] == 0
