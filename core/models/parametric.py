"""The ordinary network that post-hoc methods edit: encoder + linear head, trained with cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.dataset import Dataset
from core.models.base import CancelToken, Classifier, Progress, batched, no_progress, to_device
from core.models.encoders import EncoderConfig, build_encoder
from core.models.registry import register_model
from core.models.training import TrainConfig, train_loop


@dataclass(frozen=True)
class ParametricConfig:
    """The parametric baseline: same encoder as SPM, plus a linear classification head."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # identical to SPM's for a fair comparison


class ParametricNet(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ParametricClassifier(Classifier):
    """softmax(head(encoder(x))); unlearning edits these weights."""

    kind = "parametric"

    def __init__(self, net: ParametricNet, num_classes: int, device: torch.device):
        self.net = net.eval()
        self.num_classes = num_classes
        self.device = device

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return batched(lambda t: torch.softmax(self.net(t), 1), x, self.device)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return batched(self.net, x, self.device)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return batched(self.net.encoder, x, self.device)

    def networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}



def fit_parametric(net: ParametricNet, dataset: Dataset, train_ids: np.ndarray, config: ParametricConfig,
                   train_config: TrainConfig, progress: Progress = no_progress,
                   cancel: CancelToken | None = None, device: torch.device | None = None) -> dict:
    """Cross-entropy training on ``train_ids``."""
    device = device or torch.device("cpu")
    net.to(device)
    labels = torch.as_tensor(dataset.y_train)

    def step_loss(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x = to_device(dataset.x_train[batch], device)
        return F.cross_entropy(net(x), labels[batch].to(device))

    return train_loop(net, train_ids, train_config, step_loss, progress, cancel, label="parametric")


def wrap_parametric(net: ParametricNet, dataset: Dataset, train_ids: np.ndarray, config: ParametricConfig,
                    device: torch.device | None = None) -> ParametricClassifier:
    device = device or torch.device("cpu")
    return ParametricClassifier(net.to(device), dataset.num_classes, device)


@register_model("parametric", config=ParametricConfig, fit=fit_parametric, wrap=wrap_parametric,
                description="CNN encoder + linear head (the network post-hoc methods edit)")
def build_parametric(dataset: Dataset, config: ParametricConfig) -> ParametricNet:
    encoder = build_encoder(dataset.image_shape[0], config.encoder)
    return ParametricNet(encoder, dataset.num_classes).to(memory_format=torch.channels_last)
