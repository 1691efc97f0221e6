"""Tensor metrics for fusion runs: confusion matrix, accuracy, macro-F1, mean cue weights by group."""
from __future__ import annotations

import torch
from torch import Tensor


def confusion(target: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """Counts [K, K]: rows = true class, columns = predicted class."""
    return stacked_confusion(target, pred.unsqueeze(0), num_classes)[0]


def stacked_confusion(target: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """Counts [A, K, K] of A models' predictions pred [A, B] of the same rows (target [B])."""
    a, k = pred.shape[0], num_classes
    member = torch.arange(a, device=pred.device).unsqueeze(1)
    return torch.bincount((member * k * k + target * k + pred).flatten(), minlength=a * k * k).reshape(a, k, k)


def accuracy(target: Tensor, pred: Tensor) -> float:
    return float((target == pred).float().mean()) if len(target) else float("nan")


def macro_f1(target: Tensor, pred: Tensor, num_classes: int) -> float:
    """Mean F1 over the classes present in target or prediction (as sklearn's macro average)."""
    return float(stacked_scores(target, pred.unsqueeze(0), num_classes)[1][0]) if len(target) else float("nan")


def stacked_scores(target: Tensor, pred: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Accuracy and macro F1 [A] of A models' predictions pred [A, B] of the same rows (target [B]), at once."""
    acc = (pred == target).double().mean(dim=1)
    cm = stacked_confusion(target, pred, num_classes).double()
    tp = cm.diagonal(dim1=1, dim2=2)
    support = cm.sum(2) + cm.sum(1)
    present = support > 0
    f1 = torch.where(present, 2 * tp / support.clamp_min(1), torch.zeros_like(tp)).sum(1) / present.sum(1)
    return acc, f1


def mean_by(weights: Tensor, keys: Tensor, n_keys: int) -> tuple[Tensor, Tensor]:
    """Mean weight rows per key: ([..., n_keys, n_cues], counts [n_keys]) of weights [..., B, n_cues] (leading dims:
    models); keys without rows give 0."""
    counts = torch.bincount(keys, minlength=n_keys)
    sums = weights.new_zeros(*weights.shape[:-2], n_keys, weights.shape[-1]).index_add_(-2, keys, weights)
    return sums / counts.clamp_min(1).unsqueeze(1).to(weights.dtype), counts
