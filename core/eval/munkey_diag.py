"""MUNKEY diagnostics (arXiv 2603.15033, METHODS.md §2): image-only accuracy, pathway sensitivity,
the test images a deletion touched, and the inference cost of K passes against one.

A_img replaces every exemplar token by the learned null token, so it measures what the *shared
weights* alone know. Deletion cannot change it (no weight moves); comparing A_img on the forget set
with A_img on the test set (and with the oracle's) shows whether the weights kept what was deleted.
"""

from __future__ import annotations

import time

import numpy as np

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval.metrics import accuracy
from core.models.munkey import MunkeyClassifier

EXPLANATIONS = {
    "A_img": "Image-only accuracy (%): every retrieved exemplar token replaced by the learned null token; "
             "what the shared weights know without the memory.",
    "pathway_sensitivity": "(A_full - A_img) / A_full: the share of accuracy that needs the memory "
                           "(0 = the memory is not used).",
}


def image_only_accuracy(model: MunkeyClassifier, dataset: Dataset, split: str,
                        ids: np.ndarray | None = None) -> float:
    """A_img (%) on a split, or on the given rows of it (e.g. the forget ids)."""
    probs = model.split_image_only_proba(dataset, split)
    labels = getattr(dataset, f"y_{split}")
    if ids is not None:
        probs, labels = probs[ids], labels[ids]
    return accuracy(probs, labels)


def pathway_sensitivity(full_accuracy: float, image_only: float) -> float:
    """(A_full - A_img) / A_full [formula a guess, METHODS.md §2]."""
    return float((full_accuracy - image_only) / full_accuracy) if full_accuracy else float("nan")


def diagnostics(model: MunkeyClassifier, dataset: Dataset, request: ForgetRequest | None = None) -> dict:
    """A_img and pathway sensitivity on the test set, and A_img / full accuracy on D_f when a request is given."""
    ta = accuracy(model.split_proba(dataset, "test"), dataset.y_test)
    a_img_test = image_only_accuracy(model, dataset, "test")
    out = {"TA": ta, "A_img_test": a_img_test, "pathway_sensitivity": pathway_sensitivity(ta, a_img_test),
           "memory_size": int(model.active.sum())}
    if request is not None:
        ids = np.asarray(request.ids)
        out["A_img_forget"] = image_only_accuracy(model, dataset, "train", ids)
        out["FA"] = accuracy(model.split_proba(dataset, "train")[ids], dataset.y_train[ids])
        out["weights_keep_forget_set"] = bool(out["A_img_forget"] > a_img_test)
    return out


def deletion_touched_test_images(before: MunkeyClassifier, after: MunkeyClassifier, dataset: Dataset,
                                 forgotten: np.ndarray) -> dict:
    """Test images whose K retrieved entries included a forgotten sample (``retrieved_forgotten``) and, of
    those, the ones whose predicted class changed with the deletion (``changed``): where to look first.
    No other test image can change: its K retrieved entries, hence its prediction, are the same after."""
    keys = before.split_keys(dataset, "test")
    ids, _ = before.neighbours(keys, cache=(dataset.fingerprint(), "test"))
    touched = np.flatnonzero(np.isin(ids, np.asarray(forgotten, dtype=np.int64)).any(1))
    moved = before.split_proba(dataset, "test").argmax(1) != after.split_proba(dataset, "test").argmax(1)
    return {"retrieved_forgotten": touched, "changed": touched[moved[touched]]}


def inference_cost(model: MunkeyClassifier, x: np.ndarray, repeats: int = 1) -> dict:
    """Seconds per image of the ensemble (K passes) against a single pass ("softmax") and image only."""
    timings = {}
    variants = {"ensemble": model.with_options(aggregation="ensemble"),
                "single_pass": model.with_options(aggregation="softmax")}
    for name, m in variants.items():
        m.predict_proba(x[:8])  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            m.predict_proba(x)
        timings[name] = (time.perf_counter() - start) / (repeats * len(x))
    start = time.perf_counter()
    for _ in range(repeats):
        model.image_only_proba(x)
    timings["image_only"] = (time.perf_counter() - start) / (repeats * len(x))
    timings["ensemble_over_single"] = timings["ensemble"] / max(timings["single_pass"], 1e-12)
    return timings
