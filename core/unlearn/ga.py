"""GA: gradient ascent on the forget set's cross-entropy.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022, in the
setting of the l1-sparse / SalUn repositories (Jia et al., NeurIPS 2023; Fan et al., ICLR 2024):
``--unlearn GA --unlearn_lr 0.0001 --unlearn_epochs 5``, batch 256, SGD with momentum 0.9 and weight decay
5e-4, each epoch one shuffled pass over D_f with loss -CE. D_r is never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.unlearn.loop import ReferenceSGD, UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class GAConfig(ReferenceSGD):
    epochs: int = 5  # passes over D_f, as the reference script
    lr: float = 1e-4  # the reference script's --unlearn_lr
    max_steps_per_epoch: int = 0  # 0: full passes over D_f (the reference); a positive cap shortens each pass


@register_method("ga", config=GAConfig,
                 description="Gradient ascent on the forgotten samples' loss",
                 paper="Thudi et al., Unrolling SGD, EuroS&P 2022; "
                       "setting of Jia et al. (NeurIPS 2023) and SalUn (ICLR 2024)")
def update(ctx: UnlearnContext, c: GAConfig) -> None:
    """Maximise the cross-entropy on D_f."""
    ctx.sgd_over("forget", lambda b: -ctx.cross_entropy(b.forget), c, label="GA")


