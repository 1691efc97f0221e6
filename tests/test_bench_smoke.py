"""The main job's smoke profile end to end through the CLI: synth -> pretrain -> cues -> LORO (LAM, GAM) -> report;
then other suites and `mcam fit` (GAM) share its artifact store without touching what it used."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from mcam.assets import asset_path


def _mcam(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mcam.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".locks" not in p.parts}


def test_bench_loro_smoke(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    _mcam(tmp_path, "bench", "loro", "--profile", "smoke", "--out", str(out), "--quiet")
    results = pd.read_csv(out / "results.csv")
    assert set(results["mode"]) == {"lam", "gam"}
    assert set(results["model"]) == {"attention", "concat", "late_average"}
    assert set(results["fold"]) == {"east_asian", "western_posed"}
    assert dict(zip(results["fold"], results["fold_role"])) == {"east_asian": "held_out", "western_posed": "source"}
    assert results[["acc_ci_low", "acc_ci_high", "group_max_gap"]].notna().all().all()
    assert results["detectors_key"].str.startswith("detectors/").all() and results["cue_keys"].notna().all()
    report = (out / "report.md").read_text()
    for text in ("## LAM", "## GAM", "Cue weights", "Demographic groups", "Paired tests", "Holm",
                 "How these numbers were made", "mcam bench loro"):
        assert text in report, text
    for figure in ("accuracy_by_fold.png", "cue_weights.png", "confusion_attention.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert (tmp_path / "data" / "synth_tiny" / "manifest.csv").exists()
    timing = (out / "timing.txt").read_text().splitlines()  # the invocation, then its stages
    assert timing[0].startswith("wall seconds (this invocation): ")
    stages = dict(line.strip().rsplit(": ", 1) for line in timing[1:])
    assert {"data", "LAM detectors and cues, detector seed 0", "report"} <= set(stages)
    assert any(name.startswith("GAM detectors") for name in stages) and any(n.startswith("fusion") for n in stages)
    assert 0 < sum(map(float, stages.values())) <= float(timing[0].rsplit(": ", 1)[1]) + 0.1
    environment = (out / "environment.txt").read_text().splitlines()  # what it ran with: python, every package
    assert environment[0].startswith("python 3.") and f"torch=={version('torch')}" in environment
    assert environment[1].startswith("cpu ") and "(torch kernels: " in environment[1]  # on another CPU type, other bits
    assert "environment.txt" in report
    run_dir = out / results["run_dir"].iloc[0]
    for name in ("run.yaml", "config.yaml", "predictions.csv"):
        assert (run_dir / name).exists(), name
    assert list(run_dir.glob("events.out.tfevents.*"))

    # Another suite, and `mcam fit` in GAM mode, on the same store: every file the smoke run used stays as it was.
    store = tmp_path / "outputs" / "store"
    before = _digests(store)
    _mcam(tmp_path, "bench", "loro", "--profile", "smoke", "--out", str(tmp_path / "other"), "--quiet",
          "--seeds", "[1]", "--models", "[attention]")
    lam_spec = store / results.loc[results["mode"] == "lam", "detectors_key"].iloc[0] / "detectors.yaml"
    _mcam(tmp_path, "fit", "--config", str(asset_path("configs/model/attention.yaml")),
          "--config", str(asset_path("configs/data/synth_within.yaml")),
          "--config", str(asset_path("configs/trainer/cpu_fast.yaml")), "--config", str(asset_path("configs/mode/gam.yaml")),
          "--data.data_dir", "data/synth_tiny", "--data.detectors", str(lam_spec), "--data.store", str(store),
          "--data.cues", "[au, micro]", "--data.gam_epochs", "1", "--trainer.max_epochs", "3",
          "--trainer.logger.init_args.save_dir", str(tmp_path / "fit"))
    after = _digests(store)
    assert {name: after.get(name) for name in before} == before
    assert len(after) > len(before)  # the GAM fit added its own entries

    # The same suite again into a new folder trains and extracts nothing: everything comes from the store.
    again = _mcam(tmp_path, "bench", "loro", "--profile", "smoke", "--out", str(tmp_path / "again"), "--quiet")
    assert "trained in" not in again.stderr and "extracted" not in again.stderr, again.stderr[-2000:]
    assert _digests(store) == after
    columns = [c for c in results.columns if c not in ("seconds",)]
    pd.testing.assert_frame_equal(results[columns], pd.read_csv(tmp_path / "again" / "results.csv")[columns])
