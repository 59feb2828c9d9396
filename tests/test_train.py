"""train.py, conf/ and MLflow tracking: composition, validation, real runs and sweeps, failures."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import train as train_module
from training import tracking
from training.config import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# A few batches of tiny images: each subprocess run takes seconds, not minutes.
TINY = [
    "data.image_size=24",
    "data.train_size=64",
    "data.val_size=32",
    "trainer.batch_size=16",
    "trainer.epochs=2",
    "trainer.profile_pool_steps=2",
]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _run(tmp_path: Path, *overrides: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """``python train.py`` in ``tmp_path`` (its launch directory), recording into tmp_path/mlflow.db."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    env["PYTHONUNBUFFERED"] = "1"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    result.elapsed = time.perf_counter() - start  # seconds, the whole command
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _runs(client, experiment: str = "tritonpool"):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} was not created"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=100)


# --------------------------------------------------------------------------------------------
# Configuration: every option composes, invalid values are rejected by name
# --------------------------------------------------------------------------------------------

GROUP_OPTIONS = {
    "model": ["tinyvgg", "strided", "resnet"],
    "pool": ["max", "avg", "none"],
    "data": ["shapes", "imagefolder", "torchvision"],
    "trainer": ["default"],
    "tracking": ["default"],
    "experiment": ["seed_pooling"],
    "hparams_search": ["optuna"],
}


@pytest.mark.parametrize("group, option", [(g, o) for g, options in GROUP_OPTIONS.items() for o in options])
def test_every_config_option_composes_and_validates(group, option):
    extra = ["data.root=/some/folder"] if option == "imagefolder" else []
    cfg = _compose(f"{group}={option}", *extra)
    settings = validate(cfg)
    if group in ("model", "pool"):
        assert settings[group]["name" if group == "model" else "type"] == option
    if option == "seed_pooling":
        assert settings["data"]["image_size"] == 224 and settings["trainer"]["epochs"] == 4
        assert settings["trainer"]["batch_size"] == 32 and settings["trainer"]["optimizer"] == "adam"
        assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params.pool == "max,none"
    if option == "optuna":
        assert cfg.hydra.sweeper.direction == "maximize"
        assert set(cfg.hydra.sweeper.params) == {"pool.size", "pool.stride", "trainer.lr"}


def test_every_default_carries_a_comment():
    for path in CONF.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            is_value = re.match(r"^[\w.]+:\s*\S", stripped) and not stripped.startswith(("_target_", "#"))
            if is_value and "@package" not in stripped:
                assert "#" in line, f"{path.relative_to(ROOT)}: default without a comment: {line!r}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pool.size=0"], "pool.size must be an int >= 1"),
        (["pool.padding=middle"], "pool.padding must be an int >= 0, a pair [height, width] of them, 'valid' or 'same'"),
        (["pool.padding=2"], "pool.padding must be at most pool.size // 2"),
        (["pool.stride=[1, 2, 3]"], "pool.stride must be an int >= 1 or a pair"),
        (["pool=avg", "pool.dilation=2"], "pool.dilation must be 1 for pool.type=avg"),
        (["pool.padding=same", "pool.ceil_mode=true"], "pool.ceil_mode must be false"),
        (["trainer.lr=-1"], "trainer.lr must be > 0"),
        (["trainer.epochs=0"], "trainer.epochs must be an int >= 1"),
        (["trainer.momentum=1.5"], "trainer.momentum must be in [0, 1)"),
        (["data.in_channels=2"], "data.in_channels must be null"),
        (["data.cache_mib=-1"], "data.cache_mib must be an int >= 0"),
        (["data=imagefolder", "data.root=null"], "data.root must be the folder holding the imagefolder files"),
        (["model.width=0"], "model.width must be an int >= 1"),
        (["model=resnet", "model.widths=[]"], "model.widths must be a non-empty list"),
    ],
)
def test_out_of_range_values_are_rejected_by_name(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(_compose(*overrides))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=vgg16", "Could not find 'model/vgg16'"),
        ("pool.type=median", "Invalid value 'median', expected one of [max, avg, none]"),
        ("pool.backend=cudnn", "expected one of [auto, triton, torch]"),
        ("trainer.optimizer=lbfgs", "expected one of [adam, adamw, sgd]"),
        ("trainer.lr=fast", "trainer.lr"),
        ("trainer.epochs=2.5", "trainer.epochs"),
        ("pool.sizee=2", "sizee"),
    ],
)
def test_typos_and_wrong_types_are_rejected_at_composition(override, message):
    with pytest.raises(Exception) as info:
        _compose(override)
    text = str(info.value) + str(getattr(info.value, "__cause__", ""))
    assert message in text


