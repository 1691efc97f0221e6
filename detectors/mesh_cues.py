"""Landmark cues from MediaPipe's face mesh (mcam/landmarks.py), on real photos and renders alike, offline.

`mesh`: the face's geometry: the 468 mesh points similarity-aligned (Procrustes) to a canonical neutral face,
`mesh.x000` ... `mesh.x467`, then the y and z coordinates (template units). Not trainable. Invalid where
MediaPipe finds no face in the crop.

`mesh_au`: AU intensities read from the aligned mesh by a ridge regression (its penalty chosen by
leave-one-out CV on the training rows), clipped to [0, 1], then the paper's AU -> emotion SVM: like `au`
(cue: 7 emotion probabilities, then `mesh_au.AU01_r` ...), but from geometry instead of pixels, so lighting,
skin tone, blur and resolution reach it only through the landmarks. It trains like `au`: the regressor on an
AU corpus (`learns_from_aus`), the SVM on the source region (`regressor: frozen`). Weights: a checkpoint
written by `save` (`mcam pretrain`); `weights=None` raises DetectorUnavailableError; `weights="random"` is an
explicit untrained model (zero AUs, uniform emotions).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Literal, Sequence

import joblib
import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from mcam.detector import Detector, DetectorUnavailableError, FaceBatch, InputKind, TrainingSet, WeightsInfo
from mcam.labels import AU_NAMES
from mcam.landmarks import N_POINTS, VERSION, aligned_meshes, face_mesh, template
from mcam_detectors._checkpoint import load_checkpoint, save_checkpoint, source_of
from mcam_detectors.au_svm import AUEmotionDetector, AUEmotionSVM

ALPHAS = tuple(float(a) for a in np.logspace(-1, 4, 11))  # ridge penalties RidgeCV chooses among (on training rows)
RIDGE_KEY, SVM_KEY = "ridge.joblib", "svm.joblib"


def _mesh_digest() -> str:
    """What the mesh cues depend on besides their config: MediaPipe's model version and the template."""
    return hashlib.sha256(VERSION.encode() + template().tobytes()).hexdigest()[:16]


class MeshGeometry(Detector):
    """`mesh`: Procrustes-aligned face-mesh coordinates (see module docstring)."""

    name = "mesh"
    input_kind = InputKind.IMAGE
    prefix = "mesh"

    def __init__(self, device: str | None = None, **kw: Any) -> None:
        super().__init__(device=device, **kw)

    def output_names(self) -> list[str]:
        return [f"{axis}{i:03d}" for axis in "xyz" for i in range(N_POINTS)]

    def weights_info(self) -> WeightsInfo:
        try:
            face_mesh()
            return WeightsInfo(VERSION, True, "Apache-2.0")
        except DetectorUnavailableError as err:
            return WeightsInfo(f"{VERSION}: {err}", False, "Apache-2.0")

    def weights_digest(self) -> str:
        return _mesh_digest()

    def _load(self) -> None:
        face_mesh()

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        meshes, found = aligned_meshes(batch.images)
        return meshes.transpose(0, 2, 1).reshape(len(meshes), -1), found


