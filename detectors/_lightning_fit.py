"""Detector training as a LightningModule run by a Lightning Trainer: the one training path of the CNN detectors.

Faces stay uint8 crops until a `DataLoader` reads them (`FaceDataset` preprocesses one face per item), so a
training set is never held as one float tensor; augmentation runs on the training device; the loss is summed on
the device (no `.item()` per step). Randomness follows the project's rules: the batch order and augmentation draw
from generators seeded with the fit's `seed`, and dropout (which only torch's global generators serve) runs inside
`mcam.determinism.seeded`, which restores the caller's generators, CUDA's included, afterwards.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mcam import progress
from mcam.detector import lightning_device
from mcam.determinism import in_order, seeded
from mcam.labels import CANONICAL, HeadMap
from mcam.quiet import quiet_lightning
from mcam.splits import require_classes

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Targets:
    """Faces kept for a head (indices into the TrainingSet) with their class indices, and how many were skipped."""

    keep: np.ndarray
    y: np.ndarray
    skipped: int


def head_targets(labels: Sequence[str], head: HeadMap) -> Targets:
    """Class indices of labels for a head; skipped (and counted): labels the head has no class for.

    Labels are canonical emotions mapped through the head map, or already one of the head's own
    classes (e.g. SMIC's 'negative', which has no canonical equivalent).
    """
    idx = np.array([head.classes.index(label) if label in head.classes and label not in CANONICAL
                    else head.index(label) for label in labels], dtype=np.int64)
    keep = np.flatnonzero(idx >= 0)
    return Targets(keep=keep, y=idx[keep], skipped=int(len(idx) - len(keep)))


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image [N, C, H, W] left-right with probability 1/2 (expressions are near-symmetric).

    The draw comes from `generator` (on the CPU, so a fit draws the same flips on every device)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the annotated (non-NaN) entries of `target`."""
    mask = ~torch.isnan(target)
    return ((predicted - torch.nan_to_num(target)) ** 2)[mask].mean()


class FaceDataset(Dataset):
    """Faces with their targets; `preprocess` (a detector's, list of faces -> float tensor) runs per item as read."""

    def __init__(self, faces: Sequence[np.ndarray], targets: np.ndarray | torch.Tensor,
                 preprocess: Callable[[list[np.ndarray]], torch.Tensor]) -> None:
        if len(faces) != len(targets):
            raise ValueError(f"{len(faces)} faces but {len(targets)} targets")
        self.faces = list(faces)
        self.targets = torch.as_tensor(targets)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess([self.faces[index]])[0], self.targets[index]


@dataclass(frozen=True)
class FitSettings:
    """How a detector network is trained.

    optimizer: "adam" (Adam at a constant `lr`) or "adamw_onecycle" (AdamW with `weight_decay` and a
    one-cycle schedule peaking at `lr`, stepped per batch). precision: a Lightning Trainer precision
    ("32-true", "bf16-mixed", "16-mixed"). Only parameters with requires_grad (not frozen) are trained.
    """

    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    precision: str = "32-true"

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw_onecycle"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw_onecycle', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0, got {self}")


