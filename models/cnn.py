"""The seed's small CNN (TinyVGG) with or without pooling, and its twin that downsamples by strided convs."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.common import ShapeTracker, check_count, image_hw, num_logits
from models.pooling import PoolConfig, make_global_pool, make_pool


class PlainCNN(nn.Sequential):
    """depth x (Conv2d + ReLU, downsampling), Flatten, Linear; subclasses choose how to downsample."""

    downsample: str  # "pool": a pooling layer after each conv; "stride": stride-2 convs

    def __init__(
        self,
        *,
        pool: PoolConfig,
        in_channels: int = 3,
        num_classes: int = 2,
        image_size: int | tuple[int, int] = 224,
        device: torch.device | str = "cpu",
        width: int = 10,  # filters per conv (the seed's Conv2D(10, 3))
        depth: int = 3,  # conv blocks
        kernel_size: int = 3,
    ) -> None:
        owner = type(self).__name__
        check_count(owner, "in_channels", in_channels)
        check_count(owner, "width", width)
        check_count(owner, "depth", depth)
        check_count(owner, "kernel_size", kernel_size)
        logits = num_logits(owner, num_classes)
        shape = ShapeTracker(owner, image_hw(owner, image_size))
        stride = 2 if self.downsample == "stride" else 1
        layers = OrderedDict()
        for i in range(1, depth + 1):
            layers[f"conv{i}"] = nn.Conv2d(in_channels if i == 1 else width, width, kernel_size, stride)
            shape.conv(f"conv{i}", kernel_size, stride)
            # The seed's Keras model without pooling has ReLU after its first conv only; reproduced
            # exactly so that the parameter counts and the seed's finding can be checked.
            if i == 1 or self.downsample == "stride" or pool.type != "none":
                layers[f"relu{i}"] = nn.ReLU()
            if self.downsample == "pool" and pool.type != "none":
                layers[f"pool{i}"] = make_pool(pool, device)
                shape.pool(f"pool{i}", pool)
        if self.downsample == "stride" and pool.type != "none":
            # Pooling's only place in a strided network is a global pool before the head (ResNet's way).
            layers["global_pool"] = make_global_pool(pool, shape.size, device)
            shape.size = (1, 1)
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(width * shape.size[0] * shape.size[1], logits)
        super().__init__(layers)


class TinyVGG(PlainCNN):
    """The seed's network: 3 x (Conv2d(10, 3), ReLU, pool), Flatten, Linear; pool 'none': its no-pool model."""

    downsample = "pool"


class StridedCNN(PlainCNN):
    """TinyVGG downsampling with stride-2 convs instead of pooling layers; pooling, if any, is global."""

    downsample = "stride"
