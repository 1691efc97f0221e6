"""Cue U: the AU -> emotion SVM, the AU CNN regressor, the OpenFace 2.0 importer and the py-feat backend."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mcam.detector import DetectorUnavailableError, FaceBatch, TrainingSet
from mcam.labels import CANONICAL
from mcam_detectors.au_regressor import AU_NAMES, AURegressor
from mcam_detectors.au_svm import AUEmotionSVM
from mcam_detectors.openface_import import C_COLUMNS, R_COLUMNS, OpenFaceImporter
from mcam_detectors.pyfeat_au import PyFeatAU

torch.set_num_threads(1)


# --- AU -> emotion SVM ------------------------------------------------------------------------
def _clusters(n_per_class: int, classes: list[str], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (len(classes), 20))
    x = np.concatenate([c + rng.normal(0, 0.05, (n_per_class, 20)) for c in centres])
    return x, [c for c in classes for _ in range(n_per_class)]


def test_svm_probabilities_fixed_columns_and_sum():
    x, y = _clusters(12, ["happy", "sad", "angry"])
    x = np.vstack([x, np.full((1, 20), 0.5)])
    y = y + ["fear"]  # a single example cannot be held out by calibration: treated as absent
    svm = AUEmotionSVM().fit(x, y)
    probs = svm.predict_proba(x)
    assert probs.shape == (len(x), 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    absent = [CANONICAL.index(c) for c in ("disgust", "fear", "surprise", "neutral")]
    assert (probs[:, absent] == 0).all()
    predicted = np.asarray(CANONICAL)[probs[:36].argmax(axis=1)]
    assert (predicted == np.asarray(y[:36])).mean() > 0.9
    again = AUEmotionSVM.from_bytes(svm.to_bytes())
    np.testing.assert_array_equal(again.predict_proba(x), probs)
    assert again.digest() == svm.digest() != AUEmotionSVM().digest()


def test_svm_single_class_and_unknown_label():
    svm = AUEmotionSVM().fit(np.zeros((3, 20)), ["happy"] * 3)
    probs = svm.predict_proba(np.ones((2, 20)))
    assert (probs[:, CANONICAL.index("happy")] == 1).all() and probs.sum() == 2
    with pytest.raises(ValueError, match="not among its classes"):
        AUEmotionSVM().fit(np.zeros((2, 20)), ["happy", "positive"])


# --- AU regressor -------------------------------------------------------------------------------
def _band_faces(n: int, seed: int) -> TrainingSet:
    """Learnable toy faces: AU k sets the brightness of horizontal band k (symmetric, like the 20 AUs)."""
    rng = np.random.default_rng(seed)
    aus = rng.uniform(0, 1, (n, 20)).astype(np.float32)
    faces = []
    for a in aus:
        img = 40 + rng.normal(0, 4, (64, 64))
        img[2:62] += np.repeat(180 * a, 3)[:, None]
        faces.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    labels = [CANONICAL[int(np.argmax(a[:3]))] for a in aus]  # three emotions, learnable from the AUs
    return TrainingSet(faces, labels, [f"s{i % 6}" for i in range(n)], aus, [f"{au}_r" for au in AU_NAMES])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[AURegressor, Path, TrainingSet]:
    detector = AURegressor(device="cpu", image_size=32)
    metrics = detector.fit(_band_faces(160, 0), epochs=30, batch_size=16, lr=3e-3)
    assert metrics["n_train"] == 160 and metrics["regressor_trained"] == 1
    path = detector.save(tmp_path_factory.mktemp("au") / "au.pt")
    return detector, path, _band_faces(40, 1)


def test_regressor_fit_lowers_au_mae(trained):
    detector, _, held_out = trained
    untrained = AURegressor(device="cpu", weights="random", image_size=32)
    before = np.abs(untrained.predict_aus(held_out.faces) - held_out.aus).mean()
    after = np.abs(detector.predict_aus(held_out.faces) - held_out.aus).mean()
    baseline = np.abs(held_out.aus - 0.5).mean()  # the best constant for uniform intensities
    assert after < 0.7 * before and after < 0.7 * baseline, (before, after, baseline)


def test_regressor_cues_and_save_load_round_trip(trained):
    detector, path, held_out = trained
    batch = FaceBatch([f"t{i}" for i in range(8)], images=held_out.faces[:8])
    cues, valid = detector.extract(batch)
    assert detector.labels[:7] == [f"au.{c}" for c in CANONICAL] and detector.labels[7] == "au.AU01_r"
    assert cues.shape == (8, 27) and valid.all()
    np.testing.assert_allclose(cues[:, :7].sum(axis=1), 1.0, atol=1e-5)
    reloaded = AURegressor(device="cpu", weights=str(path), image_size=32)
    again, _ = reloaded.extract(batch)
    np.testing.assert_array_equal(again, cues)
    assert reloaded.fingerprint() == AURegressor(device="cpu", weights=str(path), image_size=32).fingerprint()
    assert reloaded.weights_digest() != detector.weights_digest()  # the file counts by its bytes
    assert reloaded.fingerprint() == AURegressor(device="cpu", weights=str(path), image_size=32).fingerprint()
    only_probs = AURegressor(device="cpu", weights=str(path), image_size=32, include_intensities=False)
    assert only_probs.dim == 7 and only_probs.extract(batch)[0].shape == (8, 7)
    with pytest.raises(ValueError, match="image_size"):
        AURegressor(device="cpu", weights=str(path), image_size=64).load()


def test_regressor_averages_each_face_with_its_mirror(trained):
    """flip_average (the default): a face and its mirror image get the same AUs, the mean of the regressor's
    two outputs; flip_average=False reads the face as it is, and the option keys the cues."""
    _, path, held_out = trained
    faces = held_out.faces[:8]
    mirrored = [np.ascontiguousarray(face[:, ::-1]) for face in faces]
    both = AURegressor(device="cpu", weights=str(path), image_size=32)
    plain = AURegressor(device="cpu", weights=str(path), image_size=32, flip_average=False)
    np.testing.assert_allclose(both.predict_aus(faces), both.predict_aus(mirrored), atol=1e-6)
    one, other = plain.predict_aus(faces), plain.predict_aus(mirrored)
    assert np.abs(one - other).max() > 1e-3  # the regressor alone is not mirror-symmetric
    np.testing.assert_allclose(both.predict_aus(faces), (one + other) / 2, atol=1e-6)
    assert both.fingerprint() != plain.fingerprint()
    with pytest.raises(ValueError, match="flip_average"):
        AURegressor(device="cpu", weights=str(path), image_size=32, flip_average="yes")


def test_regressor_refits_only_svm_without_au_ground_truth(trained):
    _, path, held_out = trained
    detector = AURegressor(device="cpu", weights=str(path), image_size=32)
    detector.load()
    before = {k: v.clone() for k, v in detector.model.state_dict().items()}
    relabelled = TrainingSet(held_out.faces, ["sad" if i % 2 else "happy" for i in range(40)], held_out.subjects)
    metrics = detector.fit(relabelled, epochs=2)
    assert metrics["regressor_trained"] == 0
    assert all(torch.equal(before[k], v) for k, v in detector.model.state_dict().items())
    probs = detector.extract(FaceBatch(["a"], images=held_out.faces[:1]))[0][0, :7]
    assert probs[[CANONICAL.index("happy"), CANONICAL.index("sad")]].sum() == pytest.approx(1.0, abs=1e-5)


def test_regressor_default_weights_are_unavailable_with_instructions():
    detector = AURegressor(device="cpu")
    assert not detector.weights_info().available_offline
    with pytest.raises(DetectorUnavailableError, match="mcam pretrain"):
        detector.extract(FaceBatch(["a"], images=[np.zeros((64, 64, 3), np.uint8)]))
    with pytest.raises(ValueError, match="AU ground truth"):
        detector.fit(TrainingSet([np.zeros((64, 64, 3), np.uint8)] * 2, ["happy", "sad"], ["s", "s"]))


# --- OpenFace 2.0 importer ----------------------------------------------------------------------
PYFEAT_OPENFACE_CSV = Path(__import__("feat").__file__).parent / "tests" / "data" / "OpenFace_Test.csv"


def _openface_csv(path: Path, rows: list[dict]) -> None:
    """An OpenFace-2.0-shaped CSV (leading-space headers, as FeatureExtraction writes them)."""
    table = pd.DataFrame([{"frame": i + 1, "face_id": 0, "timestamp": 0.0, **row} for i, row in enumerate(rows)])
    table.columns = [c if i == 0 else f" {c}" for i, c in enumerate(table.columns)]
    table.to_csv(path, index=False)


def _frame(confidence: float, success: int, level: float) -> dict:
    return {"confidence": confidence, "success": success, **{c: level for c in R_COLUMNS},
            **{c: float(level > 1) for c in C_COLUMNS}}


def test_openface_reads_pyfeat_sample_csv(tmp_path):
    shutil.copy(PYFEAT_OPENFACE_CSV, tmp_path / "clip1.csv")
    detector = OpenFaceImporter(csv_dir=str(tmp_path), emotions=False)
    cues, valid = detector.extract(FaceBatch(["clip1"], images=[np.zeros((8, 8, 3), np.uint8)]))
    raw = pd.read_csv(PYFEAT_OPENFACE_CSV)
    raw.columns = raw.columns.str.strip()
    best = raw.loc[raw["confidence"].idxmax()]
    assert valid.all() and detector.dim == 35
    np.testing.assert_allclose(cues[0], best[R_COLUMNS + C_COLUMNS].to_numpy(np.float32))


def test_openface_flags_low_confidence_and_missing_samples(tmp_path, caplog):
    _openface_csv(tmp_path / "good.csv", [_frame(0.95, 1, 2.0), _frame(0.99, 0, 4.0), _frame(0.90, 1, 1.0)])
    _openface_csv(tmp_path / "low.csv", [_frame(0.40, 1, 3.0)])
    detector = OpenFaceImporter(csv_dir=str(tmp_path), emotions=False, min_confidence=0.8)
    batch = FaceBatch(["good", "low", "gone"], images=[np.zeros((8, 8, 3), np.uint8)] * 3)
    with caplog.at_level(logging.WARNING):
        cues, valid = detector.extract(batch)
    assert valid.tolist() == [True, False, False]
    assert cues[0, 0] == 2.0  # best successful frame, not the failed one with higher confidence
    assert (cues[1:] == 0).all()
    assert str(tmp_path / "gone.csv") in caplog.text and "confidence 0.400 < min_confidence 0.8" in caplog.text


def test_openface_svm_fit_save_load(tmp_path):
    rng = np.random.default_rng(0)
    ids, labels = [], []
    for i in range(24):
        label = ["happy", "sad"][i % 2]
        level = (3.0 if label == "happy" else 0.5) + rng.normal(0, 0.1)
        _openface_csv(tmp_path / f"x{i}.csv", [_frame(0.95, 1, level)])
        ids.append(f"x{i}")
        labels.append(label)
    detector = OpenFaceImporter(csv_dir=str(tmp_path))
    with pytest.raises(DetectorUnavailableError, match="fit"):
        detector.extract(FaceBatch(ids[:1], images=[np.zeros((8, 8, 3), np.uint8)]))
    metrics = detector.fit(TrainingSet([None] * 24, labels, ["s"] * 24, sample_ids=ids))
    assert metrics["train_acc"] == 1.0 and metrics["n_train"] == 24
    batch = FaceBatch(ids[:4] + ["gone"], images=[np.zeros((8, 8, 3), np.uint8)] * 5)
    cues, valid = detector.extract(batch)
    assert detector.dim == 42 and detector.labels[-7:] == [f"openface.{c}" for c in CANONICAL]
    assert valid.tolist() == [True] * 4 + [False]
    np.testing.assert_allclose(cues[:4, -7:].sum(axis=1), 1.0, atol=1e-5)
    path = detector.save(tmp_path / "svm" / "openface.pt")
    reloaded = OpenFaceImporter(csv_dir=str(tmp_path), weights=str(path))
    np.testing.assert_array_equal(reloaded.extract(batch)[0], cues)
    assert reloaded.fingerprint() == OpenFaceImporter(csv_dir=str(tmp_path), weights=str(path)).fingerprint()


def test_openface_without_csv_dir_is_unavailable():
    with pytest.raises(DetectorUnavailableError, match="csv_dir"):
        OpenFaceImporter(emotions=False).extract(FaceBatch(["a"], images=[np.zeros((8, 8, 3), np.uint8)]))


# --- py-feat backend ----------------------------------------------------------------------------
def test_pyfeat_au_unavailable_offline_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv("FEAT_MULTITASK_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    detector = PyFeatAU(device="cpu")
    assert detector.dim == 20 and detector.labels[0] == "pyfeat.AU01"
    assert detector.weights_info().available_offline is False
    with pytest.raises(DetectorUnavailableError, match="hf_hub_download"):
        detector.extract(FaceBatch(["a"], images=[np.zeros((64, 64, 3), np.uint8)]))
    missing = PyFeatAU(device="cpu", weights=str(tmp_path / "nope.safetensors"))
    assert missing.weights_info().available_offline is False
    with pytest.raises(DetectorUnavailableError, match="nope.safetensors does not exist"):
        missing.load()
