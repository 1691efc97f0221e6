"""What a change did to a suite's numbers: each method's held-out mean before and after, and the paired difference.

    python benchmarks/before_after.py BEFORE_OUT AFTER_OUT [--out FILE.md]

BEFORE_OUT and AFTER_OUT are two `mcam bench` output folders of one suite on the same data (same folds and test
samples), e.g. the main job before and after a detector changed. Per mode and method: the held-out mean of each
(bootstrap 95% CI over test subjects, detector seeds and fusion seeds, as in report.md) and after - before,
paired by test sample and by (detector seed, fusion seed) replicate, with a two-sided bootstrap p, Holm-corrected
over all rows. Pairing by replicate fits a change that keeps the other detectors: replicate d of both runs shares
every detector the change did not touch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mcam.suites import stats
from mcam.suites.report import ALPHA, cell_text, held_out_folds, load_cells, load_results, tests_draws


def held_out_cells(out: Path) -> tuple[dict[tuple[str, str], list[stats.Cell]], dict[str, list[str]]]:
    """Per (mode, method): its cells on the held-out folds (fold order); and each mode's held-out folds."""
    results = load_results(out)
    cells = load_cells(out, results)
    folds = {mode: held_out_folds(results, mode) for mode in sorted(results["mode"].unique())}
    chosen = {}
    for mode, held_out in folds.items():
        for method in sorted(results.loc[results["mode"] == mode, "method"].unique()):
            if held_out and all((mode, method, f) in cells for f in held_out):
                chosen[mode, method] = [cells[mode, method, f] for f in held_out]
    return chosen, folds


def compare(before: Path, after: Path, n_boot: int | None = None, seed: int = stats.SEED) -> pd.DataFrame:
    """One row per (mode, method) both suites ran: held-out means with CIs, after - before, CI, p, Holm."""
    old, old_folds = held_out_cells(before)
    new, new_folds = held_out_cells(after)
    if old_folds != new_folds:
        raise SystemExit(f"the two suites hold out different folds: {old_folds} vs {new_folds}")
    keys = sorted(set(old) & set(new))
    if not keys:
        raise SystemExit("the two suites share no (mode, method) with results on every held-out fold")
    for key in keys:
        for a, b in zip(old[key], new[key]):
            if not np.array_equal(a.subjects, b.subjects):
                raise SystemExit(f"{key}: the two suites' test samples differ (not the same data)")
    draws = n_boot or tests_draws(len(keys))
    rows = []
    for mode, method in keys:
        first = stats.mean_accuracy_ci(old[mode, method], draws, seed)
        second = stats.mean_accuracy_ci(new[mode, method], draws, seed)
        test = stats.paired_mean_test(old[mode, method], new[mode, method], draws, seed)
        rows.append({"mode": mode, "method": method, "before": first.estimate, "before_low": first.low,
                     "before_high": first.high, "after": second.estimate, "after_low": second.low,
                     "after_high": second.high, "diff": test.diff, "ci_low": test.low, "ci_high": test.high,
                     "p": test.p, "n_replicates": test.n_replicates, "n_boot": draws})
    frame = pd.DataFrame(rows)
    frame["p_holm"] = stats.holm(frame["p"].to_numpy())
    frame["significant"] = frame["p_holm"] < ALPHA
    return frame


def markdown(frame: pd.DataFrame, before: Path, after: Path) -> str:
    """The table with how it was made."""
    shown = pd.DataFrame({
        "mode": frame["mode"].str.upper(), "method": frame["method"],
        **{f"{side} [95% CI]": [cell_text(*row) for row in zip(frame[side], frame[f"{side}_low"],
                                                                 frame[f"{side}_high"])]
           for side in ("before", "after")},
        "after - before": frame["diff"].map("{:+.3f}".format),
        "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(frame["ci_low"], frame["ci_high"])],
        "p_holm": frame["p_holm"].map("{:.4f}".format),
        "significant": np.where(frame["significant"], "yes", "no")})
    return (f"Held-out mean accuracy, before = {before}, after = {after}.\n\n"
            f"{shown.to_markdown(index=False, disable_numparse=True)}\n\n"
            f"Intervals: bootstrap ({int(frame['n_boot'].iloc[0])} draws) over test subjects, detector seeds and "
            f"fusion seeds within them; the difference is paired by test sample and (detector seed, fusion seed) "
            f"replicate ({int(frame['n_replicates'].min())} replicates), two-sided bootstrap p, Holm over "
            f"{len(frame)} rows, significant at {ALPHA}.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not (folder / "results.csv").exists():
            parser.error(f"{folder}/results.csv not found (give two `mcam bench` output folders)")
    text = markdown(compare(args.before, args.after), args.before, args.after)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
