"""A real local S3 server for tests: ``moto_server`` on 127.0.0.1 (never a patched boto3).

    with s3_server() as endpoint:   # e.g. "http://127.0.0.1:43117"
        ...                          # AWS_* environment points at it

The context manager picks a free port, starts the ``moto_server`` console
script that sits next to ``sys.executable``, waits until it answers, sets
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``testing``)
and ``AWS_DEFAULT_REGION`` (``us-east-1``), and on exit -- also when the body
raises -- restores the environment and stops the server. Buckets are left to
the tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would override ours or make boto3/pyarrow look elsewhere.
_CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


def moto_server_path() -> Path:
    path = Path(sys.executable).parent / "moto_server"
    if not path.exists():
        raise RuntimeError(f"moto_server not found next to {sys.executable} (pip install 'moto[server]')")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: only what we started
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def s3_server(*, start_timeout: float = 60.0):
    """Run moto_server on 127.0.0.1; yields its endpoint URL (see the module docstring)."""
    exe = moto_server_path()
    log = tempfile.TemporaryFile()
    proc = None
    endpoint = None
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline and proc.poll() is None and not _answers(endpoint):
            time.sleep(0.1)
        if proc.poll() is None and _answers(endpoint):
            break
        _stop(proc)
        proc = None
    if proc is None:
        log.seek(0)
        tail = log.read()[-2000:].decode(errors="replace")
        log.close()
        raise RuntimeError(f"moto_server did not start on 127.0.0.1:\n{tail}")

    saved = {k: os.environ.get(k) for k in (*ENV, "AWS_ENDPOINT_URL", *_CLEARED)}
    try:
        os.environ.update(ENV)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        for k in _CLEARED:
            os.environ.pop(k, None)
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop(proc)
        log.close()
