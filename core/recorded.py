"""Recorded oracle predictions: a comparison that needs no oracle weights (issue 16, the first comparison).

``comparison.compare`` and ``evidence.judge`` read an oracle only through its predictions on the whole test and
training sets. For the requests a teacher makes first, one class of a shipped model, those predictions are recorded
once by ``python -m core record-oracles`` from oracles trained exactly as the app trains them (the recipe, seed
offsets 1..K), into ``assets/oracles/<the oracle's store key>.npz``:

- ``test_logp``: log-probabilities on the test set, float16 (accuracy, PG, KL, the loss attack, φ of the held-out
  test samples);
- ``train_margin``: φ = log p_y − log Σ_{j≠y} p_j on the training set, float16 (KLoM, the per-sample z, and through
  p_y = sigmoid(φ) the loss attack and the SVC confidence);
- ``train_pred``: the predicted class on the training set, uint8 (RA, FA);
- ``meta``: JSON of the oracle's store key, recipe and seed, weights' SHA-256, training time and dataset
  fingerprint, and its population attacks on its own request (``comparison.attacks``, computed from the full
  probabilities when recorded: the SVC fit is most of a comparison's time).

About 290 KB per Fashion-MNIST oracle. A record is read without numpy's ``.npy`` header parser, which evaluates the
header with ``ast``: CPython 3.11's AST builder is not safe beside another thread's (a page compiling), and the
records are read ahead in the background while sessions open pages (``read_npz``).

:class:`RecordedOracle` answers ``split_proba`` from them (on the training set, a probability vector with that p_y
and that argmax, which is all those measures read) and refuses what needs the weights (embeddings, relearn time,
the weights' residue, probes): those train the real oracles, which then replace the recorded ones. A record is read
only for its own store key and dataset fingerprint, so a changed recipe or dataset trains instead of reading a
stale record; a damaged record is skipped (the oracle trains) and named.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from core import bundle, store
from core.data.dataset import Dataset
from core.data.npy_header import read_header
from core.errors import InputError
from core.models.base import Classifier

ASSETS_ORACLES = Path(__file__).resolve().parent.parent / "assets" / "oracles"
KEY_PREFIX = "recorded-"  # a recorded oracle's model key: never the key of the trained oracle it was recorded from
_META_FIELDS = ("kind", "config", "train_config", "dataset", "dataset_fingerprint", "train_log", "test_acc",
                "weights_sha256", "num_train_ids", "device")


class NeedsWeights(InputError):
    """A measure asked a recorded oracle for something only its weights can give."""


def record_dirs() -> list[Path]:
    """Where records may be: the store's ``oracles/``, then the shipped ``assets/oracles`` (skipped with
    UE_NO_ASSETS=1, as the shipped models are)."""
    own = store.home() / "oracles"
    return [own] if os.environ.get("UE_NO_ASSETS") == "1" else [own, ASSETS_ORACLES]


def record_path(key: str) -> Path | None:
    """The record of the oracle with store key ``key``, if any."""
    return next((p for p in (d / f"{key}.npz" for d in record_dirs()) if p.is_file()), None)


class RecordedOracle(Classifier):
    """An oracle's recorded predictions on one dataset's test and training sets (see the module docstring)."""

    kind = "recorded"

    def __init__(self, test_logp: np.ndarray, train_margin: np.ndarray, train_pred: np.ndarray, fingerprint: str,
                 source: str, attacks: dict | None = None):
        self.recorded_attacks = attacks or {}  # request key -> comparison.attacks of that request
        self.test_logp = np.asarray(test_logp, np.float32)
        self.train_margin = np.asarray(train_margin, np.float64)
        self.train_pred = np.asarray(train_pred, np.int64)
        self.num_classes = self.test_logp.shape[1]
        self.fingerprint, self.source = fingerprint, source

    def _check(self, dataset: Dataset, split: str) -> None:
        if dataset.fingerprint() != self.fingerprint or split not in ("train", "test"):
            raise NeedsWeights(f"{self.source} holds predictions on the test and training sets of the dataset with "
                               f"fingerprint {self.fingerprint}, not the {split} split of {dataset.name} "
                               f"({dataset.fingerprint()})")

    def split_proba(self, dataset: Dataset, split: str) -> np.ndarray:
        self._check(dataset, split)
        cache = self.__dict__.setdefault("_split_proba", {})
        if split not in cache:
            if split == "test":
                p = np.exp(self.test_logp.astype(np.float64))
                cache[split] = (p / p.sum(1, keepdims=True)).astype(np.float32)
            else:
                cache[split] = train_probs(self.train_margin, self.train_pred, dataset.y_train, self.num_classes)
        return cache[split]

    def recorded_margins(self, dataset: Dataset, split: str) -> np.ndarray:
        """φ on a whole split: the recorded values (training set) or φ of the recorded log-probabilities (test)."""
        from core.eval.membership import margins_from_logits

        self._check(dataset, split)
        if split == "train":
            return self.train_margin
        if "_test_margin" not in self.__dict__:
            self._test_margin = margins_from_logits(self.test_logp, dataset.y_test)
        return self._test_margin

    def _needs_weights(self, what: str):
        raise NeedsWeights(f"{self.source} holds recorded predictions, not weights, so it cannot {what}; train the "
                           "oracles (the Predictions page's button, or `python -m core forget ... --oracles K`)")

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._needs_weights("predict new images")

    def embed(self, x: np.ndarray) -> np.ndarray:
        self._needs_weights("embed images")

    def networks(self) -> dict:
        return {}


def train_probs(margin: np.ndarray, pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A probability vector per training sample with p_y = sigmoid(φ) and argmax ``pred``: the rest of the mass on
    ``pred`` when it is not the label (then p_y ≤ ½ ≤ 1 − p_y), else spread evenly over the other classes."""
    rows = np.arange(len(labels))
    p_y = 1.0 / (1.0 + np.exp(-margin))
    rest = 1.0 - p_y
    out = np.repeat((rest / max(num_classes - 1, 1))[:, None], num_classes, axis=1)
    wrong = pred != labels
    out[wrong] = 0.0
    out[rows[wrong], pred[wrong]] = rest[wrong]
    out[rows, labels] = p_y
    return out.astype(np.float32)


