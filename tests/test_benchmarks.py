"""The pooling benchmark and the kernel inspector run end to end and report plausible figures."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
WIDTHS = {8, 16, 32, 64, 128}


@pytest.fixture
def inspect_kernels(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their sibling cases.py
    import inspect_kernels

    return inspect_kernels


def test_quick_benchmark_prints_writes_csv_and_logs_one_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    csv_path, uri = tmp_path / "bench.csv", f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, str(BENCHMARKS / "bench_pool.py"), "--quick", "--device", "cpu"]
    command += ["--csv", str(csv_path), "--mlflow", "--tracking-uri", uri]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"  # the figures do not matter here; sharing the cores with xdist does
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "copy bandwidth:" in result.stdout and "median ms" in result.stdout

    rows = list(csv.DictReader(open(csv_path)))
    # --quick: 2 cases x 2 layouts x float32 x 4 modes x 2 providers
    assert len(rows) == 32
    assert {(r["case"], r["layout"], r["mode"], r["provider"]) for r in rows} == {
        (case, layout, mode, provider)
        for case in ("seed", "resnet_stem")
        for layout in ("contiguous", "channels_last")
        for mode in ("forward", "forward_train", "backward", "forward_backward")
        for provider in ("ours", "torch")
    }
    copy_gbps = float(rows[0]["copy_gb_per_s"])
    assert copy_gbps > 0.1
    for row in rows:
        assert row["error"] == "", row
        assert row["label"] == {"ours": "tritonpool (interpreter)", "torch": "torch (CPU)"}[row["provider"]]
        ms, gbps, pct = float(row["median_ms"]), float(row["gb_per_s"]), float(row["pct_of_copy"])
        assert 0 < ms < 60_000 and int(row["runs"]) >= 3
        assert math.isclose(gbps, int(row["bytes"]) / (ms * 1e-3) / 1e9, rel_tol=1e-3)
        assert math.isclose(pct, 100 * gbps / copy_gbps, rel_tol=1e-3)

        # The documented traffic: input and output once, plus the index bytes per output that
        # the provider writes (PyTorch: int64 indices on every 2D forward; ours: a 1-byte code
        # only when a backward will need it).
        n, c, h, w = map(int, row["shape"].split("x"))
        outputs = n * c * (h // 2 if row["case"] == "seed" else (h + 1) // 2) ** 2
        index_bytes = 8 if row["provider"] == "torch" else (0 if row["mode"] == "forward" else 1)
        assert float(row["index_bytes_per_output"]) == index_bytes
        once = 4 * n * c * h * w + 4 * outputs + index_bytes * outputs
        assert int(row["bytes"]) == (2 * once if row["mode"] == "forward_backward" else once)

    by_key = {(r["case"], r["layout"], r["mode"], r["provider"]): r for r in rows}
    for (case, layout, mode, provider), row in by_key.items():
        if provider == "ours":
            torch_ms = float(by_key[case, layout, mode, "torch"]["median_ms"])
            assert math.isclose(float(row["speedup_vs_torch"]), torch_ms / float(row["median_ms"]), rel_tol=1e-6)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("benchmarks")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert {"device", "torch", "triton", "case.seed", "case.resnet_stem"} <= set(run.data.params)
    assert run.data.params["case.seed"].startswith("2D 1x2x222x222")
    logged = run.data.metrics["seed/channels_last/float32/forward_backward/ours/ms"]
    assert math.isclose(logged, float(by_key["seed", "channels_last", "forward_backward", "ours"]["median_ms"]))
    assert run.data.metrics["copy_gb_per_s"] > 0
    assert "resnet_stem/contiguous/float32/backward/speedup_vs_torch" in run.data.metrics


def test_cpu_timings_alternate_the_providers_calls(monkeypatch):
    """bench_pool on CPU times the providers round by round (the order reversed every other
    round), so that a machine's drifting load falls on all of them alike."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import time

    import bench_pool

    order = []

    def call(name, seconds):
        def run():
            order.append(name)
            time.sleep(seconds)

        return run

    timings = bench_pool.interleaved_ms({"ours": call("ours", 0.004), "torch": call("torch", 0.001)}, repeats=3)
    timed = order[order.index("ours", order.index("torch")) :]  # after both warm-ups (ours first, then torch)
    timed = timed[len(timed) - 2 * timings["ours"][1] :]
    assert timed[:4] == ["ours", "torch", "torch", "ours"]
    assert all({a, b} == {"ours", "torch"} for a, b in zip(timed[::2], timed[1::2]))  # one of each a round
    (ours_ms, ours_runs), (torch_ms, torch_runs) = timings["ours"], timings["torch"]
    # Rounds go on past `repeats` until the fastest call has 0.1 s of runs (~1 ms each here).
    assert ours_runs == torch_runs >= 30
    assert 4 <= ours_ms < 40 and 1 <= torch_ms < ours_ms

    # --quick's timing: two warm-up calls each, then exactly `repeats` rounds.
    order.clear()
    quick = bench_pool.interleaved_ms({"ours": call("ours", 0.004), "torch": call("torch", 0.001)}, 3, **bench_pool.QUICK_TIMING)
    assert quick["ours"][1] == quick["torch"][1] == 3
    assert order == ["ours"] * 2 + ["torch"] * 2 + ["ours", "torch", "torch", "ours", "ours", "torch"]


