"""The one loop every post-hoc method shares: copy the model, feed forget/retain batches, time the update.

A method file holds only its config dataclass and its update step. It calls :func:`unlearn` with an
``update(ctx)`` function; ``ctx`` (an :class:`UnlearnContext`) owns a deep copy of the network (the input
model is never touched: it is shared by browser sessions), the forget and retain ids, the data access,
progress and cancellation. Gradient methods describe an epoch as a list of :class:`Pass` (a shuffled pass
over D_f or D_r, optionally paired with batches of the other set), make one optimiser with
:meth:`UnlearnContext.optimizer` and call :meth:`UnlearnContext.sgd` with their loss; the same optimiser
(momentum included) carries over every pass of the run, as in the reference implementations. Closed-form
methods (DAMP, SSD) call :meth:`UnlearnContext.passes` for their statistics and edit ``ctx.net`` in place.
:func:`unlearn` times the whole update with ``time.perf_counter`` and returns the :class:`UnlearnResult`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import CancelToken, Classifier, Progress, no_progress, to_device
from core.models.parametric import ParametricClassifier
from core.models.training import seed_everything
from core.unlearn.result import UnlearnResult


@dataclass
class Batch:
    """One step's training ids: a forget batch, a retain batch (either may be empty), and where we are."""

    forget: np.ndarray
    retain: np.ndarray
    epoch: int  # 0-based
    step: int  # 0-based over the whole run
    total: int  # steps in the whole run


@dataclass(frozen=True)
class Pass:
    """One shuffled pass over D_f (``over="forget"``) or D_r (``over="retain"``) in batches of ``batch_size``.

    ``paired`` > 0 pairs each batch with ``paired`` ids of the other set, drawn from successive shuffles of
    it (``zip(loader, cycle(other_loader))`` in the reference code). ``max_steps`` caps the pass (None: all).
    """

    over: str
    batch_size: int
    paired: int = 0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.over not in ("forget", "retain"):
            raise ValueError(f"a pass is over 'forget' or 'retain', got {self.over!r}")
        if self.batch_size < 1 or self.paired < 0:
            raise ValueError("batch sizes must be positive")


@dataclass(frozen=True)
class ReferenceSGD:
    """The optimiser settings of the l1-sparse / SalUn reference scripts (Jia et al., NeurIPS 2023; Fan et al.,
    ICLR 2024), shared by FT, GA, RL, l1-sparse and SalUn: SGD, batch 256, momentum 0.9, weight decay 5e-4."""

    batch_size: int = 256  # the reference repositories' default batch
    momentum: float = 0.9  # SGD as in the reference
    weight_decay: float = 5e-4  # as in the reference
    seed: int = 0  # batch order (and random labels where a method draws them)


