"""Replicate-aware bootstrap statistics (mcam.suites.stats) and the report built on them, on generated data."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from mcam.labels import CANONICAL
from mcam.suites import stats
from mcam.suites.report import MEAN, fold_order, write_report
from mcam.suites.stats import Cell

REPO = Path(__file__).resolve().parents[1]
GRID = [(d, s) for d in (0, 1) for s in (0, 1)]  # 2 detector seeds x 2 fusion seeds


def _cell(probability: np.ndarray, subjects: np.ndarray, replicates: list[tuple[int, int]],
          rng: np.random.Generator, shared: np.ndarray | None = None) -> Cell:
    """Replicate r gets sample i right with probability[r, i] (a row broadcasts); `shared` = common uniforms."""
    probability = np.broadcast_to(probability, (len(replicates), len(subjects)))
    uniforms = rng.random(probability.shape) if shared is None else np.broadcast_to(shared, probability.shape)
    return Cell(uniforms < probability, [d for d, _ in replicates], [s for _, s in replicates], subjects)


def _subjects(n_subjects: int, per_subject: int = 7) -> np.ndarray:
    return np.repeat([f"p{i}" for i in range(n_subjects)], per_subject)


def test_ci_covers_truth_clusters_subjects_and_narrows_with_more_subjects() -> None:
    rng = np.random.default_rng(1)
    covered, widths = 0, {}
    for trial in range(80):  # subject abilities vary a lot: a per-sample bootstrap would cover ~82%
        subjects = _subjects(25, 8)
        ability = np.repeat(rng.uniform(0.3, 1.0, 25), 8)
        estimate = stats.accuracy_ci(_cell(ability, subjects, GRID, rng), n_boot=600, seed=trial)
        covered += estimate.low <= 0.65 <= estimate.high
    assert covered / 80 >= 0.88
    for n_subjects in (20, 200):
        subjects = _subjects(n_subjects, 8)
        ability = np.repeat(rng.uniform(0.3, 1.0, n_subjects), 8)
        estimate = stats.accuracy_ci(_cell(ability, subjects, GRID, rng))
        assert estimate.low < 0.65 < estimate.high and estimate.low <= estimate.estimate <= estimate.high
        widths[n_subjects] = estimate.high - estimate.low
    assert widths[200] < 0.5 * widths[20]


def test_point_estimate_is_the_mean_over_replicates() -> None:
    rng = np.random.default_rng(2)
    cell = _cell(np.full(70, 0.6), _subjects(10), GRID, rng)
    estimate = stats.accuracy_ci(cell, n_boot=200)
    assert estimate.estimate == pytest.approx(cell.correct.mean(axis=1).mean())
    assert estimate.n_replicates == 4


def test_spread_across_detector_seeds_widens_the_ci() -> None:
    rng = np.random.default_rng(3)
    subjects = _subjects(40)
    shared = rng.random(len(subjects))  # the same samples are hard for every replicate
    replicates = [(d, s) for d in (0, 1, 2) for s in (0, 1, 2)]
    alike = _cell(np.full((9, 1), 0.7), subjects, replicates, rng, shared)
    spread = _cell(np.repeat([0.5, 0.7, 0.9], 3)[:, None], subjects, replicates, rng, shared)
    a, b = stats.accuracy_ci(alike), stats.accuracy_ci(spread)
    assert a.estimate == pytest.approx(b.estimate, abs=0.02)
    assert (b.high - b.low) > 1.5 * (a.high - a.low)


def test_paired_test_detects_a_real_difference_and_never_gives_zero() -> None:
    rng = np.random.default_rng(4)
    subjects = _subjects(30)
    ability = np.repeat(rng.uniform(0.2, 0.9, 30), 7)
    reference = _cell(ability, subjects, GRID, rng)
    better = _cell(np.minimum(ability + 0.2, 1.0), subjects, GRID, rng)
    test = stats.paired_test(reference, better)
    assert test.diff == pytest.approx(better.accuracy - reference.accuracy)
    assert 0.1 < test.diff and test.low > 0 and test.p < 0.01
    reverse = stats.paired_test(better, reference)
    assert reverse.diff == pytest.approx(-test.diff) and reverse.high < 0 and reverse.p < 0.01
    always = Cell(np.ones((4, len(subjects)), bool), *zip(*GRID), subjects)
    never = Cell(np.zeros((4, len(subjects)), bool), *zip(*GRID), subjects)
    extreme = stats.paired_test(never, always, n_boot=999)
    assert extreme.diff == 1.0 and extreme.p == pytest.approx(2 / 1000)
    assert stats.paired_test(reference, reference).p == 1.0


def test_paired_test_under_the_null_is_not_anticonservative() -> None:
    rng = np.random.default_rng(5)
    p_values = []
    for trial in range(40):  # two methods of equal skill, each with its own noise per replicate
        subjects = _subjects(25)
        ability = np.repeat(rng.uniform(0.3, 0.9, 25), 7)
        a, b = _cell(ability, subjects, GRID, rng), _cell(ability, subjects, GRID, rng)
        p_values.append(stats.paired_test(a, b, n_boot=500, seed=trial).p)
    p_values = np.asarray(p_values)
    assert np.mean(p_values < 0.05) <= 0.15 and np.median(p_values) > 0.25


def test_paired_test_uses_only_shared_replicates() -> None:
    rng = np.random.default_rng(6)
    subjects = _subjects(20)
    reference = _cell(np.full(140, 0.6), subjects, GRID, rng)
    other = _cell(np.full(140, 0.6), subjects, GRID[:3] + [(2, 0)], rng)
    assert stats.paired_test(reference, other, n_boot=200).n_replicates == 3
    with pytest.raises(ValueError, match="same test samples"):
        stats.paired_test(reference, _cell(np.full(70, 0.6), _subjects(10), GRID, rng))
    with pytest.raises(ValueError, match="no .* replicate"):
        stats.paired_test(reference, _cell(np.full(140, 0.6), subjects, [(5, 5)], rng))


def test_holm_matches_a_hand_computed_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, np.nan, 0.2]), [0.5, np.nan, 0.4])
    np.testing.assert_allclose(stats.holm([0.9, 0.02]), [0.9, 0.04])  # monotone: 0.9 stays 0.9
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]


def test_cross_fold_mean_ci_resamples_replicates_jointly_across_folds() -> None:
    rng = np.random.default_rng(7)
    subjects = _subjects(40)
    shared = rng.random(len(subjects))
    replicates = [(d, s) for d in (0, 1, 2) for s in (0, 1)]
    low_high = np.repeat([0.5, 0.7, 0.9], 2)[:, None]
    fold_a = _cell(low_high, subjects, replicates, rng, shared)
    same = _cell(low_high, subjects, replicates, rng, shared)  # detector seed 0 is bad in both folds
    opposite = _cell(low_high[::-1], subjects, replicates, rng, shared)  # ... and good in the other
    correlated, cancelling = stats.mean_accuracy_ci([fold_a, same]), stats.mean_accuracy_ci([fold_a, opposite])
    assert correlated.estimate == pytest.approx((fold_a.accuracy + same.accuracy) / 2)
    assert (cancelling.high - cancelling.low) < 0.5 * (correlated.high - correlated.low)
    one = stats.accuracy_ci(_cell(np.full(280, 0.6), _subjects(40), GRID, rng))
    two = stats.accuracy_ci(_cell(np.full(280, 0.8), _subjects(40), GRID, rng))
    folds = [_cell(np.full(280, 0.6), _subjects(40), GRID, rng), _cell(np.full(280, 0.8), _subjects(40), GRID, rng)]
    mean = stats.mean_accuracy_ci(folds)
    assert mean.low < 0.7 < mean.high and (mean.high - mean.low) < max(one.high - one.low, two.high - two.low)
    test = stats.paired_mean_test(folds, [_cell(np.full(280, 0.95), _subjects(40), GRID, rng)] * 2)
    assert test.low > 0 and test.p < 0.01


def test_same_input_same_numbers() -> None:
    rng = np.random.default_rng(8)
    subjects = _subjects(15)
    a, b = _cell(np.full(105, 0.6), subjects, GRID, rng), _cell(np.full(105, 0.65), subjects, GRID, rng)
    assert stats.accuracy_ci(a) == stats.accuracy_ci(a)
    assert stats.paired_test(a, b) == stats.paired_test(a, b)
    assert stats.mean_accuracy_ci([a, b]) == stats.mean_accuracy_ci([a, b])
    assert stats.accuracy_ci(a, seed=1) != stats.accuracy_ci(a, seed=2)


def test_cell_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Cell(np.ones((2, 3), bool), [0, 0], [1, 1], ["a", "b", "c"])
    with pytest.raises(ValueError, match="shapes"):
        Cell(np.ones((2, 3), bool), [0, 1], [0, 0], ["a", "b"])


# -- the report, on a tiny fake suite output --------------------------------------------------------------------

FOLDS = {"east_asian": ("held_out", 0.45), "latin_wild": ("held_out", 0.35), "western_posed": ("source", 0.9)}
METHODS = {"attention": 0.0, "concat": 0.15}


def _metrics(frame: pd.DataFrame) -> dict[str, object]:
    """The results columns the report reads (a cheap stand-in for run_metrics)."""
    right = frame["label"] == frame["pred"]
    by_group = right.groupby(frame["group"]).mean()
    return {"n_test": len(frame), "accuracy": right.mean(), "acc_ci_low": right.mean() - 0.1,
            "acc_ci_high": right.mean() + 0.1, "macro_f1": f1_score(frame["label"], frame["pred"], average="macro"),
            "recall": json.dumps({c: 0.5 for c in CANONICAL}),
            "confusion": json.dumps(confusion_matrix(frame["label"], frame["pred"], labels=CANONICAL).tolist()),
            "region_accuracy": json.dumps({str(frame["region"].iloc[0]): round(right.mean(), 4)}),
            "group_acc_std": by_group.std(ddof=0), "group_worst_acc": by_group.min(),
            "group_max_gap": by_group.max() - by_group.min(), "group_equalized_odds": 0.1,
            "weight_au": frame["weight_au"].mean(), "weight_vgg": frame["weight_vgg"].mean()}


def fake_suite(out: Path) -> Path:
    """results.csv + runs/*/predictions.csv: 3 folds (one source), 2 methods, 2 detector seeds x 2 fusion seeds."""
    rng = np.random.default_rng(0)
    rows = []
    for fold, (role, base) in FOLDS.items():
        subjects = _subjects(8)
        labels = np.tile(CANONICAL, 8)
        ability = np.repeat(rng.uniform(-0.15, 0.15, 8), 7)
        for method, bonus in METHODS.items():
            for detector_seed, seed in GRID:
                right = rng.random(len(labels)) < np.clip(base + bonus + ability + 0.05 * detector_seed, 0, 1)
                wrong = np.asarray(CANONICAL)[(np.arange(len(labels)) + 1 + rng.integers(0, 6, len(labels))) % 7]
                probs = rng.dirichlet(np.ones(7), len(labels))
                frame = pd.DataFrame({"sample_id": [f"{fold}-{i}" for i in range(len(labels))], "region": fold,
                                      "subject": [f"{fold}-{s}" for s in subjects], "label": labels,
                                      "group": np.where(np.arange(len(labels)) % 2, "g1", "g2"), "dataset": "toy",
                                      "part": "test", "pred": np.where(right, labels, wrong),
                                      **{f"prob_{c}": probs[:, k] for k, c in enumerate(CANONICAL)},
                                      "weight_au": rng.random(len(labels)), "weight_vgg": rng.random(len(labels))})
                frame = frame.sample(frac=1.0, random_state=int(rng.integers(1000)))  # row order differs by run
                run_id = f"{fold}/lam/{method}/A/d{detector_seed}/seed{seed}"
                run_dir = Path("runs") / run_id
                (out / run_dir).mkdir(parents=True)
                frame.to_csv(out / run_dir / "predictions.csv", index=False)
                rows.append({"run_id": run_id, "suite": "tiny", "protocol": "loro", "fold": fold, "fold_role": role,
                             "mode": "lam", "model": method, "cue_set": "A", "cues": "au,vgg",
                             "detector_seed": detector_seed, "seed": seed, **_metrics(frame),
                             "seconds": float(rng.uniform(1, 9)), "run_dir": run_dir.as_posix()})
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    (out / "command.txt").write_text("mcam bench tiny --out OUT\n")
    return out


def _outputs(out: Path) -> dict[str, bytes]:
    names = ["report.md", "summary.csv", "paired_tests.csv"]
    return {name: (out / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def suite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_suite(tmp_path_factory.mktemp("fake") / "suite")


def test_report_keeps_the_source_fold_out_of_the_mean_and_is_reproducible(suite_template: Path,
                                                                           tmp_path: Path) -> None:
    out = Path(shutil.copytree(suite_template, tmp_path / "suite"))
    report = write_report(out).read_text()
    first = _outputs(out)
    summary = pd.read_csv(out / "summary.csv")
    for method in METHODS:
        rows = summary[summary["method"] == method].set_index("fold")
        held_out = rows.loc[["east_asian", "latin_wild"], "accuracy"].mean()
        assert rows.loc[MEAN, "accuracy"] == pytest.approx(held_out, abs=1e-4)
        assert rows.loc[MEAN, "accuracy"] != pytest.approx(rows.loc[list(FOLDS), "accuracy"].mean(), abs=1e-3)
        assert (rows["ci_low"] <= rows["accuracy"]).all() and (rows["accuracy"] <= rows["ci_high"]).all()
        assert set(rows["n_replicates"]) == {4}
    assert summary.set_index(["method", "fold"]).loc[("attention", "western_posed"), "fold_role"] == "source"
    tests = pd.read_csv(out / "paired_tests.csv")
    assert list(tests["fold"]) == ["east_asian", "latin_wild", "western_posed", MEAN]
    assert set(tests["method"]) == {"concat"} and (tests["p_holm"] >= tests["p"]).all()
    assert (tests["p"] > 0).all() and tests["significant"].dtype == bool
    assert "western_posed: in-domain for the detectors (not in the mean)" in report
    assert "## How these numbers were made" in report and "4 of 6 cells" not in report
    assert "6 of 6 cells (mode x method x fold) have 2 detector seeds [0, 1] x 2 fusion seeds [0, 1]" in report
    assert "seconds" not in report
    figures = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    assert {"accuracy_by_fold.png", "cue_weights.png", "confusion_attention.png"} <= set(figures)
    write_report(out)
    assert _outputs(out) == first
    assert {p.name: p.read_bytes() for p in (out / "figures").iterdir()} == figures
    results = pd.read_csv(out / "results.csv")
    results.sample(frac=1.0, random_state=3).to_csv(out / "results.csv", index=False)  # runs finished in another order
    write_report(out)
    assert _outputs(out) == first


def test_folds_keep_the_protocol_order() -> None:
    frame = pd.DataFrame({"fold": ["x@100%", "x@0%", "x@10%", "fold10", "fold2"], "mode": "lam"})
    assert fold_order(frame) == ["fold2", "fold10", "x@0%", "x@10%", "x@100%"]


def test_report_reads_older_results_and_rejects_duplicate_run_ids(suite_template: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(suite_template, tmp_path / "suite"))
    results = pd.read_csv(out / "results.csv")
    results = results[results["detector_seed"] == 0].drop(columns=["detector_seed", "fold_role"])
    results.to_csv(out / "results.csv", index=False)
    report = write_report(out).read_text()  # no detector_seed / fold_role: one detector, every fold held out
    assert "1 detector seed [0] x 2 fusion seeds [0, 1]" in report and "in-domain" not in report
    summary = pd.read_csv(out / "summary.csv").set_index(["method", "fold"])
    assert summary.loc[("attention", MEAN), "accuracy"] == pytest.approx(
        summary.loc[[("attention", f) for f in FOLDS], "accuracy"].mean(), abs=1e-4)
    pd.concat([results, results.iloc[:2]]).to_csv(out / "results.csv", index=False)
    with pytest.raises(ValueError, match="duplicate run_id.*east_asian/lam/attention/A/d0/seed0"):
        write_report(out)


def test_before_after_pairs_two_runs_of_one_suite(suite_template: Path, tmp_path: Path) -> None:
    """benchmarks/before_after.py: a method whose held-out predictions all became right shows a significant gain;
    an untouched method shows exactly 0; suites on other test samples are refused."""
    spec = importlib.util.spec_from_file_location("before_after", REPO / "benchmarks" / "before_after.py")
    before_after = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before_after)
    after = Path(shutil.copytree(suite_template, tmp_path / "after"))
    for path in (after / "runs").glob("*/lam/concat/*/*/*/predictions.csv"):
        frame = pd.read_csv(path)
        frame["pred"] = frame["label"]
        frame.to_csv(path, index=False)
    table = before_after.compare(suite_template, after).set_index("method")
    assert table.loc["attention", "diff"] == 0 and not table.loc["attention", "significant"]
    assert table.loc["concat", "after"] == 1.0 and table.loc["concat", "significant"]
    assert table.loc["concat", "diff"] == pytest.approx(1.0 - table.loc["concat", "before"])
    assert (table["n_replicates"] == 4).all()
    text = before_after.markdown(table.reset_index(), suite_template, after)
    assert "| LAM    | concat" in text and "Holm over 2 rows" in text
    other = Path(shutil.copytree(suite_template, tmp_path / "other"))
    for path in (other / "runs").glob("east_asian/*/*/*/*/*/predictions.csv"):
        frame = pd.read_csv(path)
        frame["subject"] = "someone-else"
        frame.to_csv(path, index=False)
    with pytest.raises(SystemExit, match="test samples differ"):
        before_after.compare(suite_template, other)
