"""Data: generated shapes (deterministic, lazy, learnable), image folders, torchvision, loaders, bad input."""

import pickle
import re
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from data import SHAPES, GeneratedShapes, build_datasets, make_loader
from data.cache import CachedDataset
from data.real import BUILT_INS, IMAGENET_MEAN, IMAGENET_STD
from data import shapes
from data.shapes import MEAN, STD
from models import PoolConfig, build_model

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# GeneratedShapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [24, (20, 36)])
def test_generated_is_deterministic_per_seed(image_size):
    a, b = GeneratedShapes(8, image_size=image_size, seed=3), GeneratedShapes(8, image_size=image_size, seed=3)
    for i in reversed(range(8)):  # the order of access must not matter
        (x, label), (y, other_label) = a[i], b[i]
        assert_close(x, y, rtol=0, atol=0)
        assert label == other_label


@pytest.mark.parametrize("other", [dict(seed=4), dict(stream=1)], ids=["seed", "stream"])
def test_generated_differs_across_seeds_and_streams(other):
    a, b = GeneratedShapes(8, image_size=24, seed=3), GeneratedShapes(8, image_size=24, **{"seed": 3, **other})
    for i in range(8):
        assert (a[i][0] - b[i][0]).abs().mean() > 0.1


@pytest.mark.parametrize("num_classes", [2, 3, len(SHAPES)])
@pytest.mark.parametrize("channels", [1, 3])
def test_generated_images_and_labels(channels, num_classes):
    dataset = GeneratedShapes(4 * num_classes, image_size=(20, 36), num_classes=num_classes, channels=channels)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    images = torch.stack(images)
    assert images.shape == (4 * num_classes, channels, 20, 36) and images.dtype == torch.float32
    assert images.min() >= -MEAN / STD and images.max() <= (1 - MEAN) / STD
    assert sorted(labels) == sorted(list(range(num_classes)) * 4)  # balanced
    assert dataset.classes == SHAPES[:num_classes]


@pytest.mark.parametrize("chunk_values", [None, 3 * 20 * 36 * 2], ids=["one-pass", "chunks-of-2"])
@pytest.mark.parametrize("channels", [1, 3])
def test_generated_batch_is_the_images_one_by_one(channels, chunk_values, monkeypatch):
    # DataLoader fetches a batch through __getitems__, rendered in one pass (or chunks of it):
    # bit for bit the images a single access gives, whatever the batch holds and in what order.
    if chunk_values:
        monkeypatch.setattr(shapes, "RENDER_CHUNK_VALUES", chunk_values)
    dataset = GeneratedShapes(10**6, image_size=(20, 36), num_classes=len(SHAPES), channels=channels, seed=3)
    indices = [5, 0, 999999, 17, 3, 3, -1, *range(100, 113)]
    images, labels = dataset.render(indices)
    assert images.shape == (len(indices), channels, 20, 36)
    for image, label, index in zip(images, labels, indices):
        one, one_label = dataset[index]
        assert_close(image, one, rtol=0, atol=0)
        assert label == one_label
    loader = make_loader(Subset(dataset, indices), batch_size=8)
    batched = torch.cat([batch for batch, _ in loader])
    assert_close(batched, images, rtol=0, atol=0)
    with pytest.raises(IndexError, match="index 1000000 out of range for 1000000 samples"):
        dataset.render([0, 10**6])


@pytest.mark.parametrize(
    "channels, sums",
    [
        (3, [1246.482, 1182.144, -1666.034, 1088.692, -2263.742, -2257.455, 946.334]),
        (1, [417.924, 406.79, -622.993, 330.593, -753.578, -703.203, 305.677]),
    ],
)
def test_generated_images_are_those_earlier_runs_trained_on(channels, sums):
    # Per-image sums as rendered one image at a time before batched rendering (commit 5fafe68),
    # one image of each shape: runs recorded since then train on the same data as before.
    dataset = GeneratedShapes(10**6, image_size=(20, 36), num_classes=len(SHAPES), channels=channels, seed=3)
    indices = [0, 1, 2, 3, 4, 5, 999999]
    images, _ = dataset.render(indices)
    assert images.double().sum((1, 2, 3)).tolist() == pytest.approx(sums, abs=2e-3)


