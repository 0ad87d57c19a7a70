"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024. The
saliency is |grad of the forget loss| accumulated over D_f; the mask keeps the top ``threshold`` fraction of
all weights (one global hard threshold); then RL (see ``rl.py``) with every gradient multiplied by the mask.
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
from core.unlearn.rl import random_labels, rl_loss


@dataclass(frozen=True)
class SalUnConfig:
    threshold: float = 0.5  # fraction of weights kept trainable (SalUn's class-wise CIFAR-10 setting)
    epochs: int = 2  # RL passes over D_f
    lr: float = 0.01  # RL learning rate, as SalUn's class-wise runs
    batch_size: int = 128  # forget images per step
    retain_per_forget: float = 2.0  # retain images per forget image in each RL step (as rl.py)
    exclude_true_label: bool = True  # random labels among the other classes
    momentum: float = 0.9  # SGD as in training
    weight_decay: float = 5e-4  # as in training
    seed: int = 0  # random labels and batch order


def saliency_mask(ctx: UnlearnContext, threshold: float, batch_size: int) -> dict[str, torch.Tensor]:
    """1 for the top ``threshold`` fraction of |d forget-loss / d w| over all weights, else 0."""
    params = {n: p for n, p in ctx.net.named_parameters() if p.requires_grad}
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    ctx.net.eval()
    for ids in ctx.passes(ctx.forget_ids, batch_size):
        ctx.net.zero_grad(set_to_none=True)
        (-F.cross_entropy(ctx.net(ctx.x(ids)), ctx.y(ids))).backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad.detach()
    ctx.net.zero_grad(set_to_none=True)
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    k = max(1, int(round(threshold * flat.numel())))
    cut = torch.topk(flat, k, sorted=True).values[-1]
    return {n: (g.abs() >= cut).to(g.dtype) for n, g in grads.items()}


def _update(ctx: UnlearnContext, c: SalUnConfig) -> None:
    ctx.progress(0.0, "SalUn: weight saliency on D_f")
    mask = saliency_mask(ctx, c.threshold, c.batch_size)
    params = dict(ctx.net.named_parameters())

    def apply_mask():
        for n, m in mask.items():
            if params[n].grad is not None:
                params[n].grad.mul_(m)

    labels = random_labels(ctx, c.exclude_true_label)
    ctx.sgd(lambda b: rl_loss(ctx, labels, b),
            ctx.batches(c.epochs, c.batch_size, over="forget", retain_per_forget=c.retain_per_forget),
            c.lr, c.momentum, c.weight_decay, grad_hook=apply_mask, label="SalUn RL")
    ctx.log["mask_fraction"] = float(sum(m.sum().item() for m in mask.values()) /
                                     sum(m.numel() for m in mask.values()))
    ctx.touched["masked_parameters"] = int(sum(m.sum().item() for m in mask.values()))


def run(model: Classifier, dataset: Dataset, request: ForgetRequest, config: SalUnConfig,
        progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Saliency mask from the forget gradient, then masked random-label fine-tuning."""
    if not 0 < config.threshold <= 1:
        raise ValueError("SalUn: threshold must lie in (0, 1]")
    return unlearn("salun", model, dataset, request, lambda ctx: _update(ctx, config), config.seed, progress, cancel)


register_method(MethodSpec(
    name="salun", description="Random-label fine-tuning on the weights most salient for the forgotten data",
    paper="Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024",
    config_cls=SalUnConfig, run=run, model_kinds=("parametric",),
))
