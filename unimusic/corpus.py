"""Corpus rows: one score -> one row per staff system (and per time it is played).

A row holds the aligned quadruple of one system: the engraved crop (PNG), its
LMX ids, its MIDI event windows and notes, and its synthesized audio (FLAC),
with the time span and per-measure x-ranges and time spans. This module is the
per-piece work and the shard bookkeeping; ``pipelines/build_corpus.py`` runs it
on Ray Data. The plain loop over :func:`rows_for_source` is the same work
without Ray (the benchmark's baseline).

With ``piano_reductions`` (the default), every four-part score also yields the
rows of its grand-staff piano reduction (``variant`` "piano-reduction", piece id
``<id>#piano``, same work and split).

Repeats are *expanded*: Verovio's playback timeline plays repeated measures
again, so a system that is played twice gives two rows (``occurrence`` 0 and 1)
with the same image and LMX and two time spans; a row's audio and MIDI cover
only the measures played in that pass (a first-ending measure is missing from
the second pass).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Iterable

from unimusic import __version__
from unimusic.errors import InputError
from unimusic.render.synthesize import SynthConfig
from unimusic.tokens.midi import MidiCodecConfig
from unimusic.vision.normalize import CropConfig

SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".abc")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0
    pieces_per_shard: int = 4
    # Also engrave and synthesize a grand-staff piano reduction of every
    # four-part score (chorales, quartets): piano music is scarce in the corpus.
    piano_reductions: bool = True
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    crop: CropConfig = CropConfig()
    synth: SynthConfig = SynthConfig()
    midi: MidiCodecConfig = MidiCodecConfig()

    def __post_init__(self):
        if self.pieces_per_shard < 1:
            raise InputError("config key 'pieces_per_shard'", "must be >= 1")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise InputError("config keys val_fraction/test_fraction", "must add up to less than 1")

    def hash(self) -> str:
        from unimusic.tokens.codec import content_hash

        return content_hash({"config": dataclasses.asdict(self), "code": __version__, "vocab": vocabulary_hash(self)})


@functools.lru_cache(maxsize=8)
def vocabulary_hash(config: CorpusConfig) -> str:
    from unimusic.tokens.vocabulary import Vocabulary, VocabularyConfig

    return Vocabulary(VocabularyConfig(midi=config.midi)).hash


# -- identities and splits ------------------------------------------------------------


def work_id(source: str) -> str:
    """A normalized work id: the same work in two formats (bwv277.mxl / bwv277.krn)
    gets one id, so a split never holds a work twice."""
    path = source.split("://", 1)[-1]
    parts = [p for p in re.split(r"[\\/]", path) if p]
    stem = re.sub(r"\.(mxl|musicxml|xml|krn|abc)$", "", parts[-1].lower()) if parts else path.lower()
    folder = parts[-2].lower() if len(parts) > 1 else ""
    if "#" in stem:  # ABC tune numbers stay distinct works
        stem, _, tune = stem.partition("#")
        stem = f"{stem}-{tune}"
    norm = lambda s: re.sub(r"[^a-z0-9]+", "-", s).strip("-")  # noqa: E731
    return f"{norm(folder)}/{norm(stem)}" if folder else norm(stem)


def split_of(work: str, *, val_fraction: float, test_fraction: float) -> str:
    h = int(hashlib.sha256(work.encode()).hexdigest()[:12], 16) / 16**12
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


def piece_id_of(source: str) -> str:
    """Unique per input file: the corpus-relative path for the bundled corpus (e.g.
    ``bach/bwv277.krn``, distinct from ``bach/bwv277.mxl``), else the full path or URI."""
    marker = "music21/corpus/"
    return source.split(marker, 1)[1] if marker in source else source


# -- inputs -------------------------------------------------------------------------


def resolve_inputs(spec: str, *, limit: int | None = None, collections: tuple[str, ...] = ()) -> list[str]:
    """Score paths for an input spec: 'music21', a folder, a glob, or an s3:// prefix/glob."""
    from unimusic import storage

    if spec == "music21":
        from unimusic.music21_corpus import list_pieces

        paths = [str(p.path) for p in list_pieces(collections=collections or None)]
    elif storage.is_remote(spec) or any(ch in spec for ch in "*?["):
        paths = storage.list_files(spec, suffixes=SCORE_SUFFIXES)
    else:
        p = Path(spec)
        if p.is_file():
            paths = [str(p)]
        elif p.is_dir():
            paths = sorted(str(x) for x in p.rglob("*") if x.suffix.lower() in SCORE_SUFFIXES and x.is_file())
        else:
            raise InputError(spec, "no such file or folder (and not 'music21', a glob or an s3:// prefix)")
    paths = sorted(paths)
    if limit is not None:
        # A spread, not the alphabetical head: every collection is represented.
        if limit < len(paths):
            step = len(paths) / limit
            paths = [paths[int(i * step)] for i in range(limit)]
    if not paths:
        raise InputError(spec, "no score files found")
    return paths


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    name: str
    sources: tuple[str, ...]


