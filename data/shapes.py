"""GeneratedShapes: an offline image-classification dataset drawn on the fly from (seed, index).

The class is the *shape* of one object (disk, cross, ring, ...) placed anywhere in the image at
any scale and rotation, over a smooth random background with line-segment clutter and pixel
noise. Colours carry no class information and all shapes have the same area at a given scale,
so a model must detect a local pattern wherever it is: the translation invariance pooling is
meant to buy. Nothing is stored: every image is rendered from its index when asked for, with a
handful of vectorized tensor operations, so the dataset costs no memory at any size (train.py
keeps the rendered images for later epochs: data.cache_mib, data/cache.py). A DataLoader
asks for a whole batch at once (``__getitems__``), and the batch is rendered together, the same
images bit for bit: each operation then spans enough values for PyTorch to spread it over every
core (it splits element-wise work from 32,768 values on; one 64x64 image has 12,288 a channel).
On 2 cores a batch of 32 at 64x64 loads in about half the time; the work itself is unchanged.
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
# Values (channels x pixels) rendered in one pass at most: enough images together that each
# operation runs on every core (64x64: 42 images), few enough that the temporaries stay in cache
# (224x224: 3 images, each already spread over the cores; a whole batch of 32 at once there took
# twice as long as one by one).
RENDER_CHUNK_VALUES = 2**19


def _generator_seed(*parts: int) -> int:
    """SplitMix64 over the parts, so that neighbouring (seed, stream, index) give unrelated streams."""
    state = 0
    for part in parts:
        state = (state ^ (part & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        state = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 31
    return state


def _column(values: list[float]) -> Tensor:
    """Per-image scalars, computed in Python's float64 like the rest of the parameters, as a
    (B, 1, 1) float32 column: the same rounding a float32 tensor op applies to a Python scalar,
    so an image comes out bit for bit the same whatever batch it is rendered in."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def _box(u: Tensor, v: Tensor, half_u: list[float], half_v: list[float]) -> Tensor:
    """Signed distance (negative inside, in pixels) of an axis-aligned box in the (u, v) frame."""
    return torch.maximum(u.abs() - _column(half_u), v.abs() - _column(half_v))


def _shape_distance(shape: str, dx: Tensor, dy: Tensor, radius: list[float], angle: list[float]) -> Tensor:
    """Signed distance to a shape of area pi * radius**2 centred at the origin, rotated by angle.

    dx: (B, 1, W) and dy: (B, H, 1), pixel offsets from each image's centre; radius and angle:
    one value per image. Returns (B, H, W).
    """
    cos, sin = _column([math.cos(a) for a in angle]), _column([math.sin(a) for a in angle])
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    if shape == "disk":
        return torch.hypot(dx, dy) - _column(radius)
    if shape == "square":
        half = [0.886 * r for r in radius]  # half-side sqrt(pi) / 2
        return _box(u, v, half, half)
    if shape == "triangle":
        # An equilateral triangle is where all three edge normals' projections stay below the apothem.
        projections = []
        for k in range(3):
            normal = [a + k * 2 * math.pi / 3 for a in angle]
            cos_k, sin_k = _column([math.cos(a) for a in normal]), _column([math.sin(a) for a in normal])
            projections.append(cos_k * dx + sin_k * dy)
        return torch.stack(projections).amax(0) - _column([0.778 * r for r in radius])
    if shape == "cross":
        arm, half_width = [1.166 * r for r in radius], [0.408 * r for r in radius]  # arms 0.35 as wide as long
        return torch.minimum(_box(u, v, arm, half_width), _box(u, v, half_width, arm))
    if shape == "ring":
        outer, inner = [1.197 * r for r in radius], [0.658 * r for r in radius]  # inner radius 0.55 of the outer
        middle, half_width = [(o + i) / 2 for o, i in zip(outer, inner)], [(o - i) / 2 for o, i in zip(outer, inner)]
        return (torch.hypot(dx, dy) - _column(middle)).abs() - _column(half_width)
    assert shape == "frame", f"unknown shape {shape!r}"
    outer = [1.061 * r for r in radius]
    inner = [0.55 * o for o in outer]
    return torch.maximum(_box(u, v, outer, outer), -_box(u, v, inner, inner))


def _coverage(distance: Tensor) -> Tensor:
    """Anti-aliased coverage of each pixel from a signed distance in pixels."""
    return (0.5 - distance).clamp_(0, 1)


def _draw_lines(image: Tensor, x: Tensor, y: Tensor, corners: Tensor, thickness: Tensor, colours: Tensor) -> None:
    """Composite L segments per image onto image (B, 3, H, W) in place, one after the other; x (1, W)
    and y (H, 1) are the pixels' coordinates, corners (B, L, 4, 1, 1) the segments' ends, thickness
    (B, L, 1), colours (B, L, 3)."""
    ax, ay, bx, by = corners.unbind(2)  # (B, L, 1, 1) each
    ux, uy = bx - ax, by - ay
    px, py = x - ax, y - ay  # (B, L, 1, W) and (B, L, H, 1)
    along = ((px * ux + py * uy) / (ux * ux + uy * uy).clamp_(min=1e-6)).clamp_(0, 1)
    distance = torch.hypot(px - along * ux, py - along * uy) - (0.5 + thickness.unsqueeze(-1)) / 2
    for alpha, colour in zip(_coverage(distance).unbind(1), colours.unbind(1)):
        image += alpha.unsqueeze(1) * (colour.view(-1, 3, 1, 1) - image)


