"""Penultimate embeddings of the original, unlearned and oracle models, and ONE aligned 2-D layout for all three.

Rows of the map
    The whole test set (or its first ``max_test`` images) plus a seeded sample of the training set that
    always contains every forgotten sample, so the forget set can be found and followed on the map.
    Every row is named by a sample key (``"train:12"`` / ``"test:3"``, see ``core.selection``).

Why this alignment (and not the alternatives)
    The three models do not share a feature space: an oracle is retrained from scratch, so its features
    are an unrelated basis of a different network. We therefore project each model's own features (each
    panel keeps *its own* neighbourhood structure, which is what a user compares) and align the 2-D
    layouts to the original's with an orthogonal Procrustes fit (rotation, reflection, uniform scale and
    translation: shape-preserving) whose correspondences are the shared sample ids. The Procrustes fit
    uses only samples that no model forgot (test images and retained training samples), so the motion of
    the forget set is shown rather than averaged away. For UMAP the unlearned and oracle fits also start
    from the original's layout (``init``), which makes the optimiser settle in the same arrangement and
    leaves Procrustes only a small residual to remove.

    - *One UMAP fit plus ``transform``* of the other models' features would push an unrelated feature
      space through the original's graph: meaningless for the oracle.
    - *AlignedUMAP* (ids as the relation) couples all fits through a penalty; it is slower (one joint
      optimisation, more numba code to compile on first use) and its penalty pulls points that *did*
      move back towards their old places: the very motion the explorer must show.
    - When two models have the same features (SPM and MUNKEY deletion never touch the encoder), they get
      the *same* coordinates, not a second fit that would invent motion from UMAP's randomness. What
      moves then is shown by colour: the predictions, the prediction changes, the prototypes.

Speed
    PCA (a thin SVD) gives a layout in milliseconds; UMAP's first fit in a process pays about a minute of
    numba compilation, so the UI shows the PCA layout and runs UMAP in the background
    (``warm_umap`` compiles on a tiny problem). Layouts are cached on disk under
    ``store.home()/layouts/<key>.safetensors``, keyed by the method, the model keys, the request key and the rows.
    Features and probabilities come from each model's memoised whole-split arrays.

How the map is coloured and what a selection shows is ``core.views.maps``; the figure is
``core.charts.map_figure``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from core import store
from core.backend import Task
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models.base import Classifier, Progress, no_progress
from core.selection import make_keys

MODELS = ("original", "unlearned", "oracle")  # panel order; "original" is the reference frame
METHODS = ("pca", "umap")
LAYOUT_VERSION = 1  # bump when the layout algorithm changes: old cached layouts are then ignored


@dataclass(frozen=True)
class UMAPParams:
    """UMAP settings for the map (umap-learn defaults unless a reason is given)."""

    n_neighbors: int = 15  # local neighbourhood size; umap-learn's default
    min_dist: float = 0.1  # how tightly points pack; umap-learn's default
    seed: int = 0  # fixed seed: the same inputs give the same map (also makes umap single-threaded)
    n_epochs: int | None = None  # None: umap-learn picks 200 for >10k points, else 500


# ---- rows -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapRows:
    """Which samples the map shows: test ids, then training ids (the forget set always among them)."""

    test_ids: np.ndarray
    train_ids: np.ndarray
    labels: np.ndarray  # true label per row
    forgotten: np.ndarray  # bool per row: a training sample in the forget request

    @property
    def n(self) -> int:
        return len(self.test_ids) + len(self.train_ids)

    @property
    def is_train(self) -> np.ndarray:
        return np.r_[np.zeros(len(self.test_ids), bool), np.ones(len(self.train_ids), bool)]

    @property
    def ids(self) -> np.ndarray:
        return np.r_[self.test_ids, self.train_ids].astype(np.int64)

    @property
    def keys(self) -> list[str]:
        return make_keys("test", self.test_ids) + make_keys("train", self.train_ids)

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.test_ids, dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.ascontiguousarray(self.train_ids, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def map_rows(ds: Dataset, request: ForgetRequest | None, train_sample: int = 2000, max_test: int | None = None,
             seed: int = 0) -> MapRows:
    """All test images (or the first ``max_test``) and ``train_sample`` seeded training ids plus the forget set."""
    test_ids = np.arange(len(ds.y_test) if max_test is None else min(max_test, len(ds.y_test)), dtype=np.int64)
    forget = np.asarray(request.ids if request is not None else (), dtype=np.int64)
    rng = np.random.default_rng(seed)
    take = min(max(train_sample, 0), ds.num_train)
    sampled = rng.choice(ds.num_train, size=take, replace=False) if take else np.zeros(0, np.int64)
    train_ids = np.union1d(sampled, forget).astype(np.int64)
    forgotten_train = np.isin(train_ids, forget)
    labels = np.r_[ds.y_test[test_ids], ds.y_train[train_ids]].astype(np.int64)
    forgotten = np.r_[np.zeros(len(test_ids), bool), forgotten_train]
    return MapRows(test_ids, train_ids, labels, forgotten)


# ---- embeddings ---------------------------------------------------------------------------------------
@dataclass
class Embeddings:
    """Features and probabilities of each model on the map's rows (row order of ``rows``)."""

    rows: MapRows
    features: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]
    same_features: dict[str, str] = field(default_factory=dict)  # model -> earlier model with identical features

    @property
    def models(self) -> list[str]:
        return [m for m in MODELS if m in self.features]

    def predictions(self, model: str) -> np.ndarray:
        return self.probs[model].argmax(1)


