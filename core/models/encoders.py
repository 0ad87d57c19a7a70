"""Image encoders: the shared feature extractors under every classifier in the project."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """A small CNN that trains in minutes on two CPU cores."""

    widths: tuple[int, ...] = (16, 32, 64)  # three stages: ~91.7% (parametric) on Fashion-MNIST in 2 CPU minutes
    pool_size: int = 2  # 2x2 grid before the projection: +1 point over global pooling on Fashion-MNIST
    feature_dim: int = 128  # d in METHODS.md: the embedding size that prototypes and keys live in
    arch: str = "small-cnn"  # "small-cnn" for CPU; "resnet18" is the paper-scale CIFAR encoder (GPU)


class SmallCNN(nn.Module):
    """conv-BN-ReLU stages, each halving the resolution, then global average pooling and a linear map."""

    def __init__(self, in_channels: int, config: EncoderConfig):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(config.widths):
            layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if i < len(config.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(config.pool_size)
        self.project = nn.Linear(prev * config.pool_size**2, config.feature_dim)
        self.out_dim = config.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(x)).flatten(1)
        return torch.relu(self.project(h))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 (He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016) in
    its CIFAR form, as in the SPM authors' ``nets/resnet.py``: a 3x3 stride-1 stem and no max-pool (32x32
    inputs), four stages of two BasicBlocks (64, 128, 256, 512 channels; stages 2-4 halve the resolution),
    global average pooling to 512 features.

    ``feature_dim`` 512 keeps those pooled features as they are (the authors' encoder); any other size
    adds a linear map + ReLU to it, as SmallCNN ends. ``widths`` and ``pool_size`` are SmallCNN's, unused here.
    """

    def __init__(self, in_channels: int, config: EncoderConfig):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
            blocks.append(_BasicBlock(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = (nn.Identity() if config.feature_dim == cin
                        else nn.Sequential(nn.Linear(cin, config.feature_dim), nn.ReLU()))
        self.out_dim = config.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(self.blocks(self.stem(x))).flatten(1))


def build_encoder(in_channels: int, config: EncoderConfig) -> nn.Module:
    """The encoder named by ``config.arch``."""
    if config.arch == "small-cnn":
        return SmallCNN(in_channels, config)
    if config.arch == "resnet18":
        return CifarResNet18(in_channels, config)
    raise ValueError(f"unknown encoder architecture {config.arch!r}; known: small-cnn, resnet18")
