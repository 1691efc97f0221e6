"""Cue U from OpenFace 2.0: import FeatureExtraction CSVs instead of running a detector.

One CSV per sample in `csv_dir`, named `<sample_id>.csv` (or `<image stem>.csv` when `manifest`
names the manifest whose `path` column gives the stem). Read with py-feat's
`feat.utils.io.read_openface` (which strips OpenFace's leading-space headers). A multi-frame CSV
(a video, or several faces) contributes its frame with the highest `confidence` among frames with
`success == 1`. A sample is valid when that frame exists and its confidence >= `min_confidence`;
a missing or unreadable CSV makes the sample invalid with a logged warning naming the file.

Output, fixed by the config: 17 intensities `openface.AUxx_r`, 18 presences `openface.AUxx_c`
(incl. AU28), and, when `emotions=True` (default, the paper's U), 7 canonical emotion probabilities
from the AU -> emotion SVM (`openface.happy` ...), fitted on imported `_r` intensities by `fit`
(TrainingSet.sample_ids required) or loaded from `weights=PATH` written by `save`.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcam.detector import Detector, DetectorUnavailableError, FaceBatch, InputKind, TrainingSet, WeightsInfo
from mcam.labels import head_map
from mcam_detectors._checkpoint import load_checkpoint, save_checkpoint
from mcam_detectors.au_svm import AUEmotionSVM

log = logging.getLogger(__name__)

OPENFACE_AUS_R: tuple[str, ...] = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
                                   "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
OPENFACE_AUS_C: tuple[str, ...] = OPENFACE_AUS_R[:15] + ("AU26", "AU28", "AU45")
R_COLUMNS = [f"{au}_r" for au in OPENFACE_AUS_R]
C_COLUMNS = [f"{au}_c" for au in OPENFACE_AUS_C]
HEAD = "canonical7"
SVM_KEY = "svm.joblib"


def read_best_frame(path: Path, min_confidence: float) -> tuple[np.ndarray | None, str]:
    """The [35] `_r` + `_c` values of a CSV's best frame (highest confidence with success == 1), or None + why."""
    from feat.utils.io import read_openface  # py-feat import is slow: only when CSVs are read

    try:
        frame = read_openface(str(path), features=["success", "confidence", *R_COLUMNS, *C_COLUMNS])
    except (OSError, ValueError, KeyError) as err:
        return None, f"unreadable OpenFace CSV {path}: {err}"
    ok = frame[frame["success"] == 1]
    if ok.empty:
        return None, f"{path}: no frame with success == 1"
    best = ok.loc[ok["confidence"].idxmax()]
    if best["confidence"] < min_confidence:
        return None, f"{path}: best confidence {best['confidence']:.3f} < min_confidence {min_confidence}"
    values = best[R_COLUMNS + C_COLUMNS].to_numpy(dtype=np.float32)
    if np.isnan(values).any():
        return None, f"{path}: missing AU values in the best frame"
    return values, ""


