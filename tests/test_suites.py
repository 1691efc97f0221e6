"""Suite metrics agree with sklearn/fairlearn; protocols are subject-disjoint."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mcam.labels import CANONICAL
from mcam.manifest import validate
from mcam.suites.metrics import bootstrap_ci, group_metrics, run_metrics
from mcam.suites.protocols import make_folds


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


def test_group_metrics_equal_fairlearn() -> None:
    """Counted per group, as fairlearn's MetricFrame and equalized_odds_difference define them; also for a group
    that never has some class (rate 0) and a group of one sample."""
    from fairlearn.metrics import MetricFrame, equalized_odds_difference

    frame = _predictions(n=200, seed=3)
    frame.loc[frame["region"] == "r3", "label"] = "happy"  # r3: no positives of any other class
    frame.loc[0, "region"] = "r4"
    for column in ("region", "group"):
        row = group_metrics(frame, column)
        by_group = MetricFrame(metrics=accuracy_score, y_true=frame["label"], y_pred=frame["pred"],
                               sensitive_features=frame[column])
        assert json.loads(row[f"{column}_accuracy"]) == {k: round(float(v), 4) for k, v in by_group.by_group.items()}
        assert row[f"{column}_worst"] == by_group.by_group.idxmin()
        assert row[f"{column}_max_gap"] == pytest.approx(by_group.difference(method="between_groups"), abs=1e-12)
        odds = [equalized_odds_difference(frame["label"] == c, frame["pred"] == c,
                                          sensitive_features=frame[column]) for c in sorted(set(frame["label"]))]
        assert row[f"{column}_equalized_odds"] == pytest.approx(max(odds), abs=1e-12)


def test_bootstrap_ci() -> None:
    correct = np.array([True] * 80 + [False] * 20)
    low, high = bootstrap_ci(correct, np.arange(100) // 5)  # 20 subjects, each all right or all wrong
    assert low < 0.8 < high and high - low < 0.5
    assert bootstrap_ci(correct, np.arange(100) % 20) == (0.8, 0.8)  # every subject 4/5 right: no spread


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
    again = make_folds(protocol, table, reserved, 0.2, seed=0, args=args)
    assert all(list(a.parts) == list(b.parts) for a, b in zip(folds, again))  # the seed alone decides


def test_kfold_tests_every_region_in_every_fold() -> None:
    table = _toy_manifest(n_subjects=10)
    folds = make_folds("kfold", table, {"r1-s1"}, 0.2, seed=0, args={"k": 5})
    tested = pd.Series(dtype=int)
    for fold in folds:
        test = table[fold.mask("test")].drop_duplicates("subject")
        assert test["region"].value_counts().reindex(["r1", "r2", "r3"]).between(1, 2).all()
        tested = pd.concat([tested, test["subject"].value_counts()])
    assert tested.index.is_unique and len(tested) == 29  # every subject but the reserved one tested once


def test_report_keeps_cue_subsets_apart() -> None:
    from mcam.suites.report import prepare_results, reference_method, summary_table
    from mcam.suites.stats import Cell

    rows = [{"model": "attention", "cue_set": cue_set, "mode": "lam", "fold": "f", "seed": seed, "accuracy": acc,
             "acc_ci_low": acc - 0.1, "acc_ci_high": acc + 0.1, "macro_f1": acc}
            for cue_set, acc in (("A", 0.9), ("A-au", 0.5)) for seed in (0, 1)]
    rows.append({**rows[0], "model": "single_cue", "cue_set": "au", "accuracy": 0.4})
    results = prepare_results(pd.DataFrame(rows))
    assert set(results["method"]) == {"attention[A]", "attention[A-au]", "single:au"}
    assert reference_method(results) == "attention[A]"
    right = {method: np.arange(10) < 10 * runs["accuracy"].to_numpy()[:, None]  # each run 10 samples of 5 subjects
             for method, runs in results.groupby("method")}
    cells = {("lam", method, "f"): Cell(right[method], runs["detector_seed"], runs["seed"], np.arange(10) // 2)
             for method, runs in results.groupby("method")}
    summary = summary_table(results, cells, n_boot=200).set_index(["method", "fold"])["accuracy"]
    assert summary["attention[A]", "f"] == pytest.approx(0.9) and summary["attention[A-au]", "f"] == pytest.approx(0.5)
    assert summary["attention[A]", "held-out mean"] == pytest.approx(0.9)
