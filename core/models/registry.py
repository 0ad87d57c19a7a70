"""Model kinds registered by name (timm-style), so the UI, the CLI and the tests iterate one list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from core.data.dataset import Dataset
from core.models.base import Classifier


@dataclass(frozen=True)
class ModelKind:
    """How to build, train and wrap one kind of model.

    build(dataset, config) -> untrained network
    fit(net, dataset, train_ids, config, train_config, progress, cancel, device) -> None (trains in place)
    wrap(net, dataset, train_ids, config, device) -> Classifier ready to predict
    default_train(dataset_name) -> TrainConfig, or None: the kind's own recipe, used instead of the
        dataset's shared (SGD, CNN) recipe when the caller does not choose one (see core.bundle)
    """

    name: str
    description: str
    config_cls: type
    build: Callable[[Dataset, Any], nn.Module]
    fit: Callable[..., None]
    wrap: Callable[..., Classifier]
    by_design: bool = False  # forgets by editing a memory, not weights
    default_train: Callable[[str], Any] | None = None  # transformers need AdamW + warm-up, not the CNN recipe
    reference_oracles: tuple[str, ...] = ()  # other kinds retrained on D_r to compare with (MUNKEY: the plain ViT)


_MODELS: dict[str, ModelKind] = {}


def register_model(kind: ModelKind) -> ModelKind:
    _MODELS[kind.name] = kind
    return kind


def get_model_kind(name: str) -> ModelKind:
    if name not in _MODELS:
        raise KeyError(f"unknown model kind {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_model_kinds() -> list[str]:
    return list(_MODELS)
