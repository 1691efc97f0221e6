"""Predictions: a frame that knows its column groups (class probabilities, cue weights, metadata), and the report's
cue-weight tables built from it."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_stats

from mcam.fusion.predictions import Predictions
from mcam.suites.metrics import run_metrics
from mcam.suites.report import MEAN, write_report

CLASSES = ["happy", "sad", "au"]  # 'au' is also a cue name
CUES = ["au", "vgg", "macro"]


def _metadata(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [f"{i:03d}" for i in range(n)],  # '007' must stay '007'
                         "region": rng.choice(["r1", "r2", "r3"], n), "subject": [f"p{i % 5}" for i in range(n)],
                         "label": rng.choice(CLASSES, n), "group": rng.choice(["g1", "g2"], n)})


def _build(n: int = 40, seed: int = 0, metadata: pd.DataFrame | None = None) -> Predictions:
    rng = np.random.default_rng(seed)
    metadata = _metadata(n, rng) if metadata is None else metadata
    probs = rng.dirichlet(np.ones(len(CLASSES)), n).astype(np.float32)
    weights = rng.dirichlet(np.ones(len(CUES)), n).astype(np.float32)
    return Predictions.build(metadata, probs, weights, CLASSES, CUES)


def test_build_round_trips_through_csv(tmp_path: Path) -> None:
    built = _build()
    assert isinstance(built, Predictions)
    assert built.classes == CLASSES and built.cues == CUES
    assert list(built.probabilities.columns) == CLASSES and list(built.weights.columns) == CUES
    assert list(built.metadata.columns) == ["sample_id", "region", "subject", "label", "group"]
    assert list(built.predicted) == [CLASSES[k] for k in built.probabilities.to_numpy().argmax(1)]
    assert built.correct.tolist() == (built["label"] == built.predicted).tolist()
    built.to_csv(tmp_path / "predictions.csv")
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header == ["sample_id", "region", "subject", "label", "group", "pred", "prob_happy", "prob_sad", "prob_au",
                      "weight_au", "weight_vgg", "weight_macro"]  # the on-disk layout older readers know
    read = Predictions.read_csv(tmp_path / "predictions.csv")
    assert read.classes == CLASSES and read.cues == CUES
    pd.testing.assert_frame_equal(read.metadata, built.metadata)
    assert read["sample_id"].iloc[7] == "007"
    np.testing.assert_allclose(read.probabilities, built.probabilities, rtol=1e-6)
    np.testing.assert_allclose(read.weights, built.weights, rtol=1e-6)
    assert read.predicted.tolist() == built.predicted.tolist()
    only = Predictions.read_csv(tmp_path / "predictions.csv", metadata=["label"])
    assert list(only.metadata.columns) == ["label"] and only.classes == CLASSES and only.cues == CUES


def test_weights_by_is_the_mean_weight_per_metadata_value() -> None:
    predictions = _build(60)
    for column in ("region", "label", "group"):
        table = predictions.weights_by(column)
        assert list(table.columns) == CUES and table.index.name == column
        for value, rows in predictions.groupby(column):
            expected = [rows[f"weight_{c}"].astype(float).mean() for c in CUES]
            np.testing.assert_allclose(table.loc[value].to_numpy(), expected, rtol=1e-6)
    both = predictions.weights_by(["region", "label"])
    assert both.index.names == ["region", "label"]
    np.testing.assert_allclose(predictions.mean_weights(), predictions.weights.mean())


def test_groups_are_inferred_when_names_look_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    metadata = _metadata(30, rng).assign(weight_kg=rng.uniform(50, 90, 30),  # numeric, looks like a cue
                                         prob_source=rng.choice(["lab", "wild"], 30),  # text, looks like a class
                                         probe=1.0, weighted=True)
    built = _build(30, metadata=metadata)
    assert built.classes == CLASSES and built.cues == CUES
    built.to_csv(tmp_path / "predictions.csv")
    for predictions in (Predictions.read_csv(tmp_path / "predictions.csv"),
                        Predictions(pd.read_csv(tmp_path / "predictions.csv")),  # inferred lazily
                        Predictions.from_frame(pd.DataFrame(built))):
        assert predictions.classes == CLASSES and predictions.cues == CUES
        assert {"weight_kg", "prob_source", "probe", "weighted"} <= set(predictions.metadata.columns)
        assert list(predictions.weights.columns) == CUES  # class 'au' and cue 'au' kept apart
        np.testing.assert_allclose(predictions.weights["au"], built["weight_au"], rtol=1e-6)
        np.testing.assert_allclose(predictions.probabilities["au"], built["prob_au"], rtol=1e-6)
    explicit = Predictions.read_csv(tmp_path / "predictions.csv", cues=["vgg"])
    assert explicit.cues == ["vgg"] and list(explicit.weights.columns) == ["vgg"]
    with pytest.raises(KeyError, match="weight_face"):
        Predictions.read_csv(tmp_path / "predictions.csv", cues=["face"])


def test_predictions_without_weight_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(len(CLASSES)), 20)
    built = Predictions.build(_metadata(20, rng), probs, None, CLASSES, [])
    assert built.cues == [] and built.weights.shape == (20, 0)
    assert built.weights_by("region").shape[1] == 0
    built.to_csv(tmp_path / "predictions.csv")
    read = Predictions.read_csv(tmp_path / "predictions.csv")
    assert read.cues == [] and read.classes == CLASSES
    row = run_metrics(read)
    assert not [key for key in row if key.startswith("weight_")]
    assert row["accuracy"] == pytest.approx(read.correct.mean())


def test_pandas_operations_keep_the_groups() -> None:
    predictions = _build(50)
    subset = predictions[predictions["region"] == "r1"]
    assert isinstance(subset, Predictions) and subset.classes == CLASSES and subset.cues == CUES
    assert len(subset.weights) == (predictions["region"] == "r1").sum()
    copied = predictions.copy()
    copied["extra"] = 1
    assert isinstance(copied, Predictions) and copied.cues == CUES and "extra" in copied.metadata
    narrow = predictions[["sample_id", "label", "pred", "weight_vgg"]]
    assert narrow.classes == [] and narrow.cues == ["vgg"]
    stacked = pd.concat([predictions, predictions])
    assert isinstance(stacked, Predictions) and stacked.classes == CLASSES and stacked.cues == CUES
    assert isinstance(predictions["label"], pd.Series) and not isinstance(predictions.weights, Predictions)


def test_build_rejects_mismatched_inputs() -> None:
    metadata = _metadata(5, np.random.default_rng(3))
    with pytest.raises(ValueError, match="probabilities"):
        Predictions.build(metadata, np.ones((4, 3)), np.ones((5, 3)), CLASSES, CUES)
    with pytest.raises(ValueError, match="weights"):
        Predictions.build(metadata, np.ones((5, 3)), np.ones((5, 2)), CLASSES, CUES)
    with pytest.raises(ValueError, match="clash"):
        Predictions.build(metadata.assign(pred="x"), np.ones((5, 3)), np.ones((5, 3)), CLASSES, CUES)


def test_average_matches_rows_by_sample_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    metadata = _metadata(30, rng)
    members = [Predictions.build(metadata, rng.dirichlet(np.ones(3), 30), rng.dirichlet(np.ones(3), 30), CLASSES,
                                 CUES) for _ in range(3)]
    shuffled = [members[0], *(m.sample(frac=1.0, random_state=i) for i, m in enumerate(members[1:]))]
    mean = Predictions.average(shuffled)
    assert mean.classes == CLASSES and mean.cues == CUES and list(mean["sample_id"]) == list(metadata["sample_id"])
    np.testing.assert_allclose(mean.probabilities, np.mean([m.probabilities for m in members], axis=0), rtol=1e-6)
    np.testing.assert_allclose(mean.weights, np.mean([m.weights for m in members], axis=0), rtol=1e-6)
    assert list(mean.predicted) == list(mean.probabilities.idxmax(axis=1))
    pd.testing.assert_frame_equal(mean.metadata, metadata)
    with pytest.raises(ValueError, match="other samples"):
        Predictions.average([members[0], members[1].iloc[1:]])
    with pytest.raises(ValueError, match="cues"):
        Predictions.average([members[0], Predictions.from_frame(members[1], cues=["au"])])


def test_run_metrics_reads_groups_from_predictions() -> None:
    predictions = _build(80)
    row = run_metrics(predictions, seed=0)
    assert row == run_metrics(pd.DataFrame(predictions), CLASSES, seed=0)
    for cue in CUES:
        assert row[f"weight_{cue}"] == pytest.approx(predictions.weights[cue].mean())


# -- the report's cue-weight tables ----------------------------------------------------------------------------


def _table(report: str, heading: str) -> pd.DataFrame:
    """The markdown table under `heading` in report.md, as text cells indexed by its first column."""
    lines = report.splitlines()
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0]).set_index(rows[0][0])


def _run_weights(out: Path, results: pd.DataFrame) -> dict[str, tuple[pd.Series, pd.DataFrame]]:
    """run_dir -> (mean weight per cue, mean weight per true class x cue), read with plain pandas."""
    found = {}
    for run_dir in results["run_dir"]:
        frame = pd.read_csv(out / run_dir / "predictions.csv")
        columns = ["weight_au", "weight_vgg"]
        found[run_dir] = (frame[columns].mean().set_axis(["au", "vgg"]),
                          frame.groupby("label")[columns].mean().set_axis(["au", "vgg"], axis=1))
    return found


def test_report_tables_cue_weights_per_fold_and_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(test_stats.METHODS, "attention_paper", 0.05)
    out = test_stats.fake_suite(tmp_path / "suite")
    report = write_report(out).read_text()
    results = pd.read_csv(out / "results.csv")
    weights = _run_weights(out, results)
    folds = test_stats.FOLDS
    held_out = [f for f, (role, _) in folds.items() if role == "held_out"]
    for method in ("attention", "attention_paper"):
        runs = results[results["model"] == method]
        by_fold = _table(report, f"### LAM {method}: mean cue weight per held-out fold x cue")
        by_class = _table(report, f"### LAM {method}: mean cue weight per class x cue")
        assert list(by_fold.columns) == ["au", "vgg"] and list(by_class.columns) == ["au", "vgg"]
        assert list(by_fold.index) == [*held_out, MEAN, "western_posed (source)"]
        fold_means = {}
        for fold in folds:
            fold_means[fold] = pd.concat([weights[d][0] for d in runs.loc[runs["fold"] == fold, "run_dir"]],
                                         axis=1).mean(axis=1)  # the mean over runs of each run's mean
            row = by_fold.loc[f"{fold} (source)" if folds[fold][0] == "source" else fold]
            assert row.tolist() == [f"{v:.3f}" for v in fold_means[fold]]
        mean = pd.concat([fold_means[f] for f in held_out], axis=1).mean(axis=1)
        assert by_fold.loc[MEAN].tolist() == [f"{v:.3f}" for v in mean]
        held_runs = runs.loc[runs["fold"].isin(held_out), "run_dir"]
        per_class = pd.concat([weights[d][1] for d in held_runs]).groupby(level=0).mean()
        assert list(by_class.index) == list(test_stats.CANONICAL)
        for label in test_stats.CANONICAL:
            assert by_class.loc[label].tolist() == [f"{v:.3f}" for v in per_class.loc[label]]
    assert re.search(r"## Cue weights \(attention_paper, the paper's original attention network\)", report)
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"cue_weights.png", "cue_weights_by_class.png", "cue_weights_attention_paper.png",
            "cue_weights_by_class_attention_paper.png"} <= figures
    long = pd.read_csv(out / "cue_weights.csv")
    assert set(long["method"]) == {"attention", "attention_paper"} and set(long["by"]) == {"fold", "class"}
    assert "concat" not in report.split("## Cue weights")[1].split("\n## ")[0]  # baselines have no table
