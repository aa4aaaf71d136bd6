"""What every data set adapter shares: its description, its examples, and the row builders.

An adapter turns a data set *as its authors distribute it* (a local folder or an
``s3://`` prefix, layout unchanged) into rows of the corpus shard schema
(:func:`unimusic.corpus.row_schema`) plus three columns (``dataset``, ``example``,
``meta``), so imported sets tokenize, train and evaluate like the bundled corpus.
A row holds whichever forms the set has; the others are null:

* score-image sets (OLiMPiC, GrandStaff): one row per system image, ``image_png``
  (normalized like our own crops) and ``lmx``;
* performance sets (MAESTRO, MusicNet, Slakh2100, ASAP): one row per segment of
  ``segment_seconds`` (or per group of measures where the set annotates them), with
  ``audio_flac`` (mono, ``sample_rate``), ``notes`` and ``midi_windows``.

Two steps, so the expensive one runs on Ray Data workers:

* ``scan(root)`` (driver, cheap): reads the set's index files and lists
  :class:`Example` s with their official split, plus the problems found (a file the
  index names but the folder lacks) as error records;
* ``rows(example, config)`` (worker): reads the example's files and builds its rows;
  strict, any problem raises :class:`~unimusic.errors.InputError` naming the file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from typing import Iterable, Protocol, Sequence

import numpy as np

from unimusic.errors import InputError
from unimusic.tokens.midi import MidiCodecConfig

MODALITIES = ("image", "lmx", "midi", "audio")
# Official split names -> ours (unimusic.corpus.SPLITS).
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "development": "val", "test": "test", "testing": "test"}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str  # the CLI name
    title: str
    licence: str
    commercial_use: bool
    homepage: str
    modalities: tuple[str, ...]  # forms its rows carry (MODALITIES)
    splits: str  # where the official split comes from
    layout: str  # what SRC must point at
    citation: str = ""


@dataclasses.dataclass(frozen=True)
class Example:
    """One unit of a data set (a system image, a performance, a track), before reading it."""

    key: str  # unique and stable within the set (shard planning, piece ids)
    split: str  # train | val | test
    files: tuple[tuple[str, str], ...]  # (role, full path)
    meta: str = "{}"  # JSON: title, composer, ids... as the set gives them
    work: str = ""  # rows of one work stay together (default: the key)

    def file(self, role: str) -> str | None:
        return next((p for r, p in self.files if r == role), None)

    def require(self, role: str) -> str:
        path = self.file(role)
        if path is None:
            raise InputError(self.key, f"has no {role} file")
        return path

    @property
    def meta_dict(self) -> dict:
        return json.loads(self.meta)


def make_example(key: str, split: str, files: dict, meta: dict | None = None, *, work: str = "") -> Example:
    return Example(key=key, split=split, files=tuple((r, p) for r, p in files.items() if p),
                   meta=json.dumps(meta or {}, sort_keys=True, default=str), work=work or key)


def official_split(name: str, *, source: str) -> str:
    """A set's split name (``validation``, ``dev``...) as ours; InputError for anything else."""
    split = SPLIT_NAMES.get(str(name).strip().lower())
    if split is None:
        raise InputError(source, f"unknown split {name!r} (expected one of {sorted(SPLIT_NAMES)})")
    return split


