"""Time tritonpool's max pooling against PyTorch eager and torch.compile on named real layers."""

from __future__ import annotations

import argparse
import csv
import gc
import math
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import triton

# The repository root, so that a bare checkout runs it too (a GPU machine without the project).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels  # noqa: E402
from cases import CASES, DTYPES, LAYOUTS, PoolCase, new_input, parse_list  # noqa: E402

MODES = ("forward", "forward_train", "backward", "forward_backward")
PROVIDERS = ("ours", "torch", "compile")
PEERS = ("torch", "compile")
LABELS = {
    "cuda": {"ours": "tritonpool", "torch": "torch", "compile": "torch.compile"},
    "cpu": {"ours": "tritonpool (interpreter)", "torch": "torch (CPU)", "compile": "torch.compile (CPU)"},
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
OURS = {1: kernels.max_pool1d, 2: kernels.max_pool2d, 3: kernels.max_pool3d}
TORCH = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
# --quick: a smoke test of the whole pipeline in seconds, interpreter included. The scale keeps
# one image of the seed layer with 2 channels (so channels_last differs from contiguous) and one
# ResNet-stem image with 16 channels.
QUICK = dict(cases=["seed", "resnet_stem"], dtypes=["float32"], scale=1 / 128, repeats=3, copy_mib=64)
# and on CPU times each row for its `repeats` rounds after two warm-up calls: the steady-state
# rules below (0.5 s of warm-up, 0.1 s of the fastest call's runs, which made ours run up to 300
# times beside PyTorch's sub-millisecond calls) took --quick to ~90 s.
QUICK_TIMING = dict(warm_up_s=0.0, sample_s=0.0)


def make_pool(provider: str, case: PoolCase) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> pooled x`` for one provider, with the case's arguments bound."""
    fn = (OURS if provider == "ours" else TORCH)[case.dims]
    kwargs = case.pool_kwargs

    def pool(x):
        return fn(x, **kwargs)

    # Compiled for fixed shapes, as in a model compiled for one input size. Every (case, layout,
    # dtype) group starts from torch._dynamo.reset(): all closures share one code object, and past
    # its recompile limit (8) Dynamo would silently run eager PyTorch under the compile label.
    return torch.compile(pool, dynamic=False) if provider == "compile" else pool


# --------------------------------------------------------------------------------------------
# Traffic: the least a provider must move, from which GB/s is counted
# --------------------------------------------------------------------------------------------
# Every tensor counts once, read or written exactly once (the Triton tutorials' rule); windows
# that overlap and re-read an input from cache cost nothing. With I the bytes of the input (and of
# its gradient, same dtype), O those of the pooled output (and of its gradient), P the number of
# outputs and A the bytes per output a provider writes besides the values (index, tap, offset):
#   forward           I read + O written + A_nograd * P written
#   forward_train     I read + O written + A_saved * P written
#   backward          O read (grad_out) + A_saved * P read + I written (grad_in)
#   forward_backward  forward_train + backward
# A_saved is measured, not assumed: the forward runs once under saved_tensors_hooks and every
# tensor autograd keeps that is neither the input nor the output counts. That is 1 byte for our
# int8 tap code, 8 for PyTorch eager's int64 indices, and whatever Inductor keeps for
# torch.compile (torch 2.14: int8 offsets for the layers here; int64 indices where Inductor falls
# back to ATen, as it does for a padded 3D window).
# A_nograd cannot be observed that way; it follows the providers' code:
#   ours: 0, a forward without grad writes values only;
#   torch eager: 8, ATen's max_pool2d/3d always run max_pool*_with_indices, on CPU and CUDA; only
#     max_pool1d on CPU without grad takes a values-only path (seen with torch.profiler, 2.14);
#   torch.compile: 0, Inductor's generated kernel drops indices nobody uses.


def unsaved_index_bytes(provider: str, dims: int, device: torch.device) -> int:
    """A_nograd: bytes per output written besides the values by a forward without grad."""
    if provider != "torch" or (device.type == "cpu" and dims == 1):
        return 0
    return 8  # int64 indices


def traffic_bytes(mode: str, in_bytes: int, out_bytes: int, outputs: int, index_bytes: float) -> float:
    """Minimal bytes moved by one call in ``mode`` (see the table above); ``index_bytes`` is A."""
    forward = in_bytes + out_bytes + index_bytes * outputs
    backward = out_bytes + index_bytes * outputs + in_bytes
    totals = {"forward": forward, "forward_train": forward, "backward": backward}
    totals["forward_backward"] = forward + backward
    return totals[mode]


def forward_saving(pool: Callable, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Pool ``x`` (which requires grad); return the output and A_saved, bytes kept per output."""
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = pool(x)
    for counted in (x, y):  # already counted as read and written
        saved.pop(counted.untyped_storage().data_ptr(), None)
    return y, sum(saved.values()) / y.numel()


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _warm_up(fn: Callable[[], object], seconds: float = 0.5) -> None:
    """At least two calls and ``seconds``: a process's first calls grow its heap, as glibc raises
    its mmap and trim thresholds to the sizes coming and going, and the interpreter's first calls
    measured up to 1.7x its steady time."""
    start, calls = time.perf_counter(), 0
    while calls < 2 or time.perf_counter() - start < seconds:
        fn()
        calls += 1


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, int]:
    """Median time of ``fn`` in milliseconds and the number of timed runs.

    CUDA: triton.testing.do_bench, which flushes the L2 cache before every run, so each run reads
    from DRAM. CPU: ``interleaved_ms`` of ``fn`` alone.
    """
    if device.type == "cuda":
        times = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="all")
        return statistics.median(times), len(times)
    return interleaved_ms({"fn": fn}, repeats)["fn"]


def interleaved_ms(
    calls: dict[str, Callable[[], object]], repeats: int, warm_up_s: float = 0.5, sample_s: float = 0.1,
) -> dict[str, tuple[float, int]]:  # fmt: skip
    """CPU: each call's median wall-clock time in milliseconds and its number of timed runs, the
    calls timed in alternation (round after round, the order reversed every other round).

    On a machine shared with other jobs the load drifts within seconds: timing one provider's
    calls and then another's gave the same kernel pair ratios 1.7x apart from run to run, where
    alternating puts both under the same load. After each call's warm-up (``_warm_up`` for
    ``warm_up_s``), rounds run until there are at least ``repeats`` and the fastest call has at
    least ``sample_s`` of runs (so that fast calls get enough samples for a stable median; at most
    100 x ``repeats`` rounds), with the cyclic garbage collector off (as timeit does; reference
    counting still frees every tensor).
    """
    for fn in calls.values():
        _warm_up(fn, warm_up_s)
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.disable()
    try:
        rounds = 0
        while rounds < repeats or (min(map(sum, times.values())) < sample_s and rounds < 100 * repeats):
            for name in names if rounds % 2 == 0 else reversed(names):
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
            rounds += 1
    finally:
        gc.enable()
    return {name: (statistics.median(ts) * 1e3, len(ts)) for name, ts in times.items()}


def copy_bandwidth(device: torch.device, mib: int, repeats: int) -> float:
    """GB/s of ``dst.copy_(src)`` over two buffers of ``mib`` MiB (read + write), beyond the caches."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    ms, _ = median_ms(lambda: dst.copy_(src), device, repeats)
    return 2 * src.nbytes / (ms * 1e-3) / 1e9


def timed_call(pool: Callable, x: torch.Tensor, mode: str) -> tuple[Callable[[], object], float | None]:
    """The call to time for ``mode`` and, when it runs with grad, A_saved (None without grad)."""
    if mode == "forward":

        def forward():
            with torch.no_grad():
                pool(x)

        return forward, None
    xg = x.detach().requires_grad_()
    y, saved = forward_saving(pool, xg)
    if mode == "forward_train":
        return lambda: pool(xg), saved
    grad_out = torch.randn_like(y)
    if mode == "backward":
        # autograd.grad rather than .backward(): no accumulation into x.grad, whose extra
        # read-add-write would be charged to the backward.
        return lambda: torch.autograd.grad(y, xg, grad_out, retain_graph=True), saved
    return lambda: torch.autograd.grad(pool(xg), xg, grad_out), saved


# --------------------------------------------------------------------------------------------
# One group: a case in one layout and dtype, every mode and provider
# --------------------------------------------------------------------------------------------


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


def run_group(
    name: str, case: PoolCase, layout: str, dtype_name: str, args, device: torch.device, copy_gbps: float,
    env: dict,
) -> list[dict]:  # fmt: skip
    if "compile" in args.providers:
        torch._dynamo.reset()
    x = new_input(case.shape, DTYPES[dtype_name], layout, device)
    in_bytes = x.numel() * x.element_size()
    outputs = math.prod(case.output_shape)
    out_bytes = outputs * x.element_size()
    pools = {provider: make_pool(provider, case) for provider in args.providers}
    rows = []
    for mode in args.modes:
        group, calls = {}, {}
        for provider in args.providers:
            group[provider] = dict(
                device=env["device"], case=name, dims=case.dims, shape="x".join(map(str, case.shape)),
                pool=case.window, layout=layout, dtype=dtype_name, mode=mode,
                provider=provider, label=LABELS[device.type][provider], copy_gb_per_s=round(copy_gbps, 2),
                torch=env["torch"], triton=env["triton"], error="",
            )  # fmt: skip
        timings = {}
        for provider, row in group.items():
            try:
                call, saved = timed_call(pools[provider], x, mode)
                if device.type == "cuda":  # one provider at a time: do_bench is stable, memory is freed
                    timings[provider] = median_ms(call, device, args.repeats)
                else:  # every provider alternated below
                    calls[provider] = call
                row["saved"] = saved
            except Exception as error:  # one failing provider must not end a long run
                row["error"] = _error_text(error)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            finally:
                call = None  # free the graph and the saved tensors before the next provider
        if calls:
            try:
                timings.update(interleaved_ms(calls, args.repeats, **(QUICK_TIMING if args.quick else {})))
            except Exception:  # which provider failed: time each alone
                for provider, call in calls.items():
                    try:
                        timings[provider] = median_ms(call, device, args.repeats)
                    except Exception as alone:
                        group[provider]["error"] = _error_text(alone)
            calls.clear()
        for provider, row in group.items():
            saved = row.pop("saved", None)
            if provider in timings:
                ms, runs = timings[provider]
                index_bytes = unsaved_index_bytes(provider, case.dims, device) if saved is None else saved
                traffic = traffic_bytes(mode, in_bytes, out_bytes, outputs, index_bytes)
                gbps = traffic / (ms * 1e-3) / 1e9
                row.update(
                    median_ms=ms, runs=runs, index_bytes_per_output=index_bytes, bytes=int(traffic),
                    gb_per_s=gbps, pct_of_copy=100 * gbps / copy_gbps,
                )  # fmt: skip
        ours = group.get("ours", {})
        for peer in PEERS:
            if "median_ms" in ours and "median_ms" in group.get(peer, {}):
                ours[f"speedup_vs_{peer}"] = group[peer]["median_ms"] / ours["median_ms"]
        for row in group.values():
            print(format_row(row), flush=True)
        rows += group.values()
    return rows


# --------------------------------------------------------------------------------------------
# Output: table, CSV, targets, MLflow
# --------------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "device", "case", "dims", "shape", "pool", "layout", "dtype", "mode", "provider", "label",
    "median_ms", "runs", "bytes", "index_bytes_per_output", "gb_per_s", "copy_gb_per_s",
    "pct_of_copy", "speedup_vs_torch", "speedup_vs_compile", "torch", "triton", "error",
]  # fmt: skip
TABLE = [  # (header, width, key, format)
    ("case", 12, "case", "{}"),
    ("layout", 13, "layout", "{}"),
    ("dtype", 8, "dtype", "{}"),
    ("mode", 16, "mode", "{}"),
    ("provider", 24, "label", "{}"),
    ("median ms", 10, "median_ms", "{:.4g}"),
    ("GB/s", 8, "gb_per_s", "{:.4g}"),
    ("% copy", 7, "pct_of_copy", "{:.3g}%"),
    ("vs torch", 9, "speedup_vs_torch", "{:.3g}x"),
    ("vs compile", 10, "speedup_vs_compile", "{:.3g}x"),
]


