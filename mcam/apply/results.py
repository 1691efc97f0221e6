"""Table out: `mcam analyze`'s rows as a `Predictions` that knows its column groups, written as they are made
(CSV and Parquet), plotted over time and drawn onto the frames.

Columns, in order: metadata (input, frame, time, face_id, x, y, width, height, face_score, aligned, reason),
`pred`, one `prob_<class>` per class (the fused emotion), one `weight_<cue>` per cue (its attention weight), and
the cues' own summaries named by their labels (`au.AU12`, `macro.happy`, `micro.positive`, ...). A frame without a
face is a row with reason `no_face`; a face no detector read is `no_cue`; both leave the prediction empty.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd

from mcam.fusion.predictions import Predictions, prob_column, weight_column
from mcam.io import atomic_output

TABLE = "analysis"  # analysis.csv, analysis.parquet
REJECTS = "rejects.csv"
FORMATS = ("csv", "parquet")
REJECT_COLUMNS = ("input", "frame", "reason", "detail")


class Analysis(Predictions):
    """`mcam analyze` rows (see the module docstring): Predictions groups plus `summaries` (cue -> its columns)."""

    _metadata = [*Predictions._metadata, "_summaries"]
    _summaries: dict[str, list[str]] | None = None

    @property
    def _constructor(self) -> type["Analysis"]:
        return Analysis

    @classmethod
    def with_groups(cls, frame: pd.DataFrame, classes: Sequence[str], cues: Sequence[str],
                    summaries: dict[str, list[str]]) -> "Analysis":
        """A frame in the analysis layout with its groups named."""
        result = cls._with_groups(frame, classes, cues)
        result._summaries = {cue: list(labels) for cue, labels in summaries.items()}
        return result

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Analysis":
        """An analysis.csv or analysis.parquet; summary columns are those named `<cue>.<label>`."""
        path = Path(path)
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"input": str,
                                                                                                "reason": str})
        if "reason" in frame:
            frame["reason"] = frame["reason"].fillna("")
        base = Predictions.from_frame(frame)
        summaries: dict[str, list[str]] = {}
        for column in frame.columns:
            cue, dot, _ = str(column).partition(".")
            if dot and cue in base.cues:
                summaries.setdefault(cue, []).append(str(column))
        return cls.with_groups(frame, base.classes, base.cues, summaries)

    @property
    def summaries(self) -> dict[str, list[str]]:
        """Cue -> its summary columns (AU intensities, class probabilities) present in this frame."""
        return {cue: [c for c in labels if c in self.columns] for cue, labels in (self._summaries or {}).items()}

    @property
    def summary_columns(self) -> list[str]:
        return [c for labels in self.summaries.values() for c in labels]

    @property
    def metadata(self) -> pd.DataFrame:
        """Input, frame, time, face id, box, face score, alignment and reason (no prediction, weight or summary)."""
        plain = Predictions.metadata.fget(self)  # type: ignore[attr-defined]
        return plain[[c for c in plain.columns if c not in set(self.summary_columns)]]

    @property
    def faces(self) -> "Analysis":
        """The rows of faces with a prediction (no `no_face` / `no_cue` rows)."""
        return self[self["reason"].fillna("") == ""]

    def plot_timeline(self, path: str | os.PathLike | None = None, input: str | None = None) -> Any:
        """Emotion probabilities and cue weights over time, one pair of panels per (video, face id); saved to
        `path` when given. Returns the matplotlib figure."""
        return plot_timeline(self, path, input)

    def annotate(self, out: str | os.PathLike) -> list[Path]:
        """Each input's frames with box, label and cue-weight bars drawn (photos as PNG, videos as MP4) under
        `out`; returns the files written."""
        from mcam.apply.annotate import annotate_inputs

        return annotate_inputs(self, Path(out))


class TableWriter:
    """Appends batches of rows to OUT/analysis.csv and .parquet (and rejects to OUT/rejects.csv) as they come.

    Written under temporary names in OUT and renamed into place by `close()`: an interrupted or failed run leaves
    no half-written table; `discard()` removes them."""

    def __init__(self, out: Path, columns: Sequence[str], formats: Sequence[str] = FORMATS) -> None:
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown table formats {unknown}; expected some of {FORMATS}")
        self.out, self.columns, self.formats = out, list(columns), list(formats)
        self.rows = 0
        self._outputs = {fmt: atomic_output(out / f"{TABLE}.{fmt}") for fmt in formats}
        self._outputs["rejects"] = atomic_output(out / REJECTS)
        self._tmp = {key: ctx.__enter__() for key, ctx in self._outputs.items()}
        self._csv = open(self._tmp["csv"], "w", newline="") if "csv" in formats else None
        self._rejects = open(self._tmp["rejects"], "w", newline="")
        csv.writer(self._rejects).writerow(REJECT_COLUMNS)
        self._parquet = None
        self._header = True

    def write(self, rows: pd.DataFrame, rejects: Sequence[Any] = ()) -> None:
        """Append rows (in `columns` order) and rejects (media.Reject)."""
        if len(rows):
            if self._csv is not None:
                rows.to_csv(self._csv, header=self._header, index=False)
                self._header = False
            if "parquet" in self.formats:
                self._write_parquet(rows)
            self.rows += len(rows)
        writer = csv.writer(self._rejects)
        for reject in rejects:
            writer.writerow([reject.source.name, "" if reject.frame is None else reject.frame, reject.reason,
                             reject.detail])

    def _write_parquet(self, rows: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            fields = [pa.field(c, pa.int64()) if c in ("frame", "face_id") else
                      pa.field(c, pa.float64()) if pd.api.types.is_numeric_dtype(rows[c]) else pa.field(c, pa.string())
                      for c in self.columns]
            self._schema = pa.schema(fields)
            self._parquet = pq.ParquetWriter(self._tmp["parquet"], self._schema)
        self._parquet.write_table(pa.Table.from_pandas(rows, schema=self._schema, preserve_index=False))

    def close(self) -> None:
        """Finish every file and move it into place."""
        self._finish(None)

    def discard(self, error: BaseException) -> None:
        """Remove every temporary file (nothing half-written is left)."""
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        if self._csv is not None:
            if self._header:  # no row at all: still a table with its header
                pd.DataFrame(columns=self.columns).to_csv(self._csv, index=False)
            self._csv.close()
        if "parquet" in self.formats:
            if self._parquet is None and error is None:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.table({c: pa.array([], pa.string()) for c in self.columns}), self._tmp["parquet"])
            elif self._parquet is not None:
                self._parquet.close()
        self._rejects.close()
        for ctx in self._outputs.values():
            if error is None:
                ctx.__exit__(None, None, None)
            else:
                ctx.__exit__(type(error), error, error.__traceback__)


# --- the timeline ---------------------------------------------------------------------------------------------------
def plot_timeline(analysis: Analysis, path: str | os.PathLike | None = None, input: str | None = None) -> Any:
    """See `Analysis.plot_timeline`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = analysis.faces
    faces = faces[faces["time"].notna()]  # video frames: a photo has no time to plot over
    if input is not None:
        faces = faces[faces["input"] == input]
    tracks = list(faces.groupby(["input", "face_id"], sort=True).groups) if len(faces) else []
    if not tracks:
        raise ValueError("no video face with a prediction to plot" + (f" in {input}" if input else ""))
    fig, axes = plt.subplots(2 * len(tracks), 1, figsize=(10, 3.2 * len(tracks) + 0.5), sharex=False, squeeze=False)
    for t, (source, face_id) in enumerate(tracks):
        rows = faces[(faces["input"] == source) & (faces["face_id"] == face_id)]
        x = rows["time"].to_numpy(dtype=float)
        probs, weights = rows[[prob_column(c) for c in analysis.classes]], rows[[weight_column(c) for c in analysis.cues]]
        top, bottom = axes[2 * t, 0], axes[2 * t + 1, 0]
        for c, column in zip(analysis.classes, probs.columns):
            top.plot(x, probs[column].to_numpy(dtype=float), label=c, linewidth=1.2)
        top.set_ylim(0, 1)
        top.set_ylabel("probability")
        top.set_title(f"{Path(str(source)).name}, face {face_id}: fused emotion")
        top.legend(loc="upper left", fontsize=7, ncol=len(analysis.classes))
        bottom.stackplot(x, weights.to_numpy(dtype=float).T, labels=analysis.cues, alpha=0.85)
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("cue weight")
        bottom.set_xlabel("time (s)")
        bottom.legend(loc="upper left", fontsize=7, ncol=len(analysis.cues))
    fig.tight_layout()
    if path is not None:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
        plt.close(fig)
    return fig


