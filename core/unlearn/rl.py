"""RL: random labels. Fine-tune on D_f relabelled at random together with D_r.

Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (random-label baseline); the setting
follows Fan et al., SalUn, ICLR 2024 (relabelled D_f mixed with D_r, cross-entropy). For CPU an epoch is
one pass over D_f with ``retain_per_forget`` retain images beside each forget image (SalUn concatenates
the whole D_r).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.unlearn.loop import Batch, UnlearnContext, unlearn
from core.unlearn.registry import MethodSpec, UnlearnResult, register_method


@dataclass(frozen=True)
class RLConfig:
    epochs: int = 2  # passes over D_f
    lr: float = 0.01  # SalUn's RL learning rate for class-wise forgetting
    batch_size: int = 128  # forget images per step
    retain_per_forget: float = 2.0  # retain images per forget image per step (SalUn: all D_r); 2 keeps retained +2 pts
    exclude_true_label: bool = True  # draw random labels among the other classes (SalUn may redraw the true one)
    momentum: float = 0.9  # SGD as in training
    weight_decay: float = 5e-4  # as in training
    seed: int = 0  # random labels and batch order


def random_labels(ctx: UnlearnContext, exclude_true: bool) -> torch.Tensor:
    """One fixed random label per training id (only the forget ids are used)."""
    n, k = ctx.dataset.num_train, ctx.dataset.num_classes
    y = ctx.dataset.y_train
    if exclude_true:
        labels = (y + ctx.rng.integers(1, k, size=n)) % k
    else:
        labels = ctx.rng.integers(0, k, size=n)
    return torch.as_tensor(labels.astype(np.int64)).to(ctx.device)


def rl_loss(ctx: UnlearnContext, labels: torch.Tensor, b: Batch) -> torch.Tensor:
    """Cross-entropy on the relabelled forget batch and the true-labelled retain batch, as one batch."""
    ids = np.concatenate([b.forget, b.retain])
    target = torch.cat([labels[torch.as_tensor(b.forget)], ctx.y(b.retain)])
    return F.cross_entropy(ctx.net(ctx.x(ids)), target)


def _update(ctx: UnlearnContext, c: RLConfig) -> None:
    labels = random_labels(ctx, c.exclude_true_label)
    ctx.sgd(lambda b: rl_loss(ctx, labels, b),
            ctx.batches(c.epochs, c.batch_size, over="forget", retain_per_forget=c.retain_per_forget),
            c.lr, c.momentum, c.weight_decay, label="RL")


def run(model: Classifier, dataset: Dataset, request: ForgetRequest, config: RLConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Train on randomly relabelled D_f mixed with D_r."""
    return unlearn("rl", model, dataset, request, lambda ctx: _update(ctx, config), config.seed, progress, cancel)


register_method(MethodSpec(
    name="rl", description="Relabel the forgotten samples at random and fine-tune with the retained ones",
    paper="Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; setting of SalUn, ICLR 2024",
    config_cls=RLConfig, run=run, model_kinds=("parametric",),
))
