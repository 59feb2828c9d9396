"""A Hydra sweep as one MLflow parent run with a child run per job, and a comparison at its end.

Registered in conf/config.yaml under ``hydra.callbacks``. When a multirun starts, the parent run
is created and its id handed to the jobs through the environment (which every launcher's worker
processes inherit: joblib's, submitit's local processes and SLURM jobs alike); each job's run
names it as parent. When the sweep ends, even by a failed job or Ctrl-C, the parent gets the
comparison table (CSV and markdown) and plot, and a final status.

With ``tracking.resume=true`` the same sweep (same name and overrides) reuses its latest parent
run: its children left RUNNING by a dead sweep are marked FAILED, and every job then skips a
config that already FINISHED or continues an interrupted one from its checkpoint (train.py).
"""

from __future__ import annotations

import atexit
import hashlib
import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from training import tracking

COMPARED_METRICS = ("accuracy", "val_accuracy", "best_val_accuracy", "val_loss", "train_images_per_sec")
RESUME_KEYS = ("tracking.resume", "trainer.resume_from")  # how a job was run, not what it ran


def sweep_overrides(config: DictConfig) -> list[str]:
    """What the sweep varies: its command-line overrides and the sweeper's configured params."""
    overrides = [o for o in config.hydra.overrides.task if o.partition("=")[0] not in RESUME_KEYS]
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    return overrides + [f"{k}={v}" for k, v in params.items()]


def swept(overrides: list[str]) -> list[str]:
    """The overrides that take several values (``pool.size=2,3``, ``range(..)``, ``choice(..)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra parsed these already; a name is not worth failing for
        return overrides
    return [text for text, override in zip(overrides, parsed) if override.is_sweep_override()]


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs Hydra's basic sweeper launches: the product of each swept override's number
    of values. None for other sweepers (Optuna decides as it goes) or what cannot be counted."""
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        size = 1
        for override in OverridesParser.create().parse_overrides(sweep_overrides(config)):
            if override.is_sweep_override():
                size *= sum(1 for _ in override.sweep_string_iterator())
    except Exception:  # noqa: BLE001 - e.g. glob() or interval(): not countable here
        return None
    return size


