"""The tokenize stage: corpus rows + discrete codes of their image and their audio.

A corpus row (:func:`unimusic.corpus.row_schema`) holds a staff-system crop
(``image_png``) and its audio (``audio_flac``). This module adds the codes of a
score-image RQ-VAE (:mod:`unimusic.models.rqvae`) and of a DAC audio codec
(:mod:`unimusic.models.audio_codec`) to every row, as new columns:

* ``image_codes`` (list<int16>): the ``[K, H/16, W/16]`` codes, flattened C-order,
  with ``image_code_shape`` (list<int32> ``[K, h, w]``) and ``image_tokenizer``
  (the tokenizer hash of :func:`unimusic.models.shipped.tokenizer_hash`);
* ``audio_codes`` (list<int16>): the ``[K, T]`` codes, flattened C-order, with
  ``audio_code_shape`` (``[K, T]``), ``audio_frame_rate`` (frames per second) and
  ``audio_tokenizer``.

Either tokenizer may be left out: its columns are then null. Read codes back with
:func:`decode_image_codes` / :func:`decode_audio_codes`.

The per-row preprocessing (:func:`image_codes_for_png`, :func:`audio_codes_for_flac`)
is what inference uses too, so training and serving see the same codes. The shard
work (:func:`tokenize_shard`) writes ``OUT/shards/<corpus shard>-<tokset>.parquet``
atomically and then its sidecar JSON, where ``tokset`` (:func:`tokenizer_set`)
hashes both tokenizer hashes and the code version: the same corpus with the same
tokenizers gives the same names (a rerun skips done shards), other weights give
other names. ``pipelines/tokenize.py`` runs it on Ray Data.

A row whose image or audio cannot be decoded or encoded is dropped and recorded
as an error (path ``<shard>#row=<i>``, stage ``tokenize-image`` / ``tokenize-audio``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Iterable

import numpy as np

from unimusic import __version__
from unimusic.errors import InputError

# Bump when the columns or the preprocessing change: it is part of every shard name.
TOKENIZE_FORMAT = 1
MODALITIES = ("image", "audio")
INT16_LIMIT = 2**15


def token_fields() -> list:
    """The columns this stage appends to a corpus row (pyarrow fields)."""
    import pyarrow as pa

    return [
        pa.field("image_codes", pa.list_(pa.int16())),
        pa.field("image_code_shape", pa.list_(pa.int32())),
        pa.field("audio_codes", pa.list_(pa.int16())),
        pa.field("audio_code_shape", pa.list_(pa.int32())),
        pa.field("audio_frame_rate", pa.float64()),
        pa.field("image_tokenizer", pa.string()),
        pa.field("audio_tokenizer", pa.string()),
    ]


TOKEN_COLUMNS = ("image_codes", "image_code_shape", "audio_codes", "audio_code_shape", "audio_frame_rate",
                 "image_tokenizer", "audio_tokenizer")


def tokenizer_set(image_hash: str | None, audio_hash: str | None) -> str:
    """Short id of a (image tokenizer, audio tokenizer, code version) combination; part of shard names."""
    from unimusic.tokens.codec import content_hash

    if image_hash is None and audio_hash is None:
        raise InputError("tokenizers", "neither an image nor an audio tokenizer given")
    return content_hash({"image": image_hash, "audio": audio_hash, "code": __version__, "format": TOKENIZE_FORMAT})


def output_shard_name(source_shard: str, tokset: str) -> str:
    """``shard-XXXX-<tokset>`` for a corpus shard path or name (``shard-XXXX.parquet``)."""
    stem = os.path.basename(source_shard.rstrip("/"))
    if stem.endswith(".parquet"):
        stem = stem[: -len(".parquet")]
    return f"{stem}-{tokset}"


# -- per row --------------------------------------------------------------------


def decode_png_gray(png_bytes: bytes, *, source: str = "image_png") -> np.ndarray:
    """PNG (or any image OpenCV reads) bytes -> uint8 gray ``[H, W]``, 0 = ink, 255 = paper."""
    import cv2

    if not isinstance(png_bytes, (bytes, bytearray, memoryview)) or len(png_bytes) == 0:
        raise InputError(source, "no image bytes")
    image = cv2.imdecode(np.frombuffer(bytes(png_bytes), np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or image.ndim != 2 or image.size == 0:
        raise InputError(source, "not a decodable image")
    return image


def _as_int16(codes: np.ndarray, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= INT16_LIMIT):
        raise InputError(what, f"code values {int(codes.min())}..{int(codes.max())} do not fit int16")
    return codes.astype(np.int16)


def image_codes_for_png(model, png_bytes: bytes) -> np.ndarray:
    """The RQ-VAE codes ``[K, H/p, W/p]`` (int16) of one gray crop given as PNG bytes.

    The crop is encoded as is (no resizing): both sides must be multiples of the
    model's patch (16), as corpus crops are; otherwise InputError.
    """
    image = decode_png_gray(png_bytes)
    codes = model.encode(image[None])[0]
    return _as_int16(codes.cpu().numpy(), "image codes")


def audio_codes_for_flac(codec, flac_bytes: bytes) -> np.ndarray:
    """The DAC codes ``[K, T]`` (int16) of one audio clip given as FLAC (or WAV...) bytes.

    Mono float audio at the file's rate; the codec resamples to its own rate, so
    ``T = ceil(n * codec.sample_rate / sr / hop)``.
    """
    from unimusic.render.synthesize import decode_audio

    audio, sr = decode_audio(flac_bytes, name="audio_flac")
    return _as_int16(codec.encode(audio, sr), "audio codes")


def _reshape(row: dict, codes_key: str, shape_key: str) -> np.ndarray | None:
    codes, shape = row.get(codes_key), row.get(shape_key)
    if codes is None or shape is None:
        return None
    shape = tuple(int(s) for s in shape)
    flat = np.asarray(codes, dtype=np.int16)
    if int(np.prod(shape)) != flat.size:
        raise InputError(codes_key, f"{flat.size} codes do not fill the recorded shape {list(shape)}")
    return flat.reshape(shape)


def decode_image_codes(row: dict) -> np.ndarray | None:
    """``[K, h, w]`` int16 image codes of a tokenized row (None if it has none)."""
    return _reshape(row, "image_codes", "image_code_shape")


def decode_audio_codes(row: dict) -> np.ndarray | None:
    """``[K, T]`` int16 audio codes of a tokenized row (None if it has none)."""
    return _reshape(row, "audio_codes", "audio_code_shape")


# -- tokenizers -------------------------------------------------------------------


def describe_tokenizer(path: str | os.PathLike, modality: str) -> dict:
    """What the manifest records of a tokenizer: hash, weights path, kind, format, config."""
    from unimusic.models.shipped import tokenizer_hash
    from unimusic.models.weights import read_meta

    meta = read_meta(path)
    return {
        "modality": modality,
        "hash": tokenizer_hash(path),
        "weights": os.fspath(path),
        "kind": meta.get("kind"),
        "format_version": meta.get("format_version"),
        "config": meta.get("config"),
        "config_hash": meta.get("config_hash"),
        "sha256": meta.get("sha256"),
    }


@dataclasses.dataclass
class Tokenizers:
    """The loaded models of one run (either may be None) and their hashes."""

    image_model: object = None
    image_hash: str | None = None
    codec: object = None
    audio_hash: str | None = None

    @classmethod
    def load(cls, image_weights: str | os.PathLike | None, audio_weights: str | os.PathLike | None,
             *, device: str = "cpu") -> "Tokenizers":
        """Load the weights (eval mode); InputError for a missing, changed or wrong-kind file."""
        from unimusic.models.shipped import tokenizer_hash

        out = cls()
        if image_weights is not None:
            from unimusic.models.rqvae import load_rqvae

            out.image_hash = tokenizer_hash(image_weights)
            out.image_model, config = load_rqvae(image_weights, device=device)
            if config.codebook_size > INT16_LIMIT:
                raise InputError(os.fspath(image_weights), f"codebook_size {config.codebook_size} does not fit int16 codes")
        if audio_weights is not None:
            from unimusic.models.audio_codec import load_codec

            out.audio_hash = tokenizer_hash(audio_weights)
            out.codec = load_codec(audio_weights, device=device)
            if out.codec.config.codebook_size > INT16_LIMIT:
                raise InputError(os.fspath(audio_weights),
                                 f"codebook_size {out.codec.config.codebook_size} does not fit int16 codes")
        if out.image_model is None and out.codec is None:
            raise InputError("tokenizers", "neither an image nor an audio tokenizer given")
        return out

    @property
    def tokset(self) -> str:
        return tokenizer_set(self.image_hash, self.audio_hash)


# -- per shard --------------------------------------------------------------------


def tokenize_table(table, tokenizers: Tokenizers, *, source: str = "shard"):
    """``(tokenized table, errors, audio seconds)`` for a table of corpus rows.

    Keeps every input column of the rows that tokenized; a row whose image or audio
    fails is dropped and gives one error ``{"path": "<source>#row=<i>", "stage", "message"}``.
    """
    import pyarrow as pa

    columns = set(table.column_names)
    need = (["image_png", "height", "width"] if tokenizers.image_model is not None else []) + (
        ["audio_flac"] if tokenizers.codec is not None else [])
    missing = [c for c in need if c not in columns]
    if missing:
        raise InputError(source, f"not corpus rows: no column(s) {missing}")
    clash = [c for c in TOKEN_COLUMNS if c in columns]
    if clash:
        raise InputError(source, f"already tokenized (has column(s) {clash})")
    pylist = lambda name: table.column(name).to_pylist() if name in columns else [None] * table.num_rows  # noqa: E731
    pngs, heights, widths = pylist("image_png"), pylist("height"), pylist("width")
    flacs = pylist("audio_flac")
    labels = [f"{p} system {s}" for p, s in zip(pylist("piece_id"), pylist("system"))]

    keep: list[int] = []
    image_codes: list = []
    audio_codes: list = []
    errors: list[dict] = []
    audio_seconds = 0.0

    def fail(i: int, stage: str, exc: Exception) -> None:
        problem = exc.problem if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        errors.append({"path": f"{source}#row={i}", "stage": stage, "message": f"{labels[i]}: {problem}"})

    for i in range(table.num_rows):
        img = aud = None
        # Imported data sets have rows without an image (MAESTRO) or without audio (OLiMPiC):
        # the missing form simply gets no codes.
        if tokenizers.image_model is not None and pngs[i] is not None:
            try:
                img = image_codes_for_png(tokenizers.image_model, pngs[i])
                patch = tokenizers.image_model.patch
                if (heights[i], widths[i]) != (img.shape[1] * patch, img.shape[2] * patch):
                    raise InputError("image_png", f"image is {img.shape[1] * patch}x{img.shape[2] * patch}, "
                                                  f"the row says {heights[i]}x{widths[i]}")
            except Exception as exc:  # never lose the shard for one row
                fail(i, "tokenize-image", exc)
                continue
        if tokenizers.codec is not None and flacs[i] is not None:
            try:
                aud = audio_codes_for_flac(tokenizers.codec, flacs[i])
            except Exception as exc:
                fail(i, "tokenize-audio", exc)
                continue
            audio_seconds += aud.shape[1] / tokenizers.codec.frame_rate
        keep.append(i)
        image_codes.append(img)
        audio_codes.append(aud)

    out = table.take(pa.array(keep, type=pa.int64()))
    n = len(keep)
    has_image, has_audio = tokenizers.image_model is not None, tokenizers.codec is not None
    fields = {f.name: f for f in token_fields()}
    values = {
        "image_codes": [None if c is None else c.ravel() for c in image_codes] if has_image else [None] * n,
        "image_code_shape": [None if c is None else list(c.shape) for c in image_codes] if has_image else [None] * n,
        "audio_codes": [None if c is None else c.ravel() for c in audio_codes] if has_audio else [None] * n,
        "audio_code_shape": [None if c is None else list(c.shape) for c in audio_codes] if has_audio else [None] * n,
        "audio_frame_rate": [None if c is None else float(tokenizers.codec.frame_rate) for c in audio_codes]
        if has_audio else [None] * n,
        "image_tokenizer": [tokenizers.image_hash] * n,
        "audio_tokenizer": [tokenizers.audio_hash] * n,
    }
    for name in TOKEN_COLUMNS:
        out = out.append_column(fields[name], pa.array(values[name], type=fields[name].type))
    return out, errors, audio_seconds


@dataclasses.dataclass
class TokenizeResult:
    shard: str  # output name without suffix
    source: str  # the corpus shard (file name)
    rows: int = 0
    input_rows: int = 0
    bytes: int = 0
    sha256: str = ""
    audio_seconds: float = 0.0
    rows_per_split: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)  # [{"path", "stage", "message"}]
    skipped: bool = False


def done_result(source_path: str, out_dir: str, tokset: str) -> TokenizeResult | None:
    """The recorded result (``skipped``) when the shard's output and its sidecar both exist, else None."""
    from unimusic import storage

    name = output_shard_name(source_path, tokset)
    parquet_path = storage.join(out_dir, "shards", name + ".parquet")
    sidecar_path = storage.join(out_dir, "shards", name + ".json")
    if not (storage.exists(sidecar_path) and storage.exists(parquet_path)):
        return None
    result = TokenizeResult(**json.loads(storage.read_bytes(sidecar_path)))
    result.skipped = True
    return result


