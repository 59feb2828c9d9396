"""The Triton max pooling against torch.nn.functional: values, indices, gradients, layouts, errors."""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import triton.language as tl

import kernels
from kernels import max_pool as mp

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OURS = {1: kernels.max_pool1d, 2: kernels.max_pool2d, 3: kernels.max_pool3d}
TORCH = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
# Odd sizes so that no dimension divides evenly by the tile or the stride.
SHAPES = {1: (2, 3, 13), 2: (2, 3, 9, 11), 3: (2, 3, 5, 7, 6)}
# (kwargs, windows overlap)
CONFIGS = {
    "k2": (dict(kernel_size=2), False),
    "k3s2p1": (dict(kernel_size=3, stride=2, padding=1), True),
    "k3s1p1d2_ceil": (dict(kernel_size=3, stride=1, padding=1, dilation=2, ceil_mode=True), True),
    "k2s3_ceil": (dict(kernel_size=2, stride=3, ceil_mode=True), False),
    "mixed": (None, True),  # per-dimension kernel/stride/padding, see _kwargs
}


def _kwargs(name: str, dims: int) -> dict:
    kwargs, _ = CONFIGS[name]
    if kwargs is not None:
        return kwargs
    return dict(
        kernel_size=(3, 2, 4)[-dims:],
        stride=(1, 2, 3)[-dims:],
        padding=(1, 0, 2)[-dims:],
        dilation=(2, 1, 1)[-dims:],
        ceil_mode=True,
    )


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same logical tensor in another memory layout (values unchanged)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":  # C innermost in memory, also for 1D
        return x.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided_view":  # a non-contiguous view: every other element of a larger tensor
        big = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "channel_slice":  # channels 1.. of a tensor with one more: n's stride is not C times c's
        big = torch.empty(x.shape[0], x.shape[1] + 1, *x.shape[2:], dtype=x.dtype, device=x.device)
        big[:, 1:] = x
        return big[:, 1:]
    if layout == "transposed":  # spatial dimensions swapped in memory
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(layout)


def _random(shape, dtype, device, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality, NaNs included (any NaN matches any NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a[~nan_a].view(ints), b[~nan_b].view(ints))


# --------------------------------------------------------------------------------------------
# Forward: values and indices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_view"])
def test_forward_matches_torch(dims, config, dtype, device, layout):
    kwargs = _kwargs(config, dims)
    x = _layout(_random(SHAPES[dims], dtype, device), layout)
    out, idx = OURS[dims](x, **kwargs, return_indices=True)
    ref, ref_idx = TORCH[dims](x, **kwargs, return_indices=True)
    assert _same_bits(out, ref)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(OURS[dims](x, **kwargs), ref)  # the values-only kernel variant


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_batchless_input(dims, device):
    x = _random(SHAPES[dims][1:], torch.float32, device)
    out, idx = OURS[dims](x, 3, 2, 1, return_indices=True)
    ref, ref_idx = TORCH[dims](x, 3, 2, 1, return_indices=True)
    assert out.shape == ref.shape == x.shape[:1] + ref.shape[1:]
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dims, layout",
    [(2, "contiguous"), (2, "channels_last"), (2, "transposed"), (2, "strided_view"), (3, "channels_last"),
     (3, "contiguous"), (2, "channels_last_sliced"), (2, "channels_last_c1")],
)  # fmt: skip
def test_output_memory_format_follows_input(dims, layout, device):
    if layout == "channels_last_sliced":  # not dense, but strides still ordered like NHWC
        x = _layout(_random((2, 3, 10, 9), torch.float32, device), "channels_last")[:, :, ::2]
    elif layout == "channels_last_c1":  # ambiguous: PyTorch falls back to contiguous
        x = _layout(_random((2, 1, 10, 9), torch.float32, device), "channels_last")
    else:
        x = _layout(_random(SHAPES[dims], torch.float32, device), layout)
    out = OURS[dims](x, 2, 1)
    ref = TORCH[dims](x, 2, 1)
    assert out.stride() == ref.stride()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_views_are_pooled_without_copy(device, monkeypatch):
    """A channels_last or strided view reaches the kernel as it is: same memory, same strides."""
    launched = []
    real_launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, dev: (launched.append(spec), real_launch(spec, dev)))
    base = _random((2, 9, 11, 4), torch.float32, device)  # (N, H, W, C) in memory
    views = {
        "data_format": (base, dict(data_format="channels_last")),
        "movedim": (base.movedim(-1, 1), {}),
        "slice": (base.movedim(-1, 1)[:, 1:3, 1:, ::2], {}),
    }
    for name, (view, extra) in views.items():
        launched.clear()
        kernels.max_pool2d(view, 2, **extra)
        (spec,) = launched
        seen = spec.args[0]
        assert seen.data_ptr() == view.data_ptr(), name
        logical = view.movedim(-1, 1) if extra else view
        assert seen.stride()[-2:] == logical.stride()[-2:] and seen.stride(1) == logical.stride(1), name


# --------------------------------------------------------------------------------------------
# Keras extensions: padding="same"/"valid" and data_format
# --------------------------------------------------------------------------------------------