def _train_features(model: Classifier, ds: Dataset, ids: np.ndarray) -> np.ndarray:
    features_of = getattr(model, "features_of", None)
    if callable(features_of):  # by-design models keep the training set's features with the model
        return features_of(ds, "train")[ids]
    return model.split_embed(ds, "train")[ids]


def collect(models: Mapping[str, Classifier | None], ds: Dataset, rows: MapRows) -> Embeddings:
    """Embed and predict the map's rows with each given model (missing or None models are left out).

    Rows are read from each model's whole-split features and probabilities, which the model memoises, so
    collecting again (every rerun of the page, another choice of rows) costs an indexing only.
    """
    features, probs, same = {}, {}, {}
    for name in MODELS:
        model = models.get(name)
        if model is None:
            continue
        test_f = model.split_embed(ds, "test")[rows.test_ids]
        train_f = _train_features(model, ds, rows.train_ids)
        test_p = model.split_proba(ds, "test")[rows.test_ids]
        train_p = model.split_proba(ds, "train")[rows.train_ids]
        features[name] = np.ascontiguousarray(np.r_[test_f, train_f], dtype=np.float32)
        probs[name] = np.r_[test_p, train_p].astype(np.float32)
        for earlier in features:
            if earlier != name and features[earlier].shape == features[name].shape \
                    and np.array_equal(features[earlier], features[name]):
                same[name] = earlier
                break
    return Embeddings(rows, features, probs, same)


