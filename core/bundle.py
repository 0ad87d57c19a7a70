"""Trained models on demand: load from the store (or the shipped assets), else train and save.

A model is identified by its kind, configs, the dataset's content hash and the forget request it was
trained without (none for the original, the request for an oracle). The same inputs load the same
model; nothing is trained twice.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from core import store
from core.configs import config_hash, config_to_dict
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.models import get_model_kind
from core.models.base import CancelToken, Classifier, Progress, no_progress, pick_device
from core.models.encoders import EncoderConfig
from core.models.training import TrainConfig

# Per-dataset training recipes: what "train" means when the user does not say otherwise.
RECIPES: dict[str, TrainConfig] = {
    "fashion-mnist": TrainConfig(epochs=8),  # ~90%+ on two CPU cores in a few minutes
    "digits": TrainConfig(epochs=10, batch_size=64, lr=0.1),  # 1.4k tiny images: ~97% in seconds (tests use it)
    "mnist-5k": TrainConfig(epochs=15, batch_size=64),
    # the SPM authors' CIFAR-10 run (cifar_resnet18.yaml: batch 256, SGD 0.1, momentum 0.9, wd 5e-4, 100 epochs,
    # MultiStepLR at epochs 36 and 91): "step" divides the lr by 10 after exactly those epochs of 100. A GPU recipe.
    "cifar10": TrainConfig(epochs=100, batch_size=256, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step"),
}
DEFAULT_RECIPE = TrainConfig(epochs=10)
# The user's own data has no recipe of its own: the default one, sized to the data (``sized_recipe``). Unsized, 10
# epochs of batch 128 gave 360 Fashion-MNIST images of 3 classes 30 optimiser steps, and SPM 38% test accuracy
# (parametric 56%); with 300 steps (batch 36, 30 epochs) 97-99%.
MIN_STEPS = 300  # optimiser steps the user's data gets at least (within MAX_EPOCHS)
MIN_BATCH = 32
MAX_EPOCHS = 100


def sized_recipe(base: TrainConfig, num_train: int) -> TrainConfig:
    """``base`` for ``num_train`` training images: a batch of a tenth of them (``MIN_BATCH`` to ``base``'s), and
    enough epochs for ``MIN_STEPS`` optimiser steps (``base``'s at least, ``MAX_EPOCHS`` at most). Large data
    keeps ``base`` as it is."""
    batch = min(base.batch_size, max(MIN_BATCH, num_train // 10))
    steps_per_epoch = -(-max(num_train, 1) // batch)
    epochs = min(max(base.epochs, -(-MIN_STEPS // steps_per_epoch)), max(base.epochs, MAX_EPOCHS))
    return replace(base, batch_size=batch, epochs=epochs)


def recipe(dataset: Dataset | str, kind: str | None = None) -> TrainConfig:
    """The dataset's recipe, or ``kind``'s own recipe for it when the kind carries one (ViT, MUNKEY, gen-SPM);
    for the user's data (given as a ``Dataset``: an upload, or ``--data`` on the command line), sized to it
    (``sized_recipe``)."""
    from core.data.user_files import is_builtin_dataset

    name = dataset if isinstance(dataset, str) else dataset.name
    spec = get_model_kind(kind) if kind is not None else None
    base = spec.default_train(name) if spec is not None and spec.default_train is not None else \
        RECIPES.get(name, DEFAULT_RECIPE)
    if isinstance(dataset, str) or is_builtin_dataset(name):
        return base
    return sized_recipe(base, dataset.num_train)


# Per-dataset model configs where a kind's defaults do not suit the data. CIFAR-10 gets the SPM paper's encoder,
# the CIFAR ResNet-18 with its pooled 512-d features, for SPM and for the parametric model alike (the post-hoc
# methods' network stays comparable), and SPM the paper's 1024 support images per episode.
_CIFAR_RESNET18 = EncoderConfig(arch="resnet18", feature_dim=512)
DATASET_MODEL_CONFIGS: dict[str, dict[str, dict]] = {
    "cifar10": {"parametric": {"encoder": _CIFAR_RESNET18}, "spm": {"encoder": _CIFAR_RESNET18, "support_size": 1024}},
}


def default_config(kind: str, dataset_name: str):
    """``kind``'s config when the caller gives none: its config class's defaults, with the dataset's entries in
    DATASET_MODEL_CONFIGS applied (other datasets get the plain defaults, so their stored model keys hold)."""
    return replace(get_model_kind(kind).config_cls(), **DATASET_MODEL_CONFIGS.get(dataset_name, {}).get(kind, {}))


@dataclass
class TrainedModel:
    """A ready classifier with its store key and metadata (configs, data hash, timings, accuracy)."""

    key: str
    classifier: Classifier
    meta: dict


# TrainConfig fields added after models were first stored: hashed only when they differ from their default,
# so the key of every recipe that leaves them alone (the shipped assets/models bundle) stays what it was.
_HASHED_WHEN_SET = ("optimizer", "warmup_epochs", "amp")
_TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def model_key(kind: str, config, train_config: TrainConfig, dataset: Dataset,
              excluded: ForgetRequest | None) -> str:
    parts = (kind, config, train_config, dataset.fingerprint(), excluded.key() if excluded else None)
    try:  # a page asks for the same few keys at every redraw: hashing the configs each time cost it ~15 ms a click
        return _model_key(*parts)
    except TypeError:  # a config holding an unhashable value: computed each time
        return _model_key.__wrapped__(*parts)


@lru_cache(maxsize=4096)
def _model_key(kind: str, config, train_config: TrainConfig, fingerprint: str, excluded_key: str | None) -> str:
    tc = config_to_dict(replace(train_config, device="any"))  # the device does not change what is learned
    for name in _HASHED_WHEN_SET:
        if tc[name] == _TRAIN_DEFAULTS[name]:
            del tc[name]
    return f"{kind}-{config_hash(kind, config, tc, fingerprint, excluded_key)}"


_MEMO: OrderedDict[str, TrainedModel] = OrderedDict()  # originals stay; oracles beyond MEMO_ORACLES leave
MEMO_ORACLES = int(os.environ.get("UE_MEMO_ORACLES", "12"))
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def remember(trained: TrainedModel) -> None:
    """Memoise a loaded model: originals stay; oracles beyond the ``MEMO_ORACLES`` most recently used leave."""
    _MEMO[trained.key] = trained
    oracles = [k for k, m in _MEMO.items() if m.meta.get("excluded")]
    for old in oracles[:max(0, len(oracles) - MEMO_ORACLES)]:
        del _MEMO[old]


def _lock_for(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@dataclass
class TrainedWeights:
    """What training produces, before anything is stored: a worker returns this and the driver saves it."""

    key: str
    weights: bytes  # safetensors
    meta: dict
    arrays: dict[str, np.ndarray]  # caches kept beside the weights (by-design models: training-set features)
    split_probs: dict[str, np.ndarray] = field(default_factory=dict)  # predictions made where it trained


def resolve(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
            excluded: ForgetRequest | None = None) -> tuple[Any, TrainConfig, str]:
    """The model config and recipe that apply (defaults filled in) and the store key they give."""
    config = config or default_config(kind, dataset.name)
    train_config = train_config or recipe(dataset, kind)
    return config, train_config, model_key(kind, config, train_config, dataset, excluded)


def is_available(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
                 excluded: ForgetRequest | None = None) -> bool:
    """True when the model loads without training (in memory, in the store or in the assets)."""
    key = resolve(kind, dataset, config, train_config, excluded)[2]
    try:
        return key in _MEMO or store.find_model(key) is not None
    except store.StoreError:  # stored but damaged: loading it says what is wrong and how to retrain it
        return True


def expected_train_seconds(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
                           excluded: ForgetRequest | None = None) -> float | None:
    """How long training a model without ``excluded`` should take, from the stored original of this config and
    recipe (``train_config``: the original's, before an oracle's seed is moved): its measured training time,
    scaled by the share of the training set kept. None when no original is stored. The machine that trained
    the original may not be the one that trains this: an estimate, and said to be one."""
    try:
        stored = store.find_model(resolve(kind, dataset, config, train_config)[2])
    except store.StoreError:
        return None
    seconds = ((stored.meta.get("train_log") or {}).get("train_s")) if stored is not None else None
    if not seconds:
        return None
    kept = 1.0 if excluded is None else 1.0 - len(excluded.ids) / max(dataset.num_train, 1)
    return float(seconds) * kept


def _train_ids(dataset: Dataset, excluded: ForgetRequest | None) -> np.ndarray:
    return dataset.train_ids if excluded is None else np.flatnonzero(~excluded.mask(dataset.num_train))


def _build(spec, dataset: Dataset, config, seed: int):
    with torch.random.fork_rng(devices=[]):  # the initial weights follow the recipe's seed, not whatever
        torch.manual_seed(seed)  # the process drew before (fork_rng leaves that state as it was)
        return spec.build(dataset, config)


def state_bytes(net: torch.nn.Module) -> bytes:
    """A network's weights as safetensors bytes (what workers send back)."""
    return save_bytes({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()})


def train_weights(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
                  excluded: ForgetRequest | None = None, progress: Progress = no_progress,
                  cancel: CancelToken | None = None) -> TrainedWeights:
    """Train ``kind`` on the training set minus ``excluded``; stores nothing (runs on a Ray worker or here)."""
    spec = get_model_kind(kind)
    config, train_config, key = resolve(kind, dataset, config, train_config, excluded)
    device = pick_device(train_config.device)
    train_ids = _train_ids(dataset, excluded)
    net = _build(spec, dataset, config, train_config.seed)
    log = spec.fit(net, dataset, train_ids, config, train_config, progress=progress, cancel=cancel, device=device)
    net.eval()
    progress(0.99, f"encoding the training set for {kind}")
    start = time.perf_counter()
    classifier = spec.wrap(net, dataset, train_ids, config, device)
    meta = {"kind": kind, "config": config_to_dict(config), "train_config": config_to_dict(train_config),
            "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
            "excluded": excluded.to_json() if excluded else None, "train_log": log,
            "num_train_ids": int(len(train_ids)), "wrap_s": time.perf_counter() - start,
            "device": str(device)}
    if not spec.generative:  # a generative model's predictions are not a classifier's
        meta["test_acc"] = float((classifier.split_proba(dataset, "test").argmax(1) == dataset.y_test).mean() * 100)
    features = getattr(classifier, "train_features", None) if spec.by_design else None
    arrays = {"train_features": features} if isinstance(features, np.ndarray) else {}
    # a weight-based model's predictions, so the process that loads it does not predict both splits again
    probs = {} if spec.by_design else {s: classifier.split_proba(dataset, s) for s in ("test", "train")}
    return TrainedWeights(key, state_bytes(net), meta, arrays, probs)


def save(trained: TrainedWeights) -> store.StoredModel:
    """Write what a worker trained into this process's store (atomically; the driver is the only writer)."""
    return store.save_model_bytes(trained.key, trained.weights, trained.meta, trained.arrays)


def train_or_load(kind: str, dataset: Dataset, config=None, train_config: TrainConfig | None = None,
                  excluded: ForgetRequest | None = None, progress: Progress = no_progress,
                  cancel: CancelToken | None = None, allow_train: bool = True) -> TrainedModel:
    """The model of ``kind`` trained on the training set minus ``excluded``; loaded when stored before."""
    spec = get_model_kind(kind)
    config, train_config, key = resolve(kind, dataset, config, train_config, excluded)
    with _lock_for(key):
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
        try:
            stored = store.find_model(key)
        except store.StoreError as err:
            raise damaged_model_error(kind, dataset.name, train_config, excluded, key, err) from err
        if stored is None:
            if not allow_train:
                raise store.StoreError(f"no stored {kind} model for this dataset and config (key {key})")
            stored = save(train_weights(kind, dataset, config, train_config, excluded, progress, cancel))
        progress(0.99, f"loading {kind} from {store.shown_location(stored.path)}")
        device = pick_device(train_config.device)
        net = _build(spec, dataset, config, train_config.seed)
        try:
            store.load_weights(net, stored.path)
            store.verify_weights(stored)
        except store.StoreError as err:
            raise damaged_model_error(kind, dataset.name, train_config, excluded, key, err, stored.path) from err
        net.eval()
        classifier = _wrap(spec, net, dataset, _train_ids(dataset, excluded), config, device, stored)
        if spec.by_design and store.cached_array(stored, "train_features") is None:
            _cache_features(stored, classifier)
        progress(1.0, f"{kind} ready")
        trained = TrainedModel(key, classifier, stored.meta)
        remember(trained)
        return trained


def retrain_command(kind: str, dataset_name: str, train_config: TrainConfig,
                    excluded: ForgetRequest | None = None) -> str:
    """The CLI command that trains this model again. An oracle (``excluded`` set) is retrained by the comparison
    that needs it: its seed is the original's moved by k, so the command names the original's seed and asks for
    k oracles (those already stored load; only this one trains)."""
    from core.data.user_files import is_builtin_dataset

    base = recipe(dataset_name, kind)
    data = "" if is_builtin_dataset(dataset_name) else " --data <your data>"  # the user's: read again from its file
    flags = f"--dataset {dataset_name}{data} --model {kind}"
    if train_config.epochs != base.epochs:
        flags += f" --epochs {train_config.epochs}"
    if excluded is None:
        seed, oracles = train_config.seed, ""
    else:
        offset = train_config.seed - base.seed
        seed, k = (base.seed, offset) if offset >= 1 else (train_config.seed - 1, 1)
        oracles = f" --oracles {k}"
    if seed != base.seed:
        flags += f" --train-seed {seed}"
    if excluded is None:
        return f"python -m core train {flags}"
    from core.unlearn import list_methods

    methods = list_methods(kind)
    what = f"--classes {','.join(map(str, excluded.classes))}" if excluded.classes else "--ids-file <the same ids>"
    return f"python -m core forget {flags} {what}" + (f" --method {methods[0]}" if methods else "") + oracles


def damaged_model_error(kind: str, dataset_name: str, train_config: TrainConfig, excluded: ForgetRequest | None,
                        key: str, err: Exception, path=None) -> store.StoreError:
    """A StoreError that names the damaged stored model, what is wrong, and the command that retrains it."""
    folder = path or next((p for p in store.model_dirs(key) if p.exists()), store.model_dirs(key)[0])
    what = f"{kind} model on {dataset_name}" if excluded is None else \
        f"{kind} oracle on {dataset_name} without {excluded.description}"
    in_assets = store.ASSETS_MODELS in folder.parents
    fix = (f"restore the shipped copy with `git checkout -- {folder.relative_to(store.ASSETS_MODELS.parent.parent)}`"
           f", or delete it and retrain: `{retrain_command(kind, dataset_name, train_config, excluded)}`") \
        if in_assets else \
        f"delete {folder} and retrain it: `{retrain_command(kind, dataset_name, train_config, excluded)}`"
    return store.StoreError(source=f"the stored {what} (key {key})", found=f"damaged: {err}",
                            expected="a complete model folder (meta.json and weights.safetensors, as saved)", fix=fix)


def from_weights(kind: str, dataset: Dataset, weights: bytes | dict[str, torch.Tensor], config=None,
                 excluded: ForgetRequest | None = None, device: str = "auto",
                 where: str = "the weights sent back by the worker") -> Classifier:
    """A classifier of ``kind`` whose network holds ``weights`` (safetensors bytes, or the tensors a caller has
    already parsed, e.g. ``validate.load_checkpoint``'s), such as an unlearned copy sent back by a worker, an
    original sent to one, or a user's checkpoint (``where`` names it in a StoreError). Strict: every tensor must
    fit."""
    spec = get_model_kind(kind)
    config = config or default_config(kind, dataset.name)
    net = _build(spec, dataset, config, 0)
    if isinstance(weights, dict):
        state = weights
    else:
        try:
            state = load_bytes(weights)
        except Exception as err:  # the safetensors parser raises its own error types for damaged bytes
            raise store.StoreError(f"{where} are not a readable safetensors file: {err}") from err
    store.load_state(net, state, where)
    net.eval()
    return spec.wrap(net, dataset, _train_ids(dataset, excluded), config, pick_device(device))


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


def train_seed(model: TrainedModel) -> int | None:
    """The seed ``model`` was trained with (initial weights and data order), from its metadata."""
    seed = (model.meta.get("train_config") or {}).get("seed")
    return None if seed is None else int(seed)


def train_seconds(model: TrainedModel) -> float | None:
    log = model.meta.get("train_log") or {}
    return log.get("train_s")
