"""report.md and PNG figures generated from a suite's results.csv (and the runs' predictions).

Intervals and paired tests come from mcam.suites.stats: a bootstrap over test subjects, detector-training seeds
and fusion seeds (nested), paired by replicate, Holm-corrected. The source fold (the region the LAM detectors
were pre-trained on) is reported apart and kept out of the held-out mean. Same inputs give the same bytes.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from mcam.fusion.predictions import LABEL, PREDICTED, Predictions  # noqa: E402
from mcam.suites import stats  # noqa: E402
from mcam.suites.stats import Cell  # noqa: E402

FIGURES = "figures"
HELD_OUT, SOURCE, MEAN_ROLE = "held_out", "source", "held_out_mean"
MEAN = "held-out mean"  # the fold label of the cross-fold mean rows
SOURCE_NOTE = "in-domain for the detectors (not in the mean)"
ALPHA = 0.05
MAX_ATTAINABLE_P = 0.01  # paired tests draw enough that the smallest possible Holm-adjusted p is below this
PREDICTION_COLUMNS = ["sample_id", "subject", LABEL, PREDICTED]
PAPER_MODEL = "attention_paper"  # the paper's original attention network, shown beside MCAM's
CellKey = tuple[str, str, str]  # (mode, method, fold)


def _method(frame: pd.DataFrame) -> pd.Series:
    """'attention', 'concat', ...; 'attention[A-au]' when a suite has several cue subsets; 'single:<cue>'."""
    cue_set = frame["cue_set"].astype(str)
    fused = frame["model"] != "single_cue"
    several = cue_set[fused].nunique() > 1
    named = frame["model"] + "[" + cue_set + "]" if several else frame["model"]
    return pd.Series(np.where(fused, named, "single:" + cue_set), index=frame.index)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def prepare_results(results: pd.DataFrame) -> pd.DataFrame:
    """Check run_id is unique; default detector_seed 0 and fold_role 'held_out' (older files); add `method`."""
    results = results.copy()
    if "run_id" in results:
        duplicates = sorted(results.loc[results["run_id"].duplicated(), "run_id"].astype(str).unique())
        if duplicates:
            raise ValueError(f"results.csv has duplicate run_id values: {duplicates}")
    results["detector_seed"] = (results["detector_seed"].fillna(0) if "detector_seed" in results else 0)
    results["detector_seed"] = results["detector_seed"].astype(int)
    results["seed"] = results["seed"].astype(int)
    results["fold_role"] = results["fold_role"].fillna(HELD_OUT) if "fold_role" in results else HELD_OUT
    results["fold_role"] = results["fold_role"].astype(str)
    unknown = sorted(set(results["fold_role"]) - {HELD_OUT, SOURCE})
    if unknown:
        raise ValueError(f"results.csv: unknown fold_role values {unknown}; expected {HELD_OUT!r} or {SOURCE!r}")
    results["fold"] = results["fold"].astype(str)
    results["method"] = _method(results)
    results = pd.concat([results, best_single_cue(results)], ignore_index=True)
    if "run_id" in results:  # the report does not depend on the order in which runs finished
        results = results.sort_values(["run_id", "method"], kind="stable").reset_index(drop=True)
    return results


BEST_SINGLE = "best single cue"


def best_single_cue(results: pd.DataFrame) -> pd.DataFrame:
    """The single-cue runs of the cue chosen per (mode, fold, detector seed) by mean validation accuracy over the
    fusion seeds (never a test score), relabelled as the method 'best single cue'; empty without single-cue runs
    or validation scores. Which cue was chosen stays in the rows' `cue_set`."""
    single = results[results["model"] == "single_cue"]
    if single.empty or "val_acc" not in single or single["val_acc"].isna().all():
        return results.iloc[0:0]
    keys = ["mode", "fold", "detector_seed"]
    mean_val = single.groupby([*keys, "cue_set"])["val_acc"].mean().reset_index()
    chosen = mean_val.sort_values([*keys, "val_acc", "cue_set"], ascending=[True] * 3 + [False, True],
                                  kind="stable").drop_duplicates(keys)
    best = single.merge(chosen[[*keys, "cue_set"]], on=[*keys, "cue_set"])
    return best.assign(method=BEST_SINGLE)


def load_results(out: str | Path) -> pd.DataFrame:
    """OUT/results.csv, checked and completed by prepare_results."""
    return prepare_results(pd.read_csv(Path(out) / "results.csv"))


def _natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key reading digit runs as numbers: 'x@10%' after 'x@5%', 'fold10' after 'fold9'."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))


def fold_order(results: pd.DataFrame, mode: str | None = None) -> list[str]:
    """Folds in natural order of their names (the protocols' order: regions sorted, 'fold0'.., mixing fractions
    ascending), whatever the order of rows in results.csv."""
    folds = results["fold"] if mode is None else results.loc[results["mode"] == mode, "fold"]
    return sorted(set(folds), key=_natural_key)


