"""Cue F (vgg) and cues I / I+ (micro, micro_plus): shapes, weights rules, training, checkpoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mcam.detector import DetectorUnavailableError, FaceBatch, TrainingSet
from mcam.registry import create_detector
from mcam_detectors.micro3d import MicroExpression, MicroExpressionPlus
from mcam_detectors.vgg_features import CONV_WIDTHS, VGGFeatures, _imagenet_cache_file

torch.set_num_threads(1)


def _faces(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Two clearly different classes: 'happy' = bright horizontal band, 'sad' = bright vertical band."""
    rng = np.random.default_rng(seed)
    faces, labels = [], []
    for i in range(n):
        image = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
        label = ("happy", "sad")[i % 2]
        offset = rng.integers(10, 30)
        if label == "happy":
            image[offset:offset + 8] = 230
        else:
            image[:, offset:offset + 8] = 230
        faces.append(image)
        labels.append(label)
    return faces, labels


def _clips(n: int, seed: int, frames: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """A blob that moves up (happy -> positive), down (sad -> negative) or stays (surprise)."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n):
        label = ("happy", "sad", "surprise")[i % 3]
        step = {"happy": -2, "sad": 2, "surprise": 0}[label]
        clip = rng.integers(0, 40, (frames, 32, 32, 3), dtype=np.uint8)
        y0, x0 = rng.integers(12, 18), rng.integers(4, 22)
        for t in range(frames):
            y = y0 + step * (t - frames // 2)
            clip[t, y:y + 6, x0:x0 + 6] = 200
        clips.append(clip)
        labels.append(label)
    return clips, labels


def _vgg_accuracy(detector: VGGFeatures, faces: list[np.ndarray], labels: list[str]) -> float:
    from mcam_detectors.vgg_features import preprocess

    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    with torch.no_grad():
        logits = detector.model(preprocess(faces, detector.config["input_size"]))
    return float(np.mean([classes[k] == label for k, label in zip(logits.argmax(1).tolist(), labels)]))


def test_vgg_default_dim_is_the_papers_2752() -> None:
    detector = create_detector("vgg", weights="random", device="cpu")
    assert detector.dim == sum(CONV_WIDTHS) == 2752
    assert detector.labels[0] == "vgg.0000" and detector.labels[-1] == "vgg.2751"
    faces, _ = _faces(3, 0)
    cues, valid = detector.extract(FaceBatch(["a", "b", "c"], images=faces))
    assert cues.shape == (3, 2752) and cues.dtype == np.float32 and valid.all()
    assert (cues >= 0).all()  # pooled after ReLU
    assert "random" in detector.weights_info().source
    plain = VGGFeatures(weights="random", batch_norm=False, input_size=32, device="cpu")
    assert plain.dim == 2752 and plain.extract(FaceBatch(["a"], images=faces[:1]))[0].shape == (1, 2752)
    assert plain.fingerprint() != VGGFeatures(weights="random", input_size=32, device="cpu").fingerprint()


def test_vgg_layer_subset_sets_the_dimension() -> None:
    detector = VGGFeatures(weights="random", layers=[0, 2], input_size=32, device="cpu")
    assert detector.dim == 64 + 256
    full = VGGFeatures(weights="random", input_size=32, device="cpu")
    faces, _ = _faces(2, 1)
    sub, _ = detector.extract(FaceBatch(["a", "b"], images=faces))
    all_, _ = full.extract(FaceBatch(["a", "b"], images=faces))
    np.testing.assert_allclose(sub, np.concatenate([all_[:, :64], all_[:, 192:448]], axis=1), atol=1e-5)
    with pytest.raises(ValueError):
        VGGFeatures(weights="random", layers=[8])


def test_vgg_invalid_face_is_marked_not_crashed() -> None:
    detector = VGGFeatures(weights="random", input_size=32, device="cpu")
    faces, _ = _faces(1, 2)
    cues, valid = detector.extract(FaceBatch(["a", "b"], images=[faces[0], np.zeros((0, 0, 3), np.uint8)]))
    assert valid.tolist() == [True, False] and not cues[1].any()


def test_vgg_without_weights_offline_is_unavailable_not_random() -> None:
    if _imagenet_cache_file(batch_norm=True).is_file():
        pytest.skip("ImageNet VGG11 weights are in the local torch cache")
    detector = VGGFeatures(device="cpu")
    assert not detector.weights_info().available_offline
    with pytest.raises(DetectorUnavailableError, match="mcam pretrain"):
        detector.extract(FaceBatch(["a"], images=_faces(1, 0)[0]))


def test_vgg_fit_learns_and_checkpoint_round_trips(tmp_path: Path) -> None:
    train_faces, train_labels = _faces(48, 3)
    test_faces, test_labels = _faces(20, 4)
    detector = VGGFeatures(weights="random", input_size=32, device="cpu")
    detector.load()
    before = _vgg_accuracy(detector, test_faces, test_labels)
    fingerprint = detector.fingerprint()
    train = TrainingSet(train_faces + [train_faces[0]], train_labels + ["happy"], ["s"] * 49)
    metrics = detector.fit(train, epochs=6, batch_size=16, lr=3e-4)
    after = _vgg_accuracy(detector, test_faces, test_labels)
    assert after >= 0.9 and after > before, (before, after, metrics)
    assert metrics["n_train"] == 49 and metrics["n_skipped"] == 0
    assert detector.fingerprint() != fingerprint
    assert "fit on 49 faces" in detector.weights_info().source

    path = detector.save(tmp_path / "vgg.pt")
    loaded = VGGFeatures(weights=str(path), input_size=32, device="cpu")
    batch = FaceBatch([str(i) for i in range(4)], images=test_faces[:4])
    np.testing.assert_array_equal(detector.extract(batch)[0], loaded.extract(batch)[0])
    assert loaded.fingerprint() == VGGFeatures(weights=str(path), input_size=32, device="cpu").fingerprint()
    assert "checkpoint" in loaded.weights_info().source
    with pytest.raises(ValueError, match="batch_norm"):
        VGGFeatures(weights=str(path), batch_norm=False).load()


def test_micro_heads_shapes_and_probabilities() -> None:
    for name, prefix, dim in (("micro", "micro", 3), ("micro_plus", "microplus", 4)):
        detector = create_detector(name, weights="random", device="cpu")
        clips, _ = _clips(3, 0)
        cues, valid = detector.extract(FaceBatch(["a", "b", "c"], clips=clips))
        assert cues.shape == (3, dim) and valid.all() and detector.labels[0] == f"{prefix}.positive"
        np.testing.assert_allclose(cues.sum(1), 1.0, atol=1e-5)
    assert create_detector("micro_plus", weights="random").labels[-1] == "microplus.neutral"


def test_micro_default_weights_are_unavailable() -> None:
    detector = MicroExpression(device="cpu")
    assert not detector.weights_info().available_offline
    with pytest.raises(DetectorUnavailableError, match="mcam pretrain"):
        detector.load()


def test_micro_clip_lengths_and_stills() -> None:
    detector = MicroExpression(weights="random", frames=8, size=32, device="cpu")
    long_clip = np.random.default_rng(0).integers(0, 255, (16, 40, 40, 3), dtype=np.uint8)
    picked = long_clip[np.linspace(0, 15, 8).round().astype(int)]
    np.testing.assert_array_equal(detector.preprocess([long_clip]), detector.preprocess([picked]))
    short_gray = long_clip[:3, ..., 0]
    still = long_clip[0]
    cues, valid = detector.extract(FaceBatch(["a", "b", "c"], clips=[long_clip, short_gray, still]))
    assert cues.shape == (3, 3) and valid.all()
    x = detector.preprocess([still])
    assert not x[0, 1].any()  # a still is a zero-motion clip: the difference channel is empty
    from_images, _ = detector.extract(FaceBatch(["c"], images=[still]))
    np.testing.assert_allclose(from_images[0], cues[2], atol=1e-6)


def test_micro_fit_beats_chance_and_init_from_copies(tmp_path: Path) -> None:
    train_clips, train_labels = _clips(60, 5)
    test_clips, test_labels = _clips(30, 6)
    train_labels[0] = "neutral"  # micro3 has no neutral: skipped and counted
    detector = MicroExpression(weights="random", size=32, device="cpu")
    metrics = detector.fit(TrainingSet(train_clips, train_labels, ["s"] * 60), epochs=12, batch_size=16)
    assert metrics["n_skipped"] == 1 and metrics["n_train"] == 59
    probs, _ = detector.extract(FaceBatch([str(i) for i in range(30)], clips=test_clips))
    classes = ["positive", "negative", "surprise"]
    truth = [{"happy": "positive", "sad": "negative", "surprise": "surprise"}[label] for label in test_labels]
    accuracy = np.mean([classes[k] == t for k, t in zip(probs.argmax(1), truth)])
    assert accuracy >= 0.8, (accuracy, metrics)

    path = detector.save(tmp_path / "micro.pt")
    plus = MicroExpressionPlus(init_from=str(path), size=32, device="cpu")
    plus.load()
    own, other = plus.model.state_dict(), detector.model.state_dict()
    for key, value in other.items():
        if key.startswith("head."):
            assert own[key].shape[0] == 4 and value.shape[0] == 3
        else:
            assert torch.equal(own[key], value), key
    with pytest.raises(ValueError, match="init_from"):
        MicroExpressionPlus(weights=str(path), size=32).load()
    with pytest.raises(ValueError, match="made with size=32, this detector has size=48"):
        MicroExpression(weights=str(path), size=48).load()
    assert torch.equal(MicroExpression(weights=str(path), size=32, device="cpu").preprocess(test_clips[:1]),
                       detector.preprocess(test_clips[:1]))


def test_vgg_imagenet_weights_come_from_the_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcam_detectors.vgg_features import VGG11Net

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    fake = {f"features.{k}": torch.full_like(v, 0.01) for k, v in VGG11Net(7, batch_norm=False).features.state_dict().items()}
    fake["classifier.0.weight"] = torch.zeros(2, 2)  # ImageNet classifier: not part of the cue, ignored
    _imagenet_cache_file(batch_norm=False).parent.mkdir(parents=True)
    torch.save(fake, _imagenet_cache_file(batch_norm=False))
    assert not VGGFeatures(weights="imagenet", device="cpu").weights_info().available_offline  # no BN file
    # what the cue means never depends on the cache: without a weights choice the detector is unavailable
    assert not VGGFeatures(input_size=32, batch_norm=False, device="cpu").weights_info().available_offline
    with pytest.raises(DetectorUnavailableError, match="no weights chosen"):
        VGGFeatures(input_size=32, batch_norm=False, device="cpu").load()
    detector = VGGFeatures(weights="imagenet", input_size=32, batch_norm=False, device="cpu")
    assert detector.weights_info().available_offline
    detector.load()
    assert torch.equal(detector.model.features[0].weight, fake["features.0.weight"])
    assert "ImageNet" in detector.weights_info().source and "ImageNet" in detector.weights_info().licence


def test_vgg_imagenet_download_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.error import URLError

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(DetectorUnavailableError, match="could not download ImageNet VGG11"):
        VGGFeatures(weights="imagenet", device="cpu").load()


def test_micro_fit_is_reproducible_for_a_seed() -> None:
    clips, labels = _clips(12, 7)
    digests = []
    for _ in range(2):
        detector = MicroExpression(weights="random", size=16, device="cpu")
        detector.fit(TrainingSet(clips, labels, ["s"] * 12), epochs=2, batch_size=4, seed=3)
        digests.append(detector.weights_digest())
    assert digests[0] == digests[1]
