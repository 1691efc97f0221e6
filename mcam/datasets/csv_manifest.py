"""A generic CSV table of image/video files with labels (any dataset not covered by a dedicated adapter)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mcam.datasets.base import BAD_ROW, MISSING_FILE, NO_LABEL, VIDEO_SUFFIXES, Adapter, Record, Reject, image_files, safe_id
from mcam.errors import InputError
from mcam.faces import parse_bbox
from mcam.manifest import read_table

KNOWN = ("path", "label", "subject", "split", "group", "bbox", "sample_id")


class CSVManifest(Adapter):
    """ROOT/<csv> (default `labels.csv`) with columns path, label and optionally subject, split, group, bbox
    ('x y w h' pixels: crop there instead of detecting) and sample_id; option `columns` renames them
    ({path: file, label: emotion, ...}). Paths are relative to ROOT. Labels go through `label_map` (default
    `folder`: canonical and common English names). Without a subject column each row is its own subject.
    Every other column (demographic attributes, AUxx) is carried into the manifest unchanged.
    A directory path, or a video file, becomes a clip sample.
    """

    name = "csv"
    default_region = "csv"
    defaults = {"label_map": None, "csv": "labels.csv", "columns": {}}

    def scan(self) -> Iterator[Record | Reject]:
        table_path = self.root / self.options["csv"]
        named = tuple(dict(self.options["columns"]).get(c, c) for c in ("path", "label"))
        table = read_table(table_path, named, dtype=str, keep_default_na=False)
        table = table.rename(columns={v: k for k, v in dict(self.options["columns"]).items()})
        for column in ("path", "label"):
            if column not in table.columns:
                raise InputError(f"{table_path}: missing column {column!r} (rename with option columns)")
        extras = [c for c in table.columns if c not in KNOWN]
        for row_no, row in enumerate(table.to_dict("records")):
            source = f"{table_path.name}:row {row_no + 2}"
            if not row["label"].strip():
                yield Reject(source, NO_LABEL, "empty label")
                continue
            label = self.label(row["label"].strip().lower(), source)
            if isinstance(label, Reject):
                yield label
                continue
            path = self.root / row["path"]
            if not row["path"].strip() or not path.exists():
                yield Reject(source, MISSING_FILE, f"{row['path']!r} not found under {self.root}")
                continue
            try:
                bbox = parse_bbox(row.get("bbox"))
            except ValueError as err:
                yield Reject(source, BAD_ROW, f"bbox {row.get('bbox')!r}: {err}")
                continue
            sample_id = row.get("sample_id") or safe_id(self.name, Path(row["path"]).with_suffix(""))
            clip = path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES
            frames = image_files(path) if path.is_dir() else None
            yield Record(sample_id, label, row.get("subject") or "", str(path), kind="clip" if clip else "image",
                         frames=frames, video_clip=clip and frames is None, bbox=bbox, split=row.get("split") or None,
                         group=row.get("group") or None, extra={c: row[c] for c in extras}, origin=source,
                         id_given=bool(row.get("sample_id")))
