"""benchmarks/compare_runs.py: compares what two suite folders both hold, says what it skipped, and is not fooled by
how a run was invoked (a relative --out, --workers 1 in the reproduce line)."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_runs", REPO / "benchmarks" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def _suite(out: Path, command: str) -> Path:
    rows = [{"run_id": f"east_asian/lam/attention/A/d0/seed{s}", "acc": 0.5 + s / 10, "seconds": 1.0 + s,
             "run_dir": f"runs/east_asian/lam/attention/A/d0/seed{s}"} for s in range(2)]
    for row in rows:
        (out / row["run_dir"]).mkdir(parents=True)
        (out / row["run_dir"] / "predictions.csv").write_text(f"sample_id,pred\na,{row['acc']}\n")
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    (out / "summary.csv").write_text("method,accuracy\nattention,0.55\n")
    (out / "report.md").write_text(f"# report\n\nReproduce:\n\n```bash\n{command}\n```\n\nattention 0.550\n"
                                   f"figures in {out}/figures\nwall seconds 12.0\n")
    return out


def test_a_committed_report_and_another_invocation_compare_identical(tmp_path: Path, capsys, monkeypatch) -> None:
    run = _suite(tmp_path / "outputs" / "loro", "mcam bench loro --out outputs/loro --workers 1")
    docs = tmp_path / "docs" / "loro"  # what refresh_readme publishes: no run folders, another report path
    docs.mkdir(parents=True)
    for name in ("results.csv", "summary.csv"):
        shutil.copy(run / name, docs / name)
    (docs / "report.md").write_text((run / "report.md").read_text().replace("--workers 1", "").replace(
        str(run), str(docs)).replace("12.0", "15.5"))
    monkeypatch.chdir(tmp_path)
    assert compare_runs.main([os.path.relpath(run, tmp_path), str(docs)]) == 0
    out = capsys.readouterr().out
    assert "predictions: skipped (no run folders in" in out and "report tables: identical" in out
    assert "report.md: identical" in out and "identical in what both hold" in out


def test_a_changed_prediction_or_number_is_different(tmp_path: Path, capsys) -> None:
    a = _suite(tmp_path / "a", "mcam bench loro --out a")
    b = _suite(tmp_path / "b", "mcam bench loro --out b")
    assert compare_runs.main([str(a), str(b)]) == 0
    (b / "runs/east_asian/lam/attention/A/d0/seed1/predictions.csv").write_text("sample_id,pred\na,0.9\n")
    (b / "report.md").write_text((b / "report.md").read_text().replace("0.550", "0.551"))
    assert compare_runs.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "predictions differ: east_asian/lam/attention/A/d0/seed1" in out and "report.md differs in 1 lines" in out


def test_a_folder_without_results_is_one_line(tmp_path: Path, capsys) -> None:
    assert compare_runs.main([str(tmp_path), str(tmp_path)]) == 2
    assert "results.csv not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_runs.main([])
