"""Max pooling in 1D, 2D and 3D as Triton kernels, forward and backward, with PyTorch's exact semantics.

Why a custom kernel: PyTorch's max pooling writes an int64 index for every output on every forward
pass and keeps those 8 bytes per output alive for the backward; its CUDA 3D backward scatters with
atomics, so its gradients are not deterministic. Here:

* the forward computes values only, unless indices or a backward are needed;
* for the backward it saves the *tap* that won each window (its position inside the window,
  0 .. K-1 in window order) in int8 for windows of up to 127 taps: 1 byte per output instead of 8;
* the backward gathers: every input element visits the few windows that can contain it, in
  ascending output order, and sums the gradients of those whose saved tap points back at it.
  No atomics, so two runs give bitwise identical gradients, and the summation order is PyTorch's
  CPU order, so float32 gradients match PyTorch's bit for bit. Where windows overlap, the gather
  is regrouped by phase: a thread (on CPU a tile) takes the stride's worth of neighbouring input
  elements (the phases of one base) and loads each window they share once, with every tap known
  at compile time. On CPU, windows that do not overlap scatter instead: each window adds its
  gradient to its winner, which no other window touches.

One kernel source serves every case. 1D and 2D pooling are 3D pooling with size-1 leading spatial
dimensions; every tensor is addressed through its strides, so channels_last inputs and
non-contiguous views are pooled in place, without a copy. On CUDA the kernels are compiled by
Triton; CPU tensors run the same source through Triton's interpreter, to which
kernels/interpreter.py gives vectorized loads and stores.

File layout: geometry (pure Python) -> kernels -> launch heuristic -> launchers ->
custom ops with autograd (and beside them the eager path: call plans) -> functional API ->
nn.Module drop-ins.
"""

from __future__ import annotations

import functools
import inspect
import math
from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode
from triton.runtime.interpreter import InterpretedFunction

from kernels import interpreter

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

DATA_FORMATS = ("channels_first", "channels_last")
PADDING_STRINGS = ("valid", "same")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class PoolArgumentError(ValueError, RuntimeError):
    """An invalid pooling argument.

    A ValueError, and also a RuntimeError because that is what PyTorch raises for the same
    mistakes: code written against ``torch.nn.functional`` keeps catching it.
    """


# --------------------------------------------------------------------------------------------
# Geometry: output sizes and padding, one spatial dimension at a time (shared by 1D, 2D and 3D)
# --------------------------------------------------------------------------------------------


class PoolGeometry(NamedTuple):
    """Per-spatial-dimension pooling parameters, resolved and validated."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]  # padding *before* each dimension; what lies after is implied
    dilation: tuple[int, ...]
    output_size: tuple[int, ...]


def _memo(fn):
    """Memoize a pure host-side helper (argument checks, geometry, launch plans): a layer called
    again with the same shapes then costs a dictionary lookup instead of tens of microseconds of
    Python, which on a GPU is what a small layer's call is made of. Bypassed while tracing
    (torch.compile, opcheck, export), where sizes may be symbolic and the work is done once."""
    cached = functools.lru_cache(maxsize=4096)(fn)

    @functools.wraps(fn)
    def call(*args):
        if torch.compiler.is_compiling():
            return fn(*args)
        try:
            return cached(*args)
        except TypeError:  # unhashable symbolic sizes (or fn's own TypeError, which recurs)
            return fn(*args)

    call.cache_clear = cached.cache_clear
    return call


def pool_output_size(
    size: int,
    kernel_size: int,
    stride: int,
    padding: int | str = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> tuple[int, int]:
    """Output length and padding before, for one spatial dimension of length ``size``.

    Integer padding follows PyTorch: ``floor`` (or ``ceil``) of
    ``(size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride + 1``, where with
    ``ceil_mode`` the last window must start inside the input or the left padding.
    ``"valid"`` is padding 0. ``"same"`` follows TensorFlow/Keras: ``ceil(size / stride)``
    outputs, total padding ``max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)``,
    the smaller half before. The result may be below 1; callers reject that.
    """
    effective = dilation * (kernel_size - 1) + 1
    if padding == "same":
        out = -(-size // stride)
        total = torch.sym_max((out - 1) * stride + effective - size, 0)
        return out, total // 2
    pad = 0 if padding == "valid" else int(padding)
    span = size + 2 * pad - effective + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1  # floor division rounds toward -inf, as PyTorch's div_rtn
    if ceil_mode:
        # The last window starts at most at size + pad - 1. PyTorch writes this as a branch
        # (out -= 1 where (out - 1) * stride >= size + pad); a min is the same for padding up to
        # half the window, and under torch.compile with dynamic sizes it adds no guard on the
        # size's remainder, which recompiled the graph for every other size.
        out = torch.sym_min(out, (size + pad - 1) // stride + 1)
    return out, pad


def _as_tuple(fn: str, name: str, value, dims: int) -> tuple:
    """Expand an int (or a 1-tuple) to ``dims`` values, as PyTorch's pooling does."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = tuple(value) * dims
        elif len(value) != dims:
            raise PoolArgumentError(
                f"{fn}: {name} must be a single int or a tuple of {dims} ints, got {value!r}"
            )
        values = tuple(value)
    else:
        values = (value,) * dims
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{fn}: {name} must contain ints, got {value!r}")
    return values


