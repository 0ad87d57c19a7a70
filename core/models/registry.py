"""Model kinds, registered by decorating their builder (see :mod:`core.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from core.data.dataset import Dataset
from core.models.base import Classifier
from core.registry import Registry


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
    generative: bool = False  # makes images (the Generate page), not predictions: the classifier pages skip it


_MODELS: Registry[ModelKind] = Registry("model kind")


def register_model(name: str, *, config: type, description: str, fit: Callable[..., None],
                   wrap: Callable[..., Classifier], by_design: bool = False,
                   default_train: Callable[[str], Any] | None = None,
                   reference_oracles: tuple[str, ...] = (), generative: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated builder under ``name`` with its config, trainer and wrapper."""

    def wrap_builder(build: Callable[[Dataset, Any], nn.Module]) -> Callable[[Dataset, Any], nn.Module]:
        _MODELS.add(name, ModelKind(name, description, config, build, fit, wrap, by_design, default_train,
                                    tuple(reference_oracles), generative))
        return build

    return wrap_builder


def get_model_kind(name: str) -> ModelKind:
    return _MODELS.get(name)


def list_model_kinds() -> list[str]:
    return _MODELS.names()
