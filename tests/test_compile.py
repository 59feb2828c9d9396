"""Every launchable kernel variant compiles for sm_80 and sm_90, on this GPU-less machine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kernels import max_pool as mp
from kernels.compile import compile_launch

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# The forward's output choices, rotated over the variants so each meets every dtype and layout.
FORWARD_MODES = [(False, False), (True, False), (False, True), (True, True)]  # (code, indices)


def _input(dims: int, dtype: torch.dtype, layout: str) -> torch.Tensor:
    x = torch.empty((4, 64) + (8, 16, 16)[-dims:], dtype=dtype)
    return x.movedim(1, -1).contiguous().movedim(-1, 1) if layout == "channels_last" else x


def _specs(dims: int, dtype: torch.dtype, layout: str, kernel: str, int64: bool):
    x = _input(dims, dtype, layout)
    # "backward_gather": strides with more phases than the phase backward takes (9 in 1D and 2D, 27 in 3D).
    stride = (9 if dims == 1 else 3) if kernel == "backward_gather" else 2
    geometry = ([3] * dims, [stride] * dims, [1] * dims, [1] * dims)
    outputs = [mp.pool_output_size(n, 3, stride, 1)[0] for n in x.shape[2:]]
    channels_last = layout == "channels_last"
    mode = FORWARD_MODES[(dims + DTYPES.index(dtype) + channels_last) % len(FORWARD_MODES)]
    save_code = mode[0] or kernel != "forward"
    out, code, idx = mp._forward_outputs(x, outputs, geometry[0], channels_last, save_code, mode[1])
    if kernel == "forward":
        spec = mp.forward_launch_spec(x, out, code, idx, *geometry, "cuda")
    else:
        spec = mp.backward_launch_spec(out, code, torch.empty_like(x), *geometry, "cuda")
        assert spec.kernel == ("backward" if kernel == "backward_gather" else "backward_phase")
    if int64:  # the large-tensor variant, without allocating a large tensor
        spec = spec._replace(constexprs=dict(spec.constexprs, INT64=True))
    return spec


@pytest.mark.parametrize("kernel", ["forward", "backward", "backward_gather"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_kernel_variants_compile_for_sm80_and_sm90(dims, dtype, layout, kernel):
    spec = _specs(dims, dtype, layout, kernel, int64=dtype == torch.float16)
    for capability in (80, 90):
        compiled = compile_launch(spec, capability)
        assert f".target sm_{capability}" in compiled.asm["ptx"]
        assert len(compiled.asm["cubin"]) > 0


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gather_backward_walking_taps_compiles_for_sm80_and_sm90(dims, layout):
    """The gather backward with more candidate windows than taps (dilation beyond the stride),
    which walks the taps: CUDA runs it where the stride has more phases than the phase backward takes."""
    stride, dilation = (9, 14) if dims == 1 else (3, 4)  # (3 - 1) * dilation // stride + 1 > 3
    x = torch.empty((2, 32) + (12, 20, 40)[-dims:], dtype=torch.float16)
    if layout == "channels_last":
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    geometry = ([3] * dims, [stride] * dims, [1] * dims, [dilation] * dims)
    outputs = [mp.pool_output_size(n, 3, stride, 1, dilation)[0] for n in x.shape[2:]]
    out, code, _ = mp._forward_outputs(x, outputs, geometry[0], layout == "channels_last", True, False)
    spec = mp.backward_launch_spec(out, code, torch.empty_like(x), *geometry, "cuda")
    assert spec.kernel == "backward"
    for capability in (80, 90):
        assert len(compile_launch(spec, capability).asm["cubin"]) > 0


# --------------------------------------------------------------------------------------------
# The compiled-kernel shortcut of CUDA launches, through Triton's real launch path (the driver
# alone stands in: benchmarks/stand_in_driver.py)
# --------------------------------------------------------------------------------------------


def _launch_spec(kernel: str, misaligned: bool):
    """A float16 launch; ``misaligned`` moves one pointer 2 bytes off 16 (same sizes and strides,
    so the same plan: only Triton's alignment specialization tells them apart)."""
    shape = (2, 16, 12, 20)
    storage = torch.empty(math.prod(shape) + 1, dtype=torch.float16)
    x = storage[int(misaligned) :][: math.prod(shape)].view(shape)
    geometry = ([3, 3], [3, 3] if kernel == "backward_gather" else [2, 2], [1, 1], [1, 1])
    outputs = [mp.pool_output_size(n, 3, geometry[1][0], 1)[0] for n in shape[2:]]
    out, code, _ = mp._forward_outputs(torch.empty(shape, dtype=torch.float16), outputs, geometry[0], False, True, False)
    if kernel == "forward":
        return mp.forward_launch_spec(x, out, code, None, *geometry, "cuda")
    spec = mp.backward_launch_spec(out, code, x, *geometry, "cuda")  # x as the gradient written
    assert spec.kernel == ("backward" if kernel == "backward_gather" else "backward_phase")
    return spec


def _same_launch(ours: tuple, triton_s: tuple) -> bool:
    """Two launcher calls' arguments: grid, stream, function, metadata, hooks, every argument."""
    if len(ours) != len(triton_s):
        return False
    for a, b in zip(ours, triton_s):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            same = a is b
        elif type(a).__name__ == "LazyDict":  # launch metadata, built afresh for every launch
            same = type(b) is type(a) and vars(a) == vars(b)
        else:
            same = a == b
        if not same:
            return False
    return True


@pytest.mark.parametrize("kernel", ["forward", "backward", "backward_gather"])
def test_cached_launch_calls_the_kernel_tritons_dispatch_picks_with_its_arguments(kernel, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stand_in_driver import stand_in_cuda

    real = dict(mp._COMPILED)  # on a GPU machine, what earlier tests launched
    with stand_in_cuda() as driver:
        jit_fn = mp._KERNELS[_launch_spec(kernel, False).kernel][0]
        through_triton = []
        run = jit_fn.run
        monkeypatch.setattr(jit_fn, "run", lambda *a, **k: (through_triton.append(1), run(*a, **k))[1])
        picked = {}
        for misaligned in (False, True):
            spec = _launch_spec(kernel, misaligned)
            before = len(through_triton)
            for _ in range(3):
                mp._launch_compiled(spec, 0)
            # The first launch went through Triton's dispatch, the others through the shortcut.
            assert len(through_triton) == before + 1 and len(driver.launches) == 3 * (1 + misaligned) + misaligned
            ours = driver.launches[-1]
            picked[misaligned] = jit_fn[spec.grid](*spec.args, **spec.constexprs, num_warps=spec.num_warps)
            assert _same_launch(ours, driver.launches[-1])
            assert sum(cached is picked[misaligned] for _, cached, _ in mp._COMPILED.values()) == 1
        # A pointer off 16 bytes is a different specialization, hence a different kernel.
        assert picked[True] is not picked[False]
        assert len(mp._COMPILED) == 2

        # An equal plan that is not the memoized one (its id may be a freed plan's) is not trusted.
        spec = _launch_spec(kernel, False)
        before = len(through_triton)
        mp._launch_compiled(spec._replace(constexprs=dict(spec.constexprs)), 0)
        assert len(through_triton) == before + 1
    assert mp._COMPILED == real  # nothing compiled against the stand-in outlives it


def test_a_plan_fixes_the_dtype_of_every_tensor_it_launches_on():
    """The shortcut keys on the plan, so a tensor of another dtype must mean another plan: the
    backward's code comes from the custom op's caller, and may be any integer type."""
    x = torch.empty((2, 16, 12, 20), dtype=torch.float16)
    geometry = ([3, 3], [2, 2], [1, 1], [1, 1])
    out, code, _ = mp._forward_outputs(x, [6, 10], geometry[0], False, True, False)
    plans = {
        (grad.dtype, taps.dtype): mp.backward_launch_spec(grad, taps, torch.empty_like(x, dtype=grad.dtype), *geometry, "cuda").constexprs
        for grad in (out, out.float())
        for taps in (code, code.int())
    }
    assert len({id(plan) for plan in plans.values()}) == 4
    again = mp.backward_launch_spec(out, code.clone(), torch.empty_like(x), *geometry, "cuda").constexprs
    assert again is plans[torch.float16, code.dtype]  # memoized: the same plan for the same dtypes


def test_cuda_launch_specs_of_cpu_tensors_keep_to_their_block(monkeypatch):
    """Within stand_in_driver.cuda_launch_specs, eager calls on CPU tensors plan CUDA's launches
    (inspect_kernels.py and bench_host.py rely on it); their plans must not serve CPU calls
    after it, nor CPU plans made before it calls within it."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stand_in_driver import cuda_launch_specs

    specs = []
    monkeypatch.setattr(mp, "_launch", lambda spec, device: specs.append(spec))  # nothing runs
    x = torch.empty((2, 3, 8, 12))
    mp.max_pool2d(x, 2)  # planned on CPU
    with cuda_launch_specs():
        mp.max_pool2d(x, 2)
        mp.max_pool2d(x, 3, 2)  # planned within
    mp.max_pool2d(x, 2)
    mp.max_pool2d(x, 3, 2)
    cpu, cuda, cuda_k3, cpu_again, cpu_k3 = specs
    assert cuda.constexprs["FLAT_HW"] and cuda_k3.constexprs["FLAT_HW"]  # CUDA tiles the (OH, OW) plane
    assert not cpu.constexprs["FLAT_HW"] and not cpu_k3.constexprs["FLAT_HW"]
    assert cpu_again.constexprs is cpu.constexprs
