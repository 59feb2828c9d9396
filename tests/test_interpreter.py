"""kernels.interpreter: the interpreter's loads and stores, vectorized, must behave exactly as its own."""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import triton.language as tl
import triton.runtime.interpreter as triton_interpreter
from triton.runtime.errors import InterpreterError
from triton.runtime.interpreter import InterpretedFunction, interpreter_builder

from kernels import interpreter
from kernels import max_pool as mp


def _gather_kernel(src_ptr, dst_ptr, ROWS, COLS, src_stride, OFFSET: tl.constexpr, BLOCK: tl.constexpr):
    # A (BLOCK, BLOCK) tile from a strided 2D source, -7 outside (ROWS, COLS); stores only the
    # upper triangle, so masked stores leave the rest of dst alone. (other is a float: the interpreter
    # itself turns an int other into bfloat16 bits wrongly.)
    r = tl.arange(0, BLOCK)[:, None]
    c = tl.arange(0, BLOCK)[None, :]
    v = tl.load(src_ptr + OFFSET + r * src_stride + c, mask=(r < ROWS) & (c < COLS), other=-7.0)
    tl.store(dst_ptr + r * BLOCK + c, v, mask=c >= r)


def _scalar_kernel(src_ptr, dst_ptr):
    tl.store(dst_ptr, tl.load(src_ptr + 1) * 2)


GATHER = InterpretedFunction(_gather_kernel)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int32]


def _expected_gather(src2d, rows, cols, block, dst_before):
    tile = torch.full((block, block), -7, dtype=src2d.dtype)
    tile[:rows, :cols] = src2d[:rows, :cols]
    upper = torch.ones(block, block, dtype=torch.bool).triu()
    return torch.where(upper, tile, dst_before)


@pytest.fixture(params=["addresses", "parts"])
def address_path(request, monkeypatch):
    """Pointer tiles as the interpreter's addresses, or (from any size up) as _Addresses whose
    parts loads and stores turn into indices directly; yields the calls of the latter."""
    calls = []
    if request.param == "parts":
        real = interpreter._Addresses.element_indices
        monkeypatch.setattr(interpreter, "_LAZY_ADDRESSES", 1)
        monkeypatch.setattr(interpreter._Addresses, "element_indices", lambda self, *a: (calls.append(1), real(self, *a))[1])
    else:
        monkeypatch.setattr(interpreter, "_LAZY_ADDRESSES", float("inf"))
    return request.param, calls


@pytest.fixture
def forbid_slow_path(monkeypatch):
    """Fail if any load or store reaches the interpreter's element-at-a-time C++ loader."""

    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError(f"the interpreter's own {name} was called")

    monkeypatch.setattr(triton_interpreter, "_interpreter", Forbidden())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows, cols", [(8, 8), (5, 3), (0, 4)], ids=["full", "partial", "nothing_live"])
def test_masked_gather_and_store_match_the_definition(dtype, rows, cols, forbid_slow_path, address_path):
    block = 8
    # The source is a view into the middle of a larger storage (storage offset, row stride 11):
    # pointers are resolved against the storage, not the view.
    base = (torch.arange(200) % 50 - 25).to(dtype)
    src2d = base[13:].as_strided((block, block), (11, 1))
    dst = torch.arange(block * block).reshape(block, block).to(dtype)
    expected = _expected_gather(src2d, rows, cols, block, dst.clone())
    interpreter.launch(GATHER, (1,), (src2d, dst, rows, cols, 11), dict(OFFSET=0, BLOCK=block))
    assert torch.equal(dst, expected)
    path, calls = address_path
    assert len(calls) == (0 if path == "addresses" else 2 if rows else 1)  # nothing live: no load


def test_scalar_load_and_store(forbid_slow_path):
    src, dst = torch.tensor([1.0, 2.5, 4.0]), torch.zeros(1)
    interpreter.launch(InterpretedFunction(_scalar_kernel), (1,), (src, dst), {})
    assert dst.item() == 5.0


def test_a_live_lane_outside_its_tensor_is_an_error_not_a_read(address_path):
    src = torch.arange(8, dtype=torch.float32)  # a storage of exactly 8 elements
    dst = torch.zeros(4, 4)
    # Row 1 of a 4x4 tile with row stride 8 reads elements 8..11: past the end of src.
    with pytest.raises(Exception, match="IndexError"):
        interpreter.launch(GATHER, (1,), (src, dst, 4, 4, 8), dict(OFFSET=0, BLOCK=4))


