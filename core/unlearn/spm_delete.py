"""SPM test-time deletion (Zheng et al., "Designing to Forget", CVPR 2026, arXiv 2603.22870)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Progress, no_progress
from core.models.spm import SPMClassifier
from core.unlearn.registry import MethodSpec, UnlearnResult, register_method


@dataclass(frozen=True)
class SPMDeleteConfig:
    mode: str = "incremental"  # "incremental": subtract from class sums, O(|D_f|); "reencode": the paper's timed path


def run(model: SPMClassifier, dataset: Dataset, request: ForgetRequest, config: SPMDeleteConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Drop the forget ids from the prototype memory; no parameter changes."""
    start = time.perf_counter()
    new = model.forget(list(request.ids), mode=config.mode)
    seconds = time.perf_counter() - start
    progress(1.0, f"deleted {len(request.ids)} samples from the SPM memory")
    return UnlearnResult(new, "spm-delete", seconds, touched={"memory_ids": len(request.ids), "parameters": 0})


register_method(MethodSpec(
    name="spm-delete", description="Remove the samples from SPM's class prototypes (no weight changes)",
    paper="Zheng et al., Designing to Forget, CVPR 2026 (arXiv 2603.22870)",
    config_cls=SPMDeleteConfig, run=run, model_kinds=("spm",),
))
