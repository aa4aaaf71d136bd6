"""Shared fixtures: corpus samples are made once per session and cached."""

from __future__ import annotations

import os

# Heavy libraries print to stdout on import; keep test output readable.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
