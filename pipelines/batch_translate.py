"""Ray Data job: translate every file of a folder, glob or ``s3://`` prefix to one target.

    python -m pipelines.batch_translate scores/ --to midi --out midi/
    unimusic translate-batch 's3://bucket/scans/**/*.png' --to musicxml --out s3://bucket/omr/

Inputs are the files with a supported extension (recursively under a folder or an
S3 prefix; a glob decides its own depth). Each keeps its path relative to the
source root, so ``OUT/<relative stem>.<target ext>`` mirrors the source tree (two
inputs that would share an output, ``a.mid`` and ``a.musicxml``, keep their full
names: ``a.mid.musicxml``...).

Inputs still to do are Ray Data rows handled in batches by actors
(:class:`BatchTranslator`, an ``ActorPoolStrategy`` pool): each actor loads the
exported checkpoint once, and only when a modality it meets needs the model
(:func:`~unimusic.inference.needs_model`); the deterministic converters need none.
Per batch an actor reads each input (:mod:`unimusic.storage`), detects it
(:func:`~unimusic.io_files.read_bytes`), translates the inputs of one modality
together (:meth:`~unimusic.inference.Translator.translate_many`), encodes the
result (:func:`~unimusic.io_files.encode_output`) and writes it atomically (local)
or with one PUT (S3). A bad input becomes a ``failed`` row naming it; it never
stops the batch.

The driver writes ``OUT/manifest.jsonl`` (one JSON row per input ever translated
into ``OUT``: input, output, files, status, error, modality, hops, seconds,
warnings; merged with the previous manifest) and ``OUT/summary.json`` (this run's
counts and time). A rerun skips the inputs whose manifest row is ``done`` with the
same output and whose files still exist, unless ``overwrite``. Outputs are written
atomically, so after a killed run (no manifest rows for its work) an input whose output
exists is skipped too, and recorded as done.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings as warnings_mod
from typing import Sequence

from unimusic.errors import InputError
from unimusic.inference import Options
from unimusic.io_files import Limits

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"


def input_suffixes() -> tuple[str, ...]:
    """Extensions of the files a batch picks up (those :func:`~unimusic.io_files.read_bytes` knows)."""
    from unimusic.io_files import _EXT_KIND

    return tuple(sorted(_EXT_KIND))


def _guess_modality(path: str) -> str | None:
    from unimusic.io_files import _EXT_KIND

    kind = _EXT_KIND.get(os.path.splitext(path)[1].lower())
    return "image" if kind == "pdf" else kind


# -- listing and planning ------------------------------------------------------------


def _source_root(src: str) -> str:
    """The folder (ending in '/') that relative paths of ``src``'s files start from."""
    from unimusic import storage

    if storage.is_remote(src):
        if storage._has_glob(src):
            literal = storage._literal_prefix(src)
            return literal[: literal.rfind("/") + 1]
        bucket, key = storage._split_s3(src)
        return f"s3://{bucket}/" + (key.rstrip("/") + "/" if key.strip("/") else "")
    path = os.path.abspath(src)
    if storage._has_glob(src):
        literal = storage._literal_prefix(path)
        return literal[: literal.rfind("/") + 1]
    if os.path.isfile(path):
        return os.path.dirname(path) + "/"
    return path.rstrip("/") + "/"


def _inside(path: str, folder: str) -> bool:
    from unimusic import storage

    if storage.is_remote(path) != storage.is_remote(folder):
        return False
    if not storage.is_remote(folder):
        folder = os.path.abspath(folder)
    return path.startswith(folder.rstrip("/") + "/")


def list_inputs(src: str, *, exclude: str | None = None) -> list[tuple[str, str]]:
    """``(full path, path relative to the source root)`` of every input file of ``src``
    (folder, glob or ``s3://`` prefix), files under ``exclude`` (the output folder) left out."""
    from unimusic import storage

    src = os.fspath(src)
    root = _source_root(src)
    out = []
    for path in storage.list_files(src, suffixes=input_suffixes()):
        if exclude and _inside(path, exclude):
            continue
        rel = path[len(root):] if path.startswith(root) else os.path.basename(path)
        out.append((path, rel.lstrip("/")))
    return out


def plan_outputs(rels: Sequence[str], to: str) -> list[str]:
    """Relative output names: ``<stem><ext>``, or ``<name><ext>`` where stems collide."""
    from unimusic.io_files import TARGET_EXT

    ext = TARGET_EXT[to]
    stems = [os.path.splitext(r)[0] for r in rels]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [(s if counts[s] == 1 else r) + ext for s, r in zip(stems, rels)]


