"""Configs are frozen dataclasses; YAML files and ``key=value`` overrides feed them.

No config system reaches a model or a pipeline stage: callers turn a config into
plain keyword arguments. Validation happens here, on load: unknown keys and
values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

from unimusic.errors import InputError

T = TypeVar("T")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise InputError(f"config key {key!r}", f"expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except InputError:
                continue
        raise InputError(f"config key {key!r}", f"{value!r} does not fit {annotation}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config key {key!r}", f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if args and len(args) != len(value):
            raise InputError(f"config key {key!r}", f"expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args or [Any] * len(value)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise InputError(f"config key {key!r}", f"expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise InputError(f"config key {key!r}", f"expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise InputError(f"config key {key!r}", f"expected an integer, got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"config key {key!r}", f"expected a number, got {value!r}") from None
    if annotation is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, *, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"config key {prefix}{unknown[0]!r}", f"unknown (known: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(obj: T, overrides: Iterable[str]) -> T:
    """``key=value`` and ``section.key=value`` overrides on a frozen dataclass."""
    data = dataclasses.asdict(obj)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"override {item!r}", "expected key=value")
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise InputError(f"config key {key!r}", "no such section")
            target = target[part]
        if parts[-1] not in target:
            raise InputError(f"config key {key!r}", f"unknown (known: {', '.join(sorted(target))})")
        target[parts[-1]] = _parse_scalar(value.strip())
    return from_dict(type(obj), data)


def _parse_scalar(text: str):
    try:
        import yaml

        return yaml.safe_load(text) if text else ""
    except Exception:
        return text


def load(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = (), *, base: T | None = None) -> T:
    """Defaults of ``cls`` (or ``base``, e.g. a named preset), then the YAML file (if any), then the overrides."""
    obj = cls() if base is None else base
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(str(path), "no such config file")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(str(path), f"invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(str(path), "config file must hold a mapping")
        merged = _deep_merge(dataclasses.asdict(obj), data)
        obj = from_dict(cls, merged)
    return apply_overrides(obj, overrides)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
