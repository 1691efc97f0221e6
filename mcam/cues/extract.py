"""Batched, cached cue extraction over a manifest, and training sets for detector `fit`."""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from mcam.cues.store import CueStore, PartialCues
from mcam.cues.table import CueTable
from mcam.detector import Detector, FaceBatch, InputKind, TrainingSet, still_to_clip
from mcam.determinism import training_threads
from mcam.errors import InputError
from mcam.faces import FaceCropper, FaceError, load_clip, read_rgb
from mcam.io import atomic_output
from mcam.labels import CANONICAL
from mcam.manifest import Manifest
from mcam.registry import create_detector

log = logging.getLogger(__name__)

# Config keys holding file paths: relative values are resolved against the spec YAML's folder.
PATH_KEYS = ("weights",)
PATH_SUFFIXES = ("_path", "_dir", "_file")
STILL_CLIP_FRAMES = 8  # frames of the clip a still becomes (mcam.detector.still_to_clip) when a row has no clip
CHECKPOINT_EVERY = 10  # batches between partial-file writes during extraction
NO_CUE = "no_cue"  # reject reason: the face loaded but the detector gave no valid cue for it


def load_spec(spec: Mapping[str, Mapping[str, Any] | None] | str | Path) -> dict[str, dict[str, Any]]:
    """Detector spec as {registry name: init kwargs}; a YAML file `{detectors: {...}}` has relative paths resolved."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or not isinstance(data.get("detectors"), dict):
            raise InputError(f"{path}: expected a mapping 'detectors: {{name: {{init args}}}}'")
        return {name: _resolve_paths(dict(cfg or {}), path.parent) for name, cfg in data["detectors"].items()}
    return {name: dict(cfg or {}) for name, cfg in spec.items()}


def _resolve_paths(config: dict[str, Any], base: Path) -> dict[str, Any]:
    for key, value in config.items():
        is_path_key = key in PATH_KEYS or key.endswith(PATH_SUFFIXES)
        if is_path_key and isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
            config[key] = str((base / value).resolve())
    return config


def _looks_like_path(value: str) -> bool:
    """'ckpt/vgg.pt' or 'vgg.pt' are paths; keywords such as 'random' or 'imagenet' are not."""
    return "/" in value or os.sep in value or bool(Path(value).suffix)


def build_detectors(spec: Mapping[str, Mapping[str, Any] | None] | str | Path,
                    device: str | None = None) -> dict[str, Detector]:
    """Detectors by registry name from a spec mapping or YAML file (weights load lazily, on first use)."""
    detectors = {}
    for name, config in load_spec(spec).items():
        if device is not None:
            config = {**config, "device": device}
        detectors[name] = create_detector(name, **config)
    return detectors


# --- faces --------------------------------------------------------------------------------------
def load_faces(manifest: Manifest, input_kind: InputKind, rows: Sequence[int] | None = None,
               clip_column: str = "clip") -> tuple[list[np.ndarray | None], list[str | None]]:
    """Face crops (image) or clips [T,H,W,3] for manifest rows, with None + the reason where one fails.

    A reason reads '<code>: <detail naming the file>' (codes in mcam.faces: truncated_image, face_too_small,
    clip_bad_range, ...). Images: the manifest bbox when present, else the Haar face finder. Clips come from
    `clip_column`, else the `frames` column, else the row's still face via `still_to_clip` (clips are taken to
    be face crops already, as `mcam synth` and `mcam prepare` write them).
    """
    table = manifest.table
    rows = range(len(table)) if rows is None else rows
    cropper = FaceCropper()
    faces: list[np.ndarray | None] = []
    errors: list[str | None] = []
    for row in rows:
        record = table.iloc[row]
        try:
            if input_kind == InputKind.CLIP:
                faces.append(_load_row_clip(manifest, record, clip_column, cropper))
            else:
                faces.append(_load_row_image(manifest, record, cropper))
            errors.append(None)
        except FaceError as err:
            faces.append(None)
            errors.append(_reason(err.reason, str(err)))
    return faces, errors


def _load_row_image(manifest: Manifest, record: Any, cropper: FaceCropper) -> np.ndarray:
    path = manifest.resolve(record["path"])
    return cropper(read_rgb(path), record.get("bbox"), source=str(path))


def _load_row_clip(manifest: Manifest, record: Any, clip_column: str, cropper: FaceCropper) -> np.ndarray:
    for column in (clip_column, "frames"):
        value = record.get(column)
        if isinstance(value, str) and value.strip():
            return load_clip(manifest.resolve(value))
    return still_to_clip(_load_row_image(manifest, record, cropper), STILL_CLIP_FRAMES)


def _reason(code: str, detail: str) -> str:
    """A row's reject reason as held during extraction (one string per row, as partial files store it)."""
    return f"{code}: {detail}"


