#!/usr/bin/env bash
# One short session on a lent GPU: correctness of the compiled kernels, then the targets,
# then a wider table. Each step is time-boxed so that a slow one cannot eat the others, and every
# log goes to $OUT (or ./gpu-session/ when run by hand).
#
#   bash benchmarks/gpu_session.sh            # ~10-11 minutes on an H100/H200, Triton's cache cold
#
# It uses the machine's own torch and triton (the project's MLflow/Hydra are not needed here);
# tests/test_models.py also needs torchinfo: where the image lacks it, install its wheel first
# (pip install --target DIR torchinfo-*.whl; PYTHONPATH=DIR).
set -u
export PYTHONUNBUFFERED=1
OUT="${OUT:-gpu-session}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

step "tests on CUDA: every device-parametrized test, the real layer sizes, 64-bit offsets"
timeout 200 "$PY" -m pytest -o addopts="" -p no:cacheprovider -q -rs -n 8 --timeout 150 \
  tests/test_max_pool.py tests/test_models.py -k "cuda and not compute_the_same_on_cpu and not tiles_give" \
  2>&1 | tee "$OUT/pytest.log" | tail -40

step "targets: ResNet stem and large batch, float16, ours vs torch eager vs torch.compile"
timeout 180 "$PY" benchmarks/bench_pool.py --cases resnet_stem,large_batch --dtypes float16 --check \
  --csv "$OUT/targets.csv" 2>&1 | tee "$OUT/targets.log" | tail -45

step "host time per call: tiny layers, ours vs torch eager, and ours through Triton's dispatch"
# Two layers (2x2 and 3x3 windows): each of their 12 kernels compiles on its first call.
timeout 60 "$PY" benchmarks/bench_host.py --device cuda --cases seed,resnet_stem --repeats 6 2>&1 \
  | tee "$OUT/host.log" | tail -24

step "a training step of train.py's default network, pool.backend=triton vs torch"
timeout 60 "$PY" benchmarks/bench_train.py --device cuda --sections backend,memory 2>&1 | tee "$OUT/train.log" | tail -6

step "every layer, float32 and bfloat16, ours vs torch eager"
timeout 110 "$PY" benchmarks/bench_pool.py --providers ours,torch --dtypes float32,bfloat16 \
  --modes forward,forward_backward --csv "$OUT/wide.csv" 2>&1 | tee "$OUT/wide.log" | tail -60

step "sectors per request, measured (Nsight Compute, where the image has it) and emulated"
# inspect_kernels.py emulates the 32-byte sectors each warp-wide access touches; ncu's L1 counters
# measure them. Large batch, float16, forward with the code saved and backward, both layouts.
timeout 60 "$PY" benchmarks/inspect_kernels.py --cases large_batch --dtypes float16 --variants fwd+code,bwd \
  --capabilities 90 2>&1 | tee "$OUT/sectors_emulated.log" | tail -8
if command -v ncu >/dev/null; then
  timeout 150 ncu --kernel-name regex:_max_pool --metrics \
l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,\
l1tex__t_requests_pipe_lsu_mem_global_op_st.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum,\
dram__bytes.sum,gpu__time_duration.sum \
    "$PY" -c "
import torch, kernels
for layout in (torch.contiguous_format, torch.channels_last):
    x = torch.randn(256, 64, 112, 112, device='cuda', dtype=torch.float16).to(memory_format=layout)
    y = kernels.max_pool2d(x.requires_grad_(), 3, 2, 1)
    y.backward(torch.ones_like(y))
torch.cuda.synchronize()
" 2>&1 | tee "$OUT/sectors_ncu.log" | tail -60
else
  echo "no ncu on this machine: emulated figures only"
fi
