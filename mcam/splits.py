"""Subject-disjoint splits of manifest rows, built on scikit-learn's group splitters.

Every split here keeps each subject's rows in one part, is seeded by its `seed` argument alone
(no global random state: scikit-learn gets an integer `random_state` derived from the seed, and
NumPy's legacy generator behind it keeps its stream across versions), and does not depend on the
order of the rows. Per-stratum splits (one region at a time) derive the stratum's random state
from (seed, stratum name), so a region's split does not change when other regions are added or
left out of the table.

- `subject_counts`: how many subjects a fraction gets (one rule for every split).
- `subject_parts`: train/val/test per row, stratified by region (GroupShuffleSplit per region);
  the fusion data module, the suites' protocols and the synthetic data's `split` column use it.
- `assign_splits`: the same as a `split` column (synthetic data, `mcam prepare`).
- `train_val_split`: train/val manifests for detector training (GroupShuffleSplit).
- `subject_folds`: k subject-disjoint folds balanced per region (StratifiedGroupKFold).
- `shuffled_subjects`: a seeded order of subjects, for nested draws (the mixing protocol).
- `check_learnable` / `require_classes`: refuse parts too thin to learn from, before any training.
"""
from __future__ import annotations

import warnings
import zlib
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from mcam.errors import InputError
from mcam.manifest import Manifest

__all__ = ["assign_splits", "check_learnable", "random_state", "require_classes", "shuffled_subjects",
           "subject_counts", "subject_folds", "subject_parts", "train_val_split"]

HELD_OUT_ORDER = ("test", "val")  # held-out parts are drawn in this order; train is what is left