def memory_format(dims: int) -> torch.memory_format:
    """The layout convolutions run fastest in for batches of `dims` dimensions: channels-last for images [N, C, H, W]
    and clips [N, C, T, H, W] (oneDNN on the CPU: about 20-30 % less time per training step for vgg, au and micro on
    this project's 2-core machine; cuDNN's tensor-core kernels on a GPU), the usual layout otherwise. The numbers
    are those of a convolution in that layout: deterministic, within float rounding of the other layout's."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dims, torch.contiguous_format)


def to_layout(x: torch.Tensor) -> torch.Tensor:
    """A batch in `memory_format` of its dimensions."""
    return x.contiguous(memory_format=memory_format(x.dim()))


class DetectorTraining(pl.LightningModule):
    """A detector network with its loss, optimiser and augmentation, for a Lightning Trainer."""

    def __init__(self, net: nn.Module, loss: Loss, settings: FitSettings, augment: Augment | None = None) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.settings = settings
        self.augment = augment
        self.generator = torch.Generator().manual_seed(settings.seed)  # augmentation draws
        self.loss_sum: torch.Tensor | None = None
        self.seen = 0

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.seen = torch.zeros((), device=self.device), 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        if self.augment is not None:
            x = self.augment(x, self.generator)
        loss = self.loss(self.net(to_layout(x)), y)
        self.loss_sum += loss.detach() * len(y)
        self.seen += len(y)
        return loss

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's optimiser/scheduler dict
        params = [p for p in self.net.parameters() if p.requires_grad]
        settings = self.settings
        if settings.optimizer == "adam":
            return torch.optim.Adam(params, lr=settings.lr)
        optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.lr,
                                                       total_steps=max(1, self.trainer.estimated_stepping_batches))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class TrainingBar(pl.Callback):
    """The job's progress bar over a whole fit (every batch of every epoch, so its ETA is the fit's), the epoch and
    its mean training loss beside it. Reads the loss once an epoch (one device sync an epoch, none a step)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.bar = None

    def on_train_start(self, trainer: pl.Trainer, module: "DetectorTraining") -> None:
        self.bar = progress.bar(int(trainer.estimated_stepping_batches), f"training {self.what}", "batch")

    def on_train_batch_end(self, trainer: pl.Trainer, module: "DetectorTraining", *args: object) -> None:
        self.bar.update(1)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: "DetectorTraining") -> None:
        loss = float(module.loss_sum) / max(module.seen, 1)
        self.bar.set_postfix_str(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, loss {loss:.4f}")

    def on_train_end(self, trainer: pl.Trainer, module: "DetectorTraining") -> None:
        self.bar.close()


def fit_network(net: nn.Module, data: FaceDataset, *, loss: Loss, settings: FitSettings, device: str,
                augment: Augment | None = None, what: str | None = None) -> dict[str, float]:
    """Train `net` in place on `data` with a Lightning Trainer on `device`; the net ends on `device` in eval mode.

    Classification targets (integer class indices) of a single class are refused first (InputError naming
    `what`, default the network's class): labels a head maps onto one class leave nothing to learn. While the job's
    progress is shown (`mcam.progress`), a bar follows the fit under that name.
    Returns the last epoch's mean training loss, the epochs and the seconds taken.
    """
    what = what or type(net).__name__
    if not data.targets.is_floating_point():
        require_classes(data.targets.tolist(), f"{what}: {len(data)} training targets "
                                               "(class indices after the head's label map)")
    quiet_lightning()
    module = DetectorTraining(net, loss, settings, augment)
    loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(settings.seed))
    trainer = pl.Trainer(**lightning_device(device), max_epochs=settings.epochs, precision=settings.precision,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, deterministic=None,
                         callbacks=[TrainingBar(f"{what} (seed {settings.seed}, {len(data)} faces)")]
                         if progress.enabled() else None)
    start = time.perf_counter()
    net.train()  # Lightning keeps the modes it finds; a loaded detector's network is in eval mode
    if len(data):  # the weights in the batches' layout while training; saved and used in the usual one
        net.to(memory_format=memory_format(data[0][0].dim() + 1))
    with seeded(settings.seed):  # dropout draws from torch's global generators: seeded here, restored after
        trainer.fit(module, loader)
    net.to(device, memory_format=torch.contiguous_format).eval()
    return {"train_loss": float(module.loss_sum) / max(module.seen, 1), "epochs": float(settings.epochs),
            "seconds": time.perf_counter() - start}


@torch.inference_mode()
def predict(net: nn.Module, data: Dataset, device: str, batch_size: int) -> torch.Tensor:
    """`net`'s outputs (on the CPU) for every item of `data` in order, in eval mode."""
    net.eval()
    parts = [net(to_layout(x.to(device))).float().cpu() for x, _ in in_order(data, batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)


def accuracy(net: nn.Module, data: FaceDataset, device: str, batch_size: int) -> float:
    """Top-1 accuracy of a classifier `net` (logits out) on `data` (NaN when empty)."""
    if len(data) == 0:
        return float("nan")
    return float((predict(net, data, device, batch_size).argmax(1) == data.targets).float().mean())