def tokenize_shard(source_path: str, out_dir: str, tokenizers: Tokenizers) -> TokenizeResult:
    """Tokenize one corpus shard into ``out_dir/shards/<name>-<tokset>.parquet`` (+ sidecar), or
    report it done if both files exist. An unreadable shard is an error of the result, not an exception."""
    import pyarrow.parquet as pq

    from unimusic import storage
    from unimusic.corpus import write_shard_table

    done = done_result(source_path, out_dir, tokenizers.tokset)
    if done is not None:
        return done
    name = output_shard_name(source_path, tokenizers.tokset)
    parquet_path = storage.join(out_dir, "shards", name + ".parquet")
    sidecar_path = storage.join(out_dir, "shards", name + ".json")
    result = TokenizeResult(name, os.path.basename(source_path))
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(source_path)))
        out, errors, result.audio_seconds = tokenize_table(table, tokenizers, source=source_path)
    except InputError as exc:
        result.errors.append({"path": source_path, "stage": "tokenize-read", "message": exc.problem})
        return result  # nothing written: a rerun tries again
    except Exception as exc:  # a corrupt Parquet file: pyarrow's own error
        result.errors.append({"path": source_path, "stage": "tokenize-read", "message": f"{type(exc).__name__}: {exc}"})
        return result
    result.input_rows = table.num_rows
    result.errors = errors
    old = json.loads((table.schema.metadata or {}).get(b"unimusic", b"{}") or b"{}")
    meta = dict(old, image_tokenizer=tokenizers.image_hash, audio_tokenizer=tokenizers.audio_hash,
                tokset=tokenizers.tokset, tokenize_format=TOKENIZE_FORMAT, tokenize_code_version=__version__,
                source_shard=result.source)
    out = out.replace_schema_metadata({**(out.schema.metadata or {}), b"unimusic": json.dumps(meta).encode()})
    write_shard_table(out, parquet_path, result)
    result.audio_seconds = round(result.audio_seconds, 3)
    # The sidecar is written last: a shard counts as done only once both exist.
    storage.write_bytes(sidecar_path, json.dumps(dataclasses.asdict(result), indent=1).encode())
    return result


