"""Shared fixtures: corpus samples are made once per session and cached."""

from __future__ import annotations

import os

import pytest

# Heavy libraries print to stdout on import; keep test output readable.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def music21_env(tmp_path_factory):
    """music21 caches parses under a writable scratch dir of this session."""
    import music21

    scratch = tmp_path_factory.mktemp("music21")
    music21.environment.set("directoryScratch", str(scratch))
    return scratch
