"""Per-run metrics from a predictions table: overall, per region/group, a subject-bootstrap CI.

Group accuracy and equalized odds are fairlearn's definitions (MetricFrame, equalized_odds_difference; the tests
hold them equal) computed from per-group counts: fairlearn's per-group pandas/sklearn calls cost 0.8 s per run,
about half of a suite's fusion stage.

CIs and paired tests across replicates (what the report shows) are in mcam.suites.stats.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from mcam.fusion.predictions import LABEL, Predictions, weight_column


def probabilities(predictions: pd.DataFrame, class_names: Sequence[str] | None = None) -> np.ndarray:
    """The class probabilities as an array [N, K], columns in `class_names` order (default: the file's)."""
    probs = Predictions.from_frame(predictions).probabilities
    return probs[list(class_names) if class_names is not None else probs.columns].to_numpy(dtype=float)


def cross_entropy(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> float:
    """Mean negative log-probability of the true class (columns of `probs` in `class_names` order).

    Not sklearn's log_loss: it assumes columns in sorted label order, which class_names are not.
    """
    index = {c: k for k, c in enumerate(class_names)}
    rows = np.asarray([index[y] for y in y_true])
    probs = probs / probs.sum(1, keepdims=True)
    return float(-np.log(probs[np.arange(len(rows)), rows]).mean())


def group_metrics(predictions: pd.DataFrame, column: str) -> dict[str, float | str]:
    """Accuracy per value of `column`, its spread, worst value and max gap, and the multi-class equalized odds: the
    largest one-vs-rest TPR/FPR gap between groups over the true classes (a group without positives, or without
    negatives, of a class has rate 0, as in fairlearn)."""
    codes, groups = pd.factorize(predictions[column], sort=True)
    labels, predicted = predictions["label"].to_numpy(), predictions["pred"].to_numpy()

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values.astype(float), minlength=len(groups))

    def rate(hits: np.ndarray, among: np.ndarray) -> np.ndarray:
        total = per_group(among)
        return np.divide(per_group(hits & among), total, out=np.zeros_like(total), where=total > 0)

    accuracy = per_group(labels == predicted) / np.bincount(codes, minlength=len(groups))
    odds = []
    for c in sorted(set(labels)):
        positive, chosen = labels == c, predicted == c
        tpr, fpr = rate(chosen, positive), rate(chosen, ~positive)
        odds.append(max(np.ptp(tpr), np.ptp(fpr)))
    worst = int(np.argmin(accuracy))
    return {
        f"{column}_accuracy": json.dumps({str(k): round(float(v), 4) for k, v in zip(groups, accuracy)}),
        f"{column}_acc_std": float(np.std(accuracy)) if len(groups) > 1 else 0.0,
        f"{column}_worst": str(groups[worst]),
        f"{column}_worst_acc": float(accuracy[worst]),
        f"{column}_max_gap": float(np.ptp(accuracy)),
        f"{column}_equalized_odds": float(np.nanmax(odds)) if odds else float("nan"),
    }


def bootstrap_ci(correct: np.ndarray, clusters: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of accuracy, resampling whole subjects (clusters) so correlated samples are not overcounted."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(clusters, return_inverse=True)
    hits = np.bincount(inverse, weights=correct.astype(float), minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids)).astype(float)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    accuracies = hits[draws].sum(1) / counts[draws].sum(1)
    alpha = (1 - level) / 2
    return float(np.quantile(accuracies, alpha)), float(np.quantile(accuracies, 1 - alpha))


def run_metrics(predictions: pd.DataFrame, class_names: Sequence[str] | None = None,
                seed: int = 0) -> dict[str, float | str]:
    """One results row's metric columns for a run's test predictions (a Predictions, or a frame in its on-disk
    layout); class_names defaults to the predictions' classes."""
    predictions = Predictions.from_frame(predictions)
    class_names = predictions.classes if class_names is None else list(class_names)
    y_true, y_pred = predictions[LABEL].to_numpy(), predictions.predicted.to_numpy()
    correct = y_true == y_pred
    low, high = bootstrap_ci(correct, predictions["subject"].to_numpy(), seed=seed)
    probs = np.clip(probabilities(predictions, class_names), 1e-7, 1)
    precision, recall, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=list(class_names), zero_division=0)
    row: dict[str, float | str] = {
        "n_test": int(len(predictions)),
        "accuracy": float(correct.mean()),
        "acc_ci_low": low,
        "acc_ci_high": high,
        # over the classes present in truth or prediction (as the TensorBoard metric): a test set without
        # some class (e.g. SMIC's 3) is not charged F1 = 0 for it
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "cross_entropy": cross_entropy(y_true, probs, class_names),
        "precision": json.dumps({c: round(float(p), 4) for c, p in zip(class_names, precision)}),
        "recall": json.dumps({c: round(float(r), 4) for c, r in zip(class_names, recall)}),
        "confusion": json.dumps(confusion_matrix(y_true, y_pred, labels=list(class_names)).tolist()),
    }
    for column in ("region", "group"):
        if column in predictions.columns and predictions[column].notna().all():
            row.update(group_metrics(predictions, column))
    for cue, weight in predictions.mean_weights().items():  # mean attention per cue: results' weight_<cue>
        row[weight_column(cue)] = float(weight)
    return row