def _reason_kind(reason: str) -> str:
    """The reason code of a reject reason, for per-reason counts and the rejects.csv `reason` column."""
    return reason.split(": ", 1)[0]


# --- extraction ---------------------------------------------------------------------------------
def default_clip_column(manifest: Manifest) -> str:
    """The clips that clip detectors (micro-expressions) read: `micro_clip` where the manifest has it, else `clip`.

    Pre-training and extraction both use this, so a micro detector sees the same kind of clip in both.
    """
    return "micro_clip" if "micro_clip" in manifest.table.columns else "clip"


def extract_cues(manifest: Manifest, detectors: Mapping[str, Detector], cache_dir: str | Path,
                 batch_size: int = 64, progress: bool = True, clip_column: str | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY, threads: int = 1) -> dict[str, CueTable]:
    """Cue tables keyed by the names in `detectors`, read from the CueStore or extracted (and cached).

    Extraction is batched on each detector's own device, saves finished rows every
    `checkpoint_every` batches (and on interruption) and resumes from them, with exactly `threads` CPU
    threads; one process extracts an entry at a time (others wait, then read it). Rows whose face
    cannot be loaded are invalid; their reasons go to the `.rejects.csv` beside the cached file.
    """
    store = CueStore(cache_dir)
    clip_column = clip_column or default_clip_column(manifest)
    tables = {}
    for name, detector in detectors.items():
        start = time.perf_counter()
        fingerprint = detector.fingerprint()
        if detector.input_kind == InputKind.CLIP:  # which clips were read is part of the cue's identity
            fingerprint = hashlib.sha256(f"{fingerprint}:{clip_column}".encode()).hexdigest()[:16]
        table = store.get(manifest, detector, fingerprint)
        if table is None:
            with store.lock(manifest, detector, fingerprint), training_threads(threads):
                table = store.get(manifest, detector, fingerprint)  # another process may have made it meanwhile
                if table is None:
                    table = _extract_one(store, manifest, detector, fingerprint, batch_size, progress, clip_column,
                                         checkpoint_every)
                    log.info("%s: extracted %d rows in %.1f s -> %s", name, len(table.valid),
                             time.perf_counter() - start, store.path(manifest, detector, fingerprint))
        else:
            log.info("%s: cached cues %s (%d/%d valid, %.1f s)", name, store.path(manifest, detector, fingerprint),
                     int(table.valid.sum()), len(table.valid), time.perf_counter() - start)
        tables[name] = table
    return tables


