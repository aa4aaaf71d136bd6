"""The whole-workflow job: its config, and a two-node Ray cluster on this machine that loses
its preprocessing node mid-run (the slow tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIECES = 5  # one shard each


def test_presets_and_overrides():
    from pipelines.workflow import SIZES, load_config

    tiny = load_config()
    assert tiny.corpus.source == "music21" and tiny.train.preset == "tiny" and tiny.eval.peers == ("basic-pitch",)
    small = load_config(size="small")
    assert small.corpus.limit > tiny.corpus.limit and small.train.steps > 300
    cfg = load_config(overrides=["out=s3://b/run", "train.workers=2", "corpus.limit=5"], size="small")
    assert (cfg.out, cfg.train.workers, cfg.corpus.limit, cfg.train.preset) == ("s3://b/run", 2, 5, "learn")
    assert set(SIZES) == {"tiny", "small", "full"}


def test_bad_configs_are_one_line_errors(tmp_path, capsys):
    from unimusic.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: {limit: many}\n")
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "corpus.limit" in capsys.readouterr().err
    bad.write_text("resources: {train: {train: -1}}\n")
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "resources.train" in capsys.readouterr().err
    assert main(["pipeline", "--size", "huge"]) == 2
    assert "huge" in capsys.readouterr().err
    assert main(["pipeline", "train.preset=enormous", f"out={tmp_path / 'o'}"]) == 2
    assert "enormous" in capsys.readouterr().err


def test_the_cluster_example_config_loads():
    from pipelines.workflow import load_config

    path = ROOT / "cluster" / "pipeline-aws.yaml"
    cfg = load_config(str(path))
    assert cfg.out.startswith("s3://") and cfg.train.gpu
    assert cfg.resources.preprocess and cfg.resources.train


def _raylet_pids(node_manager_port: int) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "raylet" in (proc.info["name"] or "") and f"--node_manager_port={node_manager_port}" in cmd:
            pids.append(proc.info["pid"])
    return pids


@pytest.mark.slow  # two Ray nodes, a killed node, a local S3 server, three stages: a few minutes
def test_two_nodes_stage_placement_and_a_node_killed_mid_run(s3_server, tmp_path):
    """A head (training + preprocessing resources) and a second, preprocessing-only node, started as
    `ray start` starts nodes; the pipeline runs on them through RAY_ADDRESS with every artifact
    under an s3:// prefix; the second node is SIGKILLed while corpus shards are being built. The
    run still finishes: every planned shard exactly once, no row twice, the tokenized corpus as
    large as the corpus, training to its last step, the model exported and copied to S3."""
    import io

    import boto3
    import psutil
    import pyarrow.parquet as pq
    from ray.cluster_utils import Cluster

    from unimusic import storage

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="pipeline-run")
    out = "s3://pipeline-run/run1"
    # Nodes start after the S3 settings are in the environment: their workers inherit them.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 3, "resources": {"preprocess": 1, "train": 1}, "include_dashboard": False})
    port = 43000 + os.getpid() % 1000
    node = cluster.add_node(num_cpus=1, resources={"preprocess": 1}, node_manager_port=port)
    try:
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "disabled"}
        cmd = [sys.executable, "-m", "unimusic.cli", "pipeline", f"out={out}", f"local={tmp_path / 'local'}",
               f"corpus.limit={PIECES}", "corpus.overrides=[pieces_per_shard=1,piano_reductions=false]",
               "train.preset=smoke", "train.steps=12", "eval.enabled=false",
               "resources.preprocess={preprocess: 1}", "resources.train={train: 1}"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        shards = storage.join(out, "corpus", "shards")
        killed = None
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline:
            done = storage.list_files(shards, suffixes=(".json",)) if storage.exists(shards) else []
            if killed is None and done:  # building has started on both nodes: take one away
                pids = _raylet_pids(port)
                assert pids, "the second node's raylet was not found"
                for pid in pids:
                    for child in psutil.Process(pid).children(recursive=True):
                        child.kill()
                    psutil.Process(pid).kill()
                killed = len(done)
            time.sleep(0.5)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, output[-3000:]
        assert killed is not None and killed < PIECES, "the node was not killed while shards were still being built"

        corpus = json.loads(storage.read_bytes(storage.join(out, "corpus", "manifest.json")))
        assert len(corpus["shards"]) == PIECES  # a piece that fails still gets its (empty) shard
        files = storage.list_files(shards, suffixes=(".parquet",))
        assert len(files) == len(corpus["shards"]) == len({s["name"] for s in corpus["shards"]})
        columns = ["piece_id", "variant", "system", "occurrence"]
        keys = [tuple(r.values()) for f in files
                for r in pq.read_table(io.BytesIO(storage.read_bytes(f)), columns=columns).to_pylist()]
        assert len(keys) == len(set(keys)) == corpus["rows"] > 0
        tokens = json.loads(storage.read_bytes(storage.join(out, "tokens", "manifest.json")))
        assert tokens["rows"] + tokens["failures"] >= corpus["rows"] and tokens["rows"] > 0
        summary = json.loads(storage.read_bytes(storage.join(out, "pipeline.json")))
        assert summary["stages"]["train"]["final"]["step"] == 12
        assert Path(summary["paths"]["export"] + ".safetensors").is_file()
        assert storage.exists(storage.join(out, "exports", "translator.safetensors"))
        assert storage.list_files(storage.join(out, "runs", "translator"), suffixes=(".json",))  # checkpoints on S3
    finally:
        if node in cluster.worker_nodes:
            cluster.remove_node(node, allow_graceful=False)
        cluster.shutdown()
        # Ray notes the last started cluster for address-less ray.init(); forget this one.
        from ray._private.utils import get_ray_address_file

        marker = Path(get_ray_address_file(None))
        if marker.exists() and marker.read_text().strip() == cluster.address:
            marker.unlink()


def test_serve_stage_takes_the_serve_config_and_this_runs_model(tmp_path):
    from pipelines.workflow import load_config, paths, serve_settings

    config = load_config(overrides=[f"out={tmp_path}", f"serve.config={ROOT / 'serve' / 'config.yaml'}", "serve.host=0.0.0.0",
                                    "serve.port=8123"])
    where = paths(config)
    settings = serve_settings(config, where)
    import yaml

    app_args = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"][0]["args"]
    assert settings.checkpoint == where["export"] and (settings.host, settings.port) == ("0.0.0.0", 8123)
    assert settings.max_batch_size == app_args["max_batch_size"]
