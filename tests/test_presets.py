"""The commands the README promises: the default run and the seed's study preset, as users type them."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import data
import models
from training.loop import fit, loss_function

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_default_run_learns_the_default_data(tmp_path):
    """`python train.py` with no overrides: tinyvgg + max pooling reaches >= 0.90 validation accuracy.

    (Its time, under a minute on 2 cores, is measured by benchmarks/bench_train.py, not here.)
    """
    result = _train(tmp_path)
    assert result.stdout.count("Epoch ") == 10
    assert "browse: mlflow ui" in result.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tritonpool").experiment_id])
    assert run.info.run_name == "tinyvgg-max-k2-s2"
    assert run.data.params["data.name"] == "shapes" and run.data.params["data.image_size"] == "64"
    assert run.data.metrics["val_accuracy"] >= 0.90


@pytest.mark.slow
def test_seed_pooling_preset_is_a_sweep_with_and_without_pooling(tmp_path):
    """experiment=seed_pooling runs both variants as one parent and two children (shrunk to be quick)."""
    result = _train(
        tmp_path, "experiment=seed_pooling", "data.image_size=32", "data.train_size=64", "data.val_size=32",
        "trainer.epochs=1", "tracking.log_model=false", "trainer.profile_pool_steps=0",
    )  # fmt: skip
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("seed_pooling").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "seed_pooling"
    assert sorted(c.info.run_name for c in children) == ["tinyvgg-max-k2-s2", "tinyvgg-nopool"]
    params = {c.info.run_name: c.data.params for c in children}
    assert params["tinyvgg-max-k2-s2"]["trainer.optimizer"] == "adam"
    assert params["tinyvgg-max-k2-s2"]["trainer.batch_size"] == "32"
    # The seed's finding in the parameter counts: more without pooling (54x at the preset's 224 px).
    assert int(params["tinyvgg-nopool"]["num_params"]) > 3 * int(params["tinyvgg-max-k2-s2"]["num_params"])
    assert "| tinyvgg-nopool |" in result.stdout


def test_progress_bar_on_a_terminal():
    """With progress=True (train.py passes it on a terminal) tqdm draws a bar per epoch."""
    train_set, val_set, _ = data.build_datasets("shapes", image_size=24, train_size=32, val_size=16)
    model = models.build_model("tinyvgg", pool=models.PoolConfig(), image_size=24)
    loader = data.make_loader(train_set, batch_size=16)
    screen, lines = io.StringIO(), []
    with contextlib.redirect_stderr(screen):
        fit(
            model, loader, data.make_loader(val_set, batch_size=16), torch.optim.Adam(model.parameters()),
            loss_function(2), torch.device("cpu"), epochs=1, progress=True, print_fn=lines.append,
        )  # fmt: skip
    bar = screen.getvalue()
    assert "Epoch 1/1:" in bar and "/2 [" in bar and "loss=" in bar  # tqdm's bar: steps, running loss
    assert lines and lines[0].startswith("Epoch 1/1 - 2/2 - ")