def test_generated_is_lazy():
    dataset = GeneratedShapes(10**12, image_size=32)
    kept = sum(v.numel() for v in vars(dataset).values() if isinstance(v, torch.Tensor))
    assert kept <= 2 * 32  # coordinates only, whatever the length
    assert dataset[10**12 - 1][0].shape == (3, 32, 32)
    with pytest.raises(IndexError, match="index 1000000000000 out of range"):
        dataset[10**12]


def test_generated_is_learnable():
    # A short run of the seed's pooled model must get well above chance (0.5; about 0.85 here).
    torch.manual_seed(0)
    train = GeneratedShapes(1000, image_size=40, seed=0)
    val = GeneratedShapes(200, image_size=40, seed=0, stream=1)
    model = build_model("tinyvgg", pool=PoolConfig(backend="torch"), image_size=40)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for epoch in range(4):
        for x, y in make_loader(train, batch_size=32, shuffle=True, seed=epoch):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    x, y = next(iter(make_loader(val, batch_size=len(val))))
    with torch.no_grad():
        accuracy = ((model(x).squeeze(1) > 0).long() == y).float().mean().item()
    assert accuracy >= 0.7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_samples=0), r"GeneratedShapes: num_samples must be an int >= 1, got 0"),
        (dict(image_size=8), r"GeneratedShapes: image_size must be an int >= 16 or a pair of them, got 8"),
        (dict(image_size=(32, 32, 3)), r"GeneratedShapes: image_size must be an int >= 16"),
        (dict(num_classes=1), r"GeneratedShapes: num_classes must be an int in \[2, 6\]"),
        (dict(num_classes=7), r"GeneratedShapes: num_classes must be an int in \[2, 6\]"),
        (dict(channels=2), r"GeneratedShapes: channels must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
    ],
)
def test_generated_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeneratedShapes(**{"num_samples": 10, **kwargs})


# --------------------------------------------------------------------------------------------
# build_datasets: the default, image folders, torchvision's datasets
# --------------------------------------------------------------------------------------------


def test_default_dataset_is_the_seeds_split_of_generated_shapes():
    train, val, info = build_datasets()
    assert (len(train), len(val)) == (1500, 500)
    assert asdict(info) == dict(
        name="shapes", source="generated (seed=0)", num_classes=2, channels=3, image_size=(64, 64),
        train_size=1500, val_size=500, classes=("disk", "cross"),
    )  # fmt: skip
    assert train[0][0].shape == (3, 64, 64)
    assert (train[0][0] - val[0][0]).abs().mean() > 0.1  # validation is its own stream


def _write_image_folders(root, splits=("train", "test"), classes=("pizza", "steak"), per_class=3):
    colours = {"pizza": (220, 40, 30), "steak": (90, 60, 30), "sushi": (250, 250, 250)}
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (30 + 7 * i, 20 + 5 * i), colours[name]).save(folder / f"{i}.jpg")


@pytest.mark.parametrize("in_channels, channels", [(None, 3), (3, 3), (1, 1)])
@pytest.mark.parametrize("augment", [False, True])
def test_image_folder(tmp_path, in_channels, channels, augment):
    _write_image_folders(tmp_path)
    train, val, info = build_datasets(
        "imagefolder", root=tmp_path, image_size=(16, 20), in_channels=in_channels, augment=augment
    )
    assert (info.num_classes, info.channels, info.classes) == (2, channels, ("pizza", "steak"))
    assert (info.train_size, info.val_size, info.source) == (6, 6, str(tmp_path))
    image, label = val[0]
    assert image.shape == (channels, 16, 20) and image.dtype == torch.float32 and label == 0
    if channels == 3:  # a flat red image, normalized with ImageNet's statistics (JPEG is lossy)
        expected = [(c / 255 - m) / s for c, m, s in zip((220, 40, 30), IMAGENET_MEAN, IMAGENET_STD)]
        assert_close(image.mean((1, 2)), torch.tensor(expected), atol=0.1, rtol=0)
    images, labels = next(iter(make_loader(train, batch_size=4, shuffle=True, seed=0)))
    assert images.shape == (4, channels, 16, 20) and labels.shape == (4,)


def test_image_folder_accepts_val_and_subsets(tmp_path):
    _write_image_folders(tmp_path, splits=("train", "val"))
    train, val, info = build_datasets("imagefolder", root=tmp_path, image_size=16, train_size=4, val_size=2, seed=1)
    again, _, _ = build_datasets("imagefolder", root=tmp_path, image_size=16, train_size=4, val_size=2, seed=1)
    assert (len(train), len(val), info.train_size, info.val_size) == (4, 2, 4, 2)
    assert train.indices == again.indices


@pytest.mark.parametrize(
    "splits, classes, kwargs, error, message",
    [
        (("train",), ("pizza", "steak"), {}, FileNotFoundError, r"imagefolder: no test or val/ folder in .*train/<class>"),
        ((), (), {}, FileNotFoundError, r"imagefolder: no train/ folder in"),
        (("train", "test"), ("pizza", "steak"), dict(num_classes=3), ValueError, r"num_classes=3 but imagefolder at .* has 2 classes"),
        (("train", "test"), ("pizza", "steak"), dict(train_size=7), ValueError, r"train_size=7 exceeds the 6 images available"),
    ],
)  # fmt: skip
def test_image_folder_errors(tmp_path, splits, classes, kwargs, error, message):
    _write_image_folders(tmp_path, splits, classes)
    with pytest.raises(error, match=message):
        build_datasets("imagefolder", root=tmp_path, image_size=16, **kwargs)


def test_image_folder_splits_must_share_classes(tmp_path):
    _write_image_folders(tmp_path, splits=("train",))
    _write_image_folders(tmp_path, splits=("test",), classes=("pizza", "sushi"))
    with pytest.raises(ValueError, match=r"has classes \['pizza', 'steak'\] but .* has \['pizza', 'sushi'\]"):
        build_datasets("imagefolder", root=tmp_path, image_size=16)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_built_in_without_files_says_where_and_how(tmp_path, name):
    where = re.escape(str(tmp_path / BUILT_INS[name].files))
    message = rf"{name}: dataset files not found \(looked in {where}\); pass download=True"
    with pytest.raises(FileNotFoundError, match=message):
        build_datasets(name, root=tmp_path)


def _write_idx(path, data: torch.Tensor) -> None:
    """torchvision's MNIST file format: big-endian magic (uint8 type code, rank), sizes, then bytes."""
    header = struct.pack(">I", 0x0800 + data.dim()) + b"".join(struct.pack(">I", n) for n in data.shape)
    path.write_bytes(header + data.to(torch.uint8).numpy().tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_grayscale_built_in_feeds_a_one_channel_model(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (count, 28, 28), generator=generator))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(count) % 10)
    train, val, info = build_datasets(name, root=tmp_path, image_size=28)
    assert (len(train), len(val), info.channels, info.num_classes) == (6, 4, 1, 10)
    images, labels = next(iter(make_loader(train, batch_size=6)))
    assert images.shape == (6, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    model = build_model("tinyvgg", pool=PoolConfig(backend="torch"), in_channels=info.channels,
                        num_classes=info.num_classes, image_size=28)  # fmt: skip
    assert model(images).shape == (6, 10)
    rgb, _, rgb_info = build_datasets(name, root=tmp_path, image_size=32, in_channels=3)
    assert rgb[0][0].shape == (3, 32, 32) and rgb_info.channels == 3


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("imagenet", {}, r"dataset name must be one of \('shapes', 'imagefolder', 'mnist', 'fashionmnist', 'cifar10'\)"),
        ("shapes", dict(augment=True), r"augment=True is for real images"),
        ("shapes", dict(image_size=0), r"image_size must be an int >= 1, got 0"),
        ("shapes", dict(image_size=(32, 32, 32)), r"image_size must be an int or a pair"),
        ("shapes", dict(image_size=8), r"GeneratedShapes: image_size must be an int >= 16"),
        ("shapes", dict(train_size=0), r"train_size must be an int >= 1, got 0"),
        ("shapes", dict(val_size=-5), r"val_size must be an int >= 1, got -5"),
        ("shapes", dict(in_channels=2), r"in_channels must be None \(the dataset's own\), 1 or 3, got 2"),
        ("shapes", dict(num_classes=1), r"num_classes must be an int >= 2, got 1"),
        ("shapes", dict(num_classes=7), r"GeneratedShapes: num_classes must be an int in \[2, 6\]"),
        ("shapes", dict(cache_mib=-1), r"cache_mib must be an int >= 0, got -1"),
        ("shapes", dict(cache_mib=1.5), r"cache_mib must be an int >= 0, got 1.5"),
        ("mnist", {}, r"root is required for dataset 'mnist'"),
    ],
)  # fmt: skip
def test_build_datasets_invalid_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_datasets(name, **kwargs)


