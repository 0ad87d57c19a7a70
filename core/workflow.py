"""The operations the pages and the CLI share: originals, oracles, method runs, comparisons.

dataset -> model (trained or loaded) -> forget request -> method run -> evaluation against the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core import bundle, store
from core.configs import config_hash, config_to_dict
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.unlearn import get_method

NOISE_FLOOR_SEED_OFFSET = 1  # the second oracle uses seed + 1: the noise floor is oracle(seed) vs oracle(seed+1)


def original(kind: str, dataset: Dataset, progress: Progress = no_progress, cancel: CancelToken | None = None,
             **kwargs) -> bundle.TrainedModel:
    """The model of ``kind`` trained on the full training set."""
    return bundle.train_or_load(kind, dataset, progress=progress, cancel=cancel, **kwargs)


def oracle(kind: str, dataset: Dataset, request: ForgetRequest, seed_offset: int = 0,
           progress: Progress = no_progress, cancel: CancelToken | None = None, **kwargs) -> bundle.TrainedModel:
    """The same recipe retrained from scratch without ``request``'s samples (seed + ``seed_offset``)."""
    tc = oracle_train_config(kind, dataset, seed_offset, kwargs.pop("train_config", None))
    return bundle.train_or_load(kind, dataset, train_config=tc, excluded=request, progress=progress,
                                cancel=cancel, **kwargs)


def oracle_train_config(kind: str, dataset: Dataset, seed_offset: int = 0, base=None):
    """The original's recipe (``base`` or the kind's own) with the seed moved by ``seed_offset``."""
    base = base or bundle.recipe(dataset.name, kind)
    return replace(base, seed=base.seed + seed_offset)  # the noise floor compares two seeds


def oracle_job_key(kind: str, dataset: Dataset, request: ForgetRequest, seed_offset: int = 0) -> str:
    return f"oracle:{kind}:{dataset.fingerprint()}:{request.key()}:{seed_offset}"


def train_seconds(model: bundle.TrainedModel) -> float | None:
    log = model.meta.get("train_log") or {}
    return log.get("train_s")


def run_method(method: str, model: Classifier, dataset: Dataset, request: ForgetRequest, config=None,
               progress: Progress = no_progress, cancel: CancelToken | None = None):
    """Apply a registered unlearning method to ``model`` for ``request``."""
    spec = get_method(method)
    if model.kind not in spec.model_kinds:
        raise ValueError(f"{method} applies to {', '.join(spec.model_kinds)} models, not {model.kind}")
    if spec.class_only and not request.classes:
        raise ValueError(f"{method} forgets whole classes; pick classes rather than samples")
    return spec.run(model, dataset, request, config or spec.config_cls(), progress, cancel)


@dataclass
class Comparison:
    """One model's metrics against the oracle, with the oracle-vs-oracle noise floor beside them."""

    metrics: dict
    oracle_metrics: dict
    noise_floor: dict | None

def compare(model: Classifier, oracle_model: Classifier, dataset: Dataset, request: ForgetRequest,
            second_oracle: Classifier | None = None, seconds: float | None = None,
            oracle_seconds: float | None = None) -> Comparison:
    metrics = M.evaluate(model, oracle_model, dataset, request, seconds, oracle_seconds)
    oracle_metrics = M.split_metrics(oracle_model, dataset, request)
    floor = M.noise_floor(oracle_model, second_oracle, dataset, request) if second_oracle is not None else None
    return Comparison(metrics, oracle_metrics, floor)


def transition_matrix(before: np.ndarray, after: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: test images predicted i before unlearning and j after."""
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (before.argmax(1), after.argmax(1)), 1)
    return out


def changed_predictions(before: np.ndarray, after: np.ndarray, oracle_probs: np.ndarray | None = None,
                        labels: np.ndarray | None = None, limit: int | None = None) -> list[dict]:
    """Test rows whose predicted class changed, largest confidence shift first."""
    b, a = before.argmax(1), after.argmax(1)
    rows = np.flatnonzero(b != a)
    shift = np.abs(after - before).sum(1)[rows]
    rows = rows[np.argsort(-shift, kind="stable")][:limit]
    out = []
    for i in rows:
        row = {"test_id": int(i), "before": int(b[i]), "before_conf": float(before[i, b[i]]),
               "after": int(a[i]), "after_conf": float(after[i, a[i]])}
        if oracle_probs is not None:
            o = int(oracle_probs[i].argmax())
            row.update(oracle=o, oracle_conf=float(oracle_probs[i, o]))
        if labels is not None:
            row["label"] = int(labels[i])
        out.append(row)
    return out


def run_key(method: str, model_key: str, request: ForgetRequest, config) -> str:
    return f"{method}-{config_hash(method, model_key, request.key(), config)}"


def save_comparison(method: str, model_key: str, request: ForgetRequest, config, comparison: Comparison,
                    seconds: float, test_probs: np.ndarray, extra: dict | None = None) -> str:
    """Store a run (record + predictions) so it can be listed, reloaded and exported."""
    key = run_key(method, model_key, request, config)
    record = {"method": method, "model_key": model_key, "request": request.to_json(),
              "config": config_to_dict(config) if config is not None else None, "seconds": seconds,
              "metrics": comparison.metrics, "oracle_metrics": comparison.oracle_metrics,
              "noise_floor": comparison.noise_floor, **(extra or {})}
    store.save_run(key, record, {"test_probs": test_probs.astype(np.float32)})
    return key



def method_run(method: str, original_model: bundle.TrainedModel, dataset: Dataset, request: ForgetRequest,
               config=None, progress: Progress = no_progress, cancel: CancelToken | None = None) -> dict:
    """Run a method, retrain (or load) the oracle, compare, and store the run; the record the pages list."""
    kind = original_model.meta["kind"]
    config = config or get_method(method).config_cls()
    result = run_method(method, original_model.classifier, dataset, request, config, progress, cancel)
    progress(0.9, "oracle for comparison")
    oracle_model = oracle(kind, dataset, request, cancel=cancel)
    second = oracle(kind, dataset, request, seed_offset=NOISE_FLOOR_SEED_OFFSET, allow_train=False) \
        if bundle.is_available(kind, dataset, excluded=request,
                               train_config=oracle_train_config(kind, dataset, NOISE_FLOOR_SEED_OFFSET)) else None
    comparison = compare(result.model, oracle_model.classifier, dataset, request,
                         second.classifier if second else None, result.seconds, train_seconds(oracle_model))
    key = save_comparison(method, original_model.key, request, config, comparison, result.seconds,
                          result.model.split_proba(dataset, "test"), {"touched": result.touched})
    return {"method": method, "kind": kind, "seconds": result.seconds, "comparison": comparison,
            "model": result.model, "log": result.log, "run_key": key, "request_key": request.key(),
            "config": config}

