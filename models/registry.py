"""The architecture registry and what callers need around it: build by name, count, summarize."""

from __future__ import annotations

import inspect

import torch
import torchinfo
from torch import nn

from models.cnn import StridedCNN, TinyVGG
from models.pooling import PoolConfig
from models.resnet import ResNet

MODELS: dict[str, type[nn.Module]] = {
    "tinyvgg": TinyVGG,  # the seed's network; pool type "none" is the seed's no-pool model
    "strided": StridedCNN,  # downsampling by stride-2 convs instead of pooling layers
    "resnet": ResNet,  # stem pool and global pool from the factory
}
COMMON_ARGUMENTS = ("pool", "in_channels", "num_classes", "image_size", "device")


def architecture_options(name: str) -> dict[str, object]:
    """The options (and defaults) an architecture takes beyond the common arguments."""
    parameters = inspect.signature(MODELS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in COMMON_ARGUMENTS}


def build_model(
    name: str,
    *,
    pool: PoolConfig = PoolConfig(),
    in_channels: int = 3,
    num_classes: int = 2,
    image_size: int | tuple[int, int] = 224,
    device: torch.device | str = "cpu",
    **arch_options,
) -> nn.Module:
    """The registered architecture `name` with every pooling layer from `pool`, on `device`.

    Pooling's backend is resolved for `device` here, at construction (pool_backend(model) reports it):
    moving the model to another device later keeps the implementation it was built with.
    """
    if name not in MODELS:
        raise ValueError(f"model name must be one of {sorted(MODELS)}, got {name!r}")
    if not isinstance(pool, PoolConfig):
        raise TypeError(f"build_model: pool must be a PoolConfig, got {type(pool).__name__}")
    valid = architecture_options(name)
    unknown = sorted(set(arch_options) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid options (defaults): {valid}")
    model = MODELS[name](
        pool=pool, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
        device=device, **arch_options,
    )  # fmt: skip
    return model.to(device)


def count_parameters(model: nn.Module) -> int:
    """All parameters, as Keras's 'Total params' (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def model_summary(model: nn.Module, input_size: tuple[int, int, int], depth: int = 3) -> str:
    """A Keras-like table (layer, output shape, params, totals) for one (C, H, W) input, by torchinfo."""
    assert len(input_size) == 3, f"model_summary: input_size must be (C, H, W), got {input_size!r}"
    device = next(model.parameters()).device
    stats = torchinfo.summary(
        model,
        input_size=(1, *input_size),
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
        depth=depth,
        device=device,
        mode="eval",  # no BatchNorm statistics update from the dummy input
        verbose=0,
    )
    return str(stats)