def fold_roles(results: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(mode, fold) -> 'held_out' or 'source'; one role per (mode, fold)."""
    roles = results.groupby(["mode", "fold"])["fold_role"].unique()
    mixed = {key: sorted(value) for key, value in roles.items() if len(value) > 1}
    if mixed:
        raise ValueError(f"results.csv: runs of one fold disagree on fold_role: {mixed}")
    return {key: str(value[0]) for key, value in roles.items()}


def held_out_folds(results: pd.DataFrame, mode: str) -> list[str]:
    """The mode's held-out folds (fold_roles 'held_out'), in fold order: the folds of the held-out mean."""
    roles = fold_roles(results)
    return [f for f in fold_order(results, mode) if roles[mode, f] == HELD_OUT]


def reference_method(results: pd.DataFrame) -> str:
    """The MCAM method other methods are compared with: attention fusion over all cues."""
    methods = set(results["method"])
    for candidate in ("attention", "attention[A]", *sorted(m for m in methods if m.startswith("attention"))):
        if candidate in methods:
            return candidate
    return sorted(methods)[0]


def load_cells(out: str | Path, results: pd.DataFrame) -> dict[CellKey, Cell]:
    """Per (mode, method, fold): every replicate's correctness on the fold's test samples, aligned by sample_id.

    Each run's predictions.csv is read once (cached by run_dir).
    """
    out, cache, cells = Path(out), {}, {}
    for (mode, fold), part in results.groupby(["mode", "fold"], sort=False):
        order: np.ndarray | None = None
        subjects: np.ndarray | None = None
        for method, runs in part.groupby("method", sort=True):
            runs = runs.sort_values(["detector_seed", "seed"])
            correct = []
            for run_dir in runs["run_dir"].astype(str):
                if run_dir not in cache:
                    frame = pd.read_csv(out / run_dir / "predictions.csv", usecols=PREDICTION_COLUMNS, dtype=str)
                    if not frame["sample_id"].is_unique:
                        raise ValueError(f"{out / run_dir / 'predictions.csv'}: sample_id not unique")
                    cache[run_dir] = frame.set_index("sample_id")
                frame = cache[run_dir]
                if order is None:
                    order = np.sort(frame.index.to_numpy(dtype=str))
                    subjects = frame.loc[order, "subject"].to_numpy(dtype=str)
                elif len(frame) != len(order) or not np.array_equal(np.sort(frame.index.to_numpy(dtype=str)), order):
                    raise ValueError(f"{run_dir}: its test samples differ from other runs of fold {fold!r} ({mode})")
                aligned = frame.loc[order]
                correct.append(aligned[LABEL].to_numpy() == aligned[PREDICTED].to_numpy())
            cells[mode, method, fold] = Cell(np.stack(correct), runs["detector_seed"].to_numpy(),
                                             runs["seed"].to_numpy(), subjects)
    return cells


def _counts(cells: list[Cell]) -> dict[str, int]:
    """Replicates used (common to the cells), distinct detector and fusion seeds among them, subjects, samples."""
    keys = stats.common_replicates(cells)
    return {"n_replicates": len(keys), "n_detector_seeds": len({d for d, _ in keys}),
            "n_seeds": len({s for _, s in keys}), "n_subjects": sum(len(np.unique(c.subjects)) for c in cells),
            "n_test": sum(c.correct.shape[1] for c in cells)}


def summary_table(results: pd.DataFrame, cells: Mapping[CellKey, Cell], n_boot: int = stats.N_BOOT,
                  seed: int = stats.SEED) -> pd.DataFrame:
    """Per (mode, method, fold): mean accuracy over replicates and its bootstrap 95% CI; plus one 'held-out mean'
    row per (mode, method), the mean over held-out folds only (source folds excluded)."""
    roles, rows = fold_roles(results), []
    for mode in sorted(results["mode"].unique()):
        part = results[results["mode"] == mode]
        folds, held_out = fold_order(part), held_out_folds(results, mode)
        for method in sorted(part["method"].unique()):
            runs = part[part["method"] == method]
            for fold in folds:
                if (mode, method, fold) not in cells:
                    continue
                cell = cells[mode, method, fold]
                estimate = stats.accuracy_ci(cell, n_boot, seed)
                rows.append({"mode": mode, "method": method, "fold": fold, "fold_role": roles[mode, fold],
                             "accuracy": estimate.estimate, "ci_low": estimate.low, "ci_high": estimate.high,
                             "macro_f1": runs.loc[runs["fold"] == fold, "macro_f1"].mean(),
                             "n_runs": int((runs["fold"] == fold).sum()), **_counts([cell])})
            if held_out and all((mode, method, f) in cells for f in held_out):
                chosen = [cells[mode, method, f] for f in held_out]
                if not stats.common_replicates(chosen):
                    continue
                estimate = stats.mean_accuracy_ci(chosen, n_boot, seed)
                rows.append({"mode": mode, "method": method, "fold": MEAN, "fold_role": MEAN_ROLE,
                             "accuracy": estimate.estimate, "ci_low": estimate.low, "ci_high": estimate.high,
                             "macro_f1": runs[runs["fold"].isin(held_out)].groupby("fold")["macro_f1"].mean().mean(),
                             "n_runs": int(runs["fold"].isin(held_out).sum()), **_counts(chosen)})
    return pd.DataFrame(rows)


def cell_text(accuracy: float, low: float, high: float) -> str:
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]"


