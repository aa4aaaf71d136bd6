"""Small replicas of the public data sets' directory layouts, generated from music21-corpus
pieces by our own renderers (Verovio engraving, FluidSynth audio, our LMX and MIDI writers).

Each module ``tests/replicas/<name>.py`` has ``make(root: Path) -> Replica``: it writes the
layout under ``root`` (good examples in each official split, plus the broken or missing
files a real copy can have) and returns the facts a test checks the import against.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

# adapter name -> replica module
MODULES = {
    "olimpic": "tests.replicas.olimpic",
    "grandstaff": "tests.replicas.grandstaff",
    "maestro": "tests.replicas.maestro",
    "asap": "tests.replicas.asap",
    "musicnet": "tests.replicas.musicnet",
    "slakh2100": "tests.replicas.slakh",
    "score-videos": "tests.replicas.score_videos",
}


@dataclasses.dataclass(frozen=True)
class Replica:
    src: str  # what `unimusic datasets import NAME SRC` is given
    examples: int  # examples scan() should list (good and bad)
    good: int  # examples that import without error
    errors: int  # error records expected (scan errors + failed examples)
    rows_per_split: dict  # {split: rows} the import should write
    modalities: tuple[str, ...]  # forms every good row has
    config: dict = dataclasses.field(default_factory=dict)  # ImportConfig values the row counts assume


def make(name: str, root: Path) -> Replica:
    return importlib.import_module(MODULES[name]).make(Path(root))


def upload(root: Path, *, endpoint: str, bucket: str, prefix: str, skip=lambda rel: False) -> str:
    """Copy a replica's files to the local S3 server (bucket created); returns ``s3://bucket/prefix``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    for f in sorted(Path(root).rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and not skip(rel):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{rel.as_posix()}", Body=f.read_bytes())
    return f"s3://{bucket}/{prefix}"
