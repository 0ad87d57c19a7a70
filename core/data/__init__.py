"""Datasets (a registry of named sources plus the user's own files) and validated forget requests."""

from . import cifar, sources  # noqa: F401  (registers the named datasets)
from .dataset import DataError, Dataset, list_datasets, load_dataset, register_dataset, validate_arrays
from .id_lists import parse_ids_bytes, parse_ids_text, read_ids_file
from .requests import ForgetRequest, ForgetRequestError, request_classes, request_ids, request_random
from .sources import FASHION_MNIST_CLASSES, parse_idx, read_idx, stratified_split
from .user_files import UserData, load_image_folder, load_npz, load_user_data, register_user_dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "UserData",
    "DataError",
    "Dataset",
    "ForgetRequest",
    "ForgetRequestError",
    "list_datasets",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "load_user_data",
    "parse_ids_bytes",
    "parse_ids_text",
    "read_ids_file",
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