def test_host_benchmark_times_every_mode_of_ours_and_torch(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, str(BENCHMARKS / "bench_host.py"), "--cases", "seed,seq1d", "--repeats", "3"]
    command += ["--mlflow", "--tracking-uri", uri]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ours takes its CUDA host path" in result.stdout and "torch 2." in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("seed ", "seq1d "))]
    # 2 cases x 2 layouts x 4 modes: ours, torch, their difference, ours through Triton's dispatch.
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (case, layout, mode)
        for case in ("seed", "seq1d")
        for layout in ("contiguous", "channels_last")
        for mode in ("forward", "forward_train", "backward", "forward_backward")
    }
    for _, _, _, ours, theirs, difference, ours_triton in rows:
        assert float(ours) > 0 and float(theirs) > 0 and float(ours_triton) > 0
        assert float(difference) == pytest.approx(float(ours) - float(theirs), abs=0.11)
    # Every call of ours launched through the stand-in driver: per layout and case, 3 kernels
    # (forward, forward saving the taps, backward), each through Triton's dispatch once and then
    # through the shortcut; the third column through Triton's dispatch every time. seq1d's two
    # layouts share one backward plan: 1D outputs (and so their gradients) are contiguous in both.
    (launches,) = [line for line in result.stdout.splitlines() if line.startswith("launches:")]
    ours_launches, kernels, triton_launches = map(int, re.findall(r"\d+", launches)[:3])
    assert kernels == 2 * 2 * 3 - 1 and ours_launches > 10 * kernels and triton_launches > 10 * kernels

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("benchmarks").experiment_id])
    assert run.data.params["launch"].startswith("CUDA host path") and "torch" in run.data.params
    assert len(run.data.metrics) == 3 * len(rows)  # ours, torch and ours through Triton's dispatch, every row
    printed = {(r[0], r[1], r[2]): float(r[3]) for r in rows}
    logged = run.data.metrics["seq1d/channels_last/backward/ours/host_us"]
    assert logged == pytest.approx(printed["seq1d", "channels_last", "backward"], abs=0.051)


def test_inspector_reports_registers_spills_and_access_widths(inspect_kernels):
    rows = inspect_kernels.inspect_all(
        ["resnet_stem"], ["float16"], ["channels_last", "contiguous"], ["fwd+code", "bwd"], [90], echo=False
    )
    assert len(rows) == 4
    for row in rows:
        assert 16 <= row["regs"] <= 255
        assert row["spill_bytes"] >= 0 and row["spill_instructions"] >= 0 and row["shared_bytes"] >= 0
        assert 0 < row["warps_per_sm"] <= 64
        for column in ("loads", "stores"):
            accesses = dict(item.split(":") for item in row[column].split())
            assert "?" not in accesses, row  # every access traced to its tl.load/tl.store
            assert all(int(w) in WIDTHS for ws in accesses.values() for w in ws.split("/"))
    forward = {row["layout"]: row for row in rows if row["variant"] == "fwd+code"}
    # channels_last float16 with 64 channels: x read and pooled values written 8 lanes at a time.
    assert "x:128" in forward["channels_last"]["loads"].split()
    assert "out:128" in forward["channels_last"]["stores"].split()
    assert {"code", "out"} <= {item.split(":")[0] for item in forward["contiguous"]["stores"].split()}
    # Sectors per warp request and the share used: channels_last loads 128-bit runs in full; along
    # W, one column a thread keeps the stride-2 gathers of x near half (8 columns a thread: 6%),
    # and the taps at 2*ow and 2*ow + 1, loaded as one 32-bit pair, use their sectors whole:
    # 2 of a 3x3 window row's 3 taps, counted each at its own access's width.
    def use(text: str, tensor: str) -> float:
        return float(dict(item.split(":") for item in text.split())[tensor].split("/")[1].rstrip("%"))

    assert use(forward["channels_last"]["load_sectors"], "x") == 100
    assert 60 <= use(forward["contiguous"]["load_sectors"], "x") < 100
    assert "x:16/32" in forward["contiguous"]["loads"].split()
    for row in rows:
        stored = "out" if row["variant"] != "bwd" else "grad_in"
        # Every sector the stores touch is written whole (by the program or its neighbours).
        assert dict(item.split(":") for item in row["stores_written"].split())[stored] == "100%", row
    assert all(use(forward[layout]["store_sectors"], "out") == 100 for layout in forward)
    backward = {row["layout"]: row for row in rows if row["variant"] == "bwd"}
    assert all(row["kernel"] == "backward_phase" and "grad_in:" in row["stores"] for row in backward.values())
    # Regrouped by phase, a thread writes the 4 neighbouring inputs of its base with 4 stores: along
    # W each warp-wide store covers every other element (2 bytes of 4), and the 4 together fill them.
    assert 35 <= use(backward["contiguous"]["store_sectors"], "grad_in") <= 50
    assert use(backward["channels_last"]["load_sectors"], "grad_out") == 100


