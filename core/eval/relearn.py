"""Relearn time: how quickly fine-tuning on D_f brings the forgotten knowledge back (EVIDENCE.md §5).

A model that only suppresses D_f relearns it in a few steps; one that never saw it (the oracle) needs as many
as learning it afresh. Chundawat et al., "Zero-Shot Machine Unlearning" (arXiv 2201.05629, the Anamnesis Index);
Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from core.models.base import Classifier, to_device
from core.models.parametric import ParametricClassifier


def relearn_target(forget_probs: np.ndarray, forget_labels: np.ndarray, alpha: float = 0.05) -> float:
    """The forget accuracy (%) relearning must reach: (1 − α) · the original's accuracy on D_f (α = 0.05)."""
    acc = (np.asarray(forget_probs).argmax(1) == forget_labels).mean() * 100
    return float((1 - alpha) * acc)


@torch.no_grad()
def _measure(net: torch.nn.Module, x: np.ndarray, y: torch.Tensor, device: torch.device, metric: str) -> float:
    """Accuracy (%) or mean cross-entropy of ``net`` on (x, y), in batches."""
    logits = torch.cat([net(to_device(x[i:i + 1024], device)).float() for i in range(0, len(x), 1024)])
    if metric == "accuracy":
        return float((logits.argmax(1) == y).float().mean() * 100)
    return float(F.cross_entropy(logits, y))


def relearn_time(model: Classifier, x: np.ndarray, y: np.ndarray, target: float, metric: str = "accuracy",
                 eval_x: np.ndarray | None = None, eval_y: np.ndarray | None = None, lr: float = 0.01,
                 batch_size: int = 64, max_steps: int = 500, momentum: float = 0.9, seed: int = 0,
                 eval_every: int = 1) -> dict:
    """SGD steps of fine-tuning a copy of a parametric ``model`` on (x, y) = D_f until the evaluation set
    ((x, y) unless ``eval_x``/``eval_y`` are given, e.g. the forgotten class's test images) reaches ``target``:
    accuracy ≥ target (%) or, with ``metric="loss"``, mean cross-entropy ≤ target (EVIDENCE §5 for random
    requests). Batches are drawn from seeded shuffles of D_f, so models compared with the same ``seed`` see the
    same data order. The network stays in eval mode (BatchNorm statistics and dropout fixed: train mode would
    move them; EVIDENCE §5 pitfalls); ``model`` itself is never changed. Returns steps (None when the target
    was not reached within ``max_steps``), reached, the curve [[step, value], ...] and the settings."""
    if not isinstance(model, ParametricClassifier):
        raise TypeError(f"relearn time fine-tunes a parametric network; got a {type(model).__name__}")
    if metric not in ("accuracy", "loss"):
        raise ValueError(f"metric is 'accuracy' or 'loss', got {metric!r}")
    if len(y) == 0:
        raise ValueError("no forgotten samples to relearn on")
    device = model.device
    net = copy.deepcopy(model.net).eval()
    ex, ey = (x, y) if eval_x is None else (eval_x, eval_y)
    ey_t = torch.as_tensor(np.asarray(ey), dtype=torch.long, device=device)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    done = (lambda v: v >= target) if metric == "accuracy" else (lambda v: v <= target)
    value = _measure(net, ex, ey_t, device, metric)
    curve = [[0, value]]
    settings = {"target": float(target), "metric": metric, "lr": lr, "batch_size": batch_size, "cap": max_steps,
                "seed": seed}
    if done(value):
        return {"steps": 0, "reached": True, "curve": curve, **settings}
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    rng = np.random.default_rng(seed)
    order, at = rng.permutation(len(y)), 0
    with torch.enable_grad():
        for step in range(1, max_steps + 1):
            if at >= len(order):  # a new shuffle of D_f each pass
                order, at = rng.permutation(len(y)), 0
            batch = order[at:at + batch_size]
            at += len(batch)
            loss = F.cross_entropy(net(to_device(x[batch], device)), y_t[torch.as_tensor(batch, device=device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % eval_every == 0 or step == max_steps:
                value = _measure(net, ex, ey_t, device, metric)
                curve.append([step, value])
                if done(value):
                    return {"steps": step, "reached": True, "curve": curve, **settings}
    return {"steps": None, "reached": False, "curve": curve, **settings}


def anamnesis_index(method: dict, oracles: list[dict], min_oracle_steps: float = 3.0) -> dict:
    """AIN = rt(θ_u) / mean rt(θ_r) (Chundawat et al.): ≈1 ideal, ≪1 residual knowledge, >1 damage. A run that
    never reached the target counts as its cap and is marked ``censored``. When the oracles relearn in fewer than
    ``min_oracle_steps`` steps (random requests: they already reach the target) the ratio is None and the steps
    speak for themselves (EVIDENCE §5 pitfalls)."""
    def steps(r: dict) -> float:
        return float(r["cap"] if r["steps"] is None else r["steps"])

    oracle_steps = [steps(r) for r in oracles]
    mean = float(np.mean(oracle_steps)) if oracle_steps else float("nan")
    censored = method["steps"] is None or any(r["steps"] is None for r in oracles)
    ratio = steps(method) / mean if oracle_steps and mean >= min_oracle_steps else None
    return {"ain": ratio, "method_steps": steps(method), "oracle_steps": oracle_steps, "oracle_mean": mean,
            "oracle_sd": float(np.std(oracle_steps, ddof=1)) if len(oracle_steps) > 1 else float("nan"),
            "censored": censored, "k": len(oracle_steps)}
