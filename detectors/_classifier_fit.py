"""A small plain-PyTorch classification loop shared by the trainable image/clip detectors (vgg, micro)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mcam.determinism import seeded
from mcam.labels import CANONICAL, HeadMap
from mcam.splits import require_classes


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
    """Mirror each image [N, C, H, W] left-right with probability 1/2 (expressions are near-symmetric)."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, batch_size: int) -> float:
    """Top-1 accuracy of `model` on tensors x, y (evaluated in eval mode, batched)."""
    if len(y) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == y[start:start + batch_size]).sum())
    return correct / len(y)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: str, epochs: int,
                     batch_size: int, lr: float, seed: int = 0,
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     val: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """Train `model` (logits out) with Adam + cross-entropy on x, y; returns loss/accuracy/time metrics.

    Parameters with requires_grad=False (frozen layers) are left out of the optimiser. Refuses (InputError)
    targets of a single class: labels a head maps onto one class leave nothing to learn.
    """
    require_classes(y.tolist(), f"{type(model).__name__}: {len(y)} training targets (class indices after the "
                                "head's label map)")
    with seeded(seed):  # draws from torch's global generators: seeded, then restored
        return _train(model, x, y, device=device, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      augment=augment, val=val)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: str, epochs: int, batch_size: int,
           lr: float, seed: int, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
           val: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    model.to(device)
    start_time = time.perf_counter()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        model.train()
        loss_sum, seen = 0.0, 0
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            index = order[start:start + batch_size]
            xb = x[index]
            if augment is not None:
                xb = augment(xb, generator)
            logits = model(xb.to(device))
            loss = nn.functional.cross_entropy(logits, y[index].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            loss_sum += loss.item() * len(index)
            seen += len(index)
    metrics = {"train_loss": loss_sum / max(seen, 1), "epochs": float(epochs),
               "seconds": time.perf_counter() - start_time,
               "train_acc": accuracy(model, x, y, device, batch_size)}
    if val is not None:
        metrics["val_acc"] = accuracy(model, val[0], val[1], device, batch_size)
    model.eval()
    return metrics
