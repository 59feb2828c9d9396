"""Named max-pooling layers from real networks, shared by the benchmark and the kernel inspector."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import torch

from kernels import pool_output_size

LAYOUTS = ("contiguous", "channels_last")
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


@dataclass(frozen=True)
class PoolCase:
    """One pooling layer: an (N, C, *spatial) input and torch.nn.functional's pooling arguments."""

    title: str
    shape: tuple[int, ...]
    kernel_size: int
    stride: int | None = None  # None: the kernel size, as in torch.nn.functional
    padding: int = 0

    @property
    def dims(self) -> int:
        return len(self.shape) - 2

    @property
    def pool_kwargs(self) -> dict:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    @property
    def output_shape(self) -> tuple[int, ...]:
        stride = self.stride or self.kernel_size
        spatial = [pool_output_size(n, self.kernel_size, stride, self.padding)[0] for n in self.shape[2:]]
        return (*self.shape[:2], *spatial)

    @property
    def window(self) -> str:
        """'kernel 3, stride 2, padding 1', leaving out what is the default."""
        text = f"kernel {self.kernel_size}"
        if self.stride not in (None, self.kernel_size):
            text += f", stride {self.stride}"
        return text + (f", padding {self.padding}" if self.padding else "")

    def describe(self) -> str:
        return f"{self.dims}D {'x'.join(map(str, self.shape))}, {self.window}"

    def scaled(self, scale: float) -> PoolCase:
        """The same layer on about ``scale`` times the data: fewer images first, then fewer channels.

        The spatial sizes stay, so windows, padding and edges are those of the real layer.
        """
        if scale == 1:
            return self
        n, c, *spatial = self.shape
        planes = max(1, round(n * c * scale))
        n_kept = max(1, min(n, round(n * scale)))
        c_kept = max(1, min(c, round(planes / n_kept)))
        return dataclasses.replace(self, shape=(n_kept, c_kept, *spatial))


CASES = {
    "seed": PoolCase("the seed model's pooling layer", (32, 10, 222, 222), 2),
    "resnet_stem": PoolCase("ResNet-50 stem", (32, 64, 112, 112), 3, 2, 1),
    "vgg_block": PoolCase("a VGG block", (16, 128, 56, 56), 2),
    "large_batch": PoolCase("the ResNet stem at batch 256", (256, 64, 112, 112), 3, 2, 1),
    "video3d": PoolCase("a 3D video block", (8, 64, 16, 56, 56), 2),
    # A 1D CNN over sequences (audio frames, tokens): overlapping windows as in the ResNet stem.
    "seq1d": PoolCase("a 1D sequence block", (32, 256, 4096), 3, 2, 1),
}


def new_input(shape, dtype: torch.dtype, layout: str, device="cpu", *, empty: bool = False) -> torch.Tensor:
    """A random normal (or, with ``empty``, uninitialized) (N, C, *spatial) tensor in ``layout``.

    channels_last stores C innermost, also for 1D where torch has no memory_format for it; the
    tensor is created in place, without a copy, so huge empty inputs cost no memory.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    stored = (shape[0], *shape[2:], shape[1]) if layout == "channels_last" else tuple(shape)
    x = (torch.empty if empty else torch.randn)(stored, dtype=dtype, device=device)
    return x.movedim(-1, 1) if layout == "channels_last" else x


def parse_list(text: str, valid) -> list[str]:
    """A comma-separated command-line list, checked against ``valid`` (argparse ``type=``)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in valid]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(valid)}; got {text!r}")
    return items
