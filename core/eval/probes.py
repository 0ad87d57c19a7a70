"""Class-forgetting diagnostics: what each layer still knows about a forgotten class.

- ``operator_inputs``: the input each conv / linear operator receives (conv: pooled over space, so one
  value per input channel), from one hooked pass. DAMP builds its prototypes from the same features.
- ``probe_accuracy`` / ``layer_decodability``: a balanced, held-out, forget-vs-retain logistic probe per
  layer. Real removal lowers the curve towards the oracle's; head suppression leaves the early and
  middle layers as decodable as in the original model. On Fashion-MNIST an oracle that never saw a class
  still separates it in its deep features, so compare curves with the oracle's, never with chance (50%).
- ``selectivity``: forget drop minus retain drop, in points.
- ``head_bias_shift``: how the forgotten classes' head biases moved, raw and against the other classes.
- ``representational_dissimilarity``: 1 - linear CKA per layer between a model and the oracle.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import Classifier, to_device

OPERATOR_TYPES = (nn.Conv2d, nn.Linear)


def operators(net: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The conv / linear modules of ``net`` in the order a forward pass on ``example`` calls them."""
    order: list[tuple[str, nn.Module]] = []
    handles = [m.register_forward_hook(lambda mod, _i, _o, name=name: order.append((name, mod)))
               for name, m in net.named_modules() if isinstance(m, OPERATOR_TYPES)]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(example[:1])
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    seen, out = set(), []
    for name, mod in order:
        if name not in seen:
            seen.add(name)
            out.append((name, mod))
    return out


def _pooled(t: torch.Tensor) -> torch.Tensor:
    """Conv inputs averaged over space (channel space); linear inputs as they are."""
    return t.float().mean(dim=(2, 3)) if t.dim() == 4 else t.float().flatten(1)


@torch.no_grad()
def operator_inputs(net: nn.Module, x: np.ndarray, device: torch.device, names: Iterable[str] | None = None,
                    batch_size: int = 512) -> dict[str, np.ndarray]:
    """Per operator name, the (pooled) input it receives for each image of ``x``: arrays (N, d_in)."""
    modules = dict(net.named_modules())
    names = list(names) if names is not None else [n for n, m in modules.items() if isinstance(m, OPERATOR_TYPES)]
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = [modules[n].register_forward_pre_hook(lambda _m, inp, n=n: store[n].append(_pooled(inp[0]).cpu()))
               for n in names]
    was_training = net.training
    net.eval()
    try:
        for i in range(0, len(x), batch_size):
            net(to_device(x[i:i + batch_size], device))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return {n: torch.cat(v).numpy() if v else np.zeros((0, 0), np.float32) for n, v in store.items()}


def balanced_sample(is_forget: np.ndarray, rng: np.random.Generator, limit: int | None = None) -> np.ndarray:
    """Row indices with as many retain rows as forget rows (at most ``limit`` per side), shuffled."""
    pos, neg = np.flatnonzero(is_forget), np.flatnonzero(~is_forget)
    n = min(len(pos), len(neg), limit or len(pos))
    return rng.permutation(np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)]))


def probe_accuracy(features: np.ndarray, is_forget: np.ndarray, seed: int = 0, limit: int | None = 1000,
                   max_iter: int = 300) -> float:
    """Held-out accuracy (%) of a logistic forget-vs-retain probe on balanced classes (train/test halves)."""
    rng = np.random.default_rng(seed)
    rows = balanced_sample(np.asarray(is_forget, bool), rng, limit)
    if len(rows) < 4 or not np.isfinite(features[rows]).all():  # a diverged network has no probe
        return float("nan")
    half = len(rows) // 2
    tr, te = rows[:half], rows[half:]
    scaler = StandardScaler().fit(features[tr])
    clf = LogisticRegression(max_iter=max_iter, C=1.0)
    y = np.asarray(is_forget, bool)
    if len(np.unique(y[tr])) < 2:
        return float("nan")
    clf.fit(scaler.transform(features[tr]), y[tr])
    return float((clf.predict(scaler.transform(features[te])) == y[te]).mean() * 100)


def _probe_rows(dataset: Dataset, classes: tuple[int, ...], per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(dataset.num_classes):
        ids = np.flatnonzero(dataset.y_test == c)
        rows.append(rng.choice(ids, min(len(ids), per_class), replace=False))
    return np.sort(np.concatenate(rows))


def _net(model: Classifier) -> nn.Module:
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module):
        raise TypeError(f"layer probes need a network with conv/linear operators; got {type(model).__name__}")
    return net


