"""Suite driver: metrics agree with sklearn/fairlearn, protocols are subject-disjoint, a killed suite resumes exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mcam.cues.table import CueTable
from mcam.labels import CANONICAL
from mcam.manifest import Manifest, validate
from mcam.suites import runner as runner_module
from mcam.suites.metrics import bootstrap_ci, mcnemar, run_metrics
from mcam.suites.protocols import make_folds
from mcam.suites.spec import SuiteSpec, expand_runs


def _predictions(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(CANONICAL, n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.choice(CANONICAL, n))
    probs = rng.dirichlet(np.ones(len(CANONICAL)), n)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": labels, "pred": preds,
                          "subject": rng.choice([f"p{i}" for i in range(30)], n),
                          "region": rng.choice(["r1", "r2", "r3"], n), "group": rng.choice(["g1", "g2"], n),
                          "weight_au": rng.random(n)})
    for k, c in enumerate(CANONICAL):
        frame[f"prob_{c}"] = probs[:, k]
    return frame


def test_group_metrics_agree_with_sklearn() -> None:
    frame = _predictions()
    row = run_metrics(frame, CANONICAL)
    assert row["accuracy"] == pytest.approx(accuracy_score(frame["label"], frame["pred"]))
    assert row["macro_f1"] == pytest.approx(f1_score(frame["label"], frame["pred"], average="macro"))
    for column in ("region", "group"):
        by_hand = {k: accuracy_score(g["label"], g["pred"]) for k, g in frame.groupby(column)}
        reported = json.loads(row[f"{column}_accuracy"])
        assert reported == pytest.approx({k: round(v, 4) for k, v in by_hand.items()}, abs=1e-4)
        assert row[f"{column}_max_gap"] == pytest.approx(max(by_hand.values()) - min(by_hand.values()))
        assert row[f"{column}_worst_acc"] == pytest.approx(min(by_hand.values()))
        assert row[f"{column}_acc_std"] == pytest.approx(np.std(list(by_hand.values())))
        gaps = []
        for c in CANONICAL:
            true, pred = frame["label"] == c, frame["pred"] == c
            tpr = [pred[true & (frame[column] == g)].mean() for g in sorted(frame[column].unique())]
            fpr = [pred[~true & (frame[column] == g)].mean() for g in sorted(frame[column].unique())]
            gaps.append(max(max(tpr) - min(tpr), max(fpr) - min(fpr)))
        assert row[f"{column}_equalized_odds"] == pytest.approx(max(gaps))
    rows = np.arange(len(frame))
    true_index = [CANONICAL.index(c) for c in frame["label"]]
    probs = frame[[f"prob_{c}" for c in CANONICAL]].to_numpy()
    assert row["cross_entropy"] == pytest.approx(-np.log(probs[rows, true_index]).mean(), rel=1e-5)
    assert row["acc_ci_low"] < row["accuracy"] < row["acc_ci_high"]
    assert row["weight_au"] == pytest.approx(frame["weight_au"].mean())


def test_bootstrap_and_mcnemar() -> None:
    correct = np.array([True] * 80 + [False] * 20)
    low, high = bootstrap_ci(correct, np.arange(100) // 5)  # 20 subjects, each all right or all wrong
    assert low < 0.8 < high and high - low < 0.5
    assert bootstrap_ci(correct, np.arange(100) % 20) == (0.8, 0.8)  # every subject 4/5 right: no spread
    a = np.array([True] * 30 + [False] * 10)
    b = np.array([True] * 10 + [False] * 30)
    assert mcnemar(a, b)[:2] == (20, 0) and mcnemar(a, b)[2] < 1e-4
    assert mcnemar(a, a)[2] == 1.0


def _toy_manifest(n_subjects: int = 6) -> pd.DataFrame:
    rows = []
    for region in ("r1", "r2", "r3"):
        for s in range(n_subjects):
            for emotion in CANONICAL:
                rows.append({"sample_id": f"{region}-{s}-{emotion}", "path": "x.png", "label": emotion,
                             "region": region, "dataset": "toy", "subject": f"{region}-s{s}",
                             "group": "g1" if s % 2 else "g2", "split": "test" if s == 0 else "train"})
    return validate(pd.DataFrame(rows))


@pytest.mark.parametrize("protocol, n_folds", [("loro", 3), ("cross", 9), ("kfold", 5), ("mixing", 5)])
def test_protocols_are_subject_disjoint(protocol: str, n_folds: int) -> None:
    table = _toy_manifest()
    reserved = {"r1-s1"}
    args = {"base": "r1", "added": "r2"} if protocol == "mixing" else {}
    folds = make_folds(protocol, table, reserved, 0.2, seed=0, args=args)
    assert len(folds) == n_folds
    for fold in folds:
        parts = pd.Series(fold.parts)
        subjects = {p: set(table["subject"][parts == p]) for p in ("train", "val", "test")}
        assert not subjects["train"] & subjects["test"] and not subjects["val"] & subjects["test"]
        assert not subjects["train"] & subjects["val"]
        assert "r1-s1" not in subjects["test"]


def _toy_tables(table: pd.DataFrame) -> dict[str, CueTable]:
    rng = np.random.default_rng(0)
    label_codes = table["label"].map({c: k for k, c in enumerate(CANONICAL)}).to_numpy()
    tables = {}
    for name, dim in (("au", 6), ("macro", 7)):
        values = rng.normal(0, 1, (len(table), dim)).astype(np.float32)
        values[np.arange(len(table)), label_codes % dim] += 2.0
        labels = [f"{name}.{c}" for c in CANONICAL][:dim] if name == "macro" else [f"au.f{i}" for i in range(dim)]
        tables[name] = CueTable(name, "fp", table["sample_id"].to_numpy(), labels, values,
                                np.ones(len(table), bool))
    return tables


def _patched_runner(monkeypatch: pytest.MonkeyPatch, table: pd.DataFrame, fail_at: int | None) -> None:
    tables = _toy_tables(table)
    monkeypatch.setattr(runner_module, "ensure_data", lambda data, out, progress: Manifest(table, Path(".")))
    monkeypatch.setattr(runner_module.SuiteRunner, "_lam_detectors", lambda self, m: (Path("spec.yaml"), set()))
    monkeypatch.setattr(runner_module, "build_detectors", lambda spec: {})
    monkeypatch.setattr(runner_module, "extract_cues", lambda *a, **k: tables)
    if fail_at is None:
        return
    calls = {"n": 0}
    original = runner_module.execute_job

    def execute(job):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("killed midway")
        return original(job)

    monkeypatch.setattr(runner_module, "execute_job", execute)


def test_killed_suite_resumes_to_the_same_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _toy_manifest(4)
    spec = SuiteSpec(name="toy", modes=["lam"], models=["attention", "concat"], single_cue_models=[], seeds=[0, 1],
                     max_epochs=3, patience=2, folds=["r1", "r2"], workers=2)
    expected = len(expand_runs(spec, ["r1", "r2"], ["au", "macro"]))

    _patched_runner(monkeypatch, table, fail_at=None)
    runner_module.run_suite(spec, tmp_path / "whole", progress=False)
    whole = pd.read_csv(tmp_path / "whole" / "results.csv")
    assert len(whole) == expected

    spec.workers = 1  # the kill is simulated in-process; also checks parallel == sequential results
    _patched_runner(monkeypatch, table, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        runner_module.run_suite(spec, tmp_path / "resumed", progress=False)
    assert len(pd.read_csv(tmp_path / "resumed" / "results.csv")) == 3
    _patched_runner(monkeypatch, table, fail_at=None)
    runner_module.run_suite(spec, tmp_path / "resumed", progress=False)
    resumed = pd.read_csv(tmp_path / "resumed" / "results.csv")
    assert len(resumed) == expected and resumed["run_id"].is_unique
    columns = [c for c in whole.columns if c not in ("seconds",)]
    pd.testing.assert_frame_equal(whole.sort_values("run_id")[columns].reset_index(drop=True),
                                  resumed.sort_values("run_id")[columns].reset_index(drop=True))
    changed = SuiteSpec(**{**spec.to_dict(), "max_epochs": 4})
    with pytest.raises(runner_module.SuiteMismatchError, match="max_epochs"):
        runner_module.run_suite(changed, tmp_path / "resumed", progress=False)
    more_seeds = SuiteSpec(**{**spec.to_dict(), "seeds": [0, 1, 2]})  # growing a suite is a resume
    runner_module.run_suite(more_seeds, tmp_path / "resumed", progress=False)
    assert len(pd.read_csv(tmp_path / "resumed" / "results.csv")) == expected * 3 // 2
    report = (tmp_path / "resumed" / "report.md").read_text()
    assert "attention" in report and "figures/accuracy_by_fold.png" in report
    assert (tmp_path / "resumed" / "figures" / "cue_weights.png").exists()


def test_report_keeps_cue_subsets_apart() -> None:
    from mcam.suites.report import _method, reference_method, summary_table

    rows = [{"model": "attention", "cue_set": cue_set, "mode": "lam", "fold": "f", "seed": seed, "accuracy": acc,
             "acc_ci_low": acc - 0.1, "acc_ci_high": acc + 0.1, "macro_f1": acc}
            for cue_set, acc in (("A", 0.9), ("A-au", 0.5)) for seed in (0, 1)]
    rows.append({**rows[0], "model": "single_cue", "cue_set": "au", "accuracy": 0.4})
    results = pd.DataFrame(rows)
    results["method"] = _method(results)
    assert set(results["method"]) == {"attention[A]", "attention[A-au]", "single:au"}
    assert reference_method(results) == "attention[A]"
    summary = summary_table(results).set_index("method")["accuracy"]
    assert summary["attention[A]"] == pytest.approx(0.9) and summary["attention[A-au]"] == pytest.approx(0.5)
