"""Run a Triton kernel on CPU tensors through Triton's interpreter, made practical: vectorized
memory access, cheaper whole-tile operations, and programs replayed without the frontend.

Triton's interpreter executes a kernel body with numpy, one operation over a whole tile at a time,
which costs about a nanosecond an element. Its loads and stores do not: they walk the tile one
element at a time in C++ through checked accessors (~30 ns an element measured here). In a
memory-bound kernel such as pooling they dominate.

``launch`` runs one launch with, for that launch only:

* loads and stores as numpy gathers and scatters into the launch's own tensors: the pointers a
  kernel computes are byte addresses inside those tensors' storages, so each becomes an index into
  a numpy view of its storage. Indices are bounds-checked (an IndexError, not a stray read), masked
  lanes are never touched (a store's dead lanes write its first live lane's value there),
  and a live pointer that falls in none of the tensors is an IndexError too (Triton's own
  interpreter would read or write whatever memory lies there; its pointer arguments are always
  tensors, so no other memory is ours to touch);
* pointer additions without their full-tile passes: a row of pointers plus a column of offsets
  (or a scalar pointer plus a tile of offsets) is kept as those two parts, which a load or a
  store turns into element indices with one broadcast addition: no full tile of addresses (the
  interpreter converts, scales and adds three), no passes to turn them back into indices and to
  bounds-check those (a subtraction, a shift, a minimum). A further step (a scalar, or what
  broadcasts into the offsets) joins the parts. Addresses are computed only if another
  operation reads them;
* arithmetic, comparisons and bitwise operations of two blocks broadcast along the same axes
  (two splatted scalars, as ``ptr - n`` makes) computed once per distinct element, broadcast;
* scalars spread over a block (``splat``: a scalar operand of a block operation, a load's
  ``other``) as read-only broadcast views instead of freshly filled blocks, and the zeros of
  ``get_null_value``, without the interpreter's dtype table (rebuilt on every call);
* selects (``tl.where``) without branches: numpy's ``where`` branches on every element, and on a
  data-dependent mask such as "this tap beats the best so far" mispredicts half the time
  (~4 ns an element here, against ~0.5 for a bitwise blend);
* bfloat16 <-> float32 conversions (``.to()``), which numpy lacks, as 16-bit shifts (one or two
  passes, not the interpreter's generic float decoder of a dozen), exact when widening (the
  interpreter's own decoder gets bfloat16's subnormals wrong) and rounding to nearest even when
  narrowing, as a GPU does (the interpreter's own truncates);
* float16 <-> float32 conversions by PyTorch's vectorized kernels, not numpy's (a software loop,
  ~2-3 ns an element against ~0.15): the same rounding (to nearest even) and values, except that
  a signalling NaN comes out quiet, as on a GPU;
* no int32 overflow re-check (the interpreter redoes every int32 add/sub/mul in int64): callers
  keep offsets in range themselves (kernels/max_pool.py switches to int64 offsets, tested at 2**31);
* programs after the second replayed: Triton's frontend (type checks, broadcasting: ~50 us of
  Python per ``tl`` operation, the same for every program) runs the first two programs while the
  builder operations it emits are recorded; if both records agree, every further program replays
  the first's operations, on its own program id, without the frontend. A launch is not replayed
  (every program runs the frontend) where a recorded value steered Python control flow (an ``if``
  or a ``range`` on tensor data or on the program id), or where an operation took a block made
  outside the builder (the interpreter's own reductions and ``.T``): a program could then differ
  from the first two in ways their records cannot show. The record is kept for later launches of
  the same kernel with the same constexprs and argument types, which replay all their programs
  on their own arguments, unless a launch's scalar argument steered Python control flow. A
  launch of one program (a small layer's) has no second to check its record against: the record
  waits for the next one-program launch of that signature, and once the two agree, one-program
  launches replay it (only they: it is program 0's alone). A launch with a kept tape skips
  Triton's GridExecutor too (it binds arguments with ``inspect`` and patches triton.language for
  the frontend: ~3 ms a launch), and each replayed step gathers its arguments from slots of one
  list. Replayed programs run on as many threads as PyTorch's intra-op ones: numpy releases the
  GIL for its whole-tile operations.

The kernel source and its semantics (as a GPU runs it) are untouched, and so is the interpreter's
execution of every other operation.
The interpreter's builder is one per process and holds the current program id, so launches from
several threads take turns (a lock), which also keeps one launch's memory views from another's
(a launch's replayed programs take their program id from the replay, not from the builder).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import inspect
import itertools
import math
import os
import threading
from typing import NamedTuple

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime.errors import InterpreterError
from triton.runtime.interpreter import (
    GridExecutor, InterpretedFunction, TensorHandle, _get_np_dtype, _implicit_cvt, interpreter_builder,
)

__all__ = ["launch"]


_NOTHING_LIVE = "nothing live"
_LAUNCH_LOCK = threading.Lock()


class _Storages:
    """The storages of a launch's tensors, as numpy arrays viewed in whatever dtype a load asks."""

    def __init__(self, tensors):
        self._bytes = {}  # storage address -> uint8 numpy view of the whole storage
        for t in tensors:
            storage = t.untyped_storage()
            base = storage.data_ptr()
            if base not in self._bytes and storage.nbytes() > 0:
                whole = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,))
                self._bytes[base] = whole.numpy()
        self._bounds = sorted((base, base + view.size) for base, view in self._bytes.items())
        self._views = {}

    def find(self, address: int, dtype: np.dtype):
        """(base address, numpy view in ``dtype``) of the storage holding ``address``, or None."""
        for base, end in self._bounds:
            if base <= address < end:
                key = (base, dtype)
                view = self._views.get(key)
                if view is None:
                    raw = self._bytes[base]
                    view = raw[: raw.size - raw.size % dtype.itemsize].view(dtype)
                    self._views[key] = view
                return base, view
        return None

    def indices(self, ptrs, mask: np.ndarray, dtype: np.dtype):
        """(view, element indices, mask of the dead lanes or None when all live) for the pointers of
        one access (an array of addresses, or _Addresses of the mask's shape); _NOTHING_LIVE; or
        None when they point at no whole element of ``dtype`` (as a misaligned dtype view's
        would). An IndexError when the first live lane lies in none of the launch's tensors.
        Masked lanes get the index of the first live lane: their pointers may lie anywhere (a window
        in the padding)."""
        live = mask.all()
        first = 0 if live else int(mask.argmax())
        if not live and not mask.flat[first]:
            return _NOTHING_LIVE
        address = ptrs.address_at(first) if isinstance(ptrs, _Addresses) else int(ptrs.flat[first])
        found = self.find(address, dtype)
        if found is None:
            raise IndexError(f"a pointer ({address:#x}) lies in none of the launch's tensors")
        if (address - found[0]) % dtype.itemsize:
            return None
        base, view = found
        shift = dtype.itemsize.bit_length() - 1  # itemsizes are powers of two
        if isinstance(ptrs, _Addresses):
            index, lowest = ptrs.element_indices(base, shift)
        else:
            index = ptrs.view(np.int64) - base  # addresses fit in int64; a fresh array
            index >>= shift
            lowest = None
        if not live:
            dead = ~mask
            np.copyto(index, index.flat[first], where=dead)
        # numpy would take a negative index from the end of the storage: refuse it, as numpy
        # refuses one past the end.
        if index.size and (lowest is None or lowest < 0) and index.min() < 0:
            raise IndexError(f"a pointer lies {-int(index.min())} elements before the start of its tensor's storage")
        return view, index, None if live else dead


