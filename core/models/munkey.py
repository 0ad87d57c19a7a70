"""MUNKEY: a memory-augmented transformer that forgets by deleting keys.

"Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion" (arXiv 2603.15033). Every
training sample i has a memory entry (k_i, v_i): a key k_i from a frozen key encoder and a learnable
128-d exemplar token v_i. A query retrieves the K = 4 nearest keys; a small ViT reads the image tokens
plus one retrieved exemplar token. Forgetting deletes entries from the memory: no weight moves and the
forget images and labels are never read, only their ids. METHODS.md §2 lists what is taken from the
paper and what is our choice ([guess] fields below are options, never silent constants).

Sharing rules (as for SPM): a trained MUNKEY is cached for every browser session, so ``forget`` and
``restore`` return a *new* classifier with its own memory: a FAISS index of the present keys (a copy,
from which ``remove_ids`` deletes the forgotten ones) and a table of exemplar tokens in which the
forgotten rows are zeroed. The network, the frozen keys of the whole training set and the original
tokens live in one read-only ``_Shared`` object, from which ``restore`` takes entries back.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.dataset import Dataset
from core.models.base import CancelToken, Classifier, Progress, batched, checked_memory_ids, no_progress, to_device
from core.models.id_index import held_ids, id_index, index_without
from core.models.registry import ModelKind, register_model
from core.models.training import TrainConfig, train_loop
from core.models.vit import ViTBackbone, ViTConfig, vit_recipe

AGGREGATIONS = ("ensemble", "softmax", "rank")
RETRIEVAL_REGULARISERS = ("none", "self-drop", "neighbour-noise")


@dataclass(frozen=True)
class KeyEncoderConfig:
    """The frozen key encoder: fixed random convolutional features, the same for every model and oracle.

    The paper keys with an ImageNet-pretrained ViT that never saw the task's data. None ships here, and a
    projection fitted on the training set (PCA, an autoencoder) would make every key a function of D_f,
    so deleting D_f would leave it inside the keys of D_r. Random filters drawn from a fixed seed depend on
    no data at all: after deletion the memory holds exactly the keys an oracle retrained on D_r holds.
    """

    filters: int = 64  # random 5x5 filters; more filters give slightly better neighbours and slower keys
    kernel: int = 5  # filter size in pixels (padded, so any image of 8x8 or more works)
    grid: int = 4  # responses average-pooled to a grid x grid map before the projection
    key_dim: int = 128  # fixed random projection size: FAISS search cost grows with it
    seed: int = 2603_15033  # fixed: every MUNKEY and every oracle gets the same key encoder


class RandomKeyEncoder(nn.Module):
    """x -> L2-normalised random projection of pooled ReLU responses of zero-mean random filters.

    The tensors are non-persistent buffers regenerated from the seed: nothing to train, save or leak.
    """

    def __init__(self, in_channels: int, config: KeyEncoderConfig):
        super().__init__()
        g = torch.Generator().manual_seed(config.seed)
        w = torch.randn(config.filters, in_channels, config.kernel, config.kernel, generator=g)
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)  # zero mean: respond to edges and strokes, not brightness
        w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        proj = torch.randn(config.filters * config.grid**2, config.key_dim, generator=g) / math.sqrt(config.key_dim)
        self.register_buffer("weight", w, persistent=False)
        self.register_buffer("proj", proj, persistent=False)
        self.grid = config.grid
        self.padding = config.kernel // 2

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(x.contiguous(), self.weight, padding=self.padding))
        h = F.adaptive_avg_pool2d(h, self.grid).flatten(1)
        return F.normalize(h @ self.proj, dim=1)


@dataclass(frozen=True)
class MunkeyConfig:
    """MUNKEY's model, memory and training options (METHODS.md §2; [guess] marks our choices)."""

    vit: ViTConfig = field(default_factory=ViTConfig)  # same backbone as the plain ViT oracle
    keys: KeyEncoderConfig = field(default_factory=KeyEncoderConfig)  # frozen, data-independent
    token_dim: int = 128  # exemplar token size (paper: 128)
    k: int = 4  # retrieved keys per query (paper: K = 4)
    aggregation: str = "ensemble"  # "ensemble": K passes, mean of softmax (paper); "softmax"/"rank": one pass [guess]
    temperature: float = 0.05  # cosine-similarity temperature of the single-pass "softmax" weights [guess]
    pathway_dropout: float = 0.2  # chance a retrieved token is swapped for the learned null token in training [guess]
    self_retrieval: bool = True  # a training query may retrieve its own entry (paper silent): chosen by the benchmark
    train_passes: str = "sample"  # "sample": one random retrieved token per query and step; "all": K passes [guess]
    token_lr: float = 5.0  # plain-SGD lr of the sparse token rows, apart from the recipe's (AdamW) lr: each token
    # gets only ~K updates per epoch, so it needs a far larger step than the shared weights [guess]
    token_init_std: float = 0.02  # exemplar tokens start as small random vectors
    cache_neighbours: int = 32  # neighbours kept per cached split row; deletion filters them (exact)
    retrieval_reg: str = "none"  # training-time perturbation of what a query retrieves (paper: "retrieval
    # regularisation", form not recovered) [guess]: "self-drop" / "neighbour-noise", see perturb_retrieval
    retrieval_reg_rate: float = 0.25  # "self-drop": chance per query and step; "neighbour-noise": per slot
    retrieval_reg_pool: int = 16  # "neighbour-noise" draws a replacement among this many nearest other entries


