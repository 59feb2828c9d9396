"""Training-level costs: memory format, train.py's loop overhead, startup, memory per step.

    python benchmarks/bench_train.py                       # every section
    python benchmarks/bench_train.py --sections overhead   # memory_format, overhead, startup, memory, backend, data
    python benchmarks/bench_train.py --quick               # seconds: small sizes, for CI smoke tests

Sections:
- memory_format: seconds per training step of the seed's network (224x224, batch 32, Adam) with
  and without pooling, channels_last against contiguous. train.py's ``trainer.channels_last: null``
  picks what this measures as faster (channels_last on CPU here, and on CUDA).
- overhead: images/sec of train.py's epochs (training.loop.fit with its progress bar drawing,
  then what a run does after each epoch: the checkpoint and the metrics logged to a real MLflow
  run) against a bare PyTorch loop on the same model, data and batch size, each epoch timed whole
  with its validation, epochs alternated in pairs; the median of the pairs' overheads, with their
  range. Target: at most 3% slower.
- startup: seconds from ``python train.py`` to its first training step (the run's ``startup_sec``
  metric), and what importing torch, triton, hydra and mlflow costs, each in a fresh process.
- memory: bytes saved for backward and peak memory of one training step, pool.backend=triton
  against torch (the kernel keeps 1 byte per pooled output where PyTorch keeps an 8-byte index).
- backend: seconds per training step of train.py's default network and data size (tinyvgg,
  64x64, batch 32, Adam, channels_last) with its pooling on our kernel against PyTorch's: what
  pool.backend=triton costs or saves a step (on CPU, the interpreter's cost).
- data: milliseconds per batch of the default dataset's loader (generated shapes, 64x64 and
  224x224, batch 32), rendered together against one image after another.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402

# data and training (Hydra, MLflow) are imported by the sections that use them, overhead, startup
# and data: the others run where only torch and triton are installed (benchmarks/gpu_session.sh).


def seed_model(pool_type: str, image: int, backend: str = "auto", device="cpu") -> nn.Module:
    pool = models.PoolConfig(type=pool_type, backend=backend)
    return models.build_model("tinyvgg", pool=pool, image_size=image, device=device)


def step_seconds(model: nn.Module, images, labels, channels_last: bool, steps: int) -> float:
    """Median seconds of one Adam training step (after two warm-up steps)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = criterion(model(images).squeeze(1), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if images.is_cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory_format(args, device) -> list[dict]:
    image, batch, steps = (64, 8, 3) if args.quick else (224, 32, 5)
    images = torch.randn(batch, 3, image, image, device=device)
    labels = torch.randint(0, 2, (batch,), device=device).float()
    rows = []
    for pool_type in ("max", "none"):
        seconds = {}
        for channels_last in (False, True):
            torch.manual_seed(0)
            seconds[channels_last] = step_seconds(seed_model(pool_type, image, device=device), images, labels, channels_last, steps)
        rows.append({
            "section": "memory_format", "model": f"tinyvgg pool={pool_type}", "image": image, "batch": batch,
            "contiguous_s_per_step": seconds[False], "channels_last_s_per_step": seconds[True],
            "channels_last_speedup": seconds[False] / seconds[True],
        })  # fmt: skip
    return rows


def bare_epoch(model, loader, val_loader, optimizer, criterion, device, channels_last) -> float:
    """The loop without anything around it, an epoch of training then validation: its seconds."""
    start = time.perf_counter()
    model.train()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = criterion(model(images).squeeze(1), labels.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for images, labels in val_loader:
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            criterion(model(images).squeeze(1), labels.to(device).float())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def overhead(args, device) -> list[dict]:
    """Alternate bare and train.py epochs (so drifting machine load hits both alike), after one
    unmeasured warm-up epoch; the overhead is the median over the pairs, each pair's own ratio.

    An epoch is timed whole, as a user waits for it: training, validation, and for train.py what
    its run does after each epoch (train.epoch_recorder: the checkpoint, the metrics logged to a
    real MLflow run) and its progress bar, drawn into a buffer (its cost without a terminal's).
    """
    import data
    import train as train_script
    from data.build import SHAPES_SPLIT
    from training import tracking
    from training.loop import fit, loss_function

    epochs = 2 if args.quick else 9
    size, val_size = (256, 64) if args.quick else SHAPES_SPLIT  # the seed's 1500 / 500
    # Kept in memory after the warm-up epoch, as train.py keeps them (data.cache_mib: 2048 in
    # conf/data/shapes.yaml): the epochs are as short as a run's, so the loop's extra work is
    # the largest share of them it will be.
    train_set, val_set, _ = data.build_datasets(
        "shapes", image_size=64, train_size=size, val_size=val_size, cache_mib=2048
    )
    loader = data.make_loader(train_set, batch_size=32, shuffle=True, seed=0)
    val_loader = data.make_loader(val_set, batch_size=32)
    criterion = loss_function(2)

    def fresh_model():
        torch.manual_seed(0)
        model = seed_model("max", 64, device=device).to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=2e-3)

    bare, ours = [], []
    model, optimizer = fresh_model()
    bare_epoch(model, loader, val_loader, optimizer, criterion, device, True)  # warm-up: allocator, caches, threads
    with tempfile.TemporaryDirectory() as store:
        checkpoint = Path(store) / "checkpoint.pt"
        with tracking.RunTracker(f"sqlite:///{store}/mlflow.db", "bench_train", "overhead") as tracker:
            for _ in range(epochs):
                model, optimizer = fresh_model()
                bare.append(bare_epoch(model, loader, val_loader, optimizer, criterion, device, True))
                model, optimizer = fresh_model()
                record = train_script.epoch_recorder(tracker, model, optimizer, loader, [], checkpoint, "bench_train")
                start = time.perf_counter()
                with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                    (metrics,) = fit(model, loader, val_loader, optimizer, criterion, device, epochs=1,
                                     channels_last=True, progress=True, on_epoch_end=record)  # fmt: skip
                ours.append(time.perf_counter() - start)
            # What a run records after an epoch (the checkpoint of this model, the metrics), timed alone.
            recording = []
            for _ in range(5):
                start = time.perf_counter()
                record(1, metrics)
                recording.append(time.perf_counter() - start)
    pairs = [100 * (o - b) / o for b, o in zip(bare, ours)]  # the share of train.py's epoch beyond the bare one
    loop = loop_extra_seconds(size, val_size, 3 if args.quick else 15, device)
    accounted = loop + statistics.median(recording)
    return [{
        "section": "overhead", "images": size, "val_images": val_size, "epochs": epochs,
        "bare_images_per_sec": size / statistics.median(bare), "train_py_images_per_sec": size / statistics.median(ours),
        "overhead_pct": statistics.median(pairs), "overhead_pct_min": min(pairs), "overhead_pct_max": max(pairs),
        "loop_extra_ms_per_epoch": 1e3 * loop, "recording_ms_per_epoch": 1e3 * statistics.median(recording),
        "accounted_overhead_pct": 100 * accounted / (statistics.median(bare) + accounted),
    }]  # fmt: skip


def loop_extra_seconds(size: int, val_size: int, pairs: int, device) -> float:
    """Seconds train.py's loop adds to an epoch (the progress bar, the loss and accuracy it keeps,
    its checks), measured where the model and the data cost almost nothing: a linear model on
    tensors already in memory. There the extra work is most of an epoch rather than lost in the
    noise of one; it does not depend on the model."""
    from torch.utils.data import DataLoader, TensorDataset

    from training.loop import fit, loss_function

    def tensors(count):
        generator = torch.Generator().manual_seed(count)
        images = torch.randn(count, 3, 64, 64, generator=generator)
        return TensorDataset(images, torch.randint(0, 2, (count,), generator=generator))

    criterion = loss_function(2)
    loader = DataLoader(tensors(size), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(tensors(val_size), batch_size=32)
    bare, ours = [], []
    for pair in range(pairs + 1):  # the first pair warms up
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 1)).to(device)
        optimizer = torch.optim.Adam(model.parameters())
        seconds = bare_epoch(model, loader, val_loader, optimizer, criterion, device, True)
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            fit(model, loader, val_loader, optimizer, criterion, device, epochs=1, channels_last=True, progress=True)
        if pair:
            bare.append(seconds)
            ours.append(time.perf_counter() - start)
    return statistics.median(o - b for b, o in zip(bare, ours))