_LAZY_ADDRESSES = 4096  # elements: below, a tile's passes cost less than the Python to skip them


class _Addresses(TensorHandle):
    """A tile of pointers ``ptr + offset`` kept as its two compact operands (``bases``: byte
    addresses; ``offsets``: in elements of ``width`` bytes), which broadcast to the tile.

    A tap's pointers are typically a row of pointers plus a column of offsets. Loads and stores
    need them as element indices into a storage, which the parts give in one pass over the tile
    (each part converted first, at the cost of a row or a column); the addresses themselves
    (``data``: a full pass, and three more to turn them back into checked indices) are computed
    only if some other operation reads them."""

    def __init__(self, bases: np.ndarray, offsets: np.ndarray, width: int, shape: tuple, dtype):
        # Not TensorHandle's __init__: its size check reads ``data``.
        self.__dict__.update(bases=bases, offsets=offsets, width=width, shape=shape, dtype=dtype, attr={})

    @property
    def data(self) -> np.ndarray:
        data = self.__dict__.get("_data")
        if data is None:
            # Negative offsets wrap, as the interpreter's own astype does.
            step = np.multiply(self.offsets, np.uint64(self.width), dtype=np.uint64, casting="unsafe")
            data = np.add(self.bases, step, out=step if step.shape == self.shape else None)
            if data.shape != self.shape:
                data = np.broadcast_to(data, self.shape)
            self.__dict__["_data"] = data
        return data

    def address_at(self, flat: int) -> int:
        """The address of the tile's element ``flat`` (in C order)."""
        at = np.unravel_index(flat, self.shape)
        base = int(np.broadcast_to(self.bases, self.shape)[at])
        return (base + int(np.broadcast_to(self.offsets, self.shape)[at]) * self.width) % 2**64

    def element_indices(self, storage: int, shift: int) -> tuple[np.ndarray, int | None]:
        """(indices, in elements of ``1 << shift`` bytes, of the pointers into the storage at
        address ``storage``, as a fresh int64 array of the tile's shape; their minimum, or None
        if not known without a pass). Needs ``width == 1 << shift``."""
        bases = self.bases.view(np.int64) - storage  # a row or a column: addresses fit in int64
        bases >>= shift
        index = np.add(bases, self.offsets, dtype=np.int64)
        if index.shape != self.shape:  # (both parts repeat along an axis: rare)
            index = np.broadcast_to(index, self.shape).copy()
        lowest = None
        if all(a == 1 or b == 1 for a, b in zip(bases.shape, self.offsets.shape)) and bases.size and self.offsets.size:
            lowest = int(bases.min()) + int(self.offsets.min())  # every pair of parts occurs
        return index, lowest


def _compact(a: np.ndarray) -> np.ndarray:
    """The smallest array that broadcasts back to ``a``: a broadcast view's repeated axes as 1."""
    if 0 not in a.strides:
        return a
    return a[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in a.strides)]


