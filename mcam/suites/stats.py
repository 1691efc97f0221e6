"""Replicate-aware bootstrap statistics for suite reports: accuracy CIs, paired tests, Holm correction.

A cell is one (mode, method, fold): R replicate runs (a detector-training seed x a fusion seed, fusion seeds
nested within detector seeds) scored on the same N test samples of S subjects. Every bootstrap draw resamples

1. detector seeds with replacement, then, within each drawn detector seed, its fusion seeds with replacement
   (a nested two-stage bootstrap: fusion seeds are drawn from the drawn detector's own fusion seeds);
2. test subjects (clusters) with replacement, independently in each fold;

and computes the statistic: the mean over the drawn replicates of each replicate's accuracy on the drawn
subjects' samples. The interval is the percentile interval of the draws; the point estimate is the plain mean
over replicates of accuracy. Paired comparisons apply the same drawn subjects and replicates to both methods.
Draws are seeded, so the same input gives the same numbers.

Resampling at both replicate levels (and subjects) is somewhat conservative: each level's resampling also carries
the noise of the levels below it. With 2-3 detector seeds the detector-level resampling is coarse; more detector
seeds give more trustworthy intervals. Cross-fold means use only the replicates present in every fold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

N_BOOT = 2000
SEED = 0
LEVEL = 0.95
CHUNK = 4000  # draws generated at a time


@dataclass(frozen=True, eq=False)
class Cell:
    """One (mode, method, fold): correct[r, i] says whether replicate r got test sample i right."""

    correct: np.ndarray  # bool [R replicates, N samples]
    detector_seeds: np.ndarray  # int [R]: the detector-training seed of each replicate
    seeds: np.ndarray  # int [R]: the fusion seed of each replicate (nested within its detector seed)
    subjects: np.ndarray  # [N]: the test subject of each sample (the resampled cluster)

    def __post_init__(self) -> None:
        correct = np.atleast_2d(np.asarray(self.correct, dtype=bool))
        detector_seeds = np.asarray(self.detector_seeds, dtype=np.int64).reshape(-1)
        seeds = np.asarray(self.seeds, dtype=np.int64).reshape(-1)
        subjects = np.asarray(self.subjects).reshape(-1)
        if correct.ndim != 2 or correct.shape != (len(detector_seeds), len(subjects)) or len(seeds) != len(correct):
            raise ValueError(f"cell shapes disagree: correct {correct.shape}, {len(detector_seeds)} detector seeds, "
                             f"{len(seeds)} seeds, {len(subjects)} subjects")
        if len(subjects) == 0 or len(seeds) == 0:
            raise ValueError("a cell needs at least one replicate and one test sample")
        keys = list(zip(detector_seeds.tolist(), seeds.tolist()))
        if len(set(keys)) != len(keys):
            raise ValueError(f"a cell has duplicate (detector_seed, seed) replicates: {sorted(keys)}")
        for name, value in (("correct", correct), ("detector_seeds", detector_seeds), ("seeds", seeds),
                            ("subjects", subjects)):
            object.__setattr__(self, name, value)

    @property
    def replicates(self) -> list[tuple[int, int]]:
        """The (detector_seed, seed) pair of each replicate, in row order."""
        return list(zip(self.detector_seeds.tolist(), self.seeds.tolist()))

    @property
    def accuracy(self) -> float:
        """Plain mean over replicates of accuracy."""
        return float(self.correct.mean(axis=1).mean())


class Estimate(NamedTuple):
    """A point estimate with its percentile bootstrap interval and the number of replicates used."""

    estimate: float
    low: float
    high: float
    n_replicates: int


class Comparison(NamedTuple):
    """Accuracy difference (other - reference), its bootstrap interval, two-sided p and replicates used."""

    diff: float
    low: float
    high: float
    p: float
    n_replicates: int


def common_replicates(cells: Sequence[Cell]) -> list[tuple[int, int]]:
    """The (detector_seed, seed) pairs present in every cell, sorted."""
    if not cells:
        raise ValueError("no cells")
    keys = set(cells[0].replicates).intersection(*(c.replicates for c in cells[1:]))
    return sorted(keys)


def replicate_weights(replicates: Sequence[tuple[int, int]], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Weights [n_boot, R] of a nested bootstrap: detector seeds drawn with replacement, then fusion seeds in each."""
    detectors = np.asarray([d for d, _ in replicates])
    _, detector_of = np.unique(detectors, return_inverse=True)
    members = [np.flatnonzero(detector_of == d) for d in range(detector_of.max() + 1)]
    sizes = np.asarray([len(m) for m in members])
    n_detectors, widest, n_replicates = len(members), int(sizes.max()), len(replicates)
    table = np.zeros((n_detectors, widest), dtype=np.int64)
    for d, rows in enumerate(members):
        table[d, :len(rows)] = rows
    drawn = rng.integers(0, n_detectors, size=(n_boot, n_detectors))  # detector seeds drawn
    n_fusion = sizes[drawn][..., None]  # [B, D, 1] fusion seeds of each drawn detector seed
    position = np.minimum((rng.random((n_boot, n_detectors, widest)) * n_fusion).astype(np.int64), n_fusion - 1)
    chosen = table[drawn[..., None], position]  # [B, D, F] replicate rows
    valid = np.arange(widest) < n_fusion  # only the first n_fusion picks of each detector seed count
    weight = np.broadcast_to(1.0 / (n_detectors * n_fusion), valid.shape)
    flat = (np.arange(n_boot)[:, None, None] * n_replicates + chosen)[valid]
    return np.bincount(flat, weights=weight[valid], minlength=n_boot * n_replicates).reshape(n_boot, n_replicates)


