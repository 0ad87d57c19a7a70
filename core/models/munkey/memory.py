"""MUNKEY's memory: the frozen keys of the training set, their FAISS search, and the state a trained
MUNKEY shares with every copy ``forget`` makes (network, keys, trained exemplar tokens, caches)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from core.data.dataset import Dataset
from core.models.base import SharedMemory, batched
from core.models.munkey.network import KeyEncoderConfig, MunkeyNet, RandomKeyEncoder

# Keys and nearest-key lists are pure functions of the images and the fixed key encoder, so they are
# memoised per process (not per network): an original, its oracles and every deleted copy share them.
_KEYS: dict = {}
_INDEXES: dict = {}
_CANDIDATES: dict = {}


def dataset_keys(dataset: Dataset, split: str, config: KeyEncoderConfig, device: torch.device | None = None,
                 encoder: RandomKeyEncoder | None = None) -> np.ndarray:
    """Frozen keys of every image of a split (memoised by data fingerprint and key-encoder config)."""
    memo = (dataset.fingerprint(), split, config)
    if memo not in _KEYS:
        encoder = encoder or RandomKeyEncoder(dataset.image_shape[0], config)
        _KEYS[memo] = batched(encoder.to(device or torch.device("cpu")), getattr(dataset, f"x_{split}"),
                              device or torch.device("cpu"))
    return _KEYS[memo]


def key_index(train_keys: np.ndarray, memo=None):
    """A FAISS inner-product (cosine) index over all training keys; row number = training id."""
    import faiss

    if memo is not None and memo in _INDEXES:
        return _INDEXES[memo]
    index = faiss.IndexFlatIP(train_keys.shape[1])
    index.add(np.ascontiguousarray(train_keys, dtype=np.float32))
    if memo is not None:
        _INDEXES[memo] = index
    return index


def search(index, keys: np.ndarray, n: int, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` nearest training ids of each key row (and cosines), only among ``active`` ids if given.

    ``active`` skips ids with an IDSelectorBitmap and leaves the index as it is; training uses it to
    search the memory of an oracle's D_r inside the index of all training keys.
    """
    import faiss

    keys = np.ascontiguousarray(keys, dtype=np.float32)
    if active is None:
        sims, ids = index.search(keys, n)
    else:
        allowed = np.packbits(active, bitorder="little")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(active), faiss.swig_ptr(allowed)))
        sims, ids = index.search(keys, n, params=params)
    return ids.astype(np.int64), sims


def candidates(index, keys: np.ndarray, n: int, memo=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` nearest ids over the whole key bank, memoised: deletion filters these lists.

    With ``memo`` they are also kept on disk (``store.save_computed``) under a hash of the indexed keys, the
    query keys and ``n``, so the next process skips the exhaustive search (about a minute for the 60k x 60k
    training queries of Fashion-MNIST on two cores); any change of keys names another file.
    """
    if memo is not None and (*memo, n) in _CANDIDATES:
        return _CANDIDATES[(*memo, n)]
    name = None
    if memo is not None:
        from core import store

        digest = hashlib.sha256(_index_bytes(index))
        digest.update(np.ascontiguousarray(keys, dtype=np.float32).tobytes())
        name = f"munkey-candidates-{digest.hexdigest()[:24]}-{n}"
        saved = store.load_computed(name)
        if saved is not None and saved.get("ids", np.zeros(0)).shape == (len(keys), n):
            _CANDIDATES[(*memo, n)] = out = (saved["ids"], saved["sims"])
            return out
    out = search(index, keys, n)
    if memo is not None:
        _CANDIDATES[(*memo, n)] = out
        store.save_computed(name, {"ids": out[0], "sims": out[1]})
    return out


def _index_bytes(index) -> bytes:
    """The raw vectors of a flat FAISS index (what its search results depend on)."""
    import faiss

    return faiss.vector_to_array(faiss.downcast_index(index).codes).tobytes()


def masked_neighbours(cand: np.ndarray, csims: np.ndarray, allowed: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` allowed entries of each candidate row (``allowed``: bool (n, L) over ``cand``);
    rows with fewer than ``k`` allowed candidates are searched again. Exact: same ids as a masked search."""
    order = np.argsort(~allowed, axis=1, kind="stable")[:, :k]
    ok = np.take_along_axis(allowed, order, 1)
    ids = np.where(ok, np.take_along_axis(cand, order, 1), -1)
    sims = np.take_along_axis(csims, order, 1).copy()
    return ids, sims


@dataclass
class _Shared(SharedMemory):
    """Read-only state shared by a MUNKEY and every copy made by forget. ``train_features`` holds the
    frozen keys of every training id, float32 (N, key_dim), L2-normalised."""

    net: MunkeyNet
    memo: tuple  # (data fingerprint, key config): names the process-wide key bank of these keys
    image_only: dict = field(default_factory=dict)  # (fingerprint, split) -> image-only probabilities
    passes: dict = field(default_factory=dict)  # (fingerprint, split) -> (ids, per-pass probs, per-pass features)

    def index(self):
        """The process-wide index of *every* training key: only for the memoised candidate lists."""
        return key_index(self.train_features, self.memo)

    @property
    def tokens(self) -> torch.Tensor:
        """The trained exemplar tokens of every training id (read-only: copies are edited, never this)."""
        return self.net.memory.weight.detach()