def accuracy_matrix(summary: pd.DataFrame, mode: str) -> pd.DataFrame:
    """method x held-out fold cells 'acc [low, high]', the held-out mean with its CI, the worst held-out fold, then
    the source fold(s) apart; sorted by held-out mean (best first)."""
    part = summary[summary["mode"] == mode]
    text = pd.Series([cell_text(r.accuracy, r.ci_low, r.ci_high) for r in part.itertuples()], index=part.index)
    cells = part.assign(cell=text).pivot(index="method", columns="fold", values="cell")
    values = part.pivot(index="method", columns="fold", values="accuracy")
    folds = sorted(set(part["fold"]) - {MEAN}, key=_natural_key)
    roles = dict(zip(part["fold"], part["fold_role"]))
    held_out = [f for f in folds if roles[f] == HELD_OUT]
    source = [f for f in folds if roles[f] == SOURCE]
    table = cells.reindex(columns=held_out).copy()
    table[f"{MEAN} [95% CI]"] = cells[MEAN] if MEAN in cells else np.nan
    table["worst held-out fold"] = values.reindex(columns=held_out).apply(
        lambda row: row.idxmin() if row.notna().all() else np.nan, axis=1) if held_out else np.nan
    for fold in source:
        table[f"{fold}: {SOURCE_NOTE}"] = cells[fold]
    mean = values[MEAN] if MEAN in values else pd.Series(np.nan, index=values.index)
    order = sorted(table.index, key=lambda m: (-mean[m] if pd.notna(mean[m]) else math.inf, m))
    return table.loc[order].fillna("—")


def paired_tests(results: pd.DataFrame, cells: Mapping[CellKey, Cell], reference: str = "attention",
                 n_boot: int | None = None, seed: int = stats.SEED) -> pd.DataFrame:
    """Paired bootstrap tests, each method vs `reference`, per mode and fold and for the held-out mean; Holm over
    every row. n_boot (default max(2000, 2m / 0.01) for m tests) keeps the smallest attainable Holm p below 0.01."""
    roles, plan = fold_roles(results), []
    for mode in sorted(results["mode"].unique()):
        part = results[results["mode"] == mode]
        folds, held_out = fold_order(part), held_out_folds(results, mode)
        methods = sorted(m for m in part["method"].unique() if m != reference)
        for fold in folds + [MEAN]:
            chosen = held_out if fold == MEAN else [fold]
            if not chosen or any((mode, reference, f) not in cells for f in chosen):
                continue
            for method in methods:
                if all((mode, method, f) in cells for f in chosen):
                    references = [cells[mode, reference, f] for f in chosen]
                    others = [cells[mode, method, f] for f in chosen]
                    if stats.common_replicates(references + others):
                        plan.append((mode, fold, MEAN_ROLE if fold == MEAN else roles[mode, fold], method,
                                     references, others))
    columns = ["mode", "fold", "fold_role", "method", "reference", "diff", "ci_low", "ci_high", "p", "p_holm",
               "significant", "n_replicates", "n_boot"]
    if not plan:
        return pd.DataFrame(columns=columns)
    draws = n_boot or tests_draws(len(plan))
    rows = []
    for mode, fold, role, method, references, others in plan:
        test = stats.paired_mean_test(references, others, draws, seed)
        rows.append({"mode": mode, "fold": fold, "fold_role": role, "method": method, "reference": reference,
                     "diff": test.diff, "ci_low": test.low, "ci_high": test.high, "p": test.p,
                     "n_replicates": test.n_replicates, "n_boot": draws})
    frame = pd.DataFrame(rows)
    frame["p_holm"] = stats.holm(frame["p"].to_numpy())
    frame["significant"] = frame["p_holm"] < ALPHA
    return frame[columns]


def tests_draws(n_tests: int) -> int:
    """Bootstrap draws for a family of n tests: at least N_BOOT, and enough that 2n / (draws + 1) <= 0.01."""
    return max(stats.N_BOOT, int(math.ceil(2 * n_tests / MAX_ATTAINABLE_P)))


