"""CachedDataset: keep the (image, label) pairs a dataset yields, so later epochs skip producing them.

An epoch over the generated shapes spends much of its time rendering (64x64 on 2 cores: a third
of an epoch, at 224x224 too), and the images are a function of their index alone: rendering them
again every epoch buys nothing. The same holds for real images without augmentation (decoding and
resizing them again). Only the training process stores: with ``num_workers > 0`` each worker would
fill its own copy (the sampler spreads every index over all of them across epochs), so workers
load afresh and the memory stays one copy in one process. What comes back is the same bits the
dataset gave, so a run trains identically with and without the cache.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info


class CachedDataset(Dataset):
    """The items of `dataset`, those of index below `capacity` kept in memory after their first load.

    Items must be (image tensor, int label) with one image shape and dtype. The storage is
    allocated at the first item kept and filled as items are loaded (pages cost memory once
    written), so ``capacity * image bytes`` is the most it takes.
    """

    def __init__(self, dataset: Dataset, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"CachedDataset: capacity must be an int >= 0, got {capacity!r}")
        self.dataset, self.capacity = dataset, min(capacity, len(dataset))
        self._images: Tensor | None = None  # (capacity, *image shape), allocated at the first store
        self._labels = [0] * self.capacity
        self._kept = bytearray(self.capacity)  # 1 where held

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def kept(self) -> int:
        """How many items are held now."""
        return self._kept.count(1)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        ((image, label),) = self.__getitems__([index])
        return image, label

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        """A batch (DataLoader calls this): kept items from memory, the others from the dataset
        (as one batch where it loads batches), kept on the way."""
        indices = [self._checked(i) for i in indices]
        kept = [self._is_kept(i) for i in indices]
        items: list = [None] * len(indices)
        if any(kept):
            rows = [row for row, hit in enumerate(kept) if hit]
            hits = [indices[row] for row in rows]
            # One gather: new tensors, so a caller that edits an image leaves the cache intact.
            for row, index, image in zip(rows, hits, self._images[torch.tensor(hits)]):
                items[row] = (image, self._labels[index])
        missing = [row for row, hit in enumerate(kept) if not hit]
        if missing:
            wanted = [indices[row] for row in missing]
            many = getattr(self.dataset, "__getitems__", None)
            loaded = many(wanted) if many is not None else [self.dataset[i] for i in wanted]
            for row, index, (image, label) in zip(missing, wanted, loaded):
                items[row] = (image, label)
                self._keep(index, image, label)
        return items

    def _checked(self, index: int) -> int:
        size = len(self.dataset)
        if not -size <= index < size:
            raise IndexError(f"CachedDataset: index {index} out of range for {size} items")
        return index % size

    def _is_kept(self, index: int) -> bool:
        return index < self.capacity and self._kept[index] == 1

    def _keep(self, index: int, image: Tensor, label: int) -> None:
        if index >= self.capacity or get_worker_info() is not None:
            return
        if self._images is None:
            self._images = torch.empty(self.capacity, *image.shape, dtype=image.dtype)
        self._images[index] = image
        self._labels[index] = int(label)
        self._kept[index] = 1

    def __getstate__(self) -> dict:
        # Pickled into a worker process (spawn) or elsewhere: without the stored items, which
        # are the training process's memory (a worker never stores, so it loads everything).
        state = dict(self.__dict__)
        state["_images"] = None
        state["_kept"] = bytearray(self.capacity)
        return state
