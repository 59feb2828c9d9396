"""Scale out and hold up: parallel sweeps, a shared PostgreSQL-backed server, submitit, resume.

Everything runs as real processes: joblib's loky workers, submitit's local jobs, PostgreSQL and
``mlflow server`` started by scripts/tracking_server.sh on loopback ports chosen free here, runs
killed mid-training and resumed. Every process a test starts is stopped by the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import train as train_module
from training import checkpoint as checkpoints
from training import tracking
from training.config import config_hash, validate
from training.loop import EpochMetrics

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SCRIPT = ROOT / "scripts" / "tracking_server.sh"
MLFLOW = Path(sys.executable).parent / "mlflow"
# Tiny jobs: a sweep's worth of runs in seconds; every job still records everything a run records.
TINY = [
    "data.image_size=24",
    "data.train_size=48",
    "data.val_size=32",
    "trainer.batch_size=16",
    "trainer.epochs=2",
    "trainer.profile_pool_steps=0",
]
RUN_ARTIFACTS = {"config/config.yaml", "config/overrides.txt", "model_summary.txt", "learning_curves.png"}
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_sec")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _env(**extra: str) -> dict[str, str]:
    """The test's environment less MLflow's and pytest's variables (MLflow checks sessions under pytest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _run(cwd: Path, *overrides: str, env: dict | None = None, timeout: float = 300, check: bool = True):
    """``python train.py ...`` in ``cwd`` (its launch directory)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


class Train:
    """``python train.py ...`` in the background, its output read line by line."""

    def __init__(self, cwd: Path, *overrides: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, env=env or _env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 240) -> None:
        deadline, seen = time.monotonic() + timeout, 0
        while seen < count:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "".join(self.output)[-3000:]) from None
            seen += bool(re.search(pattern, line))

    def finish(self, timeout: float = 180) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @property
    def text(self) -> str:
        return "".join(self.output)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs(client, experiment: str = "tritonpool") -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} was not created"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=1000)


def _parent_and_children(client) -> tuple:
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(runs) == len(children) + 1, "a run outside the sweep"
    return parents[0], children


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    paths = set()
    for item in client.list_artifacts(run_id, path):
        paths |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


def _assert_complete(client, run, epochs: int = 2) -> None:
    """FINISHED with every epoch's metrics (each step once), its params and artifacts, its model."""
    assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags.get("error"))
    for key in EPOCH_METRICS:
        assert _steps(client, run.info.run_id, key) == list(range(1, epochs + 1)), key
    assert "best_val_accuracy" in run.data.metrics
    assert {"pool.size", "num_params", "cpu_threads"} <= set(run.data.params)
    assert RUN_ARTIFACTS <= _artifact_paths(client, run.info.run_id)
    assert "model_uri" in run.data.tags and "config_hash" in run.data.tags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Pieces: thread shares, config digests, launcher presets, masking, checkpoints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, launcher, expected",
    [
        (None, {}, None),  # the sequential launcher: PyTorch's default
        (None, {"n_jobs": 2}, "cores // 2"),
        (None, {"n_jobs": -1}, 1),  # joblib's one job per core
        (None, {"n_jobs": 10**6}, 1),  # never zero, on any machine
        (None, {"cpus_per_task": 6}, 6),  # submitit: what the scheduler gave the job
        (3, {"n_jobs": 2}, 3),  # trainer.threads wins
    ],
)
def test_parallel_jobs_get_their_share_of_the_cores(requested, launcher, expected):
    cores = len(os.sched_getaffinity(0))
    if expected == "cores // 2":
        expected = max(1, cores // 2)
    assert train_module.cpu_threads(requested, OmegaConf.create(launcher)) == expected


@pytest.mark.parametrize(
    "task, params, sweeper, expected",
    [
        (["pool.size=2,3", "model=tinyvgg,strided,resnet", "trainer.epochs=2"], None, "BasicSweeper", 6),
        (["trainer.seed=range(0,4)"], {"pool.type": "max,avg"}, "BasicSweeper", 8),  # sweeper params count too
        (["trainer.epochs=2"], None, "BasicSweeper", 1),
        (["trainer.lr=interval(0.001,0.1)"], None, "OptunaSweeper", None),  # Optuna decides as it goes
    ],
)
def test_sweep_size_counts_the_jobs_of_a_basic_sweep(task, params, sweeper, expected):
    from training.sweep import sweep_size

    config = OmegaConf.create(
        {"hydra": {"overrides": {"task": task}, "sweeper": {"_target_": f"hydra.plugins.{sweeper}", "params": params}}}
    )
    assert sweep_size(config) == expected


@pytest.mark.parametrize("n_jobs", [-1, 8])
def test_a_sweep_smaller_than_the_pool_of_workers_gets_more_threads_per_job(n_jobs, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv(tracking.SWEEP_JOBS_ENV, "1")  # one job: it runs alone, on every core
    assert train_module.cpu_threads(None, OmegaConf.create({"n_jobs": n_jobs})) == cores
    monkeypatch.setenv(tracking.SWEEP_JOBS_ENV, "1000")  # more jobs than workers: the workers' share
    processes = n_jobs if n_jobs > 0 else cores
    assert train_module.cpu_threads(None, OmegaConf.create({"n_jobs": n_jobs})) == max(1, cores // processes)


def test_config_hash_names_what_a_run_computes_not_how_it_is_run():
    base = config_hash(validate(_compose()))
    same = [
        "tracking.uri=http://elsewhere:5000", "tracking.resume=true", "tracking.run_name=mine",
        "trainer.threads=3", "trainer.resume_from=/some/checkpoint.pt", "tracking.log_model=false",
        "data.cache_mib=0",
    ]  # fmt: skip
    for override in same:
        assert config_hash(validate(_compose(override))) == base, override
    for override in ["trainer.lr=0.01", "pool.size=3", "trainer.seed=1", "data.image_size=32"]:
        assert config_hash(validate(_compose(override))) != base, override


def test_slurm_preset_extends_submitit_and_documents_the_cluster_settings():
    launcher = _compose("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition is None and launcher.gpus_per_node == 1 and launcher.timeout_min == 120
    assert launcher.array_parallelism == 16 and launcher.cpus_per_task == 8
    assert train_module.cpu_threads(None, launcher) == 8
    text = (CONF / "hydra" / "launcher" / "slurm.yaml").read_text()
    for key in ("partition", "gpus_per_node", "timeout_min", "array_parallelism"):
        assert re.search(rf"^{key}: .+# ", text, re.MULTILINE), key


def test_credentials_are_masked_also_as_hydra_escapes_them():
    assert tracking.mask_secrets("tracking.uri=http://ann:pw1@host:5000/x") == "tracking.uri=http://ann:***@host:5000/x"
    hydra_log = r"#0 : pool.size=2 tracking.uri=http\://ann\:pw1@127.0.0.1\:5000"
    assert "pw1" not in tracking.mask_secrets(hydra_log) and r"ann\:***@127.0.0.1" in tracking.mask_secrets(hydra_log)
    assert tracking.mask_secrets("postgresql://mlflow:s3cr3t@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    plain = "sqlite:////tmp/mlflow.db and http://host:5000"
    assert tracking.mask_secrets(plain) == plain


def test_checkpoint_restores_model_optimizer_and_every_generator(tmp_path):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    shuffling = torch.Generator().manual_seed(3)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    history = [EpochMetrics(0.5, 0.75, 0.6, 0.7, 100.0, 200.0, 1.5)]
    checkpoints.save(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer, shuffling=shuffling,
                     history=history, run_id="abc", config_hash="0123")  # fmt: skip
    expected = (torch.rand(3), torch.randperm(10, generator=shuffling), model.weight.detach().clone())

    model.reset_parameters()
    torch.manual_seed(99)
    loaded = checkpoints.load(tmp_path)  # a folder means its checkpoint.pt
    checkpoints.restore(loaded, model=model, optimizer=optimizer, shuffling=shuffling)
    assert (loaded.epoch, loaded.run_id, loaded.config_hash, loaded.history) == (1, "abc", "0123", history)
    torch.testing.assert_close(torch.rand(3), expected[0], rtol=0, atol=0)
    assert torch.equal(torch.randperm(10, generator=shuffling), expected[1])
    assert torch.equal(model.weight, expected[2])
    assert optimizer.state_dict()["state"][0]["step"] == 1
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


# --------------------------------------------------------------------------------------------
# SQLite under parallel writers
# --------------------------------------------------------------------------------------------


# One process's first contact with a store: connect, the experiment, a run with a metric. Each
# process waits at a barrier (a file) after its imports, so that all reach the store together.
FIRST_USE = """
import sys, time
from pathlib import Path
from training import tracking
uri, folder, index = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(folder / f"ready-{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
client = tracking.connect(uri)
experiment_id = tracking.ensure_experiment(client, "tritonpool", uri)
run = client.create_run(experiment_id)
client.log_metric(run.info.run_id, "m", 1.0, step=1)
client.set_terminated(run.info.run_id)
"""


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["FINISHED", "FAILED"])
def test_a_store_locked_when_the_run_ends_still_ends_it(tmp_path, monkeypatch, outcome):
    """Parallel jobs share one SQLite file: a lock on the final write must be retried, not lost."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    real = MlflowClient.set_terminated
    calls = []

    def locked_once(self, run_id, status=None, *args, **kwargs):
        calls.append(status)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return real(self, run_id, status, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_terminated", locked_once)
    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.RunTracker(uri, "locks", "run")
    with contextlib.suppress(ValueError):
        with tracker:
            if outcome == "FAILED":
                raise ValueError("the job's own error")
    assert len(calls) >= 2  # the lock happened and was retried
    assert _client(uri).get_run(tracker.run_id).info.status == outcome
    import mlflow

    assert mlflow.active_run() is None  # and nothing is left on MLflow's active-run stack


def test_two_jobs_logging_the_same_dataset_at_once_both_record_it(tmp_path, monkeypatch):
    """Seen in CI against PostgreSQL: MLflow checks for the dataset, then inserts it, so the job
    that loses the race gets a unique-key violation; a retry finds the row and links to it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = {"name": "shapes", "train_size": 48}
    first = tracking.RunTracker(uri, "datasets", "first")
    with first:
        first.log_dataset(info, "training")
    real, calls = MlflowClient.log_inputs, []

    def lost_the_race(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException('BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value '
                                  'violates unique constraint "dataset_pk"')
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_inputs", lost_the_race)
    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)
    second = tracking.RunTracker(uri, "datasets", "second")
    with second:
        second.log_dataset(info, "training")
    client = _client(uri)
    digests = [{i.dataset.digest for i in client.get_run(t.run_id).inputs.dataset_inputs} for t in (first, second)]
    assert len(calls) == 2 and digests[0] == digests[1] and len(digests[0]) == 1
    assert client.get_run(second.run_id).info.status == "FINISHED"


def test_processes_starting_together_on_a_new_sqlite_store_all_succeed(tmp_path):
    """MLflow's schema migrations race on a new file (alembic_version exists, duplicate columns);
    tracking.connect serializes the first use, so every process gets a working store."""
    uri, barrier = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "barrier"
    barrier.mkdir()
    count = 6
    processes = [
        subprocess.Popen([sys.executable, "-c", FIRST_USE, uri, str(barrier), str(i)], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for i in range(count)
    ]
    try:
        deadline = time.monotonic() + 240
        while len(list(barrier.glob("ready-*"))) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        (barrier / "go").touch()
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [p.returncode for p in processes] == [0] * count, "\n".join(outputs)[-4000:]
    client = _client(uri)
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "tritonpool"]  # created once
    runs = _runs(client)
    assert len(runs) == count and all(r.info.status == "FINISHED" for r in runs)
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # parallel writers wait less


@pytest.mark.slow
def test_joblib_sweep_of_8_jobs_lands_whole_in_one_sqlite_store(tmp_path):
    result = _run(
        tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
        "pool.stride=1,2", "trainer.seed=0,1,2,3", *TINY,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "database is locked" not in output and "Traceback" not in output
    assert "Joblib.Parallel(n_jobs=4" in output  # really the parallel launcher

    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "tritonpool"]
    parent, children = _parent_and_children(client)
    assert len(children) == 8  # none lost, none twice
    assert sorted(int(c.data.tags["hydra.job.num"]) for c in children) == list(range(8))
    assert len({c.data.tags["config_hash"] for c in children}) == 8
    cores = len(os.sched_getaffinity(0))
    for child in children:
        _assert_complete(client, child)
        assert child.data.params["cpu_threads"] == str(max(1, cores // 4))  # its share: 4 jobs side by side
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 8
    assert parent.data.metrics["failed_jobs"] == 0
    assert {"comparison.csv", "comparison.md", "comparison.png"} <= _artifact_paths(client, parent.info.run_id)


# --------------------------------------------------------------------------------------------
# Resume: an interrupted run, a re-run sweep
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_run_continues_from_its_checkpoint_into_the_same_run(tmp_path):
    overrides = [*TINY, "trainer.epochs=4", "trainer.threads=1", "tracking.log_model=false"]
    reference = tmp_path / "reference"
    reference.mkdir()
    _run(reference, *overrides)  # the same run, never interrupted
    expected_client = _client(f"sqlite:///{reference / 'mlflow.db'}")
    (expected,) = _runs(expected_client)

    job = Train(tmp_path, *overrides)
    try:
        job.wait_for(r"^Epoch 2/4")  # epoch 1's checkpoint is on disk
    finally:
        job.kill()  # SIGKILL: no chance to record anything more
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (killed,) = _runs(client)
    assert killed.info.status == "RUNNING"  # its process died; a resume ends it
    recorded = _steps(client, killed.info.run_id, "val_accuracy")
    assert recorded and recorded == list(range(1, len(recorded) + 1))

    # Resume by run id: the run's checkpoint tag leads to its file.
    result = _run(tmp_path, *overrides, f"trainer.resume_from={killed.info.run_id}")
    assert re.search(r"Resuming after epoch [1-4]/4 from .*checkpoint\.pt", result.stdout)
    (resumed,) = _runs(client)  # no second run
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_from_epoch"] in {"1", "2", "3", "4"}
    for key in EPOCH_METRICS[:4]:  # every epoch once, and the numbers of the uninterrupted run
        history = sorted(client.get_metric_history(resumed.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3, 4], key
        reference_values = sorted(expected_client.get_metric_history(expected.info.run_id, key), key=lambda m: m.step)
        assert [m.value for m in history] == [m.value for m in reference_values], key
    assert resumed.data.metrics["best_val_accuracy"] == expected.data.metrics["best_val_accuracy"]
    assert Path(resumed.data.tags["checkpoint"]).is_file()  # the tag follows the state to its new folder


def test_resume_from_a_checkpoint_of_another_config_is_refused(tmp_path):
    settings = validate(_compose(*TINY, "tracking.enabled=false", "trainer.epochs=1"))
    train_module.train(settings, tracking.NullTracker(), checkpoint_path=tmp_path / "checkpoint.pt")
    result = _run(
        tmp_path, *TINY, "tracking.enabled=false", "trainer.lr=0.05",
        f"trainer.resume_from={tmp_path / 'checkpoint.pt'}", check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "that checkpoint belongs to a different configuration" in result.stderr
    assert "Epoch" not in result.stdout


@pytest.mark.slow
def test_resumed_sweep_skips_finished_configs_and_runs_the_rest_under_the_same_parent(tmp_path):
    sweep = ["-m", "pool.stride=1,2", "trainer.seed=0,1", *TINY, "trainer.epochs=4", "tracking.log_model=false"]
    first = Train(tmp_path, *sweep)
    try:
        first.wait_for(r"^Epoch 2/4", count=2)  # job 0 done, job 1 past its first epoch (checkpointed)
    finally:
        first.kill()
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, children = _parent_and_children(client)
    before = {c.data.tags["hydra.job.num"]: c for c in children}
    assert before["0"].info.status == "FINISHED" and before["1"].info.status == "RUNNING"
    assert set(before) <= {"0", "1"}

    result = _run(tmp_path, *sweep, "tracking.resume=true")
    assert f"({parent.info.run_id}) resumed" in result.stdout and "1 interrupted run(s) marked FAILED" in result.stdout
    assert result.stdout.count("Skipped: this config already FINISHED") == 1
    again, children = _parent_and_children(client)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert len(children) == 4  # the killed job went on in its own run: nothing twice
    by_job = {c.data.tags["hydra.job.num"]: c for c in children}
    assert by_job["0"].info.run_id == before["0"].info.run_id  # skipped, not re-trained
    assert by_job["1"].info.run_id == before["1"].info.run_id and "resumed_from_epoch" in by_job["1"].data.tags
    assert "error" not in by_job["1"].data.tags
    for child in children:
        assert child.info.status == "FINISHED"
        assert _steps(client, child.info.run_id, "val_accuracy") == [1, 2, 3, 4]
    assert again.data.metrics["jobs"] == 4 and again.data.metrics["failed_jobs"] == 0


@pytest.mark.slow
def test_resumed_optuna_search_gets_the_skipped_trials_results(tmp_path):
    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY, "trainer.epochs=1", "tracking.log_model=false"]
    _run(tmp_path, *search)
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, children = _parent_and_children(client)
    result = _run(tmp_path, *search, "tracking.resume=true")
    # The seeded sampler suggests the same trials, each already FINISHED: skipped, and Optuna is
    # told the recorded accuracy, so it suggests the same next trial and finds the same best.
    assert result.stdout.count("Skipped: this config already FINISHED") == 3
    again, after = _parent_and_children(client)
    assert again.info.run_id == parent.info.run_id and len(after) == 3
    assert again.data.metrics["best_val_accuracy"] == parent.data.metrics["best_val_accuracy"]


# --------------------------------------------------------------------------------------------
# The shared tracking server: PostgreSQL + mlflow server, through scripts/tracking_server.sh
# --------------------------------------------------------------------------------------------


def _postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here, or None."""
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"):
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed: apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no user postgres to run PostgreSQL as"
    if not MLFLOW.exists():
        return f"no mlflow command beside {sys.executable}"
    return None


needs_postgres = pytest.mark.skipif(_postgres_missing() is not None, reason=str(_postgres_missing()))


class TrackingServer:
    """PostgreSQL and mlflow server on free loopback ports, in a temporary folder, via the script."""

    def __init__(self, auth: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tritonpool-server-"))
        self.dir.chmod(0o711)  # started by root, PostgreSQL runs as postgres and must reach pgdata/
        self.port, self.db_password = _free_port(), secrets.token_urlsafe(18)
        self.env = _env(
            TRITONPOOL_SERVER_DIR=str(self.dir), TRITONPOOL_PG_PORT=str(_free_port()),
            TRITONPOOL_PORT=str(self.port), TRITONPOOL_WORKERS="2", TRITONPOOL_DB_PASSWORD=self.db_password,
            MLFLOW=str(MLFLOW),
        )  # fmt: skip
        if auth:
            self.admin_password = secrets.token_urlsafe(18)
            self.env.update(TRITONPOOL_AUTH="1", MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password)
        self.uri = f"http://127.0.0.1:{self.port}"

    def script(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, f"tracking_server.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        assert self.db_password not in result.stdout + result.stderr
        return result

    def start(self, part: str = "all") -> None:
        self.script("start", part)

    def stop(self, part: str = "all") -> None:
        self.script("stop", part)

    def close(self) -> None:
        """Stop everything, whatever state a test left it in, and remove the folder."""
        subprocess.run(["bash", str(SCRIPT), "stop"], env=self.env, capture_output=True, timeout=120)
        pid_file = self.dir / "mlflow.pid"
        left_running = False
        if pid_file.exists():  # the script failed to stop it: its whole process group
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
                left_running = True
            except ProcessLookupError:
                pass
        postmaster = self.dir / "pgdata" / "postmaster.pid"
        if postmaster.exists():
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGQUIT)  # immediate shutdown
        shutil.rmtree(self.dir, ignore_errors=True)
        # Checked after the clean-up, so that a failure here leaves nothing behind.
        assert not left_running, "scripts/tracking_server.sh stop left the mlflow server running"
        for port in (self.port, int(self.env["TRITONPOOL_PG_PORT"])):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"

    def __enter__(self) -> "TrackingServer":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture(scope="module")
def server():
    with TrackingServer() as running:
        yield running


def _assert_no_secret(secret: str, folder: Path, *texts: str) -> None:
    for text in texts:
        assert secret not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"{path} holds the secret"


@needs_postgres
@pytest.mark.slow
def test_parallel_sweep_lands_in_the_postgres_backed_server(server, tmp_path):
    result = _run(
        tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "pool.stride=1,2",
        "trainer.seed=0,1", *TINY, f"tracking.uri={server.uri}", "tracking.experiment=shared",
    )  # fmt: skip
    client = _client(server.uri)
    runs = _runs(client, "shared")
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    for child in children:
        _assert_complete(client, child)
    assert parent.info.status == "FINISHED"
    # Artifacts went through the server into its persistent folder; the runs are in PostgreSQL.
    assert len(list((server.dir / "artifacts").rglob("model_summary.txt"))) >= 4
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=int(server.env["TRITONPOOL_PG_PORT"]), dbname="mlflow",
                         user="mlflow", password=server.db_password) as db:  # fmt: skip
        ids = {row[0] for row in db.execute("SELECT run_uuid FROM runs")}
    assert {r.info.run_id for r in runs} <= ids
    # The database password appears nowhere: not in the run, its output, the server's logs or ps.
    _assert_no_secret(server.db_password, tmp_path, result.stdout, result.stderr)
    for log in (server.dir / "mlflow.log", server.dir / "pgdata" / "postgres.log"):
        assert server.db_password not in log.read_text(errors="replace")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):  # every process's command line
        with contextlib.suppress(OSError):
            assert server.db_password.encode() not in cmdline.read_bytes(), cmdline


@needs_postgres
@pytest.mark.slow
def test_submitit_local_jobs_log_to_the_server_as_children_of_the_sweep(server, tmp_path):
    _run(
        tmp_path, "-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10", "pool.stride=1,2", *TINY, "tracking.log_model=false",
        f"tracking.uri={server.uri}", "tracking.experiment=submitit",
    )  # fmt: skip
    client = _client(server.uri)
    runs = _runs(client, "submitit")
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and len(runs) == 3
    for child in children:
        assert child.info.status == "FINISHED"
        assert _steps(client, child.info.run_id, "val_accuracy") == [1, 2]
        assert child.data.params["cpu_threads"] == "1"  # the job's cpus_per_task
    assert list(tmp_path.glob("multirun/*/*/.submitit"))  # really submitit's jobs
    assert parent.info.status == "FINISHED"


@needs_postgres
@pytest.mark.slow
def test_lost_server_fails_the_run_clearly_and_it_resumes_once_the_server_is_back(server, tmp_path):
    overrides = [*TINY, "data.train_size=512", "trainer.epochs=12", "trainer.threads=1", "tracking.log_model=false",
                 f"tracking.uri={server.uri}", "tracking.experiment=lost"]  # fmt: skip
    job = Train(tmp_path, *overrides)
    try:
        job.wait_for(r"^Epoch 2/12 ")
        server.stop("mlflow")
        stopped = time.monotonic()
        assert job.finish(timeout=120) != 0
        waited = time.monotonic() - stopped
    finally:
        job.kill()
        server.start("mlflow")
    assert waited < 60, f"took {waited:.0f} s to give up"  # MLflow's short HTTP retries, then out
    assert f"lost the tracking server {server.uri} while logging" in job.text  # an epoch's metrics, mostly
    command = re.search(r"^  python train.py (.*trainer\.resume_from=(\S+checkpoint\.pt))$", job.text, re.MULTILINE)
    assert command, job.text[-3000:]
    assert "Traceback" not in job.text

    client = _client(server.uri)
    (run,) = _runs(client, "lost")
    assert run.info.status == "RUNNING"  # could not be ended while the server was down
    recorded = _steps(client, run.info.run_id, "val_accuracy")
    assert len(recorded) >= 2 and recorded == list(range(1, len(recorded) + 1))  # what was logged is intact
    saved = checkpoints.load(command.group(2))
    assert saved.run_id == run.info.run_id and saved.epoch >= len(recorded)

    # The command the message gave continues it: same run, every epoch once (the one whose
    # logging the loss cut off comes from the checkpoint), FINISHED.
    result = _run(tmp_path, *command.group(1).split())
    assert f"Resuming after epoch {saved.epoch}/12 " in result.stdout
    (resumed,) = _runs(client, "lost")
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert _steps(client, resumed.info.run_id, "val_accuracy") == list(range(1, 13))


@needs_postgres
@pytest.mark.slow
def test_basic_auth_server_and_credentials_never_leak(tmp_path, monkeypatch):
    import requests

    with TrackingServer(auth=True) as server:
        anonymous = requests.post(f"{server.uri}/api/2.0/mlflow/experiments/search", json={"max_results": 1})
        assert anonymous.status_code == 401
        password = "Alice-" + secrets.token_hex(8)  # Hydra's override grammar takes letters, digits, - and _
        created = requests.post(
            f"{server.uri}/api/2.0/mlflow/users/create", json={"username": "alice", "password": password},
            auth=("admin", server.admin_password),
        )  # fmt: skip
        assert created.ok, created.text

        # The recommended way: the password in the environment.
        env = _env(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=password)
        first = tmp_path / "env"
        first.mkdir()
        _run(first, *TINY, "trainer.epochs=1", "tracking.log_model=false", f"tracking.uri={server.uri}", env=env)
        # A wrong password fails before training, with a clear message.
        wrong = _run(first, *TINY, f"tracking.uri={server.uri}", check=False,
                     env=_env(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="nope"))  # fmt: skip
        assert wrong.returncode != 0 and "401" in wrong.stderr and "Epoch" not in wrong.stdout

        # In the URI, in a sweep (Hydra logs each job's overrides): it works, and the password is
        # written nowhere: not in the output, Hydra's logs and records, the runs or their artifacts.
        second = tmp_path / "uri"
        second.mkdir()
        uri = f"http://alice:{password}@127.0.0.1:{server.port}"
        result = _run(second, "-m", "pool.stride=1,2", *TINY, "trainer.epochs=1", "tracking.log_model=false",
                      f"tracking.uri={uri}")  # fmt: skip
        assert r"tracking.uri=http\://alice\:***@127.0.0.1" in result.stdout  # Hydra's own log line
        assert f"http://alice:***@127.0.0.1:{server.port}" in result.stdout
        _assert_no_secret(password, second, result.stdout, result.stderr)
        # A failing job: Hydra writes its overrides, tracking.uri included, straight to stderr.
        third = tmp_path / "failing"
        third.mkdir()
        failed = _run(third, "-m", "pool.stride=0", *TINY, f"tracking.uri={uri}", check=False)
        assert failed.returncode != 0 and "Error executing job with overrides" in failed.stderr
        assert "***@127.0.0.1" in failed.stderr and "pool.stride" in failed.stderr, failed.stderr[:3000]
        _assert_no_secret(password, third, failed.stdout, failed.stderr)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # this process reads the runs as admin
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        client = _client(server.uri)
        runs = _runs(client)
        runs = [r for r in runs if not r.info.run_name.startswith("sweep: pool.stride=0 ")]  # the failed sweep's
        assert len(runs) == 4  # the env run, the sweep's parent and its two children
        downloads = tmp_path / "downloads"
        for run in runs:
            assert run.info.status == "FINISHED"
            assert password not in str(run.data.params) + str(run.data.tags) + run.info.run_name
            client.download_artifacts(run.info.run_id, "", str(downloads / run.info.run_id))
        _assert_no_secret(password, downloads)
        assert "alice:***@" in (downloads / runs[-1].info.run_id / "config" / "config.yaml").read_text()


def test_a_credential_in_the_store_uri_masks_what_the_process_writes_to_stderr(monkeypatch):
    """An MLflow error's text (a traceback Hydra prints) can carry the URI: stderr masks it."""
    import io

    monkeypatch.setattr(tracking, "connect", lambda uri: None)
    monkeypatch.setattr(tracking, "ensure_experiment", lambda client, name, uri: "0")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    tracking.RunTracker("http://ann:s3cret-9@127.0.0.1:5000", "e", "r")
    tracking.RunTracker("http://bob:other-7@127.0.0.1:5000", "e", "r")  # wraps once, not twice
    assert isinstance(sys.stderr, tracking.MaskingStream)
    assert not isinstance(sys.stderr._stream, tracking.MaskingStream)
    sys.stderr.write("MlflowException: API request to http://ann:s3cret-9@127.0.0.1:5000/api failed\n")
    written = sys.stderr._stream.getvalue()
    assert "s3cret-9" not in written and "ann:***@127.0.0.1:5000" in written