def _tests_markdown(tests: pd.DataFrame) -> str:
    """The paired-tests table for report.md (rounded)."""
    shown = pd.DataFrame({
        "mode": tests["mode"].str.upper(),
        "fold": tests["fold"] + np.where(tests["fold_role"] == SOURCE, " (source)", ""),
        "method": tests["method"], f"diff (method - {tests['reference'].iloc[0]})": tests["diff"].map("{:+.3f}".format),
        "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(tests["ci_low"], tests["ci_high"])],
        "p": tests["p"].map("{:.4f}".format), "p_holm": tests["p_holm"].map("{:.4f}".format),
        "significant": np.where(tests["significant"], "yes", "no")})
    return shown.to_markdown(index=False, disable_numparse=True)


def region_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over replicates per (fold, test region) x (mode, method), from each run's region_accuracy."""
    rows = [{"mode": r.mode, "method": r.method, "fold": r.fold, "region": region, "accuracy": acc}
            for r in results.itertuples() for region, acc in json.loads(r.region_accuracy).items()]
    frame = pd.DataFrame(rows)
    table = frame.groupby(["fold", "region", "mode", "method"])["accuracy"].mean()
    table = table.unstack(["mode", "method"])
    table = table.loc[sorted(table.index, key=lambda key: (_natural_key(key[0]), key[1]))]
    table.index = [f"{fold} / {region}" for fold, region in table.index]
    table.columns = [f"{mode.upper()} {method}" for mode, method in table.columns]
    return table.round(3)


def group_table(results: pd.DataFrame) -> pd.DataFrame:
    """Fairness across demographic groups: mean over held-out folds and replicates (source folds excluded)."""
    if "group_acc_std" not in results:
        return pd.DataFrame()
    held_out = results[results["fold_role"] == HELD_OUT]
    columns = {"group_acc_std": "group_acc_std", "worst_group_acc": "group_worst_acc",
               "max_group_gap": "group_max_gap", "equalized_odds": "group_equalized_odds"}
    return held_out.groupby(["mode", "method"]).agg(
        **{name: (column, "mean") for name, column in columns.items() if column in results}).round(3)


def _replicates_text(cell: Cell) -> str:
    """'2 detector seeds [0, 1] x 3 fusion seeds [0, 1, 2]', or the fusion seeds of each detector seed."""
    by_detector: dict[int, list[int]] = {}
    for detector, seed in sorted(cell.replicates):
        by_detector.setdefault(detector, []).append(seed)
    seed_sets = {tuple(s) for s in by_detector.values()}
    if len(seed_sets) == 1:
        seeds = list(next(iter(seed_sets)))
        return (f"{len(by_detector)} detector seed{'s' * (len(by_detector) > 1)} {sorted(by_detector)} x "
                f"{len(seeds)} fusion seed{'s' * (len(seeds) > 1)} {seeds}")
    return "; ".join(f"detector seed {d}: fusion seeds {s}" for d, s in by_detector.items())


def replicates_section(cells: Mapping[CellKey, Cell]) -> list[str]:
    """Markdown lines listing the replicates behind each cell (the common layout once, the exceptions by cell)."""
    texts = {key: _replicates_text(cell) for key, cell in cells.items()}
    counts = Counter(texts.values())
    common = max(sorted(counts), key=counts.__getitem__)
    lines = [f"- Replicates: {counts[common]} of {len(cells)} cells (mode x method x fold) have {common}."]
    for (mode, method, fold), text in sorted(texts.items()):
        if text != common:
            lines.append(f"  - {mode.upper()} {method} on {fold}: {text}.")
    return lines


