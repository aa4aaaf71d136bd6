"""Adapters for the public multimodal music data sets (``unimusic datasets list``).

Each adapter module defines ``ADAPTER`` (see :mod:`unimusic.datasets.base`). Modules are
imported on first use only: workers re-import this package, and an adapter's
dependencies should cost nothing to the others.
"""

from __future__ import annotations

import importlib

from unimusic.errors import InputError

# CLI name -> module (in the order `datasets list` shows them)
MODULES = {
    "olimpic": "unimusic.datasets.olimpic",
    "grandstaff": "unimusic.datasets.grandstaff",
    "maestro": "unimusic.datasets.maestro",
    "asap": "unimusic.datasets.asap",
    "musicnet": "unimusic.datasets.musicnet",
    "slakh2100": "unimusic.datasets.slakh",
    "score-videos": "unimusic.datasets.score_videos",
}


def names() -> list[str]:
    return list(MODULES)


def get(name: str):
    """The adapter called ``name``; InputError listing the known names otherwise."""
    module = MODULES.get(str(name).strip().lower())
    if module is None:
        raise InputError(f"data set {name!r}", f"unknown (have {', '.join(MODULES)})")
    return importlib.import_module(module).ADAPTER


def all_adapters() -> list:
    return [get(n) for n in MODULES]
