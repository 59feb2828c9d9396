"""The training loop: epochs of optimization and validation, Keras-like console, throughput, pool cost."""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops instead of recording garbage."""


@dataclass
class EpochMetrics:
    """What one epoch measured, under the names the seed's Keras history used."""

    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    train_images_per_sec: float
    val_images_per_sec: float
    epoch_time_sec: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def loss_function(num_classes: int) -> nn.Module:
    """Binary cross-entropy on one logit for two classes (the seed's), cross-entropy otherwise."""
    return nn.BCEWithLogitsLoss() if num_classes == 2 else nn.CrossEntropyLoss()


def _loss_and_correct(logits: Tensor, labels: Tensor, criterion: nn.Module) -> tuple[Tensor, Tensor]:
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        logits = logits.squeeze(1)
        return criterion(logits, labels.float()), ((logits > 0) == labels).sum()
    return criterion(logits, labels), (logits.argmax(1) == labels).sum()


def make_optimizer(name: str, parameters: Iterable[Tensor], lr: float, weight_decay: float, momentum: float):
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be adam, adamw or sgd, got {name!r}")


def _limited(loader: DataLoader, limit: int | None) -> tuple[Iterable, int]:
    total = len(loader) if limit is None else min(limit, len(loader))
    return (batch for i, batch in zip(range(total), loader)), total


def _to(batch, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    images, labels = batch
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress(iterable: Iterable, total: int, description: str, enabled: bool):
    """A per-epoch progress bar on a terminal (tqdm); the plain iterable otherwise."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True, file=sys.stderr)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    *,
    epoch: int,
    limit: int | None = None,
    channels_last: bool = False,
    progress: bool = False,
    description: str = "",
    check_every: int | None = None,
) -> tuple[float, float, int, float]:
    """One pass of optimization; returns (mean loss, accuracy, images, seconds).

    ``check_every``: steps between reads of the losses on the device (non-finite check, progress
    bar); None: every step on CPU, every CHECK_EVERY steps on CUDA.
    """
    model.train()
    batches, total = _limited(loader, limit)
    running = _Running(epoch)
    # Reading a CUDA value waits for the GPU, so the steps' losses are read every CHECK_EVERY
    # steps there; on CPU a read costs nothing and the bar shows every step.
    check_every = check_every or (CHECK_EVERY if device.type == "cuda" else 1)
    _sync(device)
    start = time.perf_counter()
    bar = _progress(batches, total, description, progress)
    for step, batch in enumerate(bar, start=1):
        images, labels = _to(batch, device, channels_last)
        logits = model(images)
        loss, hits = _loss_and_correct(logits, labels, criterion)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.add(loss.detach(), hits, len(labels))
        if step % check_every == 0 or step == total:
            running.read()  # raises at the first non-finite loss, naming its step
            if progress:  # shown at tqdm's own redraws: forcing one every step cost ~0.2 ms a step
                bar.set_postfix(loss=f"{running.loss:.4f}", accuracy=f"{running.accuracy:.4f}", refresh=step == total)
    running.read()  # the loader may end before `total` steps
    _sync(device)
    return running.loss, running.accuracy, running.seen, time.perf_counter() - start


CHECK_EVERY = 25  # CUDA: steps between reads of the device (loss check, progress bar)


class _Running:
    """Mean loss and accuracy over the steps so far. Each step's loss and hit count stay where the
    step left them (on a GPU: no wait) until ``read`` fetches the pending ones together and sums
    them in Python floats (float64, in step order). Per step that is no tensor operation at all:
    on CPU, where the loop reads every step, it used to be several (about 50 us a step here)."""

    def __init__(self, epoch: int | None) -> None:
        # epoch: named when a non-finite loss stops training; None: such a loss is summed as it is
        self.epoch, self.steps, self.seen, self.loss_sum, self.correct = epoch, 0, 0, 0.0, 0
        self._pending: list[tuple[Tensor, Tensor, int]] = []

    def add(self, loss: Tensor, hits: Tensor, images: int) -> None:
        self._pending.append((loss, hits, images))

    def read(self) -> None:
        if not self._pending:
            return
        losses, hits, sizes = zip(*self._pending)
        self._pending = []
        for loss, hit, size in zip(torch.stack(losses).tolist(), torch.stack(hits).tolist(), sizes):
            self.steps += 1
            if self.epoch is not None and not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"the training loss became non-finite (nan or inf) at epoch {self.epoch}, step "
                    f"{self.steps}: lower trainer.lr or check the data"
                )
            self.loss_sum += loss * size
            self.correct += hit
            self.seen += size

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    device: torch.device,
    *,
    limit: int | None = None,
    channels_last: bool = False,
) -> tuple[float, float, int, float]:
    """One validation pass; returns (mean loss, accuracy, images, seconds)."""
    model.eval()
    batches, _ = _limited(loader, limit)
    running = _Running(epoch=None)  # a non-finite validation loss is recorded, not raised
    _sync(device)
    start = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        images, labels = _to(batch, device, channels_last)
        running.add(*_loss_and_correct(model(images), labels, criterion), len(labels))
        if step % CHECK_EVERY == 0:  # a bounded number of values pending
            running.read()
    running.read()
    _sync(device)
    return running.loss, running.accuracy, running.seen, time.perf_counter() - start


def epoch_line(epoch: int, epochs: int, steps: int, seconds: float, metrics: EpochMetrics) -> str:
    """Keras's epoch summary: ``Epoch 1/4 - 47/47 - 5s - loss: ... - val_accuracy: ...``."""
    return (
        f"Epoch {epoch}/{epochs} - {steps}/{steps} - {seconds:.0f}s - loss: {metrics.loss:.4f} - "
        f"accuracy: {metrics.accuracy:.4f} - val_loss: {metrics.val_loss:.4f} - "
        f"val_accuracy: {metrics.val_accuracy:.4f}"
    )


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    *,
    epochs: int,
    limit_train_batches: int | None = None,
    limit_val_batches: int | None = None,
    channels_last: bool = False,
    progress: bool = False,
    on_epoch_end: Callable[[int, EpochMetrics], None] = lambda epoch, metrics: None,
    print_fn: Callable[[str], None] = print,
    start_epoch: int = 1,
) -> list[EpochMetrics]:
    """Train for ``epochs`` epochs (from ``start_epoch``), validating after each; returns the history."""
    history = []
    steps = len(train_loader) if limit_train_batches is None else min(limit_train_batches, len(train_loader))
    for epoch in range(start_epoch, epochs + 1):
        loss, accuracy, seen, seconds = train_epoch(
            model, train_loader, optimizer, criterion, device, epoch=epoch, limit=limit_train_batches,
            channels_last=channels_last, progress=progress, description=f"Epoch {epoch}/{epochs}",
        )  # fmt: skip
        val_loss, val_accuracy, val_seen, val_seconds = evaluate(
            model, val_loader, criterion, device, limit=limit_val_batches, channels_last=channels_last
        )
        metrics = EpochMetrics(
            loss=loss,
            accuracy=accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            # Rounded well below timing noise: the MLflow UI shows 1010.9, not 1010.92155...
            train_images_per_sec=round(seen / seconds, 1) if seconds > 0 else math.inf,
            val_images_per_sec=round(val_seen / val_seconds, 1) if val_seconds > 0 else math.inf,
            epoch_time_sec=round(seconds + val_seconds, 3),
        )
        print_fn(epoch_line(epoch, epochs, steps, metrics.epoch_time_sec, metrics))
        on_epoch_end(epoch, metrics)
        history.append(metrics)
    return history


