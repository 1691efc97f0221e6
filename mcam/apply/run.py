"""`analyze`: a model applied to photos, folders, videos or a camera, rows written as they are made.

The one path of `mcam analyze` and of `mcam.analyze(...)` in Python. User mistakes (a missing or incompatible
model, a path that is not there, an empty folder, a camera that does not open, `every` < 1) are InputErrors raised
before anything is written; an unreadable or broken input is a reject, and the rest goes on.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Sequence

import pandas as pd
import yaml

from mcam.apply.annotate import ANNOTATED, Annotator
from mcam.apply.bundle import FaceSettings, FusionModel, load_model
from mcam.apply.media import Frame, FrameStream, Source, check_inputs, open_camera
from mcam.apply.pipeline import DEFAULT_BATCH_FRAMES, METADATA, Analyzer
from mcam.apply.results import FORMATS, Analysis, TableWriter
from mcam.errors import InputError
from mcam.io import ensure_writable, write_atomic

log = logging.getLogger(__name__)
SUMMARY_FILE = "analysis.yaml"  # OUT: the model, options, column groups (label order), counts and stage seconds
TIMELINE_FILE = "timeline.png"
FACE_MODES = ("find", "crops")  # find faces in the media, or take every image as a face crop (a prepared dataset)


def synthetic_note(model: FusionModel) -> str | None:
    """The one-line note that some cues come from detectors trained on synthetic renders only (None if none)."""
    cues = model.spec.synthetic_only
    if not cues:
        return None
    real = [c for c in model.cues if c not in cues]
    return (f"cues {cues} come from detectors trained on synthetic renders only: on real faces their attention "
            f"weights and summaries say how a synthetic-trained model reads the face, not what it shows (README, "
            f"'Applying a model to real faces'); " + (f"real-face cues: {real}" if real else "no cue of this model "
                                                       "was trained on real faces"))


def analyze(*inputs: str | os.PathLike, model: str | os.PathLike | FusionModel, out: str | os.PathLike | None = None,
            camera: int | None = None, every: int = 1, batch_frames: int = DEFAULT_BATCH_FRAMES,
            max_frames: int | None = None, device: str = "cpu", faces: str = "find", annotate: bool = False,
            timeline: bool = False, formats: Sequence[str] = FORMATS, keep: bool = True) -> Analysis | None:
    """Apply `model` (a bundle or run folder, or a loaded FusionModel) to `inputs` (photos, videos, folders searched
    recursively) and/or camera `camera`; one row per face per frame (see `mcam.apply.results`).

    Faces are found on every `every`-th video frame and tracked in between; `faces='crops'` takes every image as
    a face crop. With `out`, OUT/analysis.csv and .parquet (`formats`), rejects.csv and analysis.yaml are written
    as the rows are made (moved into place at the end: an interrupted run leaves none), plus OUT/annotated/ with
    `annotate` and OUT/timeline.png with `timeline`. Returns the rows as an `Analysis` (`keep=False`: None, and
    memory stays bounded however long the video).
    """
    if every < 1:
        raise InputError(f"--every must be >= 1 (find faces on every k-th frame), got {every}")
    if faces not in FACE_MODES:
        raise InputError(f"--faces {faces!r}: expected one of {FACE_MODES}")
    if not inputs and camera is None:
        raise InputError("nothing to analyse: give INPUT files or folders, or --camera N")
    if out is None and (annotate or timeline or not keep):
        raise InputError("annotate, timeline and keep=False write files: give out")
    sources = check_inputs(inputs)
    loaded = model if isinstance(model, FusionModel) else load_model(model, device)
    settings = dataclasses.replace(loaded.spec.faces, finder="none") if faces == "crops" else loaded.spec.faces
    cameras = {}
    if camera is not None:
        cameras[camera] = open_camera(camera)
        sources.append(Source(camera=camera))
    try:
        out_dir = None if out is None else ensure_writable(out, "--out")
    except BaseException:
        for capture in cameras.values():
            capture.release()
        raise
    note = synthetic_note(loaded)
    if note:
        log.warning(note)
    analyzer = Analyzer(loaded, settings, batch_frames)
    stream = FrameStream(sources, every, max_frames, cameras)
    writer = TableWriter(out_dir, analyzer.columns, formats) if out_dir is not None else None
    annotator = Annotator(out_dir / ANNOTATED, loaded.class_names, loaded.cues) if annotate else None
    kept: list[pd.DataFrame] = []
    rejects = 0
    started = time.perf_counter()  # the model is loaded: from here on every second is the media's
    try:
        for batch in analyzer.run(stream):
            start = time.perf_counter()
            if writer is not None:
                writer.write(batch.rows, batch.rejects)
            analyzer.timings["write"] += time.perf_counter() - start
            if annotator is not None:
                start = time.perf_counter()
                for frame, rows in zip(batch.frames, _per_frame(batch.rows, batch.frames)):
                    annotator.add(frame, rows)
                for source in batch.ended:
                    annotator.end(source)
                analyzer.timings["annotate"] += time.perf_counter() - start
            if keep:
                kept.append(batch.rows)
            rejects += len(batch.rejects)
            for reject in batch.rejects:
                log.warning("%s: %s (%s)", reject.source.name, reject.reason, reject.detail)
    except KeyboardInterrupt as err:
        stream.stop()
        if camera is None:  # files and folders: an interrupted run writes nothing
            _discard(err, writer, annotator)
            raise
        log.warning("camera %d stopped (Ctrl-C): the frames analysed so far are kept", camera)  # its usual end
    except BaseException as err:
        stream.stop()
        _discard(err, writer, annotator)
        raise
    if annotator is not None:
        annotator.close()
    result = Analysis.with_groups(pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=analyzer.columns),
                                  loaded.class_names, loaded.cues, analyzer.summaries) if keep else None
    if writer is not None:
        writer.close()
        summary = _summary(loaded, analyzer, sources, every, settings, writer.rows, rejects)
        summary["wall_seconds"] = round(time.perf_counter() - started, 3)
        write_atomic(out_dir / SUMMARY_FILE, yaml.safe_dump(summary, sort_keys=False))
        if timeline:
            table = result if result is not None else Analysis.read(out_dir / f"analysis.{formats[0]}")
            if table.faces["time"].notna().any():
                table.plot_timeline(out_dir / TIMELINE_FILE)
            else:
                log.warning("no video face with a prediction: no timeline")
    return result


def _discard(error: BaseException, writer: TableWriter | None, annotator: Annotator | None) -> None:
    """Remove what a failed run had begun to write."""
    if writer is not None:
        writer.discard(error)
    if annotator is not None:
        annotator.close(error)


def _per_frame(rows: pd.DataFrame, frames: list[Frame]) -> list[pd.DataFrame]:
    """The rows of each frame of a batch (rows are in frame order)."""
    keys = list(zip(rows["input"], rows["frame"]))
    return [rows[[k == (f.source.name, f.index) for k in keys]] for f in frames]


def _summary(model: FusionModel, analyzer: Analyzer, sources: list[Source], every: int, settings: FaceSettings,
             rows: int, rejects: int) -> dict:
    """analysis.yaml: what made the table and how to read it."""
    seconds = {k: round(v, 3) for k, v in analyzer.timings.items()}
    return {"model": str(model.spec.root), "trained_on": model.spec.trained_on,
            "synthetic_only": model.spec.synthetic_only, "inputs": [s.name for s in sources], "every": every,
            "faces": dataclasses.asdict(settings), "device": model.device,
            "classes": model.class_names, "cues": model.cues, "summaries": analyzer.summaries,
            "columns": {"metadata": list(METADATA), "probabilities": [f"prob_{c}" for c in model.class_names],
                        "weights": [f"weight_{c}" for c in model.cues]},
            "frames": analyzer.frames_seen, "rows": rows, "rejects": rejects, "seconds": seconds}


__all__ = ["analyze", "synthetic_note"]
