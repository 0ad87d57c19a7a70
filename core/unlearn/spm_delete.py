"""SPM test-time deletion (Zheng et al., "Designing to Forget", CVPR 2026, arXiv 2603.22870)."""

from __future__ import annotations

from dataclasses import dataclass

from core.data.requests import ForgetRequest
from core.models.spm import SPMClassifier
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class SPMDeleteConfig:
    mode: str = "incremental"  # "incremental": subtract from class sums, O(|D_f|); "reencode": the paper's timed path


@register_method("spm-delete", config=SPMDeleteConfig, edits="memory", model_kinds=("spm",),
                 description="Remove the samples from SPM's class prototypes (no weight changes)",
                 paper="Zheng et al., Designing to Forget, CVPR 2026 (arXiv 2603.22870)")
def update(model: SPMClassifier, request: ForgetRequest, config: SPMDeleteConfig) -> SPMClassifier:
    """Drop the forget ids from the prototype memory; no parameter changes."""
    return model.forget(list(request.ids), mode=config.mode)
