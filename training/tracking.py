"""The one module that talks to MLflow: where runs are stored, what a run holds, how it ends.

Training code reports plain numbers and files through ``RunTracker``; ``NullTracker`` takes the
same calls and records nothing, so tests and benchmarks run the loop without MLflow or mocks.
MLflow itself is imported lazily: a run that does not track does not pay for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from hydra.experimental.callback import Callback

DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"  # what `mlflow server` also uses, beside the database
PARENT_RUN_ENV = "TRITONPOOL_PARENT_RUN_ID"
SWEEP_JOBS_ENV = "TRITONPOOL_SWEEP_JOBS"  # how many jobs a basic sweep launches (for thread shares)

# A failing tracking server should fail a run fast: MLflow's defaults retry for minutes.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


# SQLite waits up to MLflow's busy timeout (20 s) for a lock, except where waiting cannot help: a
# transaction that read and then wants to write after another process committed (MLflow's writes
# check the run first) gets "database is locked" at once. Retrying the whole call is the remedy.
LOCK_RETRIES = 4
# Errors that parallel jobs sharing one store cause and that a retry resolves: SQLite's write
# lock, and two jobs inserting the same row at once (both log the same dataset: MLflow checks
# for it, then inserts, so one insert loses; retried, it finds the row and links to it).
TRANSIENT_ERRORS = (
    "database is locked",
    "duplicate key value violates unique constraint",  # PostgreSQL
    "UNIQUE constraint failed",  # SQLite
)


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable, unwritable, misconfigured)."""


class ServerLostError(TrackingError):
    """The tracking server stopped answering during a run."""


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


# user:password@ in a URI, also as Hydra writes overrides in its logs (http\://user\:password@host)
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*\\*://[^\s/@:'\"\\]*\\*:)[^\s/@'\"]+@")


def mask_secrets(value: Any) -> Any:
    """Mask every URI-looking string with credentials inside a (nested) params value or a text."""
    if isinstance(value, str):
        value = re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+", lambda m: mask_uri(m.group(0)), value)
        return _USERINFO.sub(r"\1***@", value)
    if isinstance(value, Mapping):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_secrets(v) for v in value)
    return value


class MaskSecrets(logging.Filter):
    """A logging filter that masks credentials in URIs; conf/config.yaml puts it on Hydra's log handlers
    (Hydra logs every job's overrides, tracking.uri included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


class MaskingStream:
    """A text stream (sys.stderr) that masks credentials in URIs in what is written to it.

    Hydra writes a failing job's overrides straight to stderr ("Error executing job with
    overrides: [...]"), past any logging filter, and an MLflow error's text can hold the store's
    URI: training.sweep puts this in front of stderr when a sweep's overrides carry a credential,
    RunTracker when its store's URI does. Everything else goes to the wrapped stream.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_secrets(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def mask_stderr() -> None:
    """Put a MaskingStream in front of this process's stderr (once)."""
    if not isinstance(sys.stderr, MaskingStream):
        sys.stderr = MaskingStream(sys.stderr)