def test_invalid_override_stops_train_py_before_any_work(tmp_path):
    result = _run(tmp_path, "pool.size=0", check=False, timeout=120)
    assert result.returncode != 0
    assert "pool.size must be an int >= 1" in result.stderr
    assert "Epoch" not in result.stdout
    assert not (tmp_path / "mlflow.db").exists()  # nothing recorded for a run that never started


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    result = _run(tmp_path, f"tracking.uri=http://user:secret@127.0.0.1:{port}", check=False, timeout=120)
    assert result.returncode != 0
    assert f"the tracking server http://user:***@127.0.0.1:{port} is unreachable" in result.stderr
    assert "secret" not in result.stdout + result.stderr
    assert "Epoch" not in result.stdout
    assert time.monotonic() - start < 60


# --------------------------------------------------------------------------------------------
# A real run
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_records_params_metrics_artifacts_and_model(tmp_path):
    result = _run(tmp_path, *TINY)
    lines = result.stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == 2
    assert re.fullmatch(
        r"Epoch 1/2 - 4/4 - \d+s - loss: \d\.\d{4} - accuracy: \d\.\d{4} - val_loss: \d\.\d{4} - val_accuracy: \d\.\d{4}",
        epoch_lines[0],
    ), epoch_lines[0]
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in result.stdout
    assert "browse: mlflow ui" in result.stdout

    client = _client(tmp_path)
    (run,) = _runs(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tinyvgg-max-k2-s2"
    params = run.data.params
    assert params["pool.size"] == "2" and params["model.name"] == "tinyvgg" and params["pool.type"] == "max"
    assert params["trainer.lr"] == str(_compose().trainer.lr) and params["data.image_size"] == "24"
    assert int(params["num_params"]) > 0
    assert params["pool_backend"] == "torch"  # auto on CPU
    assert params["device"] == "cpu"
    assert not any(k.startswith("hydra") for k in params)

    tags = run.data.tags
    assert tags["hydra.job.name"] == "train"
    assert "data.image_size=24" in tags["hydra.overrides"]
    assert tags["torch_version"] == torch.__version__ and tags["triton_version"]
    assert "cuda_version" in tags
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"])
    assert (tags["model"], tags["pool"], tags["dataset"]) == ("tinyvgg", "max", "shapes")  # to filter by
    assert tags["mlflow.note.content"].startswith("tinyvgg with max pooling, window 2 stride 2 on shapes 24x24: 2 epochs")

    for name in ["loss", "accuracy", "val_loss", "val_accuracy", "train_images_per_sec", "val_images_per_sec", "epoch_time_sec"]:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
        assert all(m.value >= 0 for m in history), name
    speed = run.data.metrics["train_images_per_sec"]
    assert speed == round(speed, 1)  # rounded: the UI's column shows 1010.9, not 1010.92155...
    assert 0 < run.data.metrics["startup_sec"] < result.elapsed  # the process's start to its first step
    assert 0 < run.data.metrics["pool_time_share"] < 1
    assert run.data.metrics["pool_time_ms_per_step"] > 0

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "learning_curves.png", "model_summary.txt"} <= artifacts
    config_files = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert config_files == {"config/config.yaml", "config/overrides.txt"}
    summary = client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp_path))
    assert "Total params" in Path(summary).read_text()
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts live beside the database

    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "shapes"

    # The logged model reloads and scores the validation set as the run did.
    import mlflow.pytorch

    import data

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pytorch.load_model(run.data.tags["model_uri"])
    _, val_set, _ = data.build_datasets("shapes", image_size=24, train_size=64, val_size=32, seed=0)
    images = torch.stack([val_set[i][0] for i in range(len(val_set))])
    labels = torch.tensor([val_set[i][1] for i in range(len(val_set))])
    with torch.no_grad():
        predictions = (model(images.contiguous(memory_format=torch.channels_last)).squeeze(1) > 0).long()
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy == pytest.approx(run.data.metrics["val_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_same_seed_gives_same_metrics(tmp_path):
    for _ in range(2):
        _run(tmp_path, *TINY, "tracking.log_model=false", "trainer.profile_pool_steps=0")
    client = _client(tmp_path)
    first, second = _runs(client)
    for name in ["loss", "accuracy", "val_loss", "val_accuracy"]:
        a = [m.value for m in client.get_metric_history(first.info.run_id, name)]
        b = [m.value for m in client.get_metric_history(second.info.run_id, name)]
        assert a == b, name
    # the same dataset keeps one digest across processes, so MLflow shows it as one dataset
    digests = [run.inputs.dataset_inputs[0].dataset.digest for run in (first, second)]
    assert digests[0] == digests[1]


def test_triton_and_torch_backends_train_identically():
    """The same seed gives the same losses whichever kernel pools (ours through the interpreter)."""
    histories = {}
    for backend in ("triton", "torch"):
        cfg = _compose(*TINY, "data.train_size=32", "data.val_size=16", f"pool.backend={backend}")
        settings = validate(cfg)
        histories[backend] = train_module.train(settings, tracking.NullTracker())
    for ours, theirs in zip(histories["triton"], histories["torch"]):
        assert (ours.loss, ours.accuracy, ours.val_loss, ours.val_accuracy) == (
            theirs.loss, theirs.accuracy, theirs.val_loss, theirs.val_accuracy,
        )  # fmt: skip


@pytest.fixture
def built_datasets(monkeypatch):
    """Every (train, val, info) that train.py's data.build_datasets returns, in order."""
    import data

    built, build = [], data.build_datasets

    def build_datasets(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(data, "build_datasets", build_datasets)
    return built


def test_images_kept_in_memory_train_identically(built_datasets):
    """data.cache_mib keeps the rendered images for later epochs: the same bits, so the same run."""
    from data.cache import CachedDataset

    histories = {}
    for cache_mib in (0, 1):  # 1 MiB holds both splits (96 images of 24x24)
        settings = validate(_compose(*TINY, "trainer.epochs=3", f"data.cache_mib={cache_mib}"))
        histories[cache_mib] = train_module.train(settings, tracking.NullTracker())
    (plain_train, plain_val, _), (train_set, val_set, _) = built_datasets
    assert not isinstance(plain_train, CachedDataset) and not isinstance(plain_val, CachedDataset)
    assert (train_set.kept, val_set.kept) == (64, 32)
    for plain, kept in zip(*histories.values(), strict=True):
        assert (plain.loss, plain.accuracy, plain.val_loss, plain.val_accuracy) == (
            kept.loss, kept.accuracy, kept.val_loss, kept.val_accuracy,
        )  # fmt: skip


def test_kept_images_go_when_the_run_ends(built_datasets):
    """A sequential sweep runs its jobs in one process: no job may hold on to an earlier one's images."""
    import gc
    import weakref

    for _ in range(2):
        train_module.train(validate(_compose(*TINY, "data.cache_mib=1")), tracking.NullTracker())
    references = [weakref.ref(split) for train_set, val_set, _ in built_datasets for split in (train_set, val_set)]
    built_datasets.clear()  # the fixture's own references
    gc.collect()
    assert len(references) == 4 and all(ref() is None for ref in references)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    cfg = _compose(*TINY, "trainer.lr=1e30", "trainer.optimizer=sgd", "trainer.momentum=0")
    with pytest.raises(RuntimeError, match=r"the training loss became non-finite \(nan or inf\) at epoch \d+, step \d+"):
        train_module.train(validate(cfg), tracking.NullTracker())


def test_non_finite_loss_read_late_still_names_its_first_step():
    """On CUDA the loss is read every few steps (no GPU sync per step); the step named stays the first bad one."""
    import data
    import models
    from training.loop import NonFiniteLossError, train_epoch

    train_set, _, _ = data.build_datasets("shapes", image_size=24, train_size=64, val_size=8)
    steps = {}
    for check_every in (1, 100):
        torch.manual_seed(0)
        model = models.build_model("tinyvgg", pool=models.PoolConfig(), image_size=24)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
        loader = data.make_loader(train_set, batch_size=4, seed=0)
        with pytest.raises(NonFiniteLossError) as error:
            train_epoch(model, loader, optimizer, torch.nn.BCEWithLogitsLoss(), torch.device("cpu"), epoch=1,
                        check_every=check_every)  # fmt: skip
        steps[check_every] = int(re.search(r"step (\d+)", str(error.value)).group(1))
    assert 1 < steps[1] < len(loader)  # the first steps were finite, and it stopped before the end
    assert steps[100] == steps[1]


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("limit", [None, 2])
def test_validation_loss_and_accuracy_are_the_image_weighted_means(num_classes, limit):
    """evaluate() reads its losses in groups (no device wait per step); the result is the mean a
    float64 sum over every image gives, and the accuracy the share of right predictions."""
    import data
    import models
    from training.loop import evaluate, loss_function

    _, val_set, _ = data.build_datasets("shapes", image_size=24, num_classes=num_classes, train_size=8, val_size=80)
    torch.manual_seed(0)
    model = models.build_model("tinyvgg", pool=models.PoolConfig(), image_size=24, num_classes=num_classes).eval()
    criterion = loss_function(num_classes)
    loader = data.make_loader(val_set, batch_size=3)  # 27 batches, the last of 2 images: read as 25 and 2
    loss, accuracy, seen, _ = evaluate(model, loader, criterion, torch.device("cpu"), limit=limit)
    total, right, count = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in list(loader)[:limit]:
            logits = model(images)
            if num_classes == 2:
                batch_loss, hits = criterion(logits.squeeze(1), labels.float()), (logits.squeeze(1) > 0).long() == labels
            else:
                batch_loss, hits = criterion(logits, labels), logits.argmax(1) == labels
            total, right, count = total + batch_loss.item() * len(labels), right + int(hits.sum()), count + len(labels)
    assert (loss, accuracy, seen) == (total / count, right / count, count)


def test_a_non_finite_validation_loss_is_recorded_not_raised():
    from torch import nn

    from training.loop import evaluate

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    nn.init.constant_(model[1].weight, float("nan"))
    loader = [(torch.ones(2, 1, 2, 2), torch.tensor([0, 1]))]
    loss, accuracy, seen, _ = evaluate(model, loader, nn.BCEWithLogitsLoss(), torch.device("cpu"))
    assert math.isnan(loss) and (accuracy, seen) == (0.5, 2)  # a NaN logit is not > 0: class 0, right once


# --------------------------------------------------------------------------------------------
# Failures end runs properly
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_exception_ends_run_failed_with_traceback(tmp_path):
    result = _run(tmp_path, *TINY, "trainer.lr=1e30", "trainer.optimizer=sgd", "trainer.momentum=0", check=False)
    assert result.returncode != 0
    client = _client(tmp_path)
    (run,) = _runs(client)
    assert run.info.status == "FAILED"
    assert "NonFiniteLossError" in run.data.tags["error"]
    text = Path(client.download_artifacts(run.info.run_id, "error/traceback.txt", str(tmp_path))).read_text()
    assert "Traceback" in text and "the training loss became" in text


@pytest.mark.slow
def test_ctrl_c_ends_run_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    # Ctrl-C as a terminal delivers it, whatever this process inherited: a test run started in the
    # background of a non-interactive shell ignores SIGINT, and exec passes that on, so the child
    # would ignore it too (then Python installs no KeyboardInterrupt handler at all).
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *TINY, "trainer.epochs=200", "tracking.log_model=false"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        # Wait for training to be under way: the first epoch line.
        deadline = time.monotonic() + 180
        for line in process.stdout:
            if line.startswith("Epoch 1/200") or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    (run,) = _runs(_client(tmp_path))
    assert run.info.status == "KILLED"
    assert "KeyboardInterrupt" in run.data.tags["error"]


# --------------------------------------------------------------------------------------------
# Sweeps: a parent run, a child per job, a comparison
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_multirun_sweep_is_a_parent_with_children_and_a_comparison(tmp_path):
    result = _run(
        tmp_path, "-m", "pool.size=2,3", "pool.stride=2", "model=tinyvgg,strided", *TINY, "data.image_size=32",
        "trainer.epochs=1", "tracking.log_model=false", "trainer.profile_pool_steps=0",
    )  # fmt: skip
    client = _client(tmp_path)
    runs = _runs(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep: pool.size=2,3 model=tinyvgg,strided"  # what it varies
    assert parent.data.tags["mlflow.note.content"].startswith("Hydra multirun `python train.py -m pool.size=2,3 pool.stride=2")
    assert parent.data.params["sweep.pool.stride"] == "2"
    assert parent.data.params["sweep.pool.size"] == "2,3"
    assert parent.data.params["sweep.model"] == "tinyvgg,strided"
    assert {c.data.tags["hydra.job.num"] for c in children} == {"0", "1", "2", "3"}
    assert {c.info.run_name for c in children} == {"tinyvgg-max-k2-s2", "tinyvgg-max-k3-s2", "strided"}

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md", "comparison.png"} <= artifacts
    table = Path(client.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))).read_text()
    header, *rows = table.strip().splitlines()
    assert header.split(",")[:5] == ["job", "run", "status", "overrides", "num_params"]
    assert {"val_accuracy", "val_loss", "accuracy", "train_images_per_sec"} <= set(header.split(","))
    assert len(rows) == 4
    assert "| tinyvgg-max-k3-s2 | FINISHED | pool.size=3 model=tinyvgg |" in result.stdout
    assert parent.data.metrics["jobs"] == 4 and parent.data.metrics["failed_jobs"] == 0


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_kept(tmp_path):
    # pool.size=4 shrinks 24x24 images below one pixel in tinyvgg's third block: that job fails.
    result = _run(
        tmp_path, "-m", "pool.size=2,4", *TINY, "trainer.epochs=1", "tracking.log_model=false",
        "trainer.profile_pool_steps=0", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    runs = _runs(_client(tmp_path))
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["hydra.job.num"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert children["0"].info.status == "FINISHED" and "val_accuracy" in children["0"].data.metrics
    assert children["1"].info.status == "FAILED" and "would turn its" in children["1"].data.tags["error"]
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["failed_jobs"] == 1
    assert "| 1 | tinyvgg-max-k4-s4 | FAILED | pool.size=4 |" in result.stdout


@pytest.mark.slow
def test_optuna_sweep_runs_trials_as_children(tmp_path):
    _run(
        tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY, "trainer.epochs=1",
        "tracking.log_model=false", "trainer.profile_pool_steps=0",
    )  # fmt: skip
    runs = _runs(_client(tmp_path))
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "optuna-pool-lr"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"
    assert all(float(c.data.params["trainer.lr"]) != 0.001 for c in children)  # suggested, not the default
