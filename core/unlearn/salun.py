"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024, as its
repository runs it (``generate_mask.py``, then ``unlearn/RL.py`` with ``--mask_path``). Saliency: the
absolute value of the gradient of -CE summed over D_f's batches (network in eval mode); the mask keeps the
top ``threshold`` fraction of all weights (one global hard threshold). Then RL (``rl.py``): the gradient is
multiplied by the mask and, after every step, the weights outside the mask are put back to the original's
values and their momentum zeroed, so theta_u = m * (theta_0 + delta) + (1 - m) * theta_0 holds exactly.
The README's example: mask ``with_0.5``, 10 epochs, lr 0.013.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.unlearn.loop import Mask, ReferenceSGD, UnlearnContext
from core.unlearn.registry import register_method
from core.unlearn.rl import train_rl


@dataclass(frozen=True)
class SalUnConfig(ReferenceSGD):
    threshold: float = 0.5  # fraction of weights that may move (the README's with_0.5 mask)
    epochs: int = 10  # RL epochs, the README's example
    lr: float = 0.013  # RL learning rate, the README's example
    exclude_true_label: bool = False  # False: random labels over all classes, as the reference
    max_retain_steps: int = 0  # 0: full passes over D_r (the reference); a positive cap shortens them for CPU

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError("SalUn: threshold must lie in (0, 1]")


def saliency_mask(ctx: UnlearnContext, threshold: float, batch_size: int) -> Mask:
    """1 for the top ``threshold`` fraction of |sum over D_f batches of d(-CE)/dw| over all weights, else 0."""
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
    k = max(1, int(threshold * flat.numel()))
    keep = torch.zeros_like(flat)
    keep[torch.argsort(flat, descending=True, stable=True)[:k]] = 1
    out, at = {}, 0
    for n, g in grads.items():
        out[n] = keep[at:at + g.numel()].reshape(g.shape)
        at += g.numel()
    return out


@register_method("salun", config=SalUnConfig,
                 description="Random-label fine-tuning on the weights most salient for the forgotten data",
                 paper="Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024")
def update(ctx: UnlearnContext, c: SalUnConfig) -> None:
    """Saliency mask from the forget gradient, then masked random-label fine-tuning."""
    ctx.progress(0.0, "SalUn: weight saliency on D_f")
    mask = saliency_mask(ctx, c.threshold, c.batch_size)
    train_rl(ctx, c.epochs, c.lr, c.batch_size, c.exclude_true_label, c.momentum, c.weight_decay, c.max_retain_steps,
             mask=mask, label="SalUn RL")
    kept = int(sum(m.sum().item() for m in mask.values()))
    ctx.log["mask_fraction"] = kept / sum(m.numel() for m in mask.values())
    ctx.touched["masked_parameters"] = kept


