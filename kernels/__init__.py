"""Triton kernels behind tritonpool's pooling layers."""

from kernels.max_pool import (
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    PoolArgumentError,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    pool_output_size,
)

__all__ = [
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "PoolArgumentError",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "pool_output_size",
]
