"""Model weights on disk: ``<path>.safetensors`` (tensors only) + ``<path>.json`` (the record).

Generic for every model of the project (score-image RQ-VAE, audio codec...). The
JSON record holds:

* ``kind`` (e.g. ``"rqvae"``) and ``format_version`` (an int the model module bumps
  when its state-dict layout changes): a reader names both and refuses any other;
* ``config``: the model's config as plain JSON (a dataclass is stored as
  ``dataclasses.asdict``) and ``config_hash``, a short hash of it;
* ``sha256`` of the safetensors file: a file changed after saving is refused;
* anything else the caller put in ``meta`` (metrics, step, data description).

Loading never unpickles: tensors come from safetensors, everything else from JSON.
Both files are written to a temporary name and renamed, the JSON last, so a reader
never sees a half-written pair that passes the checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from unimusic.errors import InputError

SUFFIX = ".safetensors"
META_SUFFIX = ".json"
_RESERVED = ("sha256", "config_hash", "tensors")


def weight_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(tensor file, json file)`` for a path given without suffix (a given ``.safetensors``/``.json`` is dropped)."""
    text = os.fspath(path)
    for suffix in (SUFFIX, META_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if not text:
        raise InputError(repr(os.fspath(path)), "empty weights path")
    return Path(text + SUFFIX), Path(text + META_SUFFIX)


def plain_config(config: Any, *, source: str = "config") -> Any:
    """``config`` as plain JSON data (dataclass -> dict, tuples -> lists); InputError if not JSON-able."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)

    def scalar(obj):  # numpy / torch scalars (metrics) as plain numbers
        if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
            return obj.item()
        raise TypeError(f"{type(obj).__name__} is not JSON data")

    try:
        return json.loads(json.dumps(config, sort_keys=True, allow_nan=False, default=scalar))
    except (TypeError, ValueError) as exc:
        raise InputError(source, f"config is not plain JSON data: {exc}") from None


def config_hash(config: Any) -> str:
    """Short stable hash of a config (dataclass or plain data)."""
    payload = json.dumps(plain_config(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors creates its file owner-only
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_weights(state_dict: dict, meta: dict, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``state_dict`` to ``path.safetensors`` and ``meta`` (+ hashes) to ``path.json``.

    ``meta`` must hold ``kind`` (non-empty str), ``format_version`` (int) and
    ``config`` (a dataclass or plain JSON data); every other key must be JSON data
    and is stored as is. Tensors are copied to CPU, contiguous, without shared
    storage (safetensors refuses aliased tensors). Returns both paths.
    """
    import torch
    from safetensors.torch import save_file

    st_path, json_path = weight_paths(path)
    if not isinstance(meta, dict):
        raise InputError(str(json_path), f"meta must be a dict, got {type(meta).__name__}")
    kind, version = meta.get("kind"), meta.get("format_version")
    if not isinstance(kind, str) or not kind:
        raise InputError(str(json_path), f"meta needs a non-empty string 'kind', got {kind!r}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(str(json_path), f"meta needs an integer 'format_version', got {version!r}")
    if "config" not in meta:
        raise InputError(str(json_path), "meta needs a 'config'")
    clash = [k for k in _RESERVED if k in meta]
    if clash:
        raise InputError(str(json_path), f"meta key {clash[0]!r} is written by save_weights itself")
    config = plain_config(meta["config"], source=str(json_path))
    record = {k: v for k, v in meta.items() if k != "config"}
    record = plain_config(record, source=str(json_path))  # extra metrics must be JSON too

    tensors = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(str(st_path), f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        tensors[name] = value.detach().to("cpu").contiguous().clone()
    chash = config_hash(config)
    header = {"kind": kind, "format_version": str(version), "config_hash": chash}

    st_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(st_path, lambda p: save_file(tensors, str(p), metadata=header))
    record.update(config=config, config_hash=chash, sha256=file_sha256(st_path), tensors=len(tensors))
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    _write_atomic(json_path, lambda p: p.write_text(text, encoding="utf-8"))
    return st_path, json_path


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON record of a weights file (no checks beyond it being a JSON object)."""
    _, json_path = weight_paths(path)
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(json_path), "no such weights record (expected a .json beside the .safetensors)") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(json_path), f"not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(str(json_path), "weights record is not a JSON object")
    return meta


def _diff(expected: Any, found: Any, prefix: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in sorted(set(expected) | set(found)):
            name = f"{prefix}{key}"
            if key not in found:
                out.append(f"{name} missing in file")
            elif key not in expected:
                out.append(f"{name} not expected (file has {found[key]!r})")
            else:
                out += _diff(expected[key], found[key], name + ".")
        return out
    if expected != found:
        return [f"{prefix.rstrip('.') or 'config'}: expected {expected!r}, file has {found!r}"]
    return []


def load_weights(
    path: str | os.PathLike,
    *,
    kind: str,
    format_version: int,
    expected_config: Any = None,
    device: str = "cpu",
) -> tuple[dict, dict]:
    """Read weights saved by :func:`save_weights`; returns ``(state_dict, meta)``.

    Refuses (InputError naming the file and the mismatch) a record of another
    ``kind`` or ``format_version``, a config whose recorded hash does not match
    it, a tensor file whose sha256 differs from the record (changed or swapped
    after saving) and, when ``expected_config`` is given, a different config.
    """
    from safetensors.torch import load_file

    st_path, json_path = weight_paths(path)
    meta = read_meta(path)
    if meta.get("kind") != kind:
        raise InputError(str(json_path), f"weights of kind {meta.get('kind')!r}, expected {kind!r}")
    if meta.get("format_version") != format_version:
        raise InputError(
            str(json_path), f"{kind} weights format_version {meta.get('format_version')!r}, expected {format_version!r}"
        )
    if "config" not in meta or meta.get("config_hash") != config_hash(meta["config"]):
        raise InputError(str(json_path), "recorded config does not match its config_hash (record edited?)")
    if expected_config is not None:
        expected = plain_config(expected_config)
        if expected != meta["config"]:
            diffs = _diff(expected, meta["config"])
            raise InputError(str(json_path), "config mismatch: " + "; ".join(diffs[:5]))
    if not st_path.is_file():
        raise InputError(str(st_path), "missing weights file")
    sha = file_sha256(st_path)
    if sha != meta.get("sha256"):
        raise InputError(str(st_path), f"sha256 {sha[:16]}... differs from the recorded {str(meta.get('sha256'))[:16]}... (file changed after saving)")
    try:
        state = load_file(str(st_path), device=device)
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(str(st_path), f"not a readable safetensors file: {exc}") from None
    return state, meta
