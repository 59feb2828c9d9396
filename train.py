"""Train a CNN whose pooling layers run on tritonpool's Triton kernel; MLflow records the run.

    python train.py                                   # tinyvgg + max pooling on generated shapes
    python train.py pool=none model=resnet trainer.epochs=3
    python train.py -m pool.size=2,3 pool.stride=1,2  # a sweep: one MLflow parent run, a child per job
    python train.py experiment=seed_pooling           # the seed's study, with and without max pooling
    python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 pool.size=2,3   # jobs in parallel
    python train.py trainer.resume_from=outputs/.../checkpoint.pt                    # continue a run
    mlflow ui                                         # browse and compare the runs

Configuration lives in conf/ (typed by training/config.py); this file turns it into plain
arguments for data/, models/ and the loop, in that order, and reports through training.tracking.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: a single run's startup_sec counts them

import os
import random
import shlex
import shutil
from dataclasses import asdict
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import data
import models
from training import checkpoint as checkpoints
from training import tracking
from training.config import ConfigError, as_pair, config_hash, register_configs, validate
from training.loop import fit, loss_function, make_optimizer, measure_pool_share

register_configs()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is available; use trainer.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_threads(requested: int | None, launcher) -> int | None:
    """Threads for this job: trainer.threads, else its share of the CPU under a parallel launcher.

    Jobs that run side by side must not each use every core: oversubscribed, they run slower
    together than one after another.
    """
    if requested:
        return requested
    if launcher.get("cpus_per_task"):  # submitit (SLURM or local): the cores the job was given
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")  # joblib: n_jobs processes share this machine
    if n_jobs:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        processes = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib's -1: one per core
        jobs = os.environ.get(tracking.SWEEP_JOBS_ENV)  # a sweep of 2 jobs runs 2 processes at most
        if jobs and jobs.isdigit() and int(jobs) > 0:
            processes = min(processes, int(jobs))
        return max(1, cores // processes)
    return None  # one job at a time: PyTorch's default, every core


def run_name(cfg: dict) -> str:
    """A name to read in the MLflow UI, e.g. tinyvgg-max-k3-s2, resnet-none, strided."""
    pool, name = cfg["pool"], cfg["model"]["name"]
    if name == "strided":
        return name
    if pool["type"] == "none":
        return f"{name}-nopool"

    def text(value) -> str:
        return "x".join(map(str, value)) if isinstance(value, list) else str(value)

    parts = [name, pool["type"], f"k{text(pool['size'])}", f"s{text(pool['stride'] or pool['size'])}"]
    if pool["padding"] not in (0, [0, 0], "valid"):
        parts.append(f"p{text(pool['padding'])}")
    if pool["dilation"] not in (1, [1, 1]):
        parts.append(f"d{text(pool['dilation'])}")
    if pool["type"] == "max" and pool["backend"] != "auto":
        parts.append(pool["backend"])
    return "-".join(parts)


def summary_tags(cfg: dict) -> dict[str, str]:
    """Short tags to filter and group by in the MLflow UI, and the run page's one-line description."""
    pool, model, data_cfg, trainer = cfg["pool"], cfg["model"]["name"], cfg["data"], cfg["trainer"]
    size = data_cfg["image_size"]
    size = _dims(size if isinstance(size, list) else [size, size])
    if model == "strided":
        pooling = "stride-2 convolutions instead of pooling"
    elif pool["type"] == "none":
        pooling = "no pooling"
    else:
        pooling = f"{pool['type']} pooling, window {_dims(pool['size'])} stride {_dims(pool['stride'] or pool['size'])}"
        if pool["padding"] not in (0, [0, 0], "valid"):
            pooling += f" padding {_dims(pool['padding'])}"
    note = (
        f"{model} with {pooling} on {data_cfg['name']} {size}: {trainer['epochs']} epochs of "
        f"{trainer['optimizer']} (lr {trainer['lr']}, batch {trainer['batch_size']}), seed {trainer['seed']}"
    )
    return {
        "model": model,
        "pool": "none" if model == "strided" else pool["type"],
        "dataset": data_cfg["name"],
        "mlflow.note.content": note,  # shown as the run's description
    }


