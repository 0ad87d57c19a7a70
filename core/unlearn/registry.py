"""Unlearning methods, registered by decorating their update step (see :mod:`core.registry`).

A method that edits weights decorates ``update(ctx, config)``; :func:`core.unlearn.loop.unlearn` runs it on
a private copy of the network. A method that edits a by-design model's memory (``edits="memory"``)
decorates ``update(model, request, config) -> new model`` and never reads an image or a weight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.registry import Registry
from core.unlearn.loop import unlearn
from core.unlearn.result import UnlearnResult

EDITS = ("weights", "memory")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str  # one plain-language line for the UI
    paper: str  # citation shown beside the method
    config_cls: type
    update: Callable
    model_kinds: tuple[str, ...]  # the model kinds this method applies to
    class_only: bool = False  # True: needs a class-level request (e.g. DAMP)
    edits: str = "weights"

    def run(self, model: Classifier, dataset: Dataset, request: ForgetRequest, config=None,
            progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
        """Apply the method to ``model`` (never modified) and return the new model, timed."""
        config = self.config_cls() if config is None else config
        if self.class_only and not request.classes:
            raise ValueError(f"{self.name} forgets whole classes; the request names no classes")
        if self.edits == "weights":
            return unlearn(self.name, model, dataset, request, lambda ctx: self.update(ctx, config),
                           config.seed, progress, cancel)
        start = time.perf_counter()
        new = self.update(model, request, config)
        seconds = time.perf_counter() - start
        progress(1.0, f"{self.name}: deleted {len(request.ids)} samples from the memory")
        return UnlearnResult(new, self.name, seconds, touched={"memory_ids": len(request.ids), "parameters": 0},
                             log={"memory_size": len(new.memory_ids())})


_METHODS: Registry[MethodSpec] = Registry("unlearning method")


def register_method(name: str, *, config: type, description: str, paper: str,
                    model_kinds: tuple[str, ...] = ("parametric",), class_only: bool = False,
                    edits: str = "weights") -> Callable[[Callable], Callable]:
    """Decorator: register the decorated update step under ``name`` with its config dataclass."""
    if edits not in EDITS:
        raise ValueError(f"edits must be one of {EDITS}, got {edits!r}")

    def wrap(update: Callable) -> Callable:
        _METHODS.add(name, MethodSpec(name, description, paper, config, update, tuple(model_kinds),
                                      class_only, edits))
        return update

    return wrap


def get_method(name: str) -> MethodSpec:
    return _METHODS.get(name)


def list_methods(model_kind: str | None = None, request: ForgetRequest | None = None) -> list[str]:
    """Method names, optionally only those that apply to a model kind and a request."""
    return [name for name, spec in _METHODS
            if (model_kind is None or model_kind in spec.model_kinds)
            and (request is None or not spec.class_only or request.classes)]