def is_recorded(model: bundle.TrainedModel) -> bool:
    return isinstance(model.classifier, RecordedOracle)


def with_weights(models: list[bundle.TrainedModel]) -> list[bundle.TrainedModel]:
    """The models that have weights (the trained oracles among ``models``)."""
    return [m for m in models if not is_recorded(m)]


# ---- writing ------------------------------------------------------------------------------------------------
def record(trained: bundle.TrainedModel, dataset: Dataset, folder: Path | None = None) -> Path:
    """Write the record of a trained oracle (its predictions on ``dataset``'s test and training sets) into
    ``folder`` (default: the store's ``oracles/``); atomic."""
    from core.comparison import attacks
    from core.data.requests import ForgetRequest
    from core.eval.membership import margins_from_probs

    excluded = trained.meta.get("excluded")
    if not excluded:
        raise ValueError(f"{trained.key} is an original, not an oracle: only oracles are recorded")
    request = ForgetRequest.from_json(excluded, dataset)
    test = trained.classifier.split_proba(dataset, "test")
    train = trained.classifier.split_proba(dataset, "train")
    meta = {name: trained.meta.get(name) for name in _META_FIELDS}
    meta.update(key=trained.key, excluded={k: excluded.get(k) for k in ("kind", "classes", "description", "key")},
                request_key=request.key(), attacks=attacks(trained.classifier, dataset, request),
                recorded_at=time.strftime("%Y-%m-%dT%H:%M:%S"), versions=store.versions())
    arrays = {"test_logp": np.log(np.clip(np.asarray(test, np.float64), 1e-45, None)).astype(np.float16),
              "train_margin": margins_from_probs(train, dataset.y_train).astype(np.float16),
              "train_pred": np.asarray(train).argmax(1).astype(np.uint8),
              "meta": np.array(json.dumps(meta, default=store.json_default))}
    folder = Path(folder) if folder is not None else store.home() / "oracles"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez_compressed(f, **arrays)
    final = folder / f"{trained.key}.npz"
    os.replace(tmp, final)
    load.cache_clear()
    return final


