"""Unlearning methods registered by name with a config dataclass; the UI, CLI and tests iterate this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress


@dataclass
class UnlearnResult:
    """What a method produced: the new model, what it touched, and how long the update itself took."""

    model: Classifier
    method: str
    seconds: float
    touched: dict = field(default_factory=dict)  # e.g. {"memory_ids": 600} or {"parameters": 12345}
    log: dict = field(default_factory=dict)  # method-specific diagnostics (per-layer tables, losses)


RunFn = Callable[[Classifier, Dataset, ForgetRequest, object, Progress, "CancelToken | None"], UnlearnResult]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str  # one plain-language line for the UI
    paper: str  # citation shown beside the method
    config_cls: type
    run: RunFn
    model_kinds: tuple[str, ...]  # the model kinds this method applies to
    class_only: bool = False  # True: needs a class-level request (e.g. DAMP)


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise KeyError(f"unknown unlearning method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def list_methods(model_kind: str | None = None, request: ForgetRequest | None = None) -> list[str]:
    """Method names, optionally only those that apply to a model kind and a request."""
    out = []
    for name, spec in _METHODS.items():
        if model_kind is not None and model_kind not in spec.model_kinds:
            continue
        if request is not None and spec.class_only and not request.classes:
            continue
        out.append(name)
    return out
