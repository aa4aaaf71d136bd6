"""The scores that ship inside the music21 package: the project's offline corpus.

A piece is addressed by its path relative to music21's corpus folder (plus a tune
number for ABC collections, which hold many tunes per file). Sampling is seeded
and spread over formats and collections so that tests see chorales, **kern,
ABC, quartets and piano music alike.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

FORMATS = (".mxl", ".xml", ".musicxml", ".krn", ".abc")
# Multi-staff keyboard music in the corpus (scarce; tests want some).
PIANO_PIECES = (
    "joplin/maple_leaf_rag.mxl",
    "chopin/mazurka06-2.krn",
    "cpebach/h186.mxl",
    "schumann_clara/opus17/movement3.xml",
    "liliuokalani/aloha_oe.mxl",
    "johnson_j_r/lift_every_voice.mxl",
    "leadSheet/fosterBrownHair.mxl",
)


@dataclasses.dataclass(frozen=True)
class CorpusPiece:
    relpath: str  # relative to music21's corpus folder
    number: int | None = None  # tune number inside an ABC collection

    @property
    def path(self) -> Path:
        return corpus_root() / self.relpath

    @property
    def kind(self) -> str:
        return {".mxl": "mxl", ".xml": "musicxml", ".musicxml": "musicxml", ".krn": "kern", ".abc": "abc"}[
            Path(self.relpath).suffix
        ]

    @property
    def piece_id(self) -> str:
        base = self.relpath.rsplit(".", 1)[0]
        return f"{base}#{self.number}" if self.number is not None else base

    @property
    def collection(self) -> str:
        return self.relpath.split("/", 1)[0]


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def list_pieces(*, collections: tuple[str, ...] | None = None, max_bytes: int | None = None) -> list[CorpusPiece]:
    """Every score file in the corpus (ABC files count once, as their first tune), sorted."""
    root = corpus_root()
    out = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in FORMATS or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if collections and rel.split("/", 1)[0] not in collections:
            continue
        if max_bytes is not None and path.stat().st_size > max_bytes:
            continue
        out.append(CorpusPiece(rel))
    return out


def sample_pieces(n: int, *, seed: int = 0, max_bytes: int = 40_000) -> list[CorpusPiece]:
    """A seeded, format-balanced sample of ``n`` pieces.

    Roughly: 35% Bach chorales and other .mxl/.xml, 35% **kern, 20% ABC, plus the
    piano pieces; files over ``max_bytes`` are left out to keep tests fast.
    """
    rng = random.Random(seed)
    pieces = list_pieces(max_bytes=max_bytes)
    by_kind: dict[str, list[CorpusPiece]] = {"xml": [], "kern": [], "abc": []}
    for p in pieces:
        if p.relpath in PIANO_PIECES:
            continue
        by_kind["xml" if p.kind in ("mxl", "musicxml") else p.kind].append(p)
    piano = [CorpusPiece(p) for p in PIANO_PIECES if (corpus_root() / p).exists()]
    piano = [p for p in piano if p.path.stat().st_size <= max(max_bytes, 200_000)]
    n_piano = min(len(piano), max(1, n // 40))
    rest = n - n_piano
    quotas = {"xml": round(rest * 0.4), "kern": round(rest * 0.4)}
    quotas["abc"] = rest - quotas["xml"] - quotas["kern"]
    chosen = piano[:n_piano]
    for kind, quota in quotas.items():
        pool = by_kind[kind]
        chosen += rng.sample(pool, min(quota, len(pool)))
    return sorted(chosen, key=lambda p: p.relpath)[:n]


def load_musicxml(piece: CorpusPiece) -> bytes:
    """The piece as partwise MusicXML (ABC and kern through music21)."""
    from unimusic.scores import musicxml_bytes

    return musicxml_bytes(piece.path)
