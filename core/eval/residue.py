"""What the weights alone still reveal about D_f, read against the oracles (issue 14 §4, EVIDENCE.md).

A by-design deletion removes D_f from the memory (SPM's prototypes, MUNKEY's tokens) and moves no weight, yet
the encoder was trained on D_f. Each measure below runs on ``weight_features`` (features computed without
reading any memory: SPM's encoder, MUNKEY's image-only pass, a parametric network's penultimate layer) of the
judged model, the untouched original and each of the K oracles, and is judged against the oracles' band:

- **kNN accuracy** (cosine, k = ``KNN_K``, FAISS): labels of the queries read from their nearest labelled test
  images. Queries: a class request's forgotten classes' test images, each leaving itself out (how well the
  features still separate a class the oracles never saw); a sample request's D_f (how well they fit samples
  the oracles never saw).
- **Feature membership AUROC** (sample requests): score = cosine similarity of a sample's features to its
  class's mean over retained training samples; D_f against test samples of the same class mix. 50: no trace.
- **Representation dissimilarity** 1 − linear CKA on test images against each oracle, beside the
  oracle-to-oracle pairs; per layer for a network with conv/linear operators (``probes``), else on
  ``weight_features``.

A value outside the oracles' band says the weights still hold what a model that never saw D_f would not: a
memory deletion then needs the weights retrained (or a post-hoc method) to reach *unseen* at the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.eval.evidence import FLOOR, accuracy_floor, auc_sd, band
from core.eval.membership import matched_heldout
from core.eval.probes import linear_cka, representational_dissimilarity
from core.models.base import Classifier

KNN_K = 10
MAX_QUERIES = 1000  # D_f or forgotten-class test images scored per model (drawn with SEED)
MAX_REFERENCE = 5000  # retained training samples behind each class mean
CKA_PER_CLASS = 100  # test images per class for CKA
SEED = 0


def _normalised(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float32)
    return np.ascontiguousarray(f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12))


def knn_correct(queries: np.ndarray, query_labels: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray,
                k: int = KNN_K, query_rows: np.ndarray | None = None) -> np.ndarray:
    """Per query, whether the majority label among its ``k`` cosine-nearest ``reference`` rows is its own
    (ties: the smallest label), by exact FAISS inner-product search. ``query_rows``: each query's own row in
    ``reference``, left out of its neighbours (leave-one-out)."""
    import faiss

    ref = _normalised(reference)
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    extra = 0 if query_rows is None else 1
    _, ids = index.search(_normalised(queries), min(k + extra, len(ref)))
    if query_rows is not None:  # drop the query itself, else the last neighbour
        own = ids == np.asarray(query_rows)[:, None]
        keep = ~own
        keep[~own.any(1), -1] = False
        ids = ids[keep].reshape(len(ids), -1)
    votes = np.asarray(reference_labels)[ids]
    n_classes = int(max(np.max(reference_labels), np.max(query_labels))) + 1
    counts = np.stack([(votes == c).sum(1) for c in range(n_classes)], 1)
    return counts.argmax(1) == np.asarray(query_labels)


def centroid_scores(features: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row to its own label's centroid."""
    return (_normalised(features) * _normalised(centroids)[np.asarray(labels)]).sum(1)


def _draw(ids: np.ndarray, limit: int, seed: int = SEED) -> np.ndarray:
    ids = np.asarray(ids)
    if len(ids) <= limit:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, limit, replace=False))


def residue_rows(dataset: Dataset, request: ForgetRequest) -> dict:
    """The fixed rows every model is measured on: the forgotten classes' test rows (class requests) or D_f, its
    matched held-out test rows and the retained training samples behind the class means (sample requests)."""
    if request.classes:
        return {"queries": _draw(np.flatnonzero(np.isin(dataset.y_test, request.classes)), MAX_QUERIES)}
    forget = np.asarray(request.ids)
    rows = {"forget": _draw(forget, MAX_QUERIES)}
    rows["heldout"] = matched_heldout(dataset.y_train[rows["forget"]], dataset.y_test, SEED)
    rows["retained"] = _draw(np.setdiff1d(np.arange(dataset.num_train), forget), MAX_REFERENCE)
    return rows


def model_residue(model: Classifier, dataset: Dataset, request: ForgetRequest, rows: dict | None = None) -> dict:
    """The measures above for one model: ``knn_acc`` (with each query's ``knn_correct``) and, for sample
    requests, ``feature_mia``. The kNN reference is the whole test set (a class request's queries leave
    themselves out)."""
    rows = rows or residue_rows(dataset, request)
    feats = model.weight_features
    ref = feats(dataset.x_test)
    if request.classes:
        q = rows["queries"]
        correct = knn_correct(ref[q], dataset.y_test[q], ref, dataset.y_test, query_rows=q)
        return {"knn_acc": float(correct.mean() * 100), "knn_correct": correct}
    forget, heldout, retained = rows["forget"], rows["heldout"], rows["retained"]
    f_forget = feats(dataset.x_train[forget])
    f_retained = feats(dataset.x_train[retained])
    labels = dataset.y_train[retained]
    centroids = np.stack([f_retained[labels == c].mean(0) if (labels == c).any() else np.zeros(f_retained.shape[1])
                          for c in range(dataset.num_classes)])
    pos = centroid_scores(f_forget, dataset.y_train[forget], centroids)
    neg = centroid_scores(ref[heldout], dataset.y_test[heldout], centroids)
    correct = knn_correct(f_forget, dataset.y_train[forget], ref, dataset.y_test)
    return {"knn_acc": float(correct.mean() * 100), "knn_correct": correct,
            "feature_mia": M.auroc(pos, neg), "n_pos": len(pos), "n_neg": len(neg)}


