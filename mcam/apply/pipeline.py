"""Frames -> faces -> detectors -> fusion -> rows: the streaming core of `mcam analyze`.

Faces are found on every frame (or every k-th, `every`, tracked in between by re-aligning each track's last box)
and cut the way `mcam prepare` cuts training faces (`mcam.faces.face_cut`). The faces of `batch_frames`
consecutive frames go through each detector as one batch, then through the fusion; clip detectors (micro
expressions) read each tracked face's last `frames` crops (a sliding window; a photo's face becomes a still clip,
as in extraction). Rows come out per batch: nothing grows with the video's length but the track ids.
"""
from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import cv2
import numpy as np
import pandas as pd

from mcam.apply.bundle import FaceSettings, FusionModel
from mcam.apply.media import End, Frame, Item, Reject, Source
from mcam.apply.tracking import Tracker
from mcam.cues.extract import STILL_CLIP_FRAMES
from mcam.detector import FaceBatch, InputKind, still_to_clip
from mcam.faces import Face, FaceCut, FaceError, face_cut, make_finder
from mcam.fusion.predictions import PREDICTED, prob_column, weight_column

NO_FACE = "no_face"  # row reason: a frame on which no face was found
NO_CUE = "no_cue"  # row reason: a face on which no detector gave a valid cue
SUMMARY_MAX_DIM = 64  # cues of at most this many values (probabilities, AU intensities) are written per row
METADATA: tuple[str, ...] = ("input", "frame", "time", "face_id", "x", "y", "width", "height", "face_score",
                             "aligned", "reason")
DEFAULT_BATCH_FRAMES = 8


@dataclass
class _Face:
    """A face cut from a frame, waiting for its batch: where it is, its crop and (clip detectors) its clip."""

    frame: Frame
    face_id: int
    box: tuple[int, int, int, int]
    score: float | None
    aligned: str
    crop: np.ndarray
    clip: np.ndarray | None


@dataclass
class Batch:
    """What one batch of frames gave: its rows (in frame order), its frames (for annotation), its rejects and the
    sources whose last frame it holds."""

    rows: pd.DataFrame
    frames: list[Frame]
    rejects: list[Reject]
    ended: list[Source] = field(default_factory=list)


