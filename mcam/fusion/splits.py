"""Train/val/test assignment of manifest rows: subject-disjoint, by region, by dataset, or from the manifest.

The subject-disjoint draws themselves live in `mcam.splits` (scikit-learn group splitters).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from mcam.splits import subject_parts

SplitMode = Literal["subject", "regions", "datasets", "manifest"]


def assign_parts(frame: pd.DataFrame, mode: SplitMode, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0, train_values: Sequence[str] | None = None,
                 test_values: Sequence[str] | None = None) -> np.ndarray:
    """Part per row ('train', 'val', 'test' or None = unused).

    subject: subject-disjoint random split; regions/datasets: test = rows whose region/dataset is in
    `test_values`, train+val (subject-disjoint val) = `train_values` (default: all the others);
    manifest: the manifest's own `split` column.
    """
    if mode == "subject":
        return subject_parts(frame, val_fraction, test_fraction, seed)
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
    parts[is_pool] = subject_parts(pool, val_fraction, 0.0, seed)
    return parts