def _convert_compact(data: np.ndarray, convert) -> np.ndarray:
    """``convert`` applied once per distinct element of a broadcast view (a splatted ``other``
    is one scalar, not a tile), broadcast back."""
    compact = _compact(data)
    if not compact.flags.writeable or min(compact.strides, default=0) < 0:  # what PyTorch wraps
        compact = compact.copy()
    out = convert(compact)
    return out if out.shape == data.shape else np.broadcast_to(out, data.shape)


def _widen(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint16:  # bfloat16's bits: the high half of a float32's
        bits = data.astype(np.uint32)
        bits <<= np.uint32(16)
        return bits.view(np.float32)
    return torch.from_numpy(data).float().numpy()


def _to_bfloat16_bits(data: np.ndarray) -> np.ndarray:
    bits = data.view(np.uint32)
    rounded = bits + ((bits >> np.uint32(16)) & np.uint32(1))  # ties go to the even neighbour
    rounded += np.uint32(0x7FFF)  # past the halfway point carries into the kept bits
    rounded >>= np.uint32(16)
    nan = np.isnan(data)
    if nan.any():  # rounding could carry a NaN's payload into the sign bit
        np.copyto(rounded, (bits >> np.uint32(16)) | np.uint32(0x40), where=nan)
    return rounded.astype(np.uint16)


def _to_float16(data: np.ndarray) -> np.ndarray:
    return torch.from_numpy(data).half().numpy()


def _np_dtype(tt_dtype) -> np.dtype:
    """The interpreter's ``_get_np_dtype``, memoized: it rebuilds its table of a dozen Triton types
    on every call (~14 us), and a program's splats and loads ask hundreds of times."""
    try:
        return _scalar_np_dtype(tt_dtype)
    except TypeError:  # unhashable: pointer types
        return _get_np_dtype(tt_dtype)


_scalar_np_dtype = functools.lru_cache(maxsize=64)(_get_np_dtype)


_BINARY_OP = type(interpreter_builder).binary_op


def _dense(handle: TensorHandle) -> TensorHandle:
    data = handle.data
    return handle if data.flags.c_contiguous else TensorHandle(np.ascontiguousarray(data), handle.dtype)


class _FastMemory:
    """Vectorized replacements for the interpreter builder's masked load and store, and a leaner
    pointer addition."""

    def __init__(self, storages: _Storages, builder):
        self.storages = storages
        self.original_load = builder.create_masked_load
        self.original_store = builder.create_masked_store

    @staticmethod
    def addptr(ptr, offset):
        """``ptr + offset`` (in elements), in the interpreter's uint64 arithmetic. Where the sum
        is a full tile, as _Addresses: the sum a load or a store needs is done there, once, as
        element indices. Otherwise in one pass: the interpreter converts, scales and adds the
        full broadcast tiles (three passes, three fresh arrays)."""
        width = max(1, ptr.get_element_ty().primitive_bitwidth // 8)  # int1 pointers step by bytes
        if isinstance(ptr, _Addresses) and offset.data.dtype.kind == "i":
            # A step from pointers kept in parts (``base + offs`` then ``+ step``): the step joins
            # the part it fits, a scalar the bases (one element each), without the addresses.
            step = _compact(offset.data)
            shape = np.broadcast_shapes(ptr.shape, step.shape)
            if shape == ptr.shape and step.ndim == len(shape):
                if step.size == 1:
                    moved = np.add(ptr.bases, np.multiply(step, np.uint64(width), dtype=np.uint64, casting="unsafe"))
                    return _Addresses(moved, ptr.offsets, width, shape, ptr.dtype)
                if np.broadcast_shapes(ptr.offsets.shape, step.shape) == ptr.offsets.shape:
                    return _Addresses(ptr.bases, np.add(ptr.offsets, step, dtype=np.int64), width, shape, ptr.dtype)
        bases, offsets = _compact(ptr.data), _compact(offset.data)
        shape = np.broadcast_shapes(ptr.data.shape, offset.data.shape)
        size = math.prod(shape)
        if size >= _LAZY_ADDRESSES and offsets.dtype.kind == "i" and offsets.ndim == len(shape):
            # (a scalar pointer plus a tile of offsets; or pointers along one axis and offsets
            # along another)
            if bases.size == 1:
                bases = bases.reshape((1,) * len(shape))
            if bases.ndim == len(shape) and (bases.size == 1 or max(bases.size, offsets.size) < size):
                return _Addresses(bases, offsets, width, shape, ptr.dtype)
        # Converted and scaled in one pass; negative offsets wrap, as the interpreter's astype does.
        step = np.multiply(offsets, np.uint64(width), dtype=np.uint64, casting="unsafe")
        if step.shape == shape:  # a full tile of offsets (fresh): add the pointers into it
            address = np.add(bases, step, out=step)
        else:
            address = np.add(bases, step)
            if address.shape != shape:  # both operands repeat along the same axis: stays a view
                address = np.broadcast_to(address, shape)
        return TensorHandle(address, ptr.dtype)

    @staticmethod
    def splat(ret_ty, arg):
        """``arg`` repeated over the block ``ret_ty`` as a read-only broadcast view: what
        numpy's operations do with a scalar anyway, without filling a block first. (Nothing in the
        interpreter writes into an operand; a write would raise, not corrupt.)"""
        value = np.asarray(arg.data).astype(_np_dtype(arg.dtype))  # as np.full converts it
        # What np.broadcast_to makes, built directly (a third of its ~6 us of Python).
        block = np.ndarray(ret_ty.shape, value.dtype, buffer=value, strides=(0,) * len(ret_ty.shape))
        block.flags.writeable = False
        return TensorHandle(block, arg.dtype.scalar)

    @staticmethod
    def null_value(type):
        """The interpreter's ``get_null_value`` (a zero of ``type``) without its dtype table."""
        return TensorHandle(np.zeros(1, _np_dtype(type)), type)

    @staticmethod
    def binary_op(lhs, rhs, op):
        """The interpreter's ``binary_op`` (every arithmetic, comparison and bitwise operation of
        two blocks) on what the operands repeat once: where both are broadcast views along the
        same axes (a splatted scalar, minus another: what ``ptr - n`` becomes), the result is the
        same broadcast view of their compact result, not a fresh tile."""
        a, b = lhs.data, rhs.data
        if a.ndim and b.ndim and 0 in a.strides and 0 in b.strides:
            compact_a, compact_b = _compact(a), _compact(b)
            shape = np.broadcast_shapes(a.shape, b.shape)
            if math.prod(np.broadcast_shapes(compact_a.shape, compact_b.shape)) < math.prod(shape):
                out = _BINARY_OP(interpreter_builder, TensorHandle(compact_a, lhs.dtype), TensorHandle(compact_b, rhs.dtype), op)
                return TensorHandle(np.broadcast_to(out.data, shape), out.dtype)
        return _BINARY_OP(interpreter_builder, lhs, rhs, op)

    @staticmethod
    def select(cond, lhs, rhs):
        """``where(cond, lhs, rhs)`` as a bitwise blend, ``rhs ^ ((lhs ^ rhs) * cond)`` on the
        values' bits: the same bits as ``np.where`` (NaNs and signed zeros included)."""
        c, x, y = cond.data, lhs.data, rhs.data
        if c.dtype != np.bool_ or x.dtype != y.dtype or x.dtype.itemsize not in (1, 2, 4, 8):
            return type(interpreter_builder).create_select(interpreter_builder, cond, lhs, rhs)
        bits = np.dtype(f"u{x.dtype.itemsize}")
        c, x, y = np.broadcast_arrays(c, x.view(bits), y.view(bits))
        blend = np.bitwise_xor(x, y)  # a fresh array of the full shape
        np.multiply(blend, c.view(np.uint8), out=blend, casting="unsafe")  # 0 or 1: no overflow
        blend ^= y
        return TensorHandle(blend.view(lhs.data.dtype), rhs.dtype.scalar)

    @staticmethod
    def fp_ext(src, dst_type):
        """Widening float conversion: bfloat16 (held as uint16) -> float32 by a shift, exact;
        float16 -> float32 by PyTorch."""
        if dst_type.scalar == tl.float32 and src.dtype.scalar in (tl.bfloat16, tl.float16):
            return TensorHandle(_convert_compact(src.data, _widen), tl.float32)
        return type(interpreter_builder).create_fp_ext(interpreter_builder, src, dst_type)

    @staticmethod
    def fp_trunc(src, dst_type):
        """Narrowing float conversion: float32 -> bfloat16 rounded to nearest, ties to even, as
        ``cvt.rn.bf16.f32`` on a GPU (a NaN stays a quiet NaN with its sign and top payload);
        float32 -> float16 by PyTorch."""
        if src.dtype.scalar == tl.float32 and dst_type.scalar in (tl.bfloat16, tl.float16):
            narrow = _to_bfloat16_bits if dst_type.scalar == tl.bfloat16 else _to_float16
            return TensorHandle(_convert_compact(src.data, narrow), dst_type.scalar)
        return type(interpreter_builder).create_fp_trunc(interpreter_builder, src, dst_type)

    @staticmethod
    def atomic_rmw(rmw_op, ptr, val, mask, sem, scope):
        """The interpreter's atomic read-modify-write on dense operands: its C++ side reads their
        buffers as contiguous, so a broadcast view (a splatted mask) would give it one lane's
        value and then whatever memory follows."""
        dense = _dense(ptr), _dense(val), _dense(mask)
        return type(interpreter_builder).create_atomic_rmw(interpreter_builder, rmw_op, *dense, sem, scope)

    @staticmethod
    def atomic_cas(ptr, cmp, val, sem, scope):
        """The interpreter's atomic compare-and-swap on dense operands (see atomic_rmw)."""
        dense = _dense(ptr), _dense(cmp), _dense(val)
        return type(interpreter_builder).create_atomic_cas(interpreter_builder, *dense, sem, scope)

    @staticmethod
    def _lanes(ptrs, mask: np.ndarray, dtype: np.dtype):
        """(pointers: the addresses, or _Addresses where they fit the access; mask), broadcast to
        one shape."""
        if isinstance(ptrs, _Addresses) and ptrs.width == dtype.itemsize:
            if np.broadcast_shapes(ptrs.shape, mask.shape) == ptrs.shape:
                return ptrs, np.broadcast_to(mask, ptrs.shape)
        return np.broadcast_arrays(ptrs.data, mask)

    def load(self, ptrs, mask, other, cache_modifier, eviction_policy, is_volatile):
        element = ptrs.get_element_ty()
        dtype = _np_dtype(element)  # the interpreter's own table: bfloat16 as uint16
        pointers, lanes = self._lanes(ptrs, mask.data, dtype)
        found = self.storages.indices(pointers, lanes, dtype)
        if found is None:
            return self.original_load(ptrs, mask, other, cache_modifier, eviction_policy, is_volatile)
        if found is _NOTHING_LIVE:
            fill = np.zeros((), dtype) if other is None else other.data
            return TensorHandle(np.broadcast_to(fill, pointers.shape).astype(dtype), element)
        view, index, dead = found
        values = view.take(index)  # raises IndexError for an index past the end of the storage
        if dead is not None:
            fill = np.zeros((), dtype) if other is None else other.data
            np.copyto(values, fill, where=dead, casting="unsafe")  # other has the element's dtype
        return TensorHandle(values, element)

    def store(self, ptrs, value, mask, cache_modifier, eviction_policy):
        values = value.data
        lanes = np.broadcast_to(mask.data, np.broadcast_shapes(mask.data.shape, values.shape))
        pointers, lanes = self._lanes(ptrs, lanes, values.dtype)
        values = np.broadcast_to(values, lanes.shape)
        found = self.storages.indices(pointers, lanes, values.dtype)
        if found is None:
            return self.original_store(ptrs, value, mask, cache_modifier, eviction_policy)
        if found is _NOTHING_LIVE:
            return None
        view, index, dead = found
        if dead is not None:
            # Dead lanes write what the first live lane writes, where it writes it: two passes,
            # where compacting the live lanes of the indices and of the values took three, slower.
            first = int(lanes.argmax())
            values = np.array(values)  # fresh and writable (a broadcast view otherwise)
            np.copyto(values, values.flat[first], where=dead)
        view[index] = values  # an index past the end raises IndexError (numpy's put is ~3x slower)


class _Step(NamedTuple):
    """A reference, in a tape, to what an earlier operation returned (``part`` of a tuple)."""

    index: int
    part: int | None


class _Argument(NamedTuple):
    """A reference, in a tape, to one of the launch's arguments (a pointer or a scalar), so that a
    tape kept for later launches takes theirs."""

    name: str


class _Tape:
    """The builder operations of one program, in order, as (name, arguments, keyword arguments):
    an argument that one of them returned becomes a _Step, one of the launch's arguments an
    _Argument; anything else (constants, types, shapes) is kept as it is, the same for every
    program."""

    def __init__(self, arguments: dict):
        self.arguments = {id(handle): (name, handle) for name, handle in arguments.items()}
        self.steps = []
        self.data_dependent = False  # a recorded value decided the kernel's Python control flow
        self.launch_dependent = False  # so did a launch's argument (the same for all its programs)
        self.depth = 0  # builder methods running (only the outermost is a step)

    def encode(self, value):
        if isinstance(value, TensorHandle):
            origin = value.__dict__.get("_tape_origin")
            if origin is not None and origin[0] is self:
                return _Step(*origin[1:])
            argument = self.arguments.get(id(value))
            return _Argument(argument[0]) if argument is not None and argument[1] is value else value
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(self.encode(v) for v in value)
        return value

    def record(self, name, method):
        def call(*args, **kwargs):
            if self.depth:  # called by another builder method (create_load by way of
                return method(*args, **kwargs)  # create_masked_load): replayed with it
            self.depth += 1
            try:
                result = method(*args, **kwargs)
            finally:
                self.depth -= 1
            index = len(self.steps)
            self.steps.append((name, self.encode(args), {k: self.encode(v) for k, v in kwargs.items()}))
            # Results are tagged with where they came from, not looked up by id(): ids are reused.
            if isinstance(result, TensorHandle):
                result.__dict__["_tape_origin"] = (self, index, None)
            elif isinstance(result, (list, tuple)):
                for part, handle in enumerate(result):
                    if isinstance(handle, TensorHandle):
                        handle.__dict__["_tape_origin"] = (self, index, part)
            return result

        return call

    def same_as(self, other: "_Tape") -> bool:
        """Whether two programs performed the same operations on the same inputs: the same steps,
        and the same objects from outside them (the launch's arguments; anything else made outside
        the builder, such as the interpreter's own reductions, is new in every program)."""
        return (
            not self.data_dependent and not other.data_dependent and len(self.steps) == len(other.steps)
            and all(a[0] == b[0] and _same((a[1], a[2]), (b[1], b[2])) for a, b in zip(self.steps, other.steps))
        )  # fmt: skip


def _same(a, b) -> bool:
    if isinstance(a, TensorHandle) or isinstance(b, TensorHandle):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return a is b


# Verified tapes by kernel and launch signature (constexprs; types of the other arguments): a
# later launch with the same signature replays every program, its first two included. The
# frontend's two programs cost ~15-20 ms more than replayed ones on the seed's layer (Python:
# ~50 us per `tl` operation), 15-25% of its forward+backward. A tape of a pooling kernel holds
# ~150-1200 steps, ~0.3 MB: the least recently used go past 128 (a network's pooling layers
# launch two or three kernels each).
# A launch of one program has no second to check its tape against: its tape waits in _UNVERIFIED
# for the next one-program launch of the signature, and if the two agree it is kept under
# (signature, _ONE_PROGRAM), for one-program launches only (it was only ever program 0's). Small
# layers launch one program a kernel on CPU (up to 2^19 outputs or bases), and the frontend was
# all of their time: ~17 ms a forward of a 4x4 plane, ~25-70 ms a forward+backward.
_TAPES: collections.OrderedDict = collections.OrderedDict()
_UNVERIFIED: collections.OrderedDict = collections.OrderedDict()
_TAPES_LIMIT = 128
_ONE_PROGRAM = "one program"


def _remember(cache: collections.OrderedDict, key, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > _TAPES_LIMIT:
        cache.popitem(last=False)


@functools.lru_cache(maxsize=None)
def _parameters(kernel) -> tuple[inspect.Signature, frozenset]:
    """A kernel's signature and the parameters GridExecutor passes as they are (annotated
    ``tl.constexpr``), the others becoming blocks (``_implicit_cvt``)."""
    from triton.runtime.jit import _normalize_ty

    annotations = {name: _normalize_ty(ty) for name, ty in inspect.get_annotations(kernel).items()}
    return inspect.signature(kernel), frozenset(name for name, ty in annotations.items() if ty == "constexpr")


def _signature_of(kernel, args: dict):
    """What a tape of ``kernel`` depends on besides the values of its arguments, or None if that
    cannot be a dictionary key. By name: GridExecutor binds arguments in the caller's order."""
    parts = tuple(
        (name, str(value.type), value.handle.data.dtype.str) if isinstance(value, tl.tensor) else (name, value)
        for name, value in sorted(args.items(), key=lambda item: item[0])
    )  # fmt: skip
    try:
        hash(parts)
    except TypeError:
        return None
    return kernel, parts


class _Replay:
    """The kernel as GridExecutor calls it, once per program: the first two programs through
    Triton's frontend, recording the builder's operations; then, if the two tapes agree, the
    first tape replayed (its operations on this program's id, with this launch's arguments), each
    result dropped after its last use as the frontend's variables would be. A verified tape is
    kept for later launches of the same signature, unless the launch's own arguments steered the
    kernel's Python control flow (an `if` or a `range` on a scalar argument): such a launch
    replays only its own programs.

    With a ``pool``, replayed programs run on its threads (``finish`` waits for them): numpy
    releases the GIL for its whole-tile operations, which are most of a program's time. Triton's
    programs share no order, so neither do these; a tape with atomics replays on the caller's
    thread, one program after another."""

    def __init__(self, kernel, builder, programs: int, pool=None):
        self.kernel, self.builder, self.programs, self.pool = kernel, builder, programs, pool
        self.pending = []
        self.tapes = []
        self.program = None  # once verified: (the _Program's plan bound to this launch, its extra slots)
        self.arguments = None  # the handles of the launch's arguments (pointers, scalars), by name
        self.signature = None
        functools.update_wrapper(self, kernel)
        self.__signature__ = _parameters(kernel)[0]  # GridExecutor binds arguments by it
        self.__globals__ = kernel.__globals__  # and patches the triton.language it finds there

    def replay_kept(self, grid: tuple, args: tuple, constexprs: dict) -> bool:
        """Every program of the launch replayed from a kept tape, without GridExecutor: none of its
        per-launch work (arguments bound by inspect, triton.language patched for the frontend:
        ~3 ms of a 4x4 plane's 9 ms forward) but the arguments' conversion to blocks, done here as
        it does it. False, having run nothing, where no tape is kept."""
        signature, constexpr_names = _parameters(self.kernel)
        bound = signature.bind(*args, **{k: v for k, v in constexprs.items() if k in signature.parameters})
        bound.apply_defaults()
        converted = {k: v if k in constexpr_names else _implicit_cvt(v) for k, v in bound.arguments.items()}
        if not self._adopt_kept(converted):
            return False
        grid = tuple(grid) + (1,) * (3 - len(grid))
        self.builder.set_grid_dim(*grid)
        try:
            for program_id in itertools.product(*map(range, grid)):  # in GridExecutor's order
                self.builder.set_grid_idx(*program_id)
                self(**converted)
        except Exception as e:
            if triton.knobs.compilation.front_end_debugging:
                raise
            raise InterpreterError(repr(e)) from e
        return True

    def _adopt_kept(self, args: dict) -> bool:
        """Take the launch's arguments (blocks by name) and, if a tape is kept for their signature
        (or one of one program's, for a launch of one), bind it: whether one was."""
        self.arguments = {name: value.handle for name, value in args.items() if isinstance(value, tl.tensor)}
        self.signature = _signature_of(self.kernel, args)
        keys = () if self.signature is None else (self.signature, (self.signature, _ONE_PROGRAM))
        for key in keys[: 2 if self.programs == 1 else 1]:
            if key in _TAPES:
                _TAPES.move_to_end(key)
                self.program = self._bind(_TAPES[key])
                return True
        return False

    def __call__(self, **args):
        if self.program is not None:
            if self.pool is None:
                return self._replay(self.builder.grid_idx)
            self.pending.append(self.pool.submit(self._replay, tuple(self.builder.grid_idx)))
            return None
        if len(self.tapes) == 2:  # the programs differed: the frontend for every one
            return self.kernel(**args)
        if not self.tapes and self._adopt_kept(args):  # the launch's first program
            return self(**args)
        tape = _Tape(self.arguments)
        names = [name for name in dir(self.builder) if name.startswith("create_")
                 or (name.startswith("get_") and not name.endswith("_ty"))]  # fmt: skip
        patched = {name: self.builder.__dict__[name] for name in names if name in self.builder.__dict__}
        for name in names:
            setattr(self.builder, name, tape.record(name, getattr(self.builder, name)))
        # A recorded value turned into a Python bool or int (an `if` or a `range` on tensor data or
        # on the program id) may steer each program differently: no replay then. (The interpreter
        # makes any block true without reading it, as the frontend's `if other:` relies on.)
        # A launch's argument turned into one steers all its programs alike, but not those of
        # other launches.
        conversions = {name: tl.tensor.__dict__[name] for name in ("__bool__", "__index__") if name in tl.tensor.__dict__}

        def watch(convert):
            def call(tensor):
                handle = tensor.handle
                if handle.__dict__.get("_tape_origin", (None,))[0] is tape and handle.data.size == 1:
                    tape.data_dependent = True
                if tape.arguments.get(id(handle), (None, None))[1] is handle:
                    tape.launch_dependent = True
                return convert(tensor)

            return call

        for name, convert in conversions.items():
            setattr(tl.tensor, name, watch(convert))
        try:
            self.kernel(**args)
        finally:
            for name, convert in conversions.items():
                setattr(tl.tensor, name, convert)
            for name in names:
                if name in patched:
                    setattr(self.builder, name, patched[name])
                else:
                    delattr(self.builder, name)
        self.tapes.append(tape)
        keepable = self.signature is not None and not any(t.launch_dependent for t in self.tapes)
        if len(self.tapes) == 2 and self.tapes[0].same_as(tape):
            program = self._compile(self.tapes[0])
            if keepable and _keepable(program):
                _remember(_TAPES, self.signature, program)
            self.program = self._bind(program)
        elif self.programs == 1 and keepable and not tape.data_dependent:
            program = self._compile(tape)
            if _keepable(program):  # (else it would hold this launch's blocks)
                earlier = _UNVERIFIED.pop(self.signature, None)
                if earlier is not None and earlier.same_as(tape):
                    _remember(_TAPES, (self.signature, _ONE_PROGRAM), program)
                else:
                    tape.arguments = {}  # this launch's handles: not needed to compare steps
                    _remember(_UNVERIFIED, self.signature, tape)

    @staticmethod
    def _compile(tape) -> "_Program":
        """The tape as [(builder method's name, args, kwargs, indices of the results to free)]."""
        last_use = list(range(len(tape.steps)))

        def mark(value, user):
            if isinstance(value, _Step):
                last_use[value.index] = user
            elif isinstance(value, (list, tuple)):
                for v in value:
                    mark(v, user)

        for user, (_, args, kwargs) in enumerate(tape.steps):
            mark(args, user)
            mark(list(kwargs.values()), user)
        frees = [[] for _ in tape.steps]
        for index, user in enumerate(last_use):
            frees[user].append(index)
        return _Program((name, args, kwargs, frees[i]) for i, (name, args, kwargs) in enumerate(tape.steps))

    def _bind(self, program: "_Program"):
        """The program's plan with this launch's builder methods (its loads and stores are bound
        to its own tensors) and arguments. The program id is the replayed program's own (None
        below), not the builder's current one."""
        if any("atomic" in name for name, *_ in program):
            self.pool = None  # the interpreter's atomics are a numpy read-modify-write: one thread
        extra = [value if kind == "constant" else self.arguments[value] for kind, value in program.extra]
        plan = [(index, None if name == "create_get_program_id" else getattr(self.builder, name), slots, kwslots, program[index])
                for index, name, slots, kwslots in program.plan]  # fmt: skip
        return plan, extra

    def _replay(self, program_id):
        plan, extra = self.program
        values = [None] * len(plan) + extra
        arguments = self.arguments

        def resolve(value):
            if isinstance(value, _Step):
                result = values[value.index]
                return result if value.part is None else result[value.part]
            if isinstance(value, _Argument):
                return arguments[value.name]
            if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
                return type(value)(resolve(v) for v in value)
            return value

        for index, method, slots, kwslots, (_, args, kwargs, frees) in plan:
            if method is None:
                values[index] = TensorHandle(np.array([program_id[args[0]]], dtype=np.int32), tl.int32)
            elif slots is None:
                values[index] = method(*resolve(args), **{k: resolve(v) for k, v in kwargs.items()})
            elif kwslots:
                values[index] = method(*[values[j] for j in slots], **{k: values[j] for k, j in kwslots.items()})
            else:
                values[index] = method(*[values[j] for j in slots])
            for i in frees:
                values[i] = None

    def finish(self):
        """Wait for the programs replayed on other threads; raise the first one's error."""
        errors = [future.exception() for future in self.pending]  # each waits for its program
        self.pending.clear()
        error = next((e for e in errors if e is not None), None)
        if error is not None:
            raise InterpreterError(repr(error)) from error


class _Program(list):
    """A verified tape, [(builder method's name, args, kwargs, indices of the results to free)],
    and its plan for replays: every argument a slot of one list, which holds the steps' results
    (slot i: step i's), then the tape's constants and the launch's arguments (``extra``: what
    each further slot holds). A step then gathers its arguments with a list comprehension, where
    resolving each by its kind (recursively, through lists) was ~40% of a replayed program's
    Python. Every replay passes the same constant objects (a shape's list among them): the
    builder's methods only read their arguments. The rare step whose arguments are not all slots
    (a list holding a result, a part of a tuple) is resolved from the tape's references."""

    def __init__(self, steps):
        super().__init__(steps)
        self.extra = []  # ("constant", value) or ("argument", name), from slot len(self) on
        where = {}  # id of a constant or an argument's name -> its slot

        def slot(value):
            if isinstance(value, _Step):
                return value.index if value.part is None else None
            if isinstance(value, _Argument):
                key, entry = ("argument", value.name), ("argument", value.name)
            elif isinstance(value, (list, tuple)) and not hasattr(value, "_fields") and not _constant(value):
                return None
            else:
                key, entry = ("constant", id(value)), ("constant", value)
            if key not in where:
                where[key] = len(self) + len(self.extra)
                self.extra.append(entry)
            return where[key]

        self.plan = []  # (index, name, argument slots, keyword slots), or (index, name, None, None)
        for index, (name, args, kwargs, _) in enumerate(self):
            slots = [slot(a) for a in args]
            kwslots = {k: slot(v) for k, v in kwargs.items()}
            if None in slots or None in kwslots.values():
                slots = kwslots = None
            self.plan.append((index, name, slots, kwslots))


def _constant(value) -> bool:
    """Whether a tape's argument holds no step's result and no launch argument."""
    if isinstance(value, (_Step, _Argument)):
        return False
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return all(map(_constant, value))
    return True


def _keepable(program) -> bool:
    """Whether a program refers to nothing of its launch but through _Argument: no handle made
    outside the builder (which would be this launch's, whatever a later one holds)."""

    def free_of_handles(value):
        if isinstance(value, TensorHandle):
            return False
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return all(map(free_of_handles, value))
        if isinstance(value, dict):
            return all(map(free_of_handles, value.values()))
        return True

    return all(free_of_handles(args) and free_of_handles(kwargs) for _, args, kwargs, _ in program)


# Threads for replayed programs: as many as PyTorch's intra-op threads (torch.set_num_threads,
# which the benchmarks' --threads sets too), so that the interpreter takes what PyTorch's CPU
# kernels take. The seed's forward+backward on 2 cores: ~30% faster than on one thread.
# A forked child (a launcher, a DataLoader worker) inherits the pool but not its threads, and the
# pool would queue its work for them forever: each process makes its own.
_POOL = None
_POOL_KEY = None  # (process id, threads) the pool was made for


def _pool() -> concurrent.futures.ThreadPoolExecutor | None:
    global _POOL, _POOL_KEY
    threads = torch.get_num_threads()
    if threads <= 1:
        return None
    key = (os.getpid(), threads)
    if _POOL is None or _POOL_KEY != key:
        if _POOL is not None and _POOL_KEY[0] == key[0]:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_KEY = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="tritonpool-replay"), key
    return _POOL


def launch(fn: InterpretedFunction, grid: tuple, args: tuple, constexprs, replay: bool = True) -> None:
    """``fn[grid](*args, **constexprs)`` on CPU tensors, with the fast paths above (``replay``:
    programs replayed from a tape of the first two or of an earlier launch; see the module's
    docstring for the kernels it fits)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if any(t.device.type != "cpu" for t in tensors):
        raise ValueError("kernels.interpreter.launch runs CPU tensors only")
    builder = interpreter_builder
    with _LAUNCH_LOCK:
        memory = _FastMemory(_Storages(tensors), builder)
        saved_options = builder.options
        builder.options = dataclasses.replace(saved_options, sanitize_overflow=False)
        builder.create_masked_load = memory.load  # instance attributes shadow the class's methods
        builder.create_masked_store = memory.store
        builder.create_addptr = memory.addptr
        builder.create_select = memory.select
        builder.create_splat = memory.splat
        builder.create_fp_ext = memory.fp_ext
        builder.create_fp_trunc = memory.fp_trunc
        builder.get_null_value = memory.null_value
        builder.binary_op = memory.binary_op  # what create_add, create_sub, ... call
        builder.create_atomic_rmw = memory.atomic_rmw
        builder.create_atomic_cas = memory.atomic_cas
        try:
            if replay:  # InterpretedFunction.run, with the kernel wrapped
                replayer = _Replay(fn.rewrite(), builder, grid[0] * math.prod(grid[1:]), _pool())
                try:
                    if fn.pre_run_hooks or not replayer.replay_kept(grid, args, constexprs):
                        GridExecutor(replayer, fn.arg_names, grid, fn.pre_run_hooks)(*args, **constexprs)
                finally:
                    replayer.finish()
            else:
                fn[grid](*args, **constexprs)
        finally:
            del builder.create_masked_load, builder.create_masked_store, builder.create_addptr, builder.create_select
            del builder.create_splat, builder.create_fp_ext, builder.create_fp_trunc, builder.get_null_value
            del builder.binary_op
            del builder.create_atomic_rmw, builder.create_atomic_cas
            builder.options = saved_options
