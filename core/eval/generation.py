"""How well a generative model forgets: what a classifier sees in its images, how far they are from real images
and from a retrained oracle's, and whether they copy training images (deleted ones included).

The evaluation of the generation SPM in Zheng et al., "Designing to Forget" (CVPR 2026, arXiv 2603.22870;
their ``evaluation/cls_acc_edm.py``, ``fid_diffusion.py`` and ``fid_diff.py``), with the project's own classifier
in place of their pretrained CIFAR ResNet-20 and Inception (nothing is downloaded here):

- generated-class accuracy: % of the images generated for class c that the classifier labels c;
- UA (unlearning accuracy) = 100 - that accuracy on the forgotten class q, after forgetting;
- FD: the Fréchet distance (Heusel et al., NeurIPS 2017, the formula of FID) between Gaussians fitted to the
  classifier's penultimate features (``Classifier.embed``) of two image sets, to real retained-class images and
  to the oracle's samples (FD_O). Values are in that feature space, not comparable with Inception FIDs;
- memorisation: each generated image's nearest training images (exact L2 in pixel space by default, FAISS),
  searched among *all* training images so that a deleted one can still be found. An image is a near copy when
  its nearest distance is below ``copy_ratio`` times the mean distance to its next ``k - 1`` neighbours (the
  relative test of Carlini et al., "Extracting Training Data from Diffusion Models", USENIX Security 2023; the
  threshold and k here are our choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.dataset import Dataset
from core.eval.neighbours import NeighbourIndex
from core.models.base import Classifier

EXPLANATIONS = {
    "class_acc": "Generated-class accuracy: % of the images generated for a class that the classifier labels as "
                 "that class (mean over classes).",
    "ua": "Unlearning accuracy: 100 minus the % of images generated for the forgotten class that the classifier "
          "still labels as it. High means the class can no longer be drawn.",
    "retained_acc_drop": "Generated-class accuracy on the other classes before forgetting minus after, in points.",
    "fd": "Fréchet distance between the classifier's features of generated and real retained-class images "
          "(lower is closer); fd_floor is what real images of the same count score.",
    "fd_o": "Fréchet distance between the forgotten model's and the oracle's images, all classes, same noise.",
    "copies": "% of generated images whose nearest training image is much nearer than the next ones (a near copy).",
}


def predicted_labels(classifier: Classifier, images: np.ndarray) -> np.ndarray:
    """The classifier's label for each image."""
    return classifier.predict_proba(images).argmax(1)


def class_accuracy(classifier: Classifier, samples: dict[int, np.ndarray]) -> dict[int, float]:
    """% of the images generated for each class that the classifier labels as that class."""
    return {c: float((predicted_labels(classifier, x) == c).mean() * 100) for c, x in samples.items()}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to the rows of ``a`` and
    ``b``. The trace of the square root is taken as sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2))), a symmetric
    problem, so no complex parts appear."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two sets of at least 2 feature rows of one width; got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross, 0.0))


def feature_fd(classifier: Classifier, images_a: np.ndarray, images_b: np.ndarray) -> float:
    """Fréchet distance in the classifier's penultimate feature space."""
    return frechet_distance(classifier.embed(images_a), classifier.embed(images_b))