def method_section(roles: Mapping[tuple[str, str], str], n_boot: int, seed: int, tests: pd.DataFrame) -> list[str]:
    """Markdown lines of 'How these numbers were made'."""
    sources = sorted({f"{fold} ({mode.upper()})" for (mode, fold), role in roles.items() if role == SOURCE})
    test_draws = int(tests["n_boot"].iloc[0]) if not tests.empty else tests_draws(0)
    return [
        "- Accuracy of a cell = the plain mean over its replicate runs of each run's test accuracy.",
        "- Fusion seeds: a seed draws a fusion network's initial weights and its cue dropout; the minibatch order is "
        "the data seed's, the same for every fusion seed (the seeds of a model, fold and detector seed train "
        "together as one vectorised stack; each member is the single run of its seed). Detector seeds draw the "
        "detectors' training.",
        f"- 95% intervals: percentile bootstrap, {n_boot} draws, random seed {seed} (fixed: the report is the same "
        "every time it is regenerated). Each draw resamples, with replacement, the test subjects (all of a "
        "subject's samples together; within each fold), the detector-training seeds, and the fusion seeds within "
        "each drawn detector seed (nested), then averages the drawn replicates' accuracies on the drawn subjects. "
        "The per-run `acc_ci_low`/`acc_ci_high` in results.csv are subject-only intervals of single runs and are "
        "not used here.",
        f"- {MEAN}: the unweighted mean over the held-out folds; subjects are resampled within each fold and the "
        "drawn replicates are shared by all folds (detector seed d is the same detector in every fold), using the "
        "replicates present in every fold.",
        f"- Paired tests: each method vs the reference on the same fold (or the {MEAN}), replicates paired by "
        "(detector_seed, seed) and limited to those both methods have; every draw applies the same resampled "
        "subjects and replicates to both methods. diff = method - reference with its 95% percentile interval; "
        "two-sided p = min(1, 2 min(P(diff* <= 0), P(diff* >= 0))), each share counted as (count + 1) / "
        f"(draws + 1), so p is never 0. {test_draws} draws (seed {seed}), enough that the smallest attainable Holm "
        f"p is below {MAX_ATTAINABLE_P}.",
        f"- Multiple comparisons: Holm's step-down correction over all {len(tests)} rows of the paired-tests table; "
        f"significant = p_holm < {ALPHA}.",
        "- Machines: the numbers are bit for bit the same on one CPU type (`environment.txt` names it and the "
        "vector kernels torch used on it); on another CPU type the kernels round differently and training "
        "amplifies it, so the numbers move as under a re-seeding, within the replicate intervals.",
        ("- Source fold(s) " + ", ".join(sources) + ": the region the LAM detectors were pre-trained on, "
         f"{SOURCE_NOTE}; reported in a separate column, excluded from the {MEAN} and from the group table.")
        if sources else f"- Every fold is held out for the detectors; the {MEAN} covers all folds.",
    ]


