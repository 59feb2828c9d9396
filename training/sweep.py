"""A Hydra sweep as one MLflow parent run with a child run per job, and a comparison at its end.

Registered in conf/config.yaml under ``hydra.callbacks``. When a multirun starts, the parent run
is created and its id handed to the jobs through the environment (which every launcher's worker
processes inherit); each job's run names it as parent. When the sweep ends, even by a failed job
or Ctrl-C, the parent gets the comparison table (CSV and markdown) and plot, and a final status.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from training import tracking

COMPARED_METRICS = ("accuracy", "val_accuracy", "best_val_accuracy", "val_loss", "train_images_per_sec")


def sweep_overrides(config: DictConfig) -> list[str]:
    """What the sweep varies: its command-line overrides and the sweeper's configured params."""
    overrides = list(config.hydra.overrides.task)
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    return overrides + [f"{k}={v}" for k, v in params.items()]


class MLflowSweepCallback(Callback):
    """Opens the parent run at the start of a multirun and closes it with a comparison at the end."""

    def __init__(self) -> None:
        self.client = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        track = config.tracking
        if not track.enabled:
            return
        uri = tracking.resolve_tracking_uri(track.uri, config.hydra.runtime.cwd)
        try:
            self.client = tracking.connect(uri)
        except tracking.TrackingError as error:
            # Hydra turns a callback's exceptions into warnings and would run every job anyway;
            # SystemExit is not an Exception, so it stops the sweep here, before any job.
            raise SystemExit(f"Error: {error}") from None
        self.experiment_id = tracking.ensure_experiment(self.client, track.experiment, uri)
        overrides = sweep_overrides(config)
        name = track.sweep_name or ("sweep: " + " ".join(overrides))[:250]
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"sweep": "parent", "hydra.sweep.dir": str(config.hydra.sweep.dir),
                  "hydra.overrides": tracking.mask_secrets(" ".join(overrides)) or "(none)"},
        )  # fmt: skip
        self.parent_run_id = run.info.run_id
        values = dict(o.partition("=")[::2] for o in overrides)  # a key given twice: the last wins, as in Hydra
        for key, value in values.items():
            self.client.log_param(self.parent_run_id, f"sweep.{key.lstrip('+~')}", tracking.mask_secrets(value)[:6000])
        os.environ[tracking.PARENT_RUN_ENV] = self.parent_run_id
        print(f"MLflow parent run {name!r} ({self.parent_run_id}) in {tracking.mask_uri(uri)}")
        atexit.register(self._finish, completed=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(completed=True)

    def _finish(self, completed: bool) -> None:
        """Compare the children, log it to the parent and end it (once, whichever path comes first)."""
        if self.parent_run_id is None:
            return
        parent, self.parent_run_id = self.parent_run_id, None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        children = tracking.search_child_runs(self.client, self.experiment_id, parent)
        children.sort(key=lambda run: int(run.data.tags.get("hydra.job.num", 0)))
        rows = [comparison_row(run) for run in children]
        varying = varying_keys([row["overrides"] for row in rows])
        any_error = any(row["error"] for row in rows)
        for row in rows:  # the config column: only what differs between the jobs
            row["overrides"] = " ".join(o for o in row["overrides"].split() if o.partition("=")[0] in varying)
            if not any_error:
                del row["error"]
        statuses = {row["status"] for row in rows}
        if completed and statuses <= {"FINISHED"}:
            status = "FINISHED"
        elif "KILLED" in statuses:
            status = "KILLED"
        else:
            status = "FAILED"
        try:
            if rows:
                _, markdown = tracking.log_table(self.client, parent, rows, "comparison")
                self.client.log_figure(parent, comparison_plot(rows), "comparison.png")
                print("\nSweep comparison (also logged to the parent run as comparison.csv/.md/.png):\n")
                print(markdown)
            finished = [r for r in rows if r["status"] == "FINISHED" and r.get("val_accuracy") is not None]
            self.client.log_metric(parent, "jobs", len(rows))
            self.client.log_metric(parent, "failed_jobs", sum(r["status"] != "FINISHED" for r in rows))
            if finished:
                self.client.log_metric(parent, "best_val_accuracy", max(r["val_accuracy"] for r in finished))
        finally:
            self.client.set_terminated(parent, status)


def varying_keys(overrides: list[str]) -> set[str]:
    """The override keys whose value differs between jobs (or that some jobs lack)."""
    parsed = [dict(o.partition("=")[::2] for o in line.split()) for line in overrides]
    keys = set().union(*parsed) if parsed else set()
    return {k for k in keys if len({p.get(k) for p in parsed}) > 1}


def comparison_row(run) -> dict[str, Any]:
    """One line of the sweep table: which config, how big, how accurate, how fast."""
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    row: dict[str, Any] = {
        "job": tags.get("hydra.job.num", ""),
        "run": run.info.run_name,
        "status": run.info.status,
        "overrides": tags.get("hydra.overrides", ""),
        "error": tags.get("error", "")[:120],
        "num_params": int(params["num_params"]) if "num_params" in params else None,
    }
    for name in COMPARED_METRICS:
        row[name] = metrics.get(name)
    return row


def comparison_plot(rows: list[dict[str, Any]]):
    """Validation accuracy against parameter count, one point per finished job."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["num_params"] and r.get("val_accuracy") is not None]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in points:
        axes.scatter(row["num_params"], row["val_accuracy"], s=40)
        axes.annotate(row["run"], (row["num_params"], row["val_accuracy"]), fontsize=8,
                      xytext=(4, 4), textcoords="offset points")  # fmt: skip
    axes.set(xscale="log", xlabel="parameters", ylabel="validation accuracy (last epoch)",
             title="Sweep: accuracy against model size")  # fmt: skip
    axes.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure
