"""MUNKEY key deletion ("Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion",
arXiv 2603.15033): drop the forget samples' entries (key and exemplar token) from the memory."""

from __future__ import annotations

from dataclasses import dataclass

from core.data.requests import ForgetRequest
from core.models.munkey import MunkeyClassifier
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class MunkeyDeleteConfig:
    """Key deletion has nothing to tune: it removes memory entries by id."""


@register_method("munkey-delete", config=MunkeyDeleteConfig, edits="memory", model_kinds=("munkey",),
                 description="Delete the samples' keys and exemplar tokens from MUNKEY's memory "
                             "(no weight changes, reads ids only)",
                 paper="Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion (arXiv 2603.15033)")
def update(model: MunkeyClassifier, request: ForgetRequest, config: MunkeyDeleteConfig) -> MunkeyClassifier:
    """Remove the forget ids' keys and tokens from the memory; reads only ``request.ids``."""
    return model.forget(list(request.ids))
