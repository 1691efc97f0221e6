"""Cue U: a small CNN regressing 20 action-unit intensities from a face, then the paper's AU -> emotion SVM.

Input: the face crop resized to `image_size`² grayscale (default 64) (cv2 INTER_AREA), each image standardised
to zero mean / unit variance (removes global lighting and skin-tone offsets). Output, in order:
7 canonical emotion probabilities (`au.angry` ... `au.neutral`) from the SVM, then, when
`include_intensities`, the 20 predicted intensities in [0, 1] named like OpenFace (`au.AU01_r` ...,
py-feat's 20-AU order). With `flip_average` (the default) the intensities are the mean of the regressor's output
on the face and on its mirror image (every AU here is bilateral, and training flips faces at random); chosen on
AU-corpus identities the regressor never trained on (mean per-AU r 0.825 -> 0.831, 0.815 -> 0.821,
0.812 -> 0.819 for detector seeds 0 / 1 / 2), never on a region.

Training: `fit` trains the regressor on faces with ground-truth AUs (an AU corpus without emotion labels, as
real AU detectors are trained on DISFA/BP4D) and the SVM on labelled faces; `regressor: frozen` keeps a
pre-trained regressor as loaded and fits only the SVM (the LAM detectors of a suite with an `au_corpus`).

Weights: `weights=PATH` (a checkpoint written by `save`, e.g. by `mcam pretrain`); `weights=None`
(the default) raises DetectorUnavailableError; `weights="random"` is an explicit untrained model
whose SVM is unfitted, so its emotion probabilities are uniform (1/7) until `fit`.
"""
from __future__ import annotations

import hashlib
from typing import Any, Literal, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from mcam.detector import InputKind, TrainingSet
from mcam.determinism import seeded
from mcam.labels import AU_NAMES  # py-feat's 20-AU order, shared with the synthetic data
from mcam_detectors._lightning_fit import FaceDataset, FitSettings, fit_network, masked_mse, random_hflip
from mcam_detectors._torch_detector import PretrainedConfig, TorchDetector
from mcam_detectors.au_svm import AUEmotionDetector, AUEmotionSVM

SVM_KEY = "svm.joblib"  # state_dict entry holding the AU -> emotion SVM