def plot_accuracy_bars(summary: pd.DataFrame, path: Path) -> Path:
    """Accuracy bars with bootstrap 95% CIs per held-out fold, the held-out mean, then the source fold(s)."""
    modes = sorted(summary["mode"].unique())
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 3.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        part = summary[summary["mode"] == mode]
        roles = dict(zip(part["fold"], part["fold_role"]))
        ordered = sorted(set(part["fold"]) - {MEAN}, key=_natural_key)
        folds = ([f for f in ordered if roles[f] == HELD_OUT] + [MEAN] * (MEAN in roles)
                 + [f for f in ordered if roles[f] == SOURCE])
        labels = [f"{f}\n(source, in-domain)" if roles[f] == SOURCE else f for f in folds]
        methods = sorted(part["method"].unique())
        colours = method_colours(methods)
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("fold").reindex(folds)
            errors = np.vstack([rows["accuracy"] - rows["ci_low"], rows["ci_high"] - rows["accuracy"]])
            ax.bar(np.arange(len(folds)) + i * width - 0.4 + width / 2, rows["accuracy"], width, yerr=errors,
                   capsize=2, label=method, color=colours[method])
        if MEAN in folds:
            ax.axvline(folds.index(MEAN) - 0.5, color="grey", lw=0.8, ls=":")
            ax.axvline(folds.index(MEAN) + 0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(np.arange(len(folds)), labels)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{mode.upper()}: accuracy per fold (95% bootstrap CI over subjects, detector and fusion seeds)")
    # beside the axes, never over a bar (inside, it covered the source fold)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)
    return _save(fig, path)


def method_colours(methods: list[str]) -> dict[str, tuple[float, ...]]:
    """A colour of its own for each method, up to 20 (tab20's saturated half first, then its light half)."""
    palette = plt.get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {method: palette(order[i % 20]) for i, method in enumerate(methods)}


def weight_methods(results: pd.DataFrame, reference: str) -> list[str]:
    """Methods whose cue weights the report shows: the reference, then the paper's original attention network
    (model 'attention_paper') on the reference's cue set(s) when the suite ran it."""
    cue_sets = set(results.loc[results["method"] == reference, "cue_set"].astype(str))
    paper = results[(results["model"] == PAPER_MODEL) & results["cue_set"].astype(str).isin(cue_sets)]
    return [reference, *sorted(set(paper["method"]) - {reference})]


def cue_weight_tables(out: str | Path, results: pd.DataFrame, method: str) -> dict[str, dict[str, pd.DataFrame]]:
    """Per mode, the mean attention weight of `method` per cue: {'fold': fold x cue, 'class': class x cue}.

    From the runs' predictions: each run's mean over its test samples (for 'class': over its test samples of each
    true class), then the plain mean over the runs (every detector and fusion seed). 'fold' rows: the held-out folds,
    their unweighted mean, then the source fold(s); 'class' rows: held-out runs only (all runs when no fold is held
    out). Empty when the runs' predictions hold no cue weights.
    """
    out, tables = Path(out), {}
    part = results[results["method"] == method]
    for mode, runs in sorted(part.groupby("mode", sort=False), key=lambda item: str(item[0])):
        by_fold: dict[str, list[pd.Series]] = {}
        by_class: list[pd.DataFrame] = []
        held_out_class: list[pd.DataFrame] = []
        classes: list[str] = []
        roles = dict(zip(runs["fold"], runs["fold_role"]))
        for run in runs.sort_values(["fold", "detector_seed", "seed"], kind="stable").itertuples():
            predictions = Predictions.read_csv(out / str(run.run_dir) / "predictions.csv", metadata=[LABEL])
            if not predictions.cues:
                continue
            classes = classes or predictions.classes
            by_fold.setdefault(run.fold, []).append(predictions.mean_weights())
            (held_out_class if run.fold_role == HELD_OUT else by_class).append(predictions.weights_by(LABEL))
        if not by_fold:
            continue
        folds = [f for f in fold_order(runs) if f in by_fold]
        fold_table = pd.DataFrame({f: pd.concat(by_fold[f], axis=1).mean(axis=1) for f in folds}).T
        held_out = [f for f in folds if roles[f] == HELD_OUT]
        source = [f for f in folds if roles[f] == SOURCE]
        if len(held_out) > 1 or (held_out and source):
            fold_table.loc[MEAN] = fold_table.loc[held_out].mean()
        fold_table = fold_table.reindex([*held_out, *([MEAN] if MEAN in fold_table.index else []), *source])
        fold_table.index = [f"{f} (source)" if f in source else f for f in fold_table.index]
        per_class = pd.concat(held_out_class or by_class)
        class_table = per_class.groupby(level=0).mean()
        order = [c for c in classes if c in class_table.index]
        class_table = class_table.reindex(order + sorted(set(class_table.index) - set(order)))
        for table, name in ((fold_table, "held-out fold"), (class_table, "class (true label)")):
            table.index.name, table.columns.name = name, None
        tables[str(mode)] = {"fold": fold_table, "class": class_table}
    return tables


def _weights_markdown(table: pd.DataFrame) -> str:
    return table.map(lambda value: "—" if pd.isna(value) else f"{value:.3f}").to_markdown(disable_numparse=True)


def cue_weights_section(out: Path, results: pd.DataFrame, reference: str, figures: Path) -> tuple[list[str],
                                                                                                 pd.DataFrame]:
    """report.md lines of the cue-weight tables and figures of each weight method, and their long-form rows for
    cue_weights.csv."""
    lines, rows = [], []
    for method in weight_methods(results, reference):
        tables = cue_weight_tables(out, results, method)
        if not tables:
            continue
        what = "MCAM reference" if method == reference else "the paper's original attention network"
        lines += [f"## Cue weights ({method}, {what}): mean attention per held-out fold x cue and per class x cue", "",
                  "Each run's mean attention weight over its test samples (class rows: over its test samples of that "
                  "true class), then the mean over runs: every detector seed x fusion seed of the fold (class rows: "
                  f"of every held-out fold). The {MEAN} row is the unweighted mean over held-out folds; source folds "
                  "are listed apart.", ""]
        for mode, pair in tables.items():
            lines += [f"### {mode.upper()} {method}: mean cue weight per held-out fold x cue", "",
                      _weights_markdown(pair["fold"]), "",
                      f"### {mode.upper()} {method}: mean cue weight per class x cue", "",
                      _weights_markdown(pair["class"]), ""]
            for by, table in pair.items():
                long = table.rename_axis(index="row").reset_index().melt(id_vars="row", var_name="cue",
                                                                         value_name="weight")
                rows.append(long.assign(mode=mode, method=method, by=by))
        suffix = "" if method == reference else f"_{re.sub(r'[^A-Za-z0-9_.-]+', '_', method)}"
        drawn = [plot_cue_weights({m: t["fold"] for m, t in tables.items()}, figures / f"cue_weights{suffix}.png",
                                  method),
                 plot_cue_weights({m: t["class"] for m, t in tables.items()},
                                  figures / f"cue_weights_by_class{suffix}.png", method, "class")]
        lines += [" ".join(f"![cue weights {method}]({path.relative_to(out).as_posix()})" for path in drawn), ""]
    columns = ["mode", "method", "by", "row", "cue", "weight"]
    frame = pd.concat(rows)[columns].reset_index(drop=True) if rows else pd.DataFrame(columns=columns)
    return lines, frame


def plot_cue_weights(tables: Mapping[str, pd.DataFrame], path: Path, method: str = "attention",
                     by: str = "held-out fold") -> Path:
    """Heatmaps row x cue of mean attention weights (from cue_weight_tables), one panel per mode."""
    modes = sorted(tables)
    height = max(3.8, 0.4 * max(len(t) for t in tables.values()) + 1.5)
    width = max(5.0, 0.7 * max(t.shape[1] for t in tables.values()) + 3.5)
    fig, axes = plt.subplots(1, len(modes), figsize=(width * len(modes), height), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        matrix = tables[mode]
        values = matrix.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0,
                          vmax=max(0.5, float(np.nanmax(values, initial=0))))
        ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=45)
        ax.set_yticks(range(len(matrix)), [str(r) for r in matrix.index])
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.35 else "k",
                        fontsize=8)
        ax.set_title(f"{mode.upper()} {method}:\nmean cue weight by {by}", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_confusions(results: pd.DataFrame, path: Path, method: str = "attention") -> Path | None:
    """Confusion matrices of `method` per mode x fold, summed over replicates, row-normalised."""
    part = results[results["method"] == method]
    if part.empty:
        return None
    modes, folds = sorted(part["mode"].unique()), fold_order(part)
    classes = list(json.loads(part["recall"].iloc[0]))
    fig, axes = plt.subplots(len(modes), len(folds), figsize=(3.2 * len(folds), 3.2 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, fold in enumerate(folds):
            runs = part[(part["mode"] == mode) & (part["fold"] == fold)]
            ax = axes[i, j]
            if runs.empty:
                ax.axis("off")
                continue
            counts = sum(np.asarray(json.loads(c)) for c in runs["confusion"])
            ax.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(len(classes)), [c[:3] for c in classes], fontsize=7)
            ax.set_yticks(range(len(classes)), [c[:3] for c in classes], fontsize=7)
            source = " (source)" if (runs["fold_role"] == SOURCE).any() else ""
            ax.set_title(f"{mode.upper()} {fold}{source}", fontsize=8)
    fig.supxlabel("predicted")
    fig.supylabel("true")
    return _save(fig, path)


SELECTIONS = {
    "in_domain": "early stopping (best validation loss) on held-out subjects of the training regions",
    "leave_one_source_region_out": "each training region held out in turn for early stopping (DomainBed's "
    "leave-one-domain-out); a run's prediction averages those models' class probabilities",
}


def suite_spec(out: Path) -> dict:
    """The suite's spec as the run recorded it (suite.yaml; empty when absent)."""
    return (yaml.safe_load((out / "suite.yaml").read_text()) if (out / "suite.yaml").exists() else None) or {}


def au_model_seed(spec: Mapping) -> int | None:
    """The seed of the suite's one off-the-shelf AU regressor (trained on the AU corpus, shared by every detector
    seed); None when the suite pre-trains no AU regressor on a corpus."""
    corpus = spec.get("au_corpus")
    if not corpus or "au" not in spec.get("pretrain", []) or not spec.get("source_region"):
        return None
    return int(corpus.get("seed", 0))


def variance_text(spec: Mapping) -> list[str]:
    """Markdown lines saying which training variance the intervals include (what the detector seeds vary)."""
    trained = list(spec.get("pretrain", []))
    if not trained:
        return []
    seed = au_model_seed(spec)
    if seed is None:
        return [f"- What the intervals include: detector seeds vary the source training of {', '.join(trained)}."]
    varied = [n for n in trained if n != "au"] + ["the au detector's AU -> emotion SVM head"]
    return [f"- What the intervals include: the training variance of {', '.join(varied)} (each detector seed "
            f"trains them anew on the source region). The AU regressor is one fixed off-the-shelf model (MCAM's "
            f"stand-in for OpenFace's AU model, used as is like the paper's LAM), trained once on the AU corpus "
            f"with seed {seed} and shared by every detector seed: its training variance is not in the intervals."]


def selection_text(spec: Mapping, results: pd.DataFrame) -> str:
    """Which model selection the runs used (the suite's spec) and how the best single cue was chosen."""
    selection = spec.get("selection", "in_domain")
    text = f"Model selection: {selection}, {SELECTIONS.get(selection, selection)}; the test region is never read."
    if (results["method"] == BEST_SINGLE).any():
        text += (f" '{BEST_SINGLE}': per fold and detector seed, the single-cue model with the best mean validation "
                 "accuracy over its fusion seeds.")
    seed = au_model_seed(spec)
    if seed is not None:
        corpus = spec["au_corpus"]
        text += (f" The au detector's regressor was pre-trained once, with seed {seed}, on the AU corpus "
                 f"{corpus.get('dir')} (ground-truth AUs, no emotion labels; {corpus.get('synth_config')}, render "
                 f"seed {corpus.get('synth_seed', 0)}) joined by the source region's AU-coded training faces, and is "
                 "shared by every detector seed; its AU -> emotion SVM trains on the source region per detector seed.")
    return text


def write_report(out: str | Path, n_boot: int = stats.N_BOOT, seed: int = stats.SEED) -> Path:
    """Generate report.md, summary.csv, paired_tests.csv and figures/ from OUT/results.csv and the runs'
    predictions; safe to rerun at any time, and byte-identical for the same inputs."""
    out = Path(out)
    results = load_results(out)
    spec = suite_spec(out)
    reference = reference_method(results)
    roles = fold_roles(results)
    cells = load_cells(out, results)
    figures = out / FIGURES
    figures.mkdir(exist_ok=True)
    summary = summary_table(results, cells, n_boot, seed)
    summary.round(4).to_csv(out / "summary.csv", index=False)
    tests = paired_tests(results, cells, reference, seed=seed)
    rounded = {c: 4 for c in ("diff", "ci_low", "ci_high", "p", "p_holm")}
    tests.round(rounded).to_csv(out / "paired_tests.csv", index=False)
    command = (out / "command.txt").read_text().strip() if (out / "command.txt").exists() else "(not recorded)"
    folds = fold_order(results)
    detector_seeds = sorted(int(s) for s in results["detector_seed"].unique())
    seeds = sorted(int(s) for s in results["seed"].unique())
    sources = sorted({fold for (_, fold), role in roles.items() if role == SOURCE})
    n_runs = results["run_id"].nunique() if "run_id" in results else len(results)  # best single cue rows repeat runs
    lines = [f"# MCAM suite report: {results['suite'].iloc[0]} ({results['protocol'].iloc[0]})", "",
             f"{n_runs} runs; detector seeds {detector_seeds}; fusion seeds {seeds}; folds {folds}.",
             *([f"Source fold(s) {sources}: the LAM detectors were pre-trained there, so they are in-domain for the "
                f"detectors; reported apart and not in the {MEAN}."] if sources else []),
             f"Accuracy cells: mean over replicates [95% bootstrap CI over test subjects, detector seeds and fusion "
             f"seeds]; the {MEAN} covers held-out folds only. See 'How these numbers were made' below.",
             "Every MCAM (attention) number stands beside its baselines; nothing is tuned per region.",
             selection_text(spec, results), "",
             "Reproduce (the package versions it ran with: `environment.txt`):", "", "```bash", command, "```", ""]
    for mode in sorted(summary["mode"].unique()):
        table = accuracy_matrix(summary, mode).to_markdown(disable_numparse=True)
        lines += [f"## {mode.upper()}: accuracy per held-out fold", "", table, ""]
    bars = plot_accuracy_bars(summary, figures / "accuracy_by_fold.png")
    lines += [f"![accuracy by fold]({bars.relative_to(out).as_posix()})", ""]
    if not tests.empty:
        significant = int(tests["significant"].sum())
        lines += [f"## Paired tests: each method vs {reference} (paired bootstrap, Holm-corrected)", "",
                  f"{significant} of {len(tests)} differences significant at p_holm < {ALPHA}.", "",
                  _tests_markdown(tests), ""]
    weight_lines, weights = cue_weights_section(out, results, reference, figures)
    weights.round(4).to_csv(out / "cue_weights.csv", index=False)
    lines += weight_lines
    if "region_accuracy" in results and results.groupby("fold")["region_accuracy"].first().map(
            lambda text: len(json.loads(text)) > 1).any():  # some fold tests several regions
        lines += ["## Accuracy per test region (mean over replicates)", "", region_table(results).to_markdown(), ""]
    groups = group_table(results)
    if not groups.empty:
        lines += ["## Demographic groups (skin-tone group): accuracy spread, worst group, max gap, equalized odds",
                  "", "Mean over held-out folds and replicates (source folds excluded). equalized odds: the largest "
                  "one-vs-rest TPR/FPR gap between groups over classes (fairlearn's definition).", "",
                  groups.reset_index().to_markdown(index=False), ""]
    confusions = plot_confusions(results, figures / "confusion_attention.png", reference)
    if confusions:
        lines += [f"## Confusion matrices ({reference})", "",
                  f"![confusions]({confusions.relative_to(out).as_posix()})", ""]
    lines += ["## How these numbers were made", "", *replicates_section(cells),
              *method_section(roles, n_boot, seed, tests), *variance_text(spec), ""]
    lines += ["Files: `results.csv` (one row per run), `summary.csv` (every table cell and its interval), "
              "`paired_tests.csv`, `cue_weights.csv` (the cue-weight tables), `runs/<run>/` (config `run.yaml`, "
              "`predictions.csv`, TensorBoard events, "
              "checkpoint), `suite.yaml`.", "TensorBoard: `tensorboard --logdir runs`", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
