"""The one module that talks to MLflow: where runs are stored, what a run holds, how it ends.

Training code reports plain numbers and files through ``RunTracker``; ``NullTracker`` takes the
same calls and records nothing, so tests and benchmarks run the loop without MLflow or mocks.
MLflow itself is imported lazily: a run that does not track does not pay for it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"  # what `mlflow server` also uses, beside the database
PARENT_RUN_ENV = "TRITONPOOL_PARENT_RUN_ID"

# A failing tracking server should fail a run fast: MLflow's defaults retry for minutes.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable, unwritable, misconfigured)."""


# --------------------------------------------------------------------------------------------
# Where runs go
# --------------------------------------------------------------------------------------------


def resolve_tracking_uri(uri: str | None, base_dir: str | os.PathLike) -> str:
    """The store to record into: ``uri``, else $MLFLOW_TRACKING_URI, else ``<base_dir>/mlflow.db``.

    A relative SQLite path is made absolute against ``base_dir`` (the directory the command was
    started from), so every job of a sweep, whatever its Hydra output folder, writes to one store.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    base = Path(base_dir).resolve()
    if not uri:
        return f"sqlite:///{base / DEFAULT_DB_NAME}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        return f"sqlite:///{(base / path).resolve()}"
    if "://" not in uri:  # a bare path: a SQLite database file
        return f"sqlite:///{(base / uri).resolve()}"
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite database; a server decides itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / ARTIFACTS_DIR_NAME).as_uri()
    return None


_SECRET_QUERY = re.compile(r"((?:password|passwd|pwd|token|secret|key)=)[^&;]*", re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """``uri`` with any password or token replaced by ***, for params, tags, artifacts and logs."""
    if not uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return uri  # nothing secret (and urlunsplit would drop sqlite:////'s empty host)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_secrets(value: Any) -> Any:
    """Mask every URI-looking string with credentials inside a (nested) params value."""
    if isinstance(value, str):
        return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+", lambda m: mask_uri(m.group(0)), value)
    if isinstance(value, Mapping):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_secrets(v) for v in value)
    return value


def browse_command(uri: str) -> str:
    """The exact command that shows the runs of ``uri`` in the MLflow UI."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (
            f"mlflow ui --backend-store-uri {uri} --default-artifact-root {db.parent / ARTIFACTS_DIR_NAME}"
            if Path.cwd().resolve() != db.parent
            else "mlflow ui"
        )
    return f"open {mask_uri(uri)} in a browser (the tracking server's UI)"


def _mlflow():
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import mlflow

    return mlflow


def connect(uri: str):
    """An MlflowClient for ``uri``, after checking the store answers; else a clear TrackingError."""
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        directory = Path(uri[len("sqlite:///") :]).parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingError(
                f"cannot record runs in {uri}: directory {directory} does not exist or is not writable "
                "(set tracking.uri or MLFLOW_TRACKING_URI to a writable location)"
            )
    elif uri.startswith(("http://", "https://")):
        import requests

        health = uri.rstrip("/") + "/health"
        try:
            answer = requests.get(health, timeout=5)
            answer.raise_for_status()
        except requests.RequestException as error:
            raise TrackingError(
                f"the tracking server {mask_uri(uri)} is unreachable ({type(error).__name__}); start it "
                "(see scripts/tracking_server.sh) or point tracking.uri / MLFLOW_TRACKING_URI elsewhere"
            ) from None
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - any failure here means the store is unusable
        raise TrackingError(f"cannot use the tracking store {mask_uri(uri)}: {mask_uri(str(error))}") from None
    return client


def ensure_experiment(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created once even when parallel jobs race to create it."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} is deleted in {mask_uri(uri)}; restore it (mlflow experiments "
                "restore) or choose another tracking.experiment"
            )
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri))
    except MlflowException:  # another job created it between our lookup and our create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'pool': {'size': 2}} -> {'pool.size': 2}: MLflow params as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class NullTracker:
    """Takes a tracker's calls and records nothing."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_figure(self, figure, path: str) -> None: ...
    def log_file(self, path: str | os.PathLike, directory: str | None = None) -> None: ...
    def log_dataset(self, info: Mapping[str, Any], context: str) -> None: ...
    def log_model(self, model, example) -> str | None: ...


class RunTracker(NullTracker):
    """One MLflow run; ``with`` ends it FINISHED, KILLED (Ctrl-C) or FAILED (exception, traceback logged)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.uri = uri
        self.client = connect(uri)
        self.experiment_id = ensure_experiment(self.client, experiment, uri)
        self.run_name = run_name
        self._tags = dict(tags or {})
        self.parent_run_id = parent_run_id
        self.run_id = run_id  # set: continue that run (resume)
        self._run = None

    def __enter__(self) -> "RunTracker":
        mlflow = _mlflow()
        if self.run_id is None:
            self._run = mlflow.start_run(
                experiment_id=self.experiment_id,
                run_name=self.run_name,
                parent_run_id=self.parent_run_id,
                tags={k: str(v) for k, v in self._tags.items()},
            )
        else:
            self._run = mlflow.start_run(run_id=self.run_id)
        self.run_id = self._run.info.run_id
        return self

    def __exit__(self, kind, error, tb) -> bool:
        mlflow = _mlflow()
        if kind is None:
            mlflow.end_run("FINISHED")
            return False
        status = "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED"
        try:
            text = mask_secrets("".join(traceback.format_exception(kind, error, tb)))
            self.client.set_tag(self.run_id, "error", mask_secrets(f"{kind.__name__}: {error}")[:5000])
            self.client.log_text(self.run_id, text, "error/traceback.txt")
        finally:
            mlflow.end_run(status)
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = {k: _param_value(mask_secrets(v)) for k, v in params.items()}
        _mlflow().log_params(clean)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _mlflow().set_tags({k: mask_secrets(str(v))[:5000] for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_text(self, text: str, path: str) -> None:
        _mlflow().log_text(mask_secrets(text), path)

    def log_figure(self, figure, path: str) -> None:
        _mlflow().log_figure(figure, path)

    def log_file(self, path: str | os.PathLike, directory: str | None = None) -> None:
        _mlflow().log_artifact(str(path), directory)

    def log_dataset(self, info: Mapping[str, Any], context: str) -> None:
        """Record the dataset (name, size, source) with MLflow's dataset tracking."""
        mlflow = _mlflow()
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        source = CodeDatasetSource(tags={k: mask_secrets(str(v)) for k, v in info.items()})
        digest = str(abs(hash(json.dumps(info, sort_keys=True, default=str))) % 10**10)
        mlflow.log_input(MetaDataset(source=source, name=str(info.get("name", "dataset")), digest=digest), context=context)

    def log_model(self, model, example) -> str | None:
        """Log ``model`` with MLflow's PyTorch flavour (signature from ``example``); returns its URI.

        Pickled, so that it reloads as the same nn.Module with our pooling layers
        (``mlflow.pytorch.load_model(uri)``; add ``map_location="cpu"`` for a CUDA-trained model
        on a machine without a GPU).
        """
        mlflow = _mlflow()
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        was_training = model.training
        model.eval()
        with torch.no_grad():
            output = model(example)
        model.train(was_training)
        signature = infer_signature(example.cpu().numpy(), output.cpu().numpy())
        # We pickle on purpose (see above); MLflow warns about pickles on every call.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "triton"],
            signature=signature,
        )
        self.set_tags({"model_uri": info.model_uri})  # the run's link to its model, to reload it
        return info.model_uri


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def search_child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000
    )


def log_table(client, run_id: str, rows: Iterable[Mapping[str, Any]], stem: str) -> tuple[str, str]:
    """Log ``rows`` to ``run_id`` as ``<stem>.csv`` and ``<stem>.md``; returns both texts."""
    import csv
    import io

    rows = list(rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    csv_text = buffer.getvalue()
    markdown = markdown_table(rows, columns)
    client.log_text(run_id, csv_text, f"{stem}.csv")
    client.log_text(run_id, markdown, f"{stem}.md")
    return csv_text, markdown


def markdown_table(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