class MeshAU(AUEmotionDetector):
    """`mesh_au`: AU intensities from the aligned face mesh, then the AU -> emotion SVM (see module docstring)."""

    name = "mesh_au"
    input_kind = InputKind.IMAGE
    prefix = "mesh_au"
    trainable = True

    def __init__(self, device: str | None = None, weights: str | None = None, include_intensities: bool = True,
                 regressor: Literal["fit", "frozen"] = "fit", **kw: Any) -> None:
        super().__init__(device=device, weights=weights, include_intensities=include_intensities,
                         regressor=self.check_regressor(regressor), **kw)
        self._unfitted_svm()
        self.ridge: RidgeCV | None = None
        self._provenance: str | None = None

    # --- description -------------------------------------------------
    def weights_info(self) -> WeightsInfo:
        weights = self.config["weights"]
        if self._provenance is not None:
            return WeightsInfo(self._provenance, True, "Apache-2.0 (MediaPipe face mesh)")
        if weights is None:
            return WeightsInfo("none chosen: train it with `mcam pretrain --au-corpus ...` and pass weights=PATH, or "
                               "pass weights=random explicitly", False)
        if weights == "random":
            return WeightsInfo("untrained (explicit): zero AUs, uniform emotions", True)
        return WeightsInfo(f"checkpoint {weights}", Path(weights).is_file())

    def weights_digest(self) -> str:
        weights = self.config["weights"]
        if weights not in (None, "random") and not getattr(self, "_weights_changed", False):
            return hashlib.sha256(super().weights_digest().encode() + _mesh_digest().encode()).hexdigest()[:16]
        self.load()
        digest = hashlib.sha256(_mesh_digest().encode())
        digest.update(self._ridge_bytes())
        digest.update(self.svm.digest().encode())
        return digest.hexdigest()[:16]

    def _ridge_bytes(self) -> bytes:
        if self.ridge is None:
            return b""
        buffer = io.BytesIO()
        joblib.dump(self.ridge, buffer)
        return buffer.getvalue()

    # --- weights -------------------------------------------------------
    def _load(self) -> None:
        weights = self.config["weights"]
        face_mesh()
        if weights is None:
            raise DetectorUnavailableError(f"mesh_au: no weights chosen; {self.weights_info().source}")
        if weights == "random":
            self._provenance = "untrained (explicit): zero AUs, uniform emotions"
            return
        payload = load_checkpoint(weights, accepted=(self.name,))
        state = payload["state_dict"]
        if RIDGE_KEY in state:
            self.ridge = joblib.load(io.BytesIO(state[RIDGE_KEY].numpy().tobytes()))
        if SVM_KEY in state:
            self.svm = AUEmotionSVM.from_bytes(state[SVM_KEY].numpy().tobytes())
        self._provenance = f"checkpoint {source_of(weights)}: {payload['provenance']}"

    def save(self, path: str | Path) -> Path:
        self.load()
        state = {}
        if self.ridge is not None:
            state[RIDGE_KEY] = torch.frombuffer(bytearray(self._ridge_bytes()), dtype=torch.uint8)
        if self.svm.fitted:
            state[SVM_KEY] = torch.frombuffer(bytearray(self.svm.to_bytes()), dtype=torch.uint8)
        return save_checkpoint(path, detector=self.name, arch={"n_points": N_POINTS, "au_names": list(AU_NAMES)},
                               provenance=self._provenance or "", state_dict=state)

    # --- use -------------------------------------------------------------
    def _features(self, faces: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        meshes, found = aligned_meshes(list(faces))
        return (meshes - template()).reshape(len(meshes), -1), found

    def _aus(self, features: np.ndarray) -> np.ndarray:
        if self.ridge is None:
            return np.zeros((len(features), len(AU_NAMES)), np.float32)
        return np.clip(self.ridge.predict(features), 0.0, 1.0).astype(np.float32)

    def predict_aus(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted AU intensities float32 [N, 20] (zeros where MediaPipe finds no face)."""
        self.load()
        features, found = self._features(faces)
        return np.where(found[:, None], self._aus(features), 0.0).astype(np.float32)

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        features, found = self._features(batch.images)
        cues = np.zeros((len(batch), self.dim), np.float32)
        if found.any():
            cues[found] = self.emotion_cues(self._aus(features[found]))
        return cues, found

    # --- training ----------------------------------------------------------
    def fit(self, train: TrainingSet, val: TrainingSet | None = None, seed: int = 0, epochs: int | None = None,
            **kwargs: Any) -> dict[str, float]:
        """The ridge regression on faces with ground-truth AUs, then the SVM (`fit_aus`); `epochs` is accepted
        and unused (a closed-form fit)."""
        if kwargs:
            raise TypeError(f"mesh_au.fit: unexpected arguments {sorted(kwargs)}")
        return self.fit_aus(train, val, seed)

    def _new_regressor(self, seed: int) -> None:
        face_mesh()
        self.ridge, self._loaded = None, True

    def _train_regressor(self, faces: list[np.ndarray], targets: np.ndarray, seed: int) -> dict[str, float]:
        features, found = self._features(faces)
        rows = found & ~np.isnan(targets).any(axis=1)
        if rows.sum() < 2:
            raise ValueError(f"mesh_au: {int(rows.sum())} training faces with a face mesh and every AU annotated; "
                             "need at least 2")
        self.ridge = RidgeCV(alphas=ALPHAS).fit(features[rows], targets[rows])
        return {"n_au_annotated": float(rows.sum()), "n_no_mesh": float((~found).sum()),
                "ridge_alpha": float(self.ridge.alpha_)}