class TrainingNeighbours:
    """Exact L2 search over every training image (FAISS ``IndexFlatL2``): in pixel space (``space="pixels"``) or in
    a classifier's feature space (``"features"``). Forgotten images stay searchable: the question is whether a
    generated image still resembles one."""

    def __init__(self, dataset: Dataset, space: str = "pixels", classifier: Classifier | None = None):
        if space not in ("pixels", "features"):
            raise ValueError(f"unknown space {space!r}; known: pixels, features")
        if space == "features" and classifier is None:
            raise ValueError("feature-space neighbours need a classifier")
        self.space, self.classifier = space, classifier
        self.index = NeighbourIndex(self._vectors(dataset.x_train))

    def _vectors(self, images: np.ndarray) -> np.ndarray:
        if self.space == "pixels":
            return np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)
        return self.classifier.embed(images)

    def search(self, images: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(ids, L2 distances), each (N, k), nearest first."""
        ids, d2 = self.index.search(self._vectors(images), k)
        return ids, np.sqrt(np.clip(d2, 0, None))


@dataclass(frozen=True)
class Memorisation:
    """Nearest training images of a set of generated images and what they say about copying."""

    ids: np.ndarray  # (N, k) nearest training ids
    distances: np.ndarray  # (N, k) L2 distances
    near_copy: np.ndarray  # (N,) bool: nearest distance < copy_ratio x mean of the next k-1

    def summary(self, forgotten: np.ndarray | None = None) -> dict:
        """Shares in %; with ``forgotten`` ids, how often the nearest image is one of them (a near copy or not)."""
        nearest = self.ids[:, 0]
        out = {"images": int(len(nearest)), "mean_nearest_distance": float(self.distances[:, 0].mean()),
               "near_copies_pct": float(self.near_copy.mean() * 100)}
        if forgotten is not None:
            hit = np.isin(nearest, np.asarray(forgotten))
            out["nearest_is_forgotten_pct"] = float(hit.mean() * 100)
            out["near_copy_of_forgotten_pct"] = float((hit & self.near_copy).mean() * 100)
            out["forgotten_images_copied"] = int(len(np.unique(nearest[hit & self.near_copy])))
        return out


def memorisation(neighbours: TrainingNeighbours, images: np.ndarray, k: int = 5,
                 copy_ratio: float = 1 / 3) -> Memorisation:
    """The ``k`` nearest training images of each generated image and which ones are near copies."""
    if k < 2:
        raise ValueError("k must be at least 2: the near-copy test compares the nearest with the next ones")
    ids, dist = neighbours.search(images, k)
    near = dist[:, 0] < copy_ratio * dist[:, 1:].mean(1)
    return Memorisation(ids, dist, near)


def class_forgetting_report(classifier: Classifier, dataset: Dataset, q: int, before: dict[int, np.ndarray],
                            after: dict[int, np.ndarray], oracles: list[dict[int, np.ndarray]],
                            neighbours: TrainingNeighbours | None = None, seed: int = 0) -> dict:
    """Every number of a class forgetting: ``before``/``after``/each oracle map class -> images generated from the
    same noise. Accuracies in %, FDs in the classifier's feature space (``fd_floor``: real training images of the
    same count against the same real test images, the value a perfect generator would reach)."""
    retained = [c for c in sorted(before) if c != q]
    acc_before, acc_after = class_accuracy(classifier, before), class_accuracy(classifier, after)
    out = {"q": int(q), "class_acc_before": float(np.mean(list(acc_before.values()))),
           "per_class_acc_before": acc_before, "ua": 100 - acc_after[q],
           "retained_acc_before": float(np.mean([acc_before[c] for c in retained])),
           "retained_acc_after": float(np.mean([acc_after[c] for c in retained]))}
    out["retained_acc_drop"] = out["retained_acc_before"] - out["retained_acc_after"]

    def features(samples: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        return {c: classifier.embed(x) for c, x in samples.items()}

    def stacked(feats: dict[int, np.ndarray], classes) -> np.ndarray:
        return np.concatenate([feats[c] for c in classes])

    real = classifier.embed(dataset.x_test[np.isin(dataset.y_test, retained)])
    f_before, f_after, f_oracles = features(before), features(after), [features(o) for o in oracles]
    out["fd"] = frechet_distance(stacked(f_after, retained), real)
    out["fd_before"] = frechet_distance(stacked(f_before, retained), real)
    rng = np.random.default_rng(seed)
    real_train = np.concatenate([
        dataset.x_train[rng.choice(np.flatnonzero(dataset.y_train == c), len(after[c]), replace=False)]
        for c in retained])
    out["fd_floor"] = frechet_distance(classifier.embed(real_train), real)
    everything = sorted(after)
    if oracles:
        oracle_acc = [class_accuracy(classifier, o) for o in oracles]
        out["oracle_ua"] = float(np.mean([100 - a[q] for a in oracle_acc]))
        out["oracle_retained_acc"] = float(np.mean([np.mean([a[c] for c in retained]) for a in oracle_acc]))
        out["oracle_fd"] = float(np.mean([frechet_distance(stacked(f, retained), real) for f in f_oracles]))
        out["fd_o"] = float(np.mean([frechet_distance(stacked(f_after, everything), stacked(f, everything))
                                     for f in f_oracles]))
        out["fd_o_forgotten_class"] = float(np.mean([frechet_distance(f_after[q], f[q]) for f in f_oracles]))
        if len(oracles) > 1:  # the oracle-vs-oracle floor: what retraining with another seed alone gives
            out["fd_o_seed_floor"] = frechet_distance(stacked(f_oracles[0], everything),
                                                      stacked(f_oracles[1], everything))
    if neighbours is not None:
        forgotten = np.flatnonzero(dataset.y_train == q)
        out["memorisation_before"] = memorisation(neighbours, before[q]).summary(forgotten)
        out["memorisation_after"] = memorisation(neighbours, after[q]).summary(forgotten)
    return out
