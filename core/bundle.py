"""Trained models on demand: load from the store (or the shipped assets), else train and save.

A model is identified by its kind, configs, the dataset's content hash and the forget request it was
trained without (none for the original, the request for an oracle). The same inputs load the same
model; nothing is trained twice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from core import store
from core.configs import config_hash, config_to_dict
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models import get_model_kind
from core.models.base import CancelToken, Classifier, Progress, no_progress, pick_device
from core.models.training import TrainConfig

# Per-dataset training recipes: what "train" means when the user does not say otherwise.
RECIPES: dict[str, TrainConfig] = {
    "fashion-mnist": TrainConfig(epochs=8),  # ~90%+ on two CPU cores in a few minutes
    "digits": TrainConfig(epochs=10, batch_size=64, lr=0.1),  # 1.4k tiny images: ~97% in seconds (tests use it)
    "mnist-5k": TrainConfig(epochs=15, batch_size=64),
}
DEFAULT_RECIPE = TrainConfig(epochs=10)


def recipe(dataset_name: str, kind: str | None = None) -> TrainConfig:
    """The dataset's recipe, or ``kind``'s own recipe for it when the kind carries one (ViT, MUNKEY)."""
    spec = get_model_kind(kind) if kind is not None else None
    if spec is not None and spec.default_train is not None:
        return spec.default_train(dataset_name)
    return RECIPES.get(dataset_name, DEFAULT_RECIPE)


@dataclass
class TrainedModel:
    """A ready classifier with its store key and metadata (configs, data hash, timings, accuracy)."""

    key: str
    classifier: Classifier
    meta: dict


# TrainConfig fields added after models were first stored: hashed only when they differ from their default,
# so the key of every recipe that leaves them alone (the shipped assets/models bundle) stays what it was.
_HASHED_WHEN_SET = ("optimizer", "warmup_epochs")
_TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def model_key(kind: str, config, train_config: TrainConfig, dataset: Dataset,
              excluded: ForgetRequest | None) -> str:
    tc = config_to_dict(replace(train_config, device="any"))  # the device does not change what is learned
    for name in _HASHED_WHEN_SET:
        if tc[name] == _TRAIN_DEFAULTS[name]:
            del tc[name]
    return f"{kind}-{config_hash(kind, config, tc, dataset.fingerprint(), excluded.key() if excluded else None)}"


_MEMO: dict[str, TrainedModel] = {}
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def is_available(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
                 excluded: ForgetRequest | None = None) -> bool:
    """True when the model loads without training (in memory, in the store or in the assets)."""
    config = config or get_model_kind(kind).config_cls()
    key = model_key(kind, config, train_config or recipe(dataset.name, kind), dataset, excluded)
    return key in _MEMO or store.find_model(key) is not None


def train_or_load(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
                  excluded: ForgetRequest | None = None, progress: Progress = no_progress,
                  cancel: CancelToken | None = None, allow_train: bool = True) -> TrainedModel:
    """The model of ``kind`` trained on the training set minus ``excluded``; loaded when stored before."""
    spec = get_model_kind(kind)
    config = config or spec.config_cls()
    train_config = train_config or recipe(dataset.name, kind)
    key = model_key(kind, config, train_config, dataset, excluded)
    with _lock_for(key):
        if key in _MEMO:
            return _MEMO[key]
        device = pick_device(train_config.device)
        train_ids = dataset.train_ids if excluded is None else np.flatnonzero(~excluded.mask(dataset.num_train))
        stored = store.find_model(key)
        with torch.random.fork_rng(devices=[]):  # the initial weights follow the recipe's seed, not whatever
            torch.manual_seed(train_config.seed)  # the process drew before (fork_rng leaves that state as it was)
            net = spec.build(dataset, config)
        if stored is not None:
            progress(0.0, f"loading {kind} from {stored.path}")
            store.load_weights(net, stored.path)
            meta = stored.meta
        else:
            if not allow_train:
                raise store.StoreError(f"no stored {kind} model for this dataset and config (key {key})")
            log = spec.fit(net, dataset, train_ids, config, train_config, progress=progress, cancel=cancel,
                           device=device)
            meta = {"kind": kind, "config": config_to_dict(config), "train_config": config_to_dict(train_config),
                    "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
                    "excluded": excluded.to_json() if excluded else None, "train_log": log,
                    "num_train_ids": int(len(train_ids))}
        net.eval()
        progress(0.99, f"encoding the training set for {kind}")
        start = time.perf_counter()
        classifier = _wrap(spec, net, dataset, train_ids, config, device, stored)
        wrap_s = time.perf_counter() - start
        if stored is None:
            meta["wrap_s"] = wrap_s
            meta["test_acc"] = float((classifier.split_proba(dataset, "test").argmax(1) == dataset.y_test).mean() * 100)
            stored = store.save_model(key, net, meta)
            meta = stored.meta
        if spec.by_design and store.cached_array(stored, "train_features") is None:
            _cache_features(stored, classifier)
        progress(1.0, f"{kind} ready")
        trained = TrainedModel(key, classifier, meta)
        _MEMO[key] = trained
        return trained


def _wrap(spec, net, dataset, train_ids, config, device: torch.device, stored):
    """Wrap the network; by-design models reuse the cached training-set features when present."""
    if spec.by_design and stored is not None:
        cached = store.cached_array(stored, "train_features")
        if cached is not None and len(cached) == dataset.num_train:
            return spec.wrap(net, dataset, train_ids, config, device, train_features=cached)
    return spec.wrap(net, dataset, train_ids, config, device)


def _cache_features(stored, classifier: Classifier) -> None:
    features = getattr(classifier, "train_features", None)
    if isinstance(features, np.ndarray):
        store.cache_array(stored, "train_features", features)


def forget_memo() -> None:
    """Drop the in-process memo (tests use it to prove that a second start loads instead of training)."""
    _MEMO.clear()
