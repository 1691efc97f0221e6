"""Base of the grayscale face classifiers (macro, macro_cnn): preprocessing, extraction, fit and save."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from mcam.detector import Detector, FaceBatch, TrainingSet
from mcam.labels import head_map
from mcam_detectors._checkpoint import save_checkpoint
from mcam_detectors._classifier_fit import accuracy, head_targets, random_hflip, train_classifier

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
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, device: str, batch_size: int) -> None:
    """Set BatchNorm running statistics to exact averages over `x`.

    A short fit (tens of steps) leaves exponential running averages far from the data's statistics,
    so eval-mode outputs would be wrong; averaging over the training faces fixes that (AdaBN).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


class GrayClassifierDetector(Detector):
    """A detector whose cue is a softmax over a label head, computed from a grayscale face crop.

    Subclasses set `head` and `input_size`, build `self.model` (logits out) in `_load` and describe
    the architecture a checkpoint needs in `_arch`.
    """

    head: ClassVar[str]
    input_size: ClassVar[int]
    model: nn.Module | None
    batch_size: int = 256  # extraction chunk size: does not change outputs, so not part of the config

    def output_names(self) -> list[str]:
        return list(head_map(self.head).classes)

    def _interpolation(self) -> str:
        return "area"

    def _arch(self) -> dict[str, Any]:
        """Architecture values a checkpoint needs to rebuild the network."""
        return {}

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Crops -> float32 [N, 1, size, size] in [-1, 1] and a validity mask."""
        return gray_inputs(images, self.input_size, self._interpolation())

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities [N, classes] of preprocessed inputs [N, 1, size, size]."""
        self.load()
        self.model.eval()
        parts = [torch.softmax(self.model(torch.from_numpy(x[i:i + self.batch_size]).to(self.device)), dim=1)
                 .float().cpu().numpy() for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        x, valid = self.preprocess(batch.images)
        proba = np.zeros((len(batch), self.dim), dtype=np.float32)
        if valid.any():
            proba[valid] = self.predict_proba(x[valid])
        return proba, valid

    def _training_tensors(self, data: TrainingSet) -> tuple[torch.Tensor, torch.Tensor, int]:
        targets = head_targets(data.labels, head_map(self.head))
        x, ok = self.preprocess([data.faces[i] for i in targets.keep])
        return torch.from_numpy(x[ok]), torch.from_numpy(targets.y[ok]), targets.skipped + int((~ok).sum())

    def _fit(self, train: TrainingSet, val: TrainingSet | None, *, epochs: int, lr: float, batch_size: int,
             seed: int) -> dict[str, float]:
        """Train in place on faces whose canonical label maps onto the head; 'skipped' counts the rest.

        BatchNorm statistics are then recomputed over the training faces (see `recalibrate_batchnorm`).
        """
        self.load()
        x, y, skipped = self._training_tensors(train)
        if len(y) == 0:
            raise ValueError(f"{self.name}: no training faces with a label the {self.head} head knows")
        val_xy = self._training_tensors(val)[:2] if val is not None else None
        metrics = train_classifier(self.model, x, y, device=self.device, epochs=epochs, batch_size=batch_size,
                                   lr=lr, seed=seed, augment=random_hflip)
        recalibrate_batchnorm(self.model, x, self.device, self.batch_size)
        metrics["train_acc"] = accuracy(self.model, x, y, self.device, self.batch_size)
        if val_xy is not None:
            metrics["val_acc"] = accuracy(self.model, *val_xy, self.device, self.batch_size)
        metrics["skipped"] = float(skipped)
        metrics["n_train"] = float(len(y))
        return metrics

    def save(self, path: str | Path) -> Path:
        self.load()
        return save_checkpoint(path, detector=self.name, arch=self._arch(),
                               provenance=f"{self.name} config {self.config}", state_dict=self.model.state_dict())