def test_inspector_compiles_the_64_bit_launch_the_heuristic_gives(inspect_kernels):
    """--int64 reports what a tensor beyond 2**30 elements gets: 64-bit offsets and a halved tile."""
    rows = inspect_kernels.inspect_all(
        ["resnet_stem"], ["float32"], ["channels_last"], ["fwd+idx"], [90], int64=True, echo=False
    )
    narrow, wide = sorted(rows, key=lambda row: row["int64"])
    assert (narrow["int64"], wide["int64"]) == (False, True)
    elements = {row["int64"]: math.prod(map(int, row["tile"].split("x"))) for row in rows}
    assert elements[True] * 2 == elements[False]
    assert wide["spill_bytes"] == 0, wide


def test_inspector_parses_sass_and_ptx_widths(inspect_kernels):
    sass = """
        /*05c0*/               @P6 LDG.E.128 R20, desc[UR4][R26.64] ;
        /*09e0*/              @!P3 LDG.E.U16 R41, desc[UR6][R2.64] ;
        /*0a00*/                   LDG.E.LTC128B R4, desc[UR4][R2.64] ;
        /*0a10*/                   LDG.E.64.CONSTANT R6, desc[UR4][R8.64] ;
        /*8a30*/               @P4 STG.E.U8 desc[UR4][R4.64], R233 ;
        /*2e30*/                   STL [R1+0x24], R47 ;
        /*2e40*/                   FMNMX R3, R4, R5, !PT ;
    """
    assert inspect_kernels.sass_memory_accesses(sass) == [
        ("LDG", 128), ("LDG", 16), ("LDG", 32), ("LDG", 64), ("STG", 8), ("STL", 32)
    ]  # fmt: skip
    ptx = """
	.loc	1 297 21
	@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
	.loc	1 306 5
	@!%p2 st.global.L1::evict_last.v2.b64 [ %rd2 + 0 ], { %rd3, %rd4 };
	st.global.b8 [ %rd5 + 0 ], %rs1;
	.file	1 "/somewhere/kernels/max_pool.py"
    """
    where = ("/somewhere/kernels/max_pool.py", 297, 21)
    assert inspect_kernels.ptx_global_accesses(ptx) == [
        ("ld", 128, where), ("st", 128, (where[0], 306, 5)), ("st", 8, (where[0], 306, 5))
    ]  # fmt: skip
    sites = [("ld", 295, 21, "x"), ("st", 306, 5, "out"), ("ld", 297, 9, "other")]
    # A v4 load's line info drifts below its call (inline asm), but keeps the call's column.
    assert inspect_kernels.attribute("ld", where, sites, "max_pool.py") == "x"
    assert inspect_kernels.attribute("st", (where[0], 306, 5), sites, "max_pool.py") == "out"
    assert inspect_kernels.attribute("ld", (where[0], 300, 21), sites, "max_pool.py") == "?"


