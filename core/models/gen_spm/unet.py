"""The generation SPM's network: a class-conditional DDPM UNet whose middle block reads same-label support images.

Zheng et al., "Designing to Forget: Deep Semi-parametric Models for Unlearning" (CVPR 2026, arXiv 2603.22870),
generation model, laid out as the authors' ``nets/unet_spm.py`` (GitHub amberyzheng/spm_unlearning), itself the
DDPM UNet of Ho et al., "Denoising Diffusion Probabilistic Models" (NeurIPS 2020).

The middle block is where the model is semi-parametric. Support images pass through the down path and the
block's first residual block *without gradients* (the reference detaches them), are pooled to ``pool x pool``
patches, and every query patch attends over all patches of the support images that carry the query's label,
with additive attention (``score = w . relu(W_q q + W_s s + b)``). The block's output is the attention-weighted
sum of support patches, upsampled and passed through a residual block: **no path carries the query's own
middle features past the attention**, so at the bottleneck the query sees only its label's support. Skip
connections at higher resolutions still carry the query's own noisy image, as in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the UNet; the defaults are the small CPU network for 28x28 images."""

    channels: int = 16  # channels at full resolution (reference CIFAR-10: 128)
    multipliers: tuple[int, ...] = (1, 2, 4)  # channels per level; each level but the last halves the size
    attention_resolutions: tuple[int, ...] = ()  # side lengths (pixels) whose blocks add self-attention (ref: 16)
    blocks: int = 1  # residual blocks per level on the way down; the way up has one more (reference: 2)
    dropout: float = 0.1  # in every residual block, as the reference
    groups: int = 8  # GroupNorm groups (reference: 32, which needs 32 | channels)
    pool: int = 4  # support and query are pooled to pool x pool patches in the middle block (reference: 4)
    relation_dim: int = 0  # hidden size of the additive attention; 0: the middle channels, as the reference
    head_dim: int = 0  # channels per self-attention head; 0: one head over all channels, as the reference

    def __post_init__(self) -> None:
        if not self.multipliers or min(self.multipliers) < 1 or self.channels < 1:
            raise ValueError("channels and every multiplier must be positive")
        for m in self.multipliers:
            if (self.channels * m) % self.groups:
                raise ValueError(f"GroupNorm needs groups={self.groups} to divide {self.channels * m} channels")
        if self.pool < 1 or self.blocks < 1:
            raise ValueError("pool and blocks must be at least 1")


