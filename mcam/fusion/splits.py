"""Train/val/test assignment of manifest rows: subject-disjoint, by region, by dataset, or from the manifest."""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

SplitMode = Literal["subject", "regions", "datasets", "manifest"]


def _take(n: int, fraction: float) -> int:
    """How many of n subjects a fraction gets: at least one when the fraction is positive and n >= 3."""
    if fraction <= 0:
        return 0
    return min(n - 1, max(1 if n >= 3 else 0, int(round(fraction * n))))


def subject_split(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val'/'test' per row with no subject in two parts; subjects are drawn per region (stratified)."""
    rng = np.random.default_rng(seed)
    first_region = frame.drop_duplicates("subject").set_index("subject")["region"]
    part_of: dict[str, str] = {}
    for region in sorted(first_region.unique()):
        subjects = rng.permutation(sorted(first_region.index[first_region == region]))
        n_test = _take(len(subjects), test_fraction)
        n_val = _take(len(subjects) - n_test, val_fraction / max(1e-9, 1 - test_fraction)) if val_fraction > 0 else 0
        for i, subject in enumerate(subjects):
            part_of[subject] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return frame["subject"].map(part_of).to_numpy(dtype=object)


def assign_parts(frame: pd.DataFrame, mode: SplitMode, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0, train_values: Sequence[str] | None = None,
                 test_values: Sequence[str] | None = None) -> np.ndarray:
    """Part per row ('train', 'val', 'test' or None = unused).

    subject: subject-disjoint random split; regions/datasets: test = rows whose region/dataset is in
    `test_values`, train+val (subject-disjoint val) = `train_values` (default: all the others);
    manifest: the manifest's own `split` column.
    """
    if mode == "subject":
        return subject_split(frame, val_fraction, test_fraction, seed)
    if mode == "manifest":
        if "split" not in frame.columns:
            raise ValueError("split 'manifest' needs a 'split' column in the manifest")
        return frame["split"].where(frame["split"].isin(["train", "val", "test"]), None).to_numpy(dtype=object)
    column = {"regions": "region", "datasets": "dataset"}[mode]
    if not test_values:
        raise ValueError(f"split {mode!r} needs test_{mode} (held-out {column} values)")
    known = set(frame[column])
    for value in [*test_values, *(train_values or [])]:
        if value not in known:
            raise ValueError(f"split {mode!r}: unknown {column} {value!r}; known: {sorted(known)}")
    is_test = frame[column].isin(list(test_values)).to_numpy()
    is_pool = (frame[column].isin(list(train_values)) if train_values else ~frame[column].isin(list(test_values))).to_numpy()
    if (is_test & is_pool).any():
        raise ValueError(f"split {mode!r}: a {column} is both in train and test")
    parts = np.full(len(frame), None, dtype=object)
    parts[is_test] = "test"
    pool = frame[is_pool]
    parts[is_pool] = subject_split(pool, val_fraction, 0.0, seed)
    return parts
