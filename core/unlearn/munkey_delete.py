"""MUNKEY key deletion ("Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion",
arXiv 2603.15033): drop the forget samples' entries (key and exemplar token) from the memory."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Progress, no_progress
from core.models.munkey import MunkeyClassifier
from core.unlearn.registry import MethodSpec, UnlearnResult, register_method


@dataclass(frozen=True)
class MunkeyDeleteConfig:
    """Key deletion has nothing to tune: it removes memory entries by id."""


def run(model: MunkeyClassifier, dataset: Dataset, request: ForgetRequest, config: MunkeyDeleteConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Remove the forget ids' keys and tokens from the memory. Reads only ``request.ids``: never the
    dataset's images or labels, never a weight (the dataset argument is part of the method interface)."""
    start = time.perf_counter()
    new = model.forget(list(request.ids))
    seconds = time.perf_counter() - start
    progress(1.0, f"deleted {len(request.ids)} keys from the MUNKEY memory")
    return UnlearnResult(new, "munkey-delete", seconds,
                         touched={"memory_ids": len(request.ids), "parameters": 0},
                         log={"memory_size": int(new.active.sum())})


register_method(MethodSpec(
    name="munkey-delete", description="Delete the samples' keys and exemplar tokens from MUNKEY's memory "
                                      "(no weight changes, reads ids only)",
    paper="Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion (arXiv 2603.15033)",
    config_cls=MunkeyDeleteConfig, run=run, model_kinds=("munkey",),
))