class OpenFaceImporter(Detector):
    """Imported OpenFace 2.0 AUs (+ the paper's AU -> emotion SVM); see module docstring."""

    name = "openface"
    input_kind = InputKind.IMAGE
    prefix = "openface"
    trainable = True

    def __init__(self, device: str | None = None, weights: str | None = None, csv_dir: str | None = None,
                 min_confidence: float = 0.8, emotions: bool = True, manifest: str | None = None,
                 **kw: Any) -> None:
        super().__init__(device=device, weights=weights, csv_dir=csv_dir, min_confidence=min_confidence,
                         emotions=emotions, manifest=manifest, **kw)
        self.svm = AUEmotionSVM(head_map(HEAD).classes)
        self._stems: dict[str, str] = {}
        self._fitted_here = False

    def output_names(self) -> list[str]:
        emotions = list(head_map(HEAD).classes) if self.config["emotions"] else []
        return R_COLUMNS + C_COLUMNS + emotions

    def weights_info(self) -> WeightsInfo:
        csv_dir = self.config["csv_dir"]
        source = f"OpenFace 2.0 CSVs in {csv_dir}" if csv_dir else "OpenFace 2.0 CSVs: set csv_dir=FOLDER"
        available = csv_dir is not None and Path(csv_dir).is_dir()
        if self.config["emotions"]:
            weights = self.config["weights"]
            source += f"; SVM {weights}" if weights else "; SVM fitted by fit()"
            available = available and (weights is None or Path(weights).is_file())
        return WeightsInfo(source, available)

    def weights_digest(self) -> str:
        """Hash of the SVM and of the CSV folder listing (names, sizes, mtimes): new CSVs invalidate caches."""
        self.load()
        digest = hashlib.sha256(self.svm.digest().encode())
        for path in sorted(Path(self.config["csv_dir"]).glob("*.csv")):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def _load(self) -> None:
        self._open_dir()
        weights = self.config["weights"]
        if weights is not None and not self._fitted_here:
            state = load_checkpoint(weights, accepted=(self.name,))["state_dict"]
            self.svm = AUEmotionSVM.from_bytes(state[SVM_KEY].numpy().tobytes())
        elif self.config["emotions"] and not self.svm.fitted:
            raise DetectorUnavailableError(
                "openface: emotions=True needs the AU -> emotion SVM: call fit() on a labelled training set "
                "(`mcam pretrain`), pass weights=PATH of a saved one, or set emotions=False for AUs only")

    def _open_dir(self) -> None:
        """Check csv_dir and read the optional manifest's sample_id -> image stem map."""
        csv_dir = self.config["csv_dir"]
        if csv_dir is None or not Path(csv_dir).is_dir():
            raise DetectorUnavailableError(
                f"openface: csv_dir={csv_dir!r} is not a folder. Run OpenFace 2.0 FeatureExtraction on the faces "
                "(one CSV per sample, named <sample_id>.csv) and pass csv_dir=FOLDER")
        if self.config["manifest"] and not self._stems:
            from mcam.manifest import load_manifest

            table = load_manifest(self.config["manifest"]).table
            self._stems = dict(zip(table["sample_id"], (Path(p).stem for p in table["path"])))

    def csv_path(self, sample_id: str) -> Path:
        """The CSV of a sample: <sample_id>.csv, else <image stem>.csv when a manifest was given."""
        folder = Path(self.config["csv_dir"])
        path = folder / f"{sample_id}.csv"
        if not path.exists() and sample_id in self._stems:
            path = folder / f"{self._stems[sample_id]}.csv"
        return path

    def read_aus(self, sample_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Imported `_r` + `_c` values float32 [N, 35] and validity [N]; problems are logged per file."""
        values = np.zeros((len(sample_ids), len(R_COLUMNS) + len(C_COLUMNS)), dtype=np.float32)
        valid = np.zeros(len(sample_ids), dtype=bool)
        for i, sample_id in enumerate(sample_ids):
            path = self.csv_path(sample_id)
            if not path.exists():
                log.warning("openface: sample %s: CSV %s not found; marked invalid", sample_id, path)
                continue
            row, reason = read_best_frame(path, self.config["min_confidence"])
            if row is None:
                log.warning("openface: sample %s: %s; marked invalid", sample_id, reason)
                continue
            values[i], valid[i] = row, True
        return values, valid

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        aus, valid = self.read_aus(batch.sample_ids)
        if not self.config["emotions"]:
            return aus, valid
        probs = np.zeros((len(batch), len(self.svm.classes)), dtype=np.float32)
        if valid.any():
            probs[valid] = self.svm.predict_proba(aus[valid, :len(R_COLUMNS)])
        return np.concatenate([aus, probs], axis=1), valid

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, **kwargs: Any) -> dict[str, float]:
        """Fit the AU -> emotion SVM on the imported `_r` intensities of `train.sample_ids` and their labels."""
        if train.sample_ids is None:
            raise ValueError("openface: fit needs TrainingSet.sample_ids to find each sample's CSV")
        self._open_dir()
        head = head_map(HEAD)
        aus, valid = self.read_aus(train.sample_ids)
        keep = [i for i, label in enumerate(train.labels) if valid[i] and head.target(label) is not None]
        if not keep:
            raise ValueError(f"openface: none of the {len(train.labels)} training samples has a valid CSV")
        labels = [head.target(train.labels[i]) for i in keep]
        self.svm = AUEmotionSVM(head.classes, seed=int(kwargs.get("seed", 0))).fit(aus[keep, :len(R_COLUMNS)], labels)
        self._fitted_here = True  # from now on the fitted SVM wins over weights=PATH (GAM refit)
        metrics = {"n_train": float(len(keep)), "n_skipped": float(len(train.labels) - len(keep)),
                   "train_acc": self.svm.score(aus[keep, :len(R_COLUMNS)], labels)}
        if val is not None and val.sample_ids is not None:
            val_aus, val_valid = self.read_aus(val.sample_ids)
            rows = [i for i, label in enumerate(val.labels) if val_valid[i] and head.target(label) is not None]
            if rows:
                metrics["val_acc"] = self.svm.score(val_aus[rows, :len(R_COLUMNS)],
                                                    [head.target(val.labels[i]) for i in rows])
        return metrics

    def save(self, path: str | Path) -> Path:
        """Write the fitted SVM as a checkpoint loadable via weights=PATH."""
        if not self.svm.fitted:
            raise RuntimeError("openface: nothing to save: the SVM is not fitted (call fit first)")
        state = {SVM_KEY: torch.frombuffer(bytearray(self.svm.to_bytes()), dtype=torch.uint8)}
        return save_checkpoint(path, detector=self.name, arch={"au_columns": R_COLUMNS},
                               provenance="AU -> emotion SVM fitted on OpenFace 2.0 intensities", state_dict=state)