def _reversed_kernel(src_ptr, dst_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(dst_ptr + i, tl.load(src_ptr + (3 - i)))


@pytest.mark.parametrize("store", [False, True])
def test_a_live_lane_before_its_tensor_is_an_error_not_a_wraparound(store, address_path):
    # Lane 0 lies in the tensor, lanes 4.. before its first element: numpy would read (or write)
    # them from the end of the storage.
    a, b = torch.arange(8, dtype=torch.float32), torch.zeros(8)
    args = (b, a) if store else (a, b)
    kernel = _reversed_kernel if not store else _reversed_store_kernel
    with pytest.raises(Exception, match="before the start"):
        interpreter.launch(InterpretedFunction(kernel), (1,), args, dict(BLOCK=8))
    assert torch.equal(a, torch.arange(8, dtype=torch.float32))


def _reversed_store_kernel(src_ptr, dst_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(dst_ptr + (3 - i), tl.load(src_ptr + i))


def _far_kernel(src_ptr, dst_ptr, far, STORE: tl.constexpr, BLOCK: tl.constexpr):
    # Every lane `far` elements past its tensor: in no tensor of the launch.
    i = tl.arange(0, BLOCK)
    if STORE:
        tl.store(dst_ptr + far + i, tl.load(src_ptr + i))
    else:
        tl.store(dst_ptr + i, tl.load(src_ptr + far + i))


@pytest.mark.parametrize("store", [False, True])
def test_a_pointer_into_no_tensor_of_the_launch_is_an_error(store, address_path):
    """Triton's own interpreter would read or write whatever memory lies there (a heap corrupted
    by a kernel's bug, found later as a crash elsewhere); a GPU would fault. Here: an IndexError,
    and nothing written."""
    src, dst = torch.arange(8, dtype=torch.float32), torch.zeros(8)
    with pytest.raises(Exception, match="lies in none of the launch's tensors"):
        interpreter.launch(InterpretedFunction(_far_kernel), (1,), (src, dst, 2**40), dict(STORE=store, BLOCK=8))
    assert torch.equal(dst, torch.zeros(8)) and torch.equal(src, torch.arange(8, dtype=torch.float32))


def test_the_builder_is_restored_after_a_launch_even_a_failing_one():
    options = interpreter_builder.options
    with pytest.raises(Exception):
        interpreter.launch(GATHER, (1,), (torch.arange(8.0), torch.zeros(4, 4), 4, 4, 8), dict(OFFSET=0, BLOCK=4))
    names = ["create_masked_load", "create_masked_store", "create_addptr", "create_select", "create_splat"]
    for name in names + ["create_fp_ext", "create_fp_trunc", "get_null_value"]:
        assert name not in vars(interpreter_builder), name
    assert interpreter_builder.options is options and options.sanitize_overflow


def test_pooling_on_cpu_never_takes_the_slow_path(forbid_slow_path, address_path):
    # Every load and store of the forward (values, taps, indices) and of both backward kernels.
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
        x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
        out, idx = mp.max_pool2d(x, return_indices=True, **kwargs)
        out.backward(torch.ones_like(out))
        ref, ref_idx = torch.nn.functional.max_pool2d(x.detach(), return_indices=True, **kwargs)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
        assert x.grad.sum().item() == out.numel()
    path, calls = address_path
    assert (path == "parts") == bool(calls)


@pytest.mark.parametrize("plans", ["cpu", "cuda"])
def test_cpu_tiles_repeat_their_last_row_and_column_instead_of_masking(plans, monkeypatch):
    """CPU plans clamp the lanes past the end of a partial tile to its last row or column: without
    padding, and with even sizes (no phase of a base past the end), no store and no load of the
    forward, the scatter backward or the phase backward's stores has a masked-off lane (each would
    cost the interpreter extra passes); the phase backward's loads keep the masks of candidate
    windows that do not exist. Results stay PyTorch's. CUDA's plans (run here in the interpreter)
    keep the mask, so the check does see masked lanes where there are some."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stand_in_driver import cuda_launch_specs

    accesses, kernel = [], [None]
    launch = mp._launch
    monkeypatch.setattr(mp, "_launch", lambda spec, device: (kernel.__setitem__(0, spec.kernel), launch(spec, device))[1])
    for op in ("load", "store"):
        real = getattr(interpreter._FastMemory, op)

        def access(self, ptrs, *args, op=op, real=real):
            mask = args[0 if op == "load" else 1]
            accesses.append((kernel[0], op, bool(mask.data.all())))
            return real(self, ptrs, *args)

        monkeypatch.setattr(interpreter._FastMemory, op, access)
    for layout in (torch.contiguous_format, torch.channels_last):
        # 2x3 planes of 8x10 (every launch's tile is partial: 18 to 40 rows in tiles of 32 or 64),
        # windows that do not overlap (the scatter backward) and that do (the phase backward).
        x = torch.randn(2, 3, 8, 10, dtype=torch.float64).to(memory_format=layout).requires_grad_(True)
        for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2)):
            with cuda_launch_specs() if plans == "cuda" else contextlib.nullcontext():
                out, idx = mp.max_pool2d(x, return_indices=True, **kwargs)
                (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
            ref, ref_idx = torch.nn.functional.max_pool2d(x.detach(), return_indices=True, **kwargs)
            assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
            winners = torch.zeros_like(x).flatten(2).scatter_add_(2, ref_idx.flatten(2), torch.ones_like(ref).flatten(2))
            assert torch.equal(grad, winners.view_as(x))
    kernels_run = {k for k, _, _ in accesses}
    assert kernels_run == ({"forward", "backward_phase", "backward_scatter"} if plans == "cpu" else {"forward", "backward_phase"})
    masked = {(k, op) for k, op, unmasked in accesses if not unmasked}
    if plans == "cpu":
        assert masked == {("backward_phase", "load")}
    else:
        assert ("forward", "store") in masked and ("backward_phase", "store") in masked


def test_launches_from_several_threads_take_turns():
    """The interpreter's builder is global (program id, our memory views): concurrent pooling calls
    from threads must each get their own right answer."""
    inputs = [torch.randn(2, 3, 40, 41, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    results = [None] * len(inputs)

    def pool(i):
        try:
            results[i] = mp.max_pool2d(inputs[i], 3, 2, 1, return_indices=True)
        except Exception as error:  # reported below: a thread's exception would go unseen
            results[i] = error

    threads = [threading.Thread(target=pool, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, result in zip(inputs, results):
        assert isinstance(result, tuple), result
        out, idx = result
        ref, ref_idx = torch.nn.functional.max_pool2d(x, 3, 2, 1, return_indices=True)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_non_cpu_tensors_are_refused():
    fake = torch.empty(0, device="meta")
    with pytest.raises(ValueError, match="CPU tensors only"):
        interpreter.launch(GATHER, (1,), (fake, fake, 1, 1, 1), dict(OFFSET=0, BLOCK=4))


def test_pointers_between_elements_are_not_resolved():
    # A float32 address one byte into a storage (as a misaligned dtype view would give) must not
    # be rounded to an element: such accesses go to the interpreter's own path.
    t = torch.zeros(4)
    storages = interpreter._Storages([t])
    lanes = np.ones(2, dtype=bool)
    aligned = np.array([t.data_ptr(), t.data_ptr() + 4], dtype=np.uint64)
    assert storages.indices(aligned, lanes, np.dtype(np.float32))[1].tolist() == [0, 1]
    assert storages.indices(aligned + np.uint64(1), lanes, np.dtype(np.float32)) is None


@pytest.mark.parametrize("element", [tl.float32, tl.float16, tl.int8, tl.int1, tl.float64], ids=str)
@pytest.mark.parametrize("offset_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize(
    "ptr_shape, offset_shape",
    [((1, 8), (4, 1)), ((4, 1), (1, 8)), ((4, 1), (4, 1)), ((4, 8), (4, 8)), ((1, 1), (4, 8)), ((4, 8), (1, 1))],
)  # fmt: skip
def test_pointer_addition_matches_the_interpreters(ptr_shape, offset_shape, offset_dtype, element):
    """Same addresses as the interpreter's own create_addptr (uint64, negative offsets wrapping),
    for pointers and offsets broadcast from rows, columns or scalars."""
    shape = np.broadcast_shapes(ptr_shape, offset_shape)
    rng = np.random.default_rng(0)
    ptrs = np.uint64(2**40) + rng.integers(0, 2**20, ptr_shape).astype(np.uint64)
    offsets = rng.integers(-(2**20), 2**20, offset_shape).astype(offset_dtype)
    ptr_ty = tl.pointer_type(element)
    ptr = triton_interpreter.TensorHandle(np.broadcast_to(ptrs, shape), ptr_ty)
    offset = triton_interpreter.TensorHandle(np.broadcast_to(offsets, shape), tl.int32 if offset_dtype == np.int32 else tl.int64)
    expected = type(interpreter_builder).create_addptr(interpreter_builder, ptr, offset)
    got = interpreter._FastMemory.addptr(ptr, offset)
    assert got.data.shape == shape and got.data.dtype == np.uint64
    assert np.array_equal(got.data, expected.data)
    assert got.dtype == expected.dtype


@pytest.mark.parametrize("element", [tl.float32, tl.float16, tl.int1, tl.float64], ids=str)
@pytest.mark.parametrize("offset_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize(
    "ptr_shape, offset_shape", [((1, 8), (4, 1)), ((4, 1), (1, 8)), ((1, 1), (4, 8)), ((1,), (6,)), ((2, 1, 1), (1, 3, 4))]
)  # fmt: skip
def test_address_parts_give_the_interpreters_addresses_and_indices(ptr_shape, offset_shape, offset_dtype, element, monkeypatch):
    """A full tile of pointers kept as its parts: its addresses (if anything reads them), its first
    live address and its element indices, with their minimum, are those of the interpreter's own
    addition, negative offsets included."""
    monkeypatch.setattr(interpreter, "_LAZY_ADDRESSES", 1)
    width = max(1, element.primitive_bitwidth // 8)
    shape = np.broadcast_shapes(ptr_shape, offset_shape)
    rng = np.random.default_rng(2)
    storage = 2**40
    ptrs = np.uint64(storage) + (rng.integers(0, 2**10, ptr_shape) * width).astype(np.uint64)
    offsets = rng.integers(-(2**8), 2**12, offset_shape).astype(offset_dtype)
    offsets.flat[0] = -(2**12)  # before the storage from every pointer
    ptr = triton_interpreter.TensorHandle(np.broadcast_to(ptrs, shape), tl.pointer_type(element))
    offset = triton_interpreter.TensorHandle(np.broadcast_to(offsets, shape), tl.int32 if offset_dtype == np.int32 else tl.int64)
    expected = type(interpreter_builder).create_addptr(interpreter_builder, ptr, offset).data
    got = interpreter._FastMemory.addptr(ptr, offset)
    assert isinstance(got, interpreter._Addresses) and got.shape == shape
    assert all(got.address_at(k) == int(expected.flat[k]) for k in (0, 5, expected.size - 1))
    shift = width.bit_length() - 1
    index, lowest = got.element_indices(storage, shift)
    want = (expected.view(np.int64) - storage) >> shift
    assert index.shape == shape and index.dtype == np.int64 and np.array_equal(index, want)
    assert lowest == want.min() and want.min() < 0  # some offsets reach before the storage
    assert np.array_equal(got.data, expected) and got.data.dtype == np.uint64  # read last: kept lazy until here


@pytest.mark.parametrize("shape", [(64, 64), (4096,)])
def test_small_or_unbroadcast_pointer_tiles_stay_addresses(shape):
    """Parts pay off only for tiles of some size made by a broadcast: a small tile, or pointers
    that already fill the tile, are added at once."""
    ptr = triton_interpreter.TensorHandle(np.full(shape, 2**40, np.uint64), tl.pointer_type(tl.float32))
    offset = triton_interpreter.TensorHandle(np.zeros(shape, np.int32), tl.int32)
    assert type(interpreter._FastMemory.addptr(ptr, offset)) is triton_interpreter.TensorHandle
    small = triton_interpreter.TensorHandle(np.full((1, 8), 2**40, np.uint64), tl.pointer_type(tl.float32))
    column = triton_interpreter.TensorHandle(np.zeros((8, 1), np.int32), tl.int32)
    assert type(interpreter._FastMemory.addptr(small, column)) is triton_interpreter.TensorHandle


@pytest.mark.parametrize("offset_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize(
    "offset_shape, step_shape, fits",
    [((4, 8), (1, 1), True), ((1, 8), (1, 1), True), ((1, 8), (1, 8), True), ((4, 8), (4, 1), True),
     ((1, 8), (4, 1), False), ((4, 8), (4, 8), True)],
)  # fmt: skip
def test_steps_from_address_parts_stay_parts(offset_shape, step_shape, fits, offset_dtype, monkeypatch):
    """``(base + offsets) + step``: a step that fits the parts (a scalar into the bases, one that
    broadcasts into the offsets) joins them without computing the addresses; one that does not
    (a column onto a row) makes new parts from them. The addresses are the interpreter's own,
    for negative steps too."""
    monkeypatch.setattr(interpreter, "_LAZY_ADDRESSES", 1)
    shape = (4, 8)
    rng = np.random.default_rng(3)
    ptr_ty = tl.pointer_type(tl.float32)
    int_ty = tl.int32 if offset_dtype == np.int32 else tl.int64
    base = triton_interpreter.TensorHandle(np.broadcast_to(np.uint64(2**40), shape), ptr_ty)
    offsets = rng.integers(-50, 50, offset_shape).astype(offset_dtype)
    steps = rng.integers(-50, 50, step_shape).astype(offset_dtype)
    offset = triton_interpreter.TensorHandle(np.broadcast_to(offsets, shape), int_ty)
    step = triton_interpreter.TensorHandle(np.broadcast_to(steps, shape), int_ty)
    parts = interpreter._FastMemory.addptr(base, offset)
    assert isinstance(parts, interpreter._Addresses)
    got = interpreter._FastMemory.addptr(parts, step)
    assert isinstance(got, interpreter._Addresses)
    assert ("_data" not in parts.__dict__) == fits
    own = type(interpreter_builder).create_addptr
    expected = own(interpreter_builder, own(interpreter_builder, base, offset), step).data
    assert np.array_equal(got.data, expected) and got.dtype == ptr_ty


BINARY_OPS = ["create_add", "create_sub", "create_mul", "create_and", "create_icmpSLT", "create_fadd", "create_fsub"]


@pytest.mark.parametrize("op", BINARY_OPS)
@pytest.mark.parametrize(
    "lhs_shape, rhs_shape, compact",
    [((1, 1), (1, 1), (1, 1)), ((4, 1), (4, 1), (4, 1)), ((4, 1), (1, 1), (4, 1)), ((1, 8), (4, 1), None),
     ((4, 8), (1, 1), None)],
)  # fmt: skip
def test_binary_ops_of_broadcast_operands_stay_broadcast(op, lhs_shape, rhs_shape, compact, monkeypatch):
    """Arithmetic, comparisons and bitwise operations give the interpreter's own bits; where both
    operands are broadcast along the same axes (``0 - splat``, what ``ptr - n`` becomes) the
    result is broadcast too, computed once per distinct element."""
    shape = (4, 8)
    rng = np.random.default_rng(4)
    floating = op.startswith("create_f")
    np_dtype, element = (np.float32, tl.float32) if floating else (np.int32, tl.int32)
    if op == "create_and":
        np_dtype, element = np.bool_, tl.int1

    def operand(op_shape):
        values = rng.integers(-(2**31), 2**31, op_shape).astype(np_dtype) if not floating else rng.standard_normal(op_shape).astype(np_dtype)
        return triton_interpreter.TensorHandle(np.broadcast_to(values, shape), element)

    lhs, rhs = operand(lhs_shape), operand(rhs_shape)
    expected = getattr(type(interpreter_builder), op)(interpreter_builder, lhs, rhs)
    monkeypatch.setattr(interpreter_builder, "binary_op", interpreter._FastMemory.binary_op, raising=False)
    got = getattr(interpreter_builder, op)(lhs, rhs)
    assert got.data.shape == shape and got.data.dtype == expected.data.dtype and got.dtype == expected.dtype
    assert np.array_equal(got.data, expected.data)  # int32 wraps alike
    assert interpreter._compact(got.data).shape == (compact or shape)


@pytest.mark.parametrize(
    "np_dtype, element",
    [(np.float32, tl.float32), (np.float64, tl.float64), (np.float16, tl.float16), (np.uint16, tl.bfloat16),
     (np.int8, tl.int8), (np.int32, tl.int32), (np.int64, tl.int64), (np.bool_, tl.int1)],
    ids=str,
)  # fmt: skip
@pytest.mark.parametrize(
    "cond_shape, lhs_shape, rhs_shape",
    [((6, 9), (6, 9), (6, 9)), ((6, 1), (1, 9), (6, 9)), ((6, 9), (1, 1), (6, 9)), ((1, 9), (6, 1), (1, 1))],
)  # fmt: skip
def test_select_matches_the_interpreters_bit_for_bit(np_dtype, element, cond_shape, lhs_shape, rhs_shape):
    """The branchless select gives np.where's bits (NaNs with their payloads, -0.0 apart from 0.0)
    for every element width and for operands broadcast from rows, columns or scalars."""
    shape = np.broadcast_shapes(cond_shape, lhs_shape, rhs_shape)
    rng = np.random.default_rng(1)

    def operand(op_shape):
        raw = rng.integers(0, 256, (*op_shape, np.dtype(np_dtype).itemsize), dtype=np.uint8)
        values = raw.view(np_dtype).reshape(op_shape) if np_dtype != np.bool_ else raw[..., 0] % 2 == 1
        if np_dtype == np.float32:  # special values among the random bit patterns
            values.flat[:3] = [np.nan, -0.0, 0.0]
        return triton_interpreter.TensorHandle(np.broadcast_to(values, shape), element)

    cond = triton_interpreter.TensorHandle(np.broadcast_to(rng.random(cond_shape) < 0.5, shape), tl.int1)
    lhs, rhs = operand(lhs_shape), operand(rhs_shape)
    expected = type(interpreter_builder).create_select(interpreter_builder, cond, lhs, rhs)
    got = interpreter._FastMemory.select(cond, lhs, rhs)
    assert got.data.shape == shape and got.data.dtype == expected.data.dtype
    assert got.data.tobytes() == expected.data.tobytes()
    assert got.dtype == expected.dtype


def test_select_of_mixed_dtypes_takes_the_interpreters_path():
    cond = triton_interpreter.TensorHandle(np.array([True, False]), tl.int1)
    lhs = triton_interpreter.TensorHandle(np.array([1.5, 2.5], np.float64), tl.float64)
    rhs = triton_interpreter.TensorHandle(np.array([3, 4], np.int32), tl.int32)
    got = interpreter._FastMemory.select(cond, lhs, rhs)
    assert got.data.tolist() == [1, 4] and got.data.dtype == np.int32 and got.dtype == tl.int32


@pytest.mark.parametrize(
    "arg",
    [
        triton_interpreter.TensorHandle(np.array(7, np.int32), tl.int32),  # a scalar argument
        triton_interpreter.TensorHandle(np.array([3], np.int32), tl.int32),  # a program id
        triton_interpreter.TensorHandle(np.array(-np.inf, np.float32), tl.float32),
        triton_interpreter.TensorHandle(np.array(0x3F80, np.uint16), tl.bfloat16),
        triton_interpreter.TensorHandle(np.array([2.5], np.float32), tl.float64),  # converted
    ],
    ids=["int32", "program_id", "float32", "bfloat16", "converted"],
)
@pytest.mark.parametrize("shape", [[4], [4, 8], [1, 8]])
def test_splat_matches_the_interpreters_and_is_read_only(arg, shape):
    ret_ty = tl.block_type(arg.dtype.scalar, shape)
    expected = type(interpreter_builder).create_splat(interpreter_builder, ret_ty, arg)
    got = interpreter._FastMemory.splat(ret_ty, arg)
    assert got.data.shape == expected.data.shape and got.data.dtype == expected.data.dtype
    assert got.data.tobytes() == expected.data.tobytes() and got.dtype == expected.dtype
    with pytest.raises(ValueError, match="read-only"):
        got.data[...] = 0


# --------------------------------------------------------------------------------------------
# Programs replayed from a tape of the builder operations of a launch's first two, or of an
# earlier launch's
# --------------------------------------------------------------------------------------------


@pytest.fixture
def replays(monkeypatch):
    """The programs replayed (not run through Triton's frontend), from no kept tapes: the name of
    the thread each ran on."""
    monkeypatch.setattr(interpreter, "_TAPES", collections.OrderedDict())
    monkeypatch.setattr(interpreter, "_UNVERIFIED", collections.OrderedDict())
    names = []
    real = interpreter._Replay._replay
    monkeypatch.setattr(interpreter._Replay, "_replay", lambda self, pid: (names.append(threading.current_thread().name), real(self, pid))[1])
    return names


def _blocks_kernel(src_ptr, dst_ptr, n, scale, BLOCK: tl.constexpr):
    # Each program its own block: the program id, a scalar argument and a mask reach every step.
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(dst_ptr + offsets, tl.where(x > 0, x * scale, -x) + pid, mask=offsets < n)


@pytest.mark.parametrize("grid", [1, 2, 3, 8])
def test_replayed_programs_compute_what_the_frontend_does(grid, replays):
    n = grid * 128 - 37  # the last block partly masked
    src = torch.randn(n, generator=torch.Generator().manual_seed(grid))
    replayed, plain = torch.zeros(n), torch.zeros(n)
    fn = InterpretedFunction(_blocks_kernel)
    interpreter.launch(fn, (grid,), (src, replayed, n, 1.5), dict(BLOCK=128))
    assert len(replays) == max(0, grid - 2)
    interpreter.launch(fn, (grid,), (src, plain, n, 1.5), dict(BLOCK=128), replay=False)
    assert len(replays) == max(0, grid - 2)
    expected = torch.where(src > 0, src * 1.5, -src) + torch.arange(n) // 128
    assert torch.equal(replayed, plain) and torch.equal(replayed, expected)


def test_later_launches_replay_every_program_with_their_own_arguments(replays):
    """A verified tape is kept for launches of the same kernel, constexprs and argument types: they
    replay all their programs, on their own tensors and integers. Other constexprs, argument types
    (an int past int32 becomes int64) or floats (which the interpreter passes as Python floats,
    constants to the frontend) record their own."""
    fn = InterpretedFunction(_blocks_kernel)
    runs = [  # (grid, n, scale, BLOCK, programs replayed in all)
        (3, 300, 1.5, 128, 1),  # recorded: programs 0 and 1 through the frontend
        (5, 600, 1.5, 128, 1 + 5),  # kept: other tensors, n and grid
        (4, 500, 1.5, 128, 6 + 4),
        (4, 500, -2.5, 128, 10 + 2),  # another scale: recorded anew
        (6, 700, 1.5, 64, 12 + 4),  # another BLOCK: recorded anew
        (3, 2**33, 1.5, 128, 16 + 1),  # n as int64: recorded anew
        (3, 2**34, 1.5, 128, 17 + 3),  # ... and then kept
    ]
    for grid, n, scale, block, replayed in runs:
        size = min(n, grid * block)
        src = torch.randn(size, generator=torch.Generator().manual_seed(grid))
        dst = torch.zeros(size)
        interpreter.launch(fn, (grid,), (src, dst, n, scale), dict(BLOCK=block))
        assert len(replays) == replayed, (grid, n, block)
        expected = torch.where(src > 0, src * scale, -src) + torch.arange(size) // block
        assert torch.equal(dst, expected), (grid, n, block)


def test_launches_of_one_or_two_programs_keep_their_tapes_too(replays):
    """A launch of two programs checks its tape as larger ones do and keeps it. A launch of one has
    no second program to check against: the next one-program launch of the signature records its
    own, and once two such tapes agree, one-program launches replay. That tape (program 0's alone)
    is not replayed by launches of more programs."""
    fn = InterpretedFunction(_blocks_kernel)
    runs = [  # (grid, n, BLOCK, programs replayed in all)
        (2, 200, 128, 0),  # programs 0 and 1 through the frontend, their tapes agree: kept
        (2, 256, 128, 2),
        (1, 100, 128, 3),  # a one-program launch replays a tape kept by larger ones
        (1, 60, 64, 3),  # another BLOCK: recorded, waits for a second tape
        (1, 64, 64, 3),  # recorded, agrees with the first: kept for one-program launches
        (1, 10, 64, 4),
        (1, 33, 64, 5),
        (3, 150, 64, 6),  # programs 0 and 1 through the frontend, program 2 replayed
        (3, 192, 64, 9),
    ]
    for grid, n, block, replayed in runs:
        src = torch.randn(n, generator=torch.Generator().manual_seed(n))
        dst = torch.zeros(n)
        interpreter.launch(fn, (grid,), (src, dst, n, 1.5), dict(BLOCK=block))
        assert len(replays) == replayed, (grid, n, block)
        expected = torch.where(src > 0, src * 1.5, -src) + torch.arange(n) // block
        assert torch.equal(dst, expected), (grid, n, block)


def _shifted_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, SHIFT: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offsets, mask=offsets < n)
    tl.store(dst_ptr + offsets, x * SHIFT + tl.num_programs(0), mask=offsets < n)


@pytest.mark.parametrize("threads", [1, 2])
def test_launches_with_a_kept_tape_replay_without_grid_executor(threads, replays, monkeypatch):
    """Once a tape is kept, a launch replays every program straight away: its arguments bound
    and converted as GridExecutor does (constexprs in any order), the grid's size set for
    tl.num_programs, and an error in a program raised as the interpreter raises it."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    fn = InterpretedFunction(_shifted_kernel)
    launches = 0
    for grid, n, shift in ((3, 300, 2.0), (5, 600, 2.0), (1, 50, 2.0), (2, 256, 2.0)):
        src = torch.randn(n, generator=torch.Generator().manual_seed(n))
        dst = torch.zeros(n)
        constexprs = dict(BLOCK=128, SHIFT=shift) if launches % 2 else dict(SHIFT=shift, BLOCK=128)
        interpreter.launch(fn, (grid,), (src, dst, n), constexprs)
        assert torch.equal(dst, src * shift + grid), grid
        launches += 1
        # From the second launch on, GridExecutor (and Triton's frontend) must not run at all.
        monkeypatch.setattr(interpreter, "GridExecutor", None)
    assert len(replays) == 1 + 5 + 1 + 2
    src, dst = torch.randn(2 * 128 + 8), torch.zeros(3 * 128)  # program 2 reads past src
    with pytest.raises(InterpreterError, match="IndexError"):
        interpreter.launch(fn, (3,), (src, dst, dst.numel()), dict(BLOCK=128, SHIFT=2.0))
    for name in ("create_masked_load", "create_masked_store", "get_null_value"):
        assert name not in vars(interpreter_builder), name


def test_a_kernel_with_pre_run_hooks_runs_them_on_every_launch(replays):
    fn = InterpretedFunction(_shifted_kernel)
    calls = []
    fn.add_pre_run_hook(lambda *args, **kwargs: calls.append(kwargs["SHIFT"]))
    for shift in (1.0, 1.0, 1.0):
        src, dst = torch.randn(384), torch.zeros(384)
        interpreter.launch(fn, (3,), (src, dst, 384), dict(BLOCK=128, SHIFT=shift))
        assert torch.equal(dst, src * shift + 3)
    assert calls == [1.0, 1.0, 1.0] and len(replays) == 1 + 3 + 3


def _split_kernel(src_ptr, dst_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    pairs = tl.load(src_ptr + pid * 2 * BLOCK + tl.arange(0, 2 * BLOCK))
    even, odd = tl.split(tl.reshape(pairs, (BLOCK, 2)))  # one step's result, a tuple of two blocks
    tl.store(dst_ptr + pid * BLOCK + tl.arange(0, BLOCK), even - odd)


def test_steps_on_parts_of_a_result_replay(replays):
    """A step whose arguments are not all slots of the plan (here parts of a tuple) is resolved
    from the tape's own references."""
    fn = InterpretedFunction(_split_kernel)
    for grid, replayed in ((4, 2), (5, 2 + 5)):
        src, dst = torch.randn(grid * 32), torch.zeros(grid * 16)
        interpreter.launch(fn, (grid,), (src, dst), dict(BLOCK=16))
        assert torch.equal(dst, src[0::2] - src[1::2]) and len(replays) == replayed
    (program,) = interpreter._TAPES.values()
    assert [program[index][0] for index, _, slots, _ in program.plan if slots is None] == ["create_fsub"]


def test_a_list_argument_holding_results_is_resolved_at_each_replay():
    program = interpreter._Program([
        ("create_a", (3,), {}, []),
        ("create_b", ([interpreter._Step(0, None), interpreter._Argument("x")], 5), {"k": [1, 2]}, [0]),
        ("create_a", (7,), {"ignored": None}, [1, 2]),
    ])  # fmt: skip
    assert [slots is None for _, _, slots, _ in program.plan] == [False, True, False]
    calls = []
    builder = types.SimpleNamespace(
        create_a=lambda value, ignored=None: calls.append(value) or value * 2,
        create_b=lambda items, value, k: calls.append((items, value, k)),
    )  # fmt: skip
    replay = interpreter._Replay(_unmasked_kernel, builder, programs=1)
    replay.arguments = {"x": "the launch's x"}
    replay.program = replay._bind(program)
    for _ in range(2):
        replay._replay((0, 0, 0))
    assert calls == [3, ([6, "the launch's x"], 5, [1, 2]), 7] * 2


def _unmasked_kernel(src_ptr, dst_ptr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst_ptr + offsets, tl.load(src_ptr + offsets) * 2)


def _count_kernel(counter_ptr, src_ptr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.atomic_add(counter_ptr + tl.arange(0, BLOCK), tl.load(src_ptr + offsets))  # every program: the same counters


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_replayed_programs_run_on_as_many_threads_as_pytorchs(threads, replays, monkeypatch):
    """Programs replay on a pool of torch.get_num_threads() threads (none for one), each on its own
    program id: every block is its own program's."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    src, dst = torch.randn(64 * 128), torch.zeros(64 * 128)
    interpreter.launch(InterpretedFunction(_blocks_kernel), (64,), (src, dst, src.numel(), 1.5), dict(BLOCK=128))
    assert torch.equal(dst, torch.where(src > 0, src * 1.5, -src) + torch.arange(src.numel()) // 128)
    assert len(replays) == 62
    pool_threads = {name for name in replays if name.startswith("tritonpool-replay")}
    assert (len(pool_threads) > 0) == (threads > 1) and len(pool_threads) <= threads
    assert threads > 1 or set(replays) == {threading.main_thread().name}


def _launch_in_child(queue):
    src, dst = torch.arange(16 * 32, dtype=torch.float32), torch.zeros(16 * 32)
    interpreter.launch(InterpretedFunction(_unmasked_kernel), (16,), (src, dst), dict(BLOCK=32))
    queue.put(torch.equal(dst, src * 2))


def test_a_forked_process_replays_on_its_own_threads(replays, monkeypatch):
    """A child forked after the parent's pool started (its threads are not inherited) must not
    queue its programs for threads it does not have: it makes its own pool."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    src, dst = torch.arange(16 * 32, dtype=torch.float32), torch.zeros(16 * 32)
    interpreter.launch(InterpretedFunction(_unmasked_kernel), (16,), (src, dst), dict(BLOCK=32))
    assert any(name.startswith("tritonpool-replay") for name in replays)  # the parent's pool runs
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_launch_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in its launch")
    assert child.exitcode == 0 and queue.get(timeout=5) is True


def test_an_error_in_a_program_replayed_on_another_thread_is_raised(replays, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # (pytest-xdist workers take 1)
    src, dst = torch.randn(5 * 16 + 8), torch.zeros(6 * 16)  # program 5's last 8 lanes read past src
    with pytest.raises(Exception, match="IndexError"):
        interpreter.launch(InterpretedFunction(_unmasked_kernel), (6,), (src, dst), dict(BLOCK=16))
    assert any(name.startswith("tritonpool-replay") for name in replays)
    assert torch.equal(dst[: 5 * 16], src[: 5 * 16] * 2)  # the other programs ran
    for name in ("create_masked_load", "create_masked_store", "get_null_value"):
        assert name not in vars(interpreter_builder), name


def test_programs_with_atomics_replay_one_after_another(replays, monkeypatch):
    """(and with all their lanes: the interpreter's atomics read a splatted mask as dense)"""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    counter, src = torch.zeros(32), torch.arange(16 * 32, dtype=torch.float32)
    interpreter.launch(InterpretedFunction(_count_kernel), (16,), (counter, src), dict(BLOCK=32))
    assert torch.equal(counter, src.view(16, 32).sum(0))
    assert len(replays) == 14 and set(replays) == {threading.main_thread().name}


def _repeat_kernel(src_ptr, dst_ptr, times, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offsets)
    for _ in range(times):  # a scalar argument decides the Python loop: the same in every program
        x = x + 1
    tl.store(dst_ptr + offsets, x)


def test_a_tape_steered_by_its_launchs_arguments_is_not_kept(replays):
    """A launch whose scalar argument steered the kernel's Python control flow replays its own
    programs, but a later launch (another trip count) must run its own loop, not the tape's."""
    fn = InterpretedFunction(_repeat_kernel)
    src = torch.arange(4 * 16, dtype=torch.float32)
    for times, replayed in ((1, 2), (3, 4), (3, 6)):
        dst = torch.zeros_like(src)
        interpreter.launch(fn, (4,), (src, dst, times), dict(BLOCK=16))
        assert torch.equal(dst, src + times)
        assert len(replays) == replayed


def _branching_kernel(src_ptr, dst_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offsets)
    if pid == 5:  # Python control flow on the program id: program 5 differs from the first two
        x = x * 2
    tl.store(dst_ptr + offsets, x)


def _flag_kernel(src_ptr, flag_ptr, dst_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offsets)
    for _ in range(tl.load(flag_ptr + pid)):  # a loop whose trip count is data
        x = x + 1
    tl.store(dst_ptr + offsets, x)


def _transpose_kernel(src_ptr, dst_ptr, BLOCK: tl.constexpr):
    # The interpreter transposes (.T) outside the builder: nothing a tape could replay.
    pid = tl.program_id(0)
    r = tl.arange(0, BLOCK)[:, None]
    c = tl.arange(0, BLOCK)[None, :]
    tile = tl.load(src_ptr + pid * BLOCK * BLOCK + r * BLOCK + c)
    tl.store(dst_ptr + pid * BLOCK * BLOCK + r * BLOCK + c, tile.T)


def test_programs_that_could_differ_are_not_replayed(replays):
    src = torch.randn(8 * 16)
    dst = torch.zeros(8 * 16)
    interpreter.launch(InterpretedFunction(_branching_kernel), (8,), (src, dst), dict(BLOCK=16))
    expected = src.clone()
    expected[5 * 16 : 6 * 16] *= 2
    assert torch.equal(dst, expected)

    flags = torch.tensor([0, 0, 0, 3, 0, 1, 0, 2], dtype=torch.int32)
    interpreter.launch(InterpretedFunction(_flag_kernel), (8,), (src, flags, dst), dict(BLOCK=16))
    torch.testing.assert_close(dst, src + flags.repeat_interleave(16))  # 1 + 1 + ... rounds as it goes

    tiles = torch.randn(8, 4, 4)
    transposed = torch.zeros(8, 4, 4)
    interpreter.launch(InterpretedFunction(_transpose_kernel), (8,), (tiles, transposed), dict(BLOCK=4))
    assert torch.equal(transposed, tiles.transpose(1, 2))
    assert replays == []


def test_one_program_launches_that_could_differ_are_not_replayed(replays):
    src = torch.arange(16, dtype=torch.float32)
    for times in (2, 2, 2, 5):  # a scalar argument decides the Python loop
        dst = torch.zeros_like(src)
        interpreter.launch(InterpretedFunction(_repeat_kernel), (1,), (src, dst, times), dict(BLOCK=16))
        assert torch.equal(dst, src + times)
    for flag in (1, 1, 1, 3):  # a loaded value does
        flags = torch.tensor([flag], dtype=torch.int32)
        interpreter.launch(InterpretedFunction(_flag_kernel), (1,), (src, flags, dst), dict(BLOCK=16))
        assert torch.equal(dst, src + flag)
    tiles = torch.randn(1, 4, 4)
    for _ in range(3):  # a block made outside the builder
        transposed = torch.zeros(1, 4, 4)
        interpreter.launch(InterpretedFunction(_transpose_kernel), (1,), (tiles, transposed), dict(BLOCK=4))
        assert torch.equal(transposed, tiles.transpose(1, 2))
    assert replays == [] and not interpreter._UNVERIFIED


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(
    "dims, kwargs",
    [(2, dict(kernel_size=2)), (2, dict(kernel_size=3, stride=2, padding=1)), (3, dict(kernel_size=2)),
     (1, dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True))],
)  # fmt: skip
def test_pooling_replays_its_tiles_and_matches_pytorch(dims, kwargs, layout, replays, fresh_plans, monkeypatch):
    """Small tiles, so that every pooling kernel (forward, scatter and gather backward) launches
    many programs: the replayed ones must give PyTorch's values, indices and gradients."""
    monkeypatch.setattr(mp, "CPU_TILE_ELEMENTS", 64)
    shape = {1: (3, 5, 41), 2: (3, 5, 19, 23), 3: (2, 3, 7, 9, 11)}[dims]
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(dims))
    if layout == "channels_last" and dims > 1:
        x = x.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    x.requires_grad_(True)
    pool = {1: mp.max_pool1d, 2: mp.max_pool2d, 3: mp.max_pool3d}[dims]
    reference = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}[dims]
    out, idx = pool(x, return_indices=True, **kwargs)
    ref, ref_idx = reference(x, return_indices=True, **kwargs)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    (g,) = torch.autograd.grad(out, x, grad)
    (ref_g,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(g, ref_g)
    assert len(replays) > 10


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)], ids=["k2", "k3s2p1"])
def test_small_layers_replay_their_one_program_launches_and_match_pytorch(kwargs, layout, replays, fresh_plans):
    """A small layer launches one program a kernel: its first two calls run Triton's frontend, and
    from the third on, their tapes agreeing, it replays (forward, and the scatter or the phase
    backward), with PyTorch's values, indices and gradients on each call."""
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    for call in range(4):
        out, idx = mp.max_pool2d(x, return_indices=True, **kwargs)
        ref, ref_idx = torch.nn.functional.max_pool2d(x, return_indices=True, **kwargs)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
        grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(call))
        (g,) = torch.autograd.grad(out, x, grad)
        (ref_g,) = torch.autograd.grad(ref, x, grad)
        torch.testing.assert_close(g, ref_g)
        assert len(replays) == 2 * max(0, call - 1), call  # a forward and a backward program


def test_bfloat16_widening_is_exact_for_every_value():
    """Bit for bit PyTorch's widening, NaN payloads and subnormals included (the interpreter's own
    converter gets the 254 subnormals wrong, e.g. 0x0001 -> 0.0; everything else it agrees on)."""
    every = triton_interpreter.TensorHandle(np.arange(2**16, dtype=np.uint16), tl.bfloat16)
    got = interpreter._FastMemory.fp_ext(every, tl.float32)
    assert got.dtype == tl.float32 and got.data.dtype == np.float32
    expected = torch.from_numpy(every.data.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert got.data.tobytes() == expected.tobytes()
    theirs = type(interpreter_builder).create_fp_ext(interpreter_builder, every, tl.float32).data
    subnormal = (every.data & 0x7F80 == 0) & (every.data & 0x7F != 0)
    assert subnormal.sum() == 254 and np.array_equal(theirs.view(np.uint32)[~subnormal], got.data.view(np.uint32)[~subnormal])


def test_bfloat16_narrowing_rounds_to_nearest_even_as_pytorch():
    rng = np.random.default_rng(0)
    special = np.array(
        [0x00000000, 0x80000000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F817FFF,  # ±0, ties to even up and down
         0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F800000, 0xFF800000,  # overflow to ±inf, largest kept, ±inf
         0x00008000, 0x00018000, 0x007FFFFF, 0x80000001],  # subnormals: ties, the largest, the smallest
        dtype=np.uint32,
    )  # fmt: skip
    bits = np.concatenate([special, rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)])
    values = bits.view(np.float32)
    got = interpreter._FastMemory.fp_trunc(triton_interpreter.TensorHandle(values, tl.float32), tl.bfloat16)
    assert got.dtype == tl.bfloat16 and got.data.dtype == np.uint16
    expected = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(got.data[~nan], expected[~nan])
    narrowed = torch.from_numpy(got.data.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert np.isnan(narrowed[nan]).all() and np.array_equal(np.signbit(narrowed[nan]), np.signbit(values[nan]))


def test_float16_conversions_match_numpy_but_quiet_signalling_nans():
    every = triton_interpreter.TensorHandle(np.arange(2**16, dtype=np.uint16).view(np.float16), tl.float16)
    wide = interpreter._FastMemory.fp_ext(every, tl.float32)
    assert wide.dtype == tl.float32 and wide.data.dtype == np.float32
    numpy_wide = every.data.astype(np.float32)
    nan = np.isnan(numpy_wide)
    assert nan.sum() == 2046 and np.array_equal(wide.data.view(np.uint32)[~nan], numpy_wide.view(np.uint32)[~nan])
    assert np.isnan(wide.data[nan]).all() and np.array_equal(np.signbit(wide.data[nan]), np.signbit(numpy_wide[nan]))

    bits = np.random.default_rng(1).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([bits.view(np.float32), np.array([65504, 65520, 65519.99, 1e-8, -0.0], np.float32)])
    narrow = interpreter._FastMemory.fp_trunc(triton_interpreter.TensorHandle(values, tl.float32), tl.float16)
    assert narrow.dtype == tl.float16 and narrow.data.dtype == np.float16
    with np.errstate(over="ignore"):
        numpy_narrow = values.astype(np.float16)
    nan = np.isnan(values)
    assert np.array_equal(narrow.data.view(np.uint16)[~nan], numpy_narrow.view(np.uint16)[~nan])
    assert np.isnan(narrow.data[nan]).all() and np.array_equal(np.signbit(narrow.data[nan]), np.signbit(values[nan]))


@pytest.mark.parametrize("narrow", [tl.float16, tl.bfloat16], ids=str)
def test_conversions_of_a_broadcast_scalar_stay_broadcast(narrow):
    """A splatted scalar (a load's ``other``) is converted once, not as a whole tile."""
    splat = triton_interpreter.TensorHandle(np.broadcast_to(np.float32(-np.inf), (64, 32)), tl.float32)
    narrowed = interpreter._FastMemory.fp_trunc(splat, narrow)
    assert narrowed.data.shape == (64, 32) and 0 in narrowed.data.strides
    widened = interpreter._FastMemory.fp_ext(narrowed, tl.float32)
    assert widened.data.shape == (64, 32) and 0 in widened.data.strides
    assert np.isneginf(widened.data).all()


def test_conversions_of_a_reversed_view():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)[::-1]  # negative strides
    narrowed = interpreter._FastMemory.fp_trunc(triton_interpreter.TensorHandle(values, tl.float32), tl.float16)
    assert np.array_equal(narrowed.data, values.astype(np.float16))