# ---- reading ------------------------------------------------------------------------------------------------
def find(key: str, dataset: Dataset) -> bundle.TrainedModel | None:
    """The recorded oracle whose store key is ``key``, for ``dataset``; None when there is no record. A record that
    cannot be used raises StoreError naming the file and how to restore it."""
    path = record_path(key)
    if path is None:
        return None
    stat = path.stat()
    return load(str(path), stat.st_mtime_ns, stat.st_size, key, dataset.fingerprint(), dataset.num_train,
                len(dataset.y_test), dataset.num_classes)


@lru_cache(maxsize=64)
def load(path: str, _mtime: int, _size: int, key: str, fingerprint: str, num_train: int, num_test: int,
         num_classes: int) -> bundle.TrainedModel:
    """Read and check one record (memoised per file version): never unpickles, and decompresses no more than a
    record of this dataset's size holds."""
    where = Path(path)
    fix = (f"restore it with `git checkout -- {where.relative_to(ASSETS_ORACLES.parent.parent)}`"
           if ASSETS_ORACLES in where.parents else f"delete {where}") + \
        "; or record it again with `python -m core record-oracles` (without it the oracle trains)"
    most = num_test * num_classes * 2 + num_train * 3 + 2**20  # the arrays, and up to 1 MiB of headers and meta
    try:
        arrays = read_npz(where, ("test_logp", "train_margin", "train_pred", "meta"), most)
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise store.StoreError(source=f"the recorded oracle {where}", found=f"unreadable ({err})",
                               expected="a record written by `python -m core record-oracles`", fix=fix) from err
    shapes = {"test_logp": (num_test, num_classes), "train_margin": (num_train,), "train_pred": (num_train,)}
    problem = next((f"{name} has shape {arrays[name].shape}, not {shape}" for name, shape in shapes.items()
                    if arrays[name].shape != shape), None)
    if problem is None and (meta.get("key") != key or meta.get("dataset_fingerprint") != fingerprint):
        problem = f"it records {meta.get('key')} on data {meta.get('dataset_fingerprint')}, not {key} on {fingerprint}"
    if problem is None and not (np.isfinite(arrays["train_margin"]).all() and np.isfinite(arrays["test_logp"]).all()
                                and int(arrays["train_pred"].max(initial=0)) < num_classes):
        problem = "it holds values that are not finite or a class index out of range"
    if problem:
        raise store.StoreError(source=f"the recorded oracle {where}", found=problem,
                               expected="the predictions of that oracle on this dataset", fix=fix)
    meta["recorded"] = {"path": str(where), "recorded_at": meta.get("recorded_at")}
    classifier = RecordedOracle(arrays["test_logp"], arrays["train_margin"], arrays["train_pred"], fingerprint,
                                f"the recorded oracle {where.name}",
                                {meta["request_key"]: meta["attacks"]} if meta.get("attacks") else None)
    return bundle.TrainedModel(KEY_PREFIX + key, classifier, meta)


def read_npz(path: Path, names: tuple[str, ...], most: int) -> dict[str, np.ndarray]:
    """The arrays ``names`` (C-ordered numbers or text) of an ``.npz`` that ``np.savez_compressed`` wrote, read
    without ``ast`` (``npy_header``) and decompressing at most ``most`` bytes in all; a ValueError (or the zip
    module's own errors) for anything else."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for name in names:
            with archive.open(f"{name}.npy") as member:
                shape, fortran, dtype = read_header(member)
                if fortran or dtype.hasobject or dtype.fields is not None:
                    raise ValueError(f"{name} is not an array as numpy.savez writes one here ({dtype}, "
                                     f"{'Fortran' if fortran else 'C'} order)")
                size = math.prod(shape) * dtype.itemsize
                most -= size
                if most < 0:
                    raise ValueError("larger than a record of this dataset once decompressed")
                data = member.read(size)
            if len(data) != size:
                raise ValueError(f"{name} holds {len(data):,} bytes, not the {size:,} its shape {shape} needs")
            arrays[name] = np.frombuffer(data, dtype).reshape(shape)
    return arrays
