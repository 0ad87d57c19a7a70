"""l1-sparse: fine-tune on D_r with an L1 penalty on the weights that decays linearly to zero.

Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023, as its repository runs it
(``unlearn/FT.py``, ``FT_l1``; ``--unlearn FT_prune --unlearn_lr 0.01 --unlearn_epochs 10``): loss =
CE(D_r batch) + gamma_e * ||theta||_1 over every parameter, gamma_e = gamma * (1 - e / E) at epoch e
(0-based, constant within an epoch), batch 256, SGD with momentum 0.9 and weight decay 5e-4. D_f is never
read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearn.loop import ReferenceSGD, UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class L1SparseConfig(ReferenceSGD):
    epochs: int = 10  # passes over D_r, as the reference script
    lr: float = 0.01  # the reference script's --unlearn_lr
    l1: float = 5e-5  # gamma at the first epoch; the script leaves --alpha to the user [guess: the paper's order]
    max_steps_per_epoch: int = 0  # 0: full passes (the reference); a positive cap shortens each pass for CPU


def l1_norm(net: torch.nn.Module) -> torch.Tensor:
    """||theta||_1 over every parameter of ``net``."""
    return torch.stack([p.abs().sum() for p in net.parameters()]).sum()


@register_method("l1-sparse", config=L1SparseConfig,
                 description="Fine-tune on retained data while pushing weights towards sparsity",
                 paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (arXiv 2304.04934)")
def update(ctx: UnlearnContext, c: L1SparseConfig) -> None:
    """Fine-tune on D_r with a linearly decaying L1 penalty."""
    def loss(b):
        gamma = c.l1 * (1 - b.epoch / c.epochs)
        return ctx.cross_entropy(b.retain) + gamma * l1_norm(ctx.net)

    ctx.sgd_over("retain", loss, c, label="l1-sparse")


