"""Unlearning methods; importing this package registers every method."""

from core.unlearn import damp, ft, ga, l1_sparse, munkey_delete, neggrad_plus, rl, salun, scrub, spm_delete, ssd  # noqa: F401
from core.unlearn.registry import MethodSpec, get_method, list_methods, register_method
from core.unlearn.result import UnlearnResult

__all__ = ["MethodSpec", "UnlearnResult", "get_method", "list_methods", "register_method"]
