"""Imported-set shards: planning, one shard's work, and the manifest.

``pipelines/import_dataset.py`` runs :func:`build_import_shard` on Ray Data actors;
:func:`import_local` is the same work in a plain loop (tests, the benchmark's baseline).
A shard is written atomically and then its sidecar JSON; a rerun skips shards whose
two files exist, so an interrupted import resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Iterable, Sequence

from unimusic.corpus import SPLITS, ShardResult, errors_table, write_shard_table
from unimusic.datasets.base import MODALITIES, Example, ImportConfig, dataset_row_schema
from unimusic.errors import InputError

MODALITY_COLUMNS = {"image": "image_png", "lmx": "lmx", "midi": "notes", "audio": "audio_flac"}


@dataclasses.dataclass(frozen=True)
class ImportShardSpec:
    name: str
    examples: tuple[Example, ...]


def plan_import_shards(examples: Sequence[Example], config: ImportConfig, *, dataset: str) -> list[ImportShardSpec]:
    """Deterministic shard names from the examples' keys and files and the config hash."""
    chash = config.hash()
    ordered = sorted(examples, key=lambda e: e.key)
    out = []
    for i in range(0, len(ordered), config.examples_per_shard):
        group = tuple(ordered[i: i + config.examples_per_shard])
        text = "\n".join([dataset, chash, *(f"{e.key}\t{e.split}\t{e.files}" for e in group)])
        out.append(ImportShardSpec(f"{dataset}-{hashlib.sha256(text.encode()).hexdigest()[:16]}", group))
    return out


def example_to_json(example: Example) -> str:
    return json.dumps(dataclasses.asdict(example))


def example_from_json(text: str) -> Example:
    d = json.loads(text)
    return Example(key=d["key"], split=d["split"], files=tuple(tuple(f) for f in d["files"]), meta=d["meta"],
                   work=d["work"])


def _error(example: Example, exc: Exception) -> dict:
    problem = exc.problem if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    where = exc.source if isinstance(exc, InputError) else example.key
    stage, _, message = problem.partition(": ")
    known = stage in ("read", "parse", "image", "lmx", "audio", "midi", "align", "rows")
    return {"path": where, "stage": stage if known and message else "rows", "message": message if known and message
            else problem}


def build_import_shard(spec: ImportShardSpec, out_dir: str, adapter, config: ImportConfig) -> tuple[ShardResult, dict]:
    """Build one shard of an imported set (every example's rows; a failed example is one error
    record, never the shard) and write it atomically; or report it done if it exists.
    Returns the shard's summary and its rows per modality."""
    import pyarrow as pa

    from unimusic import storage

    parquet_path = storage.join(out_dir, "shards", spec.name + ".parquet")
    sidecar_path = storage.join(out_dir, "shards", spec.name + ".json")
    if storage.exists(parquet_path) and storage.exists(sidecar_path):
        result, modalities = result_from_json(storage.read_bytes(sidecar_path))
        result.skipped = True
        return result, modalities
    result = ShardResult(spec.name)
    rows: list[dict] = []
    for example in spec.examples:
        try:
            example_rows = adapter.rows(example, config)
        except Exception as exc:  # one bad example never costs the shard: it is recorded
            result.errors.append(_error(example, exc))
            continue
        rows.extend(example_rows)
        result.pieces += 1
    table = pa.Table.from_pylist(rows, schema=dataset_row_schema())
    meta = {b"unimusic": json.dumps({"dataset": adapter.info.name, "config_hash": config.hash()}).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    write_shard_table(table, parquet_path, result)
    modalities = {m: table.num_rows - table.column(c).null_count for m, c in MODALITY_COLUMNS.items()}
    # The sidecar is written last: a shard counts as done only once both exist.
    storage.write_bytes(sidecar_path, json.dumps(dataclasses.asdict(result) | {"modalities": modalities}, indent=1).encode())
    return result, modalities


def result_from_json(text: str | bytes) -> tuple[ShardResult, dict]:
    d = json.loads(text)
    modalities = d.pop("modalities", {}) or {}
    return ShardResult(**d), modalities


def write_import_manifest(out_dir: str, *, adapter, source: str, config: ImportConfig, results: Iterable,
                          scan_errors: Sequence[dict], examples: Sequence[Example]) -> dict:
    """``manifest.json`` (a corpus manifest plus the set's name, licence and modality counts),
    ``errors.parquet`` (scan errors first, then each shard's), and the adapter's extra files
    (its optional ``extras(examples, out_dir)`` hook, e.g. the video pipeline's metadata CSV)."""
    from unimusic import __version__, storage

    hook = getattr(adapter, "extras", None)
    extras = list(hook(examples, out_dir)) if hook is not None else []
    # What the set's authors left out of every split on purpose (e.g. Slakh2100's omitted/ tracks).
    excluded = adapter.excluded(source) if hasattr(adapter, "excluded") else {}

    pairs = sorted(results, key=lambda p: p[0].shard)
    errors = list(scan_errors) + [e for r, _ in pairs for e in r.errors]
    info = adapter.info
    modalities = {m: sum(mods.get(m, 0) for _, mods in pairs) for m in MODALITIES}
    manifest = {
        "dataset": info.name, "title": info.title, "licence": info.licence, "commercial_use": info.commercial_use,
        "homepage": info.homepage, "citation": info.citation, "inputs": source,
        "code_version": __version__, "config_hash": config.hash(), "config": dataclasses.asdict(config),
        "examples": len(examples), "excluded": excluded, "extras": extras,
        "shards": [{"name": r.shard + ".parquet", "rows": r.rows, "pieces": r.pieces, "bytes": r.bytes,
                    "sha256": r.sha256, "rows_per_split": r.rows_per_split} for r, _ in pairs],
        "rows": sum(r.rows for r, _ in pairs), "pieces": sum(r.pieces for r, _ in pairs),
        "bytes": sum(r.bytes for r, _ in pairs),
        "rows_per_split": {s: sum(r.rows_per_split.get(s, 0) for r, _ in pairs) for s in SPLITS},
        "rows_with": modalities,
        "failures": len(errors), "errors": errors,
    }
    storage.write_bytes(storage.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1).encode())
    storage.write_bytes(storage.join(out_dir, "errors.parquet"), errors_table(errors))
    return manifest


def import_local(name: str, source: str, out_dir: str, *, config: ImportConfig = ImportConfig(),
                 limit: int | None = None) -> dict:
    """The import without Ray (one process): scan, build every shard, write the manifest."""
    from unimusic import datasets, storage

    adapter = datasets.get(name)
    examples, scan_errors = adapter.scan(source)
    examples = limit_examples(examples, limit)
    storage.makedirs(out_dir)
    specs = plan_import_shards(examples, config, dataset=adapter.info.name)
    results = [build_import_shard(spec, out_dir, adapter, config) for spec in specs]
    return write_import_manifest(out_dir, adapter=adapter, source=source, config=config, results=results,
                                 scan_errors=scan_errors, examples=examples)


def limit_examples(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """The first ``limit`` examples of each split (stable order), so every split stays represented."""
    ordered = sorted(examples, key=lambda e: e.key)
    if not limit:
        return ordered
    out, seen = [], {}
    for e in ordered:
        if seen.get(e.split, 0) < limit:
            seen[e.split] = seen.get(e.split, 0) + 1
            out.append(e)
    return out
