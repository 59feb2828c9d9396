"""A small ResNet: stem conv and pool, stages of basic blocks, global pooling, linear head."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.common import ShapeTracker, check_count, image_hw, num_logits
from models.pooling import PoolConfig, make_global_pool, make_pool


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers around a shortcut, as in ResNet-18 and -34."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (3x3 conv, BatchNorm, ReLU, pool), stages of basic blocks, global pool, Linear.

    Every stage after the first halves the feature map.

    Both pools come from the factory: the stem pool is the configured window; the global pool has the
    configured type over the whole feature map. With pool type 'none' the stem has no pool and the
    head flattens the last feature map.
    """

    def __init__(
        self,
        *,
        pool: PoolConfig,
        in_channels: int = 3,
        num_classes: int = 2,
        image_size: int | tuple[int, int] = 224,
        device: torch.device | str = "cpu",
        widths: tuple[int, ...] = (16, 32, 64),  # channels per stage; one stage per entry
        blocks_per_stage: int = 1,
        stem_stride: int = 1,  # 2 for large images: quarters the cost of everything after the stem
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_count(owner, "in_channels", in_channels)
        check_count(owner, "blocks_per_stage", blocks_per_stage)
        check_count(owner, "stem_stride", stem_stride)
        widths = tuple(widths)
        if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError(f"{owner}: widths must be a non-empty sequence of ints >= 1, got {widths!r}")
        logits = num_logits(owner, num_classes)
        shape = ShapeTracker(owner, image_hw(owner, image_size))

        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                bn=nn.BatchNorm2d(widths[0]),
                relu=nn.ReLU(),
            )
        )
        shape.conv("stem.conv", 3, stem_stride, 1)
        if pool.type != "none":
            self.stem.add_module("pool", make_pool(pool, device))
            shape.pool("stem.pool", pool)

        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                shape.conv(f"stages.{i}.{j}.conv1", 3, stride, 1)
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        if pool.type == "none":
            self.global_pool, features = nn.Identity(), channels * shape.size[0] * shape.size[1]
        else:
            self.global_pool, features = make_global_pool(pool, shape.size, device), channels
        self.fc = nn.Linear(features, logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.global_pool(self.stages(self.stem(x))), 1))
