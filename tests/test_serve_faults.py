"""The translation service survives a model replica killed under load (slow tier).

A separate app ("unimusic-faults" at /faults, two model replicas) on the session's Serve
instance (the ``serve_url`` fixture's port) gets steady load from the load benchmark's
client (``benchmarks/serve_load.py``); a few seconds in, one TranslatorModel replica
process gets SIGKILL for real. The ingress retries requests whose replica died, so
fewer than 1 % of the requests may fail, and Serve must run two replicas again (and
answer) within 30 s of the kill.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import SERVE_TEST_SETTINGS

APP, PREFIX = "unimusic-faults", "/faults"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_replica_killed_under_load(ray_session, serve_url):
    from ray import serve

    from benchmarks.serve_load import fault_run, make_payloads, replica_actors, run_load, summarize
    from serve.app import ServeSettings, deploy

    # tiny CPU reservations as in SERVE_TEST_SETTINGS, but a fixed pair of model replicas
    settings = ServeSettings(**{**SERVE_TEST_SETTINGS, "min_replicas": 2, "max_replicas": 2},
                             port=urlsplit(serve_url).port)
    payloads = make_payloads("lmx->midi", count=4)  # model decoding of real chorale excerpts
    url = deploy(settings, name=APP, route_prefix=PREFIX)
    try:
        deadline = time.monotonic() + 120
        while len(replica_actors(APP)) < 2:
            assert time.monotonic() < deadline, "two model replicas never came up"
            time.sleep(0.5)
        warm = summarize(run_load(url, payloads, concurrency=8, requests=16))
        assert warm["errors"] == 0, warm

        s = fault_run(APP, url, payloads, concurrency=8, duration_s=25.0, kill_after_s=6.0, replicas=2,
                      recovery_timeout_s=60.0)
        report = {k: s.get(k) for k in ("requests", "errors", "error_kinds", "rps", "p50_s", "p99_s", "recovery_s",
                                        "killed_pid", "fault_error")}
        print(f"fault run: {report}; after the kill: {s.get('after_kill')}")
        assert s["fault_error"] is None, report
        assert s["killed_pid"], report
        assert s["requests"] >= 20, report  # the load really ran across the kill
        assert s["after_kill"]["requests"] > 0, report
        assert s["failed_fraction"] < 0.01, report
        assert s["recovery_s"] is not None and s["recovery_s"] < 30.0, report
        alive = replica_actors(APP)
        assert len(alive) == 2 and s["killed_pid"] not in {a["pid"] for a in alive}, alive
    finally:
        serve.delete(APP)
