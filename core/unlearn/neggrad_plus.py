"""NegGrad+: ascent on D_f and descent on D_r in one weighted loss.

Kurmanji et al., "Towards Unbounded Machine Unlearning" (SCRUB paper), NeurIPS 2023:
loss = beta * CE(D_r batch) - (1 - beta) * CE(D_f batch), one retain batch beside each forget batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.unlearn.loop import UnlearnContext, unlearn
from core.unlearn.registry import MethodSpec, UnlearnResult, register_method


@dataclass(frozen=True)
class NegGradPlusConfig:
    epochs: int = 2  # passes over D_f, each forget batch paired with a retain batch
    lr: float = 0.01  # SGD learning rate (the SCRUB repo's NegGrad+ runs at 0.01 order)
    beta: float = 0.99  # weight of the retain descent; 1 - beta weights the forget ascent (0.9 collapsed FMNIST)
    batch_size: int = 128  # forget images per step (and as many retain images)
    momentum: float = 0.9  # SGD as in training
    weight_decay: float = 5e-4  # as in training
    seed: int = 0  # batch order


def _update(ctx: UnlearnContext, c: NegGradPlusConfig) -> None:
    def loss(b):
        retain = F.cross_entropy(ctx.net(ctx.x(b.retain)), ctx.y(b.retain))
        forget = F.cross_entropy(ctx.net(ctx.x(b.forget)), ctx.y(b.forget))
        return c.beta * retain - (1 - c.beta) * forget

    ctx.sgd(loss, ctx.batches(c.epochs, c.batch_size, over="forget", retain_per_forget=1.0),
            c.lr, c.momentum, c.weight_decay, label="NegGrad+")


def run(model: Classifier, dataset: Dataset, request: ForgetRequest, config: NegGradPlusConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Weighted descent on D_r and ascent on D_f."""
    return unlearn("neggrad+", model, dataset, request, lambda ctx: _update(ctx, config), config.seed, progress,
                   cancel)


register_method(MethodSpec(
    name="neggrad+", description="Ascend on the forgotten samples while descending on retained ones",
    paper="Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023 (arXiv 2302.09880)",
    config_cls=NegGradPlusConfig, run=run, model_kinds=("parametric",),
))
