"""Turn adapter records into a dataset folder: face crops, clip frame folders, manifest.csv and rejects.csv."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from mcam.datasets.base import MISSING_FRAME, UNREADABLE, Adapter, Record, Reject
from mcam.datasets.video import VideoError, frame_count, sample_indices, stream_frames
from mcam.errors import InputError
from mcam.faces import (ALIGNMENTS, MIN_CLIP_FRAMES, MIN_FACE_SCORE, MIN_FACE_SIZE, Face, FaceError, FaceFinder,
                        check_clip_extent, check_face, crop, face_cut, find_faces, make_finder, pct_box, read_rgb,
                        square)
from mcam.io import atomic_output
from mcam.labels import head_map
from mcam.manifest import save_manifest
from mcam.splits import assign_splits

log = logging.getLogger(__name__)

AUGMENTATIONS: tuple[str, ...] = ("rotate", "noise", "mono")
REJECT_COLUMNS: tuple[str, ...] = ("source", "reason", "detail")
DUPLICATE = "duplicate_sample"


@dataclass(frozen=True)
class PrepareOptions:
    """How records become samples. Region/group are written into every row."""

    region: str
    group: str | None = None
    detector: str = "mediapipe"
    faces: Literal["largest", "all"] = "largest"  # per image found by the detector: its largest face, or one row each
    min_face_score: float = MIN_FACE_SCORE  # faces the detector scores lower are left out (all: low_face_score reject)
    align: str = "mesh"  # found faces cropped by the face mesh (else the eyes), or by the eyes (faces.ALIGNMENTS)
    size: int = 128
    clip_size: int = 64
    clip_frames: int = 16
    grayscale: bool = False
    augment: tuple[str, ...] = ()
    margin: float = 0.15
    rotate_degrees: float = 15.0
    noise_sigma: float = 8.0
    seed: int = 0
    # subject-disjoint fractions for rows the dataset leaves unsplit (as the synthetic data); None: leave empty
    splits: dict[str, float] | None = field(default_factory=lambda: {"val": 0.15, "test": 0.15})

    def __post_init__(self) -> None:
        if self.faces not in ("largest", "all"):
            raise InputError(f"faces: {self.faces!r}; expected 'largest' or 'all'")
        if self.align not in ALIGNMENTS:
            raise InputError(f"align: {self.align!r}; expected one of {ALIGNMENTS}")
        if not 0 <= self.min_face_score <= 1:
            raise InputError(f"min_face_score: {self.min_face_score} is not in [0, 1]")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise InputError(f"augment: unknown augmentations {unknown}; expected some of {AUGMENTATIONS}")
        # crops under the minimum face size would all be rejected later by `mcam extract`
        for name, value, minimum in (("size", self.size, MIN_FACE_SIZE), ("clip_size", self.clip_size, MIN_FACE_SIZE),
                                     ("clip_frames", self.clip_frames, MIN_CLIP_FRAMES)):
            if value < minimum:
                raise InputError(f"{name}: {value} is under the minimum {minimum}")


@dataclass
class Summary:
    """What `prepare` wrote: sample counts and rejects per reason."""

    samples: int = 0
    augmented: int = 0
    rejects: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)  # also logged

    def lines(self) -> list[str]:
        text = [f"samples: {self.samples} (+{self.augmented} augmented)", f"rejected: {sum(self.rejects.values())}"]
        text += [f"  {reason}: {count}" for reason, count in sorted(self.rejects.items())]
        return text


def prepare(adapter: Adapter, out: str | Path, options: PrepareOptions, device: str | None = None,
            progress: bool = True) -> Summary:
    """Run the adapter, crop/resize every record, write OUT/images, OUT/clips, manifest.csv and rejects.csv."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    worker = _Worker(adapter, out, options, make_finder(options.detector, device))
    rows: list[dict] = []
    rejects: list[Reject] = []
    summary = Summary()
    items = tqdm(_resolved(_unique(adapter.scan(), worker), worker), desc=f"prepare {adapter.name}", unit="input",
                 disable=None if progress else True)
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        rows.extend(item[1])
        summary.samples += 1
        summary.augmented += len(item[1]) - 1
    _write_rejects(rejects, out / "rejects.csv")
    if not rows:
        raise RuntimeError(f"{adapter.name}: no sample survived ({len(rejects)} rejects, see {out / 'rejects.csv'})")
    table = _split(pd.DataFrame(rows), options)
    save_manifest(table, out / "manifest.csv")
    summary.rejects.update(r.reason for r in rejects)
    crossing = subjects_across_splits(table)
    if crossing:
        shown = ", ".join(f"{subject} ({'/'.join(splits)})" for subject, splits in list(crossing.items())[:10])
        more = f" and {len(crossing) - 10} more" if len(crossing) > 10 else ""
        message = (f"{len(crossing)} subject(s) in more than one split (the same person in training and evaluation "
                   f"inflates scores): {shown}{more}")
        log.warning("%s: %s", adapter.name, message)
        summary.warnings.append(message)
    return summary