@pytest.mark.parametrize(
    "shape, size, threads, warps, order",
    [  # layouts Triton chose for these kernels' tiles (some repeat in registers along a dimension)
        ((8, 128), (1, 8), (2, 16), (4, 1), (1, 0)),
        ((8, 128), (1, 1), (1, 32), (1, 4), (1, 0)),
        ((32, 64), (1, 8), (4, 8), (4, 1), (1, 0)),
        ((16, 128), (8, 1), (2, 16), (1, 4), (0, 1)),
        ((16, 64), (2, 4), (8, 4), (1, 4), (0, 1)),
    ],
)
def test_blocked_layout_places_each_element_once_and_as_triton_numbers_them(inspect_kernels, shape, size, threads, warps, order):
    layout = inspect_kernels.Blocked(size, threads, warps, order)
    warp, lane, register = layout.place(shape)
    assert warp.shape == lane.shape == register.shape == shape
    per_thread = math.prod(shape) // (math.prod(threads) * math.prod(warps))
    slots = set(zip(warp.ravel().tolist(), lane.ravel().tolist(), register.ravel().tolist()))
    assert len(slots) == math.prod(shape)  # no two elements in one register
    assert warp.max() + 1 == math.prod(warps) and lane.max() + 1 == 32 and register.max() + 1 == per_thread
    # By hand, for the element at (m, n): each thread owns runs of size[d] neighbours, lanes then
    # warps step along the fastest dimension first, and whatever is left repeats in registers.
    fast, slow = order
    for m, n in [(0, 0), (1, 3), (5, 17), (7, 63)]:
        at = {0: m, 1: n}
        coords = {d: (at[d] % size[d], (at[d] // size[d]) % threads[d], (at[d] // (size[d] * threads[d])) % warps[d]) for d in (0, 1)}
        expected_lane = coords[slow][1] * threads[fast] + coords[fast][1]
        expected_warp = coords[slow][2] * warps[fast] + coords[fast][2]
        assert (int(warp[m, n]), int(lane[m, n])) == (expected_warp, expected_lane)
    # Neighbours along the fastest dimension inside one thread's run sit in consecutive registers.
    index = [0, 0]
    index[fast] = 1
    if size[fast] > 1:
        assert int(register[tuple(index)]) == int(register[0, 0]) + 1 and int(lane[tuple(index)]) == int(lane[0, 0])


def test_sector_counts_show_what_a_layout_costs_a_strided_gather(inspect_kernels):
    """A float16 gather at stride 2 (one tap of a 2-strided window) over 256 columns, one warp."""
    import numpy as np

    offsets = (4 * np.arange(256)).reshape(1, 256)  # bytes: every other float16
    access = inspect_kernels.TracedAccess("ld", 1, 2, offsets, np.ones((1, 256), dtype=bool))
    eight_a_thread = inspect_kernels.Blocked((1, 8), (1, 32), (1, 1), (1, 0))
    one_a_thread = inspect_kernels.Blocked((1, 1), (1, 32), (1, 1), (1, 0))
    # 8 neighbouring columns a thread: each of its 8 loads spreads the warp's 32 lanes 64 B apart.
    assert inspect_kernels.sector_counts(access, eight_a_thread, 1) == (8, 8 * 32, 512)
    # One column a thread: the 32 lanes of each load read 128 neighbouring bytes, 4 sectors.
    assert inspect_kernels.sector_counts(access, one_a_thread, 1) == (8, 8 * 4, 512)
    # Contiguous and vectorized (128-bit: 8 float16 a lane): 2 requests of 512 B, 16 sectors each.
    contiguous = access._replace(offsets=2 * np.arange(256).reshape(1, 256))
    assert inspect_kernels.sector_counts(contiguous, eight_a_thread, 8) == (1, 16, 512)
    # Masked lanes move nothing; lanes reading the same bytes share them.
    half = access._replace(mask=np.arange(256).reshape(1, 256) % 64 < 32)
    assert inspect_kernels.sector_counts(half, one_a_thread, 1) == (4, 16, 256)
    same = access._replace(offsets=2 * (np.arange(256) // 2).reshape(1, 256))
    assert inspect_kernels.sector_counts(same, one_a_thread, 1) == (8, 8 * 1, 256)


def test_traced_accesses_are_the_kernels_own(inspect_kernels):
    """One program of a CUDA forward, run by the interpreter: the 9 taps of x (per window row, a
    pair loaded together and one tap alone), then out, as laid out."""
    import numpy as np
    import torch
    from cases import CASES

    spec = inspect_kernels.cuda_launch_spec(CASES["resnet_stem"], torch.float16, "contiguous", "fwd")
    program = inspect_kernels.middle_program(spec)
    accesses = inspect_kernels.traced_accesses(spec, program)
    assert [a.kind for a in accesses] == ["ld"] * 6 + ["st"]
    assert [a.offsets.shape[2:] for a in accesses[:6]] == [(2,), ()] * 3  # the pair, then the tap at 2 * ow - 1
    sites = {(kind, line): tensor for kind, line, _, tensor in inspect_kernels.access_sites(inspect_kernels.mp._KERNELS["forward"][0])}
    assert {sites[a.kind, a.line] for a in accesses} == {"x", "out"}
    store = accesses[-1]
    out = spec.args[1]
    c = spec.constexprs
    assert store.offsets.shape == (c["BLOCK_M"], c["BLOCK_N"]) and store.mask.all()  # a tile inside
    elements = store.offsets[store.mask] // 2
    assert len(np.unique(elements)) == store.mask.sum() and elements.max() < out.numel()
    # The middle program's tile: its first row's outputs are those of plane (tile row) x (columns).
    tiles_n = -(-spec.args[-1] // c["BLOCK_N"])
    first = (program // tiles_n) * c["BLOCK_M"] * out.shape[2] * out.shape[3] + (program % tiles_n) * c["BLOCK_N"]
    assert int(elements.min()) == first


def _rows(output: str) -> list[dict[str, str]]:
    """bench_train.py's printed rows (key=value pairs separated by two spaces)."""
    return [dict(field.split("=", 1) for field in line.split("  ")) for line in output.splitlines() if line.startswith("section=")]


@pytest.mark.slow
def test_training_benchmarks_model_sections_need_neither_hydra_nor_mlflow(tmp_path):
    """gpu_session.sh runs the backend and memory sections on a GPU image that has torch and
    triton but maybe not the project's Hydra and MLflow: those sections must not import them."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bench_train; "
        "bench_train.main(['--quick', '--device', 'cpu', '--sections', 'backend,memory']); "
        "print('imported:', sorted(m for m in ('hydra', 'mlflow', 'data', 'training') if m in sys.modules))"
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    result = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {row["section"] for row in _rows(result.stdout)} == {"backend", "memory"}
    assert "imported: []" in result.stdout


@pytest.mark.slow
def test_quick_training_benchmark_measures_every_section(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_train.py"), "--quick", "--device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _rows(result.stdout)
    by_section = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert set(by_section) == {"memory_format", "overhead", "startup", "memory", "backend", "data"}

    for row in by_section["memory_format"]:
        assert float(row["contiguous_s_per_step"]) > 0 and float(row["channels_last_s_per_step"]) > 0
    (overhead,) = by_section["overhead"]
    assert float(overhead["bare_images_per_sec"]) > 0 and math.isfinite(float(overhead["overhead_pct"]))
    # The median of the pairs' overheads lies within their range.
    assert float(overhead["overhead_pct_min"]) <= float(overhead["overhead_pct"]) <= float(overhead["overhead_pct_max"])
    # The accounted figure: what the loop adds (measured on a model that costs nothing) and what a
    # run records after each epoch (a checkpoint written, metrics logged: never free), over the epoch.
    assert float(overhead["recording_ms_per_epoch"]) > 0 and math.isfinite(float(overhead["loop_extra_ms_per_epoch"]))
    extra = float(overhead["loop_extra_ms_per_epoch"]) + float(overhead["recording_ms_per_epoch"])
    bare_ms = 1e3 * float(overhead["images"]) / float(overhead["bare_images_per_sec"])
    assert float(overhead["accounted_overhead_pct"]) == pytest.approx(100 * extra / (bare_ms + extra), rel=2e-2, abs=2e-2)
    imports = [r for r in by_section["startup"] if r["what"].startswith("import ")]
    assert [r["what"].split()[1] for r in imports] == ["torch", "triton", "hydra", "mlflow", "train"]
    (run,) = [r for r in by_section["startup"] if r["what"].startswith("python train.py")]
    assert 0 < float(run["seconds"]) < float(run["whole_command_s"])  # the run's startup_sec metric

    memory = {r["backend"]: r for r in by_section["memory"]}
    # The kernel saves a 1-byte window position per output where PyTorch saves an 8-byte index.
    assert float(memory["triton"]["saved_for_backward_MB"]) < float(memory["torch"]["saved_for_backward_MB"])
    assert all(float(r["peak_step_MB"]) > 0 for r in memory.values())
    (step,) = by_section["backend"]
    ratio = float(step["triton_s_per_step"]) / float(step["torch_s_per_step"])
    assert float(step["torch_s_per_step"]) > 0 and math.isclose(float(step["triton_over_torch"]), ratio, rel_tol=2e-3)
    (loading,) = by_section["data"]
    ratio = float(loading["one_by_one_ms_per_batch"]) / float(loading["loader_ms_per_batch"])
    assert float(loading["loader_ms_per_batch"]) > 0 and math.isclose(float(loading["speedup"]), ratio, rel_tol=2e-3)
    assert float(loading["kept_ms_per_batch"]) > 0
