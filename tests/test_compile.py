"""Every launchable kernel variant compiles for sm_80 and sm_90, on this GPU-less machine."""

from __future__ import annotations

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
