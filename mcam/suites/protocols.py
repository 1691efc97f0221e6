"""Evaluation protocols as folds: each fold assigns every manifest row to train / val / test / unused.

All splits are subject-disjoint. Rows whose subjects pre-trained the LAM detectors
(`reserved` subjects) are never tested on, so no face a detector saw is scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from mcam.errors import InputError
from mcam.splits import shuffled_subjects, subject_folds, subject_parts


@dataclass(frozen=True)
class Fold:
    """One train/test assignment: `parts` holds 'train', 'val', 'test' or None per manifest row."""

    name: str
    parts: np.ndarray
    description: str

    def mask(self, part: str) -> np.ndarray:
        return self.parts == part


def _pool_split(table: pd.DataFrame, pool: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    parts = np.full(len(table), None, dtype=object)
    parts[pool] = subject_parts(table[pool], val_fraction, 0.0, seed)
    return parts


def _check_test(fold: Fold, table: pd.DataFrame) -> Fold:
    test = table[fold.mask("test")]
    if test.empty:
        raise ValueError(f"fold {fold.name!r}: no test rows (every candidate subject was reserved or missing)")
    if (fold.mask("train") & fold.mask("test")).any() or set(table[fold.mask("train")]["subject"]) & set(test["subject"]):
        raise AssertionError(f"fold {fold.name!r}: a subject is in train and test")
    return fold


def loro(table: pd.DataFrame, reserved: set[str], val_fraction: float, seed: int, **_: Any) -> list[Fold]:
    """Leave one region out: train+val on all other regions, test on the held-out region."""
    folds = []
    for region in sorted(table["region"].unique()):
        held_out = (table["region"] == region).to_numpy()
        parts = _pool_split(table, ~held_out, val_fraction, seed)
        parts[held_out & ~table["subject"].isin(reserved).to_numpy()] = "test"
        folds.append(_check_test(Fold(region, parts, f"train on all regions but {region}, test on {region}"), table))
    return folds


def cross(table: pd.DataFrame, reserved: set[str], val_fraction: float, seed: int, column: str = "region",
          **_: Any) -> list[Fold]:
    """Cross-evaluation matrix: train on X, test on each Y (X == Y: the manifest's held-out test subjects of X)."""
    values = sorted(table[column].unique())
    folds = []
    for train_value in values:
        is_train_value = (table[column] == train_value).to_numpy()
        own_test = is_train_value & (table.get("split", pd.Series("", index=table.index)) == "test").to_numpy()
        parts_train = _pool_split(table, is_train_value & ~own_test, val_fraction, seed)
        for test_value in values:
            parts = parts_train.copy()
            candidates = own_test if test_value == train_value else (table[column] == test_value).to_numpy()
            parts[candidates & ~table["subject"].isin(reserved).to_numpy()] = "test"
            folds.append(_check_test(Fold(f"{train_value}->{test_value}", parts,
                                          f"train on {column} {train_value}, test on {test_value}"), table))
    return folds


def kfold(table: pd.DataFrame, reserved: set[str], val_fraction: float, seed: int, k: int = 5, **_: Any) -> list[Fold]:
    """Within-region subject-disjoint k-fold (the paper's 80/20 without subject leakage), all regions pooled per fold.

    Every fold tests about 1/k of each region's subjects (StratifiedGroupKFold by region); reserved
    subjects are never tested (they may train).
    """
    fold_of = subject_folds(table, k, seed, by="region", exclude=reserved)
    folds = []
    for i in range(k):
        is_test = table["subject"].astype(str).map(fold_of).eq(i).to_numpy()
        parts = _pool_split(table, ~is_test, val_fraction, seed)
        parts[is_test] = "test"
        folds.append(_check_test(Fold(f"fold{i}", parts, f"subject fold {i} of {k}, every region"), table))
    return folds


def mixing(table: pd.DataFrame, reserved: set[str], val_fraction: float, seed: int, base: str = "western_posed",
           added: str = "latin_wild", fractions: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 1.0), column: str = "region",
           **_: Any) -> list[Fold]:
    """Dataset mixing (EiLA-style): train on `base` plus a fraction of `added`'s training subjects; test on held-out subjects of both."""
    is_test_split = (table.get("split", pd.Series("", index=table.index)) == "test").to_numpy()
    is_base, is_added = (table[column] == base).to_numpy(), (table[column] == added).to_numpy()
    added_subjects = shuffled_subjects(table[is_added & ~is_test_split]["subject"], seed)  # nested draws: a prefix each
    folds = []
    for fraction in fractions:
        chosen = set(added_subjects[:int(np.floor(fraction * len(added_subjects) + 0.5))])
        pool = (is_base & ~is_test_split) | (is_added & ~is_test_split & table["subject"].isin(chosen).to_numpy())
        parts = _pool_split(table, pool, val_fraction, seed)
        parts[(is_base | is_added) & is_test_split & ~table["subject"].isin(reserved).to_numpy()] = "test"
        folds.append(_check_test(Fold(f"{added}@{int(round(100 * fraction))}%", parts,
                                      f"{base} + {fraction:.0%} of {added} training subjects"), table))
    return folds


PROTOCOL_FOLDS: dict[str, Callable[..., list[Fold]]] = {
    "loro": loro, "cross": cross, "kfold": kfold, "mixing": mixing, "ablation": loro,
}


SELECTIONS = ("in_domain", "leave_one_source_region_out")


def selection_folds(fold: Fold, table: pd.DataFrame, selection: str) -> list[Fold]:
    """The folds a fold's models are selected (early-stopped) on. 'in_domain': the fold itself (val = held-out
    subjects of the training regions). 'leave_one_source_region_out' (DomainBed's leave-one-domain-out): one
    variant per training region, whose rows become the validation part while the other training regions
    train; the test part is the fold's own and no variant reads it. Variants are named '<fold>~<region>'."""
    if selection == "in_domain":
        return [fold]
    if selection != "leave_one_source_region_out":
        raise InputError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    pool = fold.mask("train") | fold.mask("val")
    regions = sorted(table.loc[pool, "region"].astype(str).unique())
    if len(regions) < 2:
        raise InputError(f"fold {fold.name!r}: selection leave_one_source_region_out needs training rows from 2 or "
                         f"more regions, got {regions}")
    variants = []
    for region in regions:
        parts = fold.parts.copy()
        is_region = (table["region"].astype(str) == region).to_numpy()
        parts[pool & is_region], parts[pool & ~is_region] = "val", "train"
        variants.append(Fold(f"{fold.name}~{region}", parts,
                             f"{fold.description}; early stopping on the held-out training region {region}"))
    return variants


def make_folds(protocol: str, table: pd.DataFrame, reserved: set[str], val_fraction: float, seed: int,
               args: dict[str, Any] | None = None, only: Sequence[str] | None = None) -> list[Fold]:
    """The folds of a protocol over a manifest table (optionally only the named ones)."""
    folds = PROTOCOL_FOLDS[protocol](table, reserved, val_fraction, seed, **dict(args or {}))
    if only:
        unknown = set(only) - {f.name for f in folds}
        if unknown:
            raise InputError(f"unknown folds {sorted(unknown)}; folds: {[f.name for f in folds]}")
        folds = [f for f in folds if f.name in only]
    return folds