def subjects_across_splits(table: pd.DataFrame) -> dict[str, list[str]]:
    """Subjects whose rows lie in more than one split, with those splits (sorted)."""
    splits = table.dropna(subset=["split"]).groupby("subject")["split"].unique()
    return {str(subject): sorted(map(str, values)) for subject, values in splits.items() if len(values) > 1}


def _unique(items: Iterable[Record | Reject], worker: "_Worker") -> Iterator[Record | Reject]:
    """Sample ids made unique before anything is written for them.

    An id the dataset gave itself, or the same input seen again, is a duplicate (a reject); an id derived from
    a name that coincides with another input's (`a b.png` and `a_b.png`, `x.png` and `x.jpg`) gets a short hash
    of the input's path appended instead.
    """
    seen: dict[str, tuple] = {}
    for item in items:
        if isinstance(item, Record):
            key = _input_key(item, worker)
            if item.sample_id in seen and (item.id_given or seen[item.sample_id] == key):
                item = Reject(worker.origin(item), DUPLICATE, f"sample_id {item.sample_id} seen before")
            else:
                if item.sample_id in seen:
                    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:8]
                    item = dataclasses.replace(item, sample_id=f"{item.sample_id}-{digest}")
                seen[item.sample_id] = key
        yield item


def _input_key(record: Record, worker: "_Worker") -> tuple:
    """What makes an input distinct: its file (relative to the root) and frame; its table row for in-memory pixels."""
    return worker.where(record.source), record.video_frame, record.origin if record.image is not None else None


def _resolved(items: Iterable[Record | Reject], worker: "_Worker") -> Iterator[Reject | tuple[Record, list[dict]]]:
    """Records turned into manifest rows (or rejects); consecutive records of one video share a decode stream."""
    for video, group in itertools.groupby(items, key=lambda i: i.source if isinstance(i, Record) and i.video_frame is not None else None):
        if video is None:
            for item in group:
                yield item if isinstance(item, Reject) else worker.record(item)
        else:
            yield from worker.video_frames(Path(video), list(group))


def _split(table: pd.DataFrame, options: PrepareOptions) -> pd.DataFrame:
    """Fill empty splits subject-disjointly (per region), the way the synthetic data is split."""
    unsplit = table["split"].isna()
    if options.splits and unsplit.any():
        table.loc[unsplit, "split"] = assign_splits(table[unsplit], options.splits, options.seed)
    return table


def _write_rejects(rejects: list[Reject], path: Path) -> None:
    table = pd.DataFrame([(r.source, r.reason, r.detail) for r in rejects], columns=list(REJECT_COLUMNS))
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)


