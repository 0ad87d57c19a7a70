"""NegGrad+: descent on D_r and ascent on D_f in one weighted loss.

Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (the SCRUB paper), as its repository
runs it (``negative_grad`` / ``run_neggrad_epoch``): each epoch is one shuffled pass over D_r, every retain
batch paired with the next batch of D_f (D_f cycled), and the loss is
``beta * (CE(D_r batch) + wd / 2 * ||theta - theta_0||^2) - (1 - beta) * CE(D_f batch)``, theta_0 the
original weights, with plain SGD (no momentum, no optimiser weight decay); beta 0.95, lr 0.01, 10 epochs,
retain batch 128, forget batch 64. BatchNorm trains in training mode, as the repository's ``train_negrad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearn.loop import Pass, UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class NegGradPlusConfig:
    epochs: int = 10  # passes over D_r (the repository's ng_epochs)
    lr: float = 0.01  # the repository's ng_lr
    beta: float = 0.95  # weight of the retain term; 1 - beta weights the forget ascent (the repository's ng_alpha)
    batch_size: int = 128  # retain images per step (the repository's batch_size)
    forget_batch_size: int = 64  # forget images per step, D_f cycled (the repository's forget_bs)
    weight_decay: float = 5e-4  # L2 pull towards the original weights, wd / 2 * ||theta - theta_0||^2: the training wd
    max_steps_per_epoch: int = 0  # 0: full passes over D_r (the reference); a positive cap shortens each pass
    seed: int = 0  # batch order

    def __post_init__(self) -> None:
        if not 0 <= self.beta <= 1:
            raise ValueError("NegGrad+: beta must lie in [0, 1]")


@register_method("neggrad+", config=NegGradPlusConfig,
                 description="Ascend on the forgotten samples while descending on retained ones",
                 paper="Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023 (arXiv 2302.09880)")
def update(ctx: UnlearnContext, c: NegGradPlusConfig) -> None:
    """Weighted descent on D_r and ascent on D_f."""
    start = [p.detach().clone() for p in ctx.original.parameters()]
    params = list(ctx.net.parameters())

    def loss(b):
        retain = ctx.cross_entropy(b.retain)
        forget = ctx.cross_entropy(b.forget)
        pull = c.weight_decay / 2 * torch.stack([(p - p0).pow(2).sum() for p, p0 in zip(params, start)]).sum()
        return c.beta * (retain + pull) - (1 - c.beta) * forget

    passes = [Pass("retain", c.batch_size, paired=c.forget_batch_size, max_steps=c.max_steps_per_epoch or None)]
    ctx.sgd(loss, ctx.batches(c.epochs, passes), ctx.optimizer(c.lr, momentum=0.0, weight_decay=0.0),
            label="NegGrad+")


