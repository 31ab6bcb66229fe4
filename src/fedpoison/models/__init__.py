"""Models in a registry, and the ParamSpec that maps a model to one flat vector."""

from fedpoison.models import zoo  # noqa: F401  (registration)
from fedpoison.models.paramspec import ParamSpec
from fedpoison.models.zoo import MODELS, build_model

__all__ = ["MODELS", "ParamSpec", "build_model"]
