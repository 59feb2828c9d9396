"""Typed schemas for conf/: Hydra checks types and keys on merge, ``validate`` checks ranges.

The YAML files in conf/ hold every default value (each with a comment); these dataclasses hold
the types only. A typo in a key, a wrong type or an out-of-range value is rejected before any
work starts, with a message that names the key and what it allows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the allowed values."""


class PoolType(Enum):
    max = "max"
    avg = "avg"
    none = "none"


class PoolBackend(Enum):
    auto = "auto"
    triton = "triton"
    torch = "torch"


class Optimizer(Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DatasetName(Enum):
    shapes = "shapes"
    imagefolder = "imagefolder"
    mnist = "mnist"
    fashionmnist = "fashionmnist"
    cifar10 = "cifar10"


@dataclass
class PoolSchema:
    type: PoolType = MISSING
    size: Any = MISSING  # int or [h, w]
    stride: Any = MISSING  # null, int or [h, w]
    padding: Any = MISSING  # int, [h, w], "valid" or "same"
    dilation: Any = MISSING  # int or [h, w]
    ceil_mode: bool = MISSING
    backend: PoolBackend = MISSING


@dataclass
class CNNSchema:  # tinyvgg and strided
    name: str = MISSING
    width: int = MISSING
    depth: int = MISSING
    kernel_size: int = MISSING


@dataclass
class ResNetSchema:
    name: str = MISSING
    widths: List[int] = MISSING
    blocks_per_stage: int = MISSING
    stem_stride: int = MISSING


@dataclass
class DataSchema:
    name: DatasetName = MISSING
    root: Optional[str] = MISSING
    image_size: Any = MISSING  # int or [h, w]
    num_classes: Optional[int] = MISSING
    in_channels: Optional[int] = MISSING
    train_size: Optional[int] = MISSING
    val_size: Optional[int] = MISSING
    seed: int = MISSING
    augment: bool = MISSING
    download: bool = MISSING
    num_workers: int = MISSING
    cache_mib: int = MISSING


@dataclass
class TrainerSchema:
    epochs: int = MISSING
    optimizer: Optimizer = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    momentum: float = MISSING
    batch_size: int = MISSING
    device: Device = MISSING
    seed: int = MISSING
    limit_train_batches: Optional[int] = MISSING
    limit_val_batches: Optional[int] = MISSING
    channels_last: Optional[bool] = MISSING
    threads: Optional[int] = MISSING
    profile_pool_steps: int = MISSING
    resume_from: Optional[str] = MISSING  # a checkpoint file, or the MLflow run id whose checkpoint to continue


@dataclass
class TrackingSchema:
    enabled: bool = MISSING
    uri: Optional[str] = MISSING
    experiment: str = MISSING
    run_name: Optional[str] = MISSING
    sweep_name: Optional[str] = MISSING
    log_model: bool = MISSING
    resume: bool = MISSING


@dataclass
class Schema:
    model: Any = MISSING  # CNNSchema or ResNetSchema, by the chosen model
    pool: PoolSchema = MISSING
    data: DataSchema = MISSING
    trainer: TrainerSchema = MISSING
    tracking: TrackingSchema = MISSING


def register_configs() -> None:
    """Make the schemas available to conf/'s defaults lists."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Schema)
    store.store(group="model", name="cnn_schema", node=CNNSchema)
    store.store(group="model", name="resnet_schema", node=ResNetSchema)


# --------------------------------------------------------------------------------------------
# Range checks
# --------------------------------------------------------------------------------------------


def _fail(key: str, allowed: str, value: Any) -> None:
    raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(key: str, value: Any, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        _fail(key, f"an int >= {minimum}" + (" or null" if optional else ""), value)


def _check_pair(key: str, value: Any, minimum: int, optional: bool = False) -> None:
    """An int >= minimum, or a pair [height, width] of them."""
    if optional and value is None:
        return
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 2) or not all(_is_int(v) and v >= minimum for v in values):
        _fail(key, f"an int >= {minimum} or a pair [height, width] of them" + (" or null" if optional else ""), value)


def validate(cfg: DictConfig) -> dict:
    """Check every value's range; returns the resolved config as plain Python (enums as strings)."""
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    plain = OmegaConf.to_container(task, resolve=True, enum_to_str=True, throw_on_missing=True)
    pool, trainer, data, model = plain["pool"], plain["trainer"], plain["data"], plain["model"]

    _check_pair("pool.size", pool["size"], 1)
    _check_pair("pool.stride", pool["stride"], 1, optional=True)
    _check_pair("pool.dilation", pool["dilation"], 1)
    padding = pool["padding"]
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            _fail("pool.padding", "an int >= 0, a pair [height, width] of them, 'valid' or 'same'", padding)
        if padding == "same" and pool["ceil_mode"]:
            raise ConfigError("pool.ceil_mode must be false with pool.padding=same, which fixes the output size")
    else:
        _check_pair("pool.padding", padding, 0)
        sizes = pool["size"] if isinstance(pool["size"], list) else [pool["size"]] * 2
        pads = padding if isinstance(padding, list) else [padding] * 2
        if any(p > k // 2 for p, k in zip(pads, sizes)):
            _fail("pool.padding", f"at most pool.size // 2 (PyTorch's limit) for pool.size={pool['size']}", padding)
    if pool["type"] == "avg" and pool["dilation"] not in (1, [1, 1]):
        _fail("pool.dilation", "1 for pool.type=avg (average pooling has no dilation)", pool["dilation"])

    for key in ("width", "depth", "kernel_size", "blocks_per_stage", "stem_stride"):
        if key in model:
            _check_int(f"model.{key}", model[key], 1)
    if "widths" in model and (not model["widths"] or not all(_is_int(w) and w >= 1 for w in model["widths"])):
        _fail("model.widths", "a non-empty list of ints >= 1", model["widths"])

    _check_pair("data.image_size", data["image_size"], 1)
    _check_int("data.num_classes", data["num_classes"], 2, optional=True)
    if data["in_channels"] not in (None, 1, 3):
        _fail("data.in_channels", "null (the dataset's own), 1 or 3", data["in_channels"])
    _check_int("data.train_size", data["train_size"], 1, optional=True)
    _check_int("data.val_size", data["val_size"], 1, optional=True)
    _check_int("data.num_workers", data["num_workers"], 0)
    _check_int("data.cache_mib", data["cache_mib"], 0)
    if data["name"] != "shapes" and not data["root"]:
        _fail("data.root", f"the folder holding the {data['name']} files", data["root"])

    _check_int("trainer.epochs", trainer["epochs"], 1)
    _check_int("trainer.batch_size", trainer["batch_size"], 1)
    if not trainer["lr"] > 0:
        _fail("trainer.lr", "> 0", trainer["lr"])
    if not trainer["weight_decay"] >= 0:
        _fail("trainer.weight_decay", ">= 0", trainer["weight_decay"])
    if not 0 <= trainer["momentum"] < 1:
        _fail("trainer.momentum", "in [0, 1)", trainer["momentum"])
    _check_int("trainer.limit_train_batches", trainer["limit_train_batches"], 1, optional=True)
    _check_int("trainer.limit_val_batches", trainer["limit_val_batches"], 1, optional=True)
    _check_int("trainer.threads", trainer["threads"], 1, optional=True)
    _check_int("trainer.profile_pool_steps", trainer["profile_pool_steps"], 0)

    if not plain["tracking"]["experiment"]:
        _fail("tracking.experiment", "a non-empty name", plain["tracking"]["experiment"])
    return plain


# What does not change a run's result: where it is recorded, how it is resumed, how many threads,
# whether images are kept in memory between epochs (the same bits either way).
RUN_SPECIFIC_KEYS = ("tracking", "trainer.resume_from", "trainer.threads", "data.cache_mib")


def config_hash(settings: dict) -> str:
    """A stable digest of the validated config, less RUN_SPECIFIC_KEYS: equal digests, identical runs."""
    task = json.loads(json.dumps(settings))  # a deep copy
    for key in RUN_SPECIFIC_KEYS:
        *parents, last = key.split(".")
        node = task
        for parent in parents:
            node = node.get(parent, {})
        node.pop(last, None)
    text = json.dumps(task, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def as_pair(value: Any) -> Any:
    """Hydra lists as tuples (PyTorch takes tuples), ints unchanged."""
    return tuple(value) if isinstance(value, list) else value