def _extract_one(store: CueStore, manifest: Manifest, detector: Detector, fingerprint: str, batch_size: int,
                 progress: bool, clip_column: str, checkpoint_every: int) -> CueTable:
    import torch
    from tqdm.auto import tqdm

    n, dim = len(manifest), detector.dim
    values = np.zeros((n, dim), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    partial = store.load_partial(manifest, detector, fingerprint)
    done = 0
    if partial is not None:
        done = partial.done
        values[:done], valid[:done], reasons[:done] = partial.values, partial.valid, partial.reasons
        log.info("%s: resuming after %d/%d rows from %s", detector.name, done, n,
                 store.partial_path(manifest, detector, fingerprint))
    sample_ids = manifest.table["sample_id"].to_numpy(dtype=str)
    batches = range(done, n, batch_size)
    try:
        with torch.no_grad():
            for count, lo in enumerate(tqdm(batches, desc=detector.name, unit="batch", disable=not progress), 1):
                hi = min(lo + batch_size, n)
                faces, errors = load_faces(manifest, detector.input_kind, range(lo, hi), clip_column)
                keep = [i for i, face in enumerate(faces) if face is not None]
                for i, error in enumerate(errors):
                    if error is not None:
                        reasons[lo + i] = error
                if keep:
                    kept_faces = [faces[i] for i in keep]
                    batch = FaceBatch([str(sample_ids[lo + i]) for i in keep],
                                      images=kept_faces if detector.input_kind == InputKind.IMAGE else [],
                                      clips=kept_faces if detector.input_kind == InputKind.CLIP else [])
                    cues, ok = detector.extract(batch)
                    rows = np.asarray(keep) + lo
                    values[rows], valid[rows] = cues, ok
                    reasons[rows[~ok]] = _reason(NO_CUE, f"{detector.name}: no valid cue for this face")
                done = hi
                if count % checkpoint_every == 0 and done < n:
                    _checkpoint(store, manifest, detector, fingerprint, done, values, valid, reasons)
    except BaseException:
        if done:
            _checkpoint(store, manifest, detector, fingerprint, done, values, valid, reasons)
            log.warning("%s: interrupted after %d/%d rows; the next run resumes from %s", detector.name, done, n,
                        store.partial_path(manifest, detector, fingerprint))
        raise
    table = CueTable(detector.name, fingerprint, sample_ids, detector.labels, values, valid)
    _write_rejects(store.rejects_path(manifest, detector, fingerprint), manifest, reasons, detector.name)
    store.put(manifest, detector, table, fingerprint)  # last: its presence means the entry is complete
    return table


def _checkpoint(store: CueStore, manifest: Manifest, detector: Detector, fingerprint: str, done: int,
                values: np.ndarray, valid: np.ndarray, reasons: np.ndarray) -> None:
    store.save_partial(manifest, detector, fingerprint,
                       PartialCues(done, values[:done], valid[:done], reasons[:done].astype(str)))


def _write_rejects(path: Path, manifest: Manifest, reasons: np.ndarray, name: str) -> None:
    rejected = [i for i, reason in enumerate(reasons) if reason]
    with atomic_output(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "path", "reason", "detail"])
        for i in rejected:
            code, _, detail = reasons[i].partition(": ")
            writer.writerow([manifest.table["sample_id"].iloc[i], manifest.table["path"].iloc[i], code, detail])
    if rejected:
        counts = Counter(_reason_kind(reasons[i]) for i in rejected)
        summary = "; ".join(f"{count} x {kind}" for kind, count in counts.most_common())
        log.warning("%s: %d/%d rows invalid (%s); list in %s", name, len(rejected), len(reasons), summary, path)


# --- training sets --------------------------------------------------------------------------------
def training_set(manifest: Manifest, input_kind: InputKind, clip_column: str = "clip",
                 label_column: str = "label") -> TrainingSet:
    """Faces, canonical labels, subjects and ground-truth AUs (where present) of a manifest for `Detector.fit`.

    Rows whose face cannot be loaded are left out (logged). `label_column` must hold canonical
    labels: micro heads map them through their head map (micro3/micro4), which matches the
    synthetic `micro_label` because a sample's micro clip shows the sample's own emotion.
    """
    table = manifest.table
    labels = table[label_column].astype(str)
    unknown = sorted(set(labels) - set(CANONICAL))
    if unknown:
        raise ValueError(f"column {label_column!r} holds non-canonical labels {unknown}; expected {list(CANONICAL)}")
    faces, errors = load_faces(manifest, input_kind, clip_column=clip_column)
    keep = [i for i, face in enumerate(faces) if face is not None]
    if len(keep) < len(faces):
        counts = Counter(_reason_kind(e) for e in errors if e is not None)
        log.warning("training set: %d/%d rows left out (%s)", len(faces) - len(keep), len(faces),
                    "; ".join(f"{c} x {k}" for k, c in counts.items()))
    au_names = manifest.au_columns or None
    aus = table[au_names].to_numpy(dtype=np.float32)[keep] if au_names else None
    return TrainingSet(faces=[faces[i] for i in keep], labels=[labels.iloc[i] for i in keep],
                       subjects=[str(table["subject"].iloc[i]) for i in keep], aus=aus, au_names=au_names,
                       sample_ids=[str(table["sample_id"].iloc[i]) for i in keep])
