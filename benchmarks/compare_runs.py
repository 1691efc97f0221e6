"""Are two suite output folders the same results? Same-inputs-same-numbers check for `mcam bench` runs.

    python benchmarks/compare_runs.py OUT_A OUT_B

Compares what both folders hold: results.csv (every column but wall time and paths), every run's predictions.csv
(runs whose folder both hold; a committed report such as docs/loro holds none), the report's tables
(summary.csv, paired_tests.csv, cue_weights.csv) and report.md (lines with times left out, the reproduce
command left out: how a run was invoked, e.g. `--workers 1` or another `--out`, is not a result; each folder's
own path, as given or absolute, read as OUT). Prints one line per check (identical, DIFFERENT, or skipped and why)
and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

IGNORED_COLUMNS = ("seconds", "run_dir")  # wall time; where a run's folder is
TIME_WORDS = ("seconds", "wall", "minutes")
TABLES = ("summary.csv", "paired_tests.csv", "cue_weights.csv")  # the report's tables, written beside report.md


class Skipped(Exception):
    """A check that cannot run on these two folders (what it needs is missing on a side)."""


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
    """Runs whose predictions.csv differ (same run_id, both folders holding the run's folder)."""
    left, right = (pd.read_csv(p / "results.csv").set_index("run_id")["run_dir"] for p in (a, b))
    common = left.index.intersection(right.index)
    held = [r for r in common if (a / left[r] / "predictions.csv").is_file()
            and (b / right[r] / "predictions.csv").is_file()]
    if not held:
        missing = [str(p) for p, runs in ((a, left), (b, right))
                   if not any((p / runs[r] / "predictions.csv").is_file() for r in common)]
        raise Skipped(f"no run folders in {' and '.join(missing)} (e.g. a committed report)")
    if len(held) < len(common):
        print(f"  note: {len(common) - len(held)} of {len(common)} runs skipped (their folder is missing on a side)")
    return [f"predictions differ: {r}" for r in held
            if (a / left[r] / "predictions.csv").read_bytes() != (b / right[r] / "predictions.csv").read_bytes()]


def compare_tables(a: Path, b: Path) -> list[str]:
    """The report's tables both folders hold that differ."""
    held = [t for t in TABLES if (a / t).is_file() and (b / t).is_file()]
    if not held:
        raise Skipped(f"neither holds both copies of {', '.join(TABLES)}")
    return [f"{t} differs" for t in held if (a / t).read_bytes() != (b / t).read_bytes()]


def report_lines(out: Path) -> list[str]:
    """report.md's lines that state results: without lines naming times and without the reproduce command block;
    the folder's own path (as given and absolute) reads as OUT."""
    lines, in_command = [], False
    for line in (out / "report.md").read_text().splitlines():
        if line.startswith("```"):
            in_command = not in_command
            continue
        if in_command or any(word in line.lower() for word in TIME_WORDS):
            continue
        for spelling in sorted({str(out.resolve()), str(out)}, key=len, reverse=True):
            line = line.replace(spelling, "OUT")
        lines.append(line)
    return lines


def compare_report(a: Path, b: Path) -> list[str]:
    """report.md lines that differ (see `report_lines`)."""
    left, right = report_lines(a), report_lines(b)
    if left == right:
        return []
    changed = [i for i, (x, y) in enumerate(zip(left, right)) if x != y]
    first = f", first at line {changed[0] + 1}: {left[changed[0]][:100]!r} vs {right[changed[0]][:100]!r}" \
        if changed else ""
    return [f"report.md differs in {len(changed) + abs(len(left) - len(right))} lines{first}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    for folder in (args.a, args.b):
        if not (folder / "results.csv").is_file():
            print(f"compare_runs: error: {folder / 'results.csv'} not found (not a suite output folder)",
                  file=sys.stderr)
            return 2
    failed = False
    for name, check in (("results.csv", compare_results), ("predictions", compare_predictions),
                        ("report tables", compare_tables), ("report.md", compare_report)):
        try:
            problems = check(args.a, args.b)
        except Skipped as why:
            print(f"{name}: skipped ({why})")
            continue
        failed |= bool(problems)
        print(f"{name}: {'identical' if not problems else 'DIFFERENT'}")
        for problem in problems[:10]:
            print(f"  {problem}")
    n_runs = len(pd.read_csv(args.a / "results.csv"))
    print(f"{args.a} vs {args.b}: {n_runs} runs, {'DIFFERENT' if failed else 'identical'} in what both hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
