"""FT: fine-tune on the retained data only, relying on catastrophic forgetting of D_f.

The fine-tuning baseline of Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023, in
the setting of the SalUn / l1-sparse repositories (Fan et al., ICLR 2024; Jia et al., NeurIPS 2023):
``--unlearn FT --unlearn_lr 0.01 --unlearn_epochs 10``, batch 256, SGD with momentum 0.9 and weight decay
5e-4, each epoch one shuffled pass over D_r. D_f is never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.unlearn.loop import ReferenceSGD, UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class FTConfig(ReferenceSGD):
    epochs: int = 10  # passes over D_r, as the reference script
    lr: float = 0.01  # the reference script's --unlearn_lr
    max_steps_per_epoch: int = 0  # 0: full passes (the reference); a positive cap shortens each pass for CPU


@register_method("ft", config=FTConfig,
                 description="Fine-tune on the retained data only (forgetting by neglect)",
                 paper="Warnecke et al., Machine Unlearning of Features and Labels, NDSS 2023; "
                       "setting of SalUn, ICLR 2024")
def update(ctx: UnlearnContext, c: FTConfig) -> None:
    """Cross-entropy on D_r only."""
    ctx.sgd_over("retain", lambda b: ctx.cross_entropy(b.retain), c, label="FT")