Mask = dict[str, torch.Tensor]  # parameter name -> 0/1 tensor: 1 where the update may change the weight


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

    def cross_entropy(self, ids: np.ndarray) -> torch.Tensor:
        """Mean cross-entropy of ``net`` on training samples ``ids`` against their labels."""
        return F.cross_entropy(self.net(self.x(ids)), self.y(ids))

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
    def _ids(self, over: str) -> np.ndarray:
        return self.forget_ids if over == "forget" else self.retain_ids

    def _steps(self, p: Pass) -> int:
        steps = max(1, int(np.ceil(len(self._ids(p.over)) / p.batch_size)))
        return min(steps, p.max_steps) if p.max_steps else steps

    def batches(self, epochs: int, passes: Sequence[Pass] | Callable[[int], Sequence[Pass]]) -> Iterator[Batch]:
        """Batches for ``epochs`` epochs; each epoch runs ``passes`` in order (or ``passes(epoch)``, for a
        method whose epochs differ, such as SCRUB's max steps in its first epochs only)."""
        plan = [list(passes(e) if callable(passes) else passes) for e in range(epochs)]
        total = sum(self._steps(p) for ps in plan for p in ps)
        empty = np.zeros(0, np.int64)
        cycles: dict[str, list] = {"forget": [empty, 0], "retain": [empty, 0]}

        def paired(over: str, n: int) -> np.ndarray:
            pool = self._ids(over)
            out = []
            while n > 0 and len(pool):
                order, at = cycles[over]
                if at >= len(order):
                    order, at = self.rng.permutation(pool), 0
                take = order[at:at + n]
                cycles[over] = [order, at + len(take)]
                out.append(take)
                n -= len(take)
            return np.concatenate(out) if out else empty

        step = 0
        for epoch, ps in enumerate(plan):
            for p in ps:
                order = self.rng.permutation(self._ids(p.over))
                other = "retain" if p.over == "forget" else "forget"
                for b in range(self._steps(p)):
                    self.check()
                    ids = order[b * p.batch_size:(b + 1) * p.batch_size]
                    if len(ids) == 0:
                        continue
                    mate = paired(other, p.paired) if p.paired else empty
                    forget, retain = (ids, mate) if p.over == "forget" else (mate, ids)
                    yield Batch(forget, retain, epoch, step, total)
                    step += 1

    def optimizer(self, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                  params: list[nn.Parameter] | None = None) -> torch.optim.SGD:
        """One SGD optimiser over ``params`` (all trainable weights by default) for the whole run."""
        params = params if params is not None else [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def sgd(self, loss_fn: Callable[[Batch], torch.Tensor], batches: Iterator[Batch], optimizer: torch.optim.SGD,
            mask: Mask | None = None, lr_at: Callable[[int], float] | None = None, label: str = "unlearning",
            progress_span: tuple[float, float] = (0.0, 1.0), train_mode: bool = True) -> dict:
        """SGD on ``loss_fn(batch)`` over ``batches`` with ``optimizer``.

        ``mask``: only weights where the mask is 1 may move. The gradient is masked before the step and,
        after it, every masked-out weight is put back to the original model's value and its momentum is
        zeroed, so neither weight decay nor momentum moves it (SalUn's reference RL does the same).
        ``lr_at(epoch)`` sets the learning rate at the start of each epoch (a per-epoch schedule).
        Returns the number of steps and the last loss."""
        named = dict(self.net.named_parameters())
        originals = dict(self.original.named_parameters())
        if mask is not None:
            mask = {n: m.to(device=named[n].device, dtype=named[n].dtype) for n, m in mask.items()}
        self.net.train(train_mode)
        steps, last, epoch = 0, float("nan"), -1
        lo, hi = progress_span
        for batch in batches:
            if lr_at is not None and batch.epoch != epoch:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(batch.epoch)
            epoch = batch.epoch
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if mask is not None:
                for n, m in mask.items():
                    if named[n].grad is not None:
                        named[n].grad.mul_(m)
            optimizer.step()
            if mask is not None:
                _restore_masked(named, originals, mask, optimizer)
            steps += 1
            last = float(loss.detach())
            if steps % 5 == 0 or batch.step == batch.total - 1:
                self.progress(lo + (hi - lo) * (batch.step + 1) / batch.total,
                              f"{label}: epoch {batch.epoch + 1}, step {batch.step + 1}/{batch.total}, "
                              f"loss {last:.3f}")
        self.net.eval()
        self.log.setdefault("phases", []).append({"phase": label, "steps": steps, "last_loss": last})
        return {"steps": steps, "last_loss": last}

    def sgd_over(self, over: str, loss_fn: Callable[[Batch], torch.Tensor], c, label: str) -> dict:
        """``c.epochs`` shuffled passes over one set (``"retain"`` or ``"forget"``) with one SGD optimiser made
        from ``c`` (a :class:`ReferenceSGD` with ``epochs``, ``lr`` and ``max_steps_per_epoch``; 0: full passes)."""
        passes = [Pass(over, c.batch_size, max_steps=c.max_steps_per_epoch or None)]
        return self.sgd(loss_fn, self.batches(c.epochs, passes), self.optimizer(c.lr, c.momentum, c.weight_decay),
                        label=label)

    def passes(self, ids: np.ndarray, batch_size: int = 256) -> Iterator[np.ndarray]:
        """Batches of ``ids`` in order for a statistics pass (checks cancel before each)."""
        for i in range(0, len(ids), batch_size):
            self.check()
            yield ids[i:i + batch_size]


@torch.no_grad()
def _restore_masked(named: dict[str, nn.Parameter], originals: dict[str, nn.Parameter], mask: Mask,
                    optimizer: torch.optim.SGD) -> None:
    """Masked-out weights back to the original's values; their momentum to zero."""
    for n, m in mask.items():
        p = named[n]
        p.mul_(m).add_(originals[n].to(p.device) * (1 - m))
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            buf.mul_(m)


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