def layer_decodability(model: Classifier, dataset: Dataset, request: ForgetRequest, per_class: int = 300,
                       seed: int = 0) -> list[dict]:
    """Per operator (in forward order), how well a linear probe separates the forgotten classes from the
    rest in the operator's input, on held-out test images; the last row is the penultimate embedding."""
    if not request.classes:
        raise ValueError("layer decodability is defined for class requests")
    net = _net(model)
    device = getattr(model, "device", torch.device("cpu"))
    rows = _probe_rows(dataset, request.classes, per_class, seed)
    x = dataset.x_test[rows]
    is_forget = np.isin(dataset.y_test[rows], request.classes)
    ops = operators(net, to_device(x[:1], device))
    feats = operator_inputs(net, x, device, [n for n, _ in ops])
    return [{"layer": name, "depth": i + 1, "probe_acc": probe_accuracy(feats[name], is_forget, seed)}
            for i, (name, _) in enumerate(ops)]


def _decodability_memo(model: Classifier) -> dict:
    return model.__dict__.setdefault("_layer_decodability", {})


def memoised_decodability(model: Classifier, dataset: Dataset, request: ForgetRequest) -> list[dict]:
    """``layer_decodability`` memoised on the model instance, as its whole-split predictions are (a model is
    never changed once made, so the curve of one request stays valid)."""
    key = (dataset.fingerprint(), request.key())
    memo = _decodability_memo(model)
    if key not in memo:
        memo[key] = layer_decodability(model, dataset, request)
    return memo[key]


def decodability_known(model: Classifier, dataset: Dataset, request: ForgetRequest) -> bool:
    """Whether ``memoised_decodability`` would answer at once."""
    return (dataset.fingerprint(), request.key()) in _decodability_memo(model)


def selectivity(before: dict, after: dict) -> float:
    """Forget drop minus retain drop, in points (test accuracy per class group for class requests, else
    FA / RA). Higher is better: the forgotten data lost accuracy, the rest did not."""
    if "forgotten_TA" in before and "forgotten_TA" in after:
        f0, f1, r0, r1 = before["forgotten_TA"], after["forgotten_TA"], before["retained_TA"], after["retained_TA"]
    else:
        f0, f1, r0, r1 = before["FA"], after["FA"], before["RA"], after["RA"]
    return float((f0 - f1) - (r0 - r1))


def _head(model: Classifier) -> nn.Linear:
    head = getattr(_net(model), "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise TypeError("the model has no linear head with a bias")
    return head


@torch.no_grad()
def head_bias_shift(before: Classifier, after: Classifier, classes: Iterable[int]) -> dict:
    """How the head biases of ``classes`` moved: raw shift, and shift relative to the other classes' mean
    shift (a negative relative shift means the method suppresses the class at the head)."""
    b0, b1 = _head(before).bias.detach().cpu().numpy(), _head(after).bias.detach().cpu().numpy()
    classes = list(classes)
    others = np.setdiff1d(np.arange(len(b0)), classes)
    delta = b1 - b0
    return {"per_class": {int(c): float(delta[c]) for c in classes},
            "mean_shift": float(delta[classes].mean()),
            "relative_shift": float(delta[classes].mean() - delta[others].mean())}


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA between two feature matrices over the same rows (1 = same geometry up to rotation/scale)."""
    a = np.asarray(a, np.float64) - np.mean(a, 0)
    b = np.asarray(b, np.float64) - np.mean(b, 0)
    num = np.linalg.norm(b.T @ a) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else float("nan")


def representational_dissimilarity(model: Classifier, oracle: Classifier, dataset: Dataset,
                                   per_class: int = 200, seed: int = 0) -> list[dict]:
    """Per operator, 1 - linear CKA between ``model``'s and ``oracle``'s (pooled) inputs on the same test
    images; the two networks must share an architecture."""
    net_m, net_o = _net(model), _net(oracle)
    device_m = getattr(model, "device", torch.device("cpu"))
    device_o = getattr(oracle, "device", torch.device("cpu"))
    rows = _probe_rows(dataset, (), per_class, seed)
    x = dataset.x_test[rows]
    ops = operators(net_m, to_device(x[:1], device_m))
    names = [n for n, _ in ops]
    fm, fo = operator_inputs(net_m, x, device_m, names), operator_inputs(net_o, x, device_o, names)
    return [{"layer": n, "depth": i + 1, "dissimilarity": 1 - linear_cka(fm[n], fo[n])} for i, n in enumerate(names)]
