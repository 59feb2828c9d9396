"""CNNs whose pooling layers run on tritonpool's kernel, built by name from plain typed arguments."""

from models.pooling import PoolConfig, SamePool2d, make_global_pool, make_pool, pool_backend, resolve_backend
from models.registry import MODELS, architecture_options, build_model, count_parameters, model_summary

__all__ = [
    "MODELS",
    "PoolConfig",
    "SamePool2d",
    "architecture_options",
    "build_model",
    "count_parameters",
    "make_global_pool",
    "make_pool",
    "model_summary",
    "pool_backend",
    "resolve_backend",
]
