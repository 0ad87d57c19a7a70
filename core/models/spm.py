"""SPM: the semi-parametric model of "Designing to Forget" (Zheng et al., CVPR 2026, arXiv 2603.22870).

Predictions fuse an image's features with class prototypes built from training samples:
``logits_c = (W_q f(x)) . (W_s mu_c) / sqrt(d)``, with no classification head. Deleting training
samples at test time only changes the prototypes; no weight moves. METHODS.md §1 says what is taken
from the authors' code and what is our choice.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from core.data.dataset import Dataset
from core.models.base import CancelToken, MemoryClassifier, Progress, SharedMemory, batched, no_progress, to_device
from core.models.encoders import EncoderConfig, build_encoder
from core.models.id_index import held_ids, id_index, index_without
from core.models.registry import register_model
from core.models.training import TrainConfig, train_loop


@dataclass(frozen=True)
class SPMConfig:
    """SPM training and inference settings."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # same encoder as the parametric model
    support_size: int = 128  # support images per episode, split over the batch's labels (paper: 1024, which
    # cifar10 gets by default: core.bundle.DATASET_MODEL_CONFIGS)
    mode: str = "prototype"  # "prototype": class means (the paper); "knn": attend over nearest samples
    knn_k: int = 32  # neighbours in kNN mode (the authors' code has the mode, unused by their scripts)
    min_prob: float = 1e-8  # probabilities are clamped here before the log, as in the authors' code