def sweep_key(name: str | None, overrides: list[str]) -> str:
    """What identifies a sweep across re-runs: its name and what it varies (order does not matter)."""
    text = "\n".join([name or "", *sorted(overrides)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class MLflowSweepCallback(Callback):
    """Opens the parent run at the start of a multirun and closes it with a comparison at the end."""

    def __init__(self) -> None:
        self.client = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        given = " ".join(config.hydra.overrides.task)
        if tracking.mask_secrets(given) != given:
            tracking.mask_stderr()  # Hydra prints a failing job's overrides there
        # Parallel workers (joblib) size their thread share by how many jobs run at once, which
        # is never more than the sweep has; the workers inherit this process's environment.
        size = sweep_size(config)
        if size:
            os.environ[tracking.SWEEP_JOBS_ENV] = str(size)
        else:
            os.environ.pop(tracking.SWEEP_JOBS_ENV, None)
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
        key = sweep_key(track.sweep_name, overrides)
        previous = self._latest_parent(key) if track.resume else None
        if previous is not None:
            self.parent_run_id, name = previous.info.run_id, previous.info.run_name
            self.client.update_run(self.parent_run_id, status="RUNNING")
            stale = self._mark_stale_children()
            print(f"MLflow parent run {name!r} ({self.parent_run_id}) resumed in {tracking.mask_uri(uri)}"
                  + (f"; {stale} interrupted run(s) marked FAILED" if stale else ""))  # fmt: skip
        else:
            # Named after what it varies: the constant overrides are in its params and every child's.
            varied = " ".join(swept(overrides) or overrides)
            name = track.sweep_name or tracking.mask_secrets(f"sweep: {varied}" if varied else "sweep")[:250]
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={"sweep": "parent", "sweep_key": key, "hydra.sweep.dir": str(config.hydra.sweep.dir),
                      "hydra.overrides": tracking.mask_secrets(" ".join(overrides)) or "(none)",
                      # the run page's description
                      "mlflow.note.content": tracking.mask_secrets(
                          f"Hydra multirun `python train.py -m {' '.join(overrides)}`: a child run per job; "
                          "comparison.md/.csv/.png in its artifacts once the sweep ends."
                      )},
            )  # fmt: skip
            self.parent_run_id = run.info.run_id
            values = dict(o.partition("=")[::2] for o in overrides)  # a key given twice: the last wins, as in Hydra
            for option, value in values.items():
                param = f"sweep.{option.lstrip('+~')}"
                self.client.log_param(self.parent_run_id, param, tracking.mask_secrets(value)[:6000])
            print(f"MLflow parent run {name!r} ({self.parent_run_id}) in {tracking.mask_uri(uri)}")
        os.environ[tracking.PARENT_RUN_ENV] = self.parent_run_id
        atexit.register(self._finish, completed=False)

    def _latest_parent(self, key: str):
        """The latest parent run of the sweep with this key, or None."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.sweep = 'parent' and tags.sweep_key = '{key}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        return runs[0] if runs else None

    def _mark_stale_children(self) -> int:
        """End as FAILED the children still RUNNING: the sweep that ran them is gone; returns how many."""
        stale = [r for r in tracking.search_child_runs(self.client, self.experiment_id, self.parent_run_id)
                 if r.info.status == "RUNNING"]  # fmt: skip
        for run in stale:
            self.client.set_tag(run.info.run_id, "error", "interrupted: its process ended (killed, or it lost "
                                "the tracking server) before it could record an end")  # fmt: skip
            self.client.set_terminated(run.info.run_id, "FAILED")
        return len(stale)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(completed=True)

    def _finish(self, completed: bool) -> None:
        """Compare the children, log it to the parent and end it (once, whichever path comes first)."""
        if self.parent_run_id is None:
            return
        parent, self.parent_run_id = self.parent_run_id, None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        children = latest_per_config(tracking.search_child_runs(self.client, self.experiment_id, parent))
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


def latest_per_config(runs: list) -> list:
    """One run per config (tag config_hash): its FINISHED run if any, else its latest attempt.

    A resumed sweep re-runs the failed configs; the comparison shows how each config ended.
    """
    chosen: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        key = run.data.tags.get("config_hash", run.info.run_id)
        if key not in chosen or chosen[key].info.status != "FINISHED" or run.info.status == "FINISHED":
            chosen[key] = run
    return list(chosen.values())


def varying_keys(overrides: list[str]) -> set[str]:
    """The override keys whose value differs between jobs (or that some jobs lack)."""
    parsed = [dict(o.partition("=")[::2] for o in line.split()) for line in overrides]
    keys = set().union(*parsed) - set(RESUME_KEYS) if parsed else set()
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
    """Two panels: each finished job's validation accuracy against its size, and its training speed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=(3, 2))
    points = [r for r in rows if r["num_params"] and r.get("val_accuracy") is not None]
    for row in points:
        left.scatter(row["num_params"], row["val_accuracy"], s=40)
    sizes = [r["num_params"] for r in points]
    if sizes and max(sizes) > 20 * min(sizes):  # log only across orders of magnitude (with vs without pooling)
        left.set_xscale("log")
        left.xaxis.set_minor_formatter(NullFormatter())  # minor labels like 2.11x10^3 pile up
    else:
        left.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    left.xaxis.set_major_formatter(FuncFormatter(_thousands))
    left.margins(x=0.15, y=0.15)
    left.autoscale_view()
    for row in points:  # each run's name beside its point, on the side with room for it
        point = (row["num_params"], row["val_accuracy"])
        right_half = left.transAxes.inverted().transform(left.transData.transform(point))[0] > 0.5
        left.annotate(row["run"], point, fontsize=8, xytext=(-4 if right_half else 4, 4), textcoords="offset points",
                      ha="right" if right_half else "left")  # fmt: skip
    left.set(xlabel="parameters", ylabel="validation accuracy (last epoch)", title="Accuracy against model size")
    left.grid(alpha=0.3)

    # Jobs by number, top to bottom as in the table; the number tells apart runs of the same name.
    timed = [r for r in rows if r.get("train_images_per_sec")]
    positions = range(len(timed))
    bars = right.barh(positions, [r["train_images_per_sec"] for r in timed], height=0.6, color="tab:gray")
    right.bar_label(bars, fmt="{:,.0f}", padding=3, fontsize=8)
    right.set_yticks(positions, [f"{r['job']}: {r['run']}" for r in timed], fontsize=8)
    right.invert_yaxis()
    right.xaxis.set_major_formatter(FuncFormatter(_thousands))
    right.margins(x=0.2)
    right.set(xlabel="training images / s", title="Training throughput")
    right.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure


def _thousands(value: float, _position=None) -> str:
    return f"{value:,.0f}"  # 2,111 rather than 2.111x10^3