@dataclass
class Analyzer:
    """Applies a loaded model to a stream of frames (see the module docstring); `timings` holds each stage's
    seconds (decode: the background thread's, summed per frame; find; align; one per detector; fusion)."""

    model: FusionModel
    faces: FaceSettings | None = None  # None: the bundle's
    batch_frames: int = DEFAULT_BATCH_FRAMES
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames_seen: int = 0

    def __post_init__(self) -> None:
        self.settings = self.faces or self.model.spec.faces
        self.finder = make_finder(self.settings.finder, self.model.device)
        clip_detectors = [d for d in self.model.detectors.values() if d.input_kind == InputKind.CLIP]
        self.window = max([int(d.config.get("frames") or STILL_CLIP_FRAMES) for d in clip_detectors], default=0)
        self.summaries = {cue: d.labels for cue, d in self.model.detectors.items() if d.dim <= SUMMARY_MAX_DIM}
        self._trackers: dict[Source, Tracker] = {}
        self._windows: dict[tuple[Source, int], deque] = {}

    @property
    def columns(self) -> list[str]:
        """Column order of every row: metadata, pred, probabilities, cue weights, cue summaries."""
        return [*METADATA, PREDICTED, *map(prob_column, self.model.class_names), *map(weight_column, self.model.cues),
                *[label for labels in self.summaries.values() for label in labels]]

    def run(self, items: Iterable[Item]) -> Iterator[Batch]:
        """Batches of rows as the frames of `items` are analysed."""
        frames: list[Frame] = []
        faces: list[list[_Face]] = []
        rejects: list[Reject] = []
        for item in items:
            if isinstance(item, Frame):
                self.frames_seen += 1
                self.timings["decode"] += item.decode_seconds
                frames.append(item)
                faces.append(self._cut(item))
                if len(frames) >= self.batch_frames:
                    yield self._rows(frames, faces, rejects)
                    frames, faces, rejects = [], [], []
            elif isinstance(item, Reject):
                rejects.append(item)
            elif isinstance(item, End) and item.source.is_video:  # its tracks and windows end; its rows go out now
                self._trackers.pop(item.source, None)
                for key in [k for k in self._windows if k[0] == item.source]:
                    del self._windows[key]
                batch = self._rows(frames, faces, rejects)
                batch.ended.append(item.source)
                yield batch
                frames, faces, rejects = [], [], []
            # a photo's End changes nothing: the faces of consecutive photos share batches
        if frames or rejects:
            yield self._rows(frames, faces, rejects)

    # --- faces ---------------------------------------------------------------------------------------------------
    def _cut(self, frame: Frame) -> list[_Face]:
        """The faces of a frame, cut and (videos) tracked."""
        s = self.settings
        if self.finder is None:  # the image is a face crop already, read as extraction reads a prepared dataset's
            height, width = frame.image.shape[:2]
            return [self._face(frame, 0, (0, 0, width, height), None, "none", frame.image, frame.image)]
        tracker = self._trackers.setdefault(frame.source, Tracker())
        start = time.perf_counter()
        if frame.find:
            found = [f for f in self.finder(frame.image) if f.score is None or f.score >= s.min_score]
            ids = tracker.assign([f.box for f in found], frame.index) if frame.source.is_video else list(range(len(found)))
        else:  # between face findings: each live track's last box, re-aligned on this frame
            tracked = tracker.current(frame.index)
            found, ids = [Face(box) for _, box in tracked], [t for t, _ in tracked]
        self.timings["find"] += time.perf_counter() - start
        start = time.perf_counter()
        cut = []
        for face, face_id in zip(found, ids):
            try:
                how = face_cut(frame.image, face, s.margin, frame.source.name, s.align)
            except FaceError:  # a box mostly outside the frame or under the minimum face size
                continue
            image = how(frame.image)
            box = cut_box(how, s.margin)
            if frame.source.is_video:
                tracker.tracks[face_id] = (box, frame.index)
            cut.append(self._face(frame, face_id, box, face.score, how.aligned, _resized(image, s.size), image))
        self.timings["align"] += time.perf_counter() - start
        return cut

    def _face(self, frame: Frame, face_id: int, box: tuple[int, int, int, int], score: float | None, aligned: str,
              crop: np.ndarray, full: np.ndarray) -> _Face:
        """A cut face with its clip: the track's sliding window of crops in a video, a still clip of a photo."""
        clip = None
        if self.window:
            if frame.source.is_video:
                window = self._windows.setdefault((frame.source, face_id), deque(maxlen=self.window))
                window.append(_resized(full, self.settings.clip_size))
                clip = np.stack(window)
            else:  # as extraction makes a clip of a row without one (mcam.cues.extract)
                clip = still_to_clip(crop, STILL_CLIP_FRAMES)
        return _Face(frame, face_id, box, score, aligned, crop, clip)

    # --- cues, fusion, rows --------------------------------------------------------------------------------------
    def _rows(self, frames: list[Frame], faces: list[list[_Face]], rejects: list[Reject]) -> Batch:
        flat = [f for per_frame in faces for f in per_frame]
        n, model = len(flat), self.model
        values: dict[str, np.ndarray] = {}
        valid = np.zeros((n, len(model.cues)), dtype=bool)
        ids = [f"{f.frame.source.name}#{f.frame.index}/{f.face_id}" for f in flat]
        for c, (cue, detector) in enumerate(model.detectors.items()):
            start = time.perf_counter()
            if n:
                clips = detector.input_kind == InputKind.CLIP
                values[cue], valid[:, c] = detector.extract(FaceBatch(ids, images=[] if clips else [f.crop for f in flat],
                                                                      clips=[f.clip for f in flat] if clips else []))
            self.timings[cue] += time.perf_counter() - start
        start = time.perf_counter()
        if n:
            probs, weights = model.fuse(values, valid)
        else:
            probs, weights = np.zeros((0, len(model.class_names))), np.zeros((0, len(model.cues)))
        table = self._table(frames, faces, values, valid, probs, weights)
        self.timings["fusion"] += time.perf_counter() - start
        return Batch(table, frames, rejects)

    def _table(self, frames: list[Frame], faces: list[list[_Face]], values: dict[str, np.ndarray], valid: np.ndarray,
               probs: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
        """One row per face per frame, a `no_face` row per frame without one, in frame order."""
        meta: dict[str, list] = {name: [] for name in METADATA}
        source_row: list[int] = []  # per row: its face's index in the batch, -1 for a frame without a face
        k = 0
        for frame, found in zip(frames, faces):
            for face in found or [None]:
                meta["input"].append(frame.source.name)
                meta["frame"].append(frame.index)
                meta["time"].append(np.nan if frame.time is None else frame.time)
                if face is None:
                    for name in ("face_id", "x", "y", "width", "height", "face_score"):
                        meta[name].append(np.nan)
                    meta["aligned"].append("")
                    meta["reason"].append(NO_FACE)
                    source_row.append(-1)
                    continue
                meta["face_id"].append(face.face_id)
                for name, v in zip(("x", "y", "width", "height"), face.box):
                    meta[name].append(v)
                meta["face_score"].append(np.nan if face.score is None else face.score)
                meta["aligned"].append(face.aligned)
                meta["reason"].append("" if valid[k].any() else NO_CUE)
                source_row.append(k)
                k += 1
        rows = np.asarray(source_row, dtype=int)
        ok = np.array([r == "" for r in meta["reason"]], dtype=bool)  # rows with a fused prediction
        at = np.where(rows >= 0, rows, len(probs))  # rows without a face read an appended row of NaN

        def padded(array: np.ndarray) -> np.ndarray:
            return np.vstack([np.asarray(array, dtype=float), np.full((1, array.shape[1]), np.nan)])[at]

        frame_data: dict[str, object] = {name: meta[name] for name in METADATA}
        fused, cue_weights = padded(probs), padded(weights)
        predicted = np.full(len(rows), None, dtype=object)
        if ok.any():
            predicted[ok] = np.asarray(self.model.class_names, dtype=object)[fused[ok].argmax(1)]
        frame_data[PREDICTED] = predicted
        for j, name in enumerate(self.model.class_names):
            frame_data[prob_column(name)] = np.where(ok, fused[:, j], np.nan)
        for c, cue in enumerate(self.model.cues):
            frame_data[weight_column(cue)] = np.where(ok, cue_weights[:, c], np.nan)
        for c, cue in enumerate(self.model.cues):
            if cue in self.summaries:
                own = padded(values[cue]) if cue in values else np.full((len(rows), len(self.summaries[cue])), np.nan)
                has = np.append(valid[:, c], False)[at]
                for j, label in enumerate(self.summaries[cue]):
                    frame_data[label] = np.where(has, own[:, j], np.nan)
        table = pd.DataFrame(frame_data, columns=self.columns)
        return table.astype({"face_id": "Int64", "frame": "int64"})


def cut_box(how: FaceCut, margin: float) -> tuple[int, int, int, int]:
    """The face's box in the image (x, y, width, height) of a cut: the crop's inner square (without its margin)
    mapped back through the cut, bounded (a rolled face's box is the bound of its turned square)."""
    pad = how.side * margin / (1 + 2 * margin)
    corners = np.array([[pad, pad], [how.side - pad, pad], [pad, how.side - pad], [how.side - pad, how.side - pad]])
    inverse = cv2.invertAffineTransform(how.matrix)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """A crop resized to size x size as `mcam prepare` resizes faces (area interpolation); as it is when it fits."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)