class _Worker:
    """Crops, augments and writes one record at a time."""

    def __init__(self, adapter: Adapter, out: Path, options: PrepareOptions,
                 finder: FaceFinder | None) -> None:
        self.adapter, self.out, self.options, self.finder = adapter, out, options, finder
        self.micro = head_map("micro4")

    def where(self, source: str) -> str:
        """A source path relative to the dataset root where possible."""
        try:
            return str(Path(source).relative_to(self.adapter.root))
        except ValueError:
            return source

    def origin(self, record: Record) -> str:
        """Where a reject of this record points: its origin (file:row) or its source path."""
        return record.origin or self.where(record.source)

    def record(self, record: Record) -> Reject | tuple[Record, list[dict]]:
        try:
            if record.kind == "clip":
                folder = self._clip(record)
                return record, [self._row(record, folder, folder)]
            image = record.image if record.image is not None else read_rgb(record.source)
            faces = self._faces(image, record)
            clip = self._clip(record) if record.frames else None
            return record, [row for face, found in faces for row in self._image_rows(record, face, found, clip)]
        except FaceError as failed:
            return Reject(self.origin(record), failed.reason, str(failed))

    def video_frames(self, video: Path, records: list[Record]) -> Iterator[Reject | tuple[Record, list[dict]]]:
        by_frame: dict[int, list[Record]] = {}
        for record in records:
            by_frame.setdefault(int(record.video_frame), []).append(record)
        try:
            for index, frame in stream_frames(video, by_frame):
                for record in by_frame[index]:
                    if frame is None:
                        yield Reject(self.origin(record), MISSING_FRAME, f"{video.name}: ended before frame {index}")
                        continue
                    try:  # a video frame gives its largest face
                        yield record, self._image_rows(record, *self._faces(frame, record)[0], None)
                    except FaceError as failed:
                        yield Reject(self.origin(record), failed.reason, f"{video.name} frame {index}: {failed}")
        except VideoError as err:
            for record in records:
                yield Reject(self.origin(record), UNREADABLE, str(err))

    def _faces(self, image: np.ndarray, record: Record) -> list[tuple[np.ndarray, dict]]:
        """The face crops of an image, resized (and grayscaled) per the options, each with what the finder said
        (`face_score`, `faces_found`, `face`: which one, `aligned`: how its crop was aligned, see
        `mcam.faces.face_cut`); FaceError when there is none."""
        source = self.where(record.source)
        check_face(image, source, "image")  # an image under the minimum face size holds no usable face
        if record.cropped or (self.finder is None and record.bbox is None and record.bbox_pct is None):
            return [(self._finish(image, self.options.size), {})]
        if record.bbox is not None or record.bbox_pct is not None:
            box = record.bbox if record.bbox is not None else pct_box(record.bbox_pct, image.shape)
            return [(self._finish(crop(image, square(box), 0.0, source), self.options.size), {})]
        faces = self._locate(image, record.source)
        chosen = faces if self.options.faces == "all" else faces[:1]
        rows = []
        for k, face in enumerate(chosen):
            how = face_cut(image, face, self.options.margin, source, self.options.align)
            rows.append((self._finish(how(image), self.options.size),
                         {"face_score": face.score, "faces_found": len(faces), "aligned": how.aligned,
                          "face": "largest" if self.options.faces == "largest" else k}))
        return rows

    def _locate(self, image: np.ndarray, source: str) -> list[Face]:
        return find_faces(image, self.finder, self.where(source), self.options.min_face_score)

    def _finish(self, face: np.ndarray, size: int) -> np.ndarray:
        if face.ndim == 2:
            face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if self.options.grayscale else face

    def _clip(self, record: Record) -> str:
        """Write the record's clip as a folder of cropped frames; its path relative to OUT."""
        frames = self._clip_frames(record)
        source = self.where(record.source)
        if not frames:
            raise FaceError(f"{source}: no frames", MISSING_FRAME)
        check_clip_extent(len(frames), min(f.shape[0] for f in frames), min(f.shape[1] for f in frames), source)
        size = self.options.clip_size
        if record.cropped or self.finder is None:
            crops = [self._finish(f, size) for f in frames]
        else:  # one cut (the first frame's largest face, aligned) for the whole clip keeps the crop still
            how = face_cut(frames[0], self._locate(frames[0], record.source)[0], self.options.margin, source,
                           self.options.align)
            crops = [self._finish(how(f), size) for f in frames]
        folder = Path("clips") / record.sample_id
        (self.out / folder).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(crops):
            _write(self.out / folder / f"{i:04d}.png", image)
        return folder.as_posix()

    def _clip_frames(self, record: Record) -> list[np.ndarray]:
        if record.frames:
            return [read_rgb(str(p)) for p in record.frames]
        if record.video_clip:
            wanted = sample_indices(frame_count(record.source), self.options.clip_frames)
            try:
                return [f for _, f in stream_frames(record.source, wanted) if f is not None]
            except VideoError as err:
                raise FaceError(str(err), UNREADABLE) from err
        return []

    def _image_rows(self, record: Record, face: np.ndarray, found: dict, clip: str | None) -> list[dict]:
        """The rows of one face crop (and its augmented copies). With `faces: all`, face k of an image is sample
        '<id>-f<k>' of subject '<subject>-f<k>' (the people in one photo are not one person)."""
        rows = []
        base = record.sample_id if found.get("face", "largest") == "largest" else f"{record.sample_id}-f{found['face']}"
        for name, image in [("", face), *[(a, self._augment(face, a, base)) for a in self.options.augment]]:
            sample_id = f"{base}-aug-{name}" if name else base
            path = f"images/{sample_id}.png"
            _write(self.out / path, image)
            row = {**self._row(record, path, clip, sample_id), **found}
            if found.get("face", "largest") != "largest":
                row["subject"] = f"{row['subject']}-f{found['face']}"
            if self.options.augment:
                row["augment"] = name
            rows.append(row)
        return rows

    def _row(self, record: Record, path: str, clip: str | None, sample_id: str | None = None) -> dict:
        size = self.options.clip_size if record.kind == "clip" else self.options.size
        row = {"sample_id": sample_id or record.sample_id, "path": path, "label": record.label,
               "region": self.options.region, "dataset": self.adapter.name, "subject": self._subject(record.own_subject()),
               "group": record.group or self.options.group, "split": record.split, "kind": record.kind,
               "bbox": f"0 0 {size} {size}", "clip": clip, "micro_clip": clip,
               "micro_label": self.micro.target(record.label)}
        row.update(record.extra)
        return row

    def _subject(self, subject: str) -> str:
        """Subject ids prefixed by the dataset: unique across datasets, never a bare 'NA' (JAFFE's NA)."""
        prefix = f"{self.adapter.name}-"
        return subject if subject.startswith(prefix) else prefix + subject

    def _augment(self, face: np.ndarray, name: str, sample_id: str) -> np.ndarray:
        rng = np.random.default_rng([self.options.seed, zlib.crc32(sample_id.encode())])
        if name == "rotate":
            angle = float(rng.uniform(-self.options.rotate_degrees, self.options.rotate_degrees))
            matrix = cv2.getRotationMatrix2D((face.shape[1] / 2, face.shape[0] / 2), angle, 1.0)
            return cv2.warpAffine(face, matrix, (face.shape[1], face.shape[0]), borderMode=cv2.BORDER_REPLICATE)
        if name == "noise":
            noisy = face.astype(np.float32) + rng.normal(0.0, self.options.noise_sigma, face.shape)
            return np.clip(noisy, 0, 255).astype(np.uint8)
        gray = face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        return gray  # "mono": monochrome copy


def _write(path: Path, image: np.ndarray) -> None:
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write {path}")