class MaskSecretsCallback(Callback):
    """A Hydra callback (conf/config.yaml) that masks credentials in the config records Hydra keeps
    (<output dir>/.hydra/*.yaml, a sweep's multirun.yaml) as soon as each job starts."""

    def on_job_start(self, config, **kwargs: Any) -> None:
        hydra = config.hydra
        records = []
        if hydra.output_subdir is not None:
            records += (Path(hydra.runtime.output_dir) / str(hydra.output_subdir)).glob("*.yaml")
        if hydra.mode.name == "MULTIRUN":
            records.append(Path(str(hydra.sweep.dir)) / "multirun.yaml")
        for path in records:
            if path.is_file() and (text := path.read_text()) != (masked := mask_secrets(text)):
                temporary = path.with_name(f".{path.name}.{os.getpid()}")
                temporary.write_text(masked)
                os.replace(temporary, path)  # parallel jobs may mask multirun.yaml at the same time


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

    if mask_uri(uri) != uri:  # MLflow prints "View run ... at: <uri>" verbatim; we print it masked
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
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
    try:
        with _first_use_lock(uri):
            client = MlflowClient(tracking_uri=uri)  # opens the store: a new SQLite file gets its tables here
            client.search_experiments(max_results=1)
            if uri.startswith("sqlite:///"):
                _write_ahead_log(Path(uri[len("sqlite:///") :]))
    except Exception as error:  # noqa: BLE001 - any failure here means the store is unusable
        raise TrackingError(f"cannot use the tracking store {mask_uri(uri)}: {mask_secrets(str(error))}") from None
    return client


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """Serialize the first use of a SQLite store across processes.

    MLflow creates a new database's tables with alembic migrations, which are not safe to run
    from several processes at once: parallel jobs starting on a fresh ``mlflow.db`` fail with
    "table alembic_version already exists", "duplicate column name" and the like, and can leave
    a half-migrated file. An exclusive lock on the database's directory (flock: no extra file,
    released by the kernel if the process dies) lets one process migrate while the others wait.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; a sweep's parent still initializes the store first
        fcntl = None
    if fcntl is None or not uri.startswith("sqlite:///"):
        yield
        return
    descriptor = os.open(Path(uri[len("sqlite:///") :]).parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _write_ahead_log(database: Path) -> None:
    """Switch a SQLite store to write-ahead logging, once (the mode is kept in the file).

    Parallel jobs write to one file: in WAL mode a commit costs one sync instead of several and
    readers never block writers, which halves the time 8 concurrent writers take here. The switch
    needs the file to itself; when another process has it open, the next connect tries again.
    """
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass  # an optimization only


def server_answers(uri: str, timeout: float = 5) -> bool:
    """Whether the tracking server at ``uri`` answers its health check."""
    import requests

    try:
        return requests.get(uri.rstrip("/") + "/health", timeout=timeout).ok
    except requests.RequestException:
        return False


def ensure_experiment(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created once even when parallel jobs race to create it."""
    from mlflow.exceptions import MlflowException

    with _first_use_lock(uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_root(uri))
            except MlflowException:  # another process (on a server: another machine) created it first
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment {name!r} is deleted in {mask_uri(uri)}; restore it (mlflow experiments "
            "restore) or choose another tracking.experiment"
        )
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
    continued = False  # True: this run was reopened to continue (resume), its params are recorded

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, kind, error, tb) -> bool:
        return False

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def recorded_steps(self, key: str) -> set[int]: return set()
    def log_text(self, text: str, path: str) -> None: ...
    def log_figure(self, figure, path: str) -> None: ...
    def log_file(self, path: str | os.PathLike, directory: str | None = None) -> None: ...
    def log_dataset(self, info: Mapping[str, Any], context: str) -> None: ...
    def log_model(self, model, example) -> str | None: ...
    def finished_twin(self, config_hash: str): return None
    def interrupted_twin(self, config_hash: str): return None

    def checkpoint_of(self, run_id: str) -> str:
        raise TrackingError(f"trainer.resume_from={run_id} is no checkpoint file (a run id needs tracking.enabled=true)")


