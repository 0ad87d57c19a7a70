"""Model kinds; importing this package registers every kind."""

from core.models import munkey, parametric, spm, vit  # noqa: F401  (registration)
from core.models.registry import get_model_kind, list_model_kinds

__all__ = ["get_model_kind", "list_model_kinds"]
from core.models import gen_spm  # noqa: E402, F401  (registration, after the others: kinds keep their order)
