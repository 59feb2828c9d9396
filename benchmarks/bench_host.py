"""Host time per call: the Python and dispatch work around tritonpool's kernels, against PyTorch's.

On a GPU a small pooling layer's call is made of host time: the kernels take microseconds, and
the layer is as fast as the Python that launches them (bench_pool.py's small layers on the H200:
forward 0.03-0.09 ms, forward+backward 0.3-0.5 ms, where PyTorch's take 0.03-0.2 ms). This times
that host work on tiny inputs, per mode, for ours and for PyTorch eager:

* CUDA: the real calls, without synchronizing: the GPU keeps up with kernels this small, so the
  wall-clock time per call is the host's;
* CPU: ours takes its CUDA host path without a GPU: every step of the call (argument checks,
  plans, allocations, autograd) with CUDA's launch plans, then Triton's launch path through a
  stand-in driver (stand_in_driver.py: binding, specialization, cache lookup, the launcher's
  arguments; no driver call, no kernel). Not included: the driver's launch call and CUDA's
  device guard, a few microseconds. A third column times the same calls with every launch
  through Triton's own dispatch (``JITFunction.run``), which kernels.max_pool skips after a
  plan's first launch. PyTorch's figure includes its CPU kernel, a few microseconds at these
  sizes. The difference bounds what our host path costs beyond PyTorch's.

    python benchmarks/bench_host.py                 # CPU, every layer, both layouts
    python benchmarks/bench_host.py --device cuda   # on a GPU
    python benchmarks/bench_host.py --mlflow        # and a run in the MLflow experiment "benchmarks"
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels.max_pool as mp  # noqa: E402
from bench_pool import MODES, OURS, TORCH, environment, timed_call  # noqa: E402
from cases import CASES, LAYOUTS, new_input, parse_list  # noqa: E402
import stand_in_driver  # noqa: E402

# Each named layer's window at a tiny size: one image, 4 channels, 8 per spatial dimension (the
# seed and vgg_block windows are the same 2x2, so the seed stands for both).
HOST_CASES = ("seed", "resnet_stem", "video3d", "seq1d")
TINY = dict(batch=1, channels=4, size=8)


def tiny_shape(dims: int) -> tuple[int, ...]:
    return (TINY["batch"], TINY["channels"]) + (TINY["size"],) * dims


def best_of_blocks(calls: dict, blocks: int, number: int = 100) -> dict[str, float]:
    """Microseconds per call of each call: blocks of ``number`` calls, the providers alternated
    block by block, and the fastest block's mean, as timeit reports it (on a VM shared with other
    jobs, slower blocks measure the interference; medians of single calls moved 2x between runs)."""
    best = {name: float("inf") for name in calls}
    for call in calls.values():  # warm-up: allocator caches, memoized plans
        for _ in range(number):
            call()
    gc.disable()
    try:
        for block in range(blocks):
            for name in calls if block % 2 == 0 else reversed(list(calls)):
                call = calls[name]
                start = time.perf_counter()
                for _ in range(number):
                    call()
                best[name] = min(best[name], (time.perf_counter() - start) / number * 1e6)
    finally:
        gc.enable()
    return best


@contextlib.contextmanager
def launch_switch(device: torch.device):
    """Within: ours launches on CUDA through kernels.max_pool's compiled-kernel shortcut, as it
    does, unless ``switch["triton"]``: then every launch goes through Triton's own dispatch.
    On CPU, ours also takes its CUDA host path: CUDA's launch specs, launched through Triton's
    CUDA launch path with the stand-in driver. Yields the switch; on exit it holds
    ``through_triton`` (launches) and ``kernels`` (what the shortcut cached)."""
    launch, launch_compiled = mp._launch, mp._launch_compiled
    switch = {"triton": False, "through_triton": 0}

    def either(spec, device_index):  # _launch's CUDA branch calls it
        if switch["triton"]:
            switch["through_triton"] += 1
            mp._KERNELS[spec.kernel][0][spec.grid](*spec.args, **spec.constexprs, num_warps=spec.num_warps)
        else:
            launch_compiled(spec, device_index)

    with contextlib.ExitStack() as stack:
        if device.type == "cpu":
            switch["driver"] = stack.enter_context(stand_in_driver.stand_in_cuda(record=False))
            stack.enter_context(stand_in_driver.cuda_launch_specs())
            mp._launch = lambda spec, _: mp._launch_compiled(spec, 0)  # the CUDA branch, on device 0
        mp._launch_compiled = either
        try:
            yield switch
            switch["kernels"] = len(mp._COMPILED)
        finally:
            mp._launch, mp._launch_compiled = launch, launch_compiled


def host_times(device: torch.device, cases, layouts, modes, repeats: int, switch: dict | None = None) -> list[dict]:
    """One row per (case, layout, mode): microseconds per call, ours and torch's; with a
    ``switch`` (launch_switch) also ours with every launch through Triton's dispatch."""
    rows = []
    for name in cases:
        case = CASES[name]
        for layout in layouts:
            x = new_input(tiny_shape(case.dims), torch.float32, layout, device)
            for mode in modes:
                calls = {}
                for provider, fn in (("ours", OURS[case.dims]), ("torch", TORCH[case.dims])):
                    call, _ = timed_call(lambda t, fn=fn: fn(t, **case.pool_kwargs), x, mode)
                    calls[provider] = call
                if switch is not None:
                    calls["ours_triton"] = lambda call=calls["ours"]: _through_triton(switch, call)
                timings = best_of_blocks(calls, repeats)
                row = dict(case=name, layout=layout, mode=mode, ours_us=round(timings["ours"], 1))
                row["torch_us"] = round(timings["torch"], 1)
                if switch is not None:
                    row["ours_triton_us"] = round(timings["ours_triton"], 1)
                rows.append(row)
    return rows