class MunkeyNet(nn.Module):
    """Shared weights (ViT, token projection, null token, head) plus the memory's exemplar tokens.

    ``memory`` (one row per training id) is the only part deletion concerns; ``shared_parameters()``
    is everything else. The key encoder has no parameters.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_train: int, num_classes: int, config: MunkeyConfig):
        super().__init__()
        self.backbone = ViTBackbone(image_shape, config.vit, extra_tokens=1)
        self.token_proj = nn.Linear(config.token_dim, config.vit.width)
        self.null_token = nn.Parameter(torch.randn(config.token_dim) * config.token_init_std)
        self.head = nn.Linear(config.vit.width, num_classes)
        self.key_encoder = RandomKeyEncoder(image_shape[0], config.keys)
        self.memory = nn.Embedding(num_train, config.token_dim, sparse=True)
        nn.init.normal_(self.memory.weight, std=config.token_init_std)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("memory.")]

    def features(self, patch_tokens: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Class-token features of image tokens (B, 1+P, W) read together with exemplar tokens (B, token_dim)."""
        return self.backbone.encode_tokens(patch_tokens, self.token_proj(tokens).unsqueeze(1))

    def tokens_for(self, ids: torch.Tensor, drop: torch.Tensor | None = None,
                   table: torch.Tensor | None = None) -> torch.Tensor:
        """Exemplar tokens of ``ids`` from ``table`` (default: the trained memory); id -1 (no entry) or a
        dropped pathway reads the null token."""
        missing = ids < 0
        if drop is not None:
            missing = missing | drop
        tokens = self.memory(ids.clamp(min=0)) if table is None else F.embedding(ids.clamp(min=0), table)
        return torch.where(missing.unsqueeze(-1), self.null_token.expand_as(tokens), tokens)


def aggregation_weights(ids: np.ndarray, sims: np.ndarray, aggregation: str, temperature: float) -> np.ndarray:
    """Weights of the K retrieved tokens per row; missing entries (id -1) weigh 0 unless none is found."""
    found = ids >= 0
    if aggregation == "ensemble":
        w = found.astype(np.float64)
    elif aggregation == "softmax":
        z = np.where(found, sims / temperature, -np.inf)
        z = z - np.max(np.where(found, z, -1e30), axis=1, keepdims=True)
        w = np.where(found, np.exp(z), 0.0)
    elif aggregation == "rank":
        w = np.where(found, 1.0 / (1.0 + np.arange(ids.shape[1]))[None, :], 0.0)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")
    total = w.sum(1, keepdims=True)
    uniform = np.full_like(w, 1.0 / w.shape[1])
    return np.where(total > 0, w / np.maximum(total, 1e-300), uniform).astype(np.float32)