class AUNet(nn.Module):
    """Four conv blocks (3x3 conv, BN, ReLU, 2x2 max-pool) and a two-layer head with sigmoid outputs."""

    def __init__(self, image_size: int, n_aus: int = len(AU_NAMES), width: int = 16) -> None:
        super().__init__()
        channels = [1, width, 2 * width, 4 * width, 4 * width]
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        side = image_size // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels[-1] * side * side, 128),
                                  nn.ReLU(inplace=True), nn.Linear(128, n_aus), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _prepare(faces: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Faces (RGB or gray uint8) -> float32 [N, 1, size, size], each standardised."""
    out = np.zeros((len(faces), 1, size, size), dtype=np.float32)
    for i, face in enumerate(faces):
        gray = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
        img = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        out[i, 0] = (img - img.mean()) / (img.std() + 1e-6)
    return out


class AURegressor(TorchDetector, AUEmotionDetector):
    """Cue U: CNN AU-intensity regressor + AU -> emotion SVM (see module docstring)."""

    name = "au"
    input_kind = InputKind.IMAGE
    prefix = "au"
    no_weights = "train the AU regressor with `mcam pretrain` and pass weights=PATH, or pass weights=random explicitly"

    def __init__(self, device: str | None = None, weights: str | None = None, image_size: int = 64,
                 include_intensities: bool = True, batch_size: int = 128, seed: int = 0,
                 regressor: Literal["fit", "frozen"] = "fit", flip_average: bool = True, **kw: Any) -> None:
        if image_size % 16:
            raise ValueError(f"au: image_size must be a multiple of 16, got {image_size}")
        if not isinstance(flip_average, bool):
            raise ValueError(f"au: flip_average must be true or false, got {flip_average!r}")
        super().__init__(device=device, weights=weights, image_size=image_size,
                         include_intensities=include_intensities, batch_size=batch_size, seed=seed,
                         regressor=self.check_regressor(regressor), flip_average=flip_average, **kw)
        self._unfitted_svm()

    # --- description -------------------------------------------------
    def pretrained_config(self) -> PretrainedConfig:
        size = self.config["image_size"]
        return PretrainedConfig(input_size=(1, size, size), mean=None, std=None,
                                labels=tuple(f"{au}_r" for au in AU_NAMES))

    def weights_digest(self) -> str:
        if self.config["weights"] not in (None, "random") and not getattr(self, "_weights_changed", False):
            # an unchanged checkpoint file: its bytes hold the SVM too
            return super().weights_digest()
        self.load()
        digest = hashlib.sha256(super().weights_digest().encode())
        digest.update(self.svm.digest().encode())
        return digest.hexdigest()[:16]

    # --- weights -------------------------------------------------------
    def arch(self) -> dict[str, Any]:
        return {"image_size": self.config["image_size"], "au_names": list(AU_NAMES)}

    def build_network(self, arch: dict[str, Any]) -> nn.Module:
        return AUNet(arch["image_size"])

    def restore(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Regressor weights, and the fitted SVM kept as joblib bytes in a uint8 tensor."""
        svm_bytes = state.pop(SVM_KEY, None)
        model.load_state_dict(state)
        if svm_bytes is not None:
            self.svm = AUEmotionSVM.from_bytes(svm_bytes.numpy().tobytes())

    def state_to_save(self) -> dict[str, torch.Tensor]:
        state = super().state_to_save()
        if self.svm.fitted:
            state[SVM_KEY] = torch.frombuffer(bytearray(self.svm.to_bytes()), dtype=torch.uint8)
        return state

    # --- use -------------------------------------------------------------
    usable = AUEmotionDetector.usable  # not TorchDetector's: any image at least 2 pixels a side

    def preprocess(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(_prepare(faces, self.config["image_size"]))

    def predict_aus(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted AU intensities float32 [N, 20] in AU_NAMES order (faces must be usable images)."""
        return self.infer(faces, outputs=self._intensities)

    def cue_outputs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.emotion_cues(self._intensities(x).float().cpu().numpy()))

    def _intensities(self, x: torch.Tensor) -> torch.Tensor:
        """The regressor's AU intensities of a prepared batch; with `flip_average`, averaged with its mirror's."""
        if not self.config["flip_average"]:
            return self.model(x)
        return (self.model(x) + self.model(x.flip(-1))) / 2

    # --- training ----------------------------------------------------------
    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int = 25, batch_size: int = 32,
            lr: float = 2e-3, seed: int = 0, precision: str = "32-true", **kwargs: Any) -> dict[str, float]:
        """Train the regressor (masked MSE on annotated AUs; AdamW + OneCycle) and the SVM (`fit_aus`). The
        regressor starts from the loaded weights when `weights` is set (GAM fine-tuning), else from a fresh model
        seeded with `seed`. Returns metrics (MAE on [0, 1] intensities, accuracy)."""
        if kwargs:
            raise TypeError(f"au.fit: unexpected arguments {sorted(kwargs)}")
        return self.fit_aus(train, val, seed, epochs=epochs, batch_size=batch_size, lr=lr, precision=precision)

    def _new_regressor(self, seed: int) -> None:
        with seeded(seed):
            self.model = self.build_network(self.arch()).to(self.device)
        self._arch, self._loaded = self.arch(), True

    def _train_regressor(self, faces: list[np.ndarray], targets: np.ndarray, seed: int, epochs: int,
                         batch_size: int, lr: float, precision: str) -> dict[str, float]:
        settings = FitSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, optimizer="adamw_onecycle",
                               weight_decay=1e-4, precision=precision)
        annotated = ~np.isnan(targets).all(axis=1)
        data = FaceDataset([f for f, a in zip(faces, annotated) if a], targets[annotated], self.preprocess)
        metrics = fit_network(self.model, data, loss=masked_mse, settings=settings, device=self.device,
                              augment=_augment, what=f"{self.name} regressor")
        return {"n_au_annotated": float(annotated.sum()), "train_mse_last_epoch": metrics["train_loss"],
                "seconds": metrics["seconds"]}


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (all 20 AUs are bilateral) and a shift of up to 1/32 of the side.

    Draws come from `generator` on the CPU (the same on every device); the batch stays on its device."""
    x = random_hflip(x, generator)
    pad = x.shape[-1] // 32
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
