"""RL: random labels. Fine-tune on D_f relabelled at random, then on D_r.

Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (random-label baseline), as the SalUn
repository runs it for 10-class data (Fan et al., ICLR 2024, ``unlearn/RL.py``): each epoch is one
shuffled pass over D_f whose targets are drawn uniformly from all classes afresh at every step (the true
label included), then one shuffled pass over D_r with the true labels; one SGD optimiser (momentum 0.9,
weight decay 5e-4) for the whole run; 10 epochs, lr 0.01, batch 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.unlearn.loop import Batch, Mask, Pass, ReferenceSGD, UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class RLConfig(ReferenceSGD):
    epochs: int = 10  # the reference's --unlearn_epochs
    lr: float = 0.01  # the reference's default --unlearn_lr
    exclude_true_label: bool = False  # False: uniform over all classes, as the reference; True: other classes only
    max_retain_steps: int = 0  # 0: full passes over D_r (the reference); a positive cap shortens them for CPU


def rl_loss(ctx: UnlearnContext, exclude_true: bool, b: Batch) -> torch.Tensor:
    """Cross-entropy against fresh random labels on a forget batch, against the true labels on a retain batch."""
    if len(b.forget):
        k = ctx.dataset.num_classes
        if exclude_true:
            labels = (ctx.dataset.y_train[b.forget] + ctx.rng.integers(1, k, size=len(b.forget))) % k
        else:
            labels = ctx.rng.integers(0, k, size=len(b.forget))
        return F.cross_entropy(ctx.net(ctx.x(b.forget)), torch.as_tensor(labels.astype(np.int64)).to(ctx.device))
    return ctx.cross_entropy(b.retain)


def rl_passes(batch_size: int, max_retain_steps: int) -> list[Pass]:
    """One epoch of RL: D_f, then D_r."""
    return [Pass("forget", batch_size), Pass("retain", batch_size, max_steps=max_retain_steps or None)]


def train_rl(ctx: UnlearnContext, epochs: int, lr: float, batch_size: int, exclude_true: bool, momentum: float,
             weight_decay: float, max_retain_steps: int, mask: Mask | None = None, label: str = "RL") -> None:
    ctx.sgd(lambda b: rl_loss(ctx, exclude_true, b), ctx.batches(epochs, rl_passes(batch_size, max_retain_steps)),
            ctx.optimizer(lr, momentum, weight_decay), mask=mask, label=label, progress_span=(0.1, 1.0))


@register_method("rl", config=RLConfig,
                 description="Relabel the forgotten samples at random and fine-tune, "
                             "then fine-tune on the retained ones",
                 paper="Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; setting of SalUn, ICLR 2024")
def update(ctx: UnlearnContext, c: RLConfig) -> None:
    """Train on randomly relabelled D_f, then on D_r, each epoch."""
    train_rl(ctx, c.epochs, c.lr, c.batch_size, c.exclude_true_label, c.momentum, c.weight_decay, c.max_retain_steps)