def hashed_split(key: str, *, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """A stable split for sets without an official one (same rule as the corpus)."""
    from unimusic.corpus import split_of

    return split_of(key, val_fraction=val_fraction, test_fraction=test_fraction)


def scan_error(path: str, message: str) -> dict:
    return {"path": path, "stage": "scan", "message": message}


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    examples_per_shard: int = 8
    segment_seconds: float = 10.0  # audio rows: at most this long (a whole number of MIDI steps)
    sample_rate: int = 44100  # audio rows: resampled to this, mono (as the corpus)
    max_example_seconds: float = 3 * 3600.0  # longer audio is refused, not silently read
    midi: MidiCodecConfig = MidiCodecConfig()

    def __post_init__(self):
        if self.examples_per_shard < 1:
            raise InputError("config key 'examples_per_shard'", "must be >= 1")
        steps = self.segment_seconds * self.midi.steps_per_second
        if not self.segment_seconds > 0 or abs(steps - round(steps)) > 1e-6:
            raise InputError("config key 'segment_seconds'", f"{self.segment_seconds} is not a positive whole number "
                                                             f"of MIDI steps")
        if not 8000 <= self.sample_rate <= 192000:
            raise InputError("config key 'sample_rate'", f"{self.sample_rate} outside 8000..192000")

    def hash(self) -> str:
        from unimusic import __version__
        from unimusic.tokens.codec import content_hash

        return content_hash({"config": dataclasses.asdict(self), "code": __version__})


class Adapter(Protocol):
    info: DatasetInfo

    def scan(self, root: str) -> tuple[list[Example], list[dict]]: ...

    def rows(self, example: Example, config: ImportConfig) -> list[dict]: ...


# -- the schema ----------------------------------------------------------------------------


def dataset_row_schema():
    """The corpus row schema plus ``dataset``, ``example`` (its key) and ``meta`` (JSON)."""
    import pyarrow as pa

    from unimusic.corpus import row_schema

    schema = row_schema()
    for name in ("dataset", "example", "meta"):
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def base_row(info: DatasetInfo, example: Example, config: ImportConfig, *, source: str, variant: str = "") -> dict:
    """Every column of :func:`dataset_row_schema`, the shared ones filled, the forms null."""
    from unimusic import __version__
    from unimusic.tokens.lmx import LmxCodec
    from unimusic.tokens.midi import MidiEventCodec

    row = {name: None for name in dataset_row_schema().names}
    lmx_codec, midi_codec = LmxCodec(), MidiEventCodec(config=config.midi)
    row.update({
        "piece_id": f"{info.name}/{example.key}", "variant": variant or info.name, "work_id": f"{info.name}/{example.work}",
        "source": source, "system": 0, "occurrence": 0, "page": 0, "split": example.split,
        "lmx_codec": json.dumps({"name": lmx_codec.name, "version": lmx_codec.version, "hash": lmx_codec.hash}),
        "midi_codec": json.dumps({"name": midi_codec.name, "version": midi_codec.version, "hash": midi_codec.hash}),
        "code_version": __version__, "config_hash": config.hash(),
        "dataset": info.name, "example": example.key, "meta": example.meta,
    })
    return row


# -- score images ----------------------------------------------------------------------------


def staff_count(tokens: Sequence[str]) -> int:
    """Staves an LMX sequence uses (its highest ``staff:N``; 1 when it names none)."""
    return max((int(t.split(":", 1)[1]) for t in tokens if t.startswith("staff:") and t[6:].isdigit()), default=1)


def system_crop(data: bytes, *, source: str, staves: int | None = None) -> np.ndarray:
    """An image file holding one staff system -> our normalized crop (the same detector and
    normalization as translation, so training and inference see the same pixels).
    ``staves``: the staff count its label has; a system of another count is refused (a set's
    crop can hold a neighbouring staff joined to the system by its barline)."""
    import cv2

    from unimusic.io_files import _to_gray
    from unimusic.vision.staves import crop_systems, detect_systems

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(source, "unreadable image")
    gray = _to_gray(img)
    systems = detect_systems(gray, source=source)
    if not systems:
        raise InputError(source, "no staff system found in the image")
    if len(systems) > 1:
        raise InputError(source, f"expected one staff system, found {len(systems)}")
    if staves is not None and len(systems[0].staves) != staves:
        raise InputError(source, f"image: the crop shows systems of {[len(s.staves) for s in systems]} staves, "
                                 f"its LMX has {staves}")
    return crop_systems(gray, systems, source=source)[0]


def image_lmx_row(row: dict, *, image: bytes | None, lmx: Sequence[str] | None, source: str,
                  staves: int | None = None) -> dict:
    """Fill a row's image (normalized crop as PNG; ``staves`` as in :func:`system_crop`) and
    LMX ids (strict: an unknown token raises)."""
    import cv2

    from unimusic.tokens.lmx import LmxCodec

    if image is not None:
        crop = system_crop(image, source=source, staves=staves)
        ok, png = cv2.imencode(".png", crop)
        if not ok:
            raise InputError(source, "cannot encode the crop as PNG")
        row.update(image_png=png.tobytes(), height=int(crop.shape[0]), width=int(crop.shape[1]))
    if lmx is not None:
        if not lmx:
            raise InputError(source, "empty LMX")
        row["lmx"] = LmxCodec().encode(list(lmx), source=source)
    return row


# -- performances ------------------------------------------------------------------------------


def read_audio(path: str, *, sample_rate: int, max_seconds: float) -> np.ndarray:
    """An audio file (WAV, FLAC...; local or s3://) -> float32 mono at ``sample_rate``."""
    import soundfile as sf

    from unimusic import storage

    data = storage.read_bytes(path)
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile names the buffer object, not the file: drop that part
        detail = re.sub(r"^Error opening <[^>]*>: ", "", str(exc).strip()) or type(exc).__name__
        raise InputError(path, f"unreadable audio ({detail})") from None
    if info.frames / max(1, info.samplerate) > max_seconds:
        raise InputError(path, f"audio is {info.frames / info.samplerate:.0f} s, over the {max_seconds:.0f} s limit")
    from unimusic.render.synthesize import decode_audio

    audio, sr = decode_audio(data, name=path)
    if sr != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    return audio


def read_midi_notes(path: str) -> list:
    """A MIDI file (local or s3://) -> its notes (program and drum flag kept)."""
    from unimusic import storage
    from unimusic.tokens.midi import notes_from_midi

    return notes_from_midi(storage.read_bytes(path), name=path)


def performance_rows(row: dict, *, notes: Iterable, audio: np.ndarray | None, config: ImportConfig,
                     spans: Sequence[tuple[float, float]] | None = None, source: str) -> list[dict]:
    """Cut one performance into rows: ``spans`` (seconds; e.g. groups of annotated measures) or
    consecutive ``segment_seconds`` windows over the audio (or the notes when there is no audio).

    Each row gets the notes sounding in its span (times from the span start, cut at its ends),
    their MIDI event windows, and its audio as FLAC. Notes go onto the codec's time grid first,
    so the notes column and the event windows describe the same notes (as in the corpus)."""
    from unimusic.corpus import _quantize, span_midi
    from unimusic.render.synthesize import cut_segment, encode_flac
    from unimusic.tokens.midi import MidiEventCodec

    codec = MidiEventCodec(config=config.midi)
    notes = codec.normalize(list(notes))
    sps = config.midi.steps_per_second
    q = lambda t: _quantize(t, sps)  # noqa: E731
    if spans is None:
        total = max([n.end for n in notes] + ([audio.size / config.sample_rate] if audio is not None else [0.0]))
        if total <= 0:
            raise InputError(source, "no notes and no audio")
        total = math.ceil(total * sps - 1e-6) / sps  # up to the grid: the last sound is kept
        spans, t = [], 0.0
        while t < total - 1e-9:
            spans.append((t, min(q(t + config.segment_seconds), total)))
            t = spans[-1][1]
    rows = []
    for index, (start, end) in enumerate(spans):
        start, end = q(start), q(end)
        if end <= start:
            continue
        windows, span_notes = span_midi(notes, codec, start=start, end=end)
        out = dict(row, system=index, start=start, end=end, notes=span_notes, midi_windows=windows)
        if audio is not None:
            segment = cut_segment(audio, config.sample_rate, start=start, end=end)
            out.update(audio_flac=encode_flac(segment, config.sample_rate), sample_rate=config.sample_rate)
        rows.append(out)
    if not rows:
        raise InputError(source, "produced no rows")
    return rows
