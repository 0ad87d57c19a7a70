"""GA: gradient ascent on the forget set's cross-entropy.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022; the
setting (lr 1e-4 to 1e-3, a few epochs over D_f) follows the baselines of Fan et al., SalUn, ICLR 2024.
Measured limit (bench/posthoc.py, Fashion-MNIST): the default forgets class 0 (FA 0.2%, retained-class
accuracy 85.5% against 92.2%) but not classes 0-2 (FA 45%); the 140 steps that bring classes 0-2 to FA 3%
leave 53% retained-class accuracy. Unbounded ascent has no point where it stops on the forget set alone.
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
class GAConfig:
    epochs: int = 2  # passes over D_f; ascent diverges fast, so few are needed
    lr: float = 1e-4  # bottom of SalUn's 1e-4..1e-3 range; 1e-3 diverged (NaN) on Fashion-MNIST
    batch_size: int = 128  # forget images per step
    momentum: float = 0.9  # SGD as in training
    weight_decay: float = 5e-4  # as in training
    max_steps_per_epoch: int = 35  # cap on D_f steps per epoch (0: full passes); more steps wreck the retained classes
    seed: int = 0  # batch order


def _update(ctx: UnlearnContext, c: GAConfig) -> None:
    def loss(b):
        return -F.cross_entropy(ctx.net(ctx.x(b.forget)), ctx.y(b.forget))

    ctx.sgd(loss, ctx.batches(c.epochs, c.batch_size, over="forget", retain_per_forget=0.0,
                                max_steps_per_epoch=c.max_steps_per_epoch or None),
            c.lr, c.momentum, c.weight_decay, label="GA")


def run(model: Classifier, dataset: Dataset, request: ForgetRequest, config: GAConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Maximise the cross-entropy on D_f."""
    return unlearn("ga", model, dataset, request, lambda ctx: _update(ctx, config), config.seed, progress, cancel)


register_method(MethodSpec(
    name="ga", description="Gradient ascent on the forgotten samples' loss",
    paper="Thudi et al., Unrolling SGD, EuroS&P 2022; setting of Fan et al., SalUn, ICLR 2024",
    config_cls=GAConfig, run=run, model_kinds=("parametric",),
))
