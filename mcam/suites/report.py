"""report.md and PNG figures generated from a suite's results.csv (and the runs' predictions)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mcam.suites.metrics import mcnemar  # noqa: E402

FIGURES = "figures"


def _method(frame: pd.DataFrame) -> pd.Series:
    """'attention', 'concat', ...; 'attention[A-au]' when a suite has several cue subsets; 'single:<cue>'."""
    cue_set = frame["cue_set"].astype(str)
    fused = frame["model"] != "single_cue"
    several = cue_set[fused].nunique() > 1
    named = frame["model"] + "[" + cue_set + "]" if several else frame["model"]
    return pd.Series(np.where(fused, named, "single:" + cue_set), index=frame.index)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reference_method(results: pd.DataFrame) -> str:
    """The MCAM method other methods are compared with: attention fusion over all cues."""
    methods = set(results["method"])
    for candidate in ("attention", "attention[A]", *sorted(m for m in methods if m.startswith("attention"))):
        if candidate in methods:
            return candidate
    return sorted(methods)[0]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over seeds per (mode, method, fold) with the averaged subject-bootstrap 95% CI."""
    grouped = results.groupby(["mode", "method", "fold"], sort=False)
    return pd.DataFrame({
        "accuracy": grouped["accuracy"].mean(), "ci_low": grouped["acc_ci_low"].mean(),
        "ci_high": grouped["acc_ci_high"].mean(), "seed_sd": grouped["accuracy"].std(ddof=1).fillna(0.0),
        "macro_f1": grouped["macro_f1"].mean(), "n_seeds": grouped["seed"].nunique(),
    }).reset_index()


def accuracy_matrix(summary: pd.DataFrame, mode: str) -> pd.DataFrame:
    """method x fold cells 'acc [low, high]' plus the mean and the spread (max - min) over folds."""
    part = summary[summary["mode"] == mode]
    cells = part.assign(cell=part.apply(lambda r: f"{r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", axis=1))
    folds = list(part["fold"].unique())  # the protocol's order (e.g. mixing fractions ascending)
    table = cells.pivot(index="method", columns="fold", values="cell")[folds]
    means = part.pivot(index="method", columns="fold", values="accuracy")[folds]
    table["mean"] = means.mean(axis=1).map("{:.3f}".format)
    table["spread (max-min)"] = (means.max(axis=1) - means.min(axis=1)).map("{:.3f}".format)
    table["worst fold"] = means.idxmin(axis=1)
    return table.sort_values("mean", ascending=False)


def region_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over seeds per (fold, test region) x (mode, method), from each run's region_accuracy."""
    rows = [{"mode": r.mode, "method": r.method, "fold": r.fold, "region": region, "accuracy": acc}
            for r in results.itertuples() for region, acc in json.loads(r.region_accuracy).items()]
    frame = pd.DataFrame(rows)
    table = frame.groupby(["fold", "region", "mode", "method"], sort=False)["accuracy"].mean().unstack(["mode", "method"])
    table.index = [f"{fold} / {region}" for fold, region in table.index]
    table.columns = [f"{mode.upper()} {method}" for mode, method in table.columns]
    return table.round(3)


def group_table(results: pd.DataFrame) -> pd.DataFrame:
    """Fairness across demographic groups (mean over folds and seeds)."""
    if "group_acc_std" not in results:
        return pd.DataFrame()
    columns = {"group_acc_std": "group_acc_std", "worst_group_acc": "group_worst_acc",
               "max_group_gap": "group_max_gap", "equalized_odds": "group_equalized_odds"}
    return results.groupby(["mode", "method"]).agg(
        **{name: (column, "mean") for name, column in columns.items() if column in results}).round(3)


def paired_tests(out: Path, results: pd.DataFrame, reference: str = "attention") -> pd.DataFrame:
    """McNemar tests of `reference` vs each other method on the same test samples (all seeds pooled)."""
    rows = []
    for (mode, fold), part in results.groupby(["mode", "fold"]):
        correct: dict[str, np.ndarray] = {}
        for method, runs in part.groupby("method"):
            frames = [pd.read_csv(out / d / "predictions.csv").sort_values("sample_id")
                      for d in runs.sort_values("seed")["run_dir"]]
            correct[method] = np.concatenate([(f["label"] == f["pred"]).to_numpy() for f in frames])
        if reference not in correct:
            continue
        for method, hits in correct.items():
            if method != reference and len(hits) == len(correct[reference]):
                ref_only, other_only, p = mcnemar(correct[reference], hits)
                rows.append({"mode": mode, "fold": fold, "vs": method, "reference_only_right": ref_only,
                             "other_only_right": other_only, "p_value": round(p, 4)})
    return pd.DataFrame(rows)


def plot_accuracy_bars(summary: pd.DataFrame, path: Path) -> Path:
    """Per-fold (held-out region) accuracy bars with 95% CIs, one panel per mode."""
    modes = sorted(summary["mode"].unique())
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 3.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        part = summary[summary["mode"] == mode]
        folds, methods = list(part["fold"].unique()), sorted(part["method"].unique())
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("fold").reindex(folds)
            errors = np.vstack([rows["accuracy"] - rows["ci_low"], rows["ci_high"] - rows["accuracy"]])
            ax.bar(np.arange(len(folds)) + i * width - 0.4 + width / 2, rows["accuracy"], width, yerr=errors,
                   capsize=2, label=method)
        ax.set_xticks(np.arange(len(folds)), folds)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{mode.upper()}: accuracy on the held-out fold (95% subject-bootstrap CI)")
    axes[0, 0].legend(ncol=5, fontsize=7, loc="upper right")
    return _save(fig, path)


