"""LMX (Linearized MusicXML, the OLiMPiC format) tokens and their ids.

The token set follows the OLiMPiC description (Mayer et al., ICDAR 2024), widened
where the music21 corpus needs it, and with one extension of ours: ``part:N``
starts part N's content inside a measure (DESIGN.md section 6). A single-part
stream has no ``part:`` tokens and is plain LMX.

This module only maps token strings <-> ids and reads/writes LMX text; turning
MusicXML into tokens and back lives in :mod:`unimusic.render.lmx`.
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

from unimusic.errors import InputError
from unimusic.tokens.codec import content_hash

STEPS = "CDEFGAB"
MAX_PARTS = 32
MAX_VOICES = 16
MAX_STAVES = 4

KEY_TOKENS = [f"key:fifths:{n}" for n in range(-7, 8)]
TIME_TOKENS = ["time", *(f"beats:{n}" for n in range(1, 33)), *(f"beat-type:{n}" for n in (1, 2, 4, 8, 16, 32, 64))]
CLEF_SIGNS = {"G": range(1, 6), "F": range(1, 6), "C": range(1, 6)}
CLEF_TOKENS = [
    *(f"clef:{sign}{line}" for sign, lines in CLEF_SIGNS.items() for line in lines),
    "clef:percussion",
    "clef:TAB",
    "clef:none",
]
# Octave-transposing clefs (e.g. the tenor's treble-8vb in chorales) follow their clef token.
CLEF_OCTAVE_TOKENS = ["octave-change:-2", "octave-change:-1", "octave-change:1", "octave-change:2"]
PART_TOKENS = [f"part:{n}" for n in range(1, MAX_PARTS + 1)]

# Shortest to longest; each doubles the previous.
NOTE_TYPES = ["1024th", "512th", "256th", "128th", "64th", "32nd", "16th", "eighth", "quarter", "half", "whole", "breve", "long", "maxima"]
PITCH_TOKENS = [f"{step}{octave}" for octave in range(0, 10) for step in STEPS]
VOICE_TOKENS = [f"voice:{n}" for n in range(1, MAX_VOICES + 1)]
STAFF_TOKENS = [f"staff:{n}" for n in range(1, MAX_STAVES + 1)]


def _time_modification_tokens() -> list[str]:
    # The OLiMPiC list (real-world tuplets incl. nested products), then every
    # N-in-M with N <= 16, M <= 16 so that generated tuplets always have a token.
    seen = {}
    for token in [
        "3in2", "6in4", "2in1", "2in3", "5in4", "7in8", "7in6", "9in8", "4in3", "7in4", "4in6", "13in8",
        "22in16", "10in4", "12in8", "9in4", "10in8", "18in4", "16in8", "15in8", "5in3", "11in8", "11in12",
        "5in2", "8in2", "4in2", "7in1", "35in16", "9in2",
    ]:
        seen[token] = None
    for actual in range(1, 17):
        for normal in range(1, 17):
            if actual != normal:
                seen[f"{actual}in{normal}"] = None
    return list(seen)


TIME_MODIFICATION_TOKENS = _time_modification_tokens()
# Accidental tokens and the alteration (semitones) each one spells.
ACCIDENTAL_ALTER = {
    "sharp": 1,
    "flat": -1,
    "natural": 0,
    "double-sharp": 2,
    "flat-flat": -2,
    "natural-sharp": 1,
    "natural-flat": -1,
}
ALTER_ACCIDENTAL = {1: "sharp", -1: "flat", 0: "natural", 2: "double-sharp", -2: "flat-flat"}
STEM_TOKENS = ["stem:up", "stem:down", "stem:none"]
BEAM_TOKENS = ["beam:begin", "beam:end", "beam:forward-hook", "beam:backward-hook"]
TIE_TOKENS = ["tied:start", "tied:stop"]
TUPLET_TOKENS = ["tuplet:start", "tuplet:stop"]
NOTATION_TOKENS = [
    "slur:start",
    "slur:stop",
    "fermata",
    "arpeggiate",
    "staccato",
    "staccatissimo",
    "accent",
    "strong-accent",
    "tenuto",
    "trill-mark",
    "tremolo:single",
    "tremolo:start",
    "tremolo:stop",
    "tremolo:unmeasured",
    "tremolo:1",
    "tremolo:2",
    "tremolo:3",
    "tremolo:4",
]

# Token classes the delinearizer's grammar relies on.
NOTE_PREFIX_TOKENS = ["print-object:no", "grace", "grace:slash", "chord"]
NOTE_KIND_TOKENS = [*PITCH_TOKENS, "rest", "backup", "forward"]
NOTE_ROOT_TOKENS = [*NOTE_TYPES, "rest:measure"]
NOTE_SUFFIX_TOKENS = [
    *TIME_MODIFICATION_TOKENS,
    "dot",
    *ACCIDENTAL_ALTER,
    *STEM_TOKENS,
    *STAFF_TOKENS,
    *BEAM_TOKENS,
    *TIE_TOKENS,
    *TUPLET_TOKENS,
    *NOTATION_TOKENS,
]

# Barlines (our extension; OLiMPiC drops them): repeats and volta endings change
# what is played, double and final bars are visible structure. A barline token
# before the part's first note belongs to the measure's left barline, any later
# one to its right barline.
MAX_ENDING = 8
BARLINE_TOKENS = [
    "repeat:forward",
    "repeat:backward",
    *(f"ending:{n}" for n in range(1, MAX_ENDING + 1)),
    "ending:stop",
    "ending:discontinue",
    "barline:double",
    "barline:final",
]

ALL_TOKENS: list[str] = [
    "measure",
    *PART_TOKENS,
    *BARLINE_TOKENS,
    *KEY_TOKENS,
    *TIME_TOKENS,
    *CLEF_TOKENS,
    *CLEF_OCTAVE_TOKENS,
    *NOTE_PREFIX_TOKENS,
    *NOTE_KIND_TOKENS,
    *VOICE_TOKENS,
    *NOTE_ROOT_TOKENS,
    # staff tokens are listed once, among the suffixes (they also follow clefs)
    *NOTE_SUFFIX_TOKENS,
]
assert len(set(ALL_TOKENS)) == len(ALL_TOKENS), "duplicate LMX tokens"

LMX_VERSION = "2"  # 2: barline tokens


class LmxCodec:
    """LMX token strings <-> ids 0..num_classes-1 (strict encode, tolerant decode)."""

    name = "lmx"
    version = LMX_VERSION

    def __init__(self, tokens: Sequence[str] = ALL_TOKENS):
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self.num_classes = len(self.tokens)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "tokens": list(self.tokens)}

    @functools.cached_property
    def hash(self) -> str:
        return content_hash(self.describe())

    def encode(self, tokens: Iterable[str], *, source: str = "LMX") -> list[int]:
        out = []
        for position, token in enumerate(tokens):
            idx = self._ids.get(token)
            if idx is None:
                raise InputError(source, f"unknown LMX token {token!r} at position {position}")
            out.append(idx)
        return out

    def decode(self, ids: Iterable[int]) -> tuple[list[str], int]:
        """Token strings of ``ids`` and how many ids were invalid (dropped)."""
        out, invalid = [], 0
        for idx in ids:
            try:
                i = int(idx)
            except (TypeError, ValueError):
                invalid += 1
                continue
            if 0 <= i < self.num_classes:
                out.append(self.tokens[i])
            else:
                invalid += 1
        return out, invalid

    def __contains__(self, token: str) -> bool:
        return token in self._ids


def lmx_text(tokens: Sequence[str]) -> str:
    """Readable LMX: one measure per line, parts on their own indented lines."""
    lines: list[str] = []
    current: list[str] = []
    for token in tokens:
        if token in ("measure",) or token.startswith("part:"):
            if current:
                lines.append(" ".join(current))
            current = [token if token == "measure" else "  " + token]
        else:
            current.append(token)
    if current:
        lines.append(" ".join(current))
    return "\n".join(lines) + "\n"


def tokens_from_text(text: str) -> list[str]:
    """Tokens of LMX text; ``#`` comments and an OLiMPiC header (``...\\n---``) are skipped."""
    lines = text.splitlines()
    if "---" in (ln.strip() for ln in lines[:5]):
        cut = [ln.strip() for ln in lines].index("---")
        lines = lines[cut + 1 :]
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split("#", 1)[0].split())
    return tokens