def random_state(seed: int, *keys: str) -> int:
    """A scikit-learn `random_state` (0 .. 2**32-1) from `seed` and names (stratum, part): stable, no global RNG."""
    entropy = [int(seed) % 2**64, *(zlib.crc32(k.encode("utf-8")) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def subject_counts(n_subjects: int, fractions: Mapping[str, float], at_least_one_from: int = 3) -> dict[str, int]:
    """Subjects per held-out part, in the mapping's order; train gets the rest.

    A part gets round(fraction * n) subjects (halves round up), at least one when its fraction
    is positive and n >= `at_least_one_from`, and never so many that no subject is left for
    train. So 20 subjects at 0.15 give 3 and 3 subjects at 0.1 give 1; 2 subjects at 0.2 give
    0 (1 with at_least_one_from=2, leaving 1 for train).
    """
    if n_subjects < 0:
        raise ValueError(f"n_subjects must be >= 0, got {n_subjects}")
    counts: dict[str, int] = {}
    left = n_subjects
    for part, fraction in fractions.items():
        if not 0 <= fraction < 1:
            raise ValueError(f"{part} fraction must be in [0, 1), got {fraction}")
        wanted = int(np.floor(fraction * n_subjects + 0.5))
        if fraction > 0 and n_subjects >= at_least_one_from:
            wanted = max(wanted, 1)
        counts[part] = max(0, min(wanted, left - 1))
        left -= counts[part]
    return counts


def _draw(rows: pd.DataFrame, counts: Mapping[str, int], seed: int, stratum: str) -> dict[str, str]:
    """Part per subject of `rows` (one stratum): each held-out part drawn by GroupShuffleSplit from what is left."""
    subjects = rows["subject"].astype(str).to_numpy()
    part_of: dict[str, str] = {}
    left = np.ones(len(rows), dtype=bool)
    for part, count in counts.items():
        if count == 0:
            continue
        splitter = GroupShuffleSplit(n_splits=1, test_size=count, random_state=random_state(seed, stratum, part))
        index = np.flatnonzero(left)
        _, held = next(splitter.split(index, groups=subjects[index]))
        part_of.update(dict.fromkeys(subjects[index[held]], part))
        left[index[held]] = False
    part_of.update(dict.fromkeys(subjects[left], "train"))
    return part_of


def _strata(frame: pd.DataFrame, by: str | None) -> pd.Series:
    """Stratum per subject: its first row's `by` value (a subject counts in one stratum only)."""
    first = frame.drop_duplicates("subject").assign(subject=lambda t: t["subject"].astype(str)).set_index("subject")
    if by is None:
        return pd.Series("all", index=first.index)
    return first[by].astype(str)


def subject_parts(frame: pd.DataFrame, val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0,
                  by: str | None = "region", at_least_one_from: int = 3) -> np.ndarray:
    """'train'/'val'/'test' per row of `frame` (needs a `subject` column), no subject in two parts.

    Stratified by `by` (None: not stratified): within each stratum `subject_counts` subjects go
    to test, then to val, drawn by GroupShuffleSplit seeded from (seed, stratum, part); the rest
    is train.
    """
    if frame.empty:
        return np.empty(0, dtype=object)
    strata = _strata(frame, by)
    subjects = frame["subject"].astype(str)
    fractions = dict(zip(HELD_OUT_ORDER, (test_fraction, val_fraction)))
    part_of: dict[str, str] = {}
    for stratum in sorted(strata.unique()):
        members = strata.index[strata == stratum]
        rows = frame[subjects.isin(members).to_numpy()]
        part_of.update(_draw(rows, subject_counts(len(members), fractions, at_least_one_from), seed, stratum))
    return subjects.map(part_of).to_numpy(dtype=object)


def assign_splits(table: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.Series:
    """A `split` column: `subject_parts` per region with fractions {'val': .., 'test': ..} (missing: 0)."""
    unknown = set(fractions) - {"val", "test"}
    if unknown:
        raise ValueError(f"split fractions: unknown parts {sorted(unknown)} (val, test; train is the rest)")
    parts = subject_parts(table, float(fractions.get("val", 0.0)), float(fractions.get("test", 0.0)), seed)
    return pd.Series(parts, index=table.index, dtype=object)


def train_val_split(manifest: Manifest, val_fraction: float, seed: int) -> tuple[Manifest, Manifest | None]:
    """Train/val manifests with disjoint subjects (for training detectors); val None when empty.

    `subject_counts` subjects over the whole manifest (not stratified) go to val, drawn by
    GroupShuffleSplit: at least one when val_fraction > 0 and there are >= 2 subjects.
    """
    table = manifest.table
    if val_fraction <= 0 or table["subject"].nunique() < 2:
        return manifest, None
    is_val = subject_parts(table, val_fraction, 0.0, seed, by=None, at_least_one_from=2) == "val"
    return manifest.subset(~is_val), manifest.subset(is_val)


def subject_folds(frame: pd.DataFrame, k: int, seed: int, by: str | None = "region",
                  exclude: Iterable[Hashable] = ()) -> dict[str, int]:
    """Fold (0 .. k-1) per subject: k subject-disjoint folds, each with about 1/k of every region's subjects.

    StratifiedGroupKFold (shuffled, seeded) with the stratum as class and the subject as group.
    Subjects in `exclude` get no fold.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    subjects = frame["subject"].astype(str)
    keep = ~subjects.isin({str(s) for s in exclude}).to_numpy()
    strata = _strata(frame, by)
    rows = subjects[keep].to_numpy()
    if len(np.unique(rows)) < k:
        raise ValueError(f"{len(np.unique(rows))} subjects cannot fill {k} subject-disjoint folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=random_state(seed, "folds"))
    fold_of: dict[str, int] = {}
    for i, (_, test) in enumerate(splitter.split(rows, strata[rows].to_numpy(), groups=rows)):
        fold_of.update(dict.fromkeys(rows[test], i))
    return fold_of


def shuffled_subjects(subjects: Iterable[Hashable], seed: int) -> list[str]:
    """The distinct subjects in a seeded random order (first n = a random draw of n; draws are nested)."""
    ordered = sorted({str(s) for s in subjects})
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, zlib.crc32(b"shuffled_subjects")]))
    return [ordered[i] for i in rng.permutation(len(ordered))]


def require_classes(train_classes: Sequence[Hashable], what: str) -> None:
    """InputError unless the training targets hold at least two classes (one class: nothing to learn)."""
    names, counts = np.unique(np.asarray([str(c) for c in train_classes], dtype=object), return_counts=True)
    if len(names) == 0:
        raise InputError(f"{what}: no training rows")
    if len(names) == 1:
        raise InputError(f"{what}: every training row ({counts[0]}) is class {names[0]!r}; "
                         "at least two classes are needed to learn from")


def check_learnable(frame: pd.DataFrame, what: str, *, need_val: bool, classes: str = "label",
                    val_hint: str = "") -> None:
    """Refuse (InputError) parts too thin to learn from; warn once for held-out classes training never sees.

    `frame`: one row per sample with `part` ('train'/'val'/'test'/None), `subject` and the class column.
    Errors: no training rows or one class in them; with `need_val`, an empty val part (a single
    training subject is named as the cause: a subject-disjoint val part needs two). `what` names
    the data and option at fault, `val_hint` says how to get a val part.
    """
    part = frame["part"].to_numpy(dtype=object)
    train = frame[part == "train"]
    require_classes(train[classes].tolist(), what)
    if need_val and not (part == "val").any():
        subjects = sorted(train["subject"].astype(str).unique())
        if len(subjects) == 1:
            raise InputError(f"{what}: one subject ({subjects[0]!r}) in the training rows; a subject-disjoint "
                             f"validation part needs at least two subjects{val_hint}")
        raise InputError(f"{what}: the validation part is empty ({len(subjects)} training subjects), so early "
                         f"stopping and the best checkpoint would see nothing{val_hint}")
    held = frame[(part == "val") | (part == "test")]
    absent = sorted(set(held[classes].astype(str)) - set(train[classes].astype(str)))
    if absent:
        counts = held[classes].astype(str).value_counts()
        shown = ", ".join(f"{c!r} ({counts[c]} rows)" for c in absent)
        warnings.warn(f"{what}: classes {shown} are in val/test but not in the training rows; the model never "
                      "learns them, so every such row counts as an error", UserWarning, stacklevel=2)