def _check_pool_args(
    fn: str, dims: int, kernel_size, stride, padding, dilation, ceil_mode: bool, data_format: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | str, tuple[int, ...]]:
    """Validate what can be validated without an input; return kernel, stride, padding, dilation."""
    if data_format not in DATA_FORMATS:
        raise PoolArgumentError(
            f"{fn}: data_format must be one of {DATA_FORMATS}, got {data_format!r}"
        )
    kernel = _as_tuple(fn, "kernel_size", kernel_size, dims)
    if min(kernel) < 1:
        raise PoolArgumentError(f"{fn}: kernel_size must be >= 1 in every dimension, got {kernel}")
    strides = kernel if stride is None or stride == [] or stride == () else _as_tuple(fn, "stride", stride, dims)
    if min(strides) < 1:
        raise PoolArgumentError(f"{fn}: stride must be >= 1 in every dimension, got {strides}")
    dilations = _as_tuple(fn, "dilation", dilation, dims)
    if min(dilations) < 1:
        raise PoolArgumentError(f"{fn}: dilation must be >= 1 in every dimension, got {dilations}")
    if isinstance(padding, str):
        pads = padding.lower()
        if pads not in PADDING_STRINGS:
            raise PoolArgumentError(
                f"{fn}: padding must be an int, a tuple of {dims} ints, 'valid' or 'same', got {padding!r}"
            )
        if pads == "same" and ceil_mode:
            raise PoolArgumentError(
                f"{fn}: ceil_mode=True cannot be combined with padding='same', which fixes the "
                "output size to ceil(input / stride)"
            )
    else:
        pads = _as_tuple(fn, "padding", padding, dims)
        limit = tuple(k // 2 for k in kernel)
        if any(p < 0 or p > m for p, m in zip(pads, limit)):
            raise PoolArgumentError(
                f"{fn}: padding must be between 0 and kernel_size // 2 = {limit} in every "
                f"dimension, got padding={pads} for kernel_size={kernel}"
            )
    return kernel, strides, pads, dilations


_UNCACHEABLE = object()


def _frozen(value):
    """A pooling argument as a cache key, or _UNCACHEABLE: only exact ints (bools are not),
    strings, None and lists/tuples of exact ints, so that a key never stands for a value the
    checks would reject (as a cache, 2.0 == 2 and True == 1)."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if (kind is tuple or kind is list) and all(type(v) is int for v in value):
        return tuple(value)
    return _UNCACHEABLE


_check_pool_args_cached = _memo(_check_pool_args)


def _checked_pool_args(fn: str, dims: int, kernel_size, stride, padding, dilation, ceil_mode, data_format):
    """``_check_pool_args``, memoized for the argument values it can key on (a layer's are
    checked once, not on every call); anything else is checked afresh, and errors never cache."""
    key = (_frozen(kernel_size), _frozen(stride), _frozen(padding), _frozen(dilation))
    if _UNCACHEABLE in key or type(ceil_mode) is not bool or type(data_format) is not str:
        return _check_pool_args(fn, dims, kernel_size, stride, padding, dilation, ceil_mode, data_format)
    return _check_pool_args_cached(fn, dims, *key, ceil_mode, data_format)


@_memo
def _resolve_geometry(
    fn: str, spatial: Sequence[int], kernel, strides, pads, dilations, ceil_mode: bool
) -> PoolGeometry:
    outs, before = [], []
    for i, size in enumerate(spatial):
        pad = pads if isinstance(pads, str) else pads[i]
        out, pre = pool_output_size(size, kernel[i], strides[i], pad, dilations[i], ceil_mode)
        outs.append(out)
        before.append(pre)
    if min(outs) < 1:
        raise PoolArgumentError(
            f"{fn}: input of spatial size {tuple(spatial)} is too small for kernel_size={kernel}, "
            f"stride={strides}, padding={pads}, dilation={dilations}: the output size would be "
            f"{tuple(outs)}, and it must be at least 1 in every dimension"
        )
    return PoolGeometry(kernel, strides, tuple(before), dilations, tuple(outs))


@_memo
def _strides_like_channels_last(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """PyTorch's ``suggest_memory_format() == channels_last(_3d)`` rule, for 4D and 5D tensors.

    Walk the dimensions from the one that should be innermost (C, then W, H, (D), N) and require
    non-decreasing strides; ambiguous cases (size-1 dimensions) fall back to contiguous.
    """
    if len(shape) not in (4, 5) or strides[1] == 0:
        return False
    order = [1] + list(range(len(shape) - 1, 1, -1)) + [0]
    lowest = 0
    for d in order:
        if shape[d] == 0 or strides[d] < lowest:
            return False
        if d == 0 and lowest == strides[1]:
            return False
        lowest = strides[d] * shape[d] if shape[d] > 1 else strides[d]
    return True


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
# Every launch covers a 2D tile space of ROWS x COLS. With C_INNER the columns walk the channels
# (the contiguous axis of a channels_last tensor: coalesced, vectorizable accesses) and the rows
# walk (n, d, h, w); otherwise the columns walk the innermost spatial axis and the rows (n, c, d, h),
# or (n, d, h, c) with C_FASTEST. (The CUDA backward tiles the bases of its phases the same way.)
# Coordinates along the rows are [BLOCK_M, 1] tensors and along the columns [1, BLOCK_N], so the
# per-tap index arithmetic runs on vectors; only loads, compares and selects touch the whole tile.
# On CUDA, Triton derives which thread holds which tile elements from the accesses: each thread
# takes as many neighbouring columns as the widest contiguous access allows (8 float16 for a
# 128-bit store), and one layout serves all of a kernel's loads and stores. Two hints (true
# statements, no-ops in the interpreter) steer it:
# * Tiles along W declare their output offsets contiguous in runs of 1 (tl.max_contiguous), so
#   each thread takes one column. Their loads are gathers (the stride, a shift per tap): with 8
#   neighbouring columns a thread, the 32 lanes of one warp-wide load sit 8 windows apart and
#   touch 8x the 32-byte sectors that one column a thread touches, where neighbouring lanes read
#   neighbouring windows (a float16 gather at stride 2: 32 sectors a request against 4; the
#   contiguous large_batch layer ran at 20% of copy bandwidth on an H200, channels_last at 57%).
#   A thread's rows then also share its column's index math. Stores stay coalesced: a warp writes
#   32 neighbouring outputs.
# * Tiles along C declare their columns contiguous in runs of VEC, one 128-bit access of values:
#   otherwise the int8 code (16 to a 128-bit access) doubles every thread's run and each warp-wide
#   load of values covers every other 16 bytes.
# benchmarks/inspect_kernels.py reports the sectors each access's warps touch.
# These are plain functions: triton.jit compiles them for CUDA and InterpretedFunction runs the
# same source on CPU tensors (a jit function cannot call helpers in the interpreter, hence no
# helpers, nor the jit-defined parts of triton.language such as tl.zeros; compile-time decisions
# are triton.constexpr_function, plain Python in both).


def _max_pool_forward_kernel(
    x_ptr,  # input, logically (N, C, D, H, W), any strides
    out_ptr,  # pooled values, logically (N, C, OD, OH, OW)
    code_ptr,  # winning tap of each window (int8/16/32, -1 = none); same strides as out
    idx_ptr,  # PyTorch's int64 index of the winner inside its (D, H, W) volume; same strides as out
    C, D, H, W,  # input sizes (N is implied by ROWS)
    OD, OH, OW,  # output sizes
    sxn, sxc, sxd, sxh, sxw,  # input strides, in elements
    son, soc, sod, soh, sow,  # output strides, in elements (shared by out, code and idx)
    ROWS, COLS,  # extent of the tile space
    K_D: tl.constexpr, K_H: tl.constexpr, K_W: tl.constexpr,  # kernel size
    STR_D: tl.constexpr, STR_H: tl.constexpr, STR_W: tl.constexpr,  # stride
    PAD_D: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,  # padding before
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,  # dilation
    C_INNER: tl.constexpr,  # tile columns walk C (else OW)
    FLAT_HW: tl.constexpr,  # (not C_INNER) columns walk the whole (OH, OW) plane, contiguous in out
    C_FASTEST: tl.constexpr,  # (neither C_INNER nor FLAT_HW) rows walk (n, d, h, c), else (n, c, d, h)
    TRACK_ARGMAX: tl.constexpr,  # follow the winning tap (needed for code or indices)
    ARG: tl.constexpr,  # integer type that follows it (see _forward_plan)
    WRITE_CODE: tl.constexpr,  # store the winning tap for the backward
    EMPTY_WINDOWS: tl.constexpr,  # some window may hold no input element (always on CUDA, see _forward_plan)
    EDGE_D: tl.constexpr, EDGE_H: tl.constexpr, EDGE_W: tl.constexpr,  # taps may fall outside the input
    WRITE_INDICES: tl.constexpr,  # store PyTorch's int64 indices
    INT64: tl.constexpr,  # offsets may exceed int32
    ACC: tl.constexpr,  # compare in float32 (float64 for float64 inputs)
    VEC: tl.constexpr,  # (C_INNER) columns a thread takes: one 128-bit access of values
    NC_UNIFORM: tl.constexpr,  # (not C_INNER) n's strides are C times c's in both tensors
    PAIR_W: tl.constexpr,  # (CUDA, not C_INNER, STR_W == 2) load inputs 2*ow and 2*ow + 1 as one access
    CLAMP_TAIL: tl.constexpr,  # (interpreter) lanes past the last row or column repeat it, unmasked
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  # tile shape
):
    pid = tl.program_id(0)
    tiles_n = (COLS + BLOCK_N - 1) // BLOCK_N
    pid_m = pid // tiles_n
    pid_n = pid - pid_m * tiles_n
    if INT64:
        rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if CLAMP_TAIL:
        # Lanes past the end of the tile space (the last tiles along rows and columns are partly
        # outside it) repeat the last row or column instead of being masked off: they load what
        # it loads and store the same values to the same addresses, all within this program. For
        # the interpreter: a masked-off lane costs it as much as a live one, and every access
        # with a masked-off lane costs several more passes (clearing its index, filling its
        # value, compacting a store's lanes). A GPU masks lanes for free, so CUDA keeps the mask.
        rows = tl.minimum(rows, ROWS - 1)
        cols = tl.minimum(cols, COLS - 1)
    rows = rows[:, None]
    cols = cols[None, :]
    if C_INNER:
        cols = tl.max_contiguous(cols, [1, VEC])  # one layout for values and code (see above)
    in_rows = rows < ROWS
    in_cols = cols < COLS
    # Tap pointers are (x_ptr + what varies along the columns) + what varies along the rows: in
    # the interpreter the tile is then laid out row-major like everything else (a column-varying
    # offset broadcast over rows would come out column-major, and numpy mixing the two orders in
    # one operation is several times slower); compiled, the order of the additions is immaterial.
    if C_INNER:
        ow = rows % OW
        t = rows // OW
        oh = t % OH
        t = t // OH
        od = t % OD
        n = t // OD
        x_outer = n * sxn
        x_cols = x_ptr + cols * sxc
        o_off = (n * son + od * sod + oh * soh + ow * sow) + cols * soc
    elif FLAT_HW:
        # A row of out is a whole (OH, OW) plane, contiguous: tiles stay full where OW is far from
        # a power of two (56 outputs in a 64-column tile would idle an eighth of its lanes).
        oh = cols // OW
        ow = cols - oh * OW
        od = rows % OD
        t = rows // OD  # n * C + c
        if NC_UNIFORM:  # no division by C: a thread's rows would each pay for one (~12 instructions)
            x_outer = t * sxc
            o_nc = t * soc
        else:
            c = t % C
            n = t // C
            x_outer = n * sxn + c * sxc
            o_nc = n * son + c * soc
        o_off = (o_nc + od * sod) + cols
    else:
        ow = cols
        if C_FASTEST:
            c = rows % C
            t = rows // C
            oh = t % OH
            t = t // OH
            od = t % OD
            n = t // OD
        else:
            oh = rows % OH
            t = rows // OH
            od = t % OD
            t = t // OD
            c = t % C
            n = t // C
        if NC_UNIFORM and not C_FASTEST:  # t = n * C + c
            x_outer = t * sxc
            o_nc = t * soc
        else:
            x_outer = n * sxn + c * sxc
            o_nc = n * son + c * soc
        x_cols = x_ptr
        o_off = (o_nc + od * sod + oh * soh) + ow * sow
    if not C_INNER:
        o_off = tl.max_contiguous(o_off, [1, 1])  # one column a thread (see above)
    # Window starts; negative where the window begins in the padding.
    d0 = od * STR_D - PAD_D
    h0 = oh * STR_H - PAD_H
    w0 = ow * STR_W - PAD_W

    if TRACK_ARGMAX:
        # PyTorch starts every window at its first in-bounds tap (stepping by the dilation out
        # of the padding), so a window of -inf reports that tap, and so do we.
        jd0 = tl.where(d0 < 0, (DIL_D - 1 - d0) // DIL_D, 0) if EDGE_D else 0
        jh0 = tl.where(h0 < 0, (DIL_H - 1 - h0) // DIL_H, 0) if EDGE_H else 0
        jw0 = tl.where(w0 < 0, (DIL_W - 1 - w0) // DIL_W, 0) if EDGE_W else 0
        tap0 = (jd0 * K_H + jh0) * K_W + jw0
        arg = (tl.full([BLOCK_M, BLOCK_N], 0, tl.int32) + tap0).to(ARG)
    # Bounds are checked only along dimensions where some tap can fall outside the input
    # (padding, or a ceil_mode window past the end); elsewhere a tap's mask is the tile's.
    for kd in tl.static_range(K_D):
        id_ = d0 + kd * DIL_D
        ok_d = in_rows
        if EDGE_D:
            ok_d = ok_d & (id_ >= 0) & (id_ < D)
        off_d = x_outer + id_ * sxd
        for kh in tl.static_range(K_H):
            ih = h0 + kh * DIL_H
            ok_dh = ok_d
            if EDGE_H:
                ok_dh = ok_dh & (ih >= 0) & (ih < H)
            if not EDGE_W:
                ok_dhw = ok_dh & in_cols  # shared by the taps along W
            if FLAT_HW:  # (CUDA only) one full tile of row pointers, shared by the taps along W
                ptr_dh = x_ptr + (off_d + ih * sxh)
            if PAIR_W:
                # At stride 2 along W, the taps at 2*ow and 2*ow + 1 (which a 2x2 window has both
                # of, a 3x3 window padded by 1 its last two) come from one 32-bit load for 16-bit
                # types (64-bit for float32) instead of two scalar loads, split in registers.
                # Every stride but W's is even (_pairs_aligned): so is the pair's offset, which
                # with the 16-byte aligned x Triton specializes on makes the pair one access.
                row = tl.multiple_of(off_d + ih * sxh, [2, 2])
                pw = (w0 + PAD_W)[:, :, None] + tl.arange(0, 2)[None, None, :]
                if FLAT_HW:
                    pair_ptrs = (x_ptr + row)[:, :, None] + pw * sxw
                else:
                    pair_ptrs = (x_cols + pw * sxw) + row[:, :, None]
                pair_ok = (ok_dh & in_cols & (w0 + PAD_W < W))[:, :, None]  # W is even: both or neither
                even, odd = tl.split(tl.load(pair_ptrs, mask=pair_ok, other=float("-inf")))
            for kw in tl.static_range(K_W):
                iw = w0 + kw * DIL_W
                if C_INNER:  # (d, h, w) along the rows
                    ptrs = x_cols + (off_d + ih * sxh + iw * sxw)
                    if EDGE_W:
                        ok_dhw = (ok_dh & (iw >= 0) & (iw < W)) & in_cols
                elif FLAT_HW:  # (h, w) along the columns
                    ptrs = ptr_dh + iw * sxw
                    if EDGE_W:
                        ok_dhw = ok_dh & ((iw >= 0) & (iw < W) & in_cols)
                else:  # w along the columns
                    ptrs = (x_cols + iw * sxw) + (off_d + ih * sxh)
                    if EDGE_W:
                        ok_dhw = ok_dh & ((iw >= 0) & (iw < W) & in_cols)
                ok = ok_dhw
                # Masked taps (padding, outside the tile) read -inf, which never wins.
                if PAIR_W and kw * DIL_W - PAD_W == 0:
                    v = even.to(ACC)
                elif PAIR_W and kw * DIL_W - PAD_W == 1:
                    v = odd.to(ACC)
                else:
                    v = tl.load(ptrs, mask=ok, other=float("-inf")).to(ACC)
                if kd + kh + kw == 0:
                    # Against the initial -inf the first tap always wins (or ties at -inf, and
                    # then arg already holds tap0): no compare needed.
                    best = v
                else:
                    # PyTorch's rule, bit for bit: a strictly greater value wins (ties keep the
                    # first tap in window order) and a NaN always wins (the last NaN is reported).
                    take = (v > best) | (v != v)
                    best = tl.where(take, v, best)
                    if TRACK_ARGMAX:
                        arg = tl.where(take, (kd * K_H + kh) * K_W + kw, arg)

    in_tile = in_rows & in_cols
    tl.store(out_ptr + o_off, best.to(out_ptr.dtype.element_ty), mask=in_tile)
    if WRITE_CODE:
        code = arg
        if EMPTY_WINDOWS:
            # A window with no in-bounds tap at all (possible with large dilation) keeps no winner.
            first_ok = (d0 + jd0 * DIL_D < D) & (h0 + jh0 * DIL_H < H) & (w0 + jw0 * DIL_W < W)
            code = tl.where(first_ok | (arg != tap0), arg, -1)
        tl.store(code_ptr + o_off, code.to(code_ptr.dtype.element_ty), mask=in_tile)
    if WRITE_INDICES:
        # The window's start, once per row, plus the winning tap's offset from it: per element
        # the arithmetic stays 32-bit but for one 64-bit add (an offset inside a window is within
        # the input's span, so 32 bits hold it unless INT64). Widened first: the interpreter
        # follows the tap in the code's width, int8 for small windows, where tap times dilation
        # can wrap.
        tap = arg.to(tl.int64) if INT64 else arg.to(tl.int32)
        jd = tap // (K_H * K_W)
        jh = (tap // K_W) % K_H
        jw = tap % K_W
        start = (d0.to(tl.int64) * H + h0) * W + w0
        offset = (jd * (DIL_D * H) + jh * DIL_H) * W + jw * DIL_W
        tl.store(idx_ptr + o_off, start + offset, mask=in_tile)


def _max_pool_backward_kernel(
    grad_out_ptr,  # dL/d(out), logically (N, C, OD, OH, OW); same strides as code
    code_ptr,  # winning tap of each window, from the forward
    grad_in_ptr,  # dL/d(input), logically (N, C, D, H, W)
    C, D, H, W,  # input sizes (N is implied by ROWS)
    OD, OH, OW,  # output sizes
    son, soc, sod, soh, sow,  # strides of grad_out and code, in elements
    sin, sic, sid, sih, siw,  # strides of grad_in, in elements
    ROWS, COLS,  # extent of the tile space (over the input)
    K_D: tl.constexpr, K_H: tl.constexpr, K_W: tl.constexpr,  # kernel size
    STR_D: tl.constexpr, STR_H: tl.constexpr, STR_W: tl.constexpr,  # stride
    PAD_D: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,  # padding before
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,  # dilation
    C_INNER: tl.constexpr,  # tile columns walk C (else W)
    FLAT_HW: tl.constexpr,  # (not C_INNER) columns walk the whole (H, W) plane, contiguous in grad_in
    INT64: tl.constexpr,  # offsets may exceed int32
    ACC: tl.constexpr,  # accumulate in float32 (float64 for float64 gradients)
    VEC: tl.constexpr,  # (C_INNER) columns a thread takes: one 128-bit access of values
    NC_UNIFORM: tl.constexpr,  # (not C_INNER) n's strides are C times c's in both tensors
    CLAMP_TAIL: tl.constexpr,  # (interpreter) lanes past the last row or column repeat it, unmasked (see the forward)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  # tile shape
):
    # Along one dimension, input position i lies in the window of output o at tap j when
    # o * STR - PAD + j * DIL == i with 0 <= j < K. With q = i + PAD, the candidates are
    # o = q // STR, q // STR - 1, ... : at most (K - 1) * DIL // STR + 1 of them (1 when windows
    # do not overlap), and each pins down its tap j = (q - o * STR) / DIL. Where the dilation
    # makes that more than K (3x3 at stride 1, dilation 8: 17 candidates, 289 loads an element in
    # 2D where 9 can hold it), the loop walks the taps instead: each pins down its window
    # o = (q - j * DIL) / STR.
    NC_D: tl.constexpr = (K_D - 1) * DIL_D // STR_D + 1
    NC_H: tl.constexpr = (K_H - 1) * DIL_H // STR_H + 1
    NC_W: tl.constexpr = (K_W - 1) * DIL_W // STR_W + 1
    BY_TAP_D: tl.constexpr = K_D < NC_D
    BY_TAP_H: tl.constexpr = K_H < NC_H
    BY_TAP_W: tl.constexpr = K_W < NC_W
    pid = tl.program_id(0)
    tiles_n = (COLS + BLOCK_N - 1) // BLOCK_N
    pid_m = pid // tiles_n
    pid_n = pid - pid_m * tiles_n
    if INT64:
        rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if CLAMP_TAIL:  # past the end, repeat the last row or column (see the forward)
        rows = tl.minimum(rows, ROWS - 1)
        cols = tl.minimum(cols, COLS - 1)
    rows = rows[:, None]
    cols = cols[None, :]
    if C_INNER:
        cols = tl.max_contiguous(cols, [1, VEC])  # one layout for values and code (see above)
    in_rows = rows < ROWS
    in_cols = cols < COLS
    if C_INNER:
        iw = rows % W
        t = rows // W
        ih = t % H
        t = t // H
        id_ = t % D
        n = t // D
        o_outer = n * son
        o_inner = cols * soc
        i_off = (n * sin + id_ * sid + ih * sih + iw * siw) + cols * sic
    elif FLAT_HW:
        # A row of grad_in is a whole (H, W) plane, contiguous: full tiles, as in the forward.
        ih = cols // W
        iw = cols - ih * W
        id_ = rows % D
        t = rows // D  # n * C + c
        if NC_UNIFORM:  # no division by C (see the forward)
            o_outer = t * soc
            i_nc = t * sic
        else:
            c = t % C
            n = t // C
            o_outer = n * son + c * soc
            i_nc = n * sin + c * sic
        i_off = (i_nc + id_ * sid) + cols
    else:
        iw = cols
        ih = rows % H
        t = rows // H
        id_ = t % D
        t = t // D  # n * C + c
        if NC_UNIFORM:
            o_outer = t * soc
            i_nc = t * sic
        else:
            c = t % C
            n = t // C
            o_outer = n * son + c * soc
            i_nc = n * sin + c * sic
        i_off = (i_nc + id_ * sid + ih * sih) + iw * siw
    if not C_INNER:
        i_off = tl.max_contiguous(i_off, [1, 1])  # one column a thread (see above)
    qd = id_ + PAD_D
    qh = ih + PAD_H
    qw = iw + PAD_W

    acc = tl.full([BLOCK_M, BLOCK_N], 0, ACC)
    # Candidates in ascending output order (taps in descending order): the sum is PyTorch's, in
    # PyTorch's order.
    for td in tl.static_range(K_D if BY_TAP_D else NC_D):
        if BY_TAP_D:
            jd = K_D - 1 - td
            rd = qd - jd * DIL_D  # o * STR
            od = rd // STR_D
            ok_d = in_rows & (rd >= 0) & (od < OD)
            if STR_D > 1:
                ok_d = ok_d & (rd % STR_D == 0)
        else:
            od = qd // STR_D - (NC_D - 1 - td)
            rd = qd - od * STR_D
            jd = rd // DIL_D
            ok_d = in_rows & (od >= 0) & (od < OD) & (jd < K_D)
            if DIL_D > 1:
                ok_d = ok_d & (rd % DIL_D == 0)
        off_d = o_outer + od * sod
        for th in tl.static_range(K_H if BY_TAP_H else NC_H):
            if BY_TAP_H:
                jh = K_H - 1 - th
                rh = qh - jh * DIL_H
                oh = rh // STR_H
                ok_dh = ok_d & (rh >= 0) & (oh < OH)
                if STR_H > 1:
                    ok_dh = ok_dh & (rh % STR_H == 0)
            else:
                oh = qh // STR_H - (NC_H - 1 - th)
                rh = qh - oh * STR_H
                jh = rh // DIL_H
                ok_dh = ok_d & (oh >= 0) & (oh < OH) & (jh < K_H)
                if DIL_H > 1:
                    ok_dh = ok_dh & (rh % DIL_H == 0)
            off_dh = off_d + oh * soh
            tap_dh = jd * K_H + jh
            for tw in tl.static_range(K_W if BY_TAP_W else NC_W):
                if BY_TAP_W:
                    jw = K_W - 1 - tw
                    rw = qw - jw * DIL_W
                    ow = rw // STR_W
                    ok_w = (rw >= 0) & (ow < OW)
                    if STR_W > 1:
                        ok_w = ok_w & (rw % STR_W == 0)
                else:
                    ow = qw // STR_W - (NC_W - 1 - tw)
                    rw = qw - ow * STR_W
                    jw = rw // DIL_W
                    ok_w = (ow >= 0) & (ow < OW) & (jw < K_W)
                    if DIL_W > 1:
                        ok_w = ok_w & (rw % DIL_W == 0)
                # One full tile of offsets shared by both loads (row-major in the interpreter too).
                off = off_dh + ow * sow
                if C_INNER:
                    off = off + o_inner
                    ok = (ok_dh & ok_w) & in_cols
                else:
                    ok = ok_dh & (ok_w & in_cols)
                code = tl.load(code_ptr + off, mask=ok, other=-1)
                # Loaded under `ok`, not `hit`: a mask uniform along C lets channels_last
                # gradients load 128 bits at a time; the select drops what did not win.
                g = tl.load(grad_out_ptr + off, mask=ok, other=0.0)
                acc += tl.where(code == tap_dh * K_W + jw, g.to(ACC), 0.0)
    tl.store(grad_in_ptr + i_off, acc.to(grad_in_ptr.dtype.element_ty), mask=in_rows & in_cols)


@triton.constexpr_function
def _phase_tap(phase: int, u: int, kernel: int, stride: int, dilation: int) -> int:
    """Along one dimension, the tap j at which window o = a - u holds phase p of base a (where
    p + u * STR == j * DIL, j < K), or -1. Runs while compiling (and as Python in the interpreter)."""
    r = phase + u * stride
    return r // dilation if r % dilation == 0 and r // dilation < kernel else -1


@triton.constexpr_function
def _window_holds_a_phase(u: int, kernel: int, stride: int, dilation: int) -> bool:
    return any(_phase_tap(p, u, kernel, stride, dilation) >= 0 for p in range(stride))


@triton.constexpr_function
def _phases_tap(p, ud, uh, uw, k_d, k_h, k_w, str_d, str_h, str_w, dil_d, dil_h, dil_w) -> int:
    """The tap of window (a_d - ud, a_h - uh, a_w - uw) holding phase p = (pd * STR_H + ph) * STR_W + pw, or -1."""
    jd = _phase_tap(p // (str_h * str_w), ud, k_d, str_d, dil_d)
    jh = _phase_tap(p // str_w % str_h, uh, k_h, str_h, dil_h)
    jw = _phase_tap(p % str_w, uw, k_w, str_w, dil_w)
    return (jd * k_h + jh) * k_w + jw if min(jd, jh, jw) >= 0 else -1


def _max_pool_backward_phase_kernel(
    grad_out_ptr,  # dL/d(out), logically (N, C, OD, OH, OW); same strides as code
    code_ptr,  # winning tap of each window, from the forward
    grad_in_ptr,  # dL/d(input), logically (N, C, D, H, W)
    C, D, H, W,  # input sizes (N is implied by ROWS)
    OD, OH, OW,  # output sizes
    son, soc, sod, soh, sow,  # strides of grad_out and code, in elements
    sin, sic, sid, sih, siw,  # strides of grad_in, in elements
    A_D, A_H, A_W,  # bases per dimension, (size + PAD) / STR rounded up (see below)
    ROWS, COLS,  # extent of the tile space (over the bases)
    K_D: tl.constexpr, K_H: tl.constexpr, K_W: tl.constexpr,  # kernel size
    STR_D: tl.constexpr, STR_H: tl.constexpr, STR_W: tl.constexpr,  # stride
    PAD_D: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,  # padding before
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,  # dilation
    C_INNER: tl.constexpr,  # tile columns walk C, rows the bases (else columns walk the bases along W)
    FLAT_HW: tl.constexpr,  # (not C_INNER) columns walk the (A_H, A_W) plane, else A_W alone
    EDGE_D: tl.constexpr, EDGE_H: tl.constexpr, EDGE_W: tl.constexpr,  # some phase falls outside the input
    INT64: tl.constexpr,  # offsets may exceed int32
    ACC: tl.constexpr,  # accumulate in float32 (float64 for float64 gradients)
    VEC: tl.constexpr,  # (C_INNER) columns a thread takes: one 128-bit access of values
    NC_UNIFORM: tl.constexpr,  # (not C_INNER) n's strides are C times c's in both tensors
    PAIR_W: tl.constexpr,  # (not C_INNER, STR_W == 2) store the two phases along W as one access
    CLAMP_TAIL: tl.constexpr,  # (interpreter) lanes past the last row or column repeat it, unmasked (see the forward)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  # tile shape
):
    # The gather backward (above) regrouped by phase: what runs where windows overlap (on CPU
    # too; the plain gather only past PHASE_LIMIT phases). Along one dimension write
    # i + PAD = STR * a + p with 0 <= p < STR: a is the element's *base*, p its *phase*. The windows
    # holding it are o = a - u for u = 0, 1, ..., at tap j = (p + u * STR) / DIL, which must be a
    # whole number below K: for a given phase, which candidates exist and at which tap is known at
    # compile time, where the gather computes it per element (and loads candidates that turn out
    # not to exist). And window a - u is the same for every phase of base a: a thread here takes a
    # base and all its STR_D * STR_H * STR_W phases, loads each candidate window once and adds its
    # gradient to each phase it may have won. For 3x3 windows at stride 2: 4 windows loaded for 4
    # input elements, where the gather loads 4 for each; SASS instructions per input element
    # 88 -> 27 along W, 44 -> 16 along C (float16, benchmarks/inspect_kernels.py).
    # Sums by phase are kept in a tuple (Triton unrolls the static loops and rebuilds it).
    NC_D: tl.constexpr = (K_D - 1) * DIL_D // STR_D + 1
    NC_H: tl.constexpr = (K_H - 1) * DIL_H // STR_H + 1
    NC_W: tl.constexpr = (K_W - 1) * DIL_W // STR_W + 1
    PHASES: tl.constexpr = STR_D * STR_H * STR_W
    pid = tl.program_id(0)
    tiles_n = (COLS + BLOCK_N - 1) // BLOCK_N
    pid_m = pid // tiles_n
    pid_n = pid - pid_m * tiles_n
    if INT64:
        rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if CLAMP_TAIL:  # past the end, repeat the last row or column (see the forward)
        rows = tl.minimum(rows, ROWS - 1)
        cols = tl.minimum(cols, COLS - 1)
    rows = rows[:, None]
    cols = cols[None, :]
    if C_INNER:
        cols = tl.max_contiguous(cols, [1, VEC])  # one layout for values and code (see the forward)
    in_tile = (rows < ROWS) & (cols < COLS)
    if C_INNER:  # rows walk the bases (n, a_d, a_h, a_w)
        a_w = rows % A_W
        t = rows // A_W
        a_h = t % A_H
        t = t // A_H
        a_d = t % A_D
        n = t // A_D
        o_nc = n * son + cols * soc
        i_nc = n * sin + cols * sic
    else:
        if FLAT_HW:  # full tiles however far A_W is from a power of two, as in the gather
            a_h = cols // A_W
            a_w = cols - a_h * A_W
            a_d = rows % A_D
            t = rows // A_D  # n * C + c
        else:
            a_w = cols
            a_h = rows % A_H
            t = rows // A_H
            a_d = t % A_D
            t = t // A_D
        if NC_UNIFORM:
            o_nc = t * soc
            i_nc = t * sic
        else:
            c = t % C
            n = t // C
            o_nc = n * son + c * soc
            i_nc = n * sin + c * sic
    o_base = (o_nc + a_d * sod + a_h * soh) + a_w * sow
    if not C_INNER:
        o_base = tl.max_contiguous(o_base, [1, 1])  # one column a thread (see the forward)
    i_base = (i_nc + (a_d * STR_D - PAD_D) * sid + (a_h * STR_H - PAD_H) * sih) + (a_w * STR_W - PAD_W) * siw

    code_base = code_ptr + o_base
    grad_base = grad_out_ptr + o_base
    zero = tl.full([BLOCK_M, BLOCK_N], 0, ACC)
    acc = (zero,) * PHASES  # one sum per phase, p = (pd * STR_H + ph) * STR_W + pw
    # Candidates in ascending output order (u descending): each phase's sum is PyTorch's, in its order.
    # Which phases window o = a - u holds, and at which tap, is decided while compiling
    # (_phase_tap): with dilation, some windows hold no phase along some dimension, and then
    # nothing is loaded for them and their inner loops are not unrolled at all. The decisions are
    # calls in the conditions themselves: a value assigned to a local becomes a tensor while
    # compiling, and an `if` on it a runtime branch that the frontend unrolls in full first (a
    # 3x3x3 window at dilation 6 took 14 s to compile that way).
    for td in tl.static_range(NC_D):
        if _window_holds_a_phase(NC_D - 1 - td, K_D, STR_D, DIL_D):
            ud = NC_D - 1 - td
            ok_d = in_tile & (a_d >= ud) & (a_d - ud < OD)
            for th in tl.static_range(NC_H):
                if _window_holds_a_phase(NC_H - 1 - th, K_H, STR_H, DIL_H):
                    uh = NC_H - 1 - th
                    ok_dh = ok_d & (a_h >= uh) & (a_h - uh < OH)
                    for tw in tl.static_range(NC_W):
                        if _window_holds_a_phase(NC_W - 1 - tw, K_W, STR_W, DIL_W):
                            uw = NC_W - 1 - tw
                            ok = ok_dh & (a_w >= uw) & (a_w - uw < OW)
                            # Pointers step from one base pointer: ptxas folds the constant steps
                            # (sow is a compile-time 1 for contiguous tensors) into the addresses.
                            step = -(ud * sod + uh * soh)
                            code = tl.load((code_base + step) - uw * sow, mask=ok, other=-1)
                            g = tl.load((grad_base + step) - uw * sow, mask=ok, other=0.0).to(ACC)
                            for p in tl.static_range(PHASES):
                                if _phases_tap(p, NC_D - 1 - td, NC_H - 1 - th, NC_W - 1 - tw,
                                               K_D, K_H, K_W, STR_D, STR_H, STR_W, DIL_D, DIL_H, DIL_W) >= 0:
                                    tap = _phases_tap(p, NC_D - 1 - td, NC_H - 1 - th, NC_W - 1 - tw,
                                                      K_D, K_H, K_W, STR_D, STR_H, STR_W, DIL_D, DIL_H, DIL_W)
                                    acc = acc[:p] + (acc[p] + tl.where(code == tap, g, 0.0),) + acc[p + 1 :]
    in_base = grad_in_ptr + i_base
    for q in tl.static_range(STR_D * STR_H):  # q = pd * STR_H + ph: phases q * STR_W + pw
        pd = q // STR_H
        ph = q % STR_H
        ok_dh = in_tile
        if EDGE_D:
            id_ = a_d * STR_D + (pd - PAD_D)
            ok_dh = ok_dh & (id_ >= 0) & (id_ < D)
        if EDGE_H:
            ih = a_h * STR_H + (ph - PAD_H)
            ok_dh = ok_dh & (ih >= 0) & (ih < H)
        if PAIR_W:
            # The two phases along W are neighbours, 2*a_w - PAD_W and the next: one 32-bit store
            # for 16-bit types where two stores would each fill half of their sectors. PAD_W, W and
            # every stride but W's are even (_phase_plan): the pair starts at an even offset, and
            # lies inside the input whole or not at all.
            iw = a_w * STR_W - PAD_W
            ok = ok_dh
            if EDGE_W:
                ok = ok & (iw >= 0) & (iw < W)
            row = tl.multiple_of(i_nc + (a_d * STR_D + (pd - PAD_D)) * sid + (a_h * STR_H + (ph - PAD_H)) * sih, [2, 2])
            pair = (grad_in_ptr + row)[:, :, None] + (iw[:, :, None] + tl.arange(0, 2)[None, None, :]) * siw
            both = tl.join(acc[2 * q], acc[2 * q + 1]).to(grad_in_ptr.dtype.element_ty)
            tl.store(pair, both, mask=ok[:, :, None])
        else:
            for pw in tl.static_range(STR_W):
                ok = ok_dh
                if EDGE_W:
                    iw = a_w * STR_W + (pw - PAD_W)
                    ok = ok & (iw >= 0) & (iw < W)
                ptrs = (in_base + (pd * sid + ph * sih)) + pw * siw
                tl.store(ptrs, acc[q * STR_W + pw].to(grad_in_ptr.dtype.element_ty), mask=ok)


def _max_pool_backward_scatter_kernel(
    grad_out_ptr,  # dL/d(out), logically (N, C, OD, OH, OW); same strides as code
    code_ptr,  # winning tap of each window, from the forward
    grad_in_ptr,  # dL/d(input), logically (N, C, D, H, W); zero-filled by the launcher
    C, D, H, W,  # input sizes (N is implied by ROWS)
    OD, OH, OW,  # output sizes
    son, soc, sod, soh, sow,  # strides of grad_out and code, in elements
    sin, sic, sid, sih, siw,  # strides of grad_in, in elements
    ROWS, COLS,  # extent of the tile space (over the output, as in the forward)
    K_D: tl.constexpr, K_H: tl.constexpr, K_W: tl.constexpr,  # kernel size
    STR_D: tl.constexpr, STR_H: tl.constexpr, STR_W: tl.constexpr,  # stride
    PAD_D: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,  # padding before
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,  # dilation
    C_INNER: tl.constexpr,  # tile columns walk C (else OW)
    C_FASTEST: tl.constexpr,  # (not C_INNER) rows walk (n, d, h, c), channels fastest, else (n, c, d, h)
    CLAMP_TAIL: tl.constexpr,  # lanes past the last row or column repeat it, unmasked (see the forward)
    INT64: tl.constexpr,  # offsets may exceed int32
    ACC: tl.constexpr,  # add in float32 (float64 for float64 gradients)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  # tile shape
):
    # The backward for windows that do not overlap, used by the interpreter: each input element
    # lies in at most one window, so every output writes its gradient straight to its winner with
    # a plain store (no two programs write the same element: deterministic without atomics).
    # It touches only the outputs, where the gather visits every input element: about 4x fewer
    # element accesses for 2x2 windows, which is what the interpreter pays for. On a GPU the
    # gather's single coalesced pass wins, so the launch heuristic keeps it there.
    pid = tl.program_id(0)
    tiles_n = (COLS + BLOCK_N - 1) // BLOCK_N
    pid_m = pid // tiles_n
    pid_n = pid - pid_m * tiles_n
    if INT64:
        rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if CLAMP_TAIL:  # past the end, repeat the last row or column (see the forward)
        rows = tl.minimum(rows, ROWS - 1)
        cols = tl.minimum(cols, COLS - 1)
    rows = rows[:, None]
    cols = cols[None, :]
    if C_INNER:
        ow = rows % OW
        t = rows // OW
        oh = t % OH
        t = t // OH
        od = t % OD
        n = t // OD
        i_rows = n * sin + (ow * STR_W - PAD_W) * siw
        i_cols = cols * sic
        o_off = (n * son + od * sod + oh * soh + ow * sow) + cols * soc
    else:
        ow = cols
        if C_FASTEST:
            c = rows % C
            t = rows // C
            oh = t % OH
            t = t // OH
            od = t % OD
            n = t // OD
        else:
            oh = rows % OH
            t = rows // OH
            od = t % OD
            t = t // OD
            c = t % C
            n = t // C
        i_rows = n * sin + c * sic
        i_cols = (ow * STR_W - PAD_W) * siw
        o_off = (n * son + c * soc + od * sod + oh * soh) + ow * sow
    # Where each window starts in grad_in, split as in the forward into what varies along the rows
    # and along the columns.
    i_rows += (od * STR_D - PAD_D) * sid + (oh * STR_H - PAD_H) * sih
    in_tile = (rows < ROWS) & (cols < COLS)
    code = tl.load(code_ptr + o_off, mask=in_tile, other=-1)
    won = in_tile & (code >= 0)  # -1: the window held no input element
    tap = code.to(tl.int64) if INT64 else code.to(tl.int32)
    # The winner's offset inside its window: its tap, unravelled into (jd, jh, jw). Small windows
    # count with compares: the interpreter runs an integer division at several times their cost.
    jw = tap
    i_tap = 0
    if K_D > 1:
        if K_D <= 8:
            jd = (tap >= K_H * K_W).to(tap.dtype)
            for m in tl.static_range(2, K_D):
                jd += (tap >= m * K_H * K_W).to(tap.dtype)
        else:
            jd = tap // (K_H * K_W)
        jw = jw - jd * (K_H * K_W)
        i_tap = jd * (DIL_D * sid)
    if K_H > 1:
        if K_H <= 8:
            jh = (jw >= K_W).to(tap.dtype)
            for m in tl.static_range(2, K_H):
                jh += (jw >= m * K_W).to(tap.dtype)
        else:
            jh = jw // K_W
        jw = jw - jh * K_W
        i_tap = i_tap + jh * (DIL_H * sih)
    i_tap = i_tap + jw * (DIL_W * siw)
    g = tl.load(grad_out_ptr + o_off, mask=won, other=0.0)
    # + 0.0 turns -0.0 into 0.0, as PyTorch's "zeros, then add" does; in ACC, exactly, because
    # the interpreter's numpy adds float16 in a software loop.
    g = g.to(ACC) + 0.0
    tl.store((grad_in_ptr + i_cols) + (i_rows + i_tap), g.to(grad_in_ptr.dtype.element_ty), mask=won)


_KERNELS = {
    name: (triton.jit(fn), InterpretedFunction(fn))
    for name, fn in [
        ("forward", _max_pool_forward_kernel),
        ("backward", _max_pool_backward_kernel),
        ("backward_phase", _max_pool_backward_phase_kernel),
        ("backward_scatter", _max_pool_backward_scatter_kernel),
    ]
}


# --------------------------------------------------------------------------------------------
# Launch heuristic
# --------------------------------------------------------------------------------------------

# CUDA: 2048 elements a program over 4 warps is 16 elements a thread: for 16-bit types along a
# contiguous channel axis that is two 128-bit loads per tap and thread, enough bytes in flight to
# keep a memory-bound kernel near bandwidth in 62-125 registers (benchmarks/inspect_kernels.py).
# Each of these halves the tile, since each adds per-element registers: tiles along W (every tap
# a separate scalar gather: at 2048 the forward that tracks its winner reached the 255-register
# cap), 64-bit offsets, float64 values (which spilled at 2048), a forward that writes both the
# code and the indices (three results live per element: at 2048 along C, 96-177 registers and
# spills on sm_80 or sm_90 by how the indices were computed; halved, 40-104 and none). Never
# below 16 bytes a thread, though: smaller, a 16-bit tile along a contiguous axis loses its
# 128-bit accesses.
CUDA_TILE_ELEMENTS = 2048
CUDA_MIN_TILE_ELEMENTS = 256
CUDA_MAX_BLOCK_N = 128
CUDA_NUM_WARPS = 4
# CPU (interpreter): every program costs a fixed Python overhead on top of its per-element cost
# (~3 ms forward, ~2 ms backward replayed; 7.5 and 4.7 through Triton's frontend), while every
# whole-tile pass moves its megabytes beyond the 512 KiB L2: 2**19 measured best on the seed's
# layer (2**18 as fast, 2**17 ~20% slower, 2**20 ~25% slower: its last row of tiles wastes most;
# Triton caps a tile at 2**20).
CPU_TILE_ELEMENTS = 2**19
CPU_MAX_BLOCK_N = 2**12
# Offsets in int32 unless a tensor spans this many elements (margin below 2**31 for windows that
# reach past the edge and for padding).
INT32_SPAN_LIMIT = 2**30


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)  # not triton.cdiv: a jit function, ~10 us a call from host code


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def launch_config(rows: int, cols: int, device_type: str, heavy: int = 0, itemsize: int = 4) -> tuple[int, int, int]:
    """Tile (BLOCK_M, BLOCK_N) and num_warps for a ROWS x COLS launch on ``device_type``.

    ``heavy`` counts what makes each element cost registers on a GPU (see above); the
    interpreter has no registers and ignores it. ``itemsize``: bytes per value; a CUDA tile keeps
    at least 16 bytes a thread, what one 128-bit access needs.
    """
    if device_type == "cuda":
        floor = max(CUDA_MIN_TILE_ELEMENTS, CUDA_NUM_WARPS * 32 * 16 // itemsize)
        elements = max(CUDA_TILE_ELEMENTS >> heavy, floor)
        max_n, warps = CUDA_MAX_BLOCK_N, CUDA_NUM_WARPS
    else:
        elements, max_n, warps = CPU_TILE_ELEMENTS, CPU_MAX_BLOCK_N, 1
    block_n = min(_next_pow2(cols), max_n)
    block_m = min(max(1, elements // block_n), _next_pow2(rows))
    return block_m, block_n, warps


def _tile_on_channels(channels: int, width: int, stride_c: int, stride_w: int, device_type: str) -> bool:
    """Whether tile columns should walk the channels (C_INNER) rather than the innermost spatial axis."""
    if device_type == "cuda":
        # Coalescing: walk the axis that is contiguous in memory.
        return stride_c < stride_w
    # The interpreter pays for masked-off lanes as for live ones, and memory order does not matter
    # to it: walk the axis that fills power-of-two tiles best.
    def waste(extent: int) -> float:
        block = min(_next_pow2(extent), CPU_MAX_BLOCK_N)
        return _cdiv(extent, block) * block / extent

    return waste(channels) < waste(width) or (waste(channels) == waste(width) and stride_c < stride_w)


def _rows_channels_fastest(c_inner: bool, strides5: Sequence[int], device_type: str) -> bool:
    """Whether rows along W should walk (n, d, h, c) rather than (n, c, d, h): in the interpreter,
    where channels lie closer in memory than image rows (channels_last), so that the gathers of
    neighbouring rows read neighbouring addresses (the seed's channels_last forward ~5-10% faster).
    CUDA keeps one order: its channels_last tiles walk C along the columns anyway."""
    return device_type != "cuda" and not c_inner and strides5[1] < strides5[3]


def _nc_uniform(shape5: Sequence[int], *strides5: Sequence[int]) -> bool:
    """Whether, in every tensor, n's stride is C times c's (or N is 1), so that the offset of the
    (n, c) plane is (n * C + c) times c's stride: the kernels then skip a division by C."""
    n, c = shape5[:2]
    return n == 1 or all(s[0] == c * s[1] for s in strides5)


def _pairs_aligned(shape5: Sequence[int], strides5: Sequence[int]) -> bool:
    """Whether the CUDA kernels along W at stride 2 may access input elements 2k and 2k + 1 as one
    access (the forward's taps at 2*ow and 2*ow + 1; the phase backward's two phases, where the
    padding is even too): W must be contiguous and every other stride even, so that the pair
    starts at an even offset (the kernels tell Triton so), and W even, so that a pair is inside
    the input whole or not at all (one mask for both). Otherwise Triton could not prove the access
    aligned and uniformly masked, and would access two elements, or even move them between
    threads to split them (2 layout conversions): slower than an access each
    (benchmarks/inspect_kernels.py)."""
    return shape5[4] % 2 == 0 and strides5[4] == 1 and all(s % 2 == 0 for s in strides5[:4])


def _span_of(shape: Sequence[int], strides: Sequence[int]) -> int:
    """Elements from a tensor's first to its last, plus one: what its offsets must reach."""
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(shape, strides) if size > 0)


def _sizes_5d(t: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sizes and strides of an (N, C, *spatial) tensor with 1-3 spatial dimensions as (N, C, D, H,
    W): what unsqueezing dimension 2 gives, without making the views (~1.5 us each, and a small
    layer's whole call is tens of microseconds of host time)."""
    shape, strides = tuple(t.shape), t.stride()
    while len(shape) < 5:
        shape, strides = shape[:2] + (1,) + shape[2:], strides[:2] + (shape[2] * strides[2],) + strides[2:]
    return shape, strides


def _pad3(values: Sequence[int], fill: int) -> tuple[int, int, int]:
    return (fill,) * (3 - len(values)) + tuple(values)


_TL_INTEGERS = {torch.int8: tl.int8, torch.int16: tl.int16, torch.int32: tl.int32}


def _code_dtype(kernel_size: Sequence[int]) -> torch.dtype:
    taps = math.prod(kernel_size)
    if taps <= 127:
        return torch.int8
    return torch.int16 if taps <= 32767 else torch.int32


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


class LaunchSpec(NamedTuple):
    """One kernel launch: which kernel, its grid, arguments and warps (also used to AOT-compile)."""

    kernel: str
    grid: tuple[int]
    args: tuple
    constexprs: Mapping[str, object]  # read-only: memoized plans share it
    num_warps: int


def _grid(rows: int, cols: int, block_m: int, block_n: int) -> tuple[int]:
    """One program per tile on a single grid axis (each kernel splits its id into a row and a
    column tile, columns fastest): CUDA caps grid axes 1 and 2 at 65,535 programs, which the
    tiles of one large (H, W) plane or of many short rows exceed; axis 0 takes 2**31 - 1."""
    return (_cdiv(rows, block_m) * _cdiv(cols, block_n),)


def _empty_windows(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int) -> bool:
    """Whether some window of one spatial dimension holds no input element: its taps all fall in
    the padding or step over the input (only possible with a dilation larger than the input).
    Only windows that reach past an edge can be empty, so only those are checked."""
    reach = (kernel - 1) * dilation
    at_start = range(0, min(out, _cdiv(pad, stride)))  # windows that begin in the padding
    at_end = range(max(0, (size - reach + pad) // stride), out)  # windows that end past the input
    for o in (*at_start, *at_end):
        start = o * stride - pad
        first = _cdiv(-start, dilation) if start < 0 else 0  # first tap at or after position 0
        if first >= kernel or start + first * dilation >= size:
            return True
    return False


def _reaches_edge(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int) -> bool:
    """Whether some tap of some window of one spatial dimension falls outside the input: the
    first window's, in the padding, or the last window's, past the end."""
    return pad > 0 or (out - 1) * stride - pad + (kernel - 1) * dilation >= size


def _geometry_constexprs(kernel_size, stride, padding, dilation) -> dict:
    k, s, p, d = (_pad3(kernel_size, 1), _pad3(stride, 1), _pad3(padding, 0), _pad3(dilation, 1))
    return dict(
        K_D=k[0], K_H=k[1], K_W=k[2],
        STR_D=s[0], STR_H=s[1], STR_W=s[2],
        PAD_D=p[0], PAD_H=p[1], PAD_W=p[2],
        DIL_D=d[0], DIL_H=d[1], DIL_W=d[2],
    )  # fmt: skip


def forward_launch_spec(
    x: Tensor, out: Tensor, code: Tensor | None, idx: Tensor | None, kernel_size, stride, padding, dilation,
    device_type: str,
) -> LaunchSpec:
    """The forward launch for (N, C, *spatial) tensors; ``code``/``idx`` None or empty when not written."""
    (x_shape, x_strides), (o_shape, o_strides) = _sizes_5d(x), _sizes_5d(out)
    write_code, write_idx = code is not None and code.numel() > 0, idx is not None and idx.numel() > 0
    rows, cols, grid, constexprs, warps = _forward_plan(
        x_shape, x_strides, o_shape, o_strides, x.dtype, write_code, write_idx,
        tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), device_type, INT32_SPAN_LIMIT,
    )  # fmt: skip
    args = (
        x, out, code if write_code else out, idx if write_idx else out,
        *x_shape[1:], *o_shape[2:], *x_strides, *o_strides, rows, cols,
    )  # fmt: skip
    return LaunchSpec("forward", grid, args, constexprs, warps)


# Launch plans depend only on sizes, strides, dtype and pooling arguments, so they are memoized.
@_memo
def _forward_plan(
    shape5, strides5, out_shape5, out_strides5, dtype, write_code, write_idx,
    kernel_size, stride, padding, dilation, device_type, int32_span_limit,
):  # fmt: skip
    n, c, d, h, w = shape5
    od, oh, ow = out_shape5[2:]
    x_span, o_span = _span_of(shape5, strides5), _span_of(out_shape5, out_strides5)
    c_inner = _tile_on_channels(c, ow, strides5[1], strides5[4], device_type)
    # On CUDA, along W: a column per output of the (OH, OW) plane, if out lays it out contiguously.
    flat_hw = device_type == "cuda" and not c_inner and oh > 1 and out_strides5[4] == 1 and out_strides5[3] == ow
    c_fastest = _rows_channels_fastest(c_inner, strides5, device_type)
    if c_inner:
        rows, cols = n * od * oh * ow, c
    elif flat_hw:
        rows, cols = n * c * od, oh * ow
    else:
        rows, cols = n * c * od * oh, ow
    int64 = max(x_span, o_span, rows * cols) >= int32_span_limit
    heavy = (not c_inner) + int64 + (dtype == torch.float64) + (write_code and write_idx)
    block_m, block_n, warps = launch_config(rows, cols, device_type, heavy, dtype.itemsize)
    if device_type == "cuda" and c_inner and out_strides5[1] != 1 and out_strides5[4] == 1:
        # Read along C, written along W (a 1D channels_last input: its output is contiguous): each
        # tile column's run of outputs should fill a 32-byte sector.
        while block_m * dtype.itemsize < 32 and block_n > 16 and block_m < rows:
            block_m, block_n = block_m * 2, block_n // 2
    dims = (shape5[2:], out_shape5[2:], _pad3(kernel_size, 1), _pad3(stride, 1), _pad3(padding, 0), _pad3(dilation, 1))
    edges = tuple(map(_reaches_edge, *dims))
    # The winning tap is followed in 32 bits on CUDA (registers are 32-bit anyway), and in the
    # code's own width in the interpreter, where every tap's select on it moves its bytes.
    # The -1 fix-up for windows that hold no input element is skipped where none can (the
    # interpreter saves a few whole-tile operations), except on CUDA: without it ptxas schedules
    # the taps' loads differently and takes up to 2x the registers (benchmarks/inspect_kernels.py),
    # while the fix-up itself costs a GPU next to nothing.
    constexprs = dict(
        _geometry_constexprs(kernel_size, stride, padding, dilation),
        C_INNER=c_inner, FLAT_HW=flat_hw, C_FASTEST=c_fastest, TRACK_ARGMAX=write_code or write_idx, WRITE_CODE=write_code,
        ARG=tl.int32 if device_type == "cuda" else _TL_INTEGERS[_code_dtype(kernel_size)],
        EMPTY_WINDOWS=write_code and (device_type == "cuda" or any(map(_empty_windows, *dims))),
        EDGE_D=edges[0], EDGE_H=edges[1], EDGE_W=edges[2],
        WRITE_INDICES=write_idx, INT64=int64, ACC=_acc_dtype(dtype), VEC=min(16 // dtype.itemsize, block_n),
        NC_UNIFORM=_nc_uniform(shape5, strides5, out_strides5),
        PAIR_W=device_type == "cuda" and not c_inner and _pad3(stride, 1)[2] == 2 and _pairs_aligned(shape5, strides5),
        CLAMP_TAIL=device_type != "cuda",
        BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    return rows, cols, _grid(rows, cols, block_m, block_n), MappingProxyType(constexprs), warps


def backward_launch_spec(
    grad_out: Tensor, code: Tensor, grad_in: Tensor, kernel_size, stride, padding, dilation,
    device_type: str,
) -> LaunchSpec:
    """The backward launch; ``grad_out`` must have the strides of ``code``.

    The gather kernel, regrouped by phase unless strides make more than PHASE_LIMIT phases (then
    plain). On CPU, windows that do not overlap take the scatter kernel instead (which needs
    ``grad_in`` zero-filled first): a quarter of the work.
    """
    (g_shape, g_strides), (i_shape, i_strides) = _sizes_5d(grad_out), _sizes_5d(grad_in)
    kernel, bases, rows, cols, grid, constexprs, warps = _backward_plan(
        g_shape, g_strides, i_shape, i_strides, grad_in.dtype, code.dtype,
        tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), device_type, INT32_SPAN_LIMIT,
    )  # fmt: skip
    args = (grad_out, code, grad_in, *i_shape[1:], *g_shape[2:], *g_strides, *i_strides, *bases, rows, cols)
    return LaunchSpec(kernel, grid, args, constexprs, warps)


@_memo
def _backward_plan(
    grad_shape5, grad_strides5, shape5, strides5, dtype, code_dtype,
    kernel_size, stride, padding, dilation, device_type, int32_span_limit,
):  # fmt: skip
    # code_dtype is only part of the key: a plan fixes the dtype of every tensor it launches on
    # (_launch_compiled relies on it), and the custom op takes the code from its caller.
    overlapping = any((k - 1) * dl >= s for k, s, dl in zip(kernel_size, stride, dilation))
    scatter = device_type != "cuda" and not overlapping
    if not scatter and math.prod(stride) <= PHASE_LIMIT:
        return _phase_plan(
            grad_shape5, grad_strides5, shape5, strides5, dtype, kernel_size, stride, padding, dilation,
            device_type, int32_span_limit,
        )  # fmt: skip
    n, c, d, h, w = shape5
    od, oh, ow = grad_shape5[2:]
    if scatter:  # tiles over the output, like the forward
        c_inner = _tile_on_channels(c, ow, strides5[1], strides5[4], device_type)
        rows, cols = (n * od * oh * ow, c) if c_inner else (n * c * od * oh, ow)
    else:
        c_inner = _tile_on_channels(c, w, strides5[1], strides5[4], device_type)
        rows, cols = (n * d * h * w, c) if c_inner else (n * c * d * h, w)
    # On CUDA, along W: a column per element of the (H, W) plane, as in the forward.
    flat_hw = device_type == "cuda" and not c_inner and h > 1 and strides5[4] == 1 and strides5[3] == w
    if flat_hw:
        rows, cols = n * c * d, h * w
    int64 = max(_span_of(grad_shape5, grad_strides5), _span_of(shape5, strides5), rows * cols) >= int32_span_limit
    heavy = (not c_inner) + int64 + (dtype == torch.float64)
    block_m, block_n, warps = launch_config(rows, cols, device_type, heavy, dtype.itemsize)
    constexprs = dict(
        _geometry_constexprs(kernel_size, stride, padding, dilation),
        C_INNER=c_inner, INT64=int64, CLAMP_TAIL=device_type != "cuda", BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    constexprs["ACC"] = _acc_dtype(dtype)
    if scatter:
        constexprs["C_FASTEST"] = _rows_channels_fastest(c_inner, strides5, device_type)
    else:
        constexprs["FLAT_HW"] = flat_hw
        constexprs["VEC"] = min(16 // dtype.itemsize, block_n)
        constexprs["NC_UNIFORM"] = _nc_uniform(shape5, strides5, grad_strides5)
    kernel = "backward_scatter" if scatter else "backward"
    return kernel, (), rows, cols, _grid(rows, cols, block_m, block_n), MappingProxyType(constexprs), warps


# The phase backward: a thread takes the STR_D * STR_H * STR_W phases of its bases, a sum each;
# past 8 phases (strides of 3 in 2D) the plain gather takes over. On CUDA a thread holds at most 32
# sums (4 bases of 4 phases along W, 1 base of 4 phases x 8 float16 channels along C) and loads at
# most 18 candidate windows: ptxas issues all the loads first, and 3x3 windows at stride 1 (9
# windows a base) spilled at 4 bases a thread (benchmarks/inspect_kernels.py). On CPU a tile takes
# CPU_TILE_ELEMENTS bases, as the other kernels take elements: on the ResNet stem's backward
# (8x64x112x112, in-process medians) 105 ms contiguous and 104 channels_last, against 116 / 115
# at half as many and 169 / 150 at a quarter; the plain gather took 193 / 208.
PHASE_LIMIT = 8
PHASE_BASES_PER_THREAD = 4
PHASE_SUMS_PER_THREAD = 32
PHASE_LOADS_PER_THREAD = 18


def _phase_plan(
    grad_shape5, grad_strides5, shape5, strides5, dtype,
    kernel_size, stride, padding, dilation, device_type, int32_span_limit,
):  # fmt: skip
    """The launch of the phase backward (see the kernel): tiles over the bases."""
    n, c, w = shape5[0], shape5[1], shape5[4]
    strides3, pads3, dilations3 = _pad3(stride, 1), _pad3(padding, 0), _pad3(dilation, 1)
    phases = math.prod(strides3)
    # Bases cover every input element: i + PAD = STR * a + p for 0 <= a < cdiv(size + PAD, STR).
    bases = tuple(_cdiv(s + p, st) for s, p, st in zip(shape5[2:], pads3, strides3))
    # Some phase of some base falls outside the input: padding, or bases past the end.
    edges = tuple(p > 0 or st * b - p > s for s, p, st, b in zip(shape5[2:], pads3, strides3, bases))
    c_inner = _tile_on_channels(c, bases[2], strides5[1], strides5[4], device_type)
    flat_hw = not c_inner and bases[1] > 1  # columns walk the (A_H, A_W) plane: full tiles, as in the gather
    if c_inner:
        rows, cols = n * math.prod(bases), c
    elif flat_hw:
        rows, cols = n * c * bases[0], bases[1] * bases[2]
    else:
        rows, cols = n * c * bases[0] * bases[1], bases[2]
    span = max(_span_of(grad_shape5, grad_strides5), _span_of(shape5, strides5), rows * cols * phases)
    int64 = span >= int32_span_limit
    if device_type == "cuda":
        block_n = min(_next_pow2(cols), CUDA_MAX_BLOCK_N)
        vec = min(16 // dtype.itemsize, block_n) if c_inner else 1  # columns a thread
        windows = math.prod((k - 1) * dl // st + 1 for k, st, dl in zip(_pad3(kernel_size, 1), strides3, dilations3))
        per_thread = min(PHASE_BASES_PER_THREAD, PHASE_SUMS_PER_THREAD // (vec * phases), PHASE_LOADS_PER_THREAD // windows)
        per_thread = max(1, (1 << (max(1, per_thread).bit_length() - 1)) >> (int64 + (dtype == torch.float64)))
        block_m = min(max(1, per_thread * vec * CUDA_NUM_WARPS * 32 // block_n), _next_pow2(rows))
        warps = CUDA_NUM_WARPS
    else:
        block_m, block_n, warps = launch_config(rows, cols, device_type)
        vec = 1  # a layout hint for GPUs only
    pair_w = not c_inner and strides3[2] == 2 and pads3[2] % 2 == 0 and _pairs_aligned(shape5, strides5)
    constexprs = dict(
        _geometry_constexprs(kernel_size, stride, padding, dilation),
        C_INNER=c_inner, FLAT_HW=flat_hw, EDGE_D=edges[0], EDGE_H=edges[1], EDGE_W=edges[2], INT64=int64,
        ACC=_acc_dtype(dtype), VEC=vec, NC_UNIFORM=_nc_uniform(shape5, strides5, grad_strides5),
        PAIR_W=pair_w, CLAMP_TAIL=device_type != "cuda", BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    grid = _grid(rows, cols, block_m, block_n)
    return "backward_phase", bases, rows, cols, grid, MappingProxyType(constexprs), warps


def _launch(spec: LaunchSpec, device: torch.device) -> None:
    if device.type == "cuda":
        with torch.cuda.device(device):
            _launch_compiled(spec, device.index)
    elif device.type == "cpu":
        # Triton's interpreter, with vectorized loads, stores, pointer additions and selects,
        # programs replayed from a recorded tape (on PyTorch's number of threads), and without
        # its int32 overflow re-check: our offsets are kept in range by INT64 (tested at 2**31).
        interpreter.launch(_KERNELS[spec.kernel][1], spec.grid, spec.args, spec.constexprs)
    else:
        raise RuntimeError(f"tritonpool max pooling runs on CUDA and CPU tensors, got a {device.type} tensor")


# Calling a jit function costs 30-50 us of host time per launch (Triton binds our ~50 arguments,
# specializes each and hashes the lot into its cache key; benchmarks/bench_host.py), more than a
# small layer's whole kernel takes on a GPU. Everything in that key is fixed by the launch plan
# (sizes, strides, dtypes, pooling arguments) but the pointers' 16-byte alignment, so a plan's
# first launch on a device goes through Triton, and later ones with the same alignment call the
# kernel it returned, the way JITFunction.run ends: CompiledKernel[grid](*every argument), the
# same in Triton 3.3 to 3.8.
_PARAMETERS = {name: tuple(inspect.signature(fn.fn).parameters) for name, (fn, _) in _KERNELS.items()}
_POINTERS = {name: sum(p.endswith("_ptr") for p in params) for name, params in _PARAMETERS.items()}
_COMPILED: dict[tuple, tuple] = {}  # (kernel, plan, warps, device, alignment) -> (plan's constexprs, kernel, their values)
_COMPILED_LIMIT = 4096  # as many as the plans' memo keeps


def _launch_compiled(spec: LaunchSpec, device_index: int) -> None:
    """Launch ``spec`` on the current CUDA device (``device_index``) through Triton's JIT once,
    then through the compiled kernel it returned."""
    aligned = tuple([t.data_ptr() & 15 == 0 for t in spec.args[: _POINTERS[spec.kernel]]])
    # A plan is its constexprs mapping (memoized plans return the same object): keyed by
    # identity, and the entry holds the mapping, so the id cannot be reused while cached.
    key = (spec.kernel, id(spec.constexprs), spec.num_warps, device_index, aligned)
    cached = _COMPILED.get(key)
    if cached is not None and cached[0] is spec.constexprs:
        cached[1][(*spec.grid, 1, 1)[:3]](*spec.args, *cached[2])
        return
    jit_fn = _KERNELS[spec.kernel][0]
    kernel = jit_fn[spec.grid](*spec.args, **spec.constexprs, num_warps=spec.num_warps)
    if kernel is None:  # not a compiled kernel (a Triton that returns nothing): no shortcut
        return
    if len(_COMPILED) >= _COMPILED_LIMIT:
        _COMPILED.clear()
    constants = tuple(spec.constexprs[name] for name in _PARAMETERS[spec.kernel][len(spec.args) :])
    _COMPILED[key] = (spec.constexprs, kernel, constants)


# --------------------------------------------------------------------------------------------
# Launchers: check, allocate, launch
# --------------------------------------------------------------------------------------------


def _empty_pooled(like: Tensor, shape: Sequence[int], channels_last: bool, dtype=None) -> Tensor:
    """An (N, C, *spatial) tensor, laid out channels-last (C innermost) or contiguous."""
    dtype = like.dtype if dtype is None else dtype
    if not channels_last:
        return like.new_empty(shape, dtype=dtype)
    shape = list(shape)
    nhwc = like.new_empty([shape[0], *shape[2:], shape[1]], dtype=dtype)
    return nhwc.movedim(-1, 1)


def _forward_outputs(x: Tensor, output_size, kernel_size, channels_last, save_code, return_indices):
    """Pooled values, and the saved taps and indices where asked for (else None)."""
    out = _empty_pooled(x, [x.shape[0], x.shape[1], *output_size], channels_last)
    code = torch.empty_like(out, dtype=_code_dtype(kernel_size)) if save_code else None
    idx = torch.empty_like(out, dtype=torch.int64) if return_indices else None
    return out, code, idx


def _op_outputs(x: Tensor, out: Tensor, code: Tensor | None, idx: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The custom op's three tensors: empty ones for the taps and indices not asked for (the eager
    path passes None instead and saves allocating them)."""
    code = x.new_empty(0, dtype=torch.int8) if code is None else code
    idx = x.new_empty(0, dtype=torch.int64) if idx is None else idx
    return out, code, idx


def _pool_forward(
    input: Tensor, kernel_size, stride, padding, dilation, output_size, channels_last: bool,
    save_code: bool, return_indices: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:  # fmt: skip
    out, code, idx = _forward_outputs(input, output_size, kernel_size, channels_last, save_code, return_indices)
    if out.numel() > 0:
        spec = forward_launch_spec(input, out, code, idx, kernel_size, stride, padding, dilation, input.device.type)
        _launch(spec, input.device)
    return out, code, idx


def _pool_backward(
    grad_output: Tensor, code: Tensor, input_size, channels_last: bool, kernel_size, stride, padding, dilation,
) -> Tensor:  # fmt: skip
    if grad_output.stride() != code.stride():
        # One set of strides for both keeps the kernel lean; autograd usually hands us exactly
        # this layout, and otherwise (e.g. an expanded gradient of a sum) this is one small copy.
        grad_output = torch.empty_like(code, dtype=grad_output.dtype).copy_(grad_output)
    shape, strides, zero, launch = _backward_call(
        grad_output, code, input_size, channels_last, kernel_size, stride, padding, dilation
    )
    return _run_backward(grad_output, code, shape, strides, zero, launch)


def _backward_call(
    grad_output: Tensor, code: Tensor, input_size, channels_last: bool, kernel_size, stride, padding, dilation,
) -> tuple[tuple, tuple, bool, tuple | None]:  # fmt: skip
    """The backward of a ``grad_output`` with ``code``'s strides, as the input gradient's sizes and
    strides, whether it is zero-filled first, and the launch's (kernel, grid, constexprs, warps,
    scalar arguments), or None when nothing is launched. Holds no tensor: call plans keep it."""
    grad_in = _empty_pooled(grad_output, input_size, channels_last)
    shape, strides = tuple(grad_in.shape), grad_in.stride()
    if grad_in.numel() == 0:
        return shape, strides, False, None
    if grad_output.numel() == 0:
        return shape, strides, True, None
    spec = backward_launch_spec(grad_output, code, grad_in, kernel_size, stride, padding, dilation, grad_in.device.type)
    # The scatter writes only the winners (outside the interpreter the fill is a memset).
    zero = spec.kernel == "backward_scatter"
    return shape, strides, zero, (spec.kernel, spec.grid, spec.constexprs, spec.num_warps, spec.args[3:])


def _run_backward(grad_output: Tensor, code: Tensor, shape, strides, zero: bool, launch) -> Tensor:
    """Allocate the input gradient and launch what _backward_call planned."""
    grad_in = torch.empty_strided(shape, strides, dtype=grad_output.dtype, device=grad_output.device)
    if zero:
        grad_in.zero_()
    if launch is not None:
        kernel, grid, constexprs, warps, scalars = launch
        _launch(LaunchSpec(kernel, grid, (grad_output, code, grad_in, *scalars), constexprs, warps), grad_in.device)
    return grad_in


def _winners_gradient(grad_grad_in: Tensor, code: Tensor, input_size, kernel_size, stride, padding, dilation) -> Tensor:
    """The backward's own gradient with respect to ``grad_output`` (double backward: gradient
    penalties, second-order methods). The backward adds each output's gradient into its window's
    winner, so it is linear in ``grad_output``, and its gradient gives each output its winner's
    entry of ``grad_grad_in``, none to a window without a winner (code -1): PyTorch's
    max_pool_double_backward, from the taps instead of int64 indices. Torch ops, so this is
    differentiable in turn and traceable by torch.compile."""
    n, c = code.shape[:2]
    taps = code.long()
    per_dim, rest = [], taps.clamp(min=0)
    for k in reversed(kernel_size):  # window order: the last dimension fastest
        per_dim.insert(0, rest % k)
        rest = rest // k
    flat = taps.new_zeros(())
    for i, (size, st, p, dl) in enumerate(zip(input_size[2:], stride, padding, dilation)):
        view = [1] * len(kernel_size)
        view[i] = code.shape[2 + i]
        start = torch.arange(code.shape[2 + i], device=code.device).view(view) * st - p
        flat = flat * size + (start + per_dim[i] * dl)
    won = taps >= 0
    flat = torch.where(won, flat, 0)  # a window without a winner may point anywhere
    values = grad_grad_in.reshape(n, c, -1).gather(2, flat.reshape(n, c, -1)).view(code.shape)
    return torch.where(won, values, 0)


# The two custom ops are what torch.compile, torch.export and opcheck see: schemas, fake
# (meta) implementations and autograd, so that graphs hold our kernels without breaks.
@torch.library.custom_op("tritonpool::max_pool_forward", mutates_args=())
def max_pool_forward(
    input: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    output_size: list[int],
    channels_last: bool,
    save_code: bool,
    return_indices: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pool an (N, C, *spatial) tensor; returns (values, saved taps or empty, indices or empty).

    ``padding`` is the padding before each spatial dimension and ``output_size`` the resolved
    output size (see ``pool_output_size``); ``channels_last`` lays the outputs out C-innermost.
    """
    outputs = _pool_forward(
        input, kernel_size, stride, padding, dilation, output_size, channels_last, save_code, return_indices
    )
    return _op_outputs(input, *outputs)


@max_pool_forward.register_fake
def _(input, kernel_size, stride, padding, dilation, output_size, channels_last, save_code, return_indices):
    return _op_outputs(input, *_forward_outputs(input, output_size, kernel_size, channels_last, save_code, return_indices))


@torch.library.custom_op("tritonpool::max_pool_backward", mutates_args=())
def max_pool_backward(
    grad_output: Tensor,
    code: Tensor,
    input_size: list[int],
    channels_last: bool,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> Tensor:
    """Gradient of the input from the gradient of the output and the saved winning taps."""
    return _pool_backward(grad_output, code, input_size, channels_last, kernel_size, stride, padding, dilation)


@max_pool_backward.register_fake
def _(grad_output, code, input_size, channels_last, kernel_size, stride, padding, dilation):
    return _empty_pooled(grad_output, input_size, channels_last)


def _setup_context(ctx, inputs, output):  # the custom op's; the eager path keeps its call plan instead
    x, kernel_size, stride, padding, dilation, _, _, save_code, _ = inputs
    if save_code:
        ctx.save_for_backward(output[1])
    ctx.pool_args = (list(kernel_size), list(stride), list(padding), list(dilation))
    ctx.input_size = list(x.shape)
    # The input gradient takes the input's memory format, as PyTorch's does.
    ctx.grad_channels_last = _strides_like_channels_last(x.shape, x.stride())
    ctx.saved_code = save_code


def _backward(ctx, grad_out, _grad_code, _grad_idx):
    if not ctx.saved_code:
        raise RuntimeError(
            "tritonpool max_pool_forward was called with save_code=False, so it kept nothing for a "
            "backward pass; call it through kernels.max_pool*d, which saves what the backward needs"
        )
    (code,) = ctx.saved_tensors
    grad_in = max_pool_backward(grad_out, code, ctx.input_size, ctx.grad_channels_last, *ctx.pool_args)
    return grad_in, None, None, None, None, None, None, None, None


max_pool_forward.register_autograd(_backward, setup_context=_setup_context)


def _setup_backward_context(ctx, inputs, output):
    _, code, input_size, _, kernel_size, stride, padding, dilation = inputs
    ctx.save_for_backward(code)
    ctx.pool_args = (list(input_size), list(kernel_size), list(stride), list(padding), list(dilation))


def _double_backward(ctx, grad_grad_in):
    (code,) = ctx.saved_tensors
    return _winners_gradient(grad_grad_in, code, *ctx.pool_args), None, None, None, None, None, None, None


max_pool_backward.register_autograd(_double_backward, setup_context=_setup_backward_context)


class _CheckedCall(NamedTuple):
    """A call's arguments, checked and resolved against its input."""

    x: Tensor  # the input as (N, C, *spatial)
    batched: bool  # whether the caller's input has N
    keras_channels_last: bool  # whether it is laid out (N, *spatial, C) (data_format="channels_last")
    geometry: PoolGeometry
    channels_last: bool  # whether the outputs are laid out C-innermost
    save_code: bool  # whether a backward follows
    return_indices: bool


class _CallPlan:
    """An eager call of one layer, planned once: what its arguments and its input's sizes, strides,
    dtype and device make of it, checked and resolved, so that a later call with the same ones
    costs a dictionary lookup, the allocations and the launch.

    On a GPU a small layer's call is made of host time. Checking the arguments, resolving the
    geometry, allocating through ``new_empty`` and ``movedim`` and building the launch took ~20 us
    of a ~30 us forward (benchmarks/bench_host.py); a plan allocates with ``empty_strided`` and
    launches the memoized spec with the new tensors. Plans hold no tensor.
    """

    __slots__ = (
        "batched", "keras_channels_last", "save_code", "return_indices", "dtype", "out_shape", "out_strides",
        "code_dtype", "code_strides", "idx_strides", "forward_launch", "backward_args", "backward_launch",
    )  # fmt: skip

    def __init__(self, call: _CheckedCall) -> None:
        x, geometry = call.x, call.geometry
        self.batched, self.keras_channels_last = call.batched, call.keras_channels_last
        self.save_code, self.return_indices, self.dtype = call.save_code, call.return_indices, x.dtype
        pool_args = (list(geometry.kernel_size), list(geometry.stride), list(geometry.padding), list(geometry.dilation))
        out, code, idx = _forward_outputs(
            x, geometry.output_size, pool_args[0], call.channels_last, call.save_code, call.return_indices
        )
        self.out_shape, self.out_strides = tuple(out.shape), out.stride()
        self.code_dtype, self.code_strides = (code.dtype, code.stride()) if call.save_code else (None, None)
        self.idx_strides = idx.stride() if call.return_indices else None
        self.forward_launch = None  # an empty batch launches nothing
        if out.numel() > 0:
            spec = forward_launch_spec(x, out, code, idx, *pool_args, x.device.type)
            self.forward_launch = (spec.kernel, spec.grid, spec.constexprs, spec.num_warps, spec.args[4:])
        # The input gradient takes the input's memory format, as PyTorch's does.
        grad_channels_last = _strides_like_channels_last(tuple(x.shape), x.stride())
        self.backward_args = (list(x.shape), grad_channels_last, *pool_args)
        self.backward_launch = None  # planned by the first backward whose gradient has the code's strides

    def __call__(self, input: Tensor):
        x = _as_pooled(input, self.batched, self.keras_channels_last)
        if self.save_code:
            out, idx = _EagerMaxPool.apply(x, self)
        else:  # nothing to differentiate: no autograd node either
            out, _, idx = self.forward(x)
        return _as_callers(out, idx, self.batched, self.keras_channels_last, self.return_indices)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        shape, device = self.out_shape, x.device
        out = torch.empty_strided(shape, self.out_strides, dtype=x.dtype, device=device)
        code = torch.empty_strided(shape, self.code_strides, dtype=self.code_dtype, device=device) if self.save_code else None
        idx = torch.empty_strided(shape, self.idx_strides, dtype=torch.int64, device=device) if self.return_indices else None
        if self.forward_launch is not None:
            kernel, grid, constexprs, warps, scalars = self.forward_launch
            args = (x, out, out if code is None else code, out if idx is None else idx, *scalars)
            _launch(LaunchSpec(kernel, grid, args, constexprs, warps), device)
        return out, code, idx

    def backward(self, grad_out: Tensor, code: Tensor) -> Tensor:
        if grad_out.stride() != self.code_strides or grad_out.dtype != self.dtype:
            return _pool_backward(grad_out, code, *self.backward_args)  # e.g. an expanded gradient
        if self.backward_launch is None:
            self.backward_launch = _backward_call(grad_out, code, *self.backward_args)
        return _run_backward(grad_out, code, *self.backward_launch)


class _EagerMaxPool(torch.autograd.Function):
    """The eager path's autograd: a call plan's forward and backward, without the custom ops'
    Python dispatch.

    A custom op call costs ~40 us of Python on top of the kernel (its backward ~80 us, for
    argument binding and the autograd wrapper), about as much as a whole small pooling layer
    takes on a GPU; plain tensors outside torch.compile come here instead. Same kernels, the same
    saved tensor (the code), same results.
    """

    @staticmethod
    def forward(ctx, x: Tensor, plan: _CallPlan):
        out, code, idx = plan.forward(x)
        ctx.save_for_backward(code)
        ctx.plan = plan
        if idx is not None:
            ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the indices
        return out, idx

    @staticmethod
    def backward(ctx, grad_out, _grad_idx):
        if grad_out is None:  # the output was not used
            return None, None
        (code,) = ctx.saved_tensors
        if torch.is_grad_enabled() and grad_out.requires_grad:  # create_graph: the backward's gradient may follow
            return _EagerMaxPoolBackward.apply(grad_out, code, ctx.plan), None
        return ctx.plan.backward(grad_out, code), None


class _EagerMaxPoolBackward(torch.autograd.Function):
    """The eager backward as a node of its own, where a graph of the backward is being built."""

    @staticmethod
    def forward(ctx, grad_out: Tensor, code: Tensor, plan: _CallPlan):
        ctx.save_for_backward(code)
        ctx.plan = plan
        return plan.backward(grad_out, code)

    @staticmethod
    def backward(ctx, grad_grad_in):
        (code,) = ctx.saved_tensors
        input_size, _, *pool_args = ctx.plan.backward_args
        return _winners_gradient(grad_grad_in, code, input_size, *pool_args), None, None


def _through_ops(x: Tensor) -> bool:
    """Whether a call must go through the custom ops: while torch.compile/export traces, and for
    anything but a plain tensor outside any dispatch mode (fake, meta, functional, subclasses)."""
    return (
        torch.compiler.is_compiling()
        or type(x) is not torch.Tensor
        or x.device.type not in ("cpu", "cuda")
        or _current_dispatch_mode() is not None
    )


# --------------------------------------------------------------------------------------------
# Functional API: torch.nn.functional's signatures, plus Keras's padding strings and data_format
# --------------------------------------------------------------------------------------------

_CALLS: dict[tuple, _CallPlan] = {}
_CALLS_LIMIT = 4096


def _call_key(dims: int, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, data_format):
    """The key of an eager call's plan, or None for a call that is not planned: one through the
    custom ops, or with arguments a key cannot stand for exactly (see _frozen; as keys, 1 == True,
    so the flags must be bools)."""
    if (
        type(input) is not Tensor
        or type(ceil_mode) is not bool
        or type(return_indices) is not bool
        or type(data_format) is not str
        or torch.compiler.is_compiling()
        or _current_dispatch_mode() is not None
    ):
        return None
    device = input.device
    if device.type not in ("cpu", "cuda"):
        return None
    pool_args = (_frozen(kernel_size), _frozen(stride), _frozen(padding), _frozen(dilation))
    if _UNCACHEABLE in pool_args:
        return None
    save_code = input.requires_grad and torch.is_grad_enabled()
    # INT32_SPAN_LIMIT is read when a launch is planned (tests lower it).
    return (dims, *pool_args, ceil_mode, return_indices, data_format,
            input.shape, input.stride(), input.dtype, device, save_code, INT32_SPAN_LIMIT)  # fmt: skip


def _max_pool(
    dims: int, input: Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool,
    return_indices: bool, data_format: str,
):  # fmt: skip
    key = _call_key(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, data_format)
    plan = None if key is None else _CALLS.get(key)
    if plan is None:
        call = _check_call(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, data_format)
        if _through_ops(call.x):
            return _through_custom_op(call)
        plan = _CallPlan(call)
        if key is not None:
            if len(_CALLS) >= _CALLS_LIMIT:
                _CALLS.clear()
            _CALLS[key] = plan
    return plan(input)


def _check_call(
    dims: int, input: Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool,
    return_indices: bool, data_format: str,
) -> _CheckedCall:  # fmt: skip
    fn = f"max_pool{dims}d"
    if not isinstance(input, Tensor):
        raise TypeError(f"{fn}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{fn}: input must be float16, bfloat16, float32 or float64, got {input.dtype}"
        )
    kernel, strides, pads, dilations = _checked_pool_args(
        fn, dims, kernel_size, stride, padding, dilation, ceil_mode, data_format
    )
    if input.dim() not in (dims + 1, dims + 2):
        spatial = ("D", "H", "W")[3 - dims :]
        order = ("C", *spatial) if data_format == "channels_first" else (*spatial, "C")
        raise PoolArgumentError(
            f"{fn}: expected a {dims + 1}D ({', '.join(order)}) or {dims + 2}D "
            f"(N, {', '.join(order)}) input for data_format={data_format!r}, "
            f"got a {input.dim()}D tensor of shape {tuple(input.shape)}"
        )
    batched = input.dim() == dims + 2
    keras_channels_last = data_format == "channels_last"
    x = _as_pooled(input, batched, keras_channels_last)
    if any(s == 0 for s in x.shape[1:]):
        raise PoolArgumentError(
            f"{fn}: only the batch dimension may be empty, got an input of shape {tuple(input.shape)}"
        )
    geometry = _resolve_geometry(fn, tuple(x.shape[2:]), kernel, strides, pads, dilations, bool(ceil_mode))
    if keras_channels_last:
        channels_last = True  # so that the result is contiguous in (N, *spatial, C) order
    else:
        channels_last = batched and _strides_like_channels_last(tuple(x.shape), x.stride())
    save_code = torch.is_grad_enabled() and x.requires_grad
    return _CheckedCall(x, batched, keras_channels_last, geometry, channels_last, save_code, bool(return_indices))


def _as_pooled(input: Tensor, batched: bool, keras_channels_last: bool) -> Tensor:
    """The caller's input as the (N, C, *spatial) view the kernels pool (no copy)."""
    x = input if batched else input.unsqueeze(0)
    if keras_channels_last:
        x = x.movedim(-1, 1)  # a view: (N, *spatial, C) memory read as (N, C, *spatial)
    return x


def _as_callers(out: Tensor, idx: Tensor | None, batched: bool, keras_channels_last: bool, return_indices: bool):
    """The (N, C, *spatial) results in the layout of the caller's input."""
    if keras_channels_last:
        out, idx = out.movedim(1, -1), idx.movedim(1, -1) if return_indices else idx
    if not batched:
        out, idx = out.squeeze(0), idx.squeeze(0) if return_indices else idx
    return (out, idx) if return_indices else out


def _through_custom_op(call: _CheckedCall):
    """A call while torch.compile/export traces, or on tensors the eager path does not take."""
    out, _, idx = torch.ops.tritonpool.max_pool_forward(
        call.x,
        list(call.geometry.kernel_size),
        list(call.geometry.stride),
        list(call.geometry.padding),
        list(call.geometry.dilation),
        list(call.geometry.output_size),
        call.channels_last,
        call.save_code,
        call.return_indices,
    )
    return _as_callers(out, idx, call.batched, call.keras_channels_last, call.return_indices)


def max_pool1d(
    input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
    return_indices: bool = False, *, data_format: str = "channels_first",
):  # fmt: skip
    """``torch.nn.functional.max_pool1d`` on the Triton kernel; padding may also be 'valid'/'same'."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, data_format)


def max_pool2d(
    input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
    return_indices: bool = False, *, data_format: str = "channels_first",
):  # fmt: skip
    """``torch.nn.functional.max_pool2d`` on the Triton kernel; padding may also be 'valid'/'same'."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, data_format)


def max_pool3d(
    input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
    return_indices: bool = False, *, data_format: str = "channels_first",
):  # fmt: skip
    """``torch.nn.functional.max_pool3d`` on the Triton kernel; padding may also be 'valid'/'same'."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, data_format)


# --------------------------------------------------------------------------------------------
# Modules: drop-ins for torch.nn.MaxPool1d/2d/3d
# --------------------------------------------------------------------------------------------


class _TritonMaxPool:
    """Shared body of the MaxPool*d drop-ins; arguments are checked at construction."""

    dims: int

    def __init__(
        self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
        ceil_mode: bool = False, *, data_format: str = "channels_first",
    ) -> None:  # fmt: skip
        _check_pool_args(
            f"MaxPool{self.dims}d", self.dims, kernel_size, stride, padding, dilation, ceil_mode, data_format
        )
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.data_format = data_format

    def forward(self, input: Tensor):
        return _max_pool(
            self.dims, input, self.kernel_size, self.stride, self.padding, self.dilation,
            self.ceil_mode, self.return_indices, self.data_format,
        )  # fmt: skip

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.data_format != "channels_first":
            text += f", data_format={self.data_format}"
        return text


class MaxPool1d(_TritonMaxPool, nn.MaxPool1d):
    """``torch.nn.MaxPool1d`` on the Triton kernel, plus padding='valid'/'same' and data_format."""

    dims = 1


class MaxPool2d(_TritonMaxPool, nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on the Triton kernel, plus padding='valid'/'same' and data_format."""

    dims = 2


class MaxPool3d(_TritonMaxPool, nn.MaxPool3d):
    """``torch.nn.MaxPool3d`` on the Triton kernel, plus padding='valid'/'same' and data_format."""

    dims = 3
