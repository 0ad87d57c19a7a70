"""Every metric of METHODS.md §5, computed from probabilities; one plain-language sentence each."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import Classifier

EXPLANATIONS = {
    "TA": "Test accuracy: % of held-out test images classified correctly.",
    "RA": "Retain accuracy: % of the training images that were kept that are classified correctly.",
    "FA": "Forget accuracy: % of the forgotten training images still classified correctly; "
          "compare with the oracles, which never saw them.",
    "retained_TA": "Test accuracy on the classes that were not forgotten (class requests).",
    "forgotten_TA": "Test accuracy on test images of the forgotten classes (class requests): "
                    "0 means the class can no longer be recognised.",
    "PG": "Prediction gap: % of test images where this model's predicted class differs from an oracle's, "
          "averaged over the oracles.",
    "KL": "KL(oracle || model): how far this model's test probabilities are from an oracle's, in nats, averaged "
          "over the oracles.",
    "MIA": "Membership-inference AUROC (%): how well the per-sample loss tells forgotten training images "
           "from unseen images of the same classes; 50 means they look unseen.",
    "AvgGap": "Mean absolute difference from the oracles' mean over TA, RA, FA and MIA, in points.",
    "seconds": "Wall-clock time of the unlearning step itself.",
    "selectivity": "Forget drop minus retain drop, in points: high when only the forgotten data lost accuracy.",
    "decodability": "Per layer, how well a linear probe still tells the forgotten classes from the rest; "
                    "compare with the oracle's curve (a model that never saw a class can still separate it).",
    "speedup": "Oracle retrain time (mean over the oracles) divided by this method's time, measured on this "
               "machine.",
}


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of rows whose argmax equals the label (NaN for no rows)."""
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(probs).argmax(1) == labels).mean() * 100)


