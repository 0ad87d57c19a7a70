"""FT: fine-tune on the retained data only, relying on catastrophic forgetting of D_f.

Warnock et al., "Towards Unlearning Benchmark" lineage; the setting here follows the baselines of
Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024
(FT: 10 epochs on D_r, lr 0.01-0.1), with epochs scaled down for CPU.
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
class FTConfig:
    epochs: int = 3  # capped passes over D_r; SalUn uses 10 on GPU; 2 left 12% FA on FMNIST classes 0,1,2
    lr: float = 0.04  # SalUn's FT range is 0.01-0.1; at 2 epochs 0.04 is needed to forget a class (FA <= 10%)
    batch_size: int = 128  # as the original training recipe
    momentum: float = 0.9  # SGD as in training
    weight_decay: float = 5e-4  # as in training
    max_steps_per_epoch: int = 200  # cap on D_r steps per epoch (~25k images) for CPU; raise for full passes
    seed: int = 0  # batch order


def _update(ctx: UnlearnContext, c: FTConfig) -> None:
    def loss(b):
        return F.cross_entropy(ctx.net(ctx.x(b.retain)), ctx.y(b.retain))

    ctx.sgd(loss, ctx.batches(c.epochs, c.batch_size, over="retain", max_steps_per_epoch=c.max_steps_per_epoch),
            c.lr, c.momentum, c.weight_decay, label="FT")


def run(model: Classifier, dataset: Dataset, request: ForgetRequest, config: FTConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Cross-entropy on D_r only."""
    return unlearn("ft", model, dataset, request, lambda ctx: _update(ctx, config), config.seed, progress, cancel)


register_method(MethodSpec(
    name="ft", description="Fine-tune on the retained data only (forgetting by neglect)",
    paper="Fine-tuning baseline as in Fan et al., SalUn, ICLR 2024 (arXiv 2310.12508)",
    config_cls=FTConfig, run=run, model_kinds=("parametric",),
))