@dataclass
class Support:
    """Pooled, detached middle features of support images: ``features`` (N, P, C) with P = pool**2, ``labels`` (N,)."""

    features: torch.Tensor
    labels: torch.Tensor


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer diffusion steps (Ho et al. 2020, after the Transformer's)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """The reference's residual block: the time embedding scales and the label embedding shifts the normalised
    features between the two convolutions."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.time_scale = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.label_shift = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor) -> torch.Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        h = self.time_scale(t_emb)[:, :, None, None] * h + self.label_shift(c_emb)[:, :, None, None]
        return self.conv2(self.dropout(F.silu(h))) + self.shortcut(x)


class SelfAttention(nn.Module):
    """Spatial self-attention with a residual connection (the DDPM UNet's, at the configured resolutions)."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = channels // head_dim if head_dim else 1
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(h).view(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        return x + self.out(a).transpose(1, 2).reshape(b, c, hgt, wid)


class Level(nn.Module):
    """A residual block, with self-attention after it at the configured resolutions."""

    def __init__(self, cin: int, cout: int, emb: int, attend: bool, cfg: UNetConfig):
        super().__init__()
        self.res = ResidualBlock(cin, cout, emb, cfg.dropout, cfg.groups)
        self.attn = SelfAttention(cout, cfg.head_dim, cfg.groups) if attend else None

    def forward(self, x, t_emb, c_emb):
        x = self.res(x, t_emb, c_emb)
        return self.attn(x) if self.attn is not None else x


class SupportMiddleBlock(nn.Module):
    """The semi-parametric middle block (reference ``SemiParametricMiddleBlock`` + ``PairwiseRelationSpatial``)."""

    CHUNK = 1 << 18  # elements of the (queries, P, support x P, hidden) tensor made at once: small enough for cache

    def __init__(self, channels: int, emb: int, cfg: UNetConfig):
        super().__init__()
        hidden = cfg.relation_dim or channels
        self.pool = cfg.pool
        self.res = ResidualBlock(channels, channels, emb, cfg.dropout, cfg.groups)
        self.to_q = nn.Linear(channels, hidden, bias=False)
        self.to_s = nn.Linear(channels, hidden, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.score = nn.Linear(hidden, 1)
        self.res_post = ResidualBlock(channels, channels, emb, cfg.dropout, cfg.groups)

    def pooled(self, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor) -> torch.Tensor:
        """(N, P, C) patches of the block's first residual block's output."""
        h = F.adaptive_avg_pool2d(self.res(x, t_emb, c_emb), self.pool)
        return h.flatten(2).transpose(1, 2)

    def relate(self, q: torch.Tensor, labels: torch.Tensor, support: Support) -> torch.Tensor:
        """Each query patch's additive attention over every patch of its label's support images; (B, P, C).
        A query whose label has no support reads nothing (zeros), as the reference does in training."""
        qt, st = self.to_q(q), self.to_s(support.features)
        out = torch.zeros_like(q)
        b, p, hidden = qt.shape
        for label in torch.unique(labels):
            qi = torch.nonzero(labels == label).squeeze(1)
            si = torch.nonzero(support.labels == label).squeeze(1)
            if len(si) == 0:
                continue
            s_t = st[si].reshape(1, 1, -1, hidden)  # all patches of the label's support images
            s_v = support.features[si].reshape(-1, q.shape[2])
            step = max(1, self.CHUNK // (p * s_t.shape[2] * hidden))
            parts = []
            for i in range(0, len(qi), step):
                h = F.relu(qt[qi[i:i + step]].unsqueeze(2) + s_t + self.bias)  # (b, P, S*P, hidden)
                weights = torch.softmax(self.score(h).squeeze(-1), dim=-1)
                parts.append(weights @ s_v)
            out = out.index_copy(0, qi, torch.cat(parts))
        return out

    def forward(self, x, t_emb, c_emb, labels, support: Support) -> torch.Tensor:
        q = self.pooled(x, t_emb, c_emb)
        fused = self.relate(q, labels, support)
        side = self.pool
        fused = fused.transpose(1, 2).reshape(len(x), -1, side, side)
        return self.res_post(F.interpolate(fused, size=x.shape[-2:], mode="nearest"), t_emb, c_emb)


class SupportUNet(nn.Module):
    """eps_theta(x_t, t, y, support): predicts the noise of ``x_t`` given its label and its label's support."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, cfg: UNetConfig):
        super().__init__()
        in_ch, side, _ = image_shape
        ch, emb = cfg.channels, 4 * cfg.channels
        self.num_classes, self.emb_dim = num_classes, emb
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_mlp = nn.Sequential(nn.Linear(num_classes, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.proj = nn.Conv2d(in_ch, ch, 3, padding=1)
        down, skips, cin = [], [ch], ch
        for level, mult in enumerate(cfg.multipliers):
            cout = ch * mult
            for _ in range(cfg.blocks):
                down.append(Level(cin, cout, emb, side in cfg.attention_resolutions, cfg))
                skips.append(cout)
                cin = cout
            if level < len(cfg.multipliers) - 1:
                down.append(nn.Conv2d(cout, cout, 3, stride=2, padding=1))
                skips.append(cout)
                side = (side + 1) // 2
        self.down = nn.ModuleList(down)
        self.middle = SupportMiddleBlock(cin, emb, cfg)
        up = []
        for level in reversed(range(len(cfg.multipliers))):
            cout = ch * cfg.multipliers[level]
            for _ in range(cfg.blocks + 1):
                up.append(Level(cin + skips.pop(), cout, emb, side in cfg.attention_resolutions, cfg))
                cin = cout
            if level > 0:
                up.append(nn.Conv2d(cout, cout, 3, padding=1))  # after a nearest-neighbour upsampling
                side *= 2
        self.up = nn.ModuleList(up)
        self.out_norm = nn.GroupNorm(cfg.groups, cin)
        self.out = nn.Conv2d(cin, in_ch, 3, padding=1)

    def embeddings(self, t: torch.Tensor, labels: torch.Tensor, drop: torch.Tensor):
        """Time and label embeddings; a dropped label (classifier-free guidance) embeds as the zero one-hot."""
        onehot = F.one_hot(labels, self.num_classes).float() * (~drop).float()[:, None]
        return self.time_mlp(timestep_embedding(t, self.emb_dim // 4)), self.label_mlp(onehot)

    @torch.no_grad()
    def support_features(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                         drop: torch.Tensor | None = None) -> Support:
        """Support images (noised to their own ``t``) through the down path and the middle block's first residual
        block, pooled; computed without gradients since the reference detaches them."""
        drop = torch.zeros_like(labels, dtype=torch.bool) if drop is None else drop
        t_emb, c_emb = self.embeddings(t, labels, drop)
        h = self.proj(x)
        for m in self.down:
            h = m(h) if isinstance(m, nn.Conv2d) else m(h, t_emb, c_emb)
        return Support(self.middle.pooled(h, t_emb, c_emb), labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, drop: torch.Tensor,
                support: Support, blind: torch.Tensor | None = None) -> torch.Tensor:
        """``drop`` marks rows whose label embedding is dropped; ``blind`` rows read no support (their middle
        block attends over nothing), for guidance that contrasts the support with no support."""
        t_emb, c_emb = self.embeddings(t, labels, drop)
        read = labels if blind is None else labels.masked_fill(blind, -1)  # no support image has label -1
        h = self.proj(x)
        skips = [h]
        for m in self.down:
            h = m(h) if isinstance(m, nn.Conv2d) else m(h, t_emb, c_emb)
            skips.append(h)
        h = self.middle(h, t_emb, c_emb, read, support)
        for m in self.up:
            if isinstance(m, nn.Conv2d):
                h = m(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
            else:
                h = m(torch.cat([h, skips.pop()], dim=1), t_emb, c_emb)
        return self.out(F.silu(self.out_norm(h)))
