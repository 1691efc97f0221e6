"""The paper's AU -> emotion SVM: action-unit intensities in, canonical emotion probabilities out."""
from __future__ import annotations

import hashlib
import io
import warnings
from typing import Sequence

import joblib
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mcam.labels import CANONICAL


class AUEmotionSVM:
    """StandardScaler + SVC with Platt-scaled probabilities over AU vectors, in a fixed column order `classes`.

    Probabilities come from `CalibratedClassifierCV(SVC(), ensemble=False)` (what scikit-learn now
    recommends over the deprecated `SVC(probability=True)`), with up to 5 stratified folds.
    Classes absent from the training labels, or with a single example (no fold could hold it
    out), get probability 0; with one class left the model predicts it with probability 1.
    Serialised as joblib bytes (`to_bytes`/`from_bytes`): pickle, so load only trusted checkpoints.
    """

    def __init__(self, classes: Sequence[str] = CANONICAL, C: float = 1.0, kernel: str = "rbf",
                 seed: int = 0) -> None:
        self.classes = tuple(classes)
        self.C = C
        self.kernel = kernel
        self.seed = seed
        self.pipeline: Pipeline | None = None
        self.constant: str | None = None
        self._blob: bytes | None = None  # serialised once: pickling a reloaded model need not give the same bytes

    @property
    def fitted(self) -> bool:
        return self.pipeline is not None or self.constant is not None

    def fit(self, features: np.ndarray, labels: Sequence[str]) -> "AUEmotionSVM":
        """Fit on AU vectors [N, D] and labels from `classes`; returns self."""
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(list(labels), dtype=object)
        unknown = sorted(set(labels) - set(self.classes))
        if unknown:
            raise ValueError(f"AUEmotionSVM: labels {unknown} are not among its classes {list(self.classes)}")
        if len(labels) != len(features) or len(labels) == 0:
            raise ValueError(f"AUEmotionSVM: {len(features)} feature rows for {len(labels)} labels (need > 0, equal)")
        self._blob = None
        names, counts = np.unique(labels, return_counts=True)
        kept = set(names[counts >= 2])
        if len(kept) < 2:  # one usable class: nothing to separate
            self.pipeline, self.constant = None, str(names[counts.argmax()])
            warnings.warn(f"AUEmotionSVM: fewer than two classes have two or more training rows "
                          f"({dict(zip(names.tolist(), counts.tolist()))}); it predicts {self.constant!r} for every "
                          "face", UserWarning, stacklevel=2)
            return self
        rows = np.isin(labels, list(kept))
        folds = int(min(5, counts[counts >= 2].min()))
        svc = CalibratedClassifierCV(SVC(C=self.C, kernel=self.kernel, random_state=self.seed),
                                     ensemble=False, cv=StratifiedKFold(folds, shuffle=True, random_state=self.seed))
        self.pipeline = make_pipeline(StandardScaler(), svc).fit(features[rows], labels[rows])
        self.constant = None
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities float32 [N, len(classes)] in the fixed `classes` order."""
        if not self.fitted:
            raise RuntimeError("AUEmotionSVM is not fitted")
        features = np.asarray(features, dtype=np.float64)
        out = np.zeros((len(features), len(self.classes)), dtype=np.float32)
        if len(features) == 0:
            return out
        if self.constant is not None:
            out[:, self.classes.index(self.constant)] = 1.0
            return out
        probs = self.pipeline.predict_proba(features)
        for column, name in enumerate(self.pipeline.classes_):
            out[:, self.classes.index(str(name))] = probs[:, column]
        return out

    def score(self, features: np.ndarray, labels: Sequence[str]) -> float:
        """Accuracy of the most probable class against `labels`."""
        predicted = np.asarray(self.classes)[self.predict_proba(features).argmax(axis=1)]
        return float(np.mean(predicted == np.asarray(list(labels), dtype=object)))

    def to_bytes(self) -> bytes:
        """Serialised state (joblib) for a checkpoint dict; stable for a given fit or load."""
        if self._blob is None:
            buffer = io.BytesIO()
            joblib.dump({"classes": self.classes, "C": self.C, "kernel": self.kernel, "seed": self.seed,
                         "pipeline": self.pipeline, "constant": self.constant}, buffer)
            self._blob = buffer.getvalue()
        return self._blob

    @classmethod
    def from_bytes(cls, data: bytes) -> "AUEmotionSVM":
        """Inverse of `to_bytes` (trusted data only: joblib is pickle)."""
        state = joblib.load(io.BytesIO(data))
        svm = cls(state["classes"], C=state["C"], kernel=state["kernel"], seed=state["seed"])
        svm.pipeline, svm.constant, svm._blob = state["pipeline"], state["constant"], bytes(data)
        return svm

    def digest(self) -> str:
        """Hash of the fitted state, for detector fingerprints."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16] if self.fitted else "unfitted"
