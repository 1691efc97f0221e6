"""The paper's AU -> emotion SVM (action-unit intensities in, canonical emotion probabilities out), and what the
detectors built on it share (`AUEmotionDetector`: `au` on pixels, `mesh_au` on the face mesh)."""
from __future__ import annotations

import hashlib
import io
import warnings
from abc import abstractmethod
from typing import Any, Sequence

import joblib
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mcam.detector import Detector, TrainingSet
from mcam.labels import AU_NAMES, CANONICAL, head_map
from mcam.splits import require_classes
from mcam_detectors._checkpoint import source_of

HEAD = "canonical7"  # the SVM's classes


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


class AUEmotionDetector(Detector):
    """A detector that reads 20 AU intensities (py-feat's order) from a face, then the paper's AU -> emotion SVM.

    Cue: the 7 canonical emotion probabilities, then (`include_intensities`) the intensities named like OpenFace
    (`AU01_r` ...). `fit_aus` trains the regressor on faces with ground-truth AUs (an AU corpus, rows without
    emotion labels, trains it alone, as real AU detectors are trained on DISFA/BP4D) and the SVM on labelled
    faces; with `regressor: frozen` (or no AU ground truth) the regressor stays as loaded and only the SVM is
    fitted. Subclasses give the regressor: `predict_aus`, `_new_regressor`, `_train_regressor`.
    """

    head = HEAD
    learns_from_aus = True
    svm: AUEmotionSVM
    REGRESSOR_MODES = ("fit", "frozen")

    @classmethod
    def check_regressor(cls, regressor: str) -> str:
        """`regressor` itself when it is a mode subclasses accept ('fit' or 'frozen'); ValueError otherwise."""
        if regressor not in cls.REGRESSOR_MODES:
            raise ValueError(f"{cls.name}: regressor must be 'fit' or 'frozen', got {regressor!r}")
        return regressor

    def _unfitted_svm(self) -> None:
        self.svm = AUEmotionSVM(head_map(HEAD).classes)

    def usable(self, face: Any) -> bool:
        """An image (gray or colour) at least 2 pixels on each side."""
        return isinstance(face, np.ndarray) and face.ndim in (2, 3) and face.shape[0] > 1 and face.shape[1] > 1

    def output_names(self) -> list[str]:
        names = list(head_map(HEAD).classes)
        if self.config["include_intensities"]:
            names += [f"{au}_r" for au in AU_NAMES]
        return names

    @abstractmethod
    def predict_aus(self, faces: Sequence[Any]) -> np.ndarray:
        """Predicted AU intensities float32 [N, 20] in AU_NAMES order."""

    @abstractmethod
    def _new_regressor(self, seed: int) -> None:
        """A fresh, untrained regressor seeded by `seed` (source pre-training from weights=None)."""

    @abstractmethod
    def _train_regressor(self, faces: list[Any], targets: np.ndarray, seed: int, **settings: Any) -> dict[str, float]:
        """Train the regressor on faces and their AUs (NaN: not annotated); returns metrics."""

    def emotion_cues(self, aus: np.ndarray) -> np.ndarray:
        """The cue of predicted AUs [N, 20]: emotion probabilities, then the intensities (`include_intensities`)."""
        n_classes = len(self.svm.classes)
        if self.svm.fitted:
            emotions = self.svm.predict_proba(aus).astype(np.float32)
        else:  # only for an explicit weights='random' model
            emotions = np.full((len(aus), n_classes), 1.0 / n_classes, dtype=np.float32)
        return np.concatenate([emotions] + ([aus] if self.config["include_intensities"] else []), axis=1)

    def fit_aus(self, train: TrainingSet, val: TrainingSet | None, seed: int, **settings: Any) -> dict[str, float]:
        """What `fit` does (see the class docstring); `settings` go to `_train_regressor`."""
        head = head_map(HEAD)
        usable = [i for i, face in enumerate(train.faces) if self.usable(face)]
        labelled = [i for i in usable if train.labels[i] != "" and head.target(train.labels[i]) is not None]
        unlabelled = all(train.labels[i] == "" for i in usable)
        targets = au_targets(train)
        train_regressor = targets is not None and self.config["regressor"] == "fit"
        if not unlabelled:  # before training the regressor
            require_classes([head.target(train.labels[i]) for i in labelled],
                            f"{self.name}.fit: {len(labelled)} usable labelled training faces")
        elif not train_regressor:
            raise ValueError(f"{self.name}: fit on rows without emotion labels trains the regressor only; they need "
                             "AU ground truth and regressor: fit")
        keep = usable if unlabelled else labelled
        metrics: dict[str, float] = {"n_train": float(len(keep)), "n_skipped": float(len(train.faces) - len(keep))}
        if self.config["weights"] is not None or self._loaded:
            self.load()
        elif not train_regressor:
            raise ValueError(f"{self.name}: fit needs AU ground truth (TrainingSet.aus) and regressor: fit to train a "
                             "regressor from scratch; pass weights=PATH of a pre-trained regressor to refit only the SVM")
        else:
            self._new_regressor(seed)
        faces = [train.faces[i] for i in keep]
        if train_regressor:
            metrics.update(self._train_regressor(faces, targets[keep], seed=seed, **settings))
        metrics["regressor_trained"] = float(train_regressor)
        predicted = self.predict_aus(faces)
        if targets is not None:
            metrics["train_au_mae"] = float(np.nanmean(np.abs(predicted - targets[keep])))
        if not unlabelled:
            labels = [head.target(train.labels[i]) for i in keep]
            self.svm = AUEmotionSVM(head.classes, seed=seed).fit(predicted, labels)
            metrics["train_acc"] = self.svm.score(predicted, labels)
        parts = "regressor + SVM" if train_regressor and not unlabelled else "regressor" if train_regressor else "SVM"
        start = source_of(self.config["weights"]) if self.config["weights"] else "a fresh model"
        unlabelled_note = ", no emotion labels" if unlabelled else ""
        self._provenance = (f"{self.name}.fit on {len(keep)} faces ({parts}{unlabelled_note}), starting from {start}, "
                            f"{settings.get('epochs', '-')} epochs, seed {seed}")
        if val is not None:
            metrics.update(self._evaluate(val, prefix="val_"))
        return metrics

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
