"""SCRUB: a student (the model) stays close to the teacher (the original) on D_r and moves away on D_f.

Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, as its repository runs it
(``large_scale_unlearning.ipynb`` with RepDistiller's ``train_distill``). One SGD optimiser (momentum 0.9,
weight decay 5e-4) for the whole run. Epoch e = 1..sgda_epochs: the learning rate is lr * 0.1^(number of
lr_decay_epochs below e); while e <= msteps, a max pass over all of D_f (loss -KL at temperature kd_T);
then a min pass over all of D_r (loss gamma * CE + alpha * KL). KL is RepDistiller's DistillKL,
KL(teacher || student) of the softened outputs times T^2; the teacher is the original in eval mode, the
student trains in training mode. Settings of the large-scale notebook: 3 epochs, msteps 2, lr 5e-4,
kd_T 4, gamma 0.99, alpha 0.001 (beta 0: no other distillation term), forget batch 512, retain batch 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.unlearn.loop import Pass, UnlearnContext
from core.unlearn.registry import register_method


@dataclass(frozen=True)
class SCRUBConfig:
    epochs: int = 3  # sgda_epochs
    msteps: int = 2  # the first msteps epochs include the max pass over D_f
    lr: float = 5e-4  # sgda_learning_rate
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)  # the lr drops by lr_decay_rate after each of these epochs
    lr_decay_rate: float = 0.1  # as the notebook
    kd_T: float = 4.0  # distillation temperature
    gamma: float = 0.99  # weight of the cross-entropy on D_r in the min pass
    alpha: float = 0.001  # weight of the KL to the teacher on D_r in the min pass
    forget_batch_size: int = 512  # the notebook's forget loader
    batch_size: int = 256  # the notebook's retain loader
    momentum: float = 0.9  # sgda_momentum
    weight_decay: float = 5e-4  # sgda_weight_decay
    max_retain_steps: int = 0  # 0: full min passes over D_r (the reference); a positive cap shortens them for CPU
    seed: int = 0  # batch order

    def __post_init__(self) -> None:
        if self.msteps > self.epochs:
            raise ValueError("SCRUB: msteps cannot exceed epochs")


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of the softened outputs, times T^2 (Hinton et al.; SCRUB's DistillKL)."""
    log_p = F.log_softmax(student / t, 1)
    q = F.softmax(teacher / t, 1)
    return F.kl_div(log_p, q, reduction="batchmean") * t * t


@register_method("scrub", config=SCRUBConfig,
                 description="Student-teacher: stay with the original on retained data, move away on forgotten",
                 paper="Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023 (arXiv 2302.09880)")
def update(ctx: UnlearnContext, c: SCRUBConfig) -> None:
    """Alternate max passes on D_f and min passes on D_r against the original model as teacher."""
    teacher = ctx.original

    def teacher_logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher(x)

    def loss(b):
        if len(b.forget):  # max pass
            x = ctx.x(b.forget)
            return -distill_kl(ctx.net(x), teacher_logits(x), c.kd_T)
        x = ctx.x(b.retain)
        out = ctx.net(x)
        return c.gamma * F.cross_entropy(out, ctx.y(b.retain)) + c.alpha * distill_kl(out, teacher_logits(x), c.kd_T)

    def passes(epoch: int) -> list[Pass]:
        retain = Pass("retain", c.batch_size, max_steps=c.max_retain_steps or None)
        return [Pass("forget", c.forget_batch_size), retain] if epoch < c.msteps else [retain]

    def lr_at(epoch: int) -> float:
        return c.lr * c.lr_decay_rate ** int(np.sum(epoch + 1 > np.asarray(c.lr_decay_epochs)))

    ctx.sgd(loss, ctx.batches(c.epochs, passes), ctx.optimizer(c.lr, c.momentum, c.weight_decay), lr_at=lr_at,
            label="SCRUB")


