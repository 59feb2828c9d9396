"""Train a CNN whose pooling layers run on tritonpool's Triton kernel; MLflow records the run.

    python train.py                                   # tinyvgg + max pooling on generated shapes
    python train.py pool=none model=resnet trainer.epochs=3
    python train.py -m pool.size=2,3 pool.stride=1,2  # a sweep: one MLflow parent run, a child per job
    python train.py experiment=seed_pooling           # the seed's study, with and without max pooling
    mlflow ui                                         # browse and compare the runs

Configuration lives in conf/ (typed by training/config.py); this file turns it into plain
arguments for data/, models/ and the loop, in that order, and reports through training.tracking.
"""

from __future__ import annotations

import os
import random
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
from training import tracking
from training.config import ConfigError, as_pair, register_configs, validate
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
    try:
        settings = validate(cfg)  # every range checked before any work
        tracker = open_tracker(settings, hydra_cfg)  # an unreachable store fails here, before training
    except (ConfigError, tracking.TrackingError) as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # this job fails; the sweep's other jobs go on
        raise SystemExit(f"Error: {error}") from None  # a clear line, not a traceback
    with tracker:  # any failure from here ends the run FAILED (Ctrl-C: KILLED), traceback logged
        history = train(settings, tracker, OmegaConf.to_yaml(cfg), list(hydra_cfg.overrides.task))
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
    return tracking.RunTracker(uri, track["experiment"], name, job_tags(hydra_cfg), parent)


def train(settings: dict, tracker: tracking.NullTracker, config_yaml: str = "", overrides: list[str] = ()) -> list:
    """Build data and model from the validated settings, train, report; returns the epochs' metrics."""
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

    tracker.log_params(
        {
            **tracking.flatten(settings),
            "num_params": models.count_parameters(model),
            "pool_backend": models.pool_backend(model),
            "device": str(device),
            "channels_last": channels_last,
        }
    )
    tracker.log_dataset({**asdict(info), "image_size": list(info.image_size), "classes": list(info.classes)}, "training")
    tracker.log_text(config_yaml, "config/config.yaml")
    tracker.log_text("\n".join(overrides) + "\n", "config/overrides.txt")
    tracker.log_text(models.model_summary(model, (info.channels, *info.image_size)), "model_summary.txt")

    if trainer["profile_pool_steps"] > 0:
        cost = measure_pool_share(
            model, train_loader, optimizer, criterion, device,
            steps=trainer["profile_pool_steps"], channels_last=channels_last,
        )  # fmt: skip
        if cost:
            tracker.log_metrics(cost, step=0)

    history = fit(
        model, train_loader, val_loader, optimizer, criterion, device,
        epochs=trainer["epochs"], limit_train_batches=trainer["limit_train_batches"],
        limit_val_batches=trainer["limit_val_batches"], channels_last=channels_last,
        progress=sys.stderr.isatty(),
        on_epoch_end=lambda epoch, metrics: tracker.log_metrics(metrics.as_dict(), step=epoch),
    )  # fmt: skip
    tracker.log_metrics({"best_val_accuracy": max(m.val_accuracy for m in history)}, step=len(history))
    tracker.log_figure(learning_curves(history), "learning_curves.png")
    if settings["tracking"]["log_model"]:
        images, _ = next(iter(val_loader))
        tracker.log_model(model, images[:2].to(device))
    return history


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
