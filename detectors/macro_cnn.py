"""Cue A, trainable variant: a small VGG-style CNN on 48x48 grayscale faces (like the paper's FER2013 CNN).

Classes are the paper's six macro emotions (head `macro6`: FER2013 without disgust; disgust samples
are skipped in training and counted). Input: the face crop in grayscale, resized to 48x48 with
INTER_AREA, scaled to [-1, 1]. Trained from scratch by `fit` (`mcam pretrain` on a source dataset,
e.g. FER2013 or the synthetic Western posed region), fine-tuned by `fit` again for GAM.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mcam.detector import InputKind, TrainingSet
from mcam_detectors.gray_classifier import GrayClassifierDetector

DEFAULT_WIDTHS = (16, 32, 64)  # 600 faces x 15 epochs train in about a minute on one CPU core


class VGGSmall(nn.Module):
    """VGG-style stages of two 3x3 conv-BN-ReLU layers and a 2x2 max-pool, then dropout + a linear head."""

    def __init__(self, classes: int, widths: tuple[int, ...] = DEFAULT_WIDTHS, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(cin, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MacroCNN(GrayClassifierDetector):
    """Cue A (trainable): VGG-style CNN -> 6 macro-emotion probabilities.

    weights=None is an error (no pre-trained weights ship): pre-train with `mcam pretrain` or pass
    weights=PATH (a checkpoint from `save`); weights="random" starts from a seeded random init.
    widths: conv widths per stage (None: DEFAULT_WIDTHS from random init, a checkpoint's own widths).
    """

    name = "macro_cnn"
    input_kind = InputKind.IMAGE
    prefix = "macrocnn"
    head = "macro6"
    input_size = 48

    def __init__(self, device: str | None = None, weights: str | None = None,
                 widths: tuple[int, ...] | list[int] | None = None, seed: int = 0, batch_size: int = 256,
                 **kw: Any) -> None:
        widths = None if widths is None else tuple(int(w) for w in widths)
        super().__init__(device=device, weights=weights, widths=widths, seed=seed, batch_size=batch_size, **kw)

    def arch(self) -> dict[str, Any]:
        return {"widths": self.config["widths"]}

    def build_network(self, arch: dict[str, Any]) -> nn.Module:
        return VGGSmall(self.dim, tuple(arch["widths"] or DEFAULT_WIDTHS))

    def _load(self) -> None:
        super()._load()
        self._arch = {"widths": [m.out_channels for m in self.model.features if isinstance(m, nn.Conv2d)][1::2]}

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int = 15, lr: float = 2e-3,
            batch_size: int = 32, seed: int = 0, precision: str = "32-true") -> dict[str, float]:
        """Train (source pre-training) or fine-tune (GAM) on canonical-labelled faces; disgust is skipped."""
        return self._fit(train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, precision=precision)
