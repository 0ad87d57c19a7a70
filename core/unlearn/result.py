"""What an unlearning method returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.models.base import Classifier


@dataclass
class UnlearnResult:
    """The new model, what the method touched, and how long the update itself took."""

    model: Classifier
    method: str
    seconds: float
    touched: dict = field(default_factory=dict)  # e.g. {"memory_ids": 600} or {"parameters": 12345}
    log: dict = field(default_factory=dict)  # method-specific diagnostics (per-layer tables, losses)
