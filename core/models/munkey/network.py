"""MUNKEY's network: a small ViT that reads an image together with one retrieved exemplar token.

"Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion" (arXiv 2603.15033). Every
training sample i has a memory entry (k_i, v_i): a key k_i from a frozen key encoder and a learnable
128-d exemplar token v_i. A query retrieves the K = 4 nearest keys; the ViT reads the image tokens plus
one retrieved exemplar token. METHODS.md §2 lists what is taken from the paper and what is our choice
([guess] fields below are options, never silent constants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.dataset import Dataset
from core.models.vit import ViTBackbone, ViTConfig

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


def build_munkey(dataset: Dataset, config: MunkeyConfig) -> MunkeyNet:
    return MunkeyNet(dataset.image_shape, dataset.num_train, dataset.num_classes, config)