def data_loading(args, device) -> list[dict]:
    """Milliseconds per batch of the default dataset's loader (GeneratedShapes renders a batch
    together) against rendering its images one by one, and from memory once kept (data.cache_mib,
    what train.py's later epochs load): what the data costs a training step."""
    import data
    from data.cache import CachedDataset

    rows = []
    batch, repeats = (8, 2) if args.quick else (32, 15)
    for image in (32,) if args.quick else (64, 224):
        train_set, _, _ = data.build_datasets("shapes", image_size=image, train_size=batch * (repeats + 1), val_size=1)
        loader = iter(data.make_loader(train_set, batch_size=batch))
        kept = CachedDataset(train_set, len(train_set))
        for _ in data.make_loader(kept, batch_size=batch):  # the first epoch renders and keeps
            pass
        kept_loader = iter(data.make_loader(kept, batch_size=batch))
        next(loader), next(kept_loader)  # warm-up
        together, one_by_one, from_memory = [], [], []
        for r in range(1, repeats + 1):
            start = time.perf_counter()
            next(loader)
            together.append(time.perf_counter() - start)
            start = time.perf_counter()
            torch.stack([train_set[i][0] for i in range(r * batch, (r + 1) * batch)])
            one_by_one.append(time.perf_counter() - start)
            start = time.perf_counter()
            next(kept_loader)
            from_memory.append(time.perf_counter() - start)
        rows.append({
            "section": "data", "dataset": "shapes", "image": image, "batch": batch,
            "loader_ms_per_batch": 1e3 * statistics.median(together),
            "one_by_one_ms_per_batch": 1e3 * statistics.median(one_by_one),
            "speedup": statistics.median(one_by_one) / statistics.median(together),
            "kept_ms_per_batch": 1e3 * statistics.median(from_memory),
        })  # fmt: skip
    return rows