class RunTracker(NullTracker):
    """One MLflow run; ``with`` ends it FINISHED, KILLED (Ctrl-C) or FAILED (exception, traceback logged).

    With ``run_id`` (or ``run_id`` set before ``with``), the run is reopened and continued: that
    is how a resumed run keeps one record. Every call goes through ``_call``: a transient SQLite
    lock or insert race is retried, and a tracking server that stops answering (after MLflow's
    own short HTTP retries, see HTTP_RETRY_DEFAULTS) becomes a ServerLostError that says what to do.
    """

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
        if mask_uri(uri) != uri:
            # A credential in the store's URI could reach stderr inside an MLflow error's text
            # (a traceback Hydra prints, a warning): mask what this process writes there.
            mask_stderr()
        self.client = connect(uri)
        self.experiment_id = ensure_experiment(self.client, experiment, uri)
        self.run_name = run_name
        self._tags = {k: mask_secrets(str(v))[:5000] for k, v in (tags or {}).items()}
        self.parent_run_id = parent_run_id
        self.run_id = run_id  # set: continue that run (resume)
        self._run = None

    def __enter__(self) -> "RunTracker":
        mlflow = _mlflow()
        if self.run_id is None:
            self._run = self._call("starting the run", mlflow.start_run,
                experiment_id=self.experiment_id, run_name=self.run_name,
                parent_run_id=self.parent_run_id, tags=self._tags,
            )  # fmt: skip
        else:
            self._reopen()
        self.run_id = self._run.info.run_id
        return self

    def _reopen(self) -> None:
        # One retried call per step: start_run puts the run on MLflow's active-run stack, so
        # retrying it together with what follows would find it "already active".
        mlflow = _mlflow()
        self._run = self._call("reopening the run", mlflow.start_run, run_id=self.run_id)  # RUNNING again
        self.continued = True
        self.run_name = self._run.info.run_name
        self._call("tagging the run", mlflow.set_tags, self._tags)  # this attempt's job number, versions
        if "error" in self._run.data.tags:  # an earlier attempt's failure; its traceback artifact stays
            self._call("clearing the earlier error", self.client.delete_tag, self.run_id, "error")

    def _end(self, status: str) -> None:
        """Record the run's end (retried), then take it off MLflow's active-run stack.

        Not mlflow.end_run alone: it pops the run off the stack before it writes the status, so
        a retry after a transient lock would find no run to end and the run would stay RUNNING.
        """
        self._call("ending the run", self.client.set_terminated, self.run_id, status)
        mlflow = _mlflow()
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            try:
                mlflow.end_run(status)  # pops it; writes the same status once more
            except Exception:  # noqa: BLE001 - the status is already recorded
                pass

    def __exit__(self, kind, error, tb) -> bool:
        if kind is None:
            self._end("FINISHED")
            return False
        status = "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED"
        try:
            if not isinstance(error, ServerLostError):  # nothing reaches a lost server
                text = mask_secrets("".join(traceback.format_exception(kind, error, tb)))
                self.client.set_tag(self.run_id, "error", mask_secrets(f"{kind.__name__}: {error}")[:5000])
                self.client.log_text(self.run_id, text, "error/traceback.txt")
        except Exception as failure:  # noqa: BLE001 - the run's own error matters more
            print(f"warning: could not record the error in run {self.run_id}: {mask_secrets(str(failure))[:300]}")
        finally:
            try:
                self._end(status)  # one more try: a lost server may be back
            except Exception:  # noqa: BLE001 - the run's own error matters more
                print(
                    f"warning: could not mark run {self.run_id} {status} in {mask_uri(self.uri)}; it shows "
                    "RUNNING there until it is resumed (trainer.resume_from, or tracking.resume=true for a sweep)"
                )
        return False

    def _call(self, what: str, function, *args, **kwargs):
        """``function(*args, **kwargs)``, retried on TRANSIENT_ERRORS; a lost server explained."""
        for attempt in range(LOCK_RETRIES):
            try:
                return function(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - sorted below
                text = str(error)
                if any(marker in text for marker in TRANSIENT_ERRORS) and attempt + 1 < LOCK_RETRIES:
                    time.sleep(0.5 * 2**attempt)
                    continue
                if self.uri.startswith(("http://", "https://")) and not server_answers(self.uri):
                    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
                    raise ServerLostError(
                        f"lost the tracking server {mask_uri(self.uri)} while {what} (no answer after "
                        f"{retries} retries, MLFLOW_HTTP_REQUEST_MAX_RETRIES); what run {self.run_id} "
                        "recorded before stays intact there, and it shows RUNNING until it is continued. "
                        "Once the server is back, continue it from its last checkpoint with "
                        "trainer.resume_from (a sweep: re-run it with tracking.resume=true)"
                    ) from None
                if mask_secrets(text) != text:  # never print a credential in a traceback
                    raise TrackingError(mask_secrets(text)) from None
                raise

    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = {k: _param_value(mask_secrets(v)) for k, v in params.items()}
        self._call("logging params", _mlflow().log_params, clean)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        clean = {k: mask_secrets(str(v))[:5000] for k, v in tags.items()}
        self._call("setting tags", _mlflow().set_tags, clean)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._call(f"logging the metrics of step {step}", _mlflow().log_metrics, values, step=step)

    def recorded_steps(self, key: str) -> set[int]:
        """The steps at which metric ``key`` is recorded in this run."""
        history = self._call(f"reading metric {key}", self.client.get_metric_history, self.run_id, key)
        return {m.step for m in history}

    def log_text(self, text: str, path: str) -> None:
        self._call(f"logging {path}", _mlflow().log_text, mask_secrets(text), path)

    def log_figure(self, figure, path: str) -> None:
        self._call(f"logging {path}", _mlflow().log_figure, figure, path)

    def log_file(self, path: str | os.PathLike, directory: str | None = None) -> None:
        self._call(f"logging {path}", _mlflow().log_artifact, str(path), directory)

    def log_dataset(self, info: Mapping[str, Any], context: str) -> None:
        """Record the dataset (name, size, source) with MLflow's dataset tracking."""
        mlflow = _mlflow()
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        source = CodeDatasetSource(tags={k: mask_secrets(str(v)) for k, v in info.items()})
        # Stable across processes (Python's hash() of a str is not), so one dataset keeps one digest.
        digest = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:10]
        dataset = MetaDataset(source=source, name=str(info.get("name", "dataset")), digest=digest)
        self._call("logging the dataset", mlflow.log_input, dataset, context=context)

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
        info = self._call("logging the model", mlflow.pytorch.log_model,
            model, name="model", serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "triton"], signature=signature,
        )  # fmt: skip
        self.set_tags({"model_uri": info.model_uri})  # the run's link to its model, to reload it
        return info.model_uri

    # -- earlier runs of the same config (resume) ---------------------------------------------

    def finished_twin(self, config_hash: str):
        """The latest FINISHED run of an identical config in this experiment, or None."""
        runs = self._call("looking for a finished run of this config", self.client.search_runs,
            [self.experiment_id],
            filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        return runs[0] if runs else None

    def interrupted_twin(self, config_hash: str):
        """The latest FAILED or KILLED run of this config under the same parent whose checkpoint is still there.

        RUNNING runs are left alone: one may be training right now elsewhere. A resumed sweep
        first marks its own stale RUNNING children FAILED (training.sweep), which brings them here.
        """
        runs = self._call("looking for an interrupted run of this config", self.client.search_runs,
            [self.experiment_id],
            filter_string=f"tags.config_hash = '{config_hash}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=100,
        )  # fmt: skip
        for run in runs:
            same_parent = run.data.tags.get("mlflow.parentRunId") == self.parent_run_id
            checkpoint = run.data.tags.get("checkpoint")
            if same_parent and run.info.status in ("FAILED", "KILLED") and checkpoint and Path(checkpoint).is_file():
                return run
        return None

    def checkpoint_of(self, run_id: str) -> str:
        """The checkpoint file recorded by run ``run_id`` (its ``checkpoint`` tag)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(
                f"trainer.resume_from={run_id} is neither a checkpoint file nor a run in {mask_uri(self.uri)}"
            ) from None
        if "checkpoint" not in run.data.tags:
            raise TrackingError(f"run {run_id} recorded no checkpoint to resume from")
        return run.data.tags["checkpoint"]


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
