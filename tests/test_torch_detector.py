"""The trainable CNN detectors share one base (`TorchDetector`) and train through Lightning: seeded, repeatable,
no side effects on torch's global random state, any Trainer precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mcam.detector import TrainingSet
from mcam.registry import available, detector_class
from mcam_detectors._torch_detector import PretrainedConfig, TorchDetector

CNN_DETECTORS = ("vgg", "micro", "micro_plus", "au", "macro", "macro_cnn")
SMALL = {"vgg": {"layers": [0, 1]}, "micro": {"size": 16}, "micro_plus": {"size": 16}, "au": {"image_size": 32},
         "macro_cnn": {"widths": [4, 8]}}


def _training_set(name: str, n: int = 16, seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    clip = detector_class(name).input_kind == "clip"
    shape = (4, 32, 32, 3) if clip else (40, 40, 3)
    labels = ["happy", "sad", "surprise", "angry"] * (n // 4)
    faces = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
    aus = rng.uniform(0, 1, (n, 20)).astype(np.float32) if name == "au" else None
    return TrainingSet(faces=faces, labels=labels, subjects=[f"s{i % 4}" for i in range(n)], aus=aus)


def _detector(name: str) -> TorchDetector:
    return detector_class(name)(device="cpu", weights="random", **SMALL.get(name, {}))


def test_every_trainable_cnn_detector_is_a_torch_detector():
    assert set(CNN_DETECTORS) <= set(available())
    for name in CNN_DETECTORS:
        detector = _detector(name)
        assert isinstance(detector, TorchDetector), name
        config = detector.pretrained_config()
        assert isinstance(config, PretrainedConfig) and config.labels and config.input_size[0] in (1, 2, 3)
        x = detector.preprocess(_training_set(name, 4).faces[:2])
        assert tuple(x.shape[1:]) == config.input_size, name  # the stated input size is what the network gets


@pytest.mark.parametrize("name", CNN_DETECTORS)
def test_fit_is_repeatable_and_leaves_global_rng_alone(name, tmp_path):
    data = _training_set(name)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = _detector(name)
    metrics = first.fit(data, epochs=1, batch_size=8, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # dropout's draws were seeded, then restored
    assert np.isfinite(metrics.get("train_loss", metrics.get("train_mse_last_epoch", np.nan)))
    second = _detector(name)
    second.fit(data, epochs=1, batch_size=8, seed=5)
    third = _detector(name)
    third.fit(data, epochs=1, batch_size=8, seed=6)
    assert first.fingerprint() == second.fingerprint() != third.fingerprint()
    reloaded = detector_class(name)(device="cpu", weights=str(first.save(tmp_path / f"{name}.pt")),
                                    **SMALL.get(name, {}))
    faces = _training_set(name, 4, seed=1).faces
    np.testing.assert_array_equal(reloaded.infer(faces), first.infer(faces))


def test_fit_takes_a_trainer_precision():
    detector = _detector("macro_cnn")
    metrics = detector.fit(_training_set("macro_cnn"), epochs=1, batch_size=8, precision="bf16-mixed")
    assert np.isfinite(metrics["train_loss"])
    assert next(detector.model.parameters()).dtype == torch.float32  # mixed precision keeps fp32 weights
    with pytest.raises(ValueError, match="precision"):
        _detector("macro_cnn").fit(_training_set("macro_cnn"), epochs=1, precision="fp7")