def startup(args, device) -> list[dict]:
    from training import tracking

    rows = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    script = (
        "import time; t = time.perf_counter(); import {module}; "
        "print(time.perf_counter() - t)"
    )
    chain = ["torch", "triton", "hydra", "mlflow", "train"]
    for i, module in enumerate(chain):
        before = "; ".join(f"import {m}" for m in chain[:i])  # each measured on top of the earlier ones
        code = (before + "; " if before else "") + script.format(module=module)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        rows.append({"section": "startup", "what": f"import {module} (after {', '.join(chain[:i]) or 'nothing'})",
                     "seconds": float(out.stdout.strip().splitlines()[-1])})  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "tracking.log_model=false", "trainer.profile_pool_steps=0",
        ]  # fmt: skip
        attempts = ("first run (creates mlflow.db)",) if args.quick else ("first run (creates mlflow.db)", "second run")
        for attempt in attempts:
            start = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=run_dir, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
            wall = time.perf_counter() - start
            client = tracking.connect(f"sqlite:///{run_dir}/mlflow.db")
            run = client.search_runs([client.get_experiment_by_name("tritonpool").experiment_id],
                                     order_by=["attributes.start_time DESC"], max_results=1)[0]  # fmt: skip
            rows.append({"section": "startup", "what": f"python train.py to first step, {attempt}",
                         "seconds": run.data.metrics.get("startup_sec", float("nan")), "whole_command_s": wall})  # fmt: skip
    return rows


def saved_bytes(model: nn.Module, images) -> int:
    """Bytes autograd keeps for backward in one forward (each storage counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images)
    return sum(storages.values())


def peak_step_memory(model: nn.Module, images, labels, device) -> int:
    """Peak bytes allocated during one training step (CUDA allocator stats; the profiler on CPU)."""
    criterion = nn.BCEWithLogitsLoss()

    def step():
        loss = criterion(model(images).squeeze(1), labels)
        loss.backward()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Each op's own allocations (self_): an op's total also counts its callees' (conv2d ->
    # convolution -> mkldnn_convolution), which would count one buffer several times.
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:  # allocations positive, frees negative, in time order
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def memory(args, device) -> list[dict]:
    image, batch = (64, 4) if args.quick else (224, 32)
    images = torch.randn(batch, 3, image, image, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (batch,), device=device).float()
    rows = []
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        model = seed_model("max", image, backend=backend, device=device).to(memory_format=torch.channels_last)
        rows.append({
            "section": "memory", "backend": backend, "image": image, "batch": batch,
            "saved_for_backward_MB": saved_bytes(model, images) / 2**20,
            "peak_step_MB": peak_step_memory(model, images, labels, device) / 2**20,
        })  # fmt: skip
    return rows


def backend(args, device) -> list[dict]:
    # After step_seconds' two warm-up steps every pooling launch replays on CPU: a layer small
    # enough for one program a kernel needs two calls whose tapes agree (kernels/interpreter.py).
    image, batch, steps = (32, 4, 3) if args.quick else (64, 32, 15)
    images = torch.randn(batch, 3, image, image, device=device)
    labels = torch.randint(0, 2, (batch,), device=device).float()
    seconds = {}
    for name in ("triton", "torch"):
        torch.manual_seed(0)
        seconds[name] = step_seconds(seed_model("max", image, backend=name, device=device), images, labels, True, steps)
    return [{
        "section": "backend", "model": "tinyvgg pool=max", "image": image, "batch": batch,
        "triton_s_per_step": seconds["triton"], "torch_s_per_step": seconds["torch"],
        "triton_over_torch": seconds["triton"] / seconds["torch"],
    }]  # fmt: skip


SECTIONS = {  # name on the command line: what measures it
    "memory_format": memory_format, "overhead": overhead, "startup": startup, "memory": memory,
    "backend": backend, "data": data_loading,
}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test in seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {tuple(SECTIONS)}")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")  # fmt: skip
    for section in sections:
        for row in SECTIONS[section](args, device):
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
