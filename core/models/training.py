"""The shared training loop: batching, optimiser, schedule, seeding, progress and cancellation."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.models.base import CancelToken, Progress, no_progress


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every model kind."""

    epochs: int = 8  # enough for the small CNN to pass 90% on Fashion-MNIST in a few CPU minutes
    batch_size: int = 128  # queries per step; small batches learn more per epoch on CPU
    lr: float = 0.05  # peak learning rate (the SPM paper uses 0.1 with 256-image batches)
    momentum: float = 0.9  # as in the SPM paper
    weight_decay: float = 5e-4  # as in the SPM paper
    schedule: str = "cosine"  # "cosine" suits few epochs; "step" = the paper's /10 at 36% and 91% of training
    seed: int = 0  # initial weights and data order; oracles train the same recipe on seeds moved by 1..K
    device: str = "auto"  # "auto" picks CUDA when present
    optimizer: str = "sgd"  # "sgd" (momentum) suits the CNNs; "adamw" suits transformers, which SGD trains poorly
    warmup_epochs: float = 0.0  # linear lr warm-up before the schedule: AdamW transformers diverge early without it
    amp: bool = True  # CUDA only (CPU steps never change): bf16 autocast (see mixed_precision); False: float32


OPTIMIZERS = ("sgd", "adamw")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy generator for the loop's own sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int, warmup_steps: int = 0):
    """The lr schedule over ``total_steps``; with ``warmup_steps`` the lr first rises linearly from ~0 to its
    peak and the schedule then runs over the remaining steps."""
    if config.schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"unknown schedule {config.schedule!r}; known: cosine, step, constant")
    if warmup_steps <= 0:  # the original schedulers, so recipes without warm-up train exactly as before
        if config.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1))
        if config.schedule == "step":
            milestones = [int(total_steps * 0.36), int(total_steps * 0.91)]
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    rest = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(step - warmup_steps, rest)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t / rest))
        if config.schedule == "step":
            return 0.1 ** ((t >= int(rest * 0.36)) + (t >= int(rest * 0.91)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(groups: list[dict], config: TrainConfig) -> list[torch.optim.Optimizer]:
    """The optimisers of ``groups``. A group marked ``"sparse": True`` (rows of a sparse embedding) always
    gets plain SGD with its own lr, since AdamW takes no sparse gradients and momentum or weight decay would
    touch every row at every step; the other groups get ``config.optimizer``."""
    def plain(g: dict) -> dict:
        return {k: v for k, v in g.items() if k != "sparse"}

    if config.optimizer == "sgd":
        return [torch.optim.SGD([plain(g) for g in groups], lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)]
    dense = [plain(g) for g in groups if not g.get("sparse")]
    sparse = [plain(g) for g in groups if g.get("sparse")]
    out = []
    if config.optimizer != "adamw":
        raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if dense:
        out.append(torch.optim.AdamW(dense, lr=config.lr, weight_decay=config.weight_decay))
    if sparse:
        out.append(torch.optim.SGD(sparse, lr=config.lr, momentum=0.0, weight_decay=0.0))
    return out


def mixed_precision(device: torch.device, config: TrainConfig):
    """The context a training step's forward pass runs in: bfloat16 autocast on CUDA when ``config.amp``,
    else none, so CPU training stays bit-for-bit what it was. bfloat16, not float16: it keeps float32's
    exponent range, so no GradScaler is needed and SPM's log of probabilities clamped at 1e-8 cannot underflow.
    GPUs older than Ampere (compute capability < 8) only emulate bfloat16, slower than float32: they get none."""
    if device.type == "cuda" and config.amp and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _fold(running: float, pending: list[torch.Tensor]) -> float:
    """The running loss (exponential average) after the ``pending`` step losses, read back in one transfer and
    cleared; reading each step's loss would make the CPU wait for the GPU at every step."""
    for value in torch.stack(pending).float().tolist() if pending else []:
        running = value if np.isnan(running) else 0.95 * running + 0.05 * value
    pending.clear()
    return running


StepFn = Callable[[np.ndarray, np.random.Generator], torch.Tensor]


def train_loop(net: nn.Module, train_ids: np.ndarray, config: TrainConfig, step_loss: StepFn,
               progress: Progress = no_progress, cancel: CancelToken | None = None,
               param_groups: list[dict] | None = None, label: str = "training") -> dict:
    """Run the configured optimiser over shuffled batches of ``train_ids``; ``step_loss(batch_ids, rng)``
    returns the loss. ``param_groups`` may set a per-group "lr" (and "sparse", see ``make_optimizer``).

    Returns a small log (seconds, final loss). Raises ``Cancelled`` when the token is set.
    """
    rng = seed_everything(config.seed)
    net.train()
    device = next(net.parameters()).device
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)  # cuDNN's fastest layout for tensor-core convolutions
    groups = param_groups or [{"params": [p for p in net.parameters() if p.requires_grad]}]
    optimizers = make_optimizer(groups, config)
    steps_per_epoch = max(1, int(np.ceil(len(train_ids) / config.batch_size)))
    total = steps_per_epoch * config.epochs
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total)
    schedules = [make_schedule(o, config, total, warmup) for o in optimizers]
    start, running, step = time.perf_counter(), float("nan"), 0
    pending: list[torch.Tensor] = []  # step losses not read back yet
    for epoch in range(config.epochs):
        order = rng.permutation(train_ids)
        for b in range(steps_per_epoch):
            if cancel is not None:
                cancel.check()
            batch = order[b * config.batch_size:(b + 1) * config.batch_size]
            if len(batch) < 2:
                continue
            with mixed_precision(device, config):
                loss = step_loss(batch, rng)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, schedule in zip(optimizers, schedules):
                optimizer.step()
                schedule.step()
            step += 1
            pending.append(loss.detach())
            if step % 10 == 0 or b == steps_per_epoch - 1:
                running = _fold(running, pending)
                done = (epoch * steps_per_epoch + b + 1) / (steps_per_epoch * config.epochs)
                progress(done, f"{label}: epoch {epoch + 1}/{config.epochs}, loss {running:.3f}")
    running = _fold(running, pending)
    net.eval()
    return {"train_s": time.perf_counter() - start, "final_loss": running, "steps": step}