def format_row(row: dict) -> str:
    if row.get("error"):
        cells = [f"{row[key]:<{width}}" for _, width, key, _ in TABLE[:5]]
        return "  ".join(cells) + f"  error: {row['error']}"
    cells = []
    for i, (_, width, key, fmt) in enumerate(TABLE):
        text = fmt.format(row[key]) if row.get(key) is not None else ""
        cells.append(f"{text:<{width}}" if i < 5 else f"{text:>{width}}")
    return "  ".join(cells)


def table_header() -> str:
    cells = [f"{head:<{width}}" if i < 5 else f"{head:>{width}}" for i, (head, width, _, _) in enumerate(TABLE)]
    line = "  ".join(cells)
    return f"{line}\n{'-' * len(line)}"


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def evaluate_targets(rows: list[dict], device_type: str) -> list[tuple[str, bool, str]]:
    """(target, met, measured) for every measured row a target of benchmarks/README.md covers."""
    results = []
    for row in rows:
        if row["provider"] != "ours" or row.get("error"):
            continue
        where = f"{row['case']} {row['layout']} {row['dtype']} {row['mode']}"
        speedup = row.get("speedup_vs_torch")
        if device_type == "cuda":
            need = {"forward": 1.5, "forward_train": 1.5, "backward": 1.2}.get(row["mode"])
            if row["case"] == "resnet_stem" and row["dtype"] == "float16" and need and speedup:
                results.append((f"{where}: >= {need}x torch", speedup >= need, f"{speedup:.2f}x"))
            if row["case"] == "large_batch":
                pct = row["pct_of_copy"]
                results.append((f"{where}: >= 60% of copy bandwidth", pct >= 60, f"{pct:.1f}%"))
        elif row["case"] == "seed" and row["mode"] == "forward_backward" and speedup:
            results.append((f"{where}: within 10x of torch (CPU)", 1 / speedup <= 10, f"{1 / speedup:.1f}x slower"))
    return results


