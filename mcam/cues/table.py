"""A cue matrix for one (manifest, detector) pair: values, validity and column labels, aligned to manifest rows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mcam.io import atomic_output


@dataclass
class CueTable:
    """Cues of one detector over a manifest; row i belongs to sample_ids[i]."""

    detector: str
    fingerprint: str
    sample_ids: np.ndarray  # str [N]
    labels: list[str]  # prefixed column labels, e.g. 'macro.happy'
    values: np.ndarray  # float32 [N, D]
    valid: np.ndarray  # bool [N]

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if self.values.shape != (n, len(self.labels)) or self.valid.shape != (n,):
            raise ValueError(f"cue table {self.detector}: values {self.values.shape}, valid {self.valid.shape}, "
                             f"{n} samples, {len(self.labels)} labels do not agree")

    @property
    def dim(self) -> int:
        return len(self.labels)

    def align(self, sample_ids: "np.ndarray | list[str]") -> "CueTable":
        """Rows reordered/selected to match `sample_ids`; KeyError naming a missing id."""
        index = pd.Index(self.sample_ids)
        positions = index.get_indexer(list(sample_ids))
        if (positions < 0).any():
            missing = np.asarray(sample_ids)[positions < 0][0]
            raise KeyError(f"cue table {self.detector}: no cues for sample {missing!r}")
        return CueTable(self.detector, self.fingerprint, self.sample_ids[positions], self.labels,
                        self.values[positions], self.valid[positions])

    def to_frame(self) -> pd.DataFrame:
        """Values as a DataFrame indexed by sample_id, with a '<prefix>.valid' column."""
        frame = pd.DataFrame(self.values, columns=self.labels, index=pd.Index(self.sample_ids, name="sample_id"))
        frame[f"{self.detector}.valid"] = self.valid
        return frame

    def save(self, path: str | Path) -> Path:
        """Write atomically as .npz (a crash never leaves a half-written file under the final name)."""
        path = Path(path)
        with atomic_output(path) as tmp:
            np.savez(tmp, detector=self.detector, fingerprint=self.fingerprint,
                     sample_ids=self.sample_ids.astype(str), labels=np.asarray(self.labels, dtype=str),
                     values=self.values.astype(np.float32), valid=self.valid.astype(bool))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CueTable":
        with np.load(path, allow_pickle=False) as data:
            return cls(str(data["detector"]), str(data["fingerprint"]), data["sample_ids"].astype(str),
                       [str(s) for s in data["labels"]], data["values"], data["valid"])