class SPMNet(nn.Module):
    """Encoder plus the two bias-free d x d maps of the fusion; no classification head."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        d = encoder.out_dim
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_s = nn.Linear(d, d, bias=False)
        self.scale = 1.0 / math.sqrt(d)

    def fuse(self, query_features: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Logits over classes; a class with no support gets -inf (probability exactly 0)."""
        return self.fuse_queries(self.w_q(query_features), prototypes, present)

    def fuse_queries(self, queries: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``fuse`` from the queries' ``W_q f(x)`` already computed (no deletion changes them)."""
        logits = queries @ self.w_s(prototypes).T * self.scale
        return logits.masked_fill(~present, float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def sample_support(batch_ids: np.ndarray, batch_labels: np.ndarray, class_pools: dict[int, np.ndarray],
                   support_size: int, rng: np.random.Generator) -> np.ndarray:
    """Support ids for one episode: split evenly over the batch's labels, never one of the batch's ids."""
    labels = np.unique(batch_labels)
    per_class = max(1, support_size // len(labels))
    chosen = []
    for c in labels:
        pool = class_pools[int(c)]
        n_in_batch = int((batch_labels == c).sum())
        take = min(len(pool), per_class + n_in_batch)
        candidates = rng.choice(pool, size=take, replace=False)
        candidates = candidates[~np.isin(candidates, batch_ids)]
        chosen.append(candidates[:per_class])
    return np.concatenate(chosen)


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Per-class mean features and a mask of the classes that have any sample."""
    # bf16 features (CUDA autocast) are summed in float32: a bf16 sum of hundreds of features keeps ~3 digits
    features = features.to(torch.promote_types(features.dtype, torch.float32))
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    present = counts > 0
    return sums / counts.clamp(min=1).unsqueeze(1), present


def fit_spm(net: SPMNet, dataset: Dataset, train_ids: np.ndarray, config: SPMConfig, train_config: TrainConfig,
            progress: Progress = no_progress, cancel: CancelToken | None = None,
            device: torch.device | None = None, episode_hook=None) -> dict:
    """Episodic training: queries are classified against prototypes of a support set that excludes them.

    ``episode_hook(batch_ids, support_ids)`` sees every episode (the tests check self-exclusion with it).
    """
    device = device or torch.device("cpu")
    net.to(device)
    labels_np = dataset.y_train
    labels = torch.tensor(labels_np)  # a copy: the dataset's arrays are read-only
    pools = {int(c): train_ids[labels_np[train_ids] == c] for c in np.unique(labels_np[train_ids])}

    def step_loss(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        support = sample_support(batch, labels_np[batch], pools, config.support_size, rng)
        if episode_hook is not None:
            episode_hook(batch, support)
        feats = net(to_device(dataset.x_train[np.concatenate([batch, support])], device))
        q, s = feats[:len(batch)], feats[len(batch):]
        protos, present = class_means(s, labels[support].to(device), dataset.num_classes)
        y = labels[batch].to(device)
        keep = present[y]  # a query whose class got no support (tiny datasets only) is left out
        probs = torch.softmax(net.fuse(q[keep], protos, present), 1)
        picked = probs.gather(1, y[keep].unsqueeze(1)).squeeze(1)
        return -torch.log(picked.clamp(min=config.min_prob)).mean()

    return train_loop(net, train_ids, train_config, step_loss, progress, cancel, label="SPM")


def class_sums(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class sums of feature rows, (C, d) float64: a one-hot product, much faster than np.add.at."""
    onehot = np.zeros((num_classes, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    return onehot @ np.asarray(features, dtype=np.float64)


@dataclass
class _Shared(SharedMemory):
    """Read-only state shared by an SPM and every copy made by forget; ``train_features`` holds f(x)."""

    config: SPMConfig
    features: dict = field(default_factory=dict)  # (fingerprint, split) -> features
    # (fingerprint, split) -> W_q f(x): the query side of the fusion, which no deletion changes
    queries: dict = field(default_factory=dict)
    train_images: np.ndarray | None = None  # for the re-encode deletion path
    # every session's thread and the background warm-up read one cached model: a split is encoded once
    features_lock: threading.Lock = field(default_factory=threading.Lock)


class _KnnIndex:
    """kNN mode's FAISS index of the present samples' features: shared by the mode views of one memory and
    made on first use. A forgotten memory's index is its parent's (if built by then) minus the deleted ids
    via ``remove_ids``, otherwise built from the present samples; either way it never holds them."""

    def __init__(self, parent: _KnnIndex | None = None, removed: np.ndarray | None = None):
        self.index, self.parent, self.removed = None, parent, removed
        self.lock = threading.Lock()  # a cached model is read by every browser session's thread

    def get(self, features: np.ndarray, active: np.ndarray):
        with self.lock:
            if self.index is None:
                if self.parent is not None and self.parent.index is not None:
                    self.index = index_without(self.parent.index, self.removed)
                else:
                    self.index = id_index(features, np.flatnonzero(active), "l2")
                self.parent = self.removed = None
            return self.index


class SPMClassifier(MemoryClassifier):
    """A trained SPM with its memory: per-class feature sums and counts over the active training ids."""

    kind = "spm"

    def __init__(self, shared: _Shared, active: np.ndarray, sums: np.ndarray, counts: np.ndarray,
                 knn: _KnnIndex | None = None):
        super().__init__(shared, active)
        self.sums = sums  # float64 (C, d), exact enough for incremental deletion
        self.counts = counts  # int64 (C,)
        self.config = shared.config
        self._knn = knn or _KnnIndex()

    def knn_index(self):
        """This memory's own FAISS index of the present samples' features (kNN mode), made on first use."""
        return self._knn.get(self._shared.train_features, self.active)

    # ---- memory ---------------------------------------------------------------------------------
    @classmethod
    def from_features(cls, shared: _Shared, active: np.ndarray) -> SPMClassifier:
        feats = shared.train_features[active].astype(np.float64)
        labels = shared.train_labels[active]
        sums = np.zeros((shared.num_classes, feats.shape[1]))
        sums += class_sums(feats, labels, shared.num_classes)
        counts = np.bincount(labels, minlength=shared.num_classes).astype(np.int64)
        return cls(shared, active, sums, counts)

    @property
    def prototypes(self) -> np.ndarray:
        """Class means mu_c (zero rows for classes with no samples)."""
        return self.sums / np.maximum(self.counts, 1)[:, None]

    def _without(self, ids: np.ndarray, active: np.ndarray, mode: str = "incremental") -> SPMClassifier:
        """``forget(ids, mode)``: no weight moves. Mode "incremental" subtracts the forgotten features from
        the class sums (O(|D_f|)); "reencode" re-encodes every retained image and rebuilds the sums, as
        the authors' code does."""
        shared = self._shared
        if mode == "reencode":
            if shared.train_images is None:
                raise ValueError("this copy holds no training images (a purged copy): re-encoding needs them; "
                                 "forget with mode 'incremental'")
            retained = np.flatnonzero(active)
            feats = batched(shared.net.encoder, shared.train_images[retained], shared.device).astype(np.float64)
            sums = np.zeros_like(self.sums)
            sums += class_sums(feats, shared.train_labels[retained], self.num_classes)
            counts = np.bincount(shared.train_labels[retained], minlength=self.num_classes).astype(np.int64)
        elif mode == "incremental":
            labels = shared.train_labels[ids]
            sums = self.sums - class_sums(shared.train_features[ids].astype(np.float64), labels, self.num_classes)
            counts = self.counts - np.bincount(labels, minlength=self.num_classes)
        else:
            raise ValueError(f"unknown deletion mode {mode!r}; known: incremental, reencode")
        return SPMClassifier(shared, active, sums, counts, _KnnIndex(self._knn, ids))

    def _memory_evidence(self, ids: np.ndarray) -> dict:
        """How far the class sums and counts are from those rebuilt from the present samples only (0 when
        the deletion equals rebuilding the prototypes from scratch), and how many of ``ids`` the kNN index
        returns."""
        feats, labels = self._shared.train_features[self.active], self._shared.train_labels[self.active]
        rebuilt = class_sums(feats.astype(np.float64), labels, self.num_classes)
        scale = max(float(np.abs(rebuilt).max()), 1.0)
        return {"sums_rel_diff_from_rebuilt": float(np.abs(self.sums - rebuilt).max() / scale),
                "counts_match_rebuilt": bool(np.array_equal(
                    self.counts, np.bincount(labels, minlength=self.num_classes))),
                "forgotten_in_knn_index": int(np.isin(ids, held_ids(self.knn_index())).sum())}

    def with_mode(self, mode: str, knn_k: int | None = None) -> SPMClassifier:
        """The same memory read in prototype or kNN mode."""
        config = replace(self.config, mode=mode, knn_k=knn_k or self.config.knn_k)
        shared = replace(self._shared, config=config)
        return SPMClassifier(shared, self.active, self.sums, self.counts, self._knn)

    # ---- prediction -----------------------------------------------------------------------------
    def features_of(self, dataset: Dataset, split: str) -> np.ndarray:
        """Encoder features of a whole split, cached for this network (deletion never changes them)."""
        key = (dataset.fingerprint(), split)
        with self._shared.features_lock:
            if key not in self._shared.features:
                shared = self._shared
                if split == "train" and shared.complete and len(dataset.y_train) == len(shared.train_features):
                    shared.features[key] = shared.train_features
                else:
                    shared.features[key] = self.embed(getattr(dataset, f"x_{split}"))
            return self._shared.features[key]

    @torch.no_grad()
    def split_queries(self, dataset: Dataset, split: str) -> torch.Tensor:
        """``W_q f(x)`` of a whole split, cached for this network: every memory made by ``forget`` shares it,
        so predicting a split after a deletion costs one (N, d) x (d, C) product instead of two."""
        key = (dataset.fingerprint(), split)
        features = self.features_of(dataset, split)
        with self._shared.features_lock:
            if key not in self._shared.queries:
                shared = self._shared
                shared.queries[key] = shared.net.w_q(torch.as_tensor(features, dtype=torch.float32,
                                                                     device=shared.device))
            return self._shared.queries[key]

    @torch.no_grad()
    def class_scores(self, features: np.ndarray, queries: torch.Tensor | None = None) -> np.ndarray:
        """Fusion logits of each feature row against each class prototype (-inf: class absent); ``queries``:
        the rows' ``W_q f(x)`` when already computed (``split_queries``), the same numbers as ``net.fuse``."""
        net, device = self._shared.net, self._shared.device
        protos = torch.as_tensor(self.prototypes, dtype=torch.float32, device=device)
        present = torch.as_tensor(self.counts > 0, device=device)
        if queries is None:
            queries = net.w_q(torch.as_tensor(features, dtype=torch.float32, device=device))
        return net.fuse_queries(queries, protos, present).cpu().numpy()

    @torch.no_grad()
    def neighbours(self, features: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest training ids in this memory's kNN index per row (-1 where it holds fewer) and
        their attention weights (kNN mode)."""
        k = k or self.config.knn_k
        shared = self._shared
        _, ids = self.knn_index().search(np.ascontiguousarray(features, dtype=np.float32), k)
        safe = np.where(ids < 0, 0, ids)
        net = shared.net
        q = net.w_q(torch.as_tensor(features, dtype=torch.float32, device=shared.device))
        s = net.w_s(torch.as_tensor(shared.train_features[safe], dtype=torch.float32, device=shared.device))
        scores = torch.einsum("nd,nkd->nk", q, s) * net.scale
        scores = scores.masked_fill(torch.as_tensor(ids < 0, device=shared.device), float("-inf"))
        return ids, torch.softmax(scores, 1).cpu().numpy()

    def proba_from_features(self, features: np.ndarray, queries: torch.Tensor | None = None) -> np.ndarray:
        if self.config.mode == "knn":
            ids, weights = self.neighbours(features)
            probs = np.zeros((len(features), self.num_classes), np.float32)
            labels = self._shared.train_labels[np.where(ids < 0, 0, ids)]
            np.add.at(probs, (np.repeat(np.arange(len(features)), ids.shape[1]), labels.ravel()), weights.ravel())
            return probs
        scores = torch.as_tensor(self.class_scores(features, queries))
        return torch.softmax(scores, 1).numpy()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.proba_from_features(self.embed(x))

    def split_proba(self, dataset: Dataset, split: str) -> np.ndarray:
        cache = self.__dict__.setdefault("_split_proba", {})
        key = (dataset.fingerprint(), split)
        if key not in cache:
            queries = None if self.config.mode == "knn" else self.split_queries(dataset, split)
            cache[key] = self.proba_from_features(self.features_of(dataset, split), queries)
        return cache[key]

    def split_embed(self, dataset: Dataset, split: str) -> np.ndarray:
        return self.features_of(dataset, split)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return batched(self._shared.net.encoder, x, self._shared.device)


def wrap_spm(net: SPMNet, dataset: Dataset, train_ids: np.ndarray, config: SPMConfig,
             device: torch.device | None = None, train_features: np.ndarray | None = None) -> SPMClassifier:
    """Encode every training image once; the memory holds ``train_ids`` (all of D, or D_r for an oracle)."""
    device = device or torch.device("cpu")
    net = net.to(device).eval()
    if train_features is None:
        train_features = batched(net.encoder, dataset.x_train, device)
    shared = _Shared(net=net, train_features=train_features, train_labels=dataset.y_train,
                     num_classes=dataset.num_classes, config=config, device=device, train_images=dataset.x_train)
    active = np.zeros(dataset.num_train, bool)
    active[train_ids] = True
    return SPMClassifier.from_features(shared, active)


@register_model("spm", config=SPMConfig, fit=fit_spm, wrap=wrap_spm, by_design=True,
                description="Semi-parametric model: prototypes of training samples, deletion edits memory only")
def build_spm(dataset: Dataset, config: SPMConfig) -> SPMNet:
    encoder = build_encoder(dataset.image_shape[0], config.encoder)
    return SPMNet(encoder).to(memory_format=torch.channels_last)
