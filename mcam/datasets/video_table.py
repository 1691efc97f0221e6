"""EiLA-style video table: per-frame face boxes (percent of frame) with up to three annotators' labels."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

import pandas as pd

from mcam.datasets.base import BAD_ROW, MISSING_FILE, NO_LABEL, VIDEO_SUFFIXES, Adapter, Record, Reject, safe_id

AGREEMENT_SPLITS: dict[int, str] = {3: "train", 2: "val", 1: "test"}
COLUMNS: dict[str, str] = {"video_id": "video_id", "frame": "frame", "x": "x", "y": "y", "width": "width",
                           "height": "height", "person_id": "person_id"}


class VideoTable(Adapter):
    """ROOT/<table> (default `annotations.csv`) + ROOT/<videos>/<video_id>.<ext>, as in the EiLA study.

    Table columns (rename with option `columns`): video_id, frame (0-based; option `frame_base: 1` for 1-based),
    x, y, width, height (face box in percent of the frame width/height), `annotators` (default label_1..label_3,
    empty cells allowed), person_id (the subject) and any demographic attributes, which are all kept as
    manifest columns; option `group_attribute` names the one copied into `group`.
    Label = the majority of the annotators' canonical labels; agreement = how many annotators gave it:
    3 -> train, 2 -> val, 1 -> test (the EiLA agreement split); with no majority (1/1/1) the first annotator's
    label is used and the row goes to test. A row with an annotator label outside the label map is rejected.
    Rows are grouped per video and sorted by frame, so each video is decoded once as a stream.
    """

    name = "video_table"
    default_region = "video"
    defaults = {"label_map": None, "table": "annotations.csv", "videos": "videos", "columns": {},
                "annotators": ["label_1", "label_2", "label_3"], "frame_base": 0, "group_attribute": None}

    def scan(self) -> Iterator[Record | Reject]:
        table_path = self.root / self.options["table"]
        table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
        names = {**COLUMNS, **dict(self.options["columns"])}
        table = table.rename(columns={v: k for k, v in names.items()})
        annotators = [a for a in self.options["annotators"] if a in table.columns]
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing or not annotators:
            raise ValueError(f"{table_path}: missing columns {missing or self.options['annotators']}")
        attributes = [c for c in table.columns if c not in COLUMNS and c not in self.options["annotators"]]
        table["_row"] = range(2, len(table) + 2)
        table["_frame"] = pd.to_numeric(table["frame"], errors="coerce")
        for video_id, rows in table.groupby("video_id", sort=True):
            video = self._video(str(video_id))
            for row in rows.sort_values("_frame").to_dict("records"):
                source = f"{table_path.name}:row {row['_row']}"
                if video is None:
                    yield Reject(source, MISSING_FILE, f"no video {video_id}.* under {self.root / self.options['videos']}")
                    continue
                yield self._record(row, source, video, annotators, attributes)

    def _video(self, video_id: str) -> Path | None:
        folder = self.root / self.options["videos"]
        found = sorted(p for p in folder.glob(f"{video_id}.*") if p.suffix.lower() in VIDEO_SUFFIXES)
        return found[0] if found else None

    def _record(self, row: dict, source: str, video: Path, annotators: list[str], attributes: list[str]) -> Record | Reject:
        try:
            frame = int(row["_frame"]) - int(self.options["frame_base"])
            box = tuple(float(row[c]) for c in ("x", "y", "width", "height"))
        except (TypeError, ValueError) as err:
            return Reject(source, BAD_ROW, f"frame/box not numeric: {err}")
        if frame < 0 or box[2] <= 0 or box[3] <= 0:
            return Reject(source, BAD_ROW, f"frame {frame} / box {box} out of range")
        labels = []
        for column in annotators:
            code = str(row[column]).strip().lower()
            if code:
                label = self.label(code, f"{source} ({column})")
                if isinstance(label, Reject):
                    return label
                labels.append(label)
        if not labels:
            return Reject(source, NO_LABEL, "no annotator label")
        label, agreement = Counter(labels).most_common(1)[0]
        if agreement == 1:
            label = labels[0]
        extra = {a: row[a] for a in attributes}
        extra["agreement"] = agreement
        group = row.get(self.options["group_attribute"]) if self.options["group_attribute"] else None
        sample_id = safe_id(self.name, row["video_id"], f"{frame:06d}", row["person_id"])
        return Record(sample_id, label, str(row["person_id"]), str(video), video_frame=frame, bbox_pct=box,
                      split=AGREEMENT_SPLITS[min(agreement, 3)], group=group, extra=extra, origin=source)
