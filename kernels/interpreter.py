"""Run a Triton kernel on CPU tensors through Triton's interpreter, with vectorized memory access.

Triton's interpreter executes a kernel body with numpy, one operation over a whole tile at a time,
which costs about a nanosecond an element. Its loads and stores do not: they walk the tile one
element at a time in C++ through checked accessors (~30 ns an element measured here). In a
memory-bound kernel such as pooling they dominate.

``launch`` runs one launch with, for that launch only:

* loads and stores as numpy gathers and scatters into the launch's own tensors: the pointers a
  kernel computes are byte addresses inside those tensors' storages, so each becomes an index into
  a numpy view of its storage. Indices are bounds-checked (an IndexError, not a stray read), masked
  lanes are never touched, and a pointer that falls in none of the tensors goes to the
  interpreter's own loader unchanged;
* pointer additions in one pass: a row of pointers plus a column of offsets is summed by
  broadcasting, not converted, scaled and added as three full tiles;
* scalars spread over a block (``splat``: a scalar operand of a block operation, a load's
  ``other``) as read-only broadcast views instead of freshly filled blocks;
* selects (``tl.where``) without branches: numpy's ``where`` branches on every element, and on a
  data-dependent mask such as "this tap beats the best so far" mispredicts half the time
  (~4 ns an element here, against ~0.5 for a bitwise blend);
* no int32 overflow re-check (the interpreter redoes every int32 add/sub/mul in int64): callers
  keep offsets in range themselves (kernels/max_pool.py switches to int64 offsets, tested at 2**31).

The kernel source, its semantics and the interpreter's execution of everything else are untouched.
The interpreter's builder is one per process and holds the current program id, so launches from
several threads take turns (a lock), which also keeps one launch's memory views from another's.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import torch
from triton.runtime.interpreter import InterpretedFunction, TensorHandle, _get_np_dtype, interpreter_builder

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

    def indices(self, ptrs: np.ndarray, mask: np.ndarray, dtype: np.dtype):
        """(view, element indices, mask of the dead lanes or None when all live) for the pointers of
        one access; _NOTHING_LIVE; or None when they do not point into the launch's tensors
        (or not at whole elements of ``dtype``, as a misaligned dtype view's would).
        Masked lanes get index 0: their pointers may lie anywhere (a window in the padding)."""
        live = mask.all()
        first = 0 if live else int(mask.argmax())
        if not live and not mask.flat[first]:
            return _NOTHING_LIVE
        address = int(ptrs.flat[first])
        found = self.find(address, dtype)
        if found is None or (address - found[0]) % dtype.itemsize:
            return None
        base, view = found
        index = ptrs.view(np.int64) - base  # addresses fit in int64; a fresh array
        if dtype.itemsize > 1:
            index >>= dtype.itemsize.bit_length() - 1  # itemsizes are powers of two
        if not live:
            dead = ~mask
            np.copyto(index, 0, where=dead)
        # numpy would take a negative index from the end of the storage: refuse it, as numpy
        # refuses one past the end.
        if index.size and index.min() < 0:
            raise IndexError(f"a pointer lies {-int(index.min())} elements before the start of its tensor's storage")
        return view, index, None if live else dead


def _compact(a: np.ndarray) -> np.ndarray:
    """The smallest array that broadcasts back to ``a``: a broadcast view's repeated axes as 1."""
    if 0 not in a.strides:
        return a
    return a[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in a.strides)]


class _FastMemory:
    """Vectorized replacements for the interpreter builder's masked load and store, and a leaner
    pointer addition."""

    def __init__(self, storages: _Storages, builder):
        self.storages = storages
        self.original_load = builder.create_masked_load
        self.original_store = builder.create_masked_store

    @staticmethod
    def addptr(ptr, offset):
        """``ptr + offset`` (in elements), in the interpreter's uint64 arithmetic, in one pass over
        the tile. The interpreter converts, scales and adds the full broadcast tiles (three passes,
        three fresh arrays); the typical tap pointer, a row of pointers plus a column of offsets,
        needs only their broadcast sum."""
        width = max(1, ptr.get_element_ty().primitive_bitwidth // 8)  # int1 pointers step by bytes
        offset_data = _compact(offset.data)
        # Converted and scaled in one pass; negative offsets wrap, as the interpreter's astype does.
        step = np.multiply(offset_data, np.uint64(width), dtype=np.uint64, casting="unsafe")
        shape = np.broadcast_shapes(ptr.data.shape, offset.data.shape)
        if step.shape == shape:  # a full tile of offsets (fresh): add the pointers into it
            address = np.add(_compact(ptr.data), step, out=step)
        else:
            address = np.add(_compact(ptr.data), step)
            if address.shape != shape:  # both operands repeat along the same axis: stays a view
                address = np.broadcast_to(address, shape)
        return TensorHandle(address, ptr.dtype)

    @staticmethod
    def splat(ret_ty, arg):
        """``arg`` repeated over the block ``ret_ty`` as a read-only broadcast view: what
        numpy's operations do with a scalar anyway, without filling a block first. (Nothing in the
        interpreter writes into an operand; a write would raise, not corrupt.)"""
        value = np.asarray(arg.data).astype(_get_np_dtype(arg.dtype))  # as np.full converts it
        return TensorHandle(np.broadcast_to(value, ret_ty.shape), arg.dtype.scalar)

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

    def load(self, ptrs, mask, other, cache_modifier, eviction_policy, is_volatile):
        element = ptrs.get_element_ty()
        dtype = _get_np_dtype(element)  # the interpreter's own table: bfloat16 as uint16
        pointers, lanes = np.broadcast_arrays(ptrs.data, mask.data)
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
        pointers, lanes, values = np.broadcast_arrays(ptrs.data, mask.data, values)
        found = self.storages.indices(pointers, lanes, values.dtype)
        if found is None:
            return self.original_store(ptrs, value, mask, cache_modifier, eviction_policy)
        if found is _NOTHING_LIVE:
            return None
        view, index, dead = found
        if dead is not None:
            live = ~dead
            index, values = index[live], values[live]
        view[index] = values  # an index past the end raises IndexError (numpy's put is ~3x slower)


def launch(fn: InterpretedFunction, grid: tuple, args: tuple, constexprs) -> None:
    """``fn[grid](*args, **constexprs)`` on CPU tensors, with the fast paths above."""
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
        try:
            fn[grid](*args, **constexprs)
        finally:
            del builder.create_masked_load, builder.create_masked_store, builder.create_addptr, builder.create_select
            del builder.create_splat
            builder.options = saved_options
