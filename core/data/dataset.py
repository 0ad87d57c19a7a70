"""The in-memory dataset every other part of the project reads, and the registry of named sources."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.errors import InputError
from core.registry import Registry


class DataError(InputError):
    """A dataset could not be found or is malformed; the message says what to do."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as float32 NCHW in [0, 1], integer labels, and class names.

    The id of a training sample is its row in ``x_train``: stable for a given source, so forget
    requests, runs and exports can name samples by id.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    _fingerprint: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        validate_arrays(self.x_train, self.y_train, len(self.class_names), "training")
        validate_arrays(self.x_test, self.y_test, len(self.class_names), "test")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"training images are {self.x_train.shape[1:]} but test images are {self.x_test.shape[1:]}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def train_ids(self) -> np.ndarray:
        return np.arange(self.num_train)

    def fingerprint(self) -> str:
        """Content hash of images and labels: runs and models are keyed by it."""
        if not self._fingerprint:
            h = hashlib.sha256()
            for arr in (self.x_train, self.y_train, self.x_test, self.y_test):
                h.update(str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
            h.update("|".join(self.class_names).encode())
            self._fingerprint.append(h.hexdigest()[:16])
        return self._fingerprint[0]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y_train, minlength=self.num_classes)


def validate_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, split: str) -> None:
    """Reject arrays that the models cannot train on, with a message a user can act on."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise DataError(f"{split} images must be a float32 array of shape (N, C, H, W); got "
                        f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
    if x.shape[1] not in (1, 3):
        raise DataError(f"{split} images must have 1 or 3 channels; got {x.shape[1]}")
    if min(x.shape[2:]) < 8:
        raise DataError(f"{split} images must be at least 8x8 pixels; got {x.shape[2]}x{x.shape[3]}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{split} labels must be one integer per image: {len(x)} images, labels of shape {y.shape}"
        )
    if len(y) == 0:
        raise DataError(f"the {split} split is empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{split} labels must be integers; got {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{split} labels must lie in 0..{num_classes - 1}; found {y.min()}..{y.max()}")
    if not np.isfinite(x).all():
        raise DataError(f"{split} images contain NaN or infinite values")


DatasetLoader = Callable[[], Dataset]


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset: its loader, a one-line description, and its config (None: nothing to set)."""

    name: str
    description: str
    load: DatasetLoader
    config_cls: type | None = None


_DATASETS: Registry[DatasetSource] = Registry("dataset", error=DataError)


def register_dataset(name: str, description: str, config: type | None = None,
                     replace: bool = False) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: make a loader available by name to the UI, the CLI and the tests."""

    def wrap(fn: DatasetLoader) -> DatasetLoader:
        _DATASETS.add(name, DatasetSource(name, description, fn, config), replace=replace)
        return fn

    return wrap


def list_datasets() -> dict[str, str]:
    """Registered dataset names with a one-line description each."""
    return {name: source.description for name, source in _DATASETS}


_LOADED: dict[str, Dataset] = {}


def load_dataset(name: str) -> Dataset:
    """Load a registered dataset (memoised per process; datasets are never mutated)."""
    source = _DATASETS.get(name)
    if name not in _LOADED:
        _LOADED[name] = source.load()
    return _LOADED[name]
