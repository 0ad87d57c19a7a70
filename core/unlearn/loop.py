"""The one loop every post-hoc method shares: copy the model, feed forget/retain batches, time the update.

A method file holds only its config dataclass and its update step. It calls :func:`unlearn` with an
``update(ctx)`` function; ``ctx`` (an :class:`UnlearnContext`) owns a deep copy of the network (the input
model is never touched: it is shared by browser sessions), the forget and retain ids, the data access,
progress and cancellation. Gradient methods call :meth:`UnlearnContext.sgd` with their loss; closed-form
methods (DAMP, SSD) call :meth:`UnlearnContext.passes` for their statistics and edit ``ctx.net`` in place.
:func:`unlearn` times the whole update with ``time.perf_counter`` and returns the :class:`UnlearnResult`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress, no_progress, to_device
from core.models.parametric import ParametricClassifier
from core.models.training import seed_everything
from core.unlearn.registry import UnlearnResult


@dataclass
class Batch:
    """One step's training ids: a forget batch, a retain batch (either may be empty), and where we are."""

    forget: np.ndarray
    retain: np.ndarray
    epoch: int
    step: int  # 0-based over the whole run
    total: int  # steps in the whole run


@dataclass
class UnlearnContext:
    """Everything an update step needs; ``net`` is the private copy the method edits."""

    net: nn.Module
    original: nn.Module  # the input model's network, read-only (SCRUB's teacher, SSD's reference)
    dataset: Dataset
    request: ForgetRequest
    device: torch.device
    forget_ids: np.ndarray
    retain_ids: np.ndarray
    rng: np.random.Generator
    progress: Progress = no_progress
    cancel: CancelToken | None = None
    log: dict = field(default_factory=dict)
    touched: dict = field(default_factory=dict)
    _labels: torch.Tensor | None = None

    # ---- data -------------------------------------------------------------------------------------------
    def x(self, ids: np.ndarray) -> torch.Tensor:
        """Training images ``ids`` on the device (channels-last)."""
        return to_device(self.dataset.x_train[ids], self.device)

    def y(self, ids: np.ndarray) -> torch.Tensor:
        """Training labels ``ids`` on the device."""
        if self._labels is None:
            self._labels = torch.as_tensor(self.dataset.y_train, dtype=torch.long)
        return self._labels[torch.as_tensor(ids, dtype=torch.long)].to(self.device)

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.check()

    def sample(self, ids: np.ndarray, limit: int | None) -> np.ndarray:
        """At most ``limit`` of ``ids``, drawn without replacement (all of them when ``limit`` is None)."""
        if limit is None or limit >= len(ids):
            return np.asarray(ids)
        return np.sort(self.rng.choice(ids, size=int(limit), replace=False))

    def per_class_sample(self, ids: np.ndarray, per_class: int | None) -> np.ndarray:
        """At most ``per_class`` ids of each class among ``ids``."""
        labels = self.dataset.y_train[ids]
        return np.concatenate([self.sample(ids[labels == c], per_class) for c in np.unique(labels)])

    # ---- feeding ----------------------------------------------------------------------------------------
    def batches(self, epochs: int, batch_size: int, over: str = "forget", retain_per_forget: float = 1.0,
                max_steps_per_epoch: int | None = None) -> Iterator[Batch]:
        """Shuffled batches for ``epochs`` epochs.

        over="forget": an epoch is one pass over D_f; each step also draws ``retain_per_forget`` times as
        many retain ids (0 for forget only). over="retain": an epoch is one pass over D_r (capped at
        ``max_steps_per_epoch`` steps), forget ids empty.
        """
        if over not in ("forget", "retain"):
            raise ValueError(f"over must be 'forget' or 'retain', got {over!r}")
        main = self.forget_ids if over == "forget" else self.retain_ids
        steps = max(1, int(np.ceil(len(main) / batch_size)))
        if max_steps_per_epoch is not None:
            steps = min(steps, max_steps_per_epoch)
        total = steps * epochs
        n_retain = int(round(batch_size * retain_per_forget)) if over == "forget" else 0
        empty = np.zeros(0, np.int64)
        step = 0
        for epoch in range(epochs):
            order = self.rng.permutation(main)
            for b in range(steps):
                self.check()
                ids = order[b * batch_size:(b + 1) * batch_size]
                if len(ids) == 0:
                    continue
                if over == "forget":
                    retain = self.rng.choice(self.retain_ids, size=n_retain, replace=False) if n_retain else empty
                    yield Batch(ids, retain, epoch, step, total)
                else:
                    yield Batch(empty, ids, epoch, step, total)
                step += 1

    def sgd(self, loss_fn: Callable[[Batch], torch.Tensor], batches: Iterator[Batch], lr: float,
            momentum: float = 0.9, weight_decay: float = 5e-4, params: list[nn.Parameter] | None = None,
            grad_hook: Callable[[], None] | None = None, label: str = "unlearning",
            progress_span: tuple[float, float] = (0.0, 1.0), train_mode: bool = True) -> dict:
        """SGD on ``loss_fn(batch)`` over ``batches``; ``grad_hook`` runs between backward and step
        (SalUn's saliency mask). Returns the number of steps and the last loss."""
        params = params if params is not None else [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.net.train(train_mode)
        steps, last = 0, float("nan")
        lo, hi = progress_span
        for batch in batches:
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_hook is not None:
                grad_hook()
            optimizer.step()
            steps += 1
            last = float(loss.detach())
            if steps % 5 == 0 or batch.step == batch.total - 1:
                self.progress(lo + (hi - lo) * (batch.step + 1) / batch.total,
                              f"{label}: epoch {batch.epoch + 1}, step {batch.step + 1}/{batch.total}, "
                              f"loss {last:.3f}")
        self.net.eval()
        self.log.setdefault("phases", []).append({"phase": label, "steps": steps, "last_loss": last})
        return {"steps": steps, "last_loss": last}

    def passes(self, ids: np.ndarray, batch_size: int = 256) -> Iterator[np.ndarray]:
        """Batches of ``ids`` in order for a statistics pass (checks cancel before each)."""
        for i in range(0, len(ids), batch_size):
            self.check()
            yield ids[i:i + batch_size]


UpdateFn = Callable[[UnlearnContext], None]


def unlearn(name: str, model: Classifier, dataset: Dataset, request: ForgetRequest, update: UpdateFn,
            seed: int = 0, progress: Progress = no_progress, cancel: CancelToken | None = None) -> UnlearnResult:
    """Run ``update`` on a deep copy of ``model``'s network and return the new model, timed.

    The clock (``time.perf_counter``) covers the copy, every statistics pass and every update step.
    """
    if not isinstance(model, ParametricClassifier):
        raise TypeError(f"{name} edits a parametric network; got a {type(model).__name__}")
    if len(request.ids) == 0:
        raise ValueError(f"{name}: the forget request is empty")
    progress(0.0, f"{name}: starting")
    start = time.perf_counter()
    net = copy.deepcopy(model.net)
    net.eval()
    forget = request.mask(dataset.num_train)
    ctx = UnlearnContext(net=net, original=model.net, dataset=dataset, request=request, device=model.device,
                         forget_ids=np.flatnonzero(forget), retain_ids=np.flatnonzero(~forget),
                         rng=seed_everything(seed), progress=progress, cancel=cancel)
    update(ctx)
    net.eval()
    seconds = time.perf_counter() - start
    if "parameters" not in ctx.touched:
        ctx.touched["parameters"] = _changed_parameters(model.net, net)
    progress(1.0, f"{name}: done in {seconds:.1f} s")
    return UnlearnResult(ParametricClassifier(net, model.num_classes, model.device), name, seconds,
                         touched=ctx.touched, log=ctx.log)


@torch.no_grad()
def _changed_parameters(before: nn.Module, after: nn.Module) -> int:
    """How many scalar parameters differ between two copies of a network."""
    old = dict(before.named_parameters())
    return int(sum((p != old[n]).sum().item() for n, p in after.named_parameters()))