def log_to_mlflow(
    rows: list[dict], env: dict, args, cases: dict[str, PoolCase], copy_gbps: float, csv_path: Path
) -> str:
    """One MLflow run for this invocation in the 'benchmarks' experiment; returns its id.

    One run per invocation, not per case: a run is one sitting on one device with one build, which
    is what gets compared (before/after a kernel change, H100 against A100); the metric names
    case/layout/dtype/mode/provider/figure keep the rows apart, and the CSV is attached.
    """
    # Through the project's one MLflow module, like training runs (same store, artifact root and
    # failure handling); imported here because MLflow takes seconds to load.
    from training import tracking

    params = dict(env)
    params.update(
        copy_buffer_mib=args.copy_mib, scale=args.scale, repeats=args.repeats, quick=args.quick,
        modes=",".join(args.modes), providers=",".join(args.providers),
        layouts=",".join(args.layouts), dtypes=",".join(args.dtypes),
    )  # fmt: skip
    params.update({f"case.{name}": case.describe() for name, case in cases.items()})
    metrics = {"copy_gb_per_s": copy_gbps}
    for row in rows:
        if row.get("error"):
            continue
        key = f"{row['case']}/{row['layout']}/{row['dtype']}/{row['mode']}"
        for figure in ("ms", "gb_per_s", "pct_of_copy"):
            metrics[f"{key}/{row['provider']}/{figure}"] = row["median_ms" if figure == "ms" else figure]
        for peer in PEERS:
            if row.get(f"speedup_vs_{peer}"):
                metrics[f"{key}/speedup_vs_{peer}"] = row[f"speedup_vs_{peer}"]
    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path.cwd())
    with tracking.RunTracker(uri, "benchmarks", f"bench_pool {env['device']}") as tracker:
        tracker.log_params(params)
        tracker.log_metrics(metrics, step=0)
        tracker.log_file(csv_path)
    print(f"MLflow: run {tracker.run_id} in experiment 'benchmarks' at {tracking.mask_uri(uri)}")
    print(f"  browse: {tracking.browse_command(uri)}")
    return tracker.run_id


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, str]:
    """Device and versions, recorded with every result."""
    env = dict(
        device_type=device.type, torch=torch.__version__, triton=triton.__version__,
        cuda=torch.version.cuda or "none", python=platform.python_version(),
    )  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device=props.name, capability=f"sm_{props.major}{props.minor}")
    else:
        name = platform.processor() or platform.machine()
        if Path("/proc/cpuinfo").exists():
            models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
            name = models[0] if models else name
        env.update(
            device=name, cpu_threads=str(torch.get_num_threads()),
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
        )  # fmt: skip
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog="Targets and measured numbers: benchmarks/README.md")
    choices = lambda valid: lambda text: parse_list(text, valid)  # noqa: E731
    parser.add_argument("--cases", type=choices(CASES), help=f"comma-separated, default all: {','.join(CASES)}")
    parser.add_argument("--layouts", type=choices(LAYOUTS), default=list(LAYOUTS), help="default: both")
    parser.add_argument("--dtypes", type=choices(DTYPES), help="default float32,float16,bfloat16")
    parser.add_argument("--modes", type=choices(MODES), default=list(MODES), help=f"default all: {','.join(MODES)}")
    parser.add_argument(
        "--providers", type=choices(PROVIDERS),
        help="default ours,torch,compile on CUDA and ours,torch on CPU (torch.compile compiles C++ there)",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument(
        "--scale", type=float, help="about this fraction of each layer's data (fewer images, then channels), default 1"
    )
    parser.add_argument("--repeats", type=int, help="CPU: timed runs per row at least, default 5 (CUDA: do_bench's)")
    parser.add_argument(
        "--threads", type=int,
        help="CPU: torch's intra-op threads (default: torch's own choice); 1 when other work shares the cores",
    )  # fmt: skip
    parser.add_argument("--copy-mib", type=int, help="size of each copy-bandwidth buffer in MiB, default 512")
    parser.add_argument("--quick", action="store_true", help="seconds: tiny seed and ResNet-stem layers, ours vs torch")
    parser.add_argument("--csv", type=Path, help="default benchmarks/results/bench_pool-<device>-<time>.csv")
    parser.add_argument("--mlflow", action="store_true", help="log a run to the 'benchmarks' MLflow experiment")
    parser.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--check", action="store_true", help="exit 1 when a measured target is missed")
    args = parser.parse_args(argv)
    device_type = torch.device(args.device).type
    if device_type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    defaults = dict(
        cases=list(CASES), dtypes=["float32", "float16", "bfloat16"], scale=1.0, repeats=5, copy_mib=512,
        providers=["ours", "torch", "compile"] if device_type == "cuda" and not args.quick else ["ours", "torch"],
    )  # fmt: skip
    if args.quick:
        defaults.update(QUICK)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        # A loaded machine descheduling one of torch's OpenMP threads stalls every parallel
        # region for a scheduler tick (~10 ms), which swamps sub-millisecond CPU kernels.
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = environment(device)
    cases = {name: CASES[name].scaled(args.scale) for name in args.cases}
    print(f"device: {env['device']} ({', '.join(f'{k} {v}' for k, v in env.items() if k != 'device')})")
    if device.type == "cpu":
        print("CPU run: tritonpool runs through Triton's interpreter, torch its CPU kernels")
    copy_gbps = copy_bandwidth(device, args.copy_mib, args.repeats)
    print(f"copy bandwidth: {copy_gbps:.1f} GB/s (dst.copy_(src), 2 x {args.copy_mib} MiB, read + write)")
    print("GB/s: minimal traffic per call (see traffic_bytes); % copy: of that bandwidth; vs <peer>: its time / ours")
    for name, case in cases.items():
        scaled = f" (scaled by {args.scale:g})" if args.scale != 1 else ""
        print(f"  {name}: {case.title}, {case.describe()}{scaled}")
    print(table_header())
    rows = []
    for name, case in cases.items():
        for layout in args.layouts:
            for dtype_name in args.dtypes:
                rows += run_group(name, case, layout, dtype_name, args, device, copy_gbps, env)

    csv_path = args.csv or RESULTS_DIR / f"bench_pool-{device.type}-{datetime.now():%Y%m%d-%H%M%S}.csv"
    write_csv(rows, csv_path)
    print(f"CSV: {csv_path}")
    targets = evaluate_targets(rows, device.type)
    if targets:
        note = f" (measured at --scale {args.scale:g}; the targets are for full-size layers)" if args.scale != 1 else ""
        print(f"targets{note}:")
        for target, met, measured in targets:
            print(f"  {'met   ' if met else 'MISSED'}  {target}: {measured}")
    if args.mlflow:
        try:
            log_to_mlflow(rows, env, args, cases, copy_gbps, csv_path)
        except RuntimeError as error:  # training.tracking.TrackingError: the store is unusable
            print(f"MLflow: {error}; the results are in {csv_path}", file=sys.stderr)
            return 1
    errors = [row for row in rows if row.get("error")]
    if errors:
        print(f"{len(errors)} measurement(s) failed, see the error column", file=sys.stderr)
        return 1
    return 1 if args.check and not all(met for _, met, _ in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
