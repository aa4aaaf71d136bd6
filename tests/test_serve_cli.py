"""``unimusic serve`` and ``serve/config.yaml``: the config file is a valid Serve config whose
args build the service's settings; the CLI (and Ray's ``serve run``) start it from that file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve" / "config.yaml"


def test_config_file_is_a_serve_config():
    from ray.serve.schema import ServeDeploySchema

    from serve.app import ServeSettings

    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    assert app.import_path == "serve.app:build" and schema.http_options.host == "127.0.0.1"
    settings = ServeSettings.from_mapping(app.args)
    assert settings.checkpoint is None and settings.max_batch_size == 8 and settings.host == "127.0.0.1"


def test_settings_refuse_bad_values():
    from serve.app import ServeSettings
    from unimusic.errors import InputError

    with pytest.raises(InputError, match="max_batch_sise"):
        ServeSettings.from_mapping({"max_batch_sise": 8})
    with pytest.raises(InputError, match="expected a number"):
        ServeSettings.from_mapping({"port": "eighty"})
    with pytest.raises(InputError, match="min_replicas"):
        ServeSettings(min_replicas=3, max_replicas=2)
    assert ServeSettings.from_mapping({"port": "8001", "checkpoint": ""}).port == 8001


def test_cli_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications:\n  - name: x\n    import_path: serve.app:build\n    args: {workers: 3}\n")
    proc = subprocess.run([sys.executable, "-m", "unimusic.cli", "serve", "--config", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown ['workers']" in proc.stderr and "Traceback" not in proc.stderr


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited early"
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} not healthy within {timeout} s")


def _config_copy(tmp_path, port: int) -> Path:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["http_options"]["port"] = port
    raw["applications"][0]["args"].update(port=port, model_cpus=0.5)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _translate_status(url: str) -> int:
    import base64
    import json

    from music21 import corpus

    xml = corpus.parse("bach/bwv66.6").write("musicxml").read_bytes()
    body = json.dumps({"data": base64.b64encode(xml).decode(), "to": "midi"}).encode()
    req = urllib.request.Request(url + "/v1/translate", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", ["unimusic", "serve-run"])
def test_server_from_the_config_file(tmp_path, command):
    """Start the service from the config file, translate once, stop it with Ctrl-C (exit 0)."""
    port = free_port()
    config = _config_copy(tmp_path, port)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    if command == "unimusic":
        argv = [sys.executable, "-m", "unimusic.cli", "serve", "--config", str(config), "--num-cpus", "2"]
    else:
        argv = [str(Path(sys.executable).with_name("serve")), "run", str(config)]
    log = tmp_path / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        assert _translate_status(url) == 200
        if command == "unimusic":  # started (not only healthy): Ctrl-C now is a clean stop
            deadline = time.monotonic() + 60
            while "serving on" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    if command == "unimusic":
        assert proc.returncode == 0, out[-3000:]
        assert f"serving on http://127.0.0.1:{port}/" in out


def test_build_app_deployment_options():
    """What build_app asks of Serve: batching bounded by max_ongoing_requests, autoscaling, GPUs."""
    from serve.app import ServeSettings, build_app

    def model_of(app):
        return app._bound_deployment.init_args[0]._bound_deployment

    model = model_of(build_app(ServeSettings(max_batch_size=12, min_replicas=1, max_replicas=3, model_gpus=0)))
    assert model.max_ongoing_requests >= 12  # ENVIRONMENT.md: otherwise batches stop at 5
    scaling = model._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 3, 4.0)
    assert model.ray_actor_options["num_gpus"] == 0 and model.init_kwargs["device"] == "cpu"
    gpu = model_of(build_app(ServeSettings(model_gpus=1)))
    assert gpu.ray_actor_options["num_gpus"] == 1 and gpu.init_kwargs["device"] == "cuda"
