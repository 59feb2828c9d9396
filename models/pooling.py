"""The one pooling factory: every pooling layer of every model is built here from a PoolConfig."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import kernels

POOL_TYPES = ("max", "avg", "none")
BACKENDS = ("auto", "triton", "torch")
PADDING_STRINGS = ("valid", "same")


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_pair(field: str, value, minimum: int) -> None:
    """Accept an int >= minimum or a pair of them, as PyTorch's pooling does; else name the field."""
    values = value if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(_is_count(v, minimum) for v in values):
        raise ValueError(
            f"PoolConfig.{field} must be an int >= {minimum} or a pair (height, width) of them, got {value!r}"
        )


@dataclass(frozen=True)
class PoolConfig:
    """How every pooling layer of a model is built: the one switch of the pooling study."""

    type: str = "max"  # "max", "avg" (always PyTorch's, for comparison) or "none" (no pooling layer)
    size: int | tuple[int, int] = 2  # window, Keras's pool_size / PyTorch's kernel_size
    stride: int | tuple[int, int] | None = None  # None: the window size, as Keras and PyTorch
    padding: int | tuple[int, int] | str = 0  # PyTorch's int (<= size // 2), or Keras's "valid"/"same"
    dilation: int | tuple[int, int] = 1  # max only: PyTorch's AvgPool2d has no dilation
    ceil_mode: bool = False  # PyTorch's rounding of the output size; not with "same"
    backend: str = "auto"  # max pooling by "triton" (our kernel), "torch", or "auto" (see resolve_backend)

    def __post_init__(self) -> None:
        # Hydra hands sequences over as lists; tuples keep the config hashable and printable as given.
        for field in ("size", "stride", "padding", "dilation"):
            if isinstance(getattr(self, field), list):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.type not in POOL_TYPES:
            raise ValueError(f"PoolConfig.type must be one of {POOL_TYPES}, got {self.type!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"PoolConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        _check_pair("size", self.size, 1)
        if self.stride is not None:
            _check_pair("stride", self.stride, 1)
        _check_pair("dilation", self.dilation, 1)
        if self.type == "avg" and _pair(self.dilation) != (1, 1):
            raise ValueError(
                f"PoolConfig.dilation must be 1 for type='avg' (PyTorch's AvgPool2d has no dilation), "
                f"got {self.dilation!r}"
            )
        if not isinstance(self.ceil_mode, bool):
            raise ValueError(f"PoolConfig.ceil_mode must be True or False, got {self.ceil_mode!r}")
        if isinstance(self.padding, str):
            if self.padding not in PADDING_STRINGS:
                raise ValueError(
                    f"PoolConfig.padding must be an int, a pair of ints, or one of {PADDING_STRINGS}, "
                    f"got {self.padding!r}"
                )
            if self.padding == "same" and self.ceil_mode:
                raise ValueError(
                    "PoolConfig.ceil_mode must be False with padding='same', which fixes the output "
                    "size to ceil(input / stride)"
                )
        else:
            _check_pair("padding", self.padding, 0)
            limit = tuple(k // 2 for k in _pair(self.size))
            if any(p > m for p, m in zip(_pair(self.padding), limit)):
                raise ValueError(
                    f"PoolConfig.padding must be between 0 and size // 2 = {limit} (PyTorch's limit), "
                    f"got padding={self.padding!r} for size={self.size!r}"
                )

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size after this pooling layer (the same for type 'none'); may be < 1: callers reject it."""
        if self.type == "none":
            return tuple(size)
        stride = _pair(self.size if self.stride is None else self.stride)
        pads = (self.padding,) * 2 if isinstance(self.padding, str) else _pair(self.padding)
        return tuple(
            kernels.pool_output_size(n, k, s, p, d, self.ceil_mode)[0]
            for n, k, s, p, d in zip(size, _pair(self.size), stride, pads, _pair(self.dilation))
        )


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The max-pooling implementation a backend setting means on a device: 'triton' or 'torch'.

    'auto' is Triton on CUDA and PyTorch's native pooling elsewhere: on CPU our kernel runs through
    Triton's interpreter, a correctness tool about 10-20x slower than PyTorch's CPU pooling
    (benchmarks/bench_pool.py), which makes a CPU training step several times slower.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device_type = torch.device(device).type
    if backend == "auto":
        return "triton" if device_type == "cuda" else "torch"
    if backend == "triton" and device_type not in ("cuda", "cpu"):
        raise ValueError(
            f"backend='triton' runs on CUDA (compiled) or CPU (interpreted), not on {device_type!r}; "
            "use backend='torch' or 'auto'"
        )
    return backend


class SamePool2d(nn.Module):
    """Keras's padding='same' for PyTorch's native max and average pooling, which lack it.

    Pads explicitly (the smaller half before, as TensorFlow), then pools without padding. The padding
    never wins a max (-inf) and never counts in an average: Keras averages the real pixels only.
    """

    def __init__(self, type: str, kernel_size, stride=None, dilation=1) -> None:
        super().__init__()
        assert type in ("max", "avg"), f"SamePool2d: type must be 'max' or 'avg', got {type!r}"
        self.type = type
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(kernel_size if stride is None else stride)
        self.dilation = _pair(dilation)
        assert type == "max" or self.dilation == (1, 1), "SamePool2d: average pooling has no dilation"

    def _pads(self, spatial) -> list[int]:
        """F.pad's (left, right, top, bottom) for an input of spatial size (H, W)."""
        pads = []
        for n, k, s, d in reversed(list(zip(spatial, self.kernel_size, self.stride, self.dilation))):
            out, before = kernels.pool_output_size(n, k, s, "same", d)
            pads += [before, max((out - 1) * s + d * (k - 1) + 1 - n - before, 0)]
        return pads

    def forward(self, input: Tensor) -> Tensor:
        pads = self._pads(input.shape[-2:])
        if self.type == "max":
            padded = F.pad(input, pads, value=-math.inf)
            return F.max_pool2d(padded, self.kernel_size, self.stride, 0, self.dilation)
        sums = F.avg_pool2d(F.pad(input, pads), self.kernel_size, self.stride, divisor_override=1)
        ones = input.new_ones((1,) * (input.dim() - 2) + tuple(input.shape[-2:]))
        counts = F.avg_pool2d(F.pad(ones, pads), self.kernel_size, self.stride, divisor_override=1)
        return sums / counts

    def extra_repr(self) -> str:
        return (
            f"{self.type}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding=same, dilation={self.dilation}"
        )


def make_pool(cfg: PoolConfig, device: torch.device | str) -> nn.Module | None:
    """The pooling layer cfg describes, for a model that will run on device; None for type 'none'."""
    if cfg.type == "none":
        return None
    padding = 0 if cfg.padding == "valid" else cfg.padding
    if cfg.type == "max" and resolve_backend(cfg.backend, device) == "triton":
        return kernels.MaxPool2d(cfg.size, cfg.stride, padding, cfg.dilation, ceil_mode=cfg.ceil_mode)
    if padding == "same":
        return SamePool2d(cfg.type, cfg.size, cfg.stride, cfg.dilation)
    if cfg.type == "max":
        return nn.MaxPool2d(cfg.size, cfg.stride, padding, cfg.dilation, ceil_mode=cfg.ceil_mode)
    return nn.AvgPool2d(cfg.size, cfg.stride, padding, ceil_mode=cfg.ceil_mode)


def make_global_pool(
    cfg: PoolConfig, feature_size: tuple[int, int], device: torch.device | str
) -> nn.Module | None:
    """A pooling layer of cfg's type and backend whose one window covers a whole feature map.

    Only type and backend matter here: window, stride and padding are the feature map's. None for
    type 'none', where the model flattens the feature map instead.
    """
    whole = replace(cfg, size=tuple(feature_size), stride=None, padding=0, dilation=1, ceil_mode=False)
    return make_pool(whole, device)


def pool_backend(model: nn.Module) -> str:
    """Which implementation runs a model's pooling layers: 'triton', 'torch', or 'none' without any."""
    found = set()
    for module in model.modules():
        if isinstance(module, kernels.MaxPool2d):  # before nn.MaxPool2d: it subclasses it
            found.add("triton")
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, SamePool2d)):
            found.add("torch")
    assert len(found) <= 1, f"pool_backend: a model mixes pooling backends {sorted(found)}"
    return found.pop() if found else "none"
