"""SSD: selective synaptic dampening, a retraining-free edit from diagonal Fisher importances.

Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
AAAI 2024, as its repository runs it (``ssd.py``, ``ssd_tuning``): with the original network in eval mode,
importance = mean over batches (64 images) of the squared gradient of the batch's mean cross-entropy, on
D_f and on the whole training set D (D_r and D_f); then, for every parameter where imp_f > alpha * imp_D,
theta <- theta * min(1, lambda * imp_D / imp_f). alpha 10 and lambda 1, the paper's setting for every
ResNet-18 experiment. The paper forgets the request's D_f in one edit, several classes included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.unlearn.loop import UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class SSDConfig:
    alpha: float = 10.0  # selection weighting: the paper's ResNet-18 setting
    dampening: float = 1.0  # lambda: dampening constant, the paper's setting
    batch_size: int = 64  # images per importance batch (the repository's loaders)
    per_class: bool = False  # [ours] several classes: one edit per class, each from importances of the original
    full_samples: int = 0  # 0: imp_D from all of D (the paper); a positive count samples D for CPU
    seed: int = 0  # which images estimate imp_D when full_samples samples D


def importances(ctx: UnlearnContext, ids: np.ndarray, batch_size: int, span: tuple[float, float],
                label: str) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of the mean cross-entropy, on the original network."""
    net = ctx.original
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = 0
    total = max(1, int(np.ceil(len(ids) / batch_size)))
    with torch.enable_grad():
        for ids_b in ctx.passes(ids, batch_size):
            grads = torch.autograd.grad(F.cross_entropy(net(ctx.x(ids_b)), ctx.y(ids_b)), list(params.values()),
                                        allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    imp[n] += g.detach() ** 2
            batches += 1
            if batches % 10 == 0:
                ctx.progress(span[0] + (span[1] - span[0]) * batches / total, f"SSD: {label} importances")
    return {n: v / max(batches, 1) for n, v in imp.items()}


@torch.no_grad()
def dampen(net: torch.nn.Module, imp_d: dict[str, torch.Tensor], imp_f: dict[str, torch.Tensor], alpha: float,
           dampening: float) -> dict[str, torch.Tensor]:
    """theta <- theta * min(1, lambda imp_D / imp_f) where imp_f > alpha imp_D; returns the selections."""
    selected = {}
    for n, p in net.named_parameters():
        if n not in imp_d:
            continue
        select = imp_f[n] > alpha * imp_d[n]
        factor = (dampening * imp_d[n] / imp_f[n].clamp_min(1e-30)).clamp(max=1.0)
        p[select] = p[select] * factor[select]
        selected[n] = select
    return selected


@register_method("ssd", config=SSDConfig,
                 description="Dampen the weights that matter far more to the forgotten data (no training)",
                 paper="Foster et al., Selective Synaptic Dampening, AAAI 2024 (arXiv 2308.07707)")
def update(ctx: UnlearnContext, c: SSDConfig) -> None:
    """Dampen the parameters far more important to D_f than to D (no training)."""
    full_ids = ctx.sample(ctx.dataset.train_ids, c.full_samples or None)
    imp_d = importances(ctx, full_ids, c.batch_size, (0.0, 0.7), "full-data")
    classes = ctx.request.classes if (c.per_class and len(ctx.request.classes) > 1) else ()
    groups = [ctx.forget_ids[ctx.dataset.y_train[ctx.forget_ids] == k] for k in classes] or [ctx.forget_ids]
    imp_fs = [importances(ctx, ids, c.batch_size, (0.7 + 0.25 * i / len(groups), 0.7 + 0.25 * (i + 1) / len(groups)),
                          "forget-set") for i, ids in enumerate(groups)]
    selected_any: dict[str, torch.Tensor] = {}
    for imp_f in imp_fs:
        for n, sel in dampen(ctx.net, imp_d, imp_f, c.alpha, c.dampening).items():
            selected_any[n] = selected_any.get(n, torch.zeros_like(sel)) | sel
    dampened = int(sum(int(v.sum()) for v in selected_any.values()))
    ctx.touched["parameters"] = dampened
    ctx.log["dampened_fraction"] = dampened / sum(p.numel() for p in ctx.net.parameters())