def subject_index(subjects: np.ndarray) -> np.ndarray:
    """The subject (cluster) number 0..S-1 of each sample, in sorted subject order."""
    return np.unique(np.asarray(subjects).astype(str), return_inverse=True)[1].reshape(-1)


def subject_weights(n_subjects: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity [n_boot, S] of each subject in each draw of S subjects with replacement."""
    picks = rng.integers(0, n_subjects, size=(n_boot, n_subjects)) + n_subjects * np.arange(n_boot)[:, None]
    return np.bincount(picks.ravel(), minlength=n_boot * n_subjects).reshape(n_boot, n_subjects)


def _subject_hits(correct: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Per replicate, correct answers per subject [R, S]."""
    n_subjects = int(inverse.max()) + 1
    return np.stack([np.bincount(inverse, weights=row, minlength=n_subjects) for row in correct.astype(float)])


def _bootstrap(folds: Sequence[Sequence[Cell]], contrast: Sequence[float], n_boot: int,
               seed: int) -> tuple[float, np.ndarray, int]:
    """Point estimate, draws [n_boot] and replicate count of sum_m contrast[m] * (method m's mean accuracy over folds).

    folds[f][m] is method m's cell on fold f; replicates are those common to every cell, drawn once per draw and
    shared by all folds and methods; subjects are drawn within each fold, shared by the methods.
    """
    if not folds or any(len(cells) != len(contrast) for cells in folds):
        raise ValueError("every fold needs one cell per method")
    keys = common_replicates([c for cells in folds for c in cells])
    if not keys:
        raise ValueError("no (detector_seed, seed) replicate is common to all cells")
    folds_data = []  # per fold: (hits [R, S] combined over methods, samples per subject [S])
    for cells in folds:
        subjects = cells[0].subjects
        for cell in cells[1:]:
            if not np.array_equal(cell.subjects, subjects):
                raise ValueError("paired cells must score the same test samples in the same order")
        inverse = subject_index(subjects)
        hits = sum(k * _subject_hits(c.correct[[c.replicates.index(key) for key in keys]], inverse)
                   for k, c in zip(contrast, cells))  # exact for integer contrasts: equal methods give exactly 0
        folds_data.append((hits, np.bincount(inverse).astype(float)))
    point = float(np.mean([(hits.sum(axis=1) / sizes.sum()).mean() for hits, sizes in folds_data]))
    rng = np.random.default_rng(seed)
    draws = np.zeros(n_boot)
    for start in range(0, n_boot, CHUNK):  # bounded memory; the draws depend on n_boot and seed only
        size = min(CHUNK, n_boot - start)
        weights = replicate_weights(keys, size, rng)  # [b, R], shared by all folds and methods
        for hits, sizes in folds_data:
            multiplicity = subject_weights(len(sizes), size, rng)  # [b, S], shared by the methods
            accuracy = (hits @ multiplicity.T) / (multiplicity @ sizes)  # [R, b]
            draws[start:start + size] += (weights * accuracy.T).sum(axis=1)
    return point, draws / len(folds), len(keys)


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the draws."""
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p of 'difference = 0': min(1, 2 min(P(d <= 0), P(d >= 0))), shares as (count+1)/(n+1)."""
    n = len(draws)
    below = (np.count_nonzero(draws <= 0) + 1) / (n + 1)
    above = (np.count_nonzero(draws >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def mean_accuracy_ci(cells: Sequence[Cell], n_boot: int = N_BOOT, seed: int = SEED,
                     level: float = LEVEL) -> Estimate:
    """CI of the mean accuracy over folds (one cell per fold); subjects drawn per fold, replicates jointly."""
    point, draws, n = _bootstrap([[c] for c in cells], [1.0], n_boot, seed)
    return Estimate(point, *_interval(draws, level), n)


def accuracy_ci(cell: Cell, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> Estimate:
    """CI of one cell's accuracy, resampling subjects, detector seeds and fusion seeds within them."""
    return mean_accuracy_ci([cell], n_boot, seed, level)


def paired_mean_test(references: Sequence[Cell], others: Sequence[Cell], n_boot: int = N_BOOT, seed: int = SEED,
                     level: float = LEVEL) -> Comparison:
    """Paired bootstrap of mean-over-folds accuracy, other - reference, on replicates both have in every fold."""
    if len(references) != len(others):
        raise ValueError("one reference cell and one other cell per fold")
    point, draws, n = _bootstrap(list(zip(references, others)), [-1.0, 1.0], n_boot, seed)
    return Comparison(point, *_interval(draws, level), bootstrap_p(draws), n)


def paired_test(reference: Cell, other: Cell, n_boot: int = N_BOOT, seed: int = SEED,
                level: float = LEVEL) -> Comparison:
    """Paired bootstrap of accuracy (other - reference) on one fold: same subjects and replicates for both."""
    return paired_mean_test([reference], [other], n_boot, seed, level)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = len(order)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted
