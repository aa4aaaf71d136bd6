"""Autoscaling for real: under steady load the model deployment grows from one replica to two."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
import urllib.request

import pytest

from tests.conftest import SERVE_TEST_SETTINGS


def _replicas(app: str) -> int:
    import ray

    prefix = f"SERVE_REPLICA::{app}#TranslatorModel#"
    return sum(a["name"].startswith(prefix) for a in ray.util.list_named_actors(all_namespaces=True))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_model_deployment_scales_up_under_load(serve_url):
    from ray import serve

    from serve.app import ServeSettings, deploy
    from unimusic import io_files
    from unimusic.inference import notes_to_audio, score_to_notes

    from music21 import corpus

    notes = [n for n in score_to_notes(corpus.parse("bach/bwv66.6").write("musicxml").read_bytes()) if n.start < 2]
    wav = io_files.encode_output(io_files.Audio(samples=notes_to_audio(notes, sample_rate=22050), sample_rate=22050),
                                 "a.wav")[0][1]
    body = json.dumps({"data": base64.b64encode(wav).decode(), "to": "midi"}).encode()
    app = "unimusic-scaling"
    port = int(serve_url.rsplit(":", 1)[1])
    settings = {**SERVE_TEST_SETTINGS, "max_replicas": 2, "target_ongoing_requests": 1.0, "max_batch_size": 2}
    url = deploy(ServeSettings(port=port, **settings), name=app, route_prefix="/scaling")
    try:
        assert _replicas(app) == 1

        def one() -> int:
            req = urllib.request.Request(url + "/v1/translate", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status

        statuses, peak = [], 1
        deadline = time.monotonic() + 120
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline and peak < 2:
                statuses += list(pool.map(lambda _: one(), range(8)))
                peak = max(peak, _replicas(app))
        assert peak == 2, "the model deployment did not scale up under 8 concurrent requests"
        assert set(statuses) == {200}
    finally:
        serve.delete(app)