# --------------------------------------------------------------------------------------------
# CachedDataset: images kept between epochs
# --------------------------------------------------------------------------------------------


class _RecordingShapes(GeneratedShapes):
    """GeneratedShapes that notes every index it renders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rendered = []

    def render(self, indices):
        self.rendered += [i % len(self) for i in indices]
        return super().render(indices)


class _OneByOne(Dataset):
    """A dataset without __getitems__ (one item per call), noting what it loads."""

    def __init__(self, dataset):
        self.dataset, self.loaded = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.loaded.append(index)
        return self.dataset[index]


@pytest.mark.parametrize("capacity", [0, 5, 12, 50])
def test_cached_dataset_gives_the_same_images_and_renders_each_kept_one_once(capacity):
    plain = GeneratedShapes(12, image_size=20, seed=2)
    recording = _RecordingShapes(12, image_size=20, seed=2)
    cached = CachedDataset(recording, capacity)
    assert (len(cached), cached.capacity) == (12, min(capacity, 12))
    orders = [torch.randperm(12, generator=torch.Generator().manual_seed(epoch)).tolist() for epoch in range(3)]
    for order in orders:  # three epochs of shuffled batches of 5, as a DataLoader asks
        for start in range(0, 12, 5):
            batch = order[start : start + 5]
            images, labels = zip(*cached.__getitems__(batch))
            expected_images, expected_labels = plain.render(batch)
            assert torch.equal(torch.stack(images), expected_images)  # bit for bit
            assert list(labels) == expected_labels and all(type(label) is int for label in labels)
    kept = min(capacity, 12)
    assert cached.kept == kept
    for index in range(12):
        assert recording.rendered.count(index) == (1 if index < kept else 3), index


def test_cached_dataset_in_a_loader_gives_the_datasets_batches():
    plain = GeneratedShapes(20, image_size=20, seed=1)
    cached = CachedDataset(GeneratedShapes(20, image_size=20, seed=1), 20)
    for _ in range(2):  # the second epoch comes from memory
        batches = zip(make_loader(plain, batch_size=6, shuffle=True, seed=4), make_loader(cached, batch_size=6, shuffle=True, seed=4))
        for (images, labels), (cached_images, cached_labels) in batches:
            assert torch.equal(images, cached_images) and torch.equal(labels, cached_labels)
    assert cached.kept == 20


def test_cached_dataset_hands_out_copies():
    cached = CachedDataset(GeneratedShapes(4, image_size=20), 4)
    expected = cached[3][0].clone()
    for _ in range(2):  # from the dataset, then from memory: editing either leaves the kept image alone
        image, _ = cached[3]
        image.fill_(7.0)
    assert torch.equal(cached[3][0], expected) and torch.equal(cached[-1][0], expected)


def test_cached_dataset_over_a_dataset_without_getitems():
    plain = GeneratedShapes(6, image_size=20)
    one_by_one = _OneByOne(plain)
    cached = CachedDataset(one_by_one, 4)
    for _ in range(2):
        for index in range(6):
            image, label = cached[index]
            assert torch.equal(image, plain[index][0]) and label == plain[index][1]
    assert sorted(one_by_one.loaded) == [0, 1, 2, 3, 4, 4, 5, 5]


class _KeptInWorker(Dataset):
    """Each item's label replaced by how many items the CachedDataset of the loading process keeps."""

    def __init__(self, cached):
        self.cached = cached

    def __len__(self):
        return len(self.cached)

    def __getitem__(self, index):
        return self.cached[index][0], self.cached.kept


def test_cached_dataset_worker_processes_keep_nothing():
    """A worker's copy would be one more copy of the data per worker: workers load afresh."""
    plain = GeneratedShapes(8, image_size=20)
    cached = CachedDataset(GeneratedShapes(8, image_size=20), 8)
    loader = DataLoader(_KeptInWorker(cached), batch_size=4, num_workers=1, persistent_workers=True)
    for _ in range(2):  # the second epoch in the same worker
        batches = list(loader)
        assert torch.equal(torch.cat([images for images, _ in batches]), plain.render(list(range(8)))[0])
        assert torch.cat([kept for _, kept in batches]).tolist() == [0] * 8
    assert cached.kept == 0


