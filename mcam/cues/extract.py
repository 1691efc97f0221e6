"""Batched, cached cue extraction over a manifest, and training sets for detector `fit`."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from mcam.cues.store import CueStore, PartialCues
from mcam.cues.table import CueTable
from mcam.detector import Detector, FaceBatch, InputKind, TrainingSet, still_to_clip
from mcam.determinism import in_order, training_threads
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
DEFAULT_LOAD_BATCH = 64  # faces loaded per step for detectors that set no batch size of their own
PREFETCH_BATCHES = 2  # batches each loading process keeps ready (extract_cues `workers`)
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
class FaceRows(Dataset):
    """Manifest rows of one input kind as items (row, face or None, reject reason or None): the per-row loader.

    Images are face crops: the manifest bbox when present, else the Haar face finder. Clips come from
    `clip_column`, else the `frames` column, else the row's still face via `still_to_clip` (clips are taken to
    be face crops already, as `mcam synth` and `mcam prepare` write them). A reason reads '<code>: <detail
    naming the file>' (codes in mcam.faces: truncated_image, face_too_small, clip_bad_range, ...).
    """

    def __init__(self, manifest: Manifest, input_kind: InputKind, rows: Sequence[int],
                 clip_column: str = "clip") -> None:
        self.manifest = manifest
        self.input_kind = input_kind
        self.rows = rows
        self.clip_column = clip_column
        self.cropper = FaceCropper()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        row = self.rows[index]
        record = self.manifest.table.iloc[row]
        try:
            if self.input_kind == InputKind.CLIP:
                return row, _load_row_clip(self.manifest, record, self.clip_column, self.cropper), None
            return row, _load_row_image(self.manifest, record, self.cropper), None
        except FaceError as err:
            return row, None, _reason(err.reason, str(err))


def load_faces(manifest: Manifest, input_kind: InputKind, rows: Sequence[int] | None = None,
               clip_column: str = "clip") -> tuple[list[np.ndarray | None], list[str | None]]:
    """Face crops (image) or clips [T,H,W,3] for manifest rows, with None + the reason where one fails (FaceRows)."""
    loaded = FaceRows(manifest, input_kind, range(len(manifest)) if rows is None else rows, clip_column)
    items = [loaded[i] for i in range(len(loaded))]
    return [face for _, face, _ in items], [reason for _, _, reason in items]


def face_loader(manifest: Manifest, input_kind: InputKind, rows: Sequence[int], clip_column: str, batch_size: int,
                workers: int = 0) -> DataLoader:
    """Batches of FaceRows items in row order, each a list (faces differ in shape), loaded by `workers` processes
    that keep PREFETCH_BATCHES batches each ready (0: loaded in this process when asked for)."""
    return in_order(FaceRows(manifest, input_kind, rows, clip_column), batch_size,
                    num_workers=workers, collate_fn=list, worker_init_fn=_init_worker,
                    # spawned, not forked: a fork copies locks other threads of this process hold (Lightning's,
                    # OpenMP's, logging's) and the child waits on them forever (seen in the test run)
                    multiprocessing_context="spawn" if workers else None,
                    **({"prefetch_factor": PREFETCH_BATCHES} if workers else {}))


def _init_worker(worker_id: int) -> None:
    """A loading process decodes and crops with one thread: the cores are the detectors' (`threads`)."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


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
                 batch_size: int | None = None, progress: bool = True, clip_column: str | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY, threads: int = 1, workers: int = 0) -> dict[str, CueTable]:
    """Cue tables keyed by the names in `detectors` (in its order), read from the CueStore or extracted (and cached).

    Extraction decodes and crops each face once per input kind: one pass over the manifest feeds every image
    detector still missing from the store, one every clip detector (all reading `clip_column`). `workers`
    processes load the faces ahead of the detectors (0: this process loads each batch when it is needed).
    `batch_size` faces are loaded per step (None: the largest `batch_size` among the pass's detectors, so no
    detector's own batch is capped by the loading step; cues do not depend on either).
    Each detector extracts in batches on its own device, saves its finished rows every `checkpoint_every`
    batches (and on interruption) and resumes from them, with exactly `threads` CPU threads; one process
    extracts an entry at a time (others wait, then read it). Cached entries load no model. Rows whose face
    cannot be loaded are invalid; their reasons go to the `.rejects.csv` beside the cached file.
    """
    store = CueStore(cache_dir)
    clip_column = clip_column or default_clip_column(manifest)
    tables: dict[str, CueTable] = {}
    missing: dict[InputKind, dict[str, tuple[Detector, str]]] = {}
    for name, detector in detectors.items():
        start = time.perf_counter()
        fingerprint = entry_fingerprint(detector, clip_column)
        table = store.get(manifest, detector, fingerprint)
        if table is None:
            missing.setdefault(detector.input_kind, {})[name] = (detector, fingerprint)
        else:
            log.info("%s: cached cues %s (%d/%d valid, %.1f s)", name, store.path(manifest, detector, fingerprint),
                     int(table.valid.sum()), len(table.valid), time.perf_counter() - start)
            tables[name] = table
    for input_kind, group in missing.items():
        with training_threads(threads):
            tables.update(_extract_group(store, manifest, input_kind, group, batch_size, progress, clip_column,
                                         checkpoint_every, workers))
    return {name: tables[name] for name in detectors}


def _largest_batch(detectors: Iterable[Detector]) -> int:
    """The largest of the detectors' own batch sizes (DEFAULT_LOAD_BATCH for detectors without one)."""
    return max(int(detector.config.get("batch_size") or DEFAULT_LOAD_BATCH) for detector in detectors)


