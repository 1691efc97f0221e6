"""The main job's smoke profile end to end through the CLI: synth -> pretrain -> cues -> LORO (LAM, GAM) -> report."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd


def test_bench_loro_smoke(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    command = [sys.executable, "-m", "mcam.cli.main", "bench", "loro", "--profile", "smoke", "--out", str(out), "--quiet"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert set(results["mode"]) == {"lam", "gam"}
    assert set(results["model"]) == {"attention", "concat", "late_average"}
    assert set(results["fold"]) == {"east_asian", "western_posed"}
    assert results[["acc_ci_low", "acc_ci_high", "group_max_gap"]].notna().all().all()
    report = (out / "report.md").read_text()
    for text in ("## LAM", "## GAM", "Cue weights", "Demographic groups", "McNemar", "mcam bench loro"):
        assert text in report, text
    for figure in ("accuracy_by_fold.png", "cue_weights.png", "confusion_attention.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert (tmp_path / "data" / "synth_tiny" / "manifest.csv").exists()
    run_dir = out / results["run_dir"].iloc[0]
    assert (run_dir / "run.yaml").exists() and (run_dir / "predictions.csv").exists()
    assert list(run_dir.glob("events.out.tfevents.*"))
