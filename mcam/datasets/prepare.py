"""Turn adapter records into a dataset folder: face crops, clip frame folders, manifest.csv and rejects.csv."""
from __future__ import annotations

import itertools
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from mcam.datasets.base import MISSING_FRAME, NO_FACE, UNREADABLE, Adapter, Record, Reject
from mcam.datasets.locate import Face, HaarFinder, MTCNNFinder, cut, locate, make_finder, pct_box, square
from mcam.datasets.video import VideoError, frame_count, sample_indices, stream_frames
from mcam.faces import FaceError, crop, read_rgb
from mcam.io import atomic_output
from mcam.labels import head_map
from mcam.manifest import save_manifest
from mcam.splits import assign_splits

AUGMENTATIONS: tuple[str, ...] = ("rotate", "noise", "mono")
REJECT_COLUMNS: tuple[str, ...] = ("source", "reason", "detail")
DUPLICATE = "duplicate_sample"


@dataclass(frozen=True)
class PrepareOptions:
    """How records become samples. Region/group are written into every row."""

    region: str
    group: str | None = None
    detector: str = "haar"
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
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; expected some of {AUGMENTATIONS}")


@dataclass
class Summary:
    """What `prepare` wrote: sample counts and rejects per reason."""

    samples: int = 0
    augmented: int = 0
    rejects: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        text = [f"samples: {self.samples} (+{self.augmented} augmented)", f"rejected: {sum(self.rejects.values())}"]
        text += [f"  {reason}: {count}" for reason, count in sorted(self.rejects.items())]
        return text


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


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
    save_manifest(_split(pd.DataFrame(rows), options), out / "manifest.csv")
    summary.rejects.update(r.reason for r in rejects)
    return summary


def _unique(items: Iterable[Record | Reject], worker: "_Worker") -> Iterator[Record | Reject]:
    """Records whose sample_id came before become rejects (before anything is written for them)."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Record):
            if item.sample_id in seen:
                item = Reject(worker.origin(item), DUPLICATE, f"sample_id {item.sample_id} seen before")
            else:
                seen.add(item.sample_id)
        yield item


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
                 finder: HaarFinder | MTCNNFinder | None) -> None:
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
            image = record.image if record.image is not None else self._read(record.source)
            face = self._face(image, record)
            clip = self._clip(record) if record.frames else None
            return record, self._image_rows(record, face, clip)
        except _Failed as failed:
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
                    try:
                        yield record, self._image_rows(record, self._face(frame, record), None)
                    except _Failed as failed:
                        yield Reject(self.origin(record), failed.reason, f"{video.name} frame {index}: {failed}")
        except VideoError as err:
            for record in records:
                yield Reject(self.origin(record), UNREADABLE, str(err))

    def _read(self, path: str) -> np.ndarray:
        try:
            return read_rgb(path)
        except FaceError as err:
            raise _Failed(UNREADABLE, str(err)) from err

    def _face(self, image: np.ndarray, record: Record) -> np.ndarray:
        """The face crop of an image, resized (and grayscaled) per the options."""
        if record.cropped or (self.finder is None and record.bbox is None and record.bbox_pct is None):
            face = image
        elif record.bbox is not None or record.bbox_pct is not None:
            box = record.bbox if record.bbox is not None else pct_box(record.bbox_pct, image.shape)
            face = crop(image, square(box), 0.0)
        else:
            face = cut(image, self._locate(image, record.source), self.options.margin)
        return self._finish(face, self.options.size)

    def _locate(self, image: np.ndarray, source: str) -> Face:
        try:
            return locate(image, self.finder, self.where(source))
        except FaceError as err:
            raise _Failed(NO_FACE, str(err)) from err

    def _finish(self, face: np.ndarray, size: int) -> np.ndarray:
        if face.ndim == 2:
            face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if self.options.grayscale else face

    def _clip(self, record: Record) -> str:
        """Write the record's clip as a folder of cropped frames; its path relative to OUT."""
        frames = self._clip_frames(record)
        if not frames:
            raise _Failed(MISSING_FRAME, f"{self.where(record.source)}: no frames")
        size = self.options.clip_size
        if record.cropped or self.finder is None:
            crops = [self._finish(f, size) for f in frames]
        else:  # one face box (from the first frame) for the whole clip keeps the crop still
            face = self._locate(frames[0], record.source)
            crops = [self._finish(cut(f, face, self.options.margin), size) for f in frames]
        folder = Path("clips") / record.sample_id
        (self.out / folder).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(crops):
            _write(self.out / folder / f"{i:04d}.png", image)
        return folder.as_posix()

    def _clip_frames(self, record: Record) -> list[np.ndarray]:
        if record.frames:
            return [self._read(str(p)) for p in record.frames]
        if record.video_clip:
            wanted = sample_indices(frame_count(record.source), self.options.clip_frames)
            try:
                return [f for _, f in stream_frames(record.source, wanted) if f is not None]
            except VideoError as err:
                raise _Failed(UNREADABLE, str(err)) from err
        return []

    def _image_rows(self, record: Record, face: np.ndarray, clip: str | None) -> list[dict]:
        rows = []
        for name, image in [("", face), *[(a, self._augment(face, a, record.sample_id)) for a in self.options.augment]]:
            sample_id = f"{record.sample_id}-aug-{name}" if name else record.sample_id
            path = f"images/{sample_id}.png"
            _write(self.out / path, image)
            row = self._row(record, path, clip, sample_id)
            if self.options.augment:
                row["augment"] = name
            rows.append(row)
        return rows

    def _row(self, record: Record, path: str, clip: str | None, sample_id: str | None = None) -> dict:
        size = self.options.clip_size if record.kind == "clip" else self.options.size
        row = {"sample_id": sample_id or record.sample_id, "path": path, "label": record.label,
               "region": self.options.region, "dataset": self.adapter.name, "subject": self._subject(record.subject),
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