def perturb_retrieval(ids: np.ndarray, batch: np.ndarray, others: np.ndarray, config: MunkeyConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Retrieval regularisation [guess; METHODS.md §2 names it, its form was not recovered]: the (B, K)
    retrieved ids of one training batch, perturbed so that the model does not learn to rely on one exact
    retrieved set. ``others`` (B, pool) are each query's nearest memory entries other than itself.

    - "self-drop" (simulated deletion; needs self-retrieval): with probability ``retrieval_reg_rate`` a query
      retrieves as if its own entry were deleted: its K nearest *other* entries. The model then trains in
      the state that deletion will put it in.
    - "neighbour-noise": each retrieved entry other than the query's own is, with probability
      ``retrieval_reg_rate``, swapped for a random one of the query's ``retrieval_reg_pool`` nearest others,
      so that no token is learned as the one partner of a particular query.
    """
    if config.retrieval_reg == "none":
        return ids
    out = ids.copy()
    k = ids.shape[1]
    if config.retrieval_reg == "self-drop":
        drop = rng.random(len(ids)) < config.retrieval_reg_rate
        out[drop] = others[drop, :k]
        return out
    if config.retrieval_reg == "neighbour-noise":
        own = ids == batch[:, None]
        swap = (rng.random(ids.shape) < config.retrieval_reg_rate) & ~own
        pick = rng.integers(0, others.shape[1], size=ids.shape)
        candidates = np.take_along_axis(others, pick, 1)
        return np.where(swap & (candidates >= 0), candidates, out)
    raise ValueError(f"unknown retrieval_reg {config.retrieval_reg!r}; known: {', '.join(RETRIEVAL_REGULARISERS)}")


# ---- the key bank ------------------------------------------------------------------------------
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


def training_neighbours(train_keys: np.ndarray, train_ids: np.ndarray, k: int, self_retrieval: bool,
                        index=None, memo=None, extra: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Retrieved training ids (len(train_ids), K) and cosines of each training query during training.

    The memory holds ``train_ids`` only. ``self_retrieval``: slot 0 is the query's own entry and the
    other K-1 are its nearest other entries; otherwise the K nearest entries other than itself.
    """
    index = index if index is not None else key_index(train_keys, memo)
    member = np.zeros(len(train_keys), bool)
    member[train_ids] = True
    queries = train_keys[train_ids]
    n = min(k + extra, len(train_keys))
    cand, csims = candidates(index, train_keys, n, memo=None if memo is None else (*memo, "train"))
    cand, csims = cand[train_ids], csims[train_ids]
    n_other = k - 1 if self_retrieval else k
    allowed = (cand >= 0) & member[np.maximum(cand, 0)] & (cand != train_ids[:, None])
    ids, sims = masked_neighbours(cand, csims, allowed, n_other)
    short = np.flatnonzero(allowed.sum(1) < n_other)
    if len(short):
        more, msims = search(index, queries[short], min(n_other + 1, len(train_keys)), member)
        keep = more != train_ids[short][:, None]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :n_other]
        ok = np.take_along_axis(keep & (more >= 0), order, 1)
        ids[short] = np.where(ok, np.take_along_axis(more, order, 1), -1)
        sims[short] = np.take_along_axis(msims, order, 1)
    if self_retrieval:
        ids = np.concatenate([train_ids[:, None], ids], 1)
        sims = np.concatenate([np.ones((len(ids), 1), np.float32), sims], 1)
    return ids.astype(np.int64), sims.astype(np.float32)


