"""Training the generation SPM: DDPM's epsilon loss on queries that read a support set of other training images.

As the SPM authors' ``SemiParametricDDPM`` (Zheng et al., CVPR 2026, arXiv 2603.22870; GitHub
amberyzheng/spm_unlearning) trains it:

- each batch of queries gets a support set of ``train_support`` training images split evenly over the batch's
  labels, never one of the batch's own images (``core.models.spm.sample_support``, shared with the classifier);
- query and support are noised to their own random steps t (DDPM, Ho et al. 2020; the support's up to
  ``support_t_max`` T) and the label is dropped with probability ``label_drop`` for both (classifier-free
  guidance, Ho & Salimans 2022); with ``guide_support`` a dropped query also reads no support;
- the loss is DDPM's epsilon MSE, uniformly weighted over t ("simple") or by P2's ``1 / (1 + SNR_t)`` (Choi et
  al., "Perception Prioritized Training of Diffusion Models", CVPR 2022), which weighs the noisy steps where
  the class is decided, so that the support is learned early (``GenSPMConfig`` says what was measured);
- labels are permuted at random per batch (``permute_labels``): a label then only says *which support to
  read*, never which class it is, so the class an image shows must come from its support; that is what lets
  a support edit change what the model draws;
- Adam (AdamW without weight decay), gradient norm clipped, and an exponential moving average of the weights
  (ema_pytorch's warm-up ``1 - (1 + step)^(-2/3)`` capped at ``ema``), which is what is kept.

The loop is the project's (seeding, optimiser, schedule, progress, cancel from :mod:`core.models.training`);
it is written out here because clipping and the weight average act between the backward pass and the next
step, where ``train_loop`` has no hook.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from core.data.dataset import Dataset
from core.models.base import CancelToken, Progress, no_progress
from core.models.gen_spm.diffusion import Diffusion
from core.models.gen_spm.unet import SupportUNet
from core.models.spm import sample_support
from core.models.training import TrainConfig, make_optimizer, make_schedule, mixed_precision, seed_everything


def to_model_range(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Images in [0, 1] (the dataset's range) to the model's [-1, 1]."""
    return torch.as_tensor(x, dtype=torch.float32, device=device) * 2 - 1


class WeightAverage:
    """Exponential moving average of a network's floating-point weights (ema_pytorch's default warm-up)."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, 1 - (1 + self.updates) ** (-2 / 3))
        for k, v in net.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, 1 - d)

    def copy_to(self, net: torch.nn.Module) -> None:
        net.load_state_dict({**net.state_dict(), **self.shadow})


def diffusion_loss(net: SupportUNet, diffusion: Diffusion, x0: torch.Tensor, labels: torch.Tensor,
                   support_x0: torch.Tensor, support_labels: torch.Tensor, config) -> torch.Tensor:
    """Squared error between the noise and its prediction for queries ``x0`` reading the support (both in
    [-1, 1]), averaged with DDPM's uniform weights ("simple") or P2's ``1 / (1 + SNR_t)`` ("p2")."""
    device = x0.device
    t = diffusion.random_steps(len(x0), device)
    t_s = diffusion.random_steps(len(support_x0), device, config.support_t_max)
    eps = torch.randn_like(x0)
    x_t = diffusion.noised(x0, t, eps)
    s_t = diffusion.noised(support_x0, t_s, torch.randn_like(support_x0))
    drop = torch.rand(len(x0), device=device) < config.diffusion.label_drop
    drop_s = torch.rand(len(support_x0), device=device) < config.diffusion.label_drop
    support = net.support_features(s_t, t_s, support_labels, drop_s)
    blind = drop if config.guide_support else None
    per_image = F.mse_loss(net(x_t, t, labels, drop, support, blind), eps, reduction="none").flatten(1).mean(1)
    if config.loss_weight == "p2":
        ab = diffusion.alpha_bar.to(device)[t]
        per_image = per_image / (1 + ab / (1 - ab))
    return per_image.mean()


def fit_gen_spm(net: SupportUNet, dataset: Dataset, train_ids: np.ndarray, config, train_config: TrainConfig,
                progress: Progress = no_progress, cancel: CancelToken | None = None,
                device: torch.device | None = None, support_hook=None) -> dict:
    """Train ``net`` in place on ``train_ids`` (a ``GenSPMConfig`` in ``config``); the weight average is what it
    ends with. ``config.train_steps`` > 0 stops after that many steps, else after the recipe's epochs.
    ``support_hook(batch_ids, support_ids)`` sees every batch (the tests check the support with it)."""
    device = device or torch.device("cpu")
    net.to(device).train()
    rng = seed_everything(train_config.seed)
    diffusion = Diffusion(config.diffusion)
    labels_np = dataset.y_train
    pools = {int(c): train_ids[labels_np[train_ids] == c] for c in np.unique(labels_np[train_ids])}
    optimizers = make_optimizer([{"params": [p for p in net.parameters() if p.requires_grad]}], train_config)
    steps_per_epoch = max(1, int(np.ceil(len(train_ids) / train_config.batch_size)))
    total = config.train_steps or steps_per_epoch * train_config.epochs
    warmup = min(int(round(train_config.warmup_epochs * steps_per_epoch)), total)
    schedules = [make_schedule(o, train_config, total, warmup) for o in optimizers]
    average = WeightAverage(net, config.ema)
    start, running, order = time.perf_counter(), float("nan"), np.zeros(0, np.int64)
    for step in range(total):
        if cancel is not None:
            cancel.check()
        if step % steps_per_epoch == 0:
            order = rng.permutation(train_ids)
        b = step % steps_per_epoch
        batch = order[b * train_config.batch_size:(b + 1) * train_config.batch_size]
        support = sample_support(batch, labels_np[batch], pools, config.train_support, rng)
        if support_hook is not None:
            support_hook(batch, support)
        perm = rng.permutation(dataset.num_classes) if config.permute_labels else np.arange(dataset.num_classes)
        x0 = to_model_range(dataset.x_train[batch], device)
        if config.flip:
            flip = torch.as_tensor(rng.random(len(batch)) < 0.5, device=device)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        with mixed_precision(device, train_config):
            loss = diffusion_loss(net, diffusion, x0, torch.as_tensor(perm[labels_np[batch]], device=device),
                                  to_model_range(dataset.x_train[support], device),
                                  torch.as_tensor(perm[labels_np[support]], device=device), config)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        for optimizer, schedule in zip(optimizers, schedules):
            optimizer.step()
            schedule.step()
        average.update(net)
        if step % 10 == 9 or step == total - 1:
            value = float(loss.detach())
            running = value if np.isnan(running) else 0.9 * running + 0.1 * value
            progress((step + 1) / total, f"gen-spm: step {step + 1}/{total} (epoch {step // steps_per_epoch + 1}), "
                                         f"loss {running:.4f}")
    average.copy_to(net)
    net.eval()
    return {"train_s": time.perf_counter() - start, "final_loss": running, "steps": total,
            "images_seen": int(total * train_config.batch_size)}