def plan_shards(sources: list[str], config: CorpusConfig) -> list[ShardSpec]:
    """Deterministic shard names from the inputs and the config hash."""
    chash = config.hash()
    out = []
    ordered = sorted(sources)
    for i in range(0, len(ordered), config.pieces_per_shard):
        group = tuple(ordered[i : i + config.pieces_per_shard])
        digest = hashlib.sha256(("\n".join((chash, *group))).encode()).hexdigest()[:16]
        out.append(ShardSpec(f"shard-{digest}", group))
    return out


# -- rows ---------------------------------------------------------------------------


def row_schema():
    import pyarrow as pa

    note = pa.struct(
        [("start", pa.float64()), ("end", pa.float64()), ("pitch", pa.int16()), ("velocity", pa.int16()),
         ("program", pa.int16()), ("is_drum", pa.bool_())]
    )
    window = pa.struct([("start", pa.float64()), ("tokens", pa.list_(pa.int32()))])
    return pa.schema(
        [
            ("piece_id", pa.string()),
            ("variant", pa.string()),
            ("work_id", pa.string()),
            ("source", pa.string()),
            ("system", pa.int32()),
            ("occurrence", pa.int32()),
            ("page", pa.int32()),
            ("split", pa.string()),
            ("image_png", pa.binary()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("measures", pa.list_(pa.int32())),
            ("measure_x", pa.list_(pa.list_(pa.int32()))),
            ("played_measures", pa.list_(pa.int32())),
            ("measure_start", pa.list_(pa.float64())),
            ("measure_end", pa.list_(pa.float64())),
            ("lmx", pa.list_(pa.int32())),
            ("midi_windows", pa.list_(window)),
            ("notes", pa.list_(note)),
            ("audio_flac", pa.binary()),
            ("sample_rate", pa.int32()),
            ("start", pa.float64()),
            ("end", pa.float64()),
            ("engraving", pa.string()),
            ("augmentation", pa.string()),
            ("lmx_codec", pa.string()),
            ("midi_codec", pa.string()),
            ("vocab_hash", pa.string()),
            ("code_version", pa.string()),
            ("config_hash", pa.string()),
        ]
    )


def _occurrences(measures: tuple[int, ...], playback) -> list[list]:
    """Maximal runs of consecutive playback entries that belong to the system."""
    wanted = set(measures)
    runs, current = [], []
    for entry in playback:
        if entry.measure in wanted:
            current.append(entry)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _quantize(t: float, steps_per_second: int) -> float:
    return round(t * steps_per_second) / steps_per_second


def span_midi(notes, codec, *, start: float, end: float) -> tuple[list[dict], list[dict]]:
    """A row's MIDI columns for the span [start, end) s of ``notes`` (already on the codec's grid):
    its event windows (at most the codec's window long) and its notes, both timed from ``start``,
    notes cut at the span's ends."""
    sps = codec.config.steps_per_second
    windows, t = [], start
    while t < end - 1e-9:
        w_end = min(end, _quantize(t + codec.config.window_seconds, sps))
        windows.append({"start": round(t - start, 6), "tokens": codec.encode_window(notes, start=t, end=w_end)})
        t = w_end
    span_notes = [
        {"start": round(max(n.start, start) - start, 6), "end": round(min(n.end, end) - start, 6), "pitch": n.pitch,
         "velocity": n.velocity, "program": n.program, "is_drum": n.is_drum}
        for n in notes if n.start < end and n.end > start
    ]
    return windows, span_notes


VARIANTS = ("score", "piano-reduction")


def build_piece_rows(source: str, data: bytes, config: CorpusConfig, *, variant: str = "score") -> list[dict]:
    """Every row of one score, or of its piano reduction (``variant``; no rows when
    the score has no reduction). Strict: a problem raises InputError naming the stage."""
    import cv2

    from unimusic.render.engrave import engrave_options_for
    from unimusic.render.lmx import linearize
    from unimusic.render.slicing import slice_measures
    from unimusic.render.synthesize import apply_augmentation, cut_segment, draw_augmentation, encode_flac, synthesize
    from unimusic.render.systems import engrave_piece
    from unimusic.scores import musicxml_bytes
    from unimusic.tokens.lmx import LmxCodec
    from unimusic.tokens.midi import MidiEventCodec, notes_from_midi

    def stage(name, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            raise InputError(source, f"{name}: {exc.problem}") from None
        except Exception as exc:  # a library's own exception: still one line, with its stage
            raise InputError(source, f"{name}: {type(exc).__name__}: {exc}") from None

    piece = piece_id_of(source)
    work = work_id(source)  # a reduction stays with its work, so in its split
    split = split_of(work, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    xml = stage("parse", musicxml_bytes, Path(source).name if "://" in source else source, data)
    if variant == "piano-reduction":
        from unimusic.render.reduction import piano_reduction

        xml = stage("piano-reduction", piano_reduction, xml, source=source)
        if xml is None:
            return []
        piece = f"{piece}#piano"
    elif variant != "score":
        raise InputError(source, f"unknown variant {variant!r} (have {', '.join(VARIANTS)})")
    stage("linearize", linearize, xml, source=source)  # fail early on unrepresentable scores
    options = engrave_options_for(piece, seed=config.seed)
    engraved = stage("engrave", engrave_piece, xml, options=options, crop=config.crop, source=source)
    aug = draw_augmentation(piece, seed=config.seed, config=config.synth)
    performance = stage("augment", apply_augmentation, engraved.midi, aug)
    audio = stage("synthesize", synthesize, performance, soundfont=aug.soundfont, sample_rate=config.synth.sample_rate,
                  reverb=aug.reverb)
    buffer = io.BytesIO()
    performance.write(buffer)
    lmx_codec, midi_codec = LmxCodec(), MidiEventCodec(config=config.midi)
    # On the codec's 10 ms grid once, so a row's notes column and its event
    # windows describe exactly the same notes.
    notes = midi_codec.normalize(notes_from_midi(buffer.getvalue(), name=source))
    sps = config.midi.steps_per_second
    scale = 1.0 / aug.tempo_scale
    common = {
        "piece_id": piece, "variant": variant, "work_id": work, "source": source, "split": split,
        "engraving": json.dumps(dataclasses.asdict(options), sort_keys=True),
        "augmentation": json.dumps(dataclasses.asdict(aug), sort_keys=True),
        "lmx_codec": json.dumps({"name": lmx_codec.name, "version": lmx_codec.version, "hash": lmx_codec.hash}),
        "midi_codec": json.dumps({"name": midi_codec.name, "version": midi_codec.version, "hash": midi_codec.hash}),
        "vocab_hash": vocabulary_hash(config), "code_version": __version__, "config_hash": config.hash(),
        "sample_rate": config.synth.sample_rate,
    }
    rows = []
    for system in engraved.systems:
        first, last = system.measures[0], system.measures[-1]
        lmx_tokens = stage(
            "slice", lambda: linearize(slice_measures(engraved.musicxml or xml, first, last + 1, source=source), source=source)
        )
        ok, png = cv2.imencode(".png", system.image)
        if not ok:
            raise InputError(source, f"png: cannot encode system {system.index}")
        for occurrence, run in enumerate(_occurrences(system.measures, engraved.playback)):
            start = _quantize(run[0].start * scale, sps)
            end = _quantize(run[-1].end * scale, sps)
            if end <= start:
                continue
            windows, span_notes = span_midi(notes, midi_codec, start=start, end=end)
            segment = cut_segment(audio, config.synth.sample_rate, start=start, end=end)
            rows.append(
                {
                    **common,
                    "system": system.index, "occurrence": occurrence, "page": system.page,
                    "image_png": png.tobytes(), "height": int(system.image.shape[0]), "width": int(system.image.shape[1]),
                    "measures": list(system.measures),
                    "measure_x": [list(x) for x in system.measure_x],
                    "played_measures": [e.measure for e in run],
                    "measure_start": [e.start * scale - start for e in run],
                    "measure_end": [e.end * scale - start for e in run],
                    "lmx": lmx_codec.encode(lmx_tokens, source=source),
                    "midi_windows": windows,
                    "notes": span_notes,
                    "audio_flac": encode_flac(segment, config.synth.sample_rate),
                    "start": start, "end": end,
                }
            )
    if not rows:
        raise InputError(source, "rows: the score produced no system")
    return rows


def notes_from_row_windows(row: dict, codec) -> tuple[list, object]:
    """Decode a row's MIDI event windows into notes (seconds from the row start).

    The last window of a row may be shorter than the codec's window: notes still
    sounding at the row end are cut there."""
    from unimusic.tokens.midi import Note

    span = row["end"] - row["start"]
    notes, stats = codec.decode([(w["start"], w["tokens"]) for w in row["midi_windows"]])
    clipped = [dataclasses.replace(n, end=min(n.end, span)) if isinstance(n, Note) else n for n in notes]
    return [n for n in clipped if n.end > n.start], stats


def rows_for_source(source: str, data: bytes, config: CorpusConfig) -> tuple[list[dict], list[dict]]:
    """Rows of a score and (if configured) of its piano reduction, and the errors
    (path, stage, message). A failed reduction never costs the score's own rows."""
    def as_error(exc: InputError) -> dict:
        stage_name, _, message = exc.problem.partition(": ")
        return {"path": source, "stage": stage_name if message else "read", "message": message or exc.problem}

    try:
        rows = build_piece_rows(source, data, config)
    except InputError as exc:
        return [], [as_error(exc)]
    errors = []
    if config.piano_reductions:
        try:
            rows += build_piece_rows(source, data, config, variant="piano-reduction")
        except InputError as exc:
            error = as_error(exc)
            error["stage"] = f"piano-reduction/{error['stage']}"
            errors.append(error)
    return rows, errors


@dataclasses.dataclass
class ShardResult:
    shard: str
    rows: int = 0
    pieces: int = 0
    bytes: int = 0
    sha256: str = ""
    rows_per_split: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)  # [{"path", "stage", "message"}]
    skipped: bool = False


def build_shard(spec: ShardSpec, out_dir: str, config: CorpusConfig) -> ShardResult:
    """Build one shard and write it atomically, or report it done if it exists."""
    import pyarrow as pa

    from unimusic import storage

    parquet_path = storage.join(out_dir, "shards", spec.name + ".parquet")
    sidecar_path = storage.join(out_dir, "shards", spec.name + ".json")
    if storage.exists(parquet_path) and storage.exists(sidecar_path):
        result = ShardResult(**json.loads(storage.read_bytes(sidecar_path)))
        result.skipped = True
        return result
    result = ShardResult(spec.name)
    rows: list[dict] = []
    for source in spec.sources:
        try:
            data = storage.read_bytes(source)
        except InputError as exc:
            result.errors.append({"path": source, "stage": "read", "message": exc.problem})
            continue
        piece_rows, errors = rows_for_source(source, data, config)
        result.errors.extend(errors)
        if piece_rows:
            rows.extend(piece_rows)
            result.pieces += 1
    table = pa.Table.from_pylist(rows, schema=row_schema())
    meta = {
        b"unimusic": json.dumps(
            {"config_hash": config.hash(), "code_version": __version__, "vocab_hash": vocabulary_hash(config)}
        ).encode()
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    write_shard_table(table, parquet_path, result)
    # The sidecar is written last: a shard counts as done only once both exist.
    storage.write_bytes(sidecar_path, json.dumps(dataclasses.asdict(result), indent=1).encode())
    return result


def write_shard_table(table, parquet_path: str, result) -> None:
    """Write ``table`` as zstd Parquet at ``parquet_path`` (folder created) and record its rows, bytes,
    sha256 and rows per split on ``result`` (any object with those attributes)."""
    import pyarrow.parquet as pq

    from unimusic import storage

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    payload = buffer.getvalue()
    storage.makedirs(parquet_path.rsplit("/", 1)[0])
    storage.write_bytes(parquet_path, payload)
    result.rows = table.num_rows
    result.bytes = len(payload)
    result.sha256 = hashlib.sha256(payload).hexdigest()
    splits = table.column("split").to_pylist() if "split" in table.column_names else []
    result.rows_per_split = {s: splits.count(s) for s in SPLITS if s in splits}


def write_manifest(out_dir: str, results: Iterable[ShardResult], config: CorpusConfig, *, inputs: str) -> dict:
    from unimusic import storage
    from unimusic.tokens.lmx import LmxCodec
    from unimusic.tokens.midi import MidiEventCodec

    results = sorted(results, key=lambda r: r.shard)
    errors = [e for r in results for e in r.errors]
    manifest = {
        "inputs": inputs,
        "code_version": __version__,
        "config_hash": config.hash(),
        "config": dataclasses.asdict(config),
        "vocab_hash": vocabulary_hash(config),
        "codecs": {
            "lmx": LmxCodec().hash,
            "midi": MidiEventCodec(config=config.midi).hash,
        },
        "shards": [
            {"name": r.shard + ".parquet", "rows": r.rows, "pieces": r.pieces, "bytes": r.bytes, "sha256": r.sha256,
             "rows_per_split": r.rows_per_split}
            for r in results
        ],
        "rows": sum(r.rows for r in results),
        "pieces": sum(r.pieces for r in results),
        "bytes": sum(r.bytes for r in results),
        "rows_per_split": {s: sum(r.rows_per_split.get(s, 0) for r in results) for s in SPLITS},
        "failures": len(errors),
        "errors": errors,
    }
    storage.write_bytes(storage.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1).encode())
    storage.write_bytes(storage.join(out_dir, "errors.parquet"), errors_table(errors))
    return manifest


def errors_table(errors: list[dict]) -> bytes:
    """The errors of a run as Parquet bytes (path, stage, message): one row per failed input or stage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        errors, schema=pa.schema([("path", pa.string()), ("stage", pa.string()), ("message", pa.string())])
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