def fit_munkey(net: MunkeyNet, dataset: Dataset, train_ids: np.ndarray, config: MunkeyConfig,
               train_config: TrainConfig, progress: Progress = no_progress, cancel: CancelToken | None = None,
               device: torch.device | None = None, batch_hook=None) -> dict:
    """Joint training of the shared weights and the exemplar tokens of ``train_ids``.

    Retrieval runs over the memory of ``train_ids`` only (an oracle never sees D_f's keys). Since the
    keys are frozen, each sample's K retrieved ids are computed once. ``batch_hook(batch_ids, retrieved)``
    sees every batch with its (B, K) retrieved training ids (the tests check self-retrieval with it).
    """
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {config.aggregation!r}; known: {', '.join(AGGREGATIONS)}")
    if config.train_passes not in ("sample", "all"):
        raise ValueError(f"unknown train_passes {config.train_passes!r}; known: sample, all")
    if config.retrieval_reg not in RETRIEVAL_REGULARISERS:
        raise ValueError(f"unknown retrieval_reg {config.retrieval_reg!r}; known: {', '.join(RETRIEVAL_REGULARISERS)}")
    if config.retrieval_reg == "self-drop" and not config.self_retrieval:
        raise ValueError("retrieval_reg='self-drop' simulates deleting the query's own entry, so it needs "
                         "self_retrieval=True")
    device = device or torch.device("cpu")
    net.to(device)
    progress(0.0, "MUNKEY: computing keys and neighbours")
    train_keys = dataset_keys(dataset, "train", config.keys, device, net.key_encoder)
    memo = (dataset.fingerprint(), config.keys)
    ids, sims = training_neighbours(train_keys, train_ids, config.k, config.self_retrieval,
                                    index=key_index(train_keys, memo), memo=memo)
    retrieved = np.full((dataset.num_train, config.k), -1, np.int64)
    retrieved[train_ids] = ids
    similarity = np.zeros((dataset.num_train, config.k), np.float32)
    similarity[train_ids] = sims
    others = None
    if config.retrieval_reg != "none":  # each query's nearest entries other than itself, for the regulariser
        pool = max(config.k, config.retrieval_reg_pool)
        other_ids, _ = training_neighbours(train_keys, train_ids, pool, False, index=key_index(train_keys, memo),
                                           memo=memo)
        others = np.full((dataset.num_train, pool), -1, np.int64)
        others[train_ids] = other_ids
    labels = torch.as_tensor(dataset.y_train)

    def step_loss(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        ids = retrieved[batch]
        batch_sims = similarity[batch]
        if others is not None:
            ids = perturb_retrieval(ids, batch, others[batch], config, rng)
            batch_sims = np.einsum("bd,bkd->bk", train_keys[batch], train_keys[np.maximum(ids, 0)])
        if batch_hook is not None:
            batch_hook(batch, ids)
        y = labels[batch].to(device)
        patches = net.backbone.patches(to_device(dataset.x_train[batch], device))
        b = len(batch)
        if config.aggregation == "ensemble" and config.train_passes == "all":
            flat = torch.as_tensor(ids.reshape(-1), device=device)
            drop = torch.as_tensor(rng.random(len(flat)) < config.pathway_dropout, device=device)
            feats = net.features(patches.repeat_interleave(config.k, 0), net.tokens_for(flat, drop))
            probs = torch.softmax(net.head(feats), 1).view(b, config.k, -1).mean(1)
            return -torch.log(probs.gather(1, y.unsqueeze(1)).clamp(min=1e-8)).mean()
        drop = torch.as_tensor(rng.random(b) < config.pathway_dropout, device=device)
        if config.aggregation == "ensemble":
            pick = ids[np.arange(b), rng.integers(0, config.k, size=b)]
            tokens = net.tokens_for(torch.as_tensor(pick, device=device), drop)
        else:
            w = aggregation_weights(ids, batch_sims, config.aggregation, config.temperature)
            each = net.tokens_for(torch.as_tensor(ids, device=device))
            tokens = (torch.as_tensor(w, device=device).unsqueeze(-1) * each).sum(1)
            tokens = torch.where(drop.unsqueeze(-1), net.null_token.expand_as(tokens), tokens)
        return F.cross_entropy(net.head(net.features(patches, tokens)), y)

    groups = [
        {"params": net.shared_parameters(), "lr": train_config.lr * config.vit.lr_scale},
        # sparse rows, so plain SGD whatever the recipe's optimiser: momentum, weight decay or Adam's moments
        # would touch every row at every step (train_loop's "sparse" groups)
        {"params": [net.memory.weight], "lr": config.token_lr, "momentum": 0.0, "weight_decay": 0.0, "sparse": True},
    ]
    return train_loop(net, train_ids, train_config, step_loss, progress, cancel, param_groups=groups, label="MUNKEY")


@dataclass
class _Shared:
    """Read-only state shared by a MUNKEY and every copy made by forget/restore."""

    net: MunkeyNet
    train_keys: np.ndarray  # frozen keys of every training id, float32 (N, key_dim), L2-normalised
    train_labels: np.ndarray
    num_classes: int
    device: torch.device
    memo: tuple  # (data fingerprint, key config): names the process-wide key bank of these keys
    image_only: dict = field(default_factory=dict)  # (fingerprint, split) -> image-only probabilities
    passes: dict = field(default_factory=dict)  # (fingerprint, split) -> (ids, per-pass probs, per-pass features)

    def index(self):
        """The process-wide index of *every* training key: only for the memoised candidate lists."""
        return key_index(self.train_keys, self.memo)

    @property
    def tokens(self) -> torch.Tensor:
        """The trained exemplar tokens of every training id (read-only: copies are edited, never this)."""
        return self.net.memory.weight.detach()


class MunkeyClassifier(Classifier):
    """A trained MUNKEY and its memory: the FAISS bank of present keys and the table of their tokens.

    ``active`` (bool over training ids) mirrors what the bank holds; the token rows of absent ids are zero.
    """

    kind = "munkey"

    def __init__(self, shared: _Shared, active: np.ndarray, config: MunkeyConfig, bank=None,
                 tokens: torch.Tensor | None = None):
        self._shared = shared
        self.active = active
        self.config = config
        self.num_classes = shared.num_classes
        self.bank = bank if bank is not None else id_index(shared.train_keys, np.flatnonzero(active), "ip")
        self.tokens = tokens if tokens is not None else shared.tokens

    # ---- memory ---------------------------------------------------------------------------------
    def _checked_ids(self, ids, must_be_active: bool) -> np.ndarray:
        return checked_memory_ids(self.active, ids, must_be_active)

    def forget(self, ids) -> MunkeyClassifier:
        """A new MUNKEY whose memory lacks the entries of ``ids``; this one is unchanged.

        Reads nothing but the ids: no image, label or weight. The keys are removed from a copy of the
        FAISS bank (``remove_ids``) and the tokens are zeroed in a copy of the token table, so the new
        model holds neither and no search can return them.
        """
        ids = self._checked_ids(ids, must_be_active=True)
        active = self.active.copy()
        active[ids] = False
        tokens = self.tokens.clone().index_fill_(0, torch.as_tensor(ids, device=self.tokens.device), 0.0)
        return MunkeyClassifier(self._shared, active, self.config, index_without(self.bank, ids), tokens)

    def restore(self, ids) -> MunkeyClassifier:
        """A new MUNKEY with the forgotten entries of ``ids`` back, taken from the trained original."""
        ids = self._checked_ids(ids, must_be_active=False)
        active = self.active.copy()
        active[ids] = True
        tokens = self.tokens.clone()
        rows = torch.as_tensor(ids, device=tokens.device)
        tokens[rows] = self._shared.tokens[rows]
        return MunkeyClassifier(self._shared, active, self.config, None, tokens)  # a new bank, in id order

    def with_options(self, **changes) -> MunkeyClassifier:
        """The same weights and memory read with other inference options (e.g. aggregation="softmax")."""
        return MunkeyClassifier(self._shared, self.active, replace(self.config, **changes), self.bank, self.tokens)

    @property
    def memory_ids(self) -> np.ndarray:
        return np.flatnonzero(self.active)

    def memory_check(self, ids) -> dict:
        """What this memory still holds of ``ids``, read from the memory itself (not from the mask): how many
        of their keys the FAISS bank returns ids for, and the largest magnitude left in their token rows.
        Both are 0 after an honoured key deletion."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        held = held_ids(self.bank)
        rows = self.tokens[torch.as_tensor(ids, device=self.tokens.device)]
        return {"memory_entries": int(len(held)), "forgotten_ids": int(len(ids)),
                "forgotten_in_memory": int(np.isin(ids, held).sum()),
                "forgotten_token_max_abs": float(rows.abs().max()) if len(ids) else 0.0}

    # ---- retrieval ------------------------------------------------------------------------------
    def keys_of(self, x: np.ndarray) -> np.ndarray:
        return batched(self._shared.net.key_encoder, x, self._shared.device)

    def split_keys(self, dataset: Dataset, split: str) -> np.ndarray:
        if split == "train" and dataset.fingerprint() == self._shared.memo[0]:
            return self._shared.train_keys
        return dataset_keys(dataset, split, self.config.keys, self._shared.device, self._shared.net.key_encoder)

    def neighbours(self, keys: np.ndarray, cache: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The K nearest training ids in this model's bank per key row (-1 where it holds fewer) and cosines.

        With ``cache`` (data fingerprint and split), a whole split is answered from candidate lists: the
        nearest ``cache_neighbours`` among all training keys, searched once per process, keeping the
        ids this bank holds; rows left with fewer than K are searched in the bank. The tests check that
        both give the bank's own search results.
        """
        k = self.config.k
        if cache is None:
            return search(self.bank, keys, k)
        n = min(max(self.config.cache_neighbours, k), len(self.active))
        cand, csims = candidates(self._shared.index(), keys, n, memo=(cache[0], self.config.keys, cache[1]))
        allowed = (cand >= 0) & self.active[np.maximum(cand, 0)]
        ids, sims = masked_neighbours(cand, csims, allowed, k)
        short = np.flatnonzero(allowed.sum(1) < k)
        if len(short):
            ids[short], sims[short] = search(self.bank, keys[short], k)
        return ids, sims

    def retrieve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Retrieved training ids (n, K) and the weight each gets in the prediction, for images
        (n, C, H, W) or keys (n, key_dim). For the ensemble every found entry weighs 1/K."""
        keys = x if x.ndim == 2 else self.keys_of(x)
        ids, sims = self.neighbours(keys)
        return ids, aggregation_weights(ids, sims, self.config.aggregation, self.config.temperature)

    # ---- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, x: np.ndarray, ids: np.ndarray | None, sims: np.ndarray | None,
                 batch_size: int = 512, per_pass: bool = False):
        """(probabilities, class features[, per-pass probabilities]); ``ids`` None = image only."""
        net, device, cfg = self._shared.net, self._shared.device, self.config
        probs, feats, passes = [], [], []
        for s in range(0, len(x), batch_size):
            patches = net.backbone.patches(to_device(x[s:s + batch_size], device))
            b = len(patches)
            if ids is None:
                tokens = net.null_token.expand(b, -1)
                f = net.features(patches, tokens)
                p = torch.softmax(net.head(f), 1)
            elif cfg.aggregation == "ensemble":
                kk = ids.shape[1]
                flat = torch.as_tensor(ids[s:s + b].reshape(-1), device=device)
                tokens = net.tokens_for(flat, table=self.tokens)
                f = net.features(patches.repeat_interleave(kk, 0), tokens)
                each = torch.softmax(net.head(f), 1).view(b, kk, -1)
                if per_pass:
                    passes.append(each.float().cpu())
                p, f = each.mean(1), f.view(b, kk, -1).mean(1)
            else:
                w = aggregation_weights(ids[s:s + b], sims[s:s + b], cfg.aggregation, cfg.temperature)
                each = net.tokens_for(torch.as_tensor(ids[s:s + b], device=device), table=self.tokens)
                tokens = (torch.as_tensor(w, device=device).unsqueeze(-1) * each).sum(1)
                f = net.features(patches, tokens)
                p = torch.softmax(net.head(f), 1)
            probs.append(p.float().cpu())
            feats.append(f.float().cpu())
        out = (torch.cat(probs).numpy(), torch.cat(feats).numpy())
        return (*out, torch.cat(passes).numpy()) if per_pass else out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        ids, sims = self.neighbours(self.keys_of(x))
        return self._forward(x, ids, sims)[0]

    def image_only_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities with every exemplar token replaced by the null token (for A_img)."""
        return self._forward(x, None, None)[0]

    def explain(self, x: np.ndarray) -> dict:
        """For a few images: retrieved ids, their cosine similarity and weight, the aggregated
        probabilities and, for the ensemble, each pass's probabilities (n, K, C)."""
        ids, sims = self.neighbours(self.keys_of(x))
        out = self._forward(x, ids, sims, per_pass=self.config.aggregation == "ensemble")
        weights = aggregation_weights(ids, sims, self.config.aggregation, self.config.temperature)
        result = {"ids": ids, "similarity": sims, "weights": weights, "proba": out[0]}
        if len(out) == 3:
            result["pass_proba"] = out[2]
        return result

    def embed(self, x: np.ndarray) -> np.ndarray:
        ids, sims = self.neighbours(self.keys_of(x))
        return self._forward(x, ids, sims)[1]

    @torch.no_grad()
    def _passes(self, x: np.ndarray, ids: np.ndarray, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """One ensemble pass per (image, retrieved id) pair: probabilities (n, C) and class features (n, d)."""
        net, device = self._shared.net, self._shared.device
        probs, feats = [], []
        for s in range(0, len(x), batch_size):
            patches = net.backbone.patches(to_device(x[s:s + batch_size], device))
            tokens = net.tokens_for(torch.as_tensor(ids[s:s + batch_size], device=device), table=self.tokens)
            f = net.features(patches, tokens)
            probs.append(torch.softmax(net.head(f), 1).float().cpu())
            feats.append(f.float().cpu())
        if not probs:
            return np.zeros((0, self.num_classes), np.float32), np.zeros((0, net.backbone.out_dim), np.float32)
        return torch.cat(probs).numpy(), torch.cat(feats).numpy()

    def _ensemble_outputs(self, x: np.ndarray, ids: np.ndarray, memo_key: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble outputs of a whole split, reusing every (row, retrieved id) pass already computed for it.

        A pass depends only on the image and the retrieved entry's token, and every copy made by forget /
        restore holds the original's token for each entry it can retrieve, so the passes of the first copy
        that computed a split (kept in ``_Shared.passes``) serve all others: after deleting 10% of the
        memory, about one pass in ten is new. Pairs with no entry (-1, null token) are always computed.
        """
        n, k = ids.shape
        probs = np.zeros((n, k, self.num_classes), np.float32)
        feats = np.zeros((n, k, self._shared.net.backbone.out_dim), np.float32)
        todo = np.ones((n, k), bool)
        memo = self._shared.passes.get(memo_key)
        if memo is not None and len(memo[0]) == n:
            known_ids, known_probs, known_feats = memo
            match = (ids[:, :, None] == known_ids[:, None, :]) & (ids >= 0)[:, :, None]
            found = match.any(-1)
            slot = match.argmax(-1)
            rows, cols = np.nonzero(found)
            probs[rows, cols] = known_probs[rows, slot[rows, cols]]
            feats[rows, cols] = known_feats[rows, slot[rows, cols]]
            todo = ~found
        rows, cols = np.nonzero(todo)
        probs[rows, cols], feats[rows, cols] = self._passes(x[rows], ids[rows, cols])
        self._shared.passes.setdefault(memo_key, (ids, probs, feats))
        return probs.mean(1), feats.mean(1)

    def _split_outputs(self, dataset: Dataset, split: str):
        cache = self.__dict__.setdefault("_split_cache", {})
        key = (dataset.fingerprint(), split)
        if key not in cache:
            keys = self.split_keys(dataset, split)
            ids, sims = self.neighbours(keys, cache=(dataset.fingerprint(), split))
            x = getattr(dataset, f"x_{split}")
            if self.config.aggregation == "ensemble":
                cache[key] = self._ensemble_outputs(x, ids, key)
            else:
                cache[key] = self._forward(x, ids, sims)
        return cache[key]

    def split_proba(self, dataset: Dataset, split: str) -> np.ndarray:
        return self._split_outputs(dataset, split)[0]

    def split_embed(self, dataset: Dataset, split: str) -> np.ndarray:
        return self._split_outputs(dataset, split)[1]

    def split_image_only_proba(self, dataset: Dataset, split: str) -> np.ndarray:
        """Image-only probabilities of a split, cached on the network (they do not depend on the memory)."""
        key = (dataset.fingerprint(), split)
        cache = self._shared.image_only
        if key not in cache:
            cache[key] = self.image_only_proba(getattr(dataset, f"x_{split}"))
        return cache[key]

    def networks(self) -> dict[str, nn.Module]:
        return {"net": self._shared.net}

    @property
    def net(self) -> MunkeyNet:
        return self._shared.net

    @property
    def train_features(self) -> np.ndarray:
        """The frozen keys of every training id (cached beside the weights by the bundle)."""
        return self._shared.train_keys

    @property
    def train_labels(self) -> np.ndarray:
        return self._shared.train_labels


def build_munkey(dataset: Dataset, config: MunkeyConfig) -> MunkeyNet:
    return MunkeyNet(dataset.image_shape, dataset.num_train, dataset.num_classes, config)


def wrap_munkey(net: MunkeyNet, dataset: Dataset, train_ids: np.ndarray, config: MunkeyConfig,
                device: torch.device | None = None, train_features: np.ndarray | None = None) -> MunkeyClassifier:
    """Key every training image once; the memory holds ``train_ids`` (all of D, or D_r for an oracle)."""
    device = device or torch.device("cpu")
    net = net.to(device).eval()
    if train_features is None:
        train_features = dataset_keys(dataset, "train", config.keys, device, net.key_encoder)
    shared = _Shared(net=net, train_keys=np.ascontiguousarray(train_features, dtype=np.float32),
                     train_labels=dataset.y_train, num_classes=dataset.num_classes, device=device,
                     memo=(dataset.fingerprint(), config.keys))
    active = np.zeros(dataset.num_train, bool)
    active[train_ids] = True
    return MunkeyClassifier(shared, active, config)


register_model(ModelKind(
    name="munkey",
    description="MUNKEY: ViT + per-sample memory of exemplar tokens; deletion removes keys, no weight moves",
    config_cls=MunkeyConfig, build=build_munkey, fit=fit_munkey, wrap=wrap_munkey, by_design=True,
    default_train=vit_recipe,  # the plain ViT's recipe: same backbone, same budget, like-for-like oracles
    reference_oracles=("vit",),  # the paper's second oracle: a plain ViT of the same size retrained on D_r
))
