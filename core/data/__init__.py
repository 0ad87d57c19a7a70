"""Datasets (a registry of named sources plus the user's own files) and validated forget requests."""

from . import cifar, sources  # noqa: F401  (registers the named datasets)
from .dataset import DataError, Dataset, list_datasets, load_dataset, register_dataset, validate_arrays
from .requests import ForgetRequest, ForgetRequestError, parse_ids_text, request_classes, request_ids, request_random
from .sources import FASHION_MNIST_CLASSES, parse_idx, read_idx, stratified_split
from .user_files import load_image_folder, load_npz, register_user_dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DataError",
    "Dataset",
    "ForgetRequest",
    "ForgetRequestError",
    "list_datasets",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "parse_ids_text",
    "parse_idx",
    "read_idx",
    "register_dataset",
    "register_user_dataset",
    "request_classes",
    "request_ids",
    "request_random",
    "stratified_split",
    "validate_arrays",
]