# ---- projection and alignment -------------------------------------------------------------------------
def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components (thin SVD of the centred data), float32 (n, 2)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    if len(x) < 2:
        return np.zeros((len(x), 2), np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    if out.shape[1] < 2:
        out = np.c_[out, np.zeros((len(out), 2 - out.shape[1]))]
    return out.astype(np.float32)


_UMAP_LOCK = threading.Lock()
_UMAP_WARM = threading.Event()


def umap_2d(x: np.ndarray, params: UMAPParams = UMAPParams(), init: np.ndarray | None = None) -> np.ndarray:
    """A 2-D UMAP embedding; ``init`` (n, 2) starts the optimiser from a given layout."""
    import umap

    n = len(x)
    if n < 4:
        return pca_2d(x)
    kwargs = {"n_neighbors": min(params.n_neighbors, n - 1), "min_dist": params.min_dist,
              "random_state": params.seed, "n_components": 2, "n_epochs": params.n_epochs,
              "n_jobs": 1}  # a seed makes umap single-threaded anyway; saying so silences its warning
    if init is not None:
        scaled = np.asarray(init, dtype=np.float64)
        scaled = (scaled - scaled.mean(0)) * (10.0 / max(np.abs(scaled - scaled.mean(0)).max(), 1e-12))
        kwargs["init"] = scaled.astype(np.float32)
    with _UMAP_LOCK:  # numba compilation and umap's global state are not worth racing on two cores
        with _keep_thread_limits():
            out = umap.UMAP(**kwargs).fit_transform(np.asarray(x, dtype=np.float32))
        _UMAP_WARM.set()
    return np.asarray(out, dtype=np.float32)


@contextlib.contextmanager
def _keep_thread_limits():
    """Numba's parallel code (pynndescent) resets the process's OpenMP thread count, torch's included: put
    back what the process had (one thread in the UI process, where more makes interactive work crawl)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    with threadpool_limits(limits=threads):
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def warm_umap() -> float:
    """Compile UMAP's numba code on a tiny problem (about a minute the first time in a process)."""
    if _UMAP_WARM.is_set():
        return 0.0
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    umap_2d(rng.normal(size=(300, 8)).astype(np.float32), UMAPParams(n_epochs=20))
    return time.perf_counter() - start


def umap_is_warm() -> bool:
    return _UMAP_WARM.is_set()


def procrustes(moving: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``moving`` rotated / reflected, uniformly scaled and translated onto ``target`` (least squares).

    ``weights`` (bool or non-negative) says which rows define the fit; every row is transformed.
    """
    moving = np.asarray(moving, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(len(moving)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones(len(moving))
    w = w / w.sum()
    mu_m = (w[:, None] * moving).sum(0)
    mu_t = (w[:, None] * target).sum(0)
    a = moving - mu_m
    b = target - mu_t
    u, s, vt = np.linalg.svd((a * w[:, None]).T @ b)
    rotation = u @ vt
    spread = (w * (a ** 2).sum(1)).sum()
    scale = s.sum() / spread if spread > 0 else 1.0
    return (scale * a @ rotation + mu_t).astype(np.float32)


def _project(method: str, x: np.ndarray, params: UMAPParams, init: np.ndarray | None) -> np.ndarray:
    if method == "pca":
        return pca_2d(x)
    if method == "umap":
        return umap_2d(x, params, init)
    raise ValueError(f"unknown layout method {method!r}; known: {', '.join(METHODS)}")


@dataclass
class Layout:
    """Aligned 2-D coordinates per model (same row order as the map), and how they were made."""

    method: str
    coords: dict[str, np.ndarray]
    seconds: float
    cached: bool = False
    key: str = ""

    def shift(self, model: str, reference: str = "original") -> np.ndarray:
        """Per-row distance between a model's aligned position and the reference's."""
        if model not in self.coords or reference not in self.coords:
            return np.zeros(len(next(iter(self.coords.values()))), np.float32)
        return np.linalg.norm(self.coords[model] - self.coords[reference], axis=1).astype(np.float32)


def aligned_layout(emb: Embeddings, method: str = "pca", params: UMAPParams = UMAPParams(),
                   progress: Progress = no_progress) -> Layout:
    """One layout for all models of ``emb``: each projected from its own features, aligned to the original."""
    start = time.perf_counter()
    anchors = ~emb.rows.forgotten  # samples no model forgot define the alignment
    coords: dict[str, np.ndarray] = {}
    models = emb.models
    reference = models[0]
    for i, name in enumerate(models):
        if name in emb.same_features and emb.same_features[name] in coords:
            coords[name] = coords[emb.same_features[name]].copy()
            continue
        progress(i / len(models), f"{method.upper()} layout of the {name} model")
        init = coords.get(reference) if method == "umap" else None
        projected = _project(method, emb.features[name], params, init)
        coords[name] = projected if name == reference else procrustes(projected, coords[reference], anchors)
    progress(1.0, f"{method.upper()} layout ready")
    return Layout(method, coords, time.perf_counter() - start)


# ---- cache on disk ------------------------------------------------------------------------------------
def layout_key(method: str, model_keys: Mapping[str, str], request_key: str | None, rows: MapRows,
               params: UMAPParams = UMAPParams()) -> str:
    """Cache key: method and its settings, the model keys (runs), the request and the map's rows."""
    payload = json.dumps({"v": LAYOUT_VERSION, "method": method, "models": dict(sorted(model_keys.items())),
                          "request": request_key, "rows": rows.digest(),
                          "params": [params.n_neighbors, params.min_dist, params.seed, params.n_epochs]
                          if method == "umap" else None}, sort_keys=True)
    return f"{method}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


def layouts_dir():
    path = store.home() / "layouts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def layout_path(key: str):
    """Where the layout ``key`` (``layout_key``) is cached."""
    return layouts_dir() / f"{key}.safetensors"


def save_layout(key: str, layout: Layout) -> None:
    """Write ``layouts/<key>.safetensors`` atomically (``store.write_arrays``)."""
    store.write_arrays(layout_path(key), {f"coords_{m}": c for m, c in layout.coords.items()},
                       {"method": layout.method, "seconds": repr(float(layout.seconds)),
                        "models": json.dumps(list(layout.coords))})


def load_layout(key: str, n_rows: int | None = None) -> Layout | None:
    """A cached layout, or None when absent, unreadable or of another size. Read on every run of the Embeddings
    page: safetensors, not .npz, so that no ``ast`` parse (numpy's header reader) runs beside another session's."""
    path = layout_path(key)
    read = store.read_arrays(path)
    if read is None:
        return None
    arrays, meta = read
    try:
        models = json.loads(meta["models"])
        coords = {m: arrays[f"coords_{m}"].astype(np.float32) for m in models}
        layout = Layout(meta["method"], coords, float(meta["seconds"]), cached=True, key=key)
    except (KeyError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if n_rows is not None and any(len(c) != n_rows for c in coords.values()):
        return None
    return layout


def cached_layout(emb: Embeddings, method: str, model_keys: Mapping[str, str], request_key: str | None,
                  params: UMAPParams = UMAPParams(), progress: Progress = no_progress) -> Layout:
    """The layout from the cache when stored before, else computed and stored."""
    keys = {m: k for m, k in model_keys.items() if m in emb.features}
    key = layout_key(method, keys, request_key, emb.rows, params)
    cached = load_layout(key, emb.rows.n)
    if cached is not None and set(cached.coords) == set(emb.models):
        return cached
    layout = aligned_layout(emb, method, params, progress)
    layout.key = key
    save_layout(key, layout)
    return layout


def layout_remote(emb: Embeddings, model_keys: Mapping[str, str], request_key: str | None,
                  params: UMAPParams = UMAPParams()) -> Task:
    """A UMAP layout as a Ray task: the worker computes it, the driver stores it with the run."""
    keys = {m: k for m, k in model_keys.items() if m in emb.features}
    key = layout_key("umap", keys, request_key, emb.rows, params)

    def finalize(layout: Layout) -> Layout:
        layout.key = key
        save_layout(key, layout)
        return layout

    return Task(aligned_layout, (emb, "umap", params), finalize=finalize)
