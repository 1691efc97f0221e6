"""Are two suite output folders the same results? Same-inputs-same-numbers check for `mcam bench` runs.

    python benchmarks/compare_runs.py OUT_A OUT_B

Compares results.csv (every column but wall time and paths), every run's predictions.csv, and
report.md (lines with times left out, each folder's own path read as OUT). Prints one line per check and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

IGNORED_COLUMNS = ("seconds", "run_dir")  # wall time; where a run's folder is
TIME_WORDS = ("seconds", "wall", "minutes")


def compare_results(a: Path, b: Path) -> list[str]:
    """Differences between two results.csv files, rows matched by run_id."""
    left, right = (pd.read_csv(p / "results.csv").set_index("run_id").sort_index() for p in (a, b))
    problems = []
    if set(left.index) != set(right.index):
        problems.append(f"runs differ: {len(set(left.index) ^ set(right.index))} run_ids in one only")
    if left.index.duplicated().any() or right.index.duplicated().any():
        problems.append("duplicate run_ids")
    common = left.index.intersection(right.index)
    columns = [c for c in left.columns if c not in IGNORED_COLUMNS]
    if set(columns) != {c for c in right.columns if c not in IGNORED_COLUMNS}:
        problems.append("columns differ")
        return problems
    diff = left.loc[common, columns].compare(right.loc[common, columns])
    if len(diff):
        problems.append(f"{len(diff)} runs differ, e.g. {diff.index[0]}: {diff.iloc[0].dropna().to_dict()}")
    return problems


def compare_predictions(a: Path, b: Path) -> list[str]:
    """Runs whose predictions.csv differ (same run_id on both sides)."""
    left, right = (pd.read_csv(p / "results.csv").set_index("run_id")["run_dir"] for p in (a, b))
    problems = []
    for run_id in left.index.intersection(right.index):
        if (a / left[run_id] / "predictions.csv").read_bytes() != (b / right[run_id] / "predictions.csv").read_bytes():
            problems.append(f"predictions differ: {run_id}")
    return problems


def compare_report(a: Path, b: Path) -> list[str]:
    """report.md lines that differ, leaving out lines that report times; each folder's own path (the recorded
    command's --out) reads as OUT."""
    def lines(path: Path) -> list[str]:
        return [line.replace(str(path), "OUT") for line in (path / "report.md").read_text().splitlines()
                if not any(word in line.lower() for word in TIME_WORDS)]

    left, right = lines(a), lines(b)
    return [] if left == right else [f"report.md differs in {sum(x != y for x, y in zip(left, right)) + abs(len(left) - len(right))} lines"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    failed = False
    for name, check in (("results.csv", compare_results), ("predictions", compare_predictions),
                        ("report.md", compare_report)):
        problems = check(args.a, args.b)
        failed |= bool(problems)
        print(f"{name}: {'identical' if not problems else 'DIFFERENT'}")
        for problem in problems[:10]:
            print(f"  {problem}")
    n_runs = len(pd.read_csv(args.a / "results.csv"))
    print(f"{args.a} vs {args.b}: {n_runs} runs, {'DIFFERENT' if failed else 'identical'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
