"""Per-epoch checkpoints: all a run needs to continue at its next epoch as if never stopped.

A checkpoint holds the model and optimizer state, the last finished epoch with the metrics of
every epoch so far, the random number generators (Python, NumPy, PyTorch and the loader's
shuffling generator), the MLflow run it belongs to and the digest of its config. It is one file,
``checkpoint.pt`` in the job's Hydra output folder, replaced atomically after every epoch: a
crash while writing leaves the previous epoch's file intact. Everything in it is a tensor or a
plain value, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.loop import EpochMetrics

FILE_NAME = "checkpoint.pt"


@dataclass
class Checkpoint:
    """What ``load`` returns: the state after ``epoch`` epochs of one run."""

    path: Path
    epoch: int  # the last finished epoch (1-based)
    history: list[EpochMetrics]  # one entry per finished epoch
    run_id: str | None  # the MLflow run to continue; None: the run was not tracked
    config_hash: str  # training.config.config_hash of the run's config
    state: dict  # model, optimizer and random generator states


def save(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffling: torch.Generator,
    history: list[EpochMetrics],
    run_id: str | None,
    config_hash: str,
) -> None:
    """Write the state after ``len(history)`` epochs to ``path`` (atomically)."""
    numpy_state = np.random.get_state()
    state = {
        "epoch": len(history),
        "history": [m.as_dict() for m in history],
        "run_id": run_id,
        "config_hash": config_hash,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffling": shuffling.get_state(),
        },
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by ``save``."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Checkpoint(
        path=path,
        epoch=state["epoch"],
        history=[EpochMetrics(**m) for m in state["history"]],
        run_id=state["run_id"],
        config_hash=state["config_hash"],
        state=state,
    )


def restore(
    checkpoint: Checkpoint, *, model: nn.Module, optimizer: torch.optim.Optimizer, shuffling: torch.Generator
) -> None:
    """Put the model, the optimizer and every random generator back where ``checkpoint`` left them."""
    state = checkpoint.state
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    random.setstate(rng["python"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    shuffling.set_state(rng["shuffling"])
