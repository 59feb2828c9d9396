"""One entry point for every dataset (train/val splits plus loggable metadata) and the loaders over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from data.cache import CachedDataset
from data.real import BUILT_INS, built_in, image_folders
from data.shapes import GeneratedShapes

DATASETS = ("shapes", "imagefolder", *BUILT_INS)
SHAPES_SPLIT = (1500, 500)  # the seed's train/validation split


@dataclass(frozen=True)
class DatasetInfo:
    """What a run should record about its data: plain values (dataclasses.asdict gives a dict)."""

    name: str
    source: str  # where the images come from: "generated", a folder, or a torchvision root
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    train_size: int
    val_size: int
    classes: tuple[str, ...]


def _check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _subset(dataset: Dataset, size: int | None, seed: int, argument: str) -> Dataset:
    """A seeded random subset of `size` items, or the whole dataset for None."""
    if size is None:
        return dataset
    if size > len(dataset):
        raise ValueError(f"{argument}={size} exceeds the {len(dataset)} images available")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:size].tolist())


def build_datasets(
    name: str = "shapes",
    *,
    root: str | Path | None = None,  # folder of the real datasets; unused by "shapes"
    image_size: int | tuple[int, int] = 64,  # the CPU default; 224 for the seed's experiment
    num_classes: int | None = None,  # None: 2 for "shapes", the dataset's own count otherwise
    in_channels: int | None = None,  # None: the dataset's own (1 for MNIST); 1 or 3 converts
    train_size: int | None = None,  # None: 1500 for "shapes", everything otherwise (int: seeded subset)
    val_size: int | None = None,  # None: 500 for "shapes", everything otherwise
    seed: int = 0,
    augment: bool = False,  # light augmentation of real training images (flip, small affine)
    download: bool = False,  # torchvision datasets only: fetch missing files
    cache_mib: int = 0,  # memory for keeping loaded images (training split first); 0: load every epoch afresh
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Train and validation datasets of (image, label) pairs, and the metadata a tracker logs.

    With ``cache_mib`` the images the training process loads are kept (``CachedDataset``) as far
    as the budget goes: the training split's first, then the validation split's; never augmented
    ones, which differ every epoch. Workers (``num_workers > 0``) load afresh.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")
    hw = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    if len(hw) != 2:
        raise ValueError(f"image_size must be an int or a pair (height, width), got {image_size!r}")
    for n in hw:
        _check_count("image_size", n)
    for argument, value in (("train_size", train_size), ("val_size", val_size)):
        if value is not None:
            _check_count(argument, value)
    if in_channels not in (None, 1, 3):
        raise ValueError(f"in_channels must be None (the dataset's own), 1 or 3, got {in_channels!r}")
    if num_classes is not None:
        _check_count("num_classes", num_classes, 2)
    _check_count("cache_mib", cache_mib, 0)

    if name == "shapes":
        if augment:
            raise ValueError(
                "augment=True is for real images; 'shapes' draws every image afresh at a random "
                "position, scale and rotation already"
            )
        train_size, val_size = train_size or SHAPES_SPLIT[0], val_size or SHAPES_SPLIT[1]
        options = dict(image_size=hw, num_classes=num_classes or 2, channels=in_channels or 3, seed=seed)
        train = GeneratedShapes(train_size, stream=0, **options)
        val = GeneratedShapes(val_size, stream=1, **options)
        info = DatasetInfo(
            name, f"generated (seed={seed})", train.num_classes, train.channels, hw, train_size, val_size,
            train.classes,
        )  # fmt: skip
        return *_cached(train, val, info, cache_mib, augment), info

    if root is None:
        raise ValueError(f"root is required for dataset {name!r}: the folder that holds its files")
    root = Path(root).expanduser()
    if name == "imagefolder":
        train, val, classes, channels = image_folders(root, hw, in_channels, augment)
    else:
        train, val, classes, channels = built_in(name, root, hw, in_channels, augment, download)
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(
            f"num_classes={num_classes} but {name} at {root} has {len(classes)} classes: {classes}"
        )
    train, val = _subset(train, train_size, seed, "train_size"), _subset(val, val_size, seed, "val_size")
    info = DatasetInfo(name, str(root), len(classes), channels, hw, len(train), len(val), classes)
    return *_cached(train, val, info, cache_mib, augment), info


def _cached(train: Dataset, val: Dataset, info: DatasetInfo, cache_mib: int, augment: bool) -> tuple[Dataset, Dataset]:
    """The splits wrapped in CachedDataset as far as cache_mib holds their images (float32 each)."""
    image_bytes = 4 * info.channels * info.image_size[0] * info.image_size[1]
    room = cache_mib * 2**20 // image_bytes  # images that fit
    splits = []
    for split, eligible in ((train, not augment), (val, True)):
        capacity = min(room, len(split)) if eligible else 0
        splits.append(CachedDataset(split, capacity) if capacity else split)
        room -= capacity
    return splits[0], splits[1]


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,  # the shuffling order (and augmentation in workers) follow from it
    num_workers: int = 0,  # 0: load in the training process, the fastest for the generated shapes
    device: torch.device | str = "cpu",
) -> DataLoader:
    """A DataLoader with seeded shuffling, and pinned memory when batches go to a CUDA device."""
    _check_count("batch_size", batch_size)
    _check_count("num_workers", num_workers, 0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=num_workers > 0,
    )
