"""GeneratedShapes: an offline image-classification dataset drawn on the fly from (seed, index).

The class is the *shape* of one object (disk, cross, ring, ...) placed anywhere in the image at
any scale and rotation, over a smooth random background with line-segment clutter and pixel
noise. Colours carry no class information and all shapes have the same area at a given scale,
so a model must detect a local pattern wherever it is: the translation invariance pooling is
meant to buy. Nothing is stored: every image is rendered from its index when asked for, with a
handful of vectorized tensor operations, so the dataset costs no memory at any size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

# The first num_classes shapes are the classes. Two classes contrast a disk with a cross; a
# disk against a square is left to more classes, as tinyvgg cannot tell them apart at 64x64.
SHAPES = ("disk", "cross", "ring", "square", "triangle", "frame")
MIN_IMAGE_SIZE = 16  # below this a shape's corners are a pixel or two: the classes blur together

_MASK64 = (1 << 64) - 1
_OBJECT_SCALE = (0.09, 0.2)  # equal-area radius of the object, as a fraction of the shorter side
_OBJECT_EXTENT = 1.6  # every shape fits in a circle of this many equal-area radii: keeps it inside
_CLUTTER_LINES = 4
_NOISE_AMPLITUDE = 0.07
# Images are standardized with about their own statistics: centred inputs take tinyvgg off the
# loss plateau that uncentred [0, 1] pixels hold it on for several epochs.
MEAN, STD = 0.5, 0.3


def _generator_seed(*parts: int) -> int:
    """SplitMix64 over the parts, so that neighbouring (seed, stream, index) give unrelated streams."""
    state = 0
    for part in parts:
        state = (state ^ (part & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        state = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 31
    return state


def _box(u: Tensor, v: Tensor, half_u: float, half_v: float) -> Tensor:
    """Signed distance (negative inside, in pixels) of an axis-aligned box in the (u, v) frame."""
    return torch.maximum(u.abs() - half_u, v.abs() - half_v)


def _shape_distance(shape: str, dx: Tensor, dy: Tensor, radius: float, angle: float) -> Tensor:
    """Signed distance to a shape of area pi * radius**2 centred at the origin, rotated by angle."""
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    if shape == "disk":
        return torch.hypot(dx, dy) - radius
    if shape == "square":
        return _box(u, v, 0.886 * radius, 0.886 * radius)  # half-side sqrt(pi) / 2
    if shape == "triangle":
        # An equilateral triangle is where all three edge normals' projections stay below the apothem.
        edge_normals = [angle + k * 2 * math.pi / 3 for k in range(3)]
        return torch.stack([math.cos(a) * dx + math.sin(a) * dy for a in edge_normals]).amax(0) - 0.778 * radius
    if shape == "cross":
        arm, half_width = 1.166 * radius, 0.408 * radius  # arms 0.35 as wide as long
        return torch.minimum(_box(u, v, arm, half_width), _box(u, v, half_width, arm))
    if shape == "ring":
        outer, inner = 1.197 * radius, 0.658 * radius  # inner radius 0.55 of the outer
        return (torch.hypot(dx, dy) - (outer + inner) / 2).abs() - (outer - inner) / 2
    assert shape == "frame", f"unknown shape {shape!r}"
    outer = 1.061 * radius
    return torch.maximum(_box(u, v, outer, outer), -_box(u, v, 0.55 * outer, 0.55 * outer))


def _coverage(distance: Tensor) -> Tensor:
    """Anti-aliased coverage of each pixel from a signed distance in pixels."""
    return (0.5 - distance).clamp_(0, 1)


class GeneratedShapes(Dataset):
    """num_samples images of shapes, each rendered deterministically from (seed, stream, index) on access."""

    def __init__(
        self,
        num_samples: int,
        *,
        image_size: int | tuple[int, int] = 64,
        num_classes: int = 2,
        channels: int = 3,
        seed: int = 0,
        stream: int = 0,  # independent sets under one seed: build_datasets uses 0 for train, 1 for val
    ) -> None:
        hw = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        if len(hw) != 2 or not all(isinstance(n, int) and n >= MIN_IMAGE_SIZE for n in hw):
            raise ValueError(
                f"GeneratedShapes: image_size must be an int >= {MIN_IMAGE_SIZE} or a pair of them, "
                f"got {image_size!r}"
            )
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"GeneratedShapes: num_samples must be an int >= 1, got {num_samples!r}")
        if not isinstance(num_classes, int) or not 2 <= num_classes <= len(SHAPES):
            raise ValueError(
                f"GeneratedShapes: num_classes must be an int in [2, {len(SHAPES)}] (shapes {SHAPES}), "
                f"got {num_classes!r}"
            )
        if channels not in (1, 3):
            raise ValueError(f"GeneratedShapes: channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.num_samples, self.image_size, self.num_classes = num_samples, hw, num_classes
        self.channels, self.seed, self.stream = channels, seed, stream
        self.classes = SHAPES[:num_classes]
        # Pixel-centre coordinates as a column and a row, broadcast against each other: the only
        # tensors kept, O(H + W) whatever num_samples is.
        self._y = torch.arange(hw[0], dtype=torch.float32).view(-1, 1)
        self._x = torch.arange(hw[1], dtype=torch.float32).view(1, -1)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"GeneratedShapes: index {index} out of range for {self.num_samples} samples")
        index %= self.num_samples
        label = index % self.num_classes  # balanced classes, in any subset of consecutive indices
        g = torch.Generator().manual_seed(_generator_seed(self.seed, self.stream, index))
        (height, width), x, y = self.image_size, self._x, self._y

        # Object and background keep apart in brightness (object in [0.65, 1] over background in
        # [0, 0.45], or the reverse), so the object never vanishes into it; which one is light is
        # random, and so is every hue. The background is a colour gradient.
        light_object = bool(torch.rand((), generator=g) < 0.5)
        base, slope_x, slope_y = torch.rand(3, 3, 1, 1, generator=g).unbind(0)
        gradient = 0.15 * (base + slope_x * (x / width) + slope_y * (y / height))  # (3, H, W)
        image = gradient + (0.0 if light_object else 0.55)

        # Clutter: thin line segments of any colour (light ones included), under the object.
        ends, thickness, colours = torch.rand(_CLUTTER_LINES, 8, generator=g).split([4, 1, 3], dim=1)
        ax, ay, bx, by = (ends * torch.tensor([width, height, width, height])).view(-1, 4, 1, 1).unbind(1)
        ux, uy = bx - ax, by - ay
        px, py = x - ax, y - ay  # (lines, 1, W) and (lines, H, 1)
        along = ((px * ux + py * uy) / (ux * ux + uy * uy).clamp_(min=1e-6)).clamp_(0, 1)
        distance = torch.hypot(px - along * ux, py - along * uy) - (0.5 + thickness.view(-1, 1, 1)) / 2
        for alpha, colour in zip(_coverage(distance), colours):
            image += alpha * (colour.view(3, 1, 1) - image)

        scale, cx, cy, angle, *colour = torch.rand(7, generator=g).tolist()
        radius = (_OBJECT_SCALE[0] + scale * (_OBJECT_SCALE[1] - _OBJECT_SCALE[0])) * min(height, width)
        margin = _OBJECT_EXTENT * radius
        cx, cy = margin + cx * (width - 2 * margin), margin + cy * (height - 2 * margin)
        alpha = _coverage(_shape_distance(SHAPES[label], x - cx, y - cy, radius, angle * 2 * math.pi))
        object_colour = torch.tensor(colour) * 0.35 + (0.65 if light_object else 0.0)
        image += alpha * (object_colour.view(3, 1, 1) - image)

        # Uniform noise: a third of the cost of normal noise at 224x224.
        image += _NOISE_AMPLITUDE * (2 * torch.rand(image.shape, generator=g) - 1)
        if self.channels == 1:
            image = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
        return (image.clamp_(0, 1) - MEAN) / STD, label