def _draw_object(image: Tensor, x: Tensor, y: Tensor, shape: str, cx: list[float], cy: list[float],
                 radius: list[float], angle: list[float], colour: Tensor) -> None:  # fmt: skip
    """Composite one shape per image onto image (B, 3, H, W) in place, centred at (cx, cy)."""
    alpha = _coverage(_shape_distance(shape, x - _column(cx), y - _column(cy), radius, angle)).unsqueeze(1)
    image += alpha * (colour.view(-1, 3, 1, 1) - image)


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
        (image,), (label,) = self.render([index])
        return image, label

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        """A batch at once (DataLoader calls this): the same images as one by one, rendered with
        a few tensor operations per batch instead of per image."""
        images, labels = self.render(indices)
        return list(zip(images, labels))

    def render(self, indices: list[int]) -> tuple[Tensor, list[int]]:
        """Images (B, C, H, W) and labels of the given indices, each image a function of (seed, stream, index) alone."""
        indices = [self._checked(i) for i in indices]
        labels = [index % self.num_classes for index in indices]  # balanced in any consecutive indices
        images = torch.empty(len(indices), self.channels, *self.image_size)
        chunk = max(1, RENDER_CHUNK_VALUES // (3 * self.image_size[0] * self.image_size[1]))
        for start in range(0, len(indices), chunk):
            part = slice(start, start + chunk)
            self._render(indices[part], labels[part], out=images[part])
        return images, labels

    def _checked(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"GeneratedShapes: index {index} out of range for {self.num_samples} samples")
        return index % self.num_samples

    def _render(self, indices: list[int], labels: list[int], out: Tensor) -> None:
        (height, width), x, y, count = self.image_size, self._x, self._y, len(indices)

        # Every random number an image uses comes from its own generator, drawn in a fixed order;
        # the rest is arithmetic on the whole batch.
        light, gradients = torch.empty(count), torch.empty(count, 3, 3, 1, 1)
        lines, objects = torch.empty(count, _CLUTTER_LINES, 8), torch.empty(count, 7)
        noise = torch.empty(count, 3, height, width)
        for row, index in enumerate(indices):
            g = torch.Generator().manual_seed(_generator_seed(self.seed, self.stream, index))
            torch.rand((), generator=g, out=light[row])
            torch.rand(3, 3, 1, 1, generator=g, out=gradients[row])
            torch.rand(_CLUTTER_LINES, 8, generator=g, out=lines[row])
            torch.rand(7, generator=g, out=objects[row])
            torch.rand(3, height, width, generator=g, out=noise[row])

        # Object and background keep apart in brightness (object in [0.65, 1] over background in
        # [0, 0.45], or the reverse), so the object never vanishes into it; which one is light is
        # random, and so is every hue. The background is a colour gradient.
        light_object = (light < 0.5).tolist()
        base, slope_x, slope_y = gradients.unbind(1)  # (B, 3, 1, 1) each
        gradient = 0.15 * (base + slope_x * (x / width) + slope_y * (y / height))  # (B, 3, H, W)
        image = gradient + _column([0.0 if is_light else 0.55 for is_light in light_object]).unsqueeze(1)

        # Clutter: thin line segments of any colour (light ones included), under the object.
        ends, thickness, colours = lines.split([4, 1, 3], dim=2)
        corners = (ends * torch.tensor([width, height, width, height])).view(count, -1, 4, 1, 1)
        _draw_lines(image, x, y, corners, thickness, colours)

        # The object: its parameters in Python floats (float64), as scalars of the arithmetic.
        radius, cx, cy, angle = [], [], [], []
        for scale, x_at, y_at, turn in objects[:, :4].tolist():
            r = (_OBJECT_SCALE[0] + scale * (_OBJECT_SCALE[1] - _OBJECT_SCALE[0])) * min(height, width)
            margin = _OBJECT_EXTENT * r
            radius.append(r)
            cx.append(margin + x_at * (width - 2 * margin))
            cy.append(margin + y_at * (height - 2 * margin))
            angle.append(turn * 2 * math.pi)
        lightness = _column([0.65 if is_light else 0.0 for is_light in light_object]).view(-1, 1)
        object_colours = objects[:, 4:] * 0.35 + lightness
        for label in sorted(set(labels)):  # the images of one shape together
            rows = [row for row, other in enumerate(labels) if other == label]
            part = image if len(rows) == count else image[rows]  # a copy: drawn on, then put back
            _draw_object(
                part, x, y, SHAPES[label], [cx[row] for row in rows], [cy[row] for row in rows],
                [radius[row] for row in rows], [angle[row] for row in rows], object_colours[rows],
            )  # fmt: skip
            if part is not image:
                image[rows] = part

        # Uniform noise: a third of the cost of normal noise at 224x224.
        image += _NOISE_AMPLITUDE * (2 * noise - 1)
        if self.channels == 1:
            image = (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]).unsqueeze(1)
        torch.div(image.clamp_(0, 1).sub_(MEAN), STD, out=out)