# --------------------------------------------------------------------------------------------
# What the pooling layers cost
# --------------------------------------------------------------------------------------------


POOLING_LAYERS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _pooling_layers(model: nn.Module) -> list[nn.Module]:
    """The model's pooling layers (kernels.MaxPool2d subclasses nn.MaxPool2d; models' 'same' wrapper counts)."""
    return [m for m in model.modules() if isinstance(m, POOLING_LAYERS) or type(m).__name__ == "SamePool2d"]


def measure_pool_share(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    *,
    steps: int = 3,
    channels_last: bool = False,
) -> dict[str, float]:
    """Share of a training step's time spent in the pooling layers, forward and backward.

    Times ``steps`` training steps (after one warm-up step) on copies of the model and optimizer,
    so the run being trained is untouched. Hooks around every pooling layer's forward and
    backward clock it (with a device sync on CUDA, which slows the window a little but makes the
    clock honest). Empty when the model has no pooling layer or the loader is too short.
    """
    model = copy.deepcopy(model)
    optimizer_copy = type(optimizer)(model.parameters(), **optimizer.defaults)
    layers = _pooling_layers(model)
    steps = min(steps, len(loader) - 1)
    if not layers or steps < 1:
        return {}
    spent = [0.0]
    started: dict[int, float] = {}

    def begin(module, *args) -> None:
        _sync(device)
        started[id(module)] = time.perf_counter()

    def end(module, *args) -> None:
        _sync(device)
        spent[0] += time.perf_counter() - started.pop(id(module))

    handles = []
    for layer in layers:
        handles += [
            layer.register_forward_pre_hook(begin),
            layer.register_forward_hook(end),
            layer.register_full_backward_pre_hook(begin),
            layer.register_full_backward_hook(end),
        ]
    batches = iter(loader)

    def step() -> None:
        images, labels = _to(next(batches), device, channels_last)
        loss, _ = _loss_and_correct(model(images), labels, criterion)
        optimizer_copy.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_copy.step()

    model.train()
    try:
        step()  # warm-up: first-call costs (allocations, kernel compilation) are not the steady state
        spent[0] = 0.0
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    return {
        "pool_time_ms_per_step": round(spent[0] * 1000 / steps, 3),
        "step_time_ms": round(wall * 1000 / steps, 3),
        "pool_time_share": round(min(spent[0] / wall, 1.0), 4),
    }
