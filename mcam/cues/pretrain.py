"""Source pre-training (LAM) and target fine-tuning (GAM) of trainable detectors, written as a detector spec."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from mcam.cues.extract import default_clip_column, load_spec, training_set
from mcam.cues.store import write_text_atomic
from mcam.detector import Detector
from mcam.manifest import Manifest
from mcam.registry import create_detector, detector_class

log = logging.getLogger(__name__)

SPEC_FILE = "detectors.yaml"


def subject_split(manifest: Manifest, val_fraction: float, seed: int) -> tuple[Manifest, Manifest | None]:
    """Train/val manifests with disjoint subjects; a seeded `val_fraction` of subjects (at least one) is val."""
    subjects = np.array(sorted(manifest.table["subject"].astype(str).unique()))
    if val_fraction <= 0 or len(subjects) < 2:
        return manifest, None
    n_val = min(len(subjects) - 1, max(1, int(round(val_fraction * len(subjects)))))
    val_subjects = set(np.random.default_rng(seed).permutation(subjects)[:n_val])
    is_val = manifest.table["subject"].astype(str).isin(val_subjects)
    return manifest.subset(~is_val), manifest.subset(is_val)


def pretrain_detectors(manifest: Manifest, names: Sequence[str], out_dir: str | Path, region: str | None = None,
                       val_fraction: float = 0.2, seed: int = 0, base_spec: Mapping | str | Path | None = None,
                       epochs: int | None = None, force: bool = False,
                       fine_tune: Sequence[str] | None = None) -> Path:
    """Train detectors on `manifest` (optionally one region) and write `out_dir/detectors.yaml`; returns its path.

    Detectors in `fine_tune` are fitted on a subject-disjoint train split and saved as
    `out_dir/<name>.pt` + `<name>.metrics.json`; they start from `base_spec` (GAM: fine-tuning
    pre-trained weights) or from random weights (LAM source pre-training). The others are
    listed with their `base_spec` (or default) init args. Default `fine_tune`: every trainable
    detector in `names` with a base_spec; without one, those whose default weights are not
    usable here (so the FER2013 macro model, or an ImageNet VGG found in the torch cache, is
    kept, not retrained from random). A detector whose checkpoint and metrics exist for the
    same data and settings is skipped unless `force`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if region is not None:
        if region not in manifest.regions:
            raise ValueError(f"region {region!r} not in the manifest; regions: {manifest.regions}")
        manifest = manifest.subset(manifest.table["region"] == region)
    base = load_spec(base_spec) if base_spec is not None else {}
    if fine_tune is None:
        fine_tune = [n for n in names if detector_class(n).trainable
                     and (base_spec is not None or not create_detector(n).weights_info().available_offline)]
    train_names = list(fine_tune)
    untrainable = [n for n in train_names if not detector_class(n).trainable]
    if untrainable:
        raise ValueError(f"detectors {untrainable} are not trainable; list them in `names` only")
    train_m, val_m = subject_split(manifest, val_fraction, seed)
    run = {"manifest_fingerprint": manifest.fingerprint(), "region": region, "seed": seed,
           "val_fraction": val_fraction, "epochs": epochs}
    spec: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys([*names, *train_names]):
        if name not in train_names:
            spec[name] = _portable(base.get(name, {}), out_dir)
            continue
        init = dict(base.get(name, {"weights": "random"}))
        checkpoint = out_dir / f"{name}.pt"
        metrics_path = out_dir / f"{name}.metrics.json"
        start = {**run, "init": _portable(init, out_dir), "init_weights": _file_digest(init.get("weights"))}
        if not force and _done(checkpoint, metrics_path, start):
            log.info("%s: already trained (%s); skipping (use force to retrain)", name, checkpoint)
        else:
            detector = create_detector(name, **init)
            metrics = _train(detector, train_m, val_m, epochs)
            tmp = detector.save(out_dir / f".{name}.tmp.pt")
            os.replace(tmp, checkpoint)
            record = {**start, "detector": name, "metrics": metrics,
                      "subjects_train": int(train_m.table["subject"].nunique()),
                      "subjects_val": 0 if val_m is None else int(val_m.table["subject"].nunique())}
            write_text_atomic(metrics_path, json.dumps(record, indent=2, default=str))
            log.info("%s: trained in %.1f s -> %s %s", name, metrics["seconds"], checkpoint, metrics)
        spec[name] = {**{k: v for k, v in _portable(base.get(name, {}), out_dir).items() if k != "weights"},
                      "weights": checkpoint.name}
    path = out_dir / SPEC_FILE
    write_text_atomic(path, yaml.safe_dump({"detectors": spec}, sort_keys=False))
    return path


def _train(detector: Detector, train_m: Manifest, val_m: Manifest | None, epochs: int | None) -> dict[str, Any]:
    """Fit on faces loaded for the detector's input kind; micro clips (`micro_clip`) feed clip detectors."""
    clip_column = default_clip_column(train_m)
    start = time.perf_counter()
    train = training_set(train_m, detector.input_kind, clip_column=clip_column)
    val = None if val_m is None else training_set(val_m, detector.input_kind, clip_column=clip_column)
    kwargs = {} if epochs is None else {"epochs": epochs}
    metrics = {k: float(v) for k, v in (detector.fit(train, val, **kwargs) or {}).items()}
    return {**metrics, "n_train": len(train.faces), "n_val": 0 if val is None else len(val.faces),
            "seconds": round(time.perf_counter() - start, 2)}


def _file_digest(weights: object) -> str | None:
    """Content hash of a starting checkpoint, so fine-tuned detectors are redone when their base was retrained."""
    if not isinstance(weights, str) or not Path(weights).is_file():
        return None
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _done(checkpoint: Path, metrics_path: Path, run: dict[str, Any]) -> bool:
    if not (checkpoint.exists() and metrics_path.exists()):
        return False
    try:
        record = json.loads(metrics_path.read_text())
    except ValueError:
        return False
    same = all(record.get(k) == v for k, v in run.items())
    if not same:
        log.info("%s exists but was trained on other data/settings; retraining", checkpoint)
    return same


def _portable(config: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Init args for a spec in `out_dir`: resolved weight files inside it become relative, others stay absolute."""
    config = dict(config)
    weights = config.get("weights")
    if isinstance(weights, str) and Path(weights).is_absolute():
        try:
            config["weights"] = str(Path(weights).relative_to(out_dir.resolve()))
        except ValueError:
            pass
    return config