def test_cached_dataset_pickles_without_its_images():
    """A spawned worker gets the dataset pickled: the training process's images stay behind."""
    plain = GeneratedShapes(6, image_size=20)
    cached = CachedDataset(GeneratedShapes(6, image_size=20), 6)
    cached.__getitems__([0, 1, 2])
    copy = pickle.loads(pickle.dumps(cached))
    assert (cached.kept, copy.kept, copy.capacity) == (3, 0, 6)
    assert torch.equal(copy[1][0], plain[1][0]) and copy.kept == 1


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: CachedDataset(GeneratedShapes(4, image_size=20), -1), ValueError, r"capacity must be an int >= 0, got -1"),
        (lambda: CachedDataset(GeneratedShapes(4, image_size=20), True), ValueError, r"capacity must be an int >= 0, got True"),
        (lambda: CachedDataset(GeneratedShapes(4, image_size=20), 2)[4], IndexError, r"index 4 out of range for 4 items"),
        (lambda: CachedDataset(GeneratedShapes(4, image_size=20), 2)[-5], IndexError, r"index -5 out of range for 4 items"),
    ],
    ids=["negative-capacity", "bool-capacity", "index-past-the-end", "index-before-the-start"],
)  # fmt: skip
def test_cached_dataset_invalid_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_build_datasets_keeps_images_within_cache_mib_training_split_first():
    # 16x16 RGB in float32: 3,072 bytes an image, 341 in one MiB
    train, val, _ = build_datasets(image_size=16, train_size=300, val_size=100, cache_mib=1)
    assert isinstance(train, CachedDataset) and isinstance(val, CachedDataset)
    assert (train.capacity, val.capacity) == (300, 41)
    train, val, _ = build_datasets(image_size=16, train_size=400, val_size=100, cache_mib=1)
    assert train.capacity == 341 and isinstance(val, GeneratedShapes)
    train, val, _ = build_datasets(image_size=16, in_channels=1, train_size=1000, val_size=100, cache_mib=1)
    assert (train.capacity, val.capacity) == (1000, 24)  # grayscale: 1,024 bytes an image
    train, val, _ = build_datasets(image_size=16, train_size=30, val_size=10)  # by default nothing is kept
    assert isinstance(train, GeneratedShapes) and isinstance(val, GeneratedShapes)


@pytest.mark.parametrize("augment", [False, True])
def test_build_datasets_never_keeps_augmented_images(tmp_path, augment):
    _write_image_folders(tmp_path)
    train, val, _ = build_datasets("imagefolder", root=tmp_path, image_size=16, augment=augment, cache_mib=1)
    plain_train, plain_val, _ = build_datasets("imagefolder", root=tmp_path, image_size=16, augment=False)
    assert isinstance(train, CachedDataset) is not augment  # augmented images differ every epoch
    assert isinstance(val, CachedDataset) and val.capacity == 6
    for _ in range(2):
        for index in range(6):
            assert torch.equal(val[index][0], plain_val[index][0])
            if not augment:
                assert torch.equal(train[index][0], plain_train[index][0])
    assert val.kept == 6


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _order(seed: int, shuffle: bool = True) -> list[int]:
    loader = make_loader(TensorDataset(torch.arange(50)), batch_size=8, shuffle=shuffle, seed=seed)
    return [int(i) for (batch,) in loader for i in batch]


def test_loader_shuffles_by_seed():
    assert _order(1) == _order(1)
    assert _order(1) != _order(2)
    assert sorted(_order(1)) == list(range(50))
    assert _order(1, shuffle=False) == list(range(50))


@pytest.mark.parametrize("device, pinned", [("cpu", False), ("cuda", True), (torch.device("cuda:0"), True)])
def test_loader_pins_memory_for_cuda(device, pinned):
    assert make_loader(TensorDataset(torch.arange(4)), device=device).pin_memory is pinned


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), r"batch_size must be an int >= 1, got 0"),
        (dict(num_workers=-1), r"num_workers must be an int >= 0"),
    ],
)
def test_loader_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loader(TensorDataset(torch.arange(4)), **kwargs)


def test_torchvision_is_imported_only_for_real_data():
    """Its import pulls in torch._dynamo; runs on the generated data should not pay for it at startup."""
    code = "import sys, train, data; data.build_datasets('shapes', image_size=16, train_size=4, val_size=4); print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
