"""Base of the grayscale face classifiers (macro, macro_cnn): grayscale preprocessing, fit with flips and AdaBN."""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from mcam.detector import TrainingSet
from mcam.labels import head_map
from mcam.determinism import in_order
from mcam_detectors._lightning_fit import FaceDataset, FitSettings, random_hflip, to_layout
from mcam_detectors._torch_detector import PretrainedConfig, TorchDetector

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def gray_inputs(images: Sequence[np.ndarray], size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB (or gray) uint8 crops -> float32 [N, 1, size, size] in [-1, 1] and a validity mask (empty crops invalid)."""
    out = np.zeros((len(images), 1, size, size), dtype=np.float32)
    valid = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        if image is None or image.size == 0:
            continue
        if image.ndim == 3 and image.shape[-1] >= 3:
            gray = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        else:
            gray = np.ascontiguousarray(image.reshape(image.shape[:2]))
        gray = cv2.resize(gray, (size, size), interpolation=INTERPOLATIONS[interpolation])
        out[i, 0] = gray.astype(np.float32) / 255.0 * 2.0 - 1.0
        valid[i] = True
    return out, valid


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: FaceDataset, device: str, batch_size: int) -> None:
    """Set BatchNorm running statistics to exact averages over the faces of `data`.

    A short fit (tens of steps) leaves exponential running averages far from the data's statistics,
    so eval-mode outputs would be wrong; averaging over the training faces fixes that (AdaBN).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    for m in norms:  # only the norms learn statistics; dropout stays off (and draws no random numbers)
        m.train()
    for x, _ in in_order(data, batch_size):
        model(to_layout(x.to(device)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


class GrayClassifierDetector(TorchDetector):
    """A detector whose cue is a softmax over a label head, computed from a grayscale face crop.

    Subclasses set `head` and `input_size` and `build_network`; `fit` trains the whole network on the head's
    labels with random horizontal flips, then recomputes BatchNorm statistics over the training faces.
    """

    input_size: ClassVar[int]

    def __init__(self, device: str | None = None, weights: str | None = None, interpolation: str = "area",
                 seed: int = 0, batch_size: int = 256, **kw: Any) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        super().__init__(device=device, weights=weights, interpolation=interpolation, seed=seed,
                         batch_size=batch_size, **kw)

    def output_names(self) -> list[str]:
        return list(head_map(self.head).classes)

    def pretrained_config(self) -> PretrainedConfig:
        return PretrainedConfig(input_size=(1, self.input_size, self.input_size), mean=(0.5,), std=(0.5,),
                                labels=tuple(self.output_names()), interpolation=self.config["interpolation"])

    def usable(self, face: Any) -> bool:
        return isinstance(face, np.ndarray) and face.ndim in (2, 3) and face.size > 0

    def preprocess(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """Usable crops -> float32 [N, 1, size, size] in [-1, 1]."""
        return torch.from_numpy(gray_inputs(faces, self.input_size, self.config["interpolation"])[0])

    def _fit(self, train: TrainingSet, val: TrainingSet | None, *, epochs: int, lr: float, batch_size: int,
             seed: int, precision: str) -> dict[str, float]:
        """Train on faces whose canonical label maps onto the head ('n_skipped' counts the rest), with flips."""
        return self.fit_classifier(train, val, FitSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                                           precision=precision), augment=random_hflip)

    def after_fit(self, data: FaceDataset) -> None:
        recalibrate_batchnorm(self.model, data, self.device, self.config["batch_size"])