def entry_fingerprint(detector: Detector, clip_column: str) -> str:
    """The detector's fingerprint, for clip detectors with the clips read (part of the cue's identity)."""
    fingerprint = detector.fingerprint()
    if detector.input_kind == InputKind.CLIP:
        fingerprint = hashlib.sha256(f"{fingerprint}:{clip_column}".encode()).hexdigest()[:16]
    return fingerprint


class _Extraction:
    """One detector's cue table being filled: rows [0, done) are finished (a resumed partial file's included)."""

    def __init__(self, store: CueStore, manifest: Manifest, name: str, detector: Detector, fingerprint: str) -> None:
        self.store = store
        self.manifest = manifest
        self.name = name
        self.detector = detector
        self.fingerprint = fingerprint
        n = len(manifest)
        self.values = np.zeros((n, detector.dim), dtype=np.float32)
        self.valid = np.zeros(n, dtype=bool)
        self.reasons = np.full(n, "", dtype=object)
        self.done = 0
        partial = store.load_partial(manifest, detector, fingerprint)
        if partial is not None:
            done = self.done = partial.done
            self.values[:done], self.valid[:done], self.reasons[:done] = partial.values, partial.valid, partial.reasons
            log.info("%s: resuming after %d/%d rows from %s", name, done, n, self.partial_path)

    @property
    def partial_path(self) -> Path:
        return self.store.partial_path(self.manifest, self.detector, self.fingerprint)

    def add(self, items: list[tuple[int, np.ndarray | None, str | None]], sample_ids: np.ndarray) -> None:
        """Cues of a batch of consecutive FaceRows items; rows this extraction already has are skipped."""
        items = [item for item in items if item[0] >= self.done]
        if not items:
            return
        for row, _, reason in items:
            if reason is not None:
                self.reasons[row] = reason
        kept = [(row, face) for row, face, _ in items if face is not None]
        if kept:
            rows = np.array([row for row, _ in kept])
            faces = [face for _, face in kept]
            clips = self.detector.input_kind == InputKind.CLIP
            cues, ok = self.detector.extract(FaceBatch([str(sample_ids[row]) for row in rows],
                                                       images=[] if clips else faces, clips=faces if clips else []))
            self.values[rows], self.valid[rows] = cues, ok
            self.reasons[rows[~ok]] = _reason(NO_CUE, f"{self.detector.name}: no valid cue for this face")
        self.done = items[-1][0] + 1

    def checkpoint(self) -> None:
        """Save the finished rows to the partial file the next run resumes from."""
        self.store.save_partial(self.manifest, self.detector, self.fingerprint,
                                PartialCues(self.done, self.values[:self.done], self.valid[:self.done],
                                            self.reasons[:self.done].astype(str)))

    def finish(self, sample_ids: np.ndarray) -> CueTable:
        """The complete table, stored with its rejects list (which drops the partial file)."""
        table = CueTable(self.detector.name, self.fingerprint, sample_ids, self.detector.labels, self.values,
                         self.valid)
        _write_rejects(self.store.rejects_path(self.manifest, self.detector, self.fingerprint), self.manifest,
                       self.reasons, self.name)
        self.store.put(self.manifest, self.detector, table, self.fingerprint)  # last: its presence means complete
        return table


def _extract_group(store: CueStore, manifest: Manifest, input_kind: InputKind,
                   group: Mapping[str, tuple[Detector, str]], batch_size: int | None, progress: bool, clip_column: str,
                   checkpoint_every: int, workers: int) -> dict[str, CueTable]:
    """Tables of detectors of one input kind (name -> (detector, fingerprint)) from one pass over the faces.

    Holds every entry's lock, taken in the order of their paths (the same in every process: no deadlock).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tables: dict[str, CueTable] = {}
    with contextlib.ExitStack() as locks:
        for detector, fingerprint in sorted(group.values(), key=lambda entry: str(store.path(manifest, *entry))):
            locks.enter_context(store.lock(manifest, detector, fingerprint))
        extractions = []
        for name, (detector, fingerprint) in group.items():
            table = store.get(manifest, detector, fingerprint)  # another process may have made it meanwhile
            if table is None:
                extractions.append(_Extraction(store, manifest, name, detector, fingerprint))
            else:
                tables[name] = table
        if not extractions:
            return tables
        n = len(manifest)
        sample_ids = manifest.table["sample_id"].to_numpy(dtype=str)
        loader = face_loader(manifest, input_kind, range(min(e.done for e in extractions), n), clip_column,
                             batch_size or _largest_batch(e.detector for e in extractions), workers)
        batches = tqdm(loader, desc="+".join(e.name for e in extractions), unit="batch", disable=not progress)
        try:
            with torch.no_grad():
                for count, items in enumerate(batches, 1):
                    for extraction in extractions:
                        extraction.add(items, sample_ids)
                    if count % checkpoint_every == 0:
                        for extraction in extractions:
                            if extraction.done < n:
                                extraction.checkpoint()
        except BaseException:
            for extraction in extractions:
                if extraction.done:
                    extraction.checkpoint()
                    log.warning("%s: interrupted after %d/%d rows; the next run resumes from %s", extraction.name,
                                extraction.done, n, extraction.partial_path)
            raise
        for extraction in extractions:
            tables[extraction.name] = extraction.finish(sample_ids)
            log.info("%s: extracted %d rows in %.1f s -> %s", extraction.name, n, time.perf_counter() - start,
                     store.path(manifest, extraction.detector, extraction.fingerprint))
    return tables


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
    synthetic `micro_label` because a sample's micro clip shows the sample's own emotion. An AU corpus
    (`Manifest.labelled` False) gives '' labels: its rows train AU regressors only.
    """
    table = manifest.table
    labels = table[label_column].astype(str)
    unknown = sorted(set(labels) - set(CANONICAL) - ({""} if label_column == "label" else set()))
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