def read_manifest(out: str) -> dict[str, dict]:
    """The previous run's rows by input (empty when there is none)."""
    from unimusic import storage

    path = storage.join(out, MANIFEST)
    if not storage.exists(path):
        return {}
    rows = {}
    for line in storage.read_bytes(path).decode("utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a damaged line: that input is simply translated again
        if isinstance(row, dict) and "input" in row:
            rows[str(row["input"])] = row
    return rows


def _already_done(row: dict | None, output: str) -> bool:
    from unimusic import storage

    if not row or row.get("status") != "done" or row.get("output") != output:
        return False
    files = row.get("files") or [output]
    return all(storage.exists(f) for f in files)


# -- the actor -------------------------------------------------------------------------


class BatchTranslator:
    """Ray Data callable class: a batch of ``{input, output}`` rows in, one JSON result row each out.

    The model is loaded once per actor, on the first input whose modality needs it."""

    def __init__(self, *, to: str, checkpoint: str | None, via: tuple, options: Options, limits: Limits,
                 threads: int | None = 1):
        from unimusic.inference import Translator

        if threads:
            import torch

            torch.set_num_threads(threads)  # one actor per CPU
        self.to, self.checkpoint, self.via = to, checkpoint, tuple(via)
        self.options, self.limits = options, limits
        self.converters = Translator()
        self.model = None

    def _translator_for(self, modality: str):
        from unimusic.inference import Translator, needs_model

        if not needs_model(modality, self.to, via=self.via, engine=self.options.engine):
            return self.converters
        if self.model is None:
            self.model = Translator.load(self.checkpoint)
        return self.model

    def __call__(self, batch: dict) -> dict:
        from unimusic import io_files, storage

        rows, loaded = [], {}  # loaded: modality -> [(row index, Loaded, seconds so far)]
        for src, dst in zip(batch["input"], batch["output"]):
            src, dst = str(src), str(dst)
            row = {"input": src, "output": dst, "files": [], "status": "failed", "error": None,
                   "modality": None, "hops": [], "seconds": 0.0, "warnings": []}
            rows.append(row)
            t0 = time.perf_counter()
            try:
                item = io_files.read_bytes(storage.read_bytes(src), name=src, limits=self.limits)
            except InputError as exc:
                row["error"] = str(exc)
            except Exception as exc:  # a library failing on odd content: still this input's row
                row["error"] = f"{src}: cannot read ({type(exc).__name__}: {exc})"
            else:
                row["modality"] = item.modality
                row["warnings"] = [f"{src}: {w}" for w in item.warnings]
                loaded.setdefault(item.modality, []).append((len(rows) - 1, item))
            row["seconds"] = time.perf_counter() - t0
        for modality, items in loaded.items():
            try:
                translator = self._translator_for(modality)
                results = translator.translate_many([it.value for _, it in items], self.to, via=self.via,
                                                    options=self.options, sources=[it.source for _, it in items])
            except Exception as exc:  # a whole group failed (e.g. the checkpoint would not load)
                message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
                for i, it in items:
                    rows[i]["error"] = f"{it.source}: {message}" if not message.startswith(it.source) else message
                continue
            for (i, it), result in zip(items, results):
                row = rows[i]
                row["hops"] = list(result.hops)
                row["warnings"] += list(result.warnings)
                row["seconds"] += result.seconds / len(items)  # the group is translated together
                if result.error:
                    row["error"] = result.error
                    continue
                t0 = time.perf_counter()
                try:
                    with warnings_mod.catch_warnings(record=True) as caught:
                        warnings_mod.simplefilter("always")
                        encoded = io_files.encode_output(result.value, _relative_name(row["output"]))
                    row["warnings"] += [str(w.message) for w in caught]
                    files = []
                    for path, data in encoded:
                        full = _sibling(row["output"], path.name)
                        storage.write_bytes(full, data)
                        files.append(full)
                    row["files"], row["status"] = files, "done"
                    if result.invalid_tokens:
                        row["warnings"].append(f"{result.invalid_tokens} invalid model tokens dropped")
                except InputError as exc:
                    row["error"] = f"{it.source}: {exc}"
                except Exception as exc:
                    row["error"] = f"{it.source}: cannot write {row['output']} ({type(exc).__name__}: {exc})"
                row["seconds"] += time.perf_counter() - t0
        for row in rows:
            row["seconds"] = round(row["seconds"], 3)
        return {"row": [json.dumps(r) for r in rows]}


def _relative_name(output: str) -> str:
    """A plain file name with the output's extension, for :func:`encode_output` (which uses
    ``pathlib`` and so must not see ``s3://``)."""
    return os.path.basename(output.rstrip("/"))


def _sibling(output: str, name: str) -> str:
    """``name`` in the folder of ``output`` (an S3 URL or a local path)."""
    cut = output.rstrip("/").rfind("/")
    return output[: cut + 1] + name if cut >= 0 else name


# -- the driver --------------------------------------------------------------------------


def translate_batch(
    src: str,
    *,
    to: str,
    out: str,
    checkpoint: str | None = None,
    via: Sequence[str] = (),
    options: Options = Options(),
    actors: int | None = None,
    batch_size: int = 8,
    limits: Limits = Limits(),
    overwrite: bool = False,
    progress: bool = False,
    num_cpus: int | None = None,
) -> dict:
    """Translate every input of ``src`` to ``to`` into ``out``; returns the summary (also in
    ``out/summary.json``): inputs, done, failed, skipped, seconds, inputs_per_second, actors,
    manifest. InputError for unusable arguments (no inputs, an unknown target)."""
    import ray

    from pipelines.build_corpus import forwarded_env, init_ray
    from unimusic import storage
    from unimusic.inference import needs_model, plan_hops

    src, out = os.fspath(src), os.fspath(out)
    via = tuple(via)
    plan_hops("lmx", to, via=via, engine=options.engine)  # refuses an unknown target or --via step
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError("--batch-size", f"must be an integer >= 1, got {batch_size!r}")
    if actors is not None and (not isinstance(actors, int) or actors < 1):
        raise InputError("--actors", f"must be an integer >= 1, got {actors!r}")
    if not storage.is_remote(out):
        out = os.path.abspath(out)
    found = list_inputs(src, exclude=out)
    if not found:
        raise InputError(src, "no input files found (supported extensions: " + " ".join(input_suffixes()) + ")")
    outputs = [storage.join(out, name) for name in plan_outputs([rel for _, rel in found], to)]
    inputs = [path for path, _ in found]
    if any(o == i for o, i in zip(outputs, inputs)):
        raise InputError(out, "an output would overwrite its input; give another --out")
    guessed = {_guess_modality(p) for p in inputs} - {None}
    model_needed = any(_needs_model_safely(needs_model, m, to, via, options.engine) for m in guessed)
    if model_needed and checkpoint:
        cp = os.fspath(checkpoint)
        if not (os.path.isfile(cp + ".safetensors") and os.path.isfile(cp + ".json")):
            raise InputError(cp, "no exported translator here (expected .safetensors and .json)")
        checkpoint = os.path.abspath(cp)
    storage.makedirs(out)
    t0 = time.perf_counter()
    previous = read_manifest(out)
    todo, skipped = [], []
    for path, dst in zip(inputs, outputs):
        row = previous.get(path)
        # outputs are written atomically, so one without a manifest row is complete: the run
        # that wrote it was killed before its manifest
        if not overwrite and (_already_done(row, dst) or row is None and storage.exists(dst)):
            skipped.append((path, dst))
        else:
            todo.append({"input": path, "output": dst})
    rows: list[dict] = []
    workers = 0
    if todo:
        init_ray(num_cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = max(1, min(actors or cpus, len(todo)))
        blocks = min(len(todo), max(workers * 2, math.ceil(len(todo) / batch_size)))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map_batches(
            BatchTranslator,
            fn_constructor_kwargs={"to": to, "checkpoint": checkpoint, "via": via, "options": options,
                                   "limits": limits},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=min(1.0, cpus / workers),
            **forwarded_env(),
        )
        rows = [json.loads(r["row"]) for r in ds.iter_rows()]
    seconds = time.perf_counter() - t0
    merged = dict(previous)
    for row in rows:
        merged[row["input"]] = row
    for path, dst in skipped:
        found = {"input": path, "output": dst, "files": [dst], "error": None, "modality": None, "hops": [],
                 "seconds": 0.0, "warnings": ["output found from an interrupted earlier run"]}
        merged[path] = {**previous.get(path, found), "status": "done"}
    manifest_path = storage.join(out, MANIFEST)
    storage.write_bytes(manifest_path, "".join(json.dumps(merged[k]) + "\n" for k in sorted(merged)).encode("utf-8"))
    done = sum(r["status"] == "done" for r in rows)
    summary = {
        "src": src, "to": to, "out": out, "engine": options.engine, "via": list(via),
        "inputs": len(inputs), "done": done, "failed": len(rows) - done, "skipped": len(skipped),
        "seconds": round(seconds, 3),
        "inputs_per_second": round(len(rows) / seconds, 3) if rows and seconds > 0 else 0.0,
        "actors": workers, "batch_size": batch_size, "manifest": manifest_path,
    }
    storage.write_bytes(storage.join(out, SUMMARY), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def _needs_model_safely(needs_model, modality, to, via, engine) -> bool:
    try:
        return needs_model(modality, to, via=via, engine=engine)
    except InputError:  # no route for this modality: its inputs fail with that message
        return False


def main(argv: list[str] | None = None) -> int:
    from unimusic.cli import main as cli_main

    return cli_main(["translate-batch", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