def _same_reference(x: torch.Tensor, dims: int, kernel, stride, dilation):
    """TensorFlow's 'same' pooling from its definition: pad with -inf (smaller half before), pool."""
    spatial = x.shape[2:]
    pads, befores = [], []
    for size, k, s, d in zip(spatial, kernel, stride, dilation):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        befores.append(total // 2)
        pads.append((total // 2, total - total // 2))
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last dimension first
    padded = F.pad(x, flat, value=float("-inf"))
    values, padded_idx = TORCH[dims](padded, kernel, stride, 0, dilation, return_indices=True)
    # Indices count positions of the padded tensor: map them back to the unpadded one.
    coords, rest = [], padded_idx
    for size, before in reversed(list(zip(padded.shape[2:], befores))):
        coords.append(rest % size - before)
        rest = rest // size
    idx = torch.zeros_like(padded_idx)
    for coord, size in zip(reversed(coords), spatial):
        idx = idx * size + coord
    return values, idx


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "kernel, stride, dilation",
    [(2, 2, 1), (3, 2, 1), (3, 1, 1), (2, 1, 1), (4, 3, 1), (3, 2, 2), (1, 2, 1), (5, 2, 1)],
)
def test_same_padding_matches_its_definition(dims, kernel, stride, dilation, device):
    x = _random(SHAPES[dims], torch.float32, device)
    k, s, d = (kernel,) * dims, (stride,) * dims, (dilation,) * dims
    out, idx = OURS[dims](x, kernel, stride, "same", dilation, return_indices=True)
    ref, ref_idx = _same_reference(x, dims, k, s, d)
    assert out.shape[2:] == tuple(math.ceil(n / stride) for n in x.shape[2:])
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_valid_padding_is_no_padding(dims, device):
    x = _random(SHAPES[dims], torch.float32, device)
    assert torch.equal(OURS[dims](x, 3, 2, "valid"), TORCH[dims](x, 3, 2, 0))
    assert torch.equal(OURS[dims](x, 3, 2, "VALID"), TORCH[dims](x, 3, 2, 0))  # TensorFlow spelling


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("batched", [True, False])
def test_data_format_channels_last(dims, batched, device):
    x = _random(SHAPES[dims], torch.float32, device)  # (N, C, *spatial)
    if not batched:
        x = x[0]
    keras = x.movedim(-dims - 1, -1).contiguous()  # (N, *spatial, C), as Keras holds it
    out, idx = OURS[dims](keras, 3, 2, 1, return_indices=True, data_format="channels_last")
    ref, ref_idx = TORCH[dims](x, 3, 2, 1, return_indices=True)
    assert torch.equal(out, ref.movedim(-dims - 1, -1))
    assert torch.equal(idx, ref_idx.movedim(-dims - 1, -1))
    assert out.is_contiguous()  # the logical (N, *spatial, C) order is also the memory order
    grad = torch.randn_like(out)
    keras.requires_grad_(True)
    (g,) = torch.autograd.grad(OURS[dims](keras, 3, 2, 1, data_format="channels_last"), keras, grad)
    ref_g = _reference_grad(dims, x, dict(kernel_size=3, stride=2, padding=1), grad.movedim(-1, -dims - 1))
    torch.testing.assert_close(g, ref_g.movedim(-dims - 1, -1), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# Special values
# --------------------------------------------------------------------------------------------


def _special(kind: str, shape, dtype, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "ties":  # few distinct values: many ties inside every window
        return torch.randint(0, 3, shape, generator=g).to(device=device, dtype=dtype)
    if kind == "all_equal":
        return torch.full(shape, 0.5, dtype=dtype, device=device)
    if kind == "signed_zeros":  # -0.0 and 0.0 compare equal; the first one must win, bit for bit
        signs = torch.randint(0, 2, shape, generator=g).to(torch.float64) * 2 - 1
        return (signs * 0.0).to(device=device, dtype=dtype)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    pick = torch.rand(shape, generator=g)
    if kind == "nan":  # some windows hold one NaN, some several
        x[pick < 0.15] = float("nan")
    elif kind == "inf":
        x[pick < 0.2] = float("inf")
        x[pick > 0.7] = float("-inf")
    elif kind == "neg_inf":  # many windows entirely -inf
        x[pick < 0.9] = float("-inf")
    else:
        raise ValueError(kind)
    return x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["ties", "all_equal", "signed_zeros", "nan", "inf", "neg_inf"])
@pytest.mark.parametrize("config", ["k2", "k3s2p1", "k3s1p1d2_ceil"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_special_values(kind, config, dtype, device, layout):
    kwargs = _kwargs(config, 2)
    x = _layout(_special(kind, (2, 3, 9, 11), dtype, device), layout).requires_grad_(True)
    out, idx = kernels.max_pool2d(x, **kwargs, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, **kwargs, return_indices=True)
    reference = x
    if device == "cuda" and layout == "channels_last":
        # PyTorch's CUDA channels-last kernel starts every window's index at 0, not at the window's
        # first element as its CPU kernels and its CUDA NCHW kernel do, so a window with nothing
        # above -inf reports plane index 0, outside the window (and its gradient goes there). We
        # give the first element everywhere: hold us to PyTorch's NCHW result, and check that the
        # two PyTorch kernels differ nowhere else.
        reference = x.contiguous()
        _, nchw_idx = F.max_pool2d(reference, **kwargs, return_indices=True)
        assert torch.equal(ref_idx[ref != -math.inf], nchw_idx[ref != -math.inf])
        ref_idx = nchw_idx
    assert _same_bits(out, ref)
    assert torch.equal(idx, ref_idx)
    grad = _random(out.shape, dtype, device, seed=2)
    (g,) = torch.autograd.grad(out, x, grad)
    expected = _reference_grad(2, reference, kwargs, grad)
    torch.testing.assert_close(g, expected, **_grad_tolerance(dtype, CONFIGS[config][1]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape, pool",
    [((1, 2, 2, 2), dict(kernel_size=2, stride=1, padding=1, dilation=3)),
     # PyTorch's index of the second window is 2, past the 2-element plane: its CPU backward
     # writes there, outside the input's gradient (seen to corrupt the heap: munmap_chunk()).
     ((1, 3, 2, 1), dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 2)))],
)  # fmt: skip
def test_window_without_any_input_element(device, shape, pool):
    """With a large dilation a window can hold padding only: -inf and PyTorch's index, no gradient."""
    x = _random(shape, torch.float32, device).requires_grad_(True)
    out, idx = kernels.max_pool2d(x, **pool, return_indices=True)
    with torch.no_grad():
        ref, ref_idx = F.max_pool2d(x, **pool, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    assert torch.isneginf(out).all()
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.zeros_like(x))  # no element won, so none gets a gradient
    # Nor a second-order one (PyTorch's own double backward indexes out of bounds here).
    w = torch.ones_like(out, requires_grad=True)
    (g,) = torch.autograd.grad((kernels.max_pool2d(x, **pool) * w).sum(), x, create_graph=True)
    assert g.requires_grad and torch.equal(torch.autograd.grad(g.sum(), w)[0], torch.zeros_like(w))


@pytest.mark.parametrize(
    "size, pool, device_type, expected",
    [(9, (2, 2, 0, 1), "cpu", False), (9, (3, 2, 1, 1), "cpu", False), (2, (2, 1, 1, 3), "cpu", True),
     (9, (2, 2, 0, 1), "cuda", True)],
)  # fmt: skip
def test_forward_fixes_up_empty_windows_only_where_needed(size, pool, device_type, expected):
    """The fix-up is compiled in where some window may be empty, and always on CUDA (registers)."""
    x = torch.empty(1, 2, size, size)
    kernel, stride, padding, dilation = ((v, v) for v in pool)
    geometry = mp._resolve_geometry("t", (size, size), kernel, stride, padding, dilation, False)
    out, code, idx = mp._forward_outputs(x, geometry.output_size, kernel, False, True, False)
    spec = mp.forward_launch_spec(x, out, code, idx, *geometry[:4], device_type)
    assert spec.constexprs["EMPTY_WINDOWS"] is expected


@pytest.mark.parametrize("kernel, narrow", [(3, torch.int8), (12, torch.int16)])
def test_winning_tap_followed_in_the_codes_width_on_cpu(kernel, narrow):
    """The interpreter follows the winner in the code's width (int16 past 127 taps) and gets
    PyTorch's answer, bit for bit; CUDA follows it in 32-bit registers."""
    x = _random((2, 3, 14, 15), torch.float32, "cpu").requires_grad_(True)
    k = (kernel, kernel)
    geometry = mp._resolve_geometry("t", tuple(x.shape[2:]), k, (1, 1), (1, 1), (1, 1), False)
    out, code, idx = mp._forward_outputs(x, geometry.output_size, k, False, True, True)
    assert code.dtype == narrow
    arg = {device: mp.forward_launch_spec(x, out, code, idx, *geometry[:4], device).constexprs["ARG"]
           for device in ("cpu", "cuda")}  # fmt: skip
    assert arg == {"cpu": getattr(tl, str(narrow)[6:]), "cuda": tl.int32}
    out, idx = kernels.max_pool2d(x, kernel, 1, 1, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, kernel, 1, 1, return_indices=True)
    assert _same_bits(out, ref) and torch.equal(idx, ref_idx)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    torch.testing.assert_close(g, torch.autograd.grad(ref, x, torch.ones_like(ref))[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(
    "dims, shape, pool",
    [(1, (1, 2, 300), dict(kernel_size=3, dilation=100)),  # taps 0, 100, 200: past int8 (it wrapped)
     (2, (1, 2, 4, 280), dict(kernel_size=(2, 3), dilation=(2, 70), padding=(1, 0))),
     (3, (1, 2, 3, 2, 270), dict(kernel_size=(2, 1, 2), dilation=(2, 1, 130)))],  # 130 is no int8
)  # fmt: skip
def test_dilation_wider_than_the_code(dims, shape, pool, layout, device):
    """A small window's code is int8, yet its taps lie up to (kernel - 1) * dilation apart: the
    indices, computed from the code, match PyTorch's, and so do the gradients."""
    x = _layout(_random(shape, torch.float32, device), layout).requires_grad_(True)
    out, idx = OURS[dims](x, **pool, stride=1, return_indices=True)
    ref, ref_idx = TORCH[dims](x, **pool, stride=1, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    grad = _random(out.shape, torch.float32, device, seed=1)
    (g,) = torch.autograd.grad(OURS[dims](x, **pool, stride=1), x, grad)
    assert torch.equal(g, torch.autograd.grad(ref, x, grad)[0])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_rows_walk_channels_fastest_for_channels_last_on_cpu(dims, layout, device_type):
    """Along W in the interpreter, rows follow memory: channels fastest for channels_last (both the
    forward and the scatter backward); CUDA tiles channels_last along C and keeps one row order."""
    x = _layout(torch.empty(2, 5, *([16] * dims)), layout)  # 8 outputs along W fill a tile: not C_INNER on CPU
    k = (2,) * dims
    geometry = mp._resolve_geometry("t", tuple(x.shape[2:]), k, k, (0,) * dims, (1,) * dims, False)
    channels_last = layout == "channels_last"
    out, code, idx = mp._forward_outputs(x, geometry.output_size, k, channels_last, True, False)
    forward = mp.forward_launch_spec(x, out, code, idx, *geometry[:4], device_type)
    backward = mp.backward_launch_spec(torch.empty_like(out), code, torch.empty_like(x), *geometry[:4], device_type)
    expected = device_type == "cpu" and channels_last
    assert not forward.constexprs["C_INNER"] or device_type == "cuda"
    assert forward.constexprs["C_FASTEST"] is expected
    assert backward.constexprs.get("C_FASTEST", False) is expected


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dilation", [1, 2, 3, 5])
def test_empty_windows_and_edges_are_found_exactly(dilation, ceil_mode):
    """The forward skips its empty-window fix-up unless _empty_windows says some window may be
    empty (it checks edge windows only), and its bounds checks along a dimension unless
    _reaches_edge says a tap can fall outside: check both against every window and tap."""
    for size in range(1, 13):
        for kernel in range(1, 5):
            for stride in range(1, 5):
                for padding in [*range(kernel // 2 + 1), "same"]:
                    if padding == "same" and ceil_mode:
                        continue
                    out, pad = mp.pool_output_size(size, kernel, stride, padding, dilation, ceil_mode)
                    if out < 1:
                        continue
                    every = any(
                        all(not 0 <= o * stride - pad + j * dilation < size for j in range(kernel))
                        for o in range(out)
                    )
                    outside = any(
                        not 0 <= o * stride - pad + j * dilation < size for j in range(kernel) for o in range(out)
                    )
                    case = (size, kernel, stride, padding, dilation, ceil_mode)
                    assert mp._empty_windows(size, out, kernel, stride, pad, dilation) == every, case
                    assert mp._reaches_edge(size, out, kernel, stride, pad, dilation) == outside, case


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


def _reference_grad(dims, x, kwargs, grad):
    """PyTorch's input gradient; for 16-bit types the exact float64 one, rounded once.

    float32/float64: from PyTorch's CPU kernels, which add an input's gradients in window order,
    as we do (its CUDA 3D backward adds them with atomics, in no fixed order, so where windows
    overlap its last bits change from run to run). 16-bit: PyTorch sums overlapping gradients in
    half precision, rounding at every step; we sum in float32 and round once, which is what the
    float64 reference (exact, in any order) rounded once gives.
    """
    if x.dtype in (torch.float32, torch.float64):
        xc = x.detach().cpu().requires_grad_(True)
        return torch.autograd.grad(TORCH[dims](xc, **kwargs), xc, grad.cpu())[0].to(x.device)
    x64 = x.detach().double().requires_grad_(True)
    return torch.autograd.grad(TORCH[dims](x64, **kwargs), x64, grad.double())[0].to(x.dtype)


def _grad_tolerance(dtype, overlapping: bool) -> dict:
    """Bitwise where each input gets at most one gradient, and in float32/float64 everywhere (the
    kernels add an input's gradients in PyTorch's CPU order); 16-bit sums of overlapping windows
    are rounded once from float32, the reference once from float64: they may differ in the last bit."""
    if not overlapping or dtype in (torch.float32, torch.float64):
        return dict(rtol=0, atol=0)
    return dict(rtol=2**-7, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_matches_torch(dims, config, dtype, device, layout):
    kwargs = _kwargs(config, dims)
    overlapping = CONFIGS[config][1]
    x = _layout(_random(SHAPES[dims], dtype, device), layout).requires_grad_(True)
    out = OURS[dims](x, **kwargs)
    grad = _random(out.shape, dtype, device, seed=3)
    (g,) = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(g, _reference_grad(dims, x, kwargs, grad), **_grad_tolerance(dtype, overlapping))
    assert g.stride() == torch.empty_like(x).stride() or not x.is_contiguous()


# Windows that do not overlap, shaped to reach each way the scatter backward (the CPU's) turns a
# saved tap back into a position: compares for small windows, a division beyond 8 taps a side,
# dilation, a 3-deep window, padding.
SCATTER_CASES = {
    "k9s9": (2, dict(kernel_size=(2, 9), stride=(2, 9))),
    "k3x9x2": (3, dict(kernel_size=(3, 9, 2), stride=(3, 9, 2))),
    "k9d": (3, dict(kernel_size=(9, 1, 1), stride=(9, 1, 1))),
    "dilated": (2, dict(kernel_size=2, stride=3, dilation=2, ceil_mode=True)),
    "padded": (3, dict(kernel_size=(3, 4, 2), stride=(3, 4, 3), padding=(1, 2, 1))),
    "1d": (1, dict(kernel_size=7, stride=7, padding=3)),
}


# Dilation larger than the stride: more candidate windows than taps along some dimension, where
# the gather walks the taps (mixed with dimensions that walk the candidates, padding, ceil_mode).
TAP_WALK_CASES = {
    "1d_k3s1d8": (1, (2, 3, 40), dict(kernel_size=3, stride=1, dilation=8)),
    "1d_k2s2d5_ceil": (1, (2, 3, 23), dict(kernel_size=2, stride=2, dilation=5, padding=1, ceil_mode=True)),
    "2d_mixed": (2, (2, 3, 17, 9), dict(kernel_size=(3, 2), stride=(2, 1), dilation=(5, 1), padding=(1, 0))),
    "2d_k3s1d4p2": (2, (1, 4, 13, 12), dict(kernel_size=3, stride=1, dilation=4, padding=1)),
    "3d_mixed": (3, (1, 3, 9, 6, 11), dict(kernel_size=(2, 2, 3), stride=(1, 2, 2), dilation=(3, 1, 4), ceil_mode=True)),
}


@pytest.mark.parametrize("kernel", ["backward_phase", "backward"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", list(TAP_WALK_CASES))
def test_backward_with_dilation_beyond_the_stride(case, layout, device, kernel, fresh_plans, monkeypatch):
    """The backward regrouped by phase (windows that hold no phase of a base), and the plain
    gather walking taps (what runs past PHASE_LIMIT phases; forced here), sum PyTorch's
    gradients in PyTorch's order: float32 equal bit for bit."""
    if kernel == "backward":
        monkeypatch.setattr(mp, "PHASE_LIMIT", 0)
    kernels_run = []
    launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, device: (kernels_run.append(spec.kernel), launch(spec, device))[1])
    dims, shape, pool = TAP_WALK_CASES[case]
    strides3, dilations3, kernel3 = (mp._pad3(mp._as_tuple("t", "v", pool.get(name, 1), dims), 1)
                                     for name in ("stride", "dilation", "kernel_size"))  # fmt: skip
    assert any((k - 1) * dl // st + 1 > k for k, st, dl in zip(kernel3, strides3, dilations3))
    x = _layout(_random(shape, torch.float32, device), layout).requires_grad_(True)
    out = OURS[dims](x, **pool)
    ref = TORCH[dims](x, **pool)
    grad = _random(out.shape, torch.float32, device, seed=1)
    (g,) = torch.autograd.grad(out, x, grad)
    assert kernels_run == ["forward", kernel]
    assert _same_bits(g, torch.autograd.grad(ref, x, grad)[0])  # PyTorch's sums, in its order


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_backward_of_overlapping_windows_on_cpu_is_regrouped_by_phase(dims, layout, int64, fresh_plans, monkeypatch):
    """CPU plans take the phase backward where windows overlap (3x3 at stride 2, padded: ties from
    rounded inputs, partial tiles of 256 elements over many programs), with 32- and 64-bit
    offsets: float32 gradients are PyTorch's bit for bit."""
    if int64:  # every launch takes the 64-bit offset path, without a 2**31-element tensor
        monkeypatch.setattr(mp, "INT32_SPAN_LIMIT", 1)
    monkeypatch.setattr(mp, "CPU_TILE_ELEMENTS", 256)
    specs = []
    real_launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, dev: (specs.append(spec), real_launch(spec, dev)))
    shape = {1: (2, 3, 200), 2: (2, 5, 13, 22), 3: (2, 3, 7, 9, 10)}[dims]
    x = _layout(_random(shape, torch.float32, "cpu").round(decimals=1), layout).requires_grad_(True)
    out = OURS[dims](x, kernel_size=3, stride=2, padding=1)
    ref = TORCH[dims](x, kernel_size=3, stride=2, padding=1)
    grad = _random(out.shape, torch.float32, "cpu", seed=4)
    (g,) = torch.autograd.grad(out, x, grad)
    assert [s.kernel for s in specs] == ["forward", "backward_phase"]
    assert all(s.constexprs["INT64"] == int64 for s in specs) and specs[1].grid[0] > 1
    assert _same_bits(g, torch.autograd.grad(ref, x, grad)[0])


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", list(SCATTER_CASES))
def test_backward_of_windows_that_do_not_overlap(case, layout, int64, monkeypatch):
    dims, kwargs = SCATTER_CASES[case]
    if int64:  # every launch takes the 64-bit offset path, without a 2**31-element tensor
        monkeypatch.setattr(mp, "INT32_SPAN_LIMIT", 1)
    specs = []
    real_launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, dev: (specs.append(spec), real_launch(spec, dev)))
    shape = {1: (2, 3, 40), 2: (2, 3, 11, 37), 3: (2, 3, 19, 20, 7)}[dims]
    x = _layout(_random(shape, torch.float32, "cpu"), layout).requires_grad_(True)
    out = OURS[dims](x, **kwargs)
    grad = _random(out.shape, torch.float32, "cpu", seed=3)
    (g,) = torch.autograd.grad(out, x, grad)
    assert [s.kernel for s in specs] == ["forward", "backward_scatter"]
    assert all(s.constexprs["INT64"] == int64 for s in specs)
    assert torch.equal(g, _reference_grad(dims, x, kwargs, grad))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_double_backward_matches_pytorch(dims, config, layout, device):
    """A gradient penalty differentiates the backward itself (create_graph=True): with respect to
    the gradient it received, which carries the layers after the pooling (a discriminator's, in
    WGAN-GP). PyTorch's second-order gradients, in float64, from its CPU kernels (its CUDA ones
    add overlapping windows' gradients with atomics, in no fixed order)."""
    kwargs = _kwargs(config, dims)
    grads = []
    for pool, on in ((OURS[dims], device), (TORCH[dims], "cpu")):
        x = _layout(_random(SHAPES[dims], torch.float64, on), layout).requires_grad_(True)
        y = pool(x, **kwargs)
        w = _random(y.shape, torch.float64, on, seed=1).requires_grad_(True)  # what follows the pooling
        (g,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
        penalty = (g * g * _random(g.shape, torch.float64, on, seed=2)).sum()
        grads.append(torch.autograd.grad(penalty, w)[0].cpu())
    ours, reference = grads
    assert ours.abs().sum() > 0 and torch.equal(ours, reference)


@pytest.mark.parametrize("path", ["eager", "custom_op"])
def test_second_order_gradients_pass_gradgradcheck(path):
    """Second derivatives against finite differences (torch.autograd.gradgradcheck), on both paths
    (the custom ops' is what torch.compile traces), overlapping dilated windows, channels_last."""
    kwargs = dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=True)
    x = _layout(_random((1, 2, 6, 7), torch.float64, "cpu"), "channels_last").requires_grad_(True)
    if path == "eager":
        pool = lambda t: kernels.max_pool2d(t, **kwargs)  # noqa: E731
    else:
        out_size = [mp.pool_output_size(n, k, s, p, d, True)[0] for n, k, s, p, d in zip((6, 7), (3, 2), (1, 2), (1, 0), (2, 1))]
        args = ([3, 2], [1, 2], [1, 0], [2, 1], out_size, True, True, False)
        pool = lambda t: torch.ops.tritonpool.max_pool_forward(t, *args)[0]  # noqa: E731
    assert torch.autograd.gradgradcheck(pool, (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant", "selective"])
def test_activation_checkpointing_recomputes_the_same_gradients(mode, device):
    """torch.utils.checkpoint drops a block's activations and runs its forward again in the
    backward: with the eager path (reentrant: a nested backward; non-reentrant: saved-tensor
    hooks) and, under selective checkpointing's dispatch mode, with the custom op, whose output
    the policy saves."""
    import functools

    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    saved = []

    def policy(ctx, op, *args, **kwargs):
        ours = op == torch.ops.tritonpool.max_pool_forward.default
        saved.append(ours)
        return CheckpointPolicy.MUST_SAVE if ours else CheckpointPolicy.PREFER_RECOMPUTE

    kwargs = dict(use_reentrant=mode == "reentrant")
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, policy)
    grads = []
    for pool in (kernels.max_pool2d, F.max_pool2d):
        x = _random((2, 3, 9, 11), torch.float32, device).requires_grad_(True)
        y = checkpoint(lambda t: pool(t * 2, 3, 2, 1).sin(), x, **kwargs)
        y.sum().backward()
        grads.append(x.grad)
    assert torch.equal(*grads)
    assert any(saved) == (mode == "selective")


@pytest.mark.parametrize("device", DEVICES)
def test_backward_of_an_expanded_gradient(device):
    """The gradient of out.sum() arrives expanded (stride 0); it must still land right."""
    x = _random((2, 3, 9, 11), torch.float32, device).requires_grad_(True)
    (g,) = torch.autograd.grad(kernels.max_pool2d(x, 3, 2, 1).sum(), x)
    (ref,) = torch.autograd.grad(F.max_pool2d(x, 3, 2, 1).sum(), x)
    assert torch.equal(g, ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dims, kwargs",
    [(1, dict(kernel_size=5, stride=1, padding=2)), (2, dict(kernel_size=3, stride=1, padding=1)),
     (3, dict(kernel_size=3, stride=1, padding=1)), (3, dict(kernel_size=(2, 3, 3), stride=(1, 2, 1), dilation=2))],
)  # fmt: skip
def test_backward_is_deterministic(dims, kwargs, device):
    x = _random((2, 4) + (6, 9, 10)[-dims:], torch.float32, device)
    x = (x * 4).round().requires_grad_(True)  # ties everywhere: many windows share winners
    grads = []
    for _ in range(2):
        out = OURS[dims](x, **kwargs)
        grads.append(torch.autograd.grad(out, x, torch.ones_like(out))[0])
    assert torch.equal(grads[0], grads[1])
    assert grads[0].sum() == out.numel()  # every output's gradient arrived exactly once


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dims, kernel_size, code_bytes",
    [(1, 3, 1), (2, 2, 1), (2, 11, 1), (2, 12, 2), (3, 5, 1), (3, 6, 2)],
)
def test_saved_for_backward_is_compact(dims, kernel_size, code_bytes, device):
    """At most 1 byte per output for windows of up to 127 taps (PyTorch keeps 8-byte indices)."""
    spatial = (14, 14, 14)[-dims:] if dims == 3 else (24, 24)[-dims:]
    x = _random((2, 3, *spatial), torch.float32, device).requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = OURS[dims](x, kernel_size, 1)
    assert sum(t.numel() * t.element_size() for t in saved) == code_bytes * out.numel()
    assert all(t.data_ptr() != x.data_ptr() for t in saved)  # the input itself is not kept


@pytest.mark.parametrize("device", DEVICES)
def test_forward_without_grad_writes_no_indices(device, monkeypatch):
    specs = []
    real_launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, dev: (specs.append(spec), real_launch(spec, dev)))
    x = _random((2, 3, 8, 8), torch.float32, device)
    kernels.max_pool2d(x, 2)
    with torch.no_grad():
        kernels.max_pool2d(x.requires_grad_(True), 2)
    kernels.max_pool2d(x, 2)  # requires grad now: the winners are kept for the backward
    kernels.max_pool2d(x.detach(), 2, return_indices=True)
    flags = [(s.constexprs["TRACK_ARGMAX"], s.constexprs["WRITE_CODE"], s.constexprs["WRITE_INDICES"]) for s in specs]
    assert flags == [(False, False, False), (False, False, False), (True, True, False), (True, False, True)]


# --------------------------------------------------------------------------------------------
# Random geometries
# --------------------------------------------------------------------------------------------


def _random_case(seed: int):
    """A pooling call drawn at random: 1-3 dims, kernel 1-4 (1D up to 12, an int16 code), stride
    1-4, dilation 1-3 or (a quarter of the time, along the last dimension) up to 150, padding up to
    half the kernel, ceil_mode, any dtype, and an input laid out in any of four ways, just large
    enough for the windows."""
    rng = random.Random(seed)
    dims = rng.choice([1, 2, 3])
    wide = rng.random() < 0.25
    kernel = [rng.randint(1, 12 if dims == 1 and wide else 4) for _ in range(dims)]
    dilation = [rng.choice([1, 1, 2, 3]) for _ in range(dims)]
    if wide:
        dilation[-1] = rng.randint(4, 150 if dims == 1 else 40)
    stride = [rng.randint(1, 4) for _ in range(dims)]
    padding = [rng.randint(0, k // 2) for k in kernel]
    sizes = [max(1, (k - 1) * d + 1 - 2 * p) + rng.randint(0, 4) for k, d, p in zip(kernel, dilation, padding)]
    shape = (rng.randint(1, 2), rng.randint(1, 4), *sizes)
    pool = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=rng.random() < 0.3)
    dtype = rng.choice(DTYPES)
    layout = rng.choice(["contiguous", "channels_last", "strided_view", "channel_slice"])
    return dims, shape, pool, dtype, layout


@pytest.mark.parametrize("plans", ["cpu", "cuda"])
@pytest.mark.parametrize("seed", range(150))
def test_random_geometries_match_pytorch(seed, plans, monkeypatch):
    """Values and indices equal PyTorch's bit for bit, gradients its within rounding, over random
    calls, with the launches planned for CPU or (run here in the interpreter) for CUDA: its tiles
    and its phase backward. The gradient reference adds each output's gradient into its winner by
    PyTorch's index (in float64), not through PyTorch's backward: a window of padding only has an
    index past the input there, which PyTorch's CPU backward writes to. Indices come from
    PyTorch's contiguous kernel, as its channels_last CPU kernels report other ones for such windows."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stand_in_driver import cuda_launch_specs

    dims, shape, pool, dtype, layout = _random_case(seed)
    x = _layout(_random(shape, dtype, "cpu", seed).round(decimals=1), layout).requires_grad_(True)  # ties
    ref, ref_idx = TORCH[dims](x.detach().contiguous(), **pool, return_indices=True)
    kernels_run = []
    launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, device: (kernels_run.append(spec.kernel), launch(spec, device)))
    grad = _random(ref.shape, dtype, "cpu", seed + 1)
    with cuda_launch_specs() if plans == "cuda" else contextlib.nullcontext():
        out, idx = OURS[dims](x, **pool, return_indices=True)
        (g,) = torch.autograd.grad(out, x, grad)
    assert _same_bits(out, ref) and torch.equal(idx, ref_idx), (dims, shape, pool, dtype, layout)
    backward_kernels = {"cpu": ("backward_phase", "backward", "backward_scatter"), "cuda": ("backward_phase", "backward")}[plans]
    assert len(kernels_run) == 2 and kernels_run[0] == "forward" and kernels_run[1] in backward_kernels
    plane = math.prod(shape[2:])
    flat_idx = ref_idx.flatten(2).clamp(max=plane - 1)
    x_flat = x.detach().double().flatten(2)
    won = (ref_idx.flatten(2) < plane) & (x_flat.gather(2, flat_idx) == ref.double().flatten(2))
    want = torch.zeros_like(x_flat).scatter_add_(2, flat_idx, torch.where(won, grad.double().flatten(2), 0.0))
    tolerance = {torch.float16: 2**-10, torch.bfloat16: 2**-7}.get(dtype)  # one rounding of the sum
    kwargs = dict(rtol=tolerance, atol=tolerance) if tolerance else {}
    case = (dims, shape, pool, dtype, layout)
    torch.testing.assert_close(g.double().flatten(2), want, **kwargs, msg=lambda m: f"{case}: {m}")


# --------------------------------------------------------------------------------------------
# Offsets beyond int32
# --------------------------------------------------------------------------------------------


def test_offsets_beyond_int32_use_int64(monkeypatch):
    """A view reaching past element 2**31 of its storage pools right, without allocating 4 GiB.

    torch.empty does not touch its pages, so the huge storage costs address space only; the test
    writes (and the kernel reads) just the few elements the view covers.
    """
    span = 2**31 + 64
    storage = torch.empty(span, dtype=torch.float16)
    x = storage.as_strided((1, 2, 2, 4), (0, 2**31, 8, 1))  # channel 1 starts past 2**31
    x.copy_(_random(x.shape, torch.float16, "cpu"))
    specs = []
    real_launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, dev: (specs.append(spec), real_launch(spec, dev)))
    out, idx = kernels.max_pool2d(x, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(x.clone(), 2, return_indices=True)
    assert specs[0].constexprs["INT64"]
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_small_tensors_use_int32_offsets():
    x = torch.empty(2, 3, 8, 8)
    out, code, idx = mp._forward_outputs(x, [4, 4], [2, 2], False, True, False)
    spec = mp.forward_launch_spec(x, out, code, idx, [2, 2], [2, 2], [0, 0], [1, 1], "cuda")
    assert not spec.constexprs["INT64"]


@pytest.mark.parametrize("heavy", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_cuda_tiles_give_every_thread_a_128_bit_access(dtype, heavy):
    """However register-heavy the launch, a CUDA tile keeps 16 bytes a thread (one 128-bit access)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    block_m, block_n, warps = mp.launch_config(10**6, 10**4, "cuda", heavy, itemsize)
    assert block_m * block_n * itemsize >= warps * 32 * 16
    assert block_m * block_n <= mp.CUDA_TILE_ELEMENTS


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_cuda_forward_writing_code_and_indices_takes_half_the_tile(dtype, layout):
    """Code and indices both written: three results live per element, half the tile on CUDA (at
    the full tile ptxas spilled, benchmarks/inspect_kernels.py), down to the 16-bytes floor; the
    interpreter, which has no registers, keeps its tile."""
    x = _layout(torch.empty(8, 64, 56, 56, dtype=dtype), layout)

    def elements(device_type, save_code, return_indices):
        out, code, idx = mp._forward_outputs(x, [28, 28], [2, 2], layout == "channels_last", save_code, return_indices)
        spec = mp.forward_launch_spec(x, out, code, idx, [2, 2], [2, 2], [0, 0], [1, 1], device_type)
        return spec.constexprs["BLOCK_M"] * spec.constexprs["BLOCK_N"]

    single = elements("cuda", True, False)
    assert elements("cuda", False, True) == single
    assert elements("cuda", True, True) == max(single // 2, 4 * 32 * 16 // dtype.itemsize)
    assert elements("cpu", True, True) == elements("cpu", True, False)


# --------------------------------------------------------------------------------------------
# Custom op: opcheck, torch.compile
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("save_code, return_indices", [(False, False), (True, False), (True, True)])
def test_opcheck_forward(save_code, return_indices, device):
    x = _random((2, 3, 7, 9), torch.float32, device).requires_grad_(save_code)
    args = (x, [3, 3], [2, 2], [1, 1], [1, 1], [4, 5], False, save_code, return_indices)
    torch.library.opcheck(torch.ops.tritonpool.max_pool_forward.default, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_backward(channels_last, device):
    x = _random((2, 3, 7, 9), torch.float32, device).requires_grad_(True)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    _, code, _ = torch.ops.tritonpool.max_pool_forward(x, [3, 3], [2, 2], [1, 1], [1, 1], [4, 5], channels_last, True, False)
    grad = _random(code.shape, torch.float32, device).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    args = (grad, code, [2, 3, 7, 9], channels_last, [3, 3], [2, 2], [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.tritonpool.max_pool_backward.default, args)


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.pool = kernels.MaxPool2d(2)
        self.pool3 = kernels.MaxPool2d(3, 2, "same")
        self.head = torch.nn.Linear(4 * 2 * 2, 2)

    def forward(self, x):
        x = self.pool3(self.pool(torch.relu(self.conv(x))))
        return self.head(x.flatten(1))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch.manual_seed(0)
    net = _TinyNet().to(device)
    x = _random((2, 3, 10, 10), torch.float32, device)
    eager = net(x)
    eager.sum().backward()
    eager_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")  # graph breaks would raise
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    for p, ref in zip(net.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, ref)


def test_torch_compile_inductor():
    """The default backend (Inductor) compiles around the op and runs it."""
    torch.manual_seed(0)
    net = _TinyNet()
    x = _random((2, 3, 10, 10), torch.float32, "cpu")
    compiled = torch.compile(net, fullgraph=True)
    torch.testing.assert_close(compiled(x), net(x))


def _reference_with_grad(dims: int, x: torch.Tensor, kwargs: dict, grad: torch.Tensor):
    """PyTorch's values and input gradient; 'same' padding from its definition (_same_reference)."""
    xc = x.detach().clone().requires_grad_(True)
    if kwargs.get("padding") == "same":
        k, s = kwargs["kernel_size"], kwargs["stride"]
        out, _ = _same_reference(xc, dims, (k,) * dims, (s,) * dims, (1,) * dims)
    else:
        out = TORCH[dims](xc, **kwargs)
    return out.detach(), torch.autograd.grad(out, xc, grad)[0]


@pytest.mark.parametrize(
    "dims, config, layout",
    [(2, "k3s2p1", "contiguous"), (2, "k3s1p1d2_ceil", "channels_last"), (2, "mixed", "contiguous"),
     (1, "k2s3_ceil", "contiguous"), (3, "k3s2p1", "channels_last"), (2, "same_k2s2", "contiguous")],
)  # fmt: skip
def test_torch_compile_with_dynamic_shapes_traces_one_graph(dims, config, layout):
    """Batch and spatial sizes marked dynamic: one graph serves sizes of both parities, with
    PyTorch's values and gradients. Where the output size's arithmetic branches on a size (ceil
    mode's last window; 'same' padding's total, 0 or not), torch.compile guards on it and
    recompiles for the other sizes."""
    from torch._dynamo.utils import counters

    kwargs = dict(kernel_size=2, stride=2, padding="same") if config == "same_k2s2" else _kwargs(config, dims)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda t: OURS[dims](t, **kwargs), fullgraph=True, backend="aot_eager")
    for n, size in [(2, 10), (3, 13), (5, 17)]:  # no two sizes equal: duck sizing would tie them
        shape = (n, 3) + tuple(size + 5 * i for i in range(dims))
        x = _layout(_random(shape, torch.float32, "cpu", seed=n), layout).requires_grad_(True)
        for dim in (0, *range(2, 2 + dims)):
            torch._dynamo.mark_dynamic(x, dim)
        out = compiled(x)
        grad = _random(out.shape, torch.float32, "cpu", seed=n + 1)
        (grad_in,) = torch.autograd.grad(out, x, grad)
        ref, ref_grad = _reference_with_grad(dims, x, kwargs, grad)
        assert torch.equal(out, ref)
        assert torch.equal(grad_in, ref_grad)
    assert counters["stats"]["unique_graphs"] == 1


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "args, kwargs",
    [((2,), {}), ((3, 2, 1), {}), ((3,), dict(stride=1, padding=1, dilation=2, ceil_mode=True, return_indices=True))],
)
def test_modules_mirror_torch(dims, args, kwargs):
    ours = getattr(kernels, f"MaxPool{dims}d")(*args, **kwargs)
    ref = getattr(torch.nn, f"MaxPool{dims}d")(*args, **kwargs)
    assert repr(ours) == repr(ref)
    assert isinstance(ours, getattr(torch.nn, f"MaxPool{dims}d"))
    x = _random(SHAPES[dims], torch.float32, "cpu")
    got, want = ours(x), ref(x)
    if kwargs.get("return_indices"):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    else:
        assert torch.equal(got, want)


def test_module_repr_shows_extensions():
    pool = kernels.MaxPool2d(3, 2, "same", data_format="channels_last")
    assert repr(pool) == (
        "MaxPool2d(kernel_size=3, stride=2, padding=same, dilation=1, ceil_mode=False, data_format=channels_last)"
    )
    x = _random((2, 9, 11, 3), torch.float32, "cpu")
    assert pool(x).shape == (2, 5, 6, 3)


# --------------------------------------------------------------------------------------------
# Invalid arguments: the same mistakes PyTorch rejects, rejected before any launch
# --------------------------------------------------------------------------------------------

_X2 = (2, 3, 8, 8)
INVALID = [
    # (name, shape, dtype, args, kwargs, exception, message fragment)
    ("kernel 0", _X2, torch.float32, (0,), {}, ValueError, "kernel_size must be >= 1"),
    ("kernel negative", _X2, torch.float32, ((2, -1),), {}, ValueError, "kernel_size must be >= 1"),
    ("kernel 3 values", _X2, torch.float32, ((2, 2, 2),), {}, ValueError, "kernel_size must be a single int or a tuple of 2"),
    ("kernel float", _X2, torch.float32, (2.0,), {}, TypeError, "kernel_size must contain ints"),
    ("stride 0", _X2, torch.float32, (2, 0), {}, ValueError, "stride must be >= 1"),
    ("dilation 0", _X2, torch.float32, (2, 1, 0, 0), {}, ValueError, "dilation must be >= 1"),
    ("padding > half", _X2, torch.float32, (3, 1, 2), {}, ValueError, "padding must be between 0 and kernel_size // 2"),
    ("padding < 0", _X2, torch.float32, (3, 1, -1), {}, ValueError, "padding must be between 0 and kernel_size // 2"),
    ("padding string", _X2, torch.float32, (3,), dict(padding="middle"), ValueError, "'valid' or 'same'"),
    ("same + ceil_mode", _X2, torch.float32, (3,), dict(padding="same", ceil_mode=True), ValueError, "ceil_mode"),
    ("data_format", _X2, torch.float32, (2,), dict(data_format="NHWC"), ValueError, "data_format must be one of"),
    ("output < 1", (2, 3, 3, 3), torch.float32, (5,), {}, ValueError, "output size would be (0, 0)"),
    ("output < 1 dilation", (2, 3, 5, 5), torch.float32, (3, 1, 0, 3), {}, ValueError, "at least 1"),
    ("2D input", (8, 8), torch.float32, (2,), {}, ValueError, "expected a 3D (C, H, W) or 4D (N, C, H, W) input"),
    ("5D input", (1, 2, 3, 8, 8), torch.float32, (2,), {}, ValueError, "got a 5D tensor"),
    ("empty channel", (2, 0, 8, 8), torch.float32, (2,), {}, ValueError, "only the batch dimension may be empty"),
    ("empty spatial", (2, 3, 0, 8), torch.float32, (2,), {}, ValueError, "only the batch dimension may be empty"),
    ("int input", _X2, torch.int64, (2,), {}, TypeError, "must be float16, bfloat16, float32 or float64"),
    ("bool input", _X2, torch.bool, (2,), {}, TypeError, "must be float16, bfloat16, float32 or float64"),
]


@pytest.mark.parametrize("name, shape, dtype, args, kwargs, exc, message", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_arguments(name, shape, dtype, args, kwargs, exc, message, monkeypatch):
    monkeypatch.setattr(mp, "_launch", lambda *a: pytest.fail("launched despite invalid arguments"))
    x = torch.zeros(shape, dtype=dtype)
    with pytest.raises(exc) as info:
        kernels.max_pool2d(x, *args, **kwargs)
    assert message in str(info.value)
    assert "max_pool2d" in str(info.value)
    if exc is ValueError:  # code written against PyTorch catches RuntimeError
        assert isinstance(info.value, RuntimeError)


def test_invalid_input_type():
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        kernels.max_pool1d([1.0, 2.0], 2)


@pytest.mark.parametrize("dims", [1, 3])
def test_invalid_arguments_other_dims(dims):
    x = torch.zeros(SHAPES[dims])
    with pytest.raises(ValueError, match=f"max_pool{dims}d: padding must be between 0"):
        OURS[dims](x, 2, 1, 2)
    with pytest.raises(ValueError, match=f"max_pool{dims}d: expected a {dims + 1}D"):
        OURS[dims](torch.zeros(4), 2)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [((0,), {}, "kernel_size must be >= 1"), ((3, 1, 2), {}, "padding must be between"),
     ((2,), dict(padding="full"), "'valid' or 'same'"), ((2,), dict(data_format="NCHW"), "data_format")],
)  # fmt: skip
def test_modules_reject_invalid_arguments_at_construction(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernels.MaxPool2d(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# The GPU's launches, run through the interpreter
# --------------------------------------------------------------------------------------------


# Windows at stride 2 along W by the input positions they tap relative to 2 * ow: the CUDA
# forward loads 2 * ow and 2 * ow + 1 as one pair and every other tap alone.
PAIR_CONFIGS = {
    "k2": dict(kernel_size=2),  # 0, 1: both halves of the pair
    "k3s2p1": dict(kernel_size=3, stride=2, padding=1),  # -1 alone, then 0, 1
    "k3s2p1_ceil": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),  # the last pair past W
    "k3s2d2p1": dict(kernel_size=3, stride=2, padding=1, dilation=2),  # -1, 1, 3: the odd half only
    "k1s2": dict(kernel_size=1, stride=2),  # 0: the even half only
    "k5s2p2": dict(kernel_size=5, stride=2, padding=2),  # -2, -1, 0, 1, 2
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", list(PAIR_CONFIGS))
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_cuda_forward_loads_pairs_along_w_at_stride_2(dims, config, dtype):
    """The CUDA forward's paired loads give PyTorch's values and indices bit for bit, with ties,
    NaNs and -inf in the windows, through the interpreter."""
    shape = {1: (2, 3, 32), 2: (2, 3, 5, 30), 3: (2, 2, 3, 4, 22)}[dims]  # W and every stride even
    values = torch.round(_random(shape, torch.float64, "cpu", seed=dims) * 2) / 2  # ties
    values.view(-1)[::7] = float("nan")
    values.view(-1)[3::11] = float("-inf")
    x = values.to(dtype)
    if dims == 2:  # at an odd offset into its storage, rows 32 elements apart
        x = torch.empty(2, 3, 5, 32, dtype=dtype)[..., 1:31].copy_(x)
    kwargs = PAIR_CONFIGS[config]
    ref, ref_idx = TORCH[dims](x.float() if dtype == torch.float16 else x, **kwargs, return_indices=True)
    k, s, p, d = (mp._as_tuple("", "", kwargs.get(name, default), dims) for name, default in
                  [("kernel_size", None), ("stride", kwargs["kernel_size"]), ("padding", 0), ("dilation", 1)])  # fmt: skip
    for save_code, return_indices in [(False, False), (True, True)]:
        out, code, idx = mp._forward_outputs(x, ref.shape[2:], k, False, save_code, return_indices)
        forward = mp.forward_launch_spec(x, out, code, idx, k, s, p, d, "cuda")
        assert forward.constexprs["PAIR_W"]
        mp._launch(forward, x.device)
        assert _same_bits(out, ref.to(dtype))
        if return_indices:
            assert torch.equal(idx, ref_idx)


def test_cuda_forward_pairs_only_what_triton_can_prove_aligned():
    geometry = ([3, 3], [2, 2], [1, 1], [1, 1])

    def pairs(x, stride=(2, 2)):
        out, code, _ = mp._forward_outputs(x, [2, 3], geometry[0], False, True, False)
        return mp.forward_launch_spec(x, out, code, None, geometry[0], stride, *geometry[2:], "cuda").constexprs["PAIR_W"]

    assert pairs(torch.empty(2, 3, 4, 32)) and pairs(torch.empty(2, 3, 4, 30))
    assert pairs(torch.empty(2, 3, 4, 64)[..., :32])  # a slice: rows 64 elements apart
    assert pairs(torch.empty(2, 3, 4, 64)[..., 1:31])  # at an odd offset: the pair's is still even
    assert not pairs(torch.empty(2, 3, 4, 31))  # W odd: rows at odd offsets, a last pair half outside
    assert not pairs(torch.empty(2, 3, 4, 31)[..., :30])  # rows 31 apart
    assert not pairs(torch.empty(2, 3, 4, 32)[..., :31])  # W odd
    assert not pairs(torch.empty(2, 3, 4, 64)[..., ::2])  # W not contiguous
    assert not pairs(torch.empty(2, 3, 4, 32), stride=(2, 1))  # stride 1 along W
    assert not pairs(torch.empty(2, 4, 32, 3).movedim(-1, 1))  # channels_last: tiles along C


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice"])
def test_cuda_launches_compute_the_same_on_cpu(dims, config, dtype, layout, int64, monkeypatch):
    """What a GPU launches (its tiles, its tile axis, the gather backward also for windows that
    do not overlap, which CPU runs otherwise scatter; with 64-bit offsets too; (n, c) planes at
    one stride or not) gives PyTorch's results in the interpreter."""
    if int64:  # the launches of tensors beyond 2**30 elements, without one
        monkeypatch.setattr(mp, "INT32_SPAN_LIMIT", 1)
    kwargs = _kwargs(config, dims)
    x = _layout(_random(SHAPES[dims], dtype, "cpu"), layout).requires_grad_(True)
    ref, ref_idx = TORCH[dims](x, **kwargs, return_indices=True)
    k, s, p, d = (mp._as_tuple("", "", kwargs.get(name, default), dims) for name, default in
                  [("kernel_size", None), ("stride", kwargs["kernel_size"]), ("padding", 0), ("dilation", 1)])  # fmt: skip
    channels_last = layout == "channels_last" and dims > 1
    out, code, idx = mp._forward_outputs(x, ref.shape[2:], k, channels_last, True, True)
    forward = mp.forward_launch_spec(x, out, code, idx, k, s, p, d, "cuda")
    assert forward.constexprs["INT64"] == int64
    # Along W with more than one output row, a CUDA tile column walks the whole (OH, OW) plane.
    assert forward.constexprs["FLAT_HW"] == (not forward.constexprs["C_INNER"] and dims > 1 and ref.shape[-2] > 1)
    # Planes (n, c) at one stride are addressed without a division by C; a channel slice's are not.
    assert forward.constexprs["NC_UNIFORM"] == (layout == "contiguous")
    mp._launch(forward, x.device)
    assert _same_bits(out, ref) and torch.equal(idx, ref_idx)

    grad = _random(ref.shape, dtype, "cpu", seed=4)
    grad_in = torch.empty_like(x)
    spec = mp.backward_launch_spec(torch.empty_like(code, dtype=dtype).copy_(grad), code, grad_in, k, s, p, d, "cuda")
    # The gather regrouped by phase, unless a base would carry too many phases (strides of 3 in 2D or 3D).
    phased = math.prod(s) <= mp.PHASE_LIMIT
    assert spec.kernel == ("backward_phase" if phased else "backward")
    along_w = not spec.constexprs["C_INNER"]
    assert along_w == (layout != "channels_last")  # grad_in here is laid out like x
    # Along W, columns walk a plane (of bases, or of elements) when it has more than one row.
    rows_of_plane = -(-(x.shape[-2] + p[-2]) // s[-2]) if phased and dims > 1 else x.shape[-2] if dims > 1 else 1
    assert spec.constexprs["FLAT_HW"] == (along_w and rows_of_plane > 1)
    planes_at_one_stride = [t.stride(0) == t.shape[1] * t.stride(1) for t in (grad_in, code)]
    assert spec.constexprs["NC_UNIFORM"] == all(planes_at_one_stride)  # grad_in: fresh, like x
    mp._launch(spec, x.device)
    torch.testing.assert_close(grad_in, _reference_grad(dims, x, kwargs, grad), **_grad_tolerance(dtype, CONFIGS[config][1]))


# (kernel, stride, padding, dilation): phases 1, 2, 4 or 8; 1-9 candidate windows a base; windows
# that leave gaps (k2 s3: 9 phases in 2D, the plain gather); dilation with and without stride.
# Dilation beyond the stride: windows that hold no phase of a base along some dimension.
PHASE_GEOMETRIES = [(3, 2, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (4, 2, 2, 1), (5, 2, 2, 1), (3, 2, 1, 2), (2, 1, 0, 2), (2, 3, 1, 1),
                    (3, 1, 1, 3), (2, 2, 1, 3)]  # fmt: skip


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "channel_slice", "strided_view"])
@pytest.mark.parametrize("geometry", PHASE_GEOMETRIES, ids=lambda g: "k{}s{}p{}d{}".format(*g))
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_phase_backward_sums_in_pytorch_order(dims, geometry, layout):
    """The CUDA backward (regrouped by phase) adds each input's gradients in PyTorch's CPU order:
    float32 gradients equal, bit for bit, with ties (rounded inputs) and overlapping windows, for
    inputs and gradients in any layout (addressed through their strides); a NaN or infinite output
    gradient reaches its window's winner and nothing else."""
    k, s, p, d = ((v,) * dims for v in geometry)
    # W odd in 1D, even in 2D and 3D: contiguous along W, stride 2 and padding 0 or 2, the
    # phases along W are stored in pairs (see the next test).
    shape = {1: (2, 3, 17), 2: (2, 3, 13, 12), 3: (2, 3, 7, 9, 6)}[dims]
    x = _layout(_random(shape, torch.float32, "cpu").round(decimals=1), layout).requires_grad_(True)
    ref = TORCH[dims](x, k, s, p, d)
    grad = _random(ref.shape, torch.float32, "cpu", seed=5)
    grad.view(-1)[::7], grad.view(-1)[3::11] = float("nan"), float("-inf")  # reach their winners only
    grad = _layout(grad, layout)
    (ref_grad,) = torch.autograd.grad(ref, x, grad)
    channels_last = layout == "channels_last" and dims > 1
    out, code, idx = mp._forward_outputs(x, ref.shape[2:], k, channels_last, True, False)
    mp._launch(mp.forward_launch_spec(x, out, code, idx, k, s, p, d, "cuda"), x.device)
    grad_in = _layout(torch.full(x.shape, float("nan")), layout)  # laid out like x; every element written
    spec = mp.backward_launch_spec(torch.empty_like(code, dtype=grad.dtype).copy_(grad), code, grad_in, k, s, p, d, "cuda")
    assert spec.kernel == ("backward_phase" if math.prod(s) <= mp.PHASE_LIMIT else "backward")
    assert spec.constexprs["NC_UNIFORM"] == (layout != "channel_slice") or spec.constexprs["C_INNER"]
    mp._launch(spec, x.device)
    assert _same_bits(grad_in, ref_grad)


@pytest.mark.parametrize("kernel, stride, dilation", [(3, 1, 1), (3, 2, 1), (2, 3, 1), (3, 1, 4), (2, 2, 3), (4, 3, 2)])
def test_phase_backward_decides_taps_while_compiling_as_defined(kernel, stride, dilation):
    """The phase backward's compile-time decisions, against the definition: input i = STR * a + p
    - PAD lies in window o = a - u at tap j when o * STR - PAD + j * DIL == i, 0 <= j < K."""
    candidates = (kernel - 1) * dilation // stride + 1
    for u in range(candidates + 2):
        taps = [mp._phase_tap(p, u, kernel, stride, dilation) for p in range(stride)]
        for p, tap in enumerate(taps):
            holders = [j for j in range(kernel) if (-u) * stride + j * dilation == p]  # a = 0, PAD cancels
            assert tap == (holders[0] if holders else -1), (u, p)
        assert mp._window_holds_a_phase(u, kernel, stride, dilation) == any(t >= 0 for t in taps)
        if u >= candidates:
            assert not mp._window_holds_a_phase(u, kernel, stride, dilation)
    # Two dimensions: a phase's tap is the window's flat tap, or -1 where either dimension misses.
    for p in range(stride * stride):
        for uh in range(candidates):
            for uw in range(candidates):
                jh = mp._phase_tap(p // stride, uh, kernel, stride, dilation)
                jw = mp._phase_tap(p % stride, uw, kernel, stride, dilation)
                want = jh * kernel + jw if jh >= 0 and jw >= 0 else -1
                got = mp._phases_tap(p, 0, uh, uw, 1, kernel, kernel, 1, stride, stride, 1, dilation, dilation)
                assert got == want


def test_phase_backward_pairs_the_phases_along_w_only_where_aligned():
    """Phases 2*a - PAD and the next are stored as one access where W is contiguous and even,
    every other stride even and the padding even: the pair then starts at an even offset and is
    inside the input whole or not at all."""

    def pairs(x, kernel=2, stride=2, padding=0):
        k, s, p, d = ([v] * 2 for v in (kernel, stride, padding, 1))
        outputs = [mp.pool_output_size(n, kernel, stride, padding)[0] for n in x.shape[2:]]
        channels_last = mp._strides_like_channels_last(x.shape, x.stride())
        out, code, _ = mp._forward_outputs(x, outputs, k, channels_last, True, False)
        spec = mp.backward_launch_spec(out, code, x, k, s, p, d, "cuda")
        return spec.constexprs.get("PAIR_W", False)

    assert pairs(torch.empty(2, 3, 6, 12)) and pairs(torch.empty(2, 3, 6, 12), kernel=4, padding=2)
    assert pairs(torch.empty(2, 3, 6, 64)[..., 1:13])  # an odd storage offset; rows 64 apart
    assert not pairs(torch.empty(2, 3, 6, 12), kernel=3, padding=1)  # pairs would start at odd offsets
    assert not pairs(torch.empty(2, 3, 6, 11))  # W odd
    assert not pairs(torch.empty(2, 3, 6, 13)[..., :12])  # rows 13 apart
    assert not pairs(torch.empty(2, 3, 6, 12), stride=1)  # one phase along W
    assert not pairs(torch.empty(2, 3, 6, 12), stride=3)  # the plain gather: 9 phases
    assert not pairs(_layout(torch.empty(2, 16, 6, 12), "channels_last"))  # tiles along C


# --------------------------------------------------------------------------------------------
# The compiled kernels on a GPU at real layer sizes (many tiles, full grids, 64-bit offsets)
# --------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled kernels at real sizes"
)
# The benchmarks' layers (benchmarks/cases.py): (input, kwargs, windows overlap).
REAL_LAYERS = {
    "seed": ((32, 10, 222, 222), dict(kernel_size=2), False),
    "resnet_stem": ((32, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1), True),
    "video3d": ((8, 64, 16, 56, 56), dict(kernel_size=2), False),
    "seq1d": ((32, 256, 4096), dict(kernel_size=3, stride=2, padding=1), True),
}


def _cuda_random(shape, dtype, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).to(dtype)


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("layer", list(REAL_LAYERS))
def test_real_layers_on_cuda(layer, layout, dtype):
    shape, kwargs, overlapping = REAL_LAYERS[layer]
    dims = len(shape) - 2
    x = _layout(_cuda_random(shape, dtype, seed=0), layout).requires_grad_(True)
    out, idx = OURS[dims](x, **kwargs, return_indices=True)
    ref, ref_idx = TORCH[dims](x, **kwargs, return_indices=True)
    assert _same_bits(out, ref) and torch.equal(idx, ref_idx)
    if dims > 1:  # 1D has no memory format: PyTorch's CUDA output keeps C innermost, its CPU one does not
        assert out.stride() == ref.stride()
    grad = _cuda_random(out.shape, dtype, seed=1)
    (g,) = torch.autograd.grad(OURS[dims](x, **kwargs), x, grad)
    torch.testing.assert_close(g, _reference_grad(dims, x, kwargs, grad), **_grad_tolerance(dtype, overlapping))
    (again,) = torch.autograd.grad(OURS[dims](x, **kwargs), x, grad)
    assert torch.equal(g, again)  # deterministic at full size too


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_offsets_beyond_int32_on_cuda(layout):
    """2.2e9 elements: offsets overflow 32 bits, so the kernels must take their 64-bit path."""
    shape, kwargs = (1, 8, 16400, 16400), dict(kernel_size=3, stride=2, padding=1)
    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip(f"needs 40 GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    x = _layout(_cuda_random(shape, torch.float16, seed=0), layout)
    assert x.numel() > 2**31
    x.requires_grad_(True)
    out, idx = kernels.max_pool2d(x, **kwargs, return_indices=True)
    grad = _cuda_random(out.shape, torch.float16, seed=1)
    (g,) = torch.autograd.grad(out, x, grad)
    for c in range(shape[1]):  # PyTorch one channel at a time: indices are per plane, so they agree
        xc = x[:, c : c + 1].detach().requires_grad_(True)
        ref, ref_idx = F.max_pool2d(xc, **kwargs, return_indices=True)
        assert _same_bits(out[:, c : c + 1], ref) and torch.equal(idx[:, c : c + 1], ref_idx), f"channel {c}"
        ref_g = _reference_grad(2, xc, kwargs, grad[:, c : c + 1])
        torch.testing.assert_close(g[:, c : c + 1], ref_g, **_grad_tolerance(torch.float16, True), msg=f"channel {c}")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_launches_of_one_plan_with_aligned_and_misaligned_pointers(dtype):
    """Repeated launches of a plan skip Triton's dispatch and call the kernel it compiled, which
    assumed the pointers' 16-byte alignment: an input and an output gradient one element off 16
    bytes, with the same sizes and strides (the same plans), must get their own kernels. Each is
    called several times on fresh data, alternating, and compared with PyTorch's."""
    shape, kwargs = (4, 8, 30, 34), dict(kernel_size=3, stride=2, padding=1)
    storage = torch.empty(math.prod(shape) + 1, device="cuda", dtype=dtype)
    inputs = {off: storage[off : off + math.prod(shape)].view(shape) for off in (0, 1)}
    assert inputs[1].data_ptr() % 16 != 0 and inputs[0].stride() == inputs[1].stride()
    for seed in range(3):
        for off, x in inputs.items():
            x.copy_(_cuda_random(shape, dtype, seed=10 * seed + off))
            xg = x.detach().requires_grad_(True)
            out = kernels.max_pool2d(xg, **kwargs)
            assert _same_bits(out, F.max_pool2d(x, **kwargs)), f"seed {seed}, offset {off}"
            grad_storage = torch.empty(out.numel() + 1, device="cuda", dtype=dtype)  # the backward's too
            grad = grad_storage[off : off + out.numel()].view(out.shape).copy_(_cuda_random(out.shape, dtype, 99))
            (g,) = torch.autograd.grad(out, xg, grad)
            torch.testing.assert_close(g, _reference_grad(2, x, kwargs, grad), **_grad_tolerance(dtype, True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA graph capture")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_graph_of_forward_and_backward_replays_with_new_inputs(layout):
    """A CUDA graph removes the host time of a layer's calls (torch.cuda.graph; torch.compile's
    "reduce-overhead" mode builds the same): captured after warm-up (plans made, kernels
    compiled), the forward and backward launch on the capture stream into the graph's memory,
    and each replay pools whatever the static input and gradient hold then."""
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    x = _layout(_cuda_random((4, 8, 17, 19), torch.float32, seed=0), layout).requires_grad_(True)
    grad = _cuda_random((4, 8, 9, 10), torch.float32, seed=1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            x.grad = None
            kernels.max_pool2d(x, **kwargs).backward(grad)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):
        out = kernels.max_pool2d(x, **kwargs)
        out.backward(grad)
    for seed in (2, 3):
        with torch.no_grad():
            x.copy_(_cuda_random(x.shape, torch.float32, seed=seed))
            grad.copy_(_cuda_random(grad.shape, torch.float32, seed=seed + 10))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, F.max_pool2d(x.detach(), **kwargs)), f"seed {seed}"
        torch.testing.assert_close(x.grad, _reference_grad(2, x, kwargs, grad), msg=f"seed {seed}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_grids_fit_the_launch_limits(layout):
    """One 16400 x 16400 plane is 2.1 million tiles: CUDA caps grid axes 1 and 2 at 65,535
    programs, so every launch puts its tiles on axis 0 (up to 2**31 - 1) and splits them itself."""
    x = _layout(torch.empty((1, 8, 16400, 16400), dtype=torch.float16, device="meta"), layout)
    k, s, p, d = (3, 3), (2, 2), (1, 1), (1, 1)
    out, code, idx = mp._forward_outputs(x, (8200, 8200), k, layout == "channels_last", True, True)
    forward = mp.forward_launch_spec(x, out, code, idx, k, s, p, d, "cuda")
    backward = mp.backward_launch_spec(out, code, torch.empty_like(x), k, s, p, d, "cuda")
    for spec, (rows, cols) in [(forward, forward.args[-2:]), (backward, backward.args[-2:])]:
        assert spec.constexprs["INT64"]
        tiles = math.ceil(rows / spec.constexprs["BLOCK_M"]) * math.ceil(cols / spec.constexprs["BLOCK_N"])
        assert spec.grid == (tiles,) and 65535 < tiles < 2**31


@pytest.mark.parametrize("bad", [True, 2.0, (2, 2.0), [2, True]])
def test_argument_checks_are_not_cached_away(bad):
    """A call with valid ints memoizes its checks; equal-hashing bools and floats must still fail."""
    x = _random((1, 2, 6, 6), torch.float32, "cpu")
    kernels.max_pool2d(x, 2)
    kernels.max_pool2d(x, (2, 2))
    with pytest.raises(TypeError, match="kernel_size must contain ints"):
        kernels.max_pool2d(x, bad)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_eager_calls_skip_the_custom_op_dispatch(requires_grad, monkeypatch):
    """Plain tensors outside torch.compile run the same bodies without the op's Python dispatch."""
    monkeypatch.setattr(torch.ops.tritonpool, "max_pool_forward", None)  # would fail if called
    x = _random((2, 3, 9, 11), torch.float32, "cpu").requires_grad_(requires_grad)
    out = kernels.max_pool2d(x, 3, 2, 1)
    assert torch.equal(out, F.max_pool2d(x, 3, 2, 1))
    assert (out.grad_fn is not None) == requires_grad
    if requires_grad:
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
        expected = _reference_grad(2, x, dict(kernel_size=3, stride=2, padding=1), torch.ones_like(out))
        torch.testing.assert_close(g, expected)


# --------------------------------------------------------------------------------------------
# Call plans: an eager call checked and planned once per layer and input layout
# --------------------------------------------------------------------------------------------


def _tensor_meta(arg):
    return (arg.dtype, arg.device, arg.shape, arg.stride()) if isinstance(arg, torch.Tensor) else arg


def _same_launch(a: mp.LaunchSpec, b: mp.LaunchSpec) -> bool:
    """The same kernel, grid, plan (the memoized object itself) and arguments (tensors: their
    dtype, device, sizes and strides)."""
    return (
        (a.kernel, a.grid, a.num_warps) == (b.kernel, b.grid, b.num_warps)
        and a.constexprs is b.constexprs
        and list(map(_tensor_meta, a.args)) == list(map(_tensor_meta, b.args))
    )


def _planned_and_unplanned(monkeypatch, call, x: torch.Tensor, expanded_grad: bool = False) -> tuple[int, list]:
    """``call(x)`` (and its input gradient, if it has one) as an eager call runs, with the plans
    kept, and with none kept (every call checked and planned afresh, as a first call is): same
    bits, same strides, same launches. Returns how many calls were planned with plans kept, and
    the launches."""
    runs = []
    for keep in (True, False):
        launches, planned = [], []
        with monkeypatch.context() as m:
            real_launch, real_plan = mp._launch, mp._CallPlan
            m.setattr(mp, "_launch", lambda spec, dev: (launches.append(spec), real_launch(spec, dev)))
            m.setattr(mp, "_CallPlan", lambda call: (planned.append(1), real_plan(call))[1])
            if not keep:
                m.setattr(mp, "_call_key", lambda *args: None)
            outs = call(x)
            outs = outs if isinstance(outs, tuple) else (outs,)
            grads = ()
            if outs[0].requires_grad:
                if expanded_grad:  # stride 0, as out.sum()'s gradient arrives
                    grad = torch.ones((), dtype=x.dtype, device=x.device).expand(outs[0].shape)
                else:
                    grad = _random(outs[0].shape, x.dtype, x.device, seed=5)
                grads = torch.autograd.grad(outs[0], x, grad)
        runs.append((outs + grads, launches, len(planned)))
    (tensors, launches, planned), (fresh_tensors, fresh_launches, _) = runs
    for ours, fresh in zip(tensors, fresh_tensors, strict=True):
        assert ours.stride() == fresh.stride() and _same_bits(ours, fresh)
    assert len(launches) == len(fresh_launches) and all(map(_same_launch, launches, fresh_launches))
    return planned, launches


# (dims, input shape, layout, keyword arguments)
PLANNED_CALLS = {
    "2d": (2, (2, 3, 9, 11), "contiguous", dict(kernel_size=3, stride=2, padding=1)),
    "2d_channels_last_indices": (2, (2, 5, 9, 11), "channels_last", dict(kernel_size=2, return_indices=True)),
    "1d_dilated_ceil": (1, (2, 3, 17), "contiguous", dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True)),
    "3d_same": (3, (2, 3, 5, 7, 6), "channels_last", dict(kernel_size=2, padding="same")),
    "2d_data_format": (2, (2, 9, 11, 4), "contiguous",
                       dict(kernel_size=3, stride=2, padding="same", data_format="channels_last", return_indices=True)),
    "2d_unbatched": (2, (3, 9, 11), "contiguous", dict(kernel_size=2, stride=1)),
    "2d_strided_view": (2, (2, 3, 9, 11), "strided_view", dict(kernel_size=(2, 3), stride=(1, 2))),
    "2d_empty_batch": (2, (0, 3, 9, 11), "contiguous", dict(kernel_size=2)),
}  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("case", list(PLANNED_CALLS))
def test_a_planned_call_is_the_call_it_planned(case, requires_grad, device, monkeypatch):
    """A layer's first call plans it; later calls on inputs of the same sizes, strides, dtype and
    device run that plan on their own tensors. Each gives what a call checked and planned afresh
    gives, forward and backward (the third with an expanded gradient, which the planned backward
    hands to the general one)."""
    dims, shape, layout, kwargs = PLANNED_CALLS[case]
    monkeypatch.setattr(mp, "_CALLS", {})
    planned = 0
    for seed in range(3):
        x = _layout(_random(shape, torch.float32, device, seed), layout).requires_grad_(requires_grad)
        calls, _ = _planned_and_unplanned(monkeypatch, lambda t: OURS[dims](t, **kwargs), x, expanded_grad=seed == 2)
        planned += calls
    assert planned == 1 and len(mp._CALLS) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_calls_that_differ_in_what_a_plan_fixes_get_their_own_plans(device, monkeypatch):
    """Sizes, strides, dtype, device, whether a backward follows, every pooling argument and the
    64-bit offset threshold each select a plan; a call that differs in any of them never runs
    another's (each matches a call planned afresh, launches included)."""
    monkeypatch.setattr(mp, "_CALLS", {})
    x = _random((2, 3, 8, 8), torch.float32, device)
    pool = {"kernel_size": 3, "stride": 2}
    calls = [
        (x, pool),
        (_layout(x, "channels_last"), pool),  # same sizes, other strides
        (x[:, :, :, :6], pool),  # same strides, other sizes
        (x.double(), pool),
        (x.clone().requires_grad_(True), pool),  # a backward follows: the code is saved
        (x, dict(pool, return_indices=True)),
        (x, dict(pool, ceil_mode=True)),
        (x, dict(pool, stride=1)),
        (x, dict(pool, padding=1)),
        (x, dict(pool, dilation=2)),
        (x, dict(pool, kernel_size=(3, 3))),  # the same geometry, spelled otherwise
        (x[0], pool),  # unbatched (C, H, W) ...
    ]
    if device == "cuda":
        calls.append((x.cpu(), pool))
    for t, kwargs in calls:
        planned, _ = _planned_and_unplanned(monkeypatch, lambda t, kwargs=kwargs: kernels.max_pool2d(t, **kwargs), t)
        assert planned == 1
    # ... and the same sizes as a batched 1D input
    planned, _ = _planned_and_unplanned(monkeypatch, lambda t: kernels.max_pool1d(t, **pool), x[0])
    assert planned == 1
    assert len(mp._CALLS) == len(calls) + 1
    with torch.no_grad():  # no backward follows: the first call's plan
        planned, _ = _planned_and_unplanned(monkeypatch, lambda t: kernels.max_pool2d(t, **pool), x.clone().requires_grad_(True))
    assert planned == 0
    monkeypatch.setattr(mp, "INT32_SPAN_LIMIT", 1)  # every launch takes 64-bit offsets
    planned, launches = _planned_and_unplanned(monkeypatch, lambda t: kernels.max_pool2d(t, **pool), x)
    assert planned == 1 and launches[0].constexprs["INT64"]
