"""MUNKEY as the rest of the project sees it: a trained network and its memory, which forgets by
deleting keys (arXiv 2603.15033).

A trained MUNKEY is cached for every browser session, so ``forget`` returns a *new* classifier with its
own memory: a FAISS index of the present keys (a copy, from which ``remove_ids`` deletes the forgotten
ones) and a table of exemplar tokens in which the forgotten rows are zeroed. The network, the frozen keys
of the whole training set and the trained tokens live in one read-only ``_Shared`` object.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from core.data.dataset import Dataset
from core.models.base import MemoryClassifier, batched, to_device
from core.models.id_index import held_ids, id_index, index_without
from core.models.munkey.memory import _Shared, candidates, dataset_keys, masked_neighbours, search
from core.models.munkey.network import MunkeyConfig, MunkeyNet, aggregation_weights, build_munkey
from core.models.munkey.training import fit_munkey
from core.models.registry import register_model
from core.models.vit import vit_recipe


class MunkeyClassifier(MemoryClassifier):
    """A trained MUNKEY and its memory: the FAISS bank of present keys and the table of their tokens.

    ``active`` (bool over training ids) mirrors what the bank holds; the token rows of absent ids are zero.
    """

    kind = "munkey"

    def __init__(self, shared: _Shared, active: np.ndarray, config: MunkeyConfig, bank=None,
                 tokens: torch.Tensor | None = None):
        super().__init__(shared, active)
        self.config = config
        self.bank = bank if bank is not None else id_index(shared.train_features, np.flatnonzero(active), "ip")
        self.tokens = tokens if tokens is not None else shared.tokens

    # ---- memory ---------------------------------------------------------------------------------
    def _without(self, ids: np.ndarray, active: np.ndarray) -> MunkeyClassifier:
        """``forget(ids)`` reads nothing but the ids: no image, label or weight. The keys are removed from a
        copy of the FAISS bank (``remove_ids``) and the tokens are zeroed in a copy of the token table, so
        the new model holds neither and no search can return them."""
        tokens = self.tokens.clone().index_fill_(0, torch.as_tensor(ids, device=self.tokens.device), 0.0)
        return MunkeyClassifier(self._shared, active, self.config, index_without(self.bank, ids), tokens)

    def _held_ids(self) -> np.ndarray:
        return held_ids(self.bank)

    def _memory_evidence(self, ids: np.ndarray) -> dict:
        """The largest magnitude left in the token rows of ``ids`` (0 after an honoured key deletion)."""
        rows = self.tokens[torch.as_tensor(ids, device=self.tokens.device)]
        return {"forgotten_token_max_abs": float(rows.abs().max()) if len(ids) else 0.0}

    def with_options(self, **changes) -> MunkeyClassifier:
        """The same weights and memory read with other inference options (e.g. aggregation="softmax")."""
        return MunkeyClassifier(self._shared, self.active, replace(self.config, **changes), self.bank, self.tokens)

    # ---- retrieval ------------------------------------------------------------------------------
    def keys_of(self, x: np.ndarray) -> np.ndarray:
        return batched(self._shared.net.key_encoder, x, self._shared.device)

    def split_keys(self, dataset: Dataset, split: str) -> np.ndarray:
        if split == "train" and dataset.fingerprint() == self._shared.memo[0]:
            return self._shared.train_features
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

    def weight_features(self, x: np.ndarray) -> np.ndarray:
        """Class features of the image-only pass (every exemplar token replaced by the null token)."""
        return self._forward(x, None, None)[1]

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

        A pass depends only on the image and the retrieved entry's token, and every copy made by forget
        holds the original's token for each entry it can retrieve, so the passes of the first copy
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


def wrap_munkey(net: MunkeyNet, dataset: Dataset, train_ids: np.ndarray, config: MunkeyConfig,
                device: torch.device | None = None, train_features: np.ndarray | None = None) -> MunkeyClassifier:
    """Key every training image once; the memory holds ``train_ids`` (all of D, or D_r for an oracle)."""
    device = device or torch.device("cpu")
    net = net.to(device).eval()
    if train_features is None:
        train_features = dataset_keys(dataset, "train", config.keys, device, net.key_encoder)
    shared = _Shared(net=net, train_features=np.ascontiguousarray(train_features, dtype=np.float32),
                     train_labels=dataset.y_train, num_classes=dataset.num_classes, device=device,
                     memo=(dataset.fingerprint(), config.keys))
    active = np.zeros(dataset.num_train, bool)
    active[train_ids] = True
    return MunkeyClassifier(shared, active, config)


# The builder lives with the network (network.py); it registers here, where its trainer and wrapper meet.
register_model("munkey", config=MunkeyConfig, fit=fit_munkey, wrap=wrap_munkey, by_design=True,
               description="MUNKEY: ViT + per-sample memory of exemplar tokens; deletion removes keys, no weight moves",
               default_train=vit_recipe,  # the plain ViT's recipe: same backbone, same budget, like-for-like oracles
               reference_oracles=("vit",),  # the paper's second oracle: a plain ViT retrained on D_r
               )(build_munkey)
