"""Nearest training samples in a model's embedding space (FAISS), and why an SPM prediction changed.

Neighbours are searched among the training samples a model still holds: all of them for the original,
the retained ones for an unlearned model (an SPM's memory mask, else the training set minus the request),
so a forgotten sample can never come back as a thumbnail. Search is exact L2 (``IndexFlatL2``), the
metric SPM's kNN mode uses; an id selector excludes what is not allowed, so nothing is rebuilt per query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import Classifier


def training_features(model: Classifier, ds: Dataset) -> np.ndarray:
    """The model's penultimate features of the whole training set (cached on the model)."""
    features_of = getattr(model, "features_of", None)
    if callable(features_of):
        return features_of(ds, "train")
    return model.split_embed(ds, "train")


def held_mask(model: Classifier, ds: Dataset, request: ForgetRequest | None = None) -> np.ndarray:
    """Which training samples the model holds: an SPM's memory, else everything outside ``request``."""
    active = getattr(model, "active", None)
    if isinstance(active, np.ndarray) and active.dtype == bool and len(active) == ds.num_train:
        return active.copy()
    mask = np.ones(ds.num_train, bool)
    if request is not None:
        mask &= ~request.mask(ds.num_train)
    return mask


class NeighbourIndex:
    """Exact L2 search over training features; ids outside ``allowed`` are never returned."""

    def __init__(self, features: np.ndarray, allowed: np.ndarray | None = None):
        import faiss

        self._faiss = faiss
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.allowed = np.ones(len(features), bool) if allowed is None else np.asarray(allowed, bool)
        if len(self.allowed) != len(self.features):
            raise ValueError(f"allowed mask has {len(self.allowed)} entries for {len(self.features)} features")
        self.index = faiss.IndexFlatL2(self.features.shape[1])
        self.index.add(self.features)
        self._bitmap = np.packbits(self.allowed, bitorder="little")

    def restricted(self, allowed: np.ndarray) -> NeighbourIndex:
        """The same features and FAISS index (shared, not copied) with another ``allowed`` mask."""
        other = object.__new__(NeighbourIndex)
        other._faiss, other.features, other.index = self._faiss, self.features, self.index
        other.allowed = np.asarray(allowed, bool)
        if len(other.allowed) != len(self.features):
            raise ValueError(f"allowed mask has {len(other.allowed)} entries for {len(self.features)} features")
        other._bitmap = np.packbits(other.allowed, bitorder="little")
        return other

    def search(self, queries: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest allowed ids and squared L2 distances per query row; -1 pads when too few exist.

        ``exclude`` (a training id, e.g. the query itself) is left out of the result.
        """
        faiss = self._faiss
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        bitmap = self._bitmap
        if exclude is not None and 0 <= exclude < len(self.allowed) and self.allowed[exclude]:
            mask = self.allowed.copy()
            mask[exclude] = False
            bitmap = np.packbits(mask, bitorder="little")
        k = max(1, min(int(k), len(self.features)))
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(self.allowed), faiss.swig_ptr(bitmap)))
        distances, ids = self.index.search(q, k, params=params)
        return ids, distances


def index_for(model: Classifier, ds: Dataset, request: ForgetRequest | None = None,
              base: NeighbourIndex | None = None) -> NeighbourIndex:
    """The index of what ``model`` holds. A model whose training features are ``base``'s (a by-design model
    after deletion keeps its encoder) reuses ``base``'s FAISS index with its own mask; others get their own."""
    features = training_features(model, ds)
    allowed = held_mask(model, ds, request)
    if base is not None and (features is base.features or (
            features.shape == base.features.shape and np.array_equal(features, base.features))):
        return base.restricted(allowed)
    return NeighbourIndex(features, allowed)


@dataclass
class Neighbour:
    id: int  # training id
    label: int
    distance: float  # L2 distance in the model's feature space


def neighbours_of(model: Classifier, ds: Dataset, split: str, sample_id: int, k: int = 8,
                  index: NeighbourIndex | None = None, request: ForgetRequest | None = None) -> list[Neighbour]:
    """The ``k`` nearest held training samples of one sample (never the sample itself)."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}")
    if index is None:
        index = NeighbourIndex(training_features(model, ds), held_mask(model, ds, request))
    if split == "train":
        query = index.features[sample_id]
    else:
        query = model.split_embed(ds, "test")[sample_id]
    ids, d2 = index.search(query, k, exclude=sample_id if split == "train" else None)
    return [Neighbour(int(i), int(ds.y_train[i]), float(np.sqrt(max(d, 0.0))))
            for i, d in zip(ids[0], d2[0]) if i >= 0]


# ---- why an SPM prediction changed --------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.where(np.isfinite(z), z, -np.inf)
    finite = np.isfinite(z)
    out = np.zeros_like(z, dtype=np.float64)
    if finite.any():
        e = np.exp(z[finite] - z[finite].max())
        out[finite] = e / e.sum()
    return out


def explain_spm(before, after, feature: np.ndarray, k: int | None = None) -> dict:
    """An SPM prediction before and after deletion, in terms of what it used.

    ``class_scores``: per class, the fusion score against the prototype (the class mean of the memory)
    before and after, the softmax probability, and how many samples the prototype averaged.
    ``knn_before`` / ``knn_after``: in kNN mode, the training samples that supported the prediction and
    their attention weights; ``removed`` lists supporters that deletion took out of the memory.
    """
    feature = np.atleast_2d(np.asarray(feature, dtype=np.float32))
    s_before = before.class_scores(feature)[0]
    s_after = after.class_scores(feature)[0]
    p_before, p_after = _softmax(s_before), _softmax(s_after)
    rows = []
    for c in range(before.num_classes):
        rows.append({"class": c, "score_before": float(s_before[c]) if np.isfinite(s_before[c]) else None,
                     "score_after": float(s_after[c]) if np.isfinite(s_after[c]) else None,
                     "prob_before": float(p_before[c]), "prob_after": float(p_after[c]),
                     "prototype_samples_before": int(before.counts[c]),
                     "prototype_samples_after": int(after.counts[c])})
    ids_b, w_b = before.neighbours(feature, k)
    ids_a, w_a = after.neighbours(feature, k)
    labels = before.train_labels

    def support(ids, weights):
        return [{"id": int(i), "label": int(labels[i]), "weight": float(w)} for i, w in zip(ids[0], weights[0])
                if i >= 0]

    knn_before, knn_after = support(ids_b, w_b), support(ids_a, w_a)
    knn_prob_b = np.zeros(before.num_classes)
    knn_prob_a = np.zeros(before.num_classes)
    for s in knn_before:
        knn_prob_b[s["label"]] += s["weight"]
    for s in knn_after:
        knn_prob_a[s["label"]] += s["weight"]
    removed = [s["id"] for s in knn_before if not after.active[s["id"]]]
    return {"class_scores": rows, "pred_before": int(np.argmax(p_before)), "pred_after": int(np.argmax(p_after)),
            "knn_before": knn_before, "knn_after": knn_after, "knn_pred_before": int(knn_prob_b.argmax()),
            "knn_pred_after": int(knn_prob_a.argmax()), "removed": removed}


def is_spm(model) -> bool:
    return all(callable(getattr(model, name, None)) for name in ("class_scores", "neighbours")) \
        and isinstance(getattr(model, "active", None), np.ndarray)
