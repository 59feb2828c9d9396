"""Real images: the seed's ImageFolder layout and torchvision's built-in datasets, resized and normalized."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from torchvision.transforms import v2

# torchvision is imported where a real dataset is loaded, not here: importing it pulls in
# torch._dynamo (~1.8 s here), which every run on the generated data would pay at startup.

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGEFOLDER_SPLITS = (("train",), ("test", "val"))  # the seed's pizza_steak has train/ and test/


@dataclass(frozen=True)
class BuiltIn:
    """How to load one torchvision dataset, and where its files live under the root folder."""

    dataset: str  # a torchvision.datasets class taking (root, train=, transform=, download=)
    channels: int
    mean: tuple[float, ...]  # per-channel statistics of its training split
    std: tuple[float, ...]
    files: str  # the folder, relative to root, that torchvision looks for
    hflip: bool  # whether a mirrored image keeps its label (not for digits)


BUILT_INS = {
    "mnist": BuiltIn("MNIST", 1, (0.1307,), (0.3081,), "MNIST/raw", hflip=False),
    "fashionmnist": BuiltIn("FashionMNIST", 1, (0.2860,), (0.3530,), "FashionMNIST/raw", hflip=True),
    "cifar10": BuiltIn(
        "CIFAR10", 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py",
        hflip=True,
    ),  # fmt: skip
}


def image_transform(
    image_size: tuple[int, int], source_channels: int, channels: int, mean, std, augment: bool, hflip: bool
) -> v2.Compose:
    """PIL image -> normalized (channels, H, W) float tensor, with optional light augmentation."""
    from torchvision.transforms import v2

    steps = [v2.ToImage()]
    if channels != source_channels:
        # Grayscale <-> RGB; the statistics follow as their channel average.
        steps.append(v2.Grayscale(num_output_channels=channels))
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    steps.append(v2.Resize(image_size, antialias=True))
    if augment:
        steps += [v2.RandomHorizontalFlip()] if hflip else []
        steps.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def image_folders(
    root: Path, image_size: tuple[int, int], channels: int | None, augment: bool
) -> tuple[Dataset, Dataset, tuple[str, ...], int]:
    """root/train/<class>/* and root/test/<class>/* (or val/) as (train, val, classes, channels)."""
    from torchvision import datasets

    splits = []
    for names in IMAGEFOLDER_SPLITS:
        found = [root / name for name in names if (root / name).is_dir()]
        if not found:
            raise FileNotFoundError(
                f"imagefolder: no {' or '.join(names)}/ folder in {root}; expected the layout "
                f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
            )
        splits.append(found[0])
    channels = channels or 3  # ImageFolder's loader converts every image to RGB
    train, val = (
        datasets.ImageFolder(
            folder,
            transform=image_transform(
                image_size, 3, channels, IMAGENET_MEAN, IMAGENET_STD, augment and i == 0, hflip=True
            ),
        )
        for i, folder in enumerate(splits)
    )
    if train.classes != val.classes:
        raise ValueError(
            f"imagefolder: {splits[0]} has classes {train.classes} but {splits[1]} has {val.classes}; "
            "both splits need the same class folders"
        )
    return train, val, tuple(train.classes), channels


def built_in(
    name: str, root: Path, image_size: tuple[int, int], channels: int | None, augment: bool, download: bool
) -> tuple[Dataset, Dataset, tuple[str, ...], int]:
    """torchvision's dataset `name` from root (train and test splits) as (train, val, classes, channels)."""
    from torchvision import datasets

    spec = BUILT_INS[name]
    dataset = getattr(datasets, spec.dataset)
    channels = channels or spec.channels
    splits = []
    for train in (True, False):
        transform = image_transform(
            image_size, spec.channels, channels, spec.mean, spec.std, augment and train, spec.hflip
        )
        try:
            splits.append(dataset(str(root), train=train, transform=transform, download=download))
        except RuntimeError as error:
            if download:
                raise
            raise FileNotFoundError(
                f"{name}: dataset files not found (looked in {root / spec.files}); pass download=True on a "
                f"machine with internet to fetch them into {root}, or copy torchvision's {name} files there"
            ) from error
    return splits[0], splits[1], tuple(splits[0].classes), channels
