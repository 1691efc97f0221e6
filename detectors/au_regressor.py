"""Cue U: a small CNN regressing 20 action-unit intensities from a face, then the paper's AU -> emotion SVM.

Input: the face crop resized to `image_size`² grayscale (default 64) (cv2 INTER_AREA), each image standardised
to zero mean / unit variance (removes global lighting and skin-tone offsets). Output, in order:
7 canonical emotion probabilities (`au.angry` ... `au.neutral`) from the SVM, then, when
`include_intensities`, the 20 predicted intensities in [0, 1] named like OpenFace (`au.AU01_r` ...,
py-feat's 20-AU order).

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
from mcam.labels import head_map
from mcam.splits import require_classes
from mcam_detectors._checkpoint import source_of
from mcam_detectors._lightning_fit import FaceDataset, FitSettings, fit_network, masked_mse, random_hflip
from mcam_detectors._torch_detector import PretrainedConfig, TorchDetector
from mcam_detectors.au_svm import AUEmotionSVM

SVM_KEY = "svm.joblib"  # state_dict entry holding the AU -> emotion SVM
HEAD = "canonical7"


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


def au_targets(train: TrainingSet) -> np.ndarray | None:
    """Ground-truth AUs of a training set in AU_NAMES order, NaN where an AU is not annotated; None if absent."""
    if train.aus is None:
        return None
    aus = np.asarray(train.aus, dtype=np.float32)
    names = list(train.au_names) if train.au_names is not None else None
    if names is None:
        if aus.shape[1] != len(AU_NAMES):
            raise ValueError(f"TrainingSet.aus has {aus.shape[1]} columns and no au_names; expected {len(AU_NAMES)} "
                             f"in the order {list(AU_NAMES)}")
        names = list(AU_NAMES)
    index = {n.removesuffix("_r"): i for i, n in enumerate(names)}
    target = np.full((len(aus), len(AU_NAMES)), np.nan, dtype=np.float32)
    for j, au in enumerate(AU_NAMES):
        if au in index:
            target[:, j] = aus[:, index[au]]
    return None if np.isnan(target).all() else target


class AURegressor(TorchDetector):
    """Cue U: CNN AU-intensity regressor + AU -> emotion SVM (see module docstring)."""

    name = "au"
    input_kind = InputKind.IMAGE
    prefix = "au"
    head = HEAD  # the SVM's classes
    learns_from_aus = True
    no_weights = "train the AU regressor with `mcam pretrain` and pass weights=PATH, or pass weights=random explicitly"

    def __init__(self, device: str | None = None, weights: str | None = None, image_size: int = 64,
                 include_intensities: bool = True, batch_size: int = 128, seed: int = 0,
                 regressor: Literal["fit", "frozen"] = "fit", **kw: Any) -> None:
        if image_size % 16:
            raise ValueError(f"au: image_size must be a multiple of 16, got {image_size}")
        if regressor not in ("fit", "frozen"):
            raise ValueError(f"au: regressor must be 'fit' or 'frozen', got {regressor!r}")
        super().__init__(device=device, weights=weights, image_size=image_size,
                         include_intensities=include_intensities, batch_size=batch_size, seed=seed,
                         regressor=regressor, **kw)
        self.svm = AUEmotionSVM(head_map(HEAD).classes)

    # --- description -------------------------------------------------
    def output_names(self) -> list[str]:
        names = list(head_map(HEAD).classes)
        if self.config["include_intensities"]:
            names += [f"{au}_r" for au in AU_NAMES]
        return names

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
    def usable(self, face: Any) -> bool:
        return isinstance(face, np.ndarray) and face.ndim in (2, 3) and face.shape[0] > 1 and face.shape[1] > 1

    def preprocess(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(_prepare(faces, self.config["image_size"]))

    def predict_aus(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted AU intensities float32 [N, 20] in AU_NAMES order (faces must be usable images)."""
        return self.infer(faces, outputs=lambda x: self.model(x))

    def cue_outputs(self, x: torch.Tensor) -> torch.Tensor:
        aus = self.model(x).float().cpu().numpy()
        parts = [self._emotions(aus)] + ([aus] if self.config["include_intensities"] else [])
        return torch.from_numpy(np.concatenate(parts, axis=1))

    def _emotions(self, aus: np.ndarray) -> np.ndarray:
        n_classes = len(self.svm.classes)
        if not self.svm.fitted:  # only for an explicit weights='random' model
            return np.full((len(aus), n_classes), 1.0 / n_classes, dtype=np.float32)
        return self.svm.predict_proba(aus).astype(np.float32)

    # --- training ----------------------------------------------------------
    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int = 25, batch_size: int = 32,
            lr: float = 2e-3, seed: int = 0, precision: str = "32-true", **kwargs: Any) -> dict[str, float]:
        """Train the regressor (masked MSE on annotated AUs), then the SVM on its predictions of the labelled rows.

        The regressor starts from the loaded weights when `weights` is set (GAM fine-tuning), else from a fresh
        model seeded with `seed` (source pre-training). It is kept as loaded when `regressor: frozen` or when
        `train` has no AU ground truth (then only the SVM is refitted on the target labels). An AU corpus (rows
        with AUs and no emotion labels, '') trains the regressor alone; the SVM stays as it was. Returns metrics
        (MAE on [0, 1] intensities, accuracy).
        """
        if kwargs:
            raise TypeError(f"au.fit: unexpected arguments {sorted(kwargs)}")
        head = head_map(HEAD)
        usable = [i for i, face in enumerate(train.faces) if self.usable(face)]
        labelled = [i for i in usable if train.labels[i] != "" and head.target(train.labels[i]) is not None]
        unlabelled = all(train.labels[i] == "" for i in usable)
        targets = au_targets(train)
        train_regressor = targets is not None and self.config["regressor"] == "fit"
        if not unlabelled:  # before training the regressor
            require_classes([head.target(train.labels[i]) for i in labelled],
                            f"au.fit: {len(labelled)} usable labelled training faces")
        elif not train_regressor:
            raise ValueError("au: fit on rows without emotion labels trains the regressor only; they need AU ground "
                             "truth and regressor: fit")
        keep = usable if unlabelled else labelled
        metrics: dict[str, float] = {"n_train": float(len(keep)), "n_skipped": float(len(train.faces) - len(keep))}
        if self.config["weights"] is not None or self._loaded:
            self.load()
        elif not train_regressor:
            raise ValueError("au: fit needs AU ground truth (TrainingSet.aus) and regressor: fit to train a regressor "
                             "from scratch; pass weights=PATH of a pre-trained regressor to refit only the SVM")
        else:  # source pre-training from weights=None: a fresh model seeded by the fit's seed
            with seeded(seed):
                self.model = self.build_network(self.arch()).to(self.device)
            self._arch, self._loaded = self.arch(), True
        faces = [train.faces[i] for i in keep]
        if train_regressor:
            settings = FitSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, optimizer="adamw_onecycle",
                                   weight_decay=1e-4, precision=precision)
            metrics.update(self._train_regressor(faces, targets[keep], settings))
        metrics["regressor_trained"] = float(train_regressor)
        predicted = self.predict_aus(faces)
        if targets is not None:
            metrics["train_au_mae"] = float(np.nanmean(np.abs(predicted - targets[keep])))
        if not unlabelled:
            labels = [head.target(train.labels[i]) for i in keep]
            self.svm = AUEmotionSVM(head.classes, seed=seed).fit(predicted, labels)
            metrics["train_acc"] = self.svm.score(predicted, labels)
        parts = "regressor + SVM" if train_regressor and not unlabelled else "regressor" if train_regressor else "SVM"
        self._provenance = (f"au.fit on {len(keep)} faces ({parts}{', no emotion labels' if unlabelled else ''}), "
                            f"starting from {source_of(self.config['weights']) if self.config['weights'] else 'a fresh model'}, "
                            f"{epochs} epochs, seed {seed}")
        if val is not None:
            metrics.update(self._evaluate(val, prefix="val_"))
        return metrics

    def _train_regressor(self, faces: list[np.ndarray], targets: np.ndarray, settings: FitSettings) -> dict[str, float]:
        annotated = ~np.isnan(targets).all(axis=1)
        data = FaceDataset([f for f, a in zip(faces, annotated) if a], targets[annotated], self.preprocess)
        metrics = fit_network(self.model, data, loss=masked_mse, settings=settings, device=self.device,
                              augment=_augment)
        return {"n_au_annotated": float(annotated.sum()), "train_mse_last_epoch": metrics["train_loss"],
                "seconds": metrics["seconds"]}

    def _evaluate(self, data: TrainingSet, prefix: str) -> dict[str, float]:
        head = head_map(HEAD)
        keep = [i for i, f in enumerate(data.faces) if self.usable(f)
                and (data.labels[i] == "" or head.target(data.labels[i]) is not None)]
        if not keep:
            return {}
        predicted = self.predict_aus([data.faces[i] for i in keep])
        labelled = [j for j, i in enumerate(keep) if data.labels[i] != ""]
        result = {f"{prefix}acc": self.svm.score(predicted[labelled], [head.target(data.labels[keep[j]])
                                                                       for j in labelled])} \
            if labelled and self.svm.fitted else {}
        targets = au_targets(data)
        if targets is not None:
            result[f"{prefix}au_mae"] = float(np.nanmean(np.abs(predicted - targets[keep])))
        return result


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (all 20 AUs are bilateral) and a shift of up to 1/32 of the side.

    Draws come from `generator` on the CPU (the same on every device); the batch stays on its device."""
    x = random_hflip(x, generator)
    pad = x.shape[-1] // 32
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