def _through_triton(switch: dict, call) -> None:
    switch["triton"] = True
    try:
        call()
    finally:
        switch["triton"] = False


def log_to_mlflow(rows: list[dict], env: dict, args) -> str:
    """One run in the 'benchmarks' experiment, as bench_pool.py logs: device and versions as
    params, ``<case>/<layout>/<mode>/<provider>/host_us`` as metrics; returns the run id."""
    from training import tracking  # the project's one MLflow module; seconds to import

    params = dict(env, benchmark="bench_host", repeats=args.repeats, tiny_input="x".join(map(str, TINY.values())))
    cpu = "CUDA host path, Triton's launch path through a stand-in driver (no kernel)"
    params["launch"] = cpu if env["device_type"] == "cpu" else "real, unsynchronized"
    metrics = {}
    for row in rows:
        key = f"{row['case']}/{row['layout']}/{row['mode']}"
        metrics[f"{key}/ours/host_us"], metrics[f"{key}/torch/host_us"] = row["ours_us"], row["torch_us"]
        if "ours_triton_us" in row:
            metrics[f"{key}/ours_triton_dispatch/host_us"] = row["ours_triton_us"]
    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path.cwd())
    with tracking.RunTracker(uri, "benchmarks", f"bench_host {env['device']}") as tracker:
        tracker.log_params(params)
        tracker.log_metrics(metrics, step=0)
    print(f"MLflow: run {tracker.run_id} in experiment 'benchmarks' at {tracking.mask_uri(uri)}")
    return tracker.run_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", default=",".join(HOST_CASES))
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=20, help="timed blocks of 100 calls per provider, alternated")
    parser.add_argument("--mlflow", action="store_true", help="log a run to the 'benchmarks' MLflow experiment")
    parser.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    device = torch.device(args.device)
    cases, layouts = parse_list(args.cases, CASES), parse_list(args.layouts, LAYOUTS)
    modes = parse_list(args.modes, MODES)
    env = environment(device)
    print(", ".join(f"{key} {value}" for key, value in env.items()))
    if device.type == "cpu":
        print(
            "CPU: ours takes its CUDA host path, launching through Triton with a stand-in driver (no kernel); "
            "torch's figure includes its kernel"
        )
    print("'ours, triton': ours with every launch through Triton's dispatch (ours skips it after a plan's first)")
    print(f"input {TINY['batch']}x{TINY['channels']}x{TINY['size']}^dims float32; microseconds per call, fastest block")
    print(f"{'case':12s} {'layout':13s} {'mode':16s} {'ours us':>8s} {'torch us':>8s} {'ours - torch':>12s} {'ours, triton':>12s}")
    with launch_switch(device) as switch:
        rows = host_times(device, cases, layouts, modes, args.repeats, switch)
    for row in rows:
        print(
            f"{row['case']:12s} {row['layout']:13s} {row['mode']:16s} {row['ours_us']:8.1f} "
            f"{row['torch_us']:8.1f} {row['ours_us'] - row['torch_us']:12.1f} {row['ours_triton_us']:12.1f}"
        )
    through_triton, kernels = switch["through_triton"], switch["kernels"]
    if "driver" in switch:  # CPU: the stand-in driver counted every launch
        ours = f"{switch['driver'].launched - through_triton} by ours"
    else:
        ours = "ours"
    print(
        f"launches: {ours} (the first of each of its {kernels} compiled kernels through Triton's dispatch, "
        f"the others through the compiled-kernel shortcut), {through_triton} through Triton's dispatch ('ours, triton')"
    )
    if args.mlflow:
        log_to_mlflow(rows, env, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
