"""Shared fixtures: corpus samples are made once per session and cached."""

from __future__ import annotations

import os

# Heavy libraries print to stdout on import; keep test output readable.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


# -- S3 and Ray (session scope) -------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def s3_server():
    """A real ``moto_server`` on 127.0.0.1 for the whole session; yields its endpoint URL.

    While it runs, AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_DEFAULT_REGION point at it (restored afterwards). It creates no buckets:
    tests make their own (unique names) with boto3.
    """
    from tests.s3_server import s3_server as _s3_server

    with _s3_server() as endpoint:
        yield endpoint


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Serve replicas in tests reserve no CPU: the session's 2 CPUs stay whole for the Ray Data
# and Ray Train tests that run after the serve tests (0.02 reserved deadlocked a training
# test whose workers and readers need exactly 2).
SERVE_TEST_SETTINGS = dict(model_cpus=0, ingress_cpus=0, max_replicas=1, max_batch_size=8,
                           request_timeout_s=120.0, max_upload_bytes=4 * 2**20)


@pytest.fixture(scope="session")
def serve_url(ray_session):
    """The translation service (shipped model) on a free loopback port for the session; its base URL."""
    from ray import serve

    from serve.app import ServeSettings, deploy

    url = deploy(ServeSettings(port=free_port(), **SERVE_TEST_SETTINGS))
    yield url
    serve.shutdown()


@pytest.fixture(scope="session")
def ray_session():
    """Ray, started once (2 CPUs, no dashboard) unless already running; shut down at the end.

    Request ``s3_server`` before this fixture when Ray workers need the S3 settings:
    workers inherit the environment of the moment Ray starts.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
        started = True
    yield ray
    if started and ray.is_initialized():
        ray.shutdown()
