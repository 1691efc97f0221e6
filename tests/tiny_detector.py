"""Tiny test-only detectors (not registered as plugins): used directly by the cue store and pre-training tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from mcam.detector import Detector, FaceBatch, InputKind, TrainingSet, WeightsInfo
from mcam.determinism import seeded
from mcam.manifest import Manifest, load_manifest, save_manifest


class TinyDetector(Detector):
    """Mean R, G, B of the face times `scale`; an all-black face is 'no valid cue'. Counts `_extract` calls."""

    name = "tiny"
    prefix = "tiny"
    input_kind = InputKind.IMAGE

    def __init__(self, device: str | None = None, weights: str | None = None, scale: float = 1.0, **kw: Any) -> None:
        super().__init__(device=device, weights=weights, scale=scale, **kw)
        self.calls = 0
        self.fail_on_call: int | None = None  # raise inside this call number (1-based): simulated interruption

    def output_names(self) -> list[str]:
        return ["r", "g", "b"]

    def weights_info(self) -> WeightsInfo:
        return WeightsInfo(source="none (arithmetic)", available_offline=True)

    def _load(self) -> None:
        pass

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt("simulated interruption")
        faces = batch.images if self.input_kind == InputKind.IMAGE else [c[c.shape[0] // 2] for c in batch.clips]
        means = np.stack([f.reshape(-1, 3).mean(axis=0) for f in faces]) * self.config["scale"]
        return means, means.sum(axis=1) > 0


class TinyClipDetector(TinyDetector):
    """TinyDetector over the middle frame of a clip."""

    name = "tinyclip"
    prefix = "tinyclip"
    input_kind = InputKind.CLIP


class TinyTrainable(TinyDetector):
    """A trainable tiny detector: a linear layer on mean RGB; `fit` records what it was given."""

    name = "tinytrain"
    prefix = "tinytrain"
    trainable = True
    seen: list[tuple[TrainingSet, TrainingSet | None]] = []  # every fit call, across instances

    def weights_info(self) -> WeightsInfo:
        return WeightsInfo(source=str(self.config["weights"]), available_offline=True)

    def _load(self) -> None:
        weights = self.config["weights"]
        with seeded(0):  # an explicit init: the same config is the same detector (and fingerprint)
            self.model = torch.nn.Linear(3, 3)
        if weights not in (None, "random"):
            self.model.load_state_dict(torch.load(weights)["state_dict"])

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        means, valid = super()._extract(batch)
        return self.model(torch.as_tensor(means, dtype=torch.float32)).detach().numpy(), valid

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int = 1, **kw: Any) -> dict[str, float]:
        self.load()
        TinyTrainable.seen.append((train, val))
        with torch.no_grad():
            self.model.bias.add_(float(epochs))
        return {"train_samples": float(len(train.faces)), "val_samples": float(len(val.faces) if val else 0)}

    def save(self, path: str | Path) -> Path:
        torch.save({"state_dict": self.model.state_dict(), "config": self.config}, path)
        return Path(path)


def write_dataset(root: Path, n_subjects: int = 4, per_subject: int = 3, missing: tuple[int, ...] = ()) -> Manifest:
    """A tiny dataset of coloured 32x32 faces in two regions; rows in `missing` point at absent files."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = ["happy", "sad", "surprise", "neutral", "angry"]
    rows = []
    for s in range(n_subjects):
        region = "western_posed" if s % 2 == 0 else "east_asian"
        for k in range(per_subject):
            i = len(rows)
            image = rng.integers(10, 250, size=(32, 32, 3), dtype=np.uint8)
            name = f"img{i:03d}.png"
            if i not in missing:
                cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            rows.append({"sample_id": f"s{i:03d}", "path": name, "label": labels[i % len(labels)], "region": region,
                         "dataset": "tiny", "subject": f"{region}-s{s:02d}", "bbox": "0 0 32 32",
                         "AU01": float(rng.random()), "AU12": float(rng.random())})
    table = pd.DataFrame(rows)
    save_manifest(table, root / "manifest.csv")
    return load_manifest(root)
