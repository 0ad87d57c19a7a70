"""Unlearning methods; importing this package registers every method."""

from core.unlearn import munkey_delete, spm_delete  # noqa: F401  (registration)
from core.unlearn.registry import MethodSpec, UnlearnResult, get_method, list_methods, register_method

__all__ = ["MethodSpec", "UnlearnResult", "get_method", "list_methods", "register_method"]
