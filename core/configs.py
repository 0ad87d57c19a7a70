"""Config dataclasses to and from plain JSON, checked field by field (the UI forms and the CLI use this)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from typing import Any

from core.errors import InputError


class ConfigError(InputError):
    """A config value is missing, unknown, of the wrong type or not a finite number."""


def config_to_dict(config: Any) -> dict:
    """A dataclass (nested ones included) as JSON-ready values."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, values: dict) -> Any:
    """Rebuild ``cls`` from ``values``; unknown fields and uncastable values raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} expects a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _cast(hints[f.name], values[f.name], f"{cls.__name__}.{f.name}")
    return cls(**kwargs)


def _cast(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value)
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} expects a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_cast(inner, v, where) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            try:
                return _cast(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} fits none of {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} expects true or false, got {value!r}")
    if hint in (int, float, str):
        if hint is not str and isinstance(value, bool):
            raise ConfigError(f"{where} expects a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # JSON's 1e400, NaN and Infinity
            raise ConfigError(f"{where} expects a finite number, got {value!r}")
        try:
            cast = hint(value)
        except (TypeError, ValueError, OverflowError) as err:
            raise ConfigError(f"{where} expects {hint.__name__}, got {value!r}") from err
        if hint is float and not math.isfinite(cast):  # a string such as "nan" or "1e999"
            raise ConfigError(f"{where} expects a finite number, got {value!r}")
        if hint is int and isinstance(value, float) and cast != value:
            raise ConfigError(f"{where} expects a whole number, got {value!r}")
        return cast
    return value


def config_hash(*parts: Any) -> str:
    """Short content hash of configs and other JSON-able parts: the key of cached models and runs."""
    blob = json.dumps([config_to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def field_help(cls: type) -> dict[str, str]:
    """The one-line reason written beside each field's default in the source: shown as help in forms.
    A subclass's reason wins over its base class's for the same field."""
    import inspect

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            stripped = line.strip()
            if ":" in stripped and "#" in stripped and "=" in stripped:
                name = stripped.split(":", 1)[0].strip()
                out[name] = stripped.split("#", 1)[1].strip()
    return out
