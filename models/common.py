"""What every architecture shares: argument checks, construction-time shape tracking, the logit count."""

from __future__ import annotations

import kernels
from models.pooling import PoolConfig


def check_count(owner: str, name: str, value, minimum: int = 1) -> None:
    """Reject anything but an int >= minimum, naming the argument and the valid range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")


def image_hw(owner: str, image_size) -> tuple[int, int]:
    """image_size as (height, width), from an int or a pair of ints >= 1."""
    hw = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    if len(hw) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in hw):
        raise ValueError(
            f"{owner}: image_size must be an int >= 1 or a pair (height, width) of them, got {image_size!r}"
        )
    return hw


def num_logits(owner: str, num_classes: int) -> int:
    """One logit for two classes (binary cross-entropy, as the seed), else one per class (cross-entropy)."""
    check_count(owner, "num_classes", num_classes, 2)
    return 1 if num_classes == 2 else num_classes


class ShapeTracker:
    """Follows a feature map's spatial size through a model under construction.

    So that an image too small for the layers fails at construction, naming the layer and the sizes,
    instead of deep inside a forward pass.
    """

    def __init__(self, owner: str, image_size: tuple[int, int]) -> None:
        self.owner = owner
        self.image_size = self.size = tuple(image_size)

    def conv(self, layer: str, kernel_size: int, stride: int = 1, padding: int = 0) -> tuple[int, int]:
        # A convolution's output size is a floor-mode pooling's with the same window.
        size = tuple(kernels.pool_output_size(n, kernel_size, stride, padding)[0] for n in self.size)
        return self._step(layer, size)

    def pool(self, layer: str, cfg: PoolConfig) -> tuple[int, int]:
        return self._step(layer, cfg.output_size(self.size))

    def _step(self, layer: str, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1:
            raise ValueError(
                f"{self.owner}: layer {layer} would turn its {self.size[0]}x{self.size[1]} input into "
                f"{size[0]}x{size[1]} (image_size {self.image_size[0]}x{self.image_size[1]}); use a larger "
                "image_size or fewer or smaller downsampling layers"
            )
        self.size = size
        return size