# -- corpus level -----------------------------------------------------------------


def read_corpus_manifest(corpus_dir: str) -> dict:
    """The manifest of a built corpus; InputError when ``corpus_dir`` is not one (or is already tokenized)."""
    from unimusic import storage

    path = storage.join(corpus_dir, "manifest.json")
    if not storage.exists(path):
        raise InputError(corpus_dir, "not a corpus: no manifest.json (build one with `unimusic corpus build`)")
    try:
        manifest = json.loads(storage.read_bytes(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise InputError(path, "not a corpus manifest (no 'shards' list)")
    if "tokenizers" in manifest:
        raise InputError(corpus_dir, "is already a tokenized corpus; give the corpus it was made from")
    if not manifest["shards"]:
        raise InputError(corpus_dir, "corpus has no shards")
    return manifest


def corpus_shard_paths(corpus_dir: str, manifest: dict) -> list[str]:
    """Full paths of the shards a corpus manifest lists (InputError for a missing file)."""
    from unimusic import storage

    names = [s["name"] for s in manifest["shards"] if isinstance(s, dict) and s.get("name")]
    if not names:
        raise InputError(storage.join(corpus_dir, "manifest.json"), "lists no shard names")
    present = set(storage.list_files(storage.join(corpus_dir, "shards"), suffixes=(".parquet",))) \
        if storage.exists(storage.join(corpus_dir, "shards")) else set()
    paths = [storage.join(corpus_dir, "shards", n) for n in names]
    missing = [p for p in paths if p not in present and os.path.abspath(p) not in present]
    if missing:
        raise InputError(missing[0], f"listed in the manifest but missing ({len(missing)} of {len(paths)} shards)")
    return paths


def write_manifest(out_dir: str, results: Iterable[TokenizeResult], *, corpus_dir: str, corpus_manifest: dict,
                   tokenizers: dict) -> dict:
    """Write ``out_dir/manifest.json`` and ``out_dir/errors.parquet``; returns the manifest.

    ``tokenizers``: ``{"image": describe_tokenizer(...) or None, "audio": ...}``.
    """
    from unimusic import storage
    from unimusic.corpus import SPLITS, errors_table

    results = sorted(results, key=lambda r: r.shard)
    errors = [e for r in results for e in r.errors]
    image, audio = tokenizers.get("image"), tokenizers.get("audio")
    manifest = {
        "source": {
            "corpus": corpus_dir,
            "config_hash": corpus_manifest.get("config_hash"),
            "vocab_hash": corpus_manifest.get("vocab_hash"),
            "code_version": corpus_manifest.get("code_version"),
            "rows": corpus_manifest.get("rows"),
        },
        # The corpus identities, as a corpus manifest has them (readers check these).
        "config_hash": corpus_manifest.get("config_hash"),
        "vocab_hash": corpus_manifest.get("vocab_hash"),
        "codecs": corpus_manifest.get("codecs"),
        "code_version": __version__,
        "tokenize_format": TOKENIZE_FORMAT,
        "tokset": tokenizer_set(image and image["hash"], audio and audio["hash"]),
        "tokenizers": {"image": image, "audio": audio},
        "shards": [
            {"name": r.shard + ".parquet", "source": r.source, "rows": r.rows, "input_rows": r.input_rows,
             "bytes": r.bytes, "sha256": r.sha256, "audio_seconds": r.audio_seconds, "rows_per_split": r.rows_per_split}
            for r in results if r.sha256
        ],
        "rows": sum(r.rows for r in results),
        "input_rows": sum(r.input_rows for r in results),
        "bytes": sum(r.bytes for r in results),
        "audio_seconds": round(sum(r.audio_seconds for r in results), 3),
        "rows_per_split": {s: sum(r.rows_per_split.get(s, 0) for r in results) for s in SPLITS},
        "failures": len(errors),
        "errors": errors,
    }
    storage.write_bytes(storage.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1).encode())
    storage.write_bytes(storage.join(out_dir, "errors.parquet"), errors_table(errors))
    return manifest