def _dims(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def job_tags(hydra_cfg) -> dict[str, str]:
    overrides = list(hydra_cfg.overrides.task)
    tags = {
        "hydra.job.name": hydra_cfg.job.name,
        "hydra.overrides": " ".join(overrides) or "(none)",
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "triton_version": _version("triton"),
    }
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["hydra.job.num"] = str(hydra_cfg.job.num)
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one configuration; returns the best validation accuracy (the objective of sweeps)."""
    hydra_cfg = HydraConfig.get()
    # A sweep's job starts with this call (the imports were paid once, before its first job).
    started = STARTED if hydra_cfg.mode == RunMode.RUN else time.perf_counter()
    checkpoint_path = Path(hydra_cfg.runtime.output_dir) / checkpoints.FILE_NAME  # rewritten every epoch
    try:
        settings = validate(cfg)  # every range checked before any work
        settings["trainer"]["threads"] = cpu_threads(settings["trainer"]["threads"], hydra_cfg.launcher)
        tracker = open_tracker(settings, hydra_cfg)  # an unreachable store fails here, before training
        if settings["tracking"]["resume"] and (twin := tracker.finished_twin(config_hash(settings))):
            best = twin.data.metrics.get("best_val_accuracy", float("nan"))
            print(f"Skipped: this config already FINISHED as run {twin.info.run_name!r} ({twin.info.run_id}), "
                  f"best val_accuracy {best:.4f}")  # fmt: skip
            return best  # what the sweeper (Optuna) would have got from training it again
        resume = resume_point(settings, tracker)  # an interrupted run's last checkpoint, or None
        with tracker:  # any failure from here ends the run FAILED (Ctrl-C: KILLED), traceback logged
            overrides = list(hydra_cfg.overrides.task)
            history = train(settings, tracker, OmegaConf.to_yaml(cfg), overrides, checkpoint_path, resume, started)
    except (ConfigError, tracking.TrackingError) as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # this job fails; the sweep's other jobs go on
        # a clear message, no traceback; and how to continue if training had begun
        raise SystemExit(f"Error: {error}" + resume_hint(checkpoint_path, hydra_cfg)) from None
    best = max(m.val_accuracy for m in history)
    if isinstance(tracker, tracking.RunTracker):
        print(f"Run recorded: experiment {settings['tracking']['experiment']!r}, run {tracker.run_name!r} ({tracker.run_id})")
        print(f"  store: {tracking.mask_uri(tracker.uri)}")
        print(f"  browse: {tracking.browse_command(tracker.uri)}")
    return best


def open_tracker(settings: dict, hydra_cfg) -> tracking.NullTracker:
    track = settings["tracking"]
    if not track["enabled"]:
        return tracking.NullTracker()
    uri = tracking.resolve_tracking_uri(track["uri"], hydra_cfg.runtime.cwd)
    parent = os.environ.get(tracking.PARENT_RUN_ENV) if hydra_cfg.mode == RunMode.MULTIRUN else None
    name = track["run_name"] or run_name(settings)
    tags = {
        **job_tags(hydra_cfg),
        **summary_tags(settings),
        "config_hash": config_hash(settings),  # finds identical runs (resume)
    }
    return tracking.RunTracker(uri, track["experiment"], name, tags, parent)


def resume_point(settings: dict, tracker: tracking.NullTracker) -> checkpoints.Checkpoint | None:
    """The checkpoint to continue from: trainer.resume_from, else (tracking.resume) an interrupted run of this config.

    The tracker is pointed at the checkpoint's run, so the run continues in the same MLflow record.
    """
    source, digest = settings["trainer"]["resume_from"], config_hash(settings)
    if source:
        path = source if Path(source).exists() else tracker.checkpoint_of(source)  # a file, or a run id
        try:
            resume = checkpoints.load(path)
        except FileNotFoundError as error:
            raise ConfigError(f"trainer.resume_from={source}: {error}") from None
        if resume.config_hash != digest:
            raise ConfigError(
                f"trainer.resume_from={source}: that checkpoint belongs to a different configuration "
                f"(config_hash {resume.config_hash}, this one {digest}); give the same overrides as its run"
            )
    elif settings["tracking"]["resume"] and (earlier := tracker.interrupted_twin(digest)):
        resume = checkpoints.load(earlier.data.tags["checkpoint"])
    else:
        return None
    tracker.run_id = resume.run_id
    return resume


def resume_hint(checkpoint_path: Path, hydra_cfg) -> str:
    """How to continue a run that stopped with an error, if it left a checkpoint."""
    if not checkpoint_path.is_file():
        return ""
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("trainer.resume_from=")]
    command = shlex.join(["python", "train.py", *overrides, f"trainer.resume_from={checkpoint_path}"])
    return f"\nThe last finished epoch is saved; to continue from it:\n  {tracking.mask_secrets(command)}"


def train(
    settings: dict,
    tracker: tracking.NullTracker,
    config_yaml: str = "",
    overrides: list[str] = (),
    checkpoint_path: Path | None = None,
    resume: checkpoints.Checkpoint | None = None,
    started: float | None = None,
) -> list:
    """Build data and model from the validated settings, train, report; returns the epochs' metrics.

    With ``checkpoint_path`` the state after every epoch is saved there; with ``resume`` training
    continues after that checkpoint's epoch (the tracker already points at its run). ``started``
    (a ``time.perf_counter()`` value) is when the job began: the run records ``startup_sec``, the
    seconds from then to its first training step.
    """
    pool_cfg, model_cfg, data_cfg, trainer = settings["pool"], settings["model"], settings["data"], settings["trainer"]
    if trainer["threads"]:
        torch.set_num_threads(trainer["threads"])
    device = resolve_device(trainer["device"])
    channels_last = trainer["channels_last"] if trainer["channels_last"] is not None else True
    seed_everything(trainer["seed"])

    train_set, val_set, info = data.build_datasets(
        data_cfg["name"],
        root=data_cfg["root"],
        image_size=as_pair(data_cfg["image_size"]),
        num_classes=data_cfg["num_classes"],
        in_channels=data_cfg["in_channels"],
        train_size=data_cfg["train_size"],
        val_size=data_cfg["val_size"],
        seed=data_cfg["seed"],
        augment=data_cfg["augment"],
        download=data_cfg["download"],
        cache_mib=data_cfg["cache_mib"],
    )
    loading = dict(batch_size=trainer["batch_size"], seed=trainer["seed"], num_workers=data_cfg["num_workers"], device=device)
    train_loader = data.make_loader(train_set, shuffle=True, **loading)
    val_loader = data.make_loader(val_set, shuffle=False, **loading)

    pool = models.PoolConfig(**{k: as_pair(v) for k, v in pool_cfg.items()})
    arch = {k: as_pair(v) for k, v in model_cfg.items() if k != "name"}
    model = models.build_model(
        model_cfg["name"], pool=pool, in_channels=info.channels, num_classes=info.num_classes,
        image_size=info.image_size, device=device, **arch,
    )  # fmt: skip
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = loss_function(info.num_classes)
    optimizer = make_optimizer(
        trainer["optimizer"], model.parameters(), trainer["lr"], trainer["weight_decay"], trainer["momentum"]
    )

    if not tracker.continued:  # a continued run recorded all this when it started
        tracker.log_params(
            {
                **tracking.flatten(settings),
                "num_params": models.count_parameters(model),
                "pool_backend": models.pool_backend(model),
                "device": str(device),
                "channels_last": channels_last,
                "cpu_threads": torch.get_num_threads(),
            }
        )
        # tuples as lists (no `info.classes` here: cloudpickle, which ships this function to joblib's
        # workers, would take that attribute name for the module torch.classes and fail to pickle it)
        tracker.log_dataset({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(info).items()}, "training")
        tracker.log_text(config_yaml, "config/config.yaml")
        tracker.log_text("\n".join(overrides) + "\n", "config/overrides.txt")
        tracker.log_text(models.model_summary(model, (info.channels, *info.image_size)), "model_summary.txt")

    if started is not None:  # fixed cost per run (imports, data, model, tracking set-up)
        tracker.log_metrics({"startup_sec": round(time.perf_counter() - started, 3)}, step=0)
    history = []
    if resume is not None:
        checkpoints.restore(resume, model=model, optimizer=optimizer, shuffling=train_loader.generator)
        history = list(resume.history)
        recorded = tracker.recorded_steps("val_accuracy")
        for epoch, metrics in enumerate(history, start=1):  # epochs whose logging the interruption cut off
            if epoch not in recorded:
                tracker.log_metrics(metrics.as_dict(), step=epoch)
        tracker.set_tags({"resumed_from_epoch": resume.epoch})
        print(f"Resuming after epoch {resume.epoch}/{trainer['epochs']} from {resume.path}")
    elif trainer["profile_pool_steps"] > 0:
        cost = measure_pool_share(
            model, train_loader, optimizer, criterion, device,
            steps=trainer["profile_pool_steps"], channels_last=channels_last,
        )  # fmt: skip
        if cost:
            tracker.log_metrics(cost, step=0)
    if checkpoint_path is not None:
        if resume is not None and resume.path.resolve() != checkpoint_path.resolve():
            # The tag moves to this attempt's folder: put the state there now, so that a run
            # stopped again before its next epoch still has a checkpoint where the tag points.
            checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resume.path, checkpoint_path)
        tracker.set_tags({"checkpoint": checkpoint_path.resolve()})  # where resume finds this run's state

    end_of_epoch = epoch_recorder(
        tracker, model, optimizer, train_loader, history, checkpoint_path, config_hash(settings)
    )
    fit(
        model, train_loader, val_loader, optimizer, criterion, device,
        epochs=trainer["epochs"], limit_train_batches=trainer["limit_train_batches"],
        limit_val_batches=trainer["limit_val_batches"], channels_last=channels_last,
        progress=sys.stderr.isatty(), on_epoch_end=end_of_epoch, start_epoch=len(history) + 1,
    )  # fmt: skip
    tracker.log_metrics({"best_val_accuracy": max(m.val_accuracy for m in history)}, step=len(history))
    tracker.log_figure(learning_curves(history), "learning_curves.png")
    if settings["tracking"]["log_model"]:
        images, _ = next(iter(val_loader))
        tracker.log_model(model, images[:2].to(device))
    return history


def epoch_recorder(
    tracker: tracking.NullTracker,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader,
    history: list,
    checkpoint_path: Path | None,
    digest: str,
):
    """What a run does after every epoch: append its metrics to ``history``, save the checkpoint,
    log the metrics (benchmarks/bench_train.py times it as part of train.py's epoch)."""

    def end_of_epoch(epoch: int, metrics) -> None:
        history.append(metrics)
        if checkpoint_path is not None:  # saved before logging: a lost server cannot lose the epoch
            checkpoints.save(
                checkpoint_path, model=model, optimizer=optimizer, shuffling=train_loader.generator,
                history=history, run_id=tracker.run_id, config_hash=digest,
            )  # fmt: skip
        tracker.log_metrics(metrics.as_dict(), step=epoch)

    return end_of_epoch


def learning_curves(history):
    """Loss and accuracy per epoch, training against validation (the seed's plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [m.loss for m in history], "o-", label="training")
    left.plot(epochs, [m.val_loss for m in history], "o-", label="validation")
    left.set(title="Loss", xlabel="epoch")
    right.plot(epochs, [m.accuracy for m in history], "o-", label="training")
    right.plot(epochs, [m.val_accuracy for m in history], "o-", label="validation")
    right.set(title="Accuracy", xlabel="epoch", ylim=(0, 1))
    for axes in (left, right):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure


if __name__ == "__main__":
    main()
