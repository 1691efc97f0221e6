"""CueStore: cue tables cached per (manifest fingerprint, detector, detector fingerprint), atomic and resumable.

Layout: `root/<dataset>-<manifest fp>/<detector>-<detector fp>.npz` with a JSON sidecar
(`.json`), a rejects list (`.rejects.csv`) and, while an extraction is under way, a
`.partial.npz` holding the rows finished so far. Every manifest version gets its own
folder, so datasets, folds and subsets never overwrite each other's cues.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mcam.cues.table import CueTable
from mcam.io import atomic_output, write_atomic
from mcam.store import file_lock
from mcam.detector import Detector
from mcam.manifest import Manifest


class StaleCueWarning(UserWarning):
    """A cached cue file that does not match its key (stale, mismatched or corrupt); it will be re-extracted."""


@dataclass
class PartialCues:
    """Rows [0, done) of an interrupted extraction: values, validity and reject reasons ('' = accepted)."""

    done: int
    values: np.ndarray  # float32 [done, D]
    valid: np.ndarray  # bool [done]
    reasons: np.ndarray  # str [done]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)[:60] or "data"


class CueStore:
    """Cached cue tables under `root`, keyed by manifest fingerprint and detector fingerprint."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- paths ----------------------------------------------------------
    def folder(self, manifest: Manifest) -> Path:
        """The folder of one manifest version: '<dataset names>-<manifest fingerprint>'."""
        datasets = "+".join(sorted(manifest.table["dataset"].astype(str).unique()))
        return self.root / f"{_slug(datasets)}-{manifest.fingerprint()}"

    def path(self, manifest: Manifest, detector: Detector, fingerprint: str | None = None) -> Path:
        """The .npz file of one (manifest, detector) entry."""
        fingerprint = fingerprint or detector.fingerprint()
        return self.folder(manifest) / f"{_slug(detector.name)}-{fingerprint}.npz"

    def partial_path(self, manifest: Manifest, detector: Detector, fingerprint: str | None = None) -> Path:
        """Where an unfinished extraction keeps its completed rows."""
        return self.path(manifest, detector, fingerprint).with_suffix(".partial.npz")

    def rejects_path(self, manifest: Manifest, detector: Detector, fingerprint: str | None = None) -> Path:
        """CSV of rows without a valid cue (sample_id, path, reason)."""
        return self.path(manifest, detector, fingerprint).with_suffix(".rejects.csv")

    @staticmethod
    def sidecar_path(npz: Path) -> Path:
        return npz.with_suffix(".json")

    # --- entries --------------------------------------------------------
    def get(self, manifest: Manifest, detector: Detector, fingerprint: str | None = None) -> CueTable | None:
        """The cached table, or None when absent or unusable (then a StaleCueWarning names the file)."""
        fingerprint = fingerprint or detector.fingerprint()
        path = self.path(manifest, detector, fingerprint)
        if not path.exists():
            return None
        problem = self._check(path, manifest, detector, fingerprint)
        if isinstance(problem, CueTable):
            return problem
        warnings.warn(f"cue cache {path}: {problem}; ignoring it and re-extracting", StaleCueWarning, stacklevel=2)
        return None

    def _check(self, path: Path, manifest: Manifest, detector: Detector, fingerprint: str) -> CueTable | str:
        try:
            table = CueTable.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            return f"unreadable ({type(err).__name__}: {err})"
        try:
            meta = json.loads(self.sidecar_path(path).read_text())
        except (OSError, ValueError) as err:
            return f"sidecar {self.sidecar_path(path).name} unreadable ({type(err).__name__})"
        if table.detector != detector.name or table.fingerprint != fingerprint:
            return f"holds {table.detector}/{table.fingerprint}, expected {detector.name}/{fingerprint}"
        if meta.get("manifest_fingerprint") != manifest.fingerprint():
            return f"made for manifest {meta.get('manifest_fingerprint')}, not {manifest.fingerprint()}"
        if not np.array_equal(table.sample_ids, manifest.table["sample_id"].to_numpy(dtype=str)):
            return "sample ids differ from the manifest"
        if table.labels != detector.labels:
            return "cue labels differ from the detector's"
        return table

    def put(self, manifest: Manifest, detector: Detector, table: CueTable, fingerprint: str | None = None) -> Path:
        """Write the table and its sidecar atomically; drops any partial file. Returns the .npz path."""
        fingerprint = fingerprint or detector.fingerprint()
        if table.fingerprint != fingerprint or table.detector != detector.name:
            raise ValueError(f"table {table.detector}/{table.fingerprint} does not belong to "
                             f"{detector.name}/{fingerprint}")
        path = self.path(manifest, detector, fingerprint)
        meta = {
            "manifest_fingerprint": manifest.fingerprint(),
            "manifest_root": str(manifest.root),
            "detector": detector.name,
            "detector_fingerprint": fingerprint,
            "config": detector.config,
            "weights": asdict(detector.weights_info()),
            # the store entry of the detector's weights, if any (`mcam cache --prune` keeps it while this is used)
            "depends_on": _weights_entry(detector.config.get("weights"), self.root),
            "labels": table.labels,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": int(len(table.sample_ids)),
            "n_valid": int(table.valid.sum()),
        }
        write_atomic(self.sidecar_path(path), json.dumps(meta, indent=2, default=str))
        table.save(path)
        self.partial_path(manifest, detector, fingerprint).unlink(missing_ok=True)
        return path

    # --- resumable extraction --------------------------------------------
    def save_partial(self, manifest: Manifest, detector: Detector, fingerprint: str, partial: PartialCues) -> Path:
        """Atomically record the rows finished so far."""
        path = self.partial_path(manifest, detector, fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            np.savez(tmp, manifest_fingerprint=manifest.fingerprint(), fingerprint=fingerprint,
                     sample_ids=manifest.table["sample_id"].to_numpy(dtype=str)[: partial.done],
                     values=partial.values.astype(np.float32), valid=partial.valid.astype(bool),
                     reasons=partial.reasons.astype(str))
        return path

    def lock(self, manifest: Manifest, detector: Detector, fingerprint: str) -> contextlib.AbstractContextManager[None]:
        """Held while one process extracts an entry; a second extractor of the same entry waits, then reads it."""
        entry = self.path(manifest, detector, fingerprint)
        return file_lock(self.root / ".locks" / f"{entry.parent.name}-{entry.stem}.lock")

    def load_partial(self, manifest: Manifest, detector: Detector, fingerprint: str) -> PartialCues | None:
        """Rows of an interrupted extraction of this exact entry, or None (mismatches warn and are ignored)."""
        path = self.partial_path(manifest, detector, fingerprint)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                ids = data["sample_ids"].astype(str)
                ok = (str(data["manifest_fingerprint"]) == manifest.fingerprint()
                      and str(data["fingerprint"]) == fingerprint
                      and np.array_equal(ids, manifest.table["sample_id"].to_numpy(dtype=str)[: len(ids)])
                      and data["values"].shape == (len(ids), detector.dim))
                partial = PartialCues(len(ids), data["values"], data["valid"], data["reasons"].astype(str))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"partial cue file {path}: unreadable ({type(err).__name__}); starting over",
                          StaleCueWarning, stacklevel=2)
            return None
        if not ok:
            warnings.warn(f"partial cue file {path}: does not match this manifest/detector; starting over",
                          StaleCueWarning, stacklevel=2)
            return None
        return partial


def _weights_entry(weights: object, cue_root: Path) -> list[str]:
    """['detectors/<key>'] when the weights file is an entry of the artifact store beside the cue store."""
    if not isinstance(weights, str) or not Path(weights).is_file():
        return []
    folder = Path(weights).resolve().parent
    return [f"detectors/{folder.name}"] if folder.parent == (cue_root.parent / "detectors").resolve() else []
