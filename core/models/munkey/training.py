"""How MUNKEY trains: the shared weights and the exemplar tokens jointly, each query reading what it
retrieves from the memory of the model's own training ids (arXiv 2603.15033, METHODS.md §2)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.data.dataset import Dataset
from core.models.base import CancelToken, Progress, no_progress, to_device
from core.models.munkey.memory import candidates, dataset_keys, key_index, masked_neighbours, search
from core.models.munkey.network import (
    AGGREGATIONS,
    RETRIEVAL_REGULARISERS,
    MunkeyConfig,
    MunkeyNet,
    aggregation_weights,
)
from core.models.training import TrainConfig, train_loop


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