def per_class_accuracy(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    pred = np.asarray(probs).argmax(1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        sel = labels == c
        if sel.any():
            out[c] = (pred[sel] == c).mean() * 100
    return out


def prediction_gap(probs: np.ndarray, oracle_probs: np.ndarray) -> float:
    """100 - % agreement of the argmax with the oracle's."""
    return float(100 - (np.asarray(probs).argmax(1) == np.asarray(oracle_probs).argmax(1)).mean() * 100)


def kl_divergence(oracle_probs: np.ndarray, probs: np.ndarray, eps: float = 1e-8) -> float:
    """Mean over rows of KL(p_oracle || p_model) in nats; probabilities are clamped at ``eps``."""
    p = np.clip(np.asarray(oracle_probs, np.float64), eps, 1)
    q = np.clip(np.asarray(probs, np.float64), eps, 1)
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    return float((p * (np.log(p) - np.log(q))).sum(1).mean())


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve in %, by the Mann-Whitney rank statistic (ties count one half)."""
    pos, neg = np.asarray(positive_scores, np.float64), np.asarray(negative_scores, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks over ties
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)) * 100)


def sample_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    return -np.log(np.clip(np.asarray(probs)[np.arange(len(labels)), labels], eps, 1))


def mia_auroc(member_probs: np.ndarray, member_labels: np.ndarray, heldout_probs: np.ndarray,
              heldout_labels: np.ndarray) -> float:
    """Loss-threshold membership attack: AUROC (%) of -loss separating members from held-out samples."""
    return auroc(-sample_loss(member_probs, member_labels), -sample_loss(heldout_probs, heldout_labels))


def heldout_for(request: ForgetRequest, dataset: Dataset) -> np.ndarray:
    """Test rows the attack compares D_f with, drawn from D_f's own class distribution so that the attack
    reads membership rather than class (EVIDENCE §2a): the forgotten classes' test images for a class
    request; for listed ids (a lasso or a file, often a few classes) test rows matched to D_f's class mix
    (``membership.matched_heldout``, seed 0); for a random share, whose class mix is the training set's,
    the whole test set."""
    if request.classes:
        return np.flatnonzero(np.isin(dataset.y_test, request.classes))
    if request.kind == "ids":
        from core.eval.membership import matched_heldout  # membership imports this module's AUROC

        return matched_heldout(dataset.y_train[list(request.ids)], dataset.y_test, seed=0)
    return np.arange(len(dataset.y_test))


def model_metrics(test_probs: np.ndarray, train_probs: np.ndarray, dataset: Dataset,
                  request: ForgetRequest) -> dict:
    """Metrics of one model on its own: TA, RA, FA, MIA, per-class accuracy, class-request splits."""
    forget = request.mask(dataset.num_train)
    out = {
        "TA": accuracy(test_probs, dataset.y_test),
        "RA": accuracy(train_probs[~forget], dataset.y_train[~forget]),
        "FA": accuracy(train_probs[forget], dataset.y_train[forget]),
        "per_class": per_class_accuracy(test_probs, dataset.y_test, dataset.num_classes).tolist(),
    }
    held = heldout_for(request, dataset)
    out["MIA"] = mia_auroc(train_probs[forget], dataset.y_train[forget], test_probs[held], dataset.y_test[held])
    if request.classes:
        gone = np.isin(dataset.y_test, request.classes)
        out["retained_TA"] = accuracy(test_probs[~gone], dataset.y_test[~gone])
        out["forgotten_TA"] = accuracy(test_probs[gone], dataset.y_test[gone])
    return out


AVG_GAP_METRICS = ("TA", "RA", "FA", "MIA")


def gap_metrics(metrics: dict, test_probs: np.ndarray, oracle_metrics: dict, oracle_test_probs: np.ndarray) -> dict:
    """The model against one oracle: PG, KL and AvgGap over TA, RA, FA, MIA."""
    return {
        "PG": prediction_gap(test_probs, oracle_test_probs),
        "KL": kl_divergence(oracle_test_probs, test_probs),
        "AvgGap": float(np.mean([abs(metrics[k] - oracle_metrics[k]) for k in AVG_GAP_METRICS])),
    }


def mean_metrics(metrics_list: list[dict]) -> dict:
    """Each metric's mean over several models (the oracles): every number, and the per-class list element-wise."""
    if not metrics_list:
        raise ValueError("no metrics to average")
    out = {}
    for name, value in metrics_list[0].items():
        values = [m[name] for m in metrics_list]
        if isinstance(value, list):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a class without test images stays NaN
                out[name] = np.nanmean(np.asarray(values, np.float64), 0).tolist()
        elif isinstance(value, (int, float)):
            out[name] = float(np.mean(values))
    return out


def gaps_to_oracles(metrics: dict, test_probs: np.ndarray, oracle_metrics: list[dict],
                    oracle_test_probs: list[np.ndarray]) -> dict:
    """The model against K oracles: PG and KL averaged over the oracles, AvgGap over TA, RA, FA, MIA against the
    oracles' mean (the method values of ``evidence.oracle_spread``)."""
    mean = mean_metrics(oracle_metrics)
    return {
        "PG": float(np.mean([prediction_gap(test_probs, q) for q in oracle_test_probs])),
        "KL": float(np.mean([kl_divergence(q, test_probs) for q in oracle_test_probs])),
        "AvgGap": float(np.mean([abs(metrics[k] - mean[k]) for k in AVG_GAP_METRICS])),
    }


def split_metrics(model: Classifier, dataset: Dataset, request: ForgetRequest) -> dict:
    """``model_metrics`` of a classifier's (cached) predictions on the whole test and training sets. Memoised on
    the (immutable) model per dataset and request: one comparison asks for each model's several times. Each call
    gets its own copy."""
    memo, key = model.__dict__.setdefault("_split_metrics", {}), (dataset.fingerprint(), request.key())
    if key not in memo:
        memo[key] = model_metrics(model.split_proba(dataset, "test"), model.split_proba(dataset, "train"), dataset,
                                  request)
    return {name: list(value) if isinstance(value, list) else value for name, value in memo[key].items()}


def evaluate(model: Classifier, oracle: Classifier, dataset: Dataset, request: ForgetRequest,
             seconds: float | None = None, oracle_seconds: float | None = None) -> dict:
    """Every metric of ``model`` for ``request``, and its gap to ``oracle`` (retrained without D_f)."""
    metrics = split_metrics(model, dataset, request)
    oracle_metrics = split_metrics(oracle, dataset, request)
    metrics.update(gap_metrics(metrics, model.split_proba(dataset, "test"), oracle_metrics,
                               oracle.split_proba(dataset, "test")))
    if seconds is not None:
        metrics["seconds"] = seconds
        if oracle_seconds:
            metrics["speedup"] = oracle_seconds / max(seconds, 1e-9)
    return metrics