def plot_cue_weights(results: pd.DataFrame, path: Path, method: str = "attention") -> Path | None:
    """Heatmap fold (held-out region) x cue of the mean attention weight, one panel per mode."""
    part = results[results["method"] == method]
    weight_columns = [c for c in part.columns if c.startswith("weight_") and part[c].notna().any()]
    if part.empty or not weight_columns:
        return None
    modes = sorted(part["mode"].unique())
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        matrix = part[part["mode"] == mode].groupby("fold")[weight_columns].mean()
        image = ax.imshow(matrix.to_numpy(), cmap="viridis", vmin=0, vmax=max(0.5, float(matrix.to_numpy().max())))
        ax.set_xticks(range(len(weight_columns)), [c.removeprefix("weight_") for c in weight_columns], rotation=45)
        ax.set_yticks(range(len(matrix)), matrix.index)
        for (i, j), value in np.ndenumerate(matrix.to_numpy()):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.35 else "k", fontsize=8)
        ax.set_title(f"{mode.upper()}: mean cue weight ({method})")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_confusions(results: pd.DataFrame, path: Path, method: str = "attention") -> Path | None:
    """Confusion matrices of `method` per mode x fold, summed over seeds, row-normalised."""
    part = results[results["method"] == method]
    if part.empty:
        return None
    modes, folds = sorted(part["mode"].unique()), list(part["fold"].unique())
    classes = list(json.loads(part["recall"].iloc[0]))
    fig, axes = plt.subplots(len(modes), len(folds), figsize=(3.2 * len(folds), 3.2 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, fold in enumerate(folds):
            runs = part[(part["mode"] == mode) & (part["fold"] == fold)]
            counts = sum(np.asarray(json.loads(c)) for c in runs["confusion"])
            ax = axes[i, j]
            ax.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(len(classes)), [c[:3] for c in classes], fontsize=7)
            ax.set_yticks(range(len(classes)), [c[:3] for c in classes], fontsize=7)
            ax.set_title(f"{mode.upper()} {fold}", fontsize=8)
    fig.supxlabel("predicted")
    fig.supylabel("true")
    return _save(fig, path)


def write_report(out: str | Path) -> Path:
    """Generate report.md (+ figures/) from out/results.csv; safe to rerun at any time."""
    out = Path(out)
    results = pd.read_csv(out / "results.csv")
    results["method"] = _method(results)
    reference = reference_method(results)
    figures = out / FIGURES
    figures.mkdir(exist_ok=True)
    summary = summary_table(results)
    summary.to_csv(out / "summary.csv", index=False)
    command = (out / "command.txt").read_text().strip() if (out / "command.txt").exists() else "(not recorded)"
    lines = [f"# MCAM suite report: {results['suite'].iloc[0]} ({results['protocol'].iloc[0]})", "",
             f"{len(results)} runs; seeds {sorted(int(s) for s in results['seed'].unique())}; folds {sorted(results['fold'].unique())}.",
             "Accuracy cells: mean over seeds [95% CI from a subject-level bootstrap, averaged over seeds].",
             "Every MCAM (attention) number stands beside its baselines; nothing is tuned per region.", "",
             "Reproduce:", "", "```bash", command, "```", ""]
    for mode in sorted(summary["mode"].unique()):
        lines += [f"## {mode.upper()}: accuracy per held-out fold", "", accuracy_matrix(summary, mode).to_markdown(), ""]
    bars = plot_accuracy_bars(summary, figures / "accuracy_by_fold.png")
    lines += [f"![accuracy by fold]({bars.relative_to(out)})", ""]
    weights = plot_cue_weights(results, figures / "cue_weights.png", reference)
    if weights:
        lines += [f"## Cue weights ({reference}), held-out fold x cue", "", f"![cue weights]({weights.relative_to(out)})", ""]
    if "region_accuracy" in results and results.groupby("fold")["region_accuracy"].first().map(
            lambda text: len(json.loads(text)) > 1).any():  # some fold tests several regions
        lines += ["## Accuracy per test region (mean over seeds)", "", region_table(results).to_markdown(), ""]
    groups = group_table(results)
    if not groups.empty:
        lines += ["## Demographic groups (skin-tone group): accuracy spread, worst group, max gap, equalized odds",
                  "", "equalized odds: the largest one-vs-rest TPR/FPR gap between groups over classes (fairlearn).", "",
                  groups.to_markdown(), ""]
    tests = paired_tests(out, results, reference)
    if not tests.empty:
        tests.to_csv(out / "paired_tests.csv", index=False)
        lines += [f"## Paired tests: {reference} vs each method (exact McNemar, seeds pooled)", "",
                  tests.to_markdown(index=False), ""]
    confusions = plot_confusions(results, figures / "confusion_attention.png", reference)
    if confusions:
        lines += [f"## Confusion matrices ({reference})", "", f"![confusions]({confusions.relative_to(out)})", ""]
    lines += ["Files: `results.csv` (one row per run), `summary.csv`, `paired_tests.csv`, `runs/<run>/` "
              "(config `run.yaml`, `predictions.csv`, TensorBoard events, checkpoint), `suite.yaml`.",
              f"TensorBoard: `tensorboard --logdir {out / 'runs'}`", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