def same_weights(a: Classifier, b: Classifier) -> bool:
    """Whether two models run the very same network objects (a memory deletion shares its original's), so
    every measure here is the same for both and is computed once."""
    na, nb = a.networks(), b.networks()
    return na.keys() == nb.keys() and all(na[k] is nb[k] for k in na)


def _cka_rows(dataset: Dataset) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return np.sort(np.concatenate([rng.choice(ids, min(len(ids), CKA_PER_CLASS), replace=False)
                                   for c in range(dataset.num_classes)
                                   if len(ids := np.flatnonzero(dataset.y_test == c))]))


def dissimilarity(a: Classifier, b: Classifier, dataset: Dataset) -> dict[str, float]:
    """Per layer after the first, 1 − linear CKA between two models of one architecture on the same test images;
    models without conv/linear operators in ``net`` give one entry, ``features``, on ``weight_features``."""
    try:  # the first operator's input is the image itself, the same for every model
        return {r["layer"]: r["dissimilarity"]
                for r in representational_dissimilarity(a, b, dataset, per_class=CKA_PER_CLASS, seed=SEED)[1:]}
    except TypeError:
        x = dataset.x_test[_cka_rows(dataset)]
        return {"features": 1 - linear_cka(a.weight_features(x), b.weight_features(x))}


def cka_band(model: Classifier, oracles: Sequence[Classifier], dataset: Dataset,
             original: Classifier | None = None) -> list[dict]:
    """Per layer: the model's mean dissimilarity to the oracles, the original's, and the oracle pairs' mean, sd
    and band (``evidence.band``, floor 0.01); ``within``: the model lies no further from the oracles than they
    lie from one another. Pairs share oracles, so the band is narrower than independent draws would give: read
    a layer outside it as a pointer, not as proof."""
    to_model = [dissimilarity(model, o, dataset) for o in oracles]
    pairs = [dissimilarity(a, b, dataset) for a, b in combinations(oracles, 2)]
    to_original = None if original is None else to_model if same_weights(model, original) else \
        [dissimilarity(original, o, dataset) for o in oracles]
    out = []
    for depth, layer in enumerate(to_model[0], 1):
        b = band([p[layer] for p in pairs], floor=0.01)
        value = float(np.mean([d[layer] for d in to_model]))
        row = {"layer": layer, "depth": depth, "to_oracles": value, "pairs_mean": b["mean"], "pairs_sd": b["sd"],
               "band_hi": b["hi"], "within": bool(value <= b["hi"]) if np.isfinite(b["hi"]) else None}
        if to_original is not None:
            row["original_to_oracles"] = float(np.mean([d[layer] for d in to_original]))
        out.append(row)
    return out


def residue(model: Classifier, original: Classifier, oracles: Sequence[Classifier], dataset: Dataset,
            request: ForgetRequest) -> dict:
    """Every measure for ``model``, the ``original`` and each oracle, with the oracles' band and where the
    model lies: ``{"measures": [...], "cka": [...], "oracle_k": K}``. Needs two oracles for a band."""
    if len(request.ids) == 0:
        raise ValueError("the request holds no training sample: there is nothing whose residue to measure")
    if len(oracles) < 2:
        raise ValueError(f"the residue is judged against the oracles' spread: {len(oracles)} oracle(s) finished, "
                         "at least 2 are needed")
    rows = residue_rows(dataset, request)
    own = model_residue(model, dataset, request, rows)
    per_model = {"model": own,
                 "original": own if same_weights(model, original) else model_residue(original, dataset, request, rows),
                 "oracles": [model_residue(o, dataset, request, rows) for o in oracles]}
    measures = []
    # kNN accuracy: the t band, floored by the spread the oracles' per-sample disagreement implies; the feature
    # membership AUROC: its Mann-Whitney sampling sd is known, so the normal band on max(sd, that sd), as the verdict
    knn_correct = np.stack([o["knn_correct"] for o in per_model["oracles"]])
    bands = {"knn_acc": {"floor": max(FLOOR, accuracy_floor(knn_correct))}}
    if "feature_mia" in per_model["model"]:
        bands["feature_mia"] = {"known_sd": auc_sd(per_model["model"]["n_pos"], per_model["model"]["n_neg"])}
    for name, label in (("knn_acc", "kNN accuracy on weight features (%)"),
                        ("feature_mia", "feature membership AUROC (%)")):
        if name not in bands:
            continue
        oracle_values = [o[name] for o in per_model["oracles"]]
        b = band(oracle_values, **bands[name])
        value = per_model["model"][name]
        measures.append({"measure": name, "label": label, "model": value, "original": per_model["original"][name],
                         "oracle_mean": b["mean"], "oracle_sd": b["sd"], "band": [b["lo"], b["hi"]],
                         "position": "above" if value > b["hi"] else "below" if value < b["lo"] else "inside"})
    return {"measures": measures, "cka": cka_band(model, oracles, dataset, original), "oracle_k": len(oracles)}