def draw_faces(image: np.ndarray, rows: pd.DataFrame, classes: Sequence[str], cues: Sequence[str]) -> np.ndarray:
    """An RGB copy of `image` with each face row's box, face id, predicted label and probability, and a bar per cue
    (its attention weight) drawn beside the box."""
    canvas = np.ascontiguousarray(image.copy())
    scale = max(0.4, min(canvas.shape[:2]) / 720)
    colours = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230)]
    for _, row in rows.iterrows():
        if row.get("reason", "") or pd.isna(row.get("x")):
            continue
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 0), max(1, int(2 * scale)))
        label = str(row["pred"])
        text = f"#{int(row['face_id'])} {label} {float(row[prob_column(label)]):.2f}"
        cv2.putText(canvas, text, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 255, 0),
                    max(1, int(1.5 * scale)), cv2.LINE_AA)
        bar_w, bar_h = int(60 * scale), max(8, int(12 * scale))
        for c, cue in enumerate(cues):
            weight = float(row[weight_column(cue)])
            top = y + c * (bar_h + 3)
            left = x + w + 4
            cv2.rectangle(canvas, (left, top), (left + bar_w, top + bar_h), (40, 40, 40), -1)
            cv2.rectangle(canvas, (left, top), (left + int(bar_w * weight), top + bar_h), colours[c % len(colours)], -1)
            cv2.putText(canvas, f"{cue} {weight:.2f}", (left + bar_w + 3, top + bar_h - 2), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
