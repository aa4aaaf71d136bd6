"""The unified vocabulary: one id space for every modality, plus specials and tasks.

Layout (in this order, each a contiguous range):

    specials      PAD, EOS, SEP, one SOS per target modality
    tasks         one direction token per task (image->lmx, audio->midi, ...)
    lmx           the LMX codec's ids
    midi          the MIDI event codec's ids
    image_height  rows per column of a generated image (1..image_max_rows)
    image:L       codebook level L of the score-image RQ-VAE (L = 0..image_codebooks-1)
    audio:L       codebook level L of the audio codec (L = 0..audio_codebooks-1)

Shards store each codec's own ids; this object maps them to model ids when
batches are built (``to_model``) and back (``from_model``, tolerant), so
changing e.g. the number of audio codebooks never voids a shard. The content
hash covers the layout and every codec's hash; shards and checkpoints record it
and :meth:`Vocabulary.check` refuses a mismatch, naming both hashes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Iterable

from unimusic.errors import InputError, VocabularyMismatchError
from unimusic.tokens.codec import content_hash
from unimusic.tokens.lmx import LmxCodec
from unimusic.tokens.midi import MidiCodecConfig, MidiEventCodec

VOCABULARY_VERSION = "1"
MODALITIES = ("lmx", "midi", "image", "audio")
TASKS = (
    "image->lmx",
    "audio->midi",
    "midi->audio",
    "image->audio",
    "audio->image",
    "lmx->image",
    "lmx->midi",
    "midi->lmx",
    "audio->lmx",
    "image->midi",
)
SPECIALS = ("PAD", "EOS", "SEP", *(f"SOS:{m}" for m in MODALITIES))


@dataclasses.dataclass(frozen=True)
class VocabularyConfig:
    image_codebooks: int = 4
    image_codebook_size: int = 1024
    image_max_rows: int = 64
    audio_codebooks: int = 4
    audio_codebook_size: int = 1024
    midi: MidiCodecConfig = MidiCodecConfig()

    def __post_init__(self):
        for name in ("image_codebooks", "image_codebook_size", "image_max_rows", "audio_codebooks", "audio_codebook_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError("vocabulary config", f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VocabularyConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError("vocabulary config", f"unknown keys {sorted(unknown)}")
        if "midi" in data:
            data["midi"] = MidiCodecConfig(**data["midi"])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class TokenRange:
    name: str
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, model_id: int) -> bool:
        return self.start <= model_id < self.stop


class Vocabulary:
    version = VOCABULARY_VERSION

    def __init__(self, config: VocabularyConfig = VocabularyConfig()):
        self.config = config
        self.lmx = LmxCodec()
        self.midi = MidiEventCodec(config=config.midi)
        sizes: list[tuple[str, int]] = [
            ("specials", len(SPECIALS)),
            ("tasks", len(TASKS)),
            ("lmx", self.lmx.num_classes),
            ("midi", self.midi.num_classes),
            ("image_height", config.image_max_rows),
            *((f"image:{level}", config.image_codebook_size) for level in range(config.image_codebooks)),
            *((f"audio:{level}", config.audio_codebook_size) for level in range(config.audio_codebooks)),
        ]
        self.ranges: dict[str, TokenRange] = {}
        start = 0
        for name, size in sizes:
            self.ranges[name] = TokenRange(name, start, size)
            start += size
        self.size = start

    # -- specials and tasks ------------------------------------------------------
    @property
    def pad(self) -> int:
        return self.special("PAD")

    @property
    def eos(self) -> int:
        return self.special("EOS")

    @property
    def sep(self) -> int:
        return self.special("SEP")

    def special(self, name: str) -> int:
        if name not in SPECIALS:
            raise InputError(name, f"not a special token (have {', '.join(SPECIALS)})")
        return self.ranges["specials"].start + SPECIALS.index(name)

    def sos(self, target: str) -> int:
        self._check_modality(target)
        return self.special(f"SOS:{target}")

    def task(self, source: str, target: str) -> int:
        name = f"{source}->{target}"
        if name not in TASKS:
            raise InputError(name, f"not a supported direction (have {', '.join(TASKS)})")
        return self.ranges["tasks"].start + TASKS.index(name)

    def task_name(self, model_id: int) -> str | None:
        r = self.ranges["tasks"]
        return TASKS[model_id - r.start] if model_id in r else None

    # -- codec ids <-> model ids -------------------------------------------------
    def _check_modality(self, modality: str):
        if modality not in MODALITIES:
            raise InputError(modality, f"unknown modality (have {', '.join(MODALITIES)})")

    def _range(self, modality: str, level: int | None) -> TokenRange:
        self._check_modality(modality)
        if modality in ("lmx", "midi"):
            if level is not None:
                raise InputError(modality, "single-stream modality takes no codebook level")
            return self.ranges[modality]
        levels = self.config.image_codebooks if modality == "image" else self.config.audio_codebooks
        if level is None or not 0 <= level < levels:
            raise InputError(modality, f"codebook level {level!r} outside 0..{levels - 1}")
        return self.ranges[f"{modality}:{level}"]

    def to_model(self, modality: str, ids: Iterable[int], *, level: int | None = None) -> list[int]:
        """Model ids of a codec's ids (strict: an id outside the codec's range raises)."""
        r = self._range(modality, level)
        out = []
        for position, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < r.size:
                raise InputError(f"{r.name} ids", f"id {i} at position {position} outside 0..{r.size - 1}")
            out.append(r.start + i)
        return out

    def from_model(self, model_ids: Iterable[int], modality: str, *, level: int | None = None) -> tuple[list[int], int]:
        """A codec's ids from model ids, and how many were outside the range (dropped)."""
        r = self._range(modality, level)
        out, invalid = [], 0
        for i in model_ids:
            try:
                i = int(i)
            except (TypeError, ValueError):
                invalid += 1
                continue
            if i in r:
                out.append(i - r.start)
            else:
                invalid += 1
        return out, invalid

    def height_token(self, rows: int) -> int:
        r = self.ranges["image_height"]
        if not 1 <= rows <= r.size:
            raise InputError("image height", f"{rows} rows outside 1..{r.size}")
        return r.start + rows - 1

    def output_ranges(self, target: str) -> list[tuple[int, int]]:
        """[start, stop) id ranges a decoder may emit for ``target`` (logit masking)."""
        self._check_modality(target)
        eos = (self.eos, self.eos + 1)
        if target in ("lmx", "midi"):
            r = self.ranges[target]
            return [(r.start, r.stop), eos]
        levels = self.config.image_codebooks if target == "image" else self.config.audio_codebooks
        out = [(self.ranges[f"{target}:{lv}"].start, self.ranges[f"{target}:{lv}"].stop) for lv in range(levels)]
        if target == "image":
            h = self.ranges["image_height"]
            out += [(h.start, h.stop), (self.sep, self.sep + 1)]
        return out + [eos]

    def token_name(self, model_id: int) -> str:
        """Readable name of a model id (for logs and debugging), never raises."""
        for r in self.ranges.values():
            if model_id in r:
                local = model_id - r.start
                if r.name == "specials":
                    return SPECIALS[local]
                if r.name == "tasks":
                    return f"task:{TASKS[local]}"
                if r.name == "lmx":
                    return f"lmx:{self.lmx.tokens[local]}"
                if r.name == "midi":
                    return f"midi:{self.midi.token_to_string(local)}"
                if r.name == "image_height":
                    return f"image_height:{local + 1}"
                return f"{r.name}:{local}"
        return f"<invalid {model_id}>"

    # -- identity ----------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "name": "unimusic-vocabulary",
            "version": self.version,
            "config": self.config.to_dict(),
            "specials": list(SPECIALS),
            "tasks": list(TASKS),
            "ranges": [[r.name, r.start, r.size] for r in self.ranges.values()],
            "codecs": {
                "lmx": {"name": self.lmx.name, "version": self.lmx.version, "hash": self.lmx.hash},
                "midi": {"name": self.midi.name, "version": self.midi.version, "hash": self.midi.hash},
            },
        }

    @functools.cached_property
    def hash(self) -> str:
        return content_hash(self.describe())

    def check(self, found_hash: str, *, what: str) -> None:
        """Refuse a shard/checkpoint written with another vocabulary."""
        if found_hash != self.hash:
            raise VocabularyMismatchError(what, self.hash, found_hash)

    def to_json(self) -> str:
        return json.dumps({**self.describe(), "hash": self.hash}, indent=1)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_json(cls, text: str, *, source: str = "vocabulary JSON") -> "Vocabulary":
        try:
            data = json.loads(text)
            config = VocabularyConfig.from_dict(data["config"])
            recorded = data["hash"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(source, f"not a unimusic vocabulary file: {type(exc).__name__}: {exc}") from None
        vocab = cls(config)
        # The file's layout must be what this code builds from the same config:
        # a changed codec (e.g. a new LMX token) changes the hash.
        vocab.check(recorded, what=source)
        return vocab

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        p = Path(path)
        if not p.is_file():
            raise InputError(str(path), "no such vocabulary file")
        return cls.from_json(p.read_text(), source=str(path))

    def __repr__(self) -> str:
        return f"Vocabulary(version={self.version}, size={self.size}, hash={self.hash})"

