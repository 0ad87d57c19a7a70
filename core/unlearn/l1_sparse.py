"""l1-sparse: fine-tune on D_r with an L1 penalty on the weights that decays linearly to zero.

Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023: loss = CE(D_r) +
gamma_t * ||theta||_1 with gamma_t = gamma * (1 - t / T) (their "linear decay" schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.unlearn.loop import UnlearnContext, unlearn
from core.unlearn.registry import MethodSpec, UnlearnResult, register_method


@dataclass(frozen=True)
class L1SparseConfig:
    epochs: int = 3  # capped passes over D_r, as FT
    lr: float = 0.04  # as FT: needed to forget a class in 2 CPU epochs
    l1: float = 5e-5  # gamma: L1 strength at the start (the paper's order for CIFAR-10), decays to 0
    batch_size: int = 128  # as the training recipe
    momentum: float = 0.9  # SGD as in training
    weight_decay: float = 5e-4  # as in training
    max_steps_per_epoch: int = 200  # cap on D_r steps per epoch for CPU
    seed: int = 0  # batch order


def _update(ctx: UnlearnContext, c: L1SparseConfig) -> None:
    params = [p for p in ctx.net.parameters() if p.requires_grad]

    def loss(b):
        ce = F.cross_entropy(ctx.net(ctx.x(b.retain)), ctx.y(b.retain))
        gamma = c.l1 * (1 - b.step / max(b.total, 1))
        return ce + gamma * torch.stack([p.abs().sum() for p in params]).sum()

    ctx.sgd(loss, ctx.batches(c.epochs, c.batch_size, over="retain", max_steps_per_epoch=c.max_steps_per_epoch),
            c.lr, c.momentum, c.weight_decay, params=params, label="l1-sparse")


def run(model: Classifier, dataset: Dataset, request: ForgetRequest, config: L1SparseConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Fine-tune on D_r with a linearly decaying L1 penalty."""
    return unlearn("l1-sparse", model, dataset, request, lambda ctx: _update(ctx, config), config.seed, progress,
                   cancel)


register_method(MethodSpec(
    name="l1-sparse", description="Fine-tune on retained data while pushing weights towards sparsity",
    paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (arXiv 2304.04934)",
    config_cls=L1SparseConfig, run=run, model_kinds=("parametric",),
))
