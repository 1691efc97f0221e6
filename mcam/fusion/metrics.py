"""Tensor metrics for fusion runs: confusion matrix, accuracy, macro-F1, mean cue weights by group."""
from __future__ import annotations

import torch
from torch import Tensor


def confusion(target: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """Counts [K, K]: rows = true class, columns = predicted class."""
    return torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def accuracy(target: Tensor, pred: Tensor) -> float:
    return float((target == pred).float().mean()) if len(target) else float("nan")


def macro_f1(target: Tensor, pred: Tensor, num_classes: int) -> float:
    """Mean F1 over the classes present in target or prediction (as sklearn's macro average)."""
    if not len(target):
        return float("nan")
    cm = confusion(target, pred, num_classes).double()
    tp = cm.diag()
    support = cm.sum(1) + cm.sum(0)
    present = support > 0
    return float((2 * tp[present] / support[present]).mean())


def mean_by(weights: Tensor, keys: Tensor, n_keys: int) -> tuple[Tensor, Tensor]:
    """Mean weight rows per key: ([n_keys, n_cues], counts [n_keys]); keys without rows give 0."""
    counts = torch.bincount(keys, minlength=n_keys)
    sums = torch.zeros(n_keys, weights.shape[1], dtype=weights.dtype).index_add_(0, keys, weights)
    return sums / counts.clamp_min(1).unsqueeze(1).to(weights.dtype), counts
