"""Annotated media: each analysed frame with its faces' boxes, labels and cue-weight bars (`results.draw_faces`),
photos as PNG and videos as MP4, written while the analysis runs (`--annotate`) or afterwards (`annotate()`)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import cv2
import pandas as pd

from mcam.apply.media import End, Frame, FrameStream, Source
from mcam.apply.results import Analysis, draw_faces
from mcam.io import atomic_output

ANNOTATED = "annotated"  # the folder under OUT
CAMERA_FPS = 25.0  # frame rate written for sources that give none (cameras)


class Annotator:
    """Draws frames as they come into OUT files named after their input (videos stream into one MP4 each)."""

    def __init__(self, out: Path, classes: Sequence[str], cues: Sequence[str]) -> None:
        self.out, self.classes, self.cues = out, list(classes), list(cues)
        self.written: list[Path] = []
        self._videos: dict[Source, tuple[cv2.VideoWriter, object, Path]] = {}

    def name(self, source: Source) -> Path:
        """The annotated file of a source: its name plus a short hash of its full path (two `a.jpg` in different
        folders stay apart)."""
        digest = hashlib.sha1(source.name.encode()).hexdigest()[:6]
        stem = Path(source.name).stem if source.path is not None else source.name.replace(":", "")
        return self.out / f"{stem}-{digest}{'.mp4' if source.is_video else '.png'}"

    def add(self, frame: Frame, rows: pd.DataFrame) -> None:
        """Draw `rows` (this frame's) onto the frame and write it."""
        drawn = cv2.cvtColor(draw_faces(frame.image, rows, self.classes, self.cues), cv2.COLOR_RGB2BGR)
        if not frame.source.is_video:
            target = self.name(frame.source)
            with atomic_output(target) as tmp:
                if not cv2.imwrite(str(tmp), drawn):
                    raise OSError(f"could not write {target}")
            self.written.append(target)
            return
        if frame.source not in self._videos:
            target = self.name(frame.source)
            context = atomic_output(target)
            tmp = context.__enter__()
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), frame.fps or CAMERA_FPS,
                                     (drawn.shape[1], drawn.shape[0]))
            self._videos[frame.source] = (writer, context, target)
        self._videos[frame.source][0].write(drawn)

    def end(self, source: Source) -> None:
        """Finish a source's video."""
        if source in self._videos:
            writer, context, target = self._videos.pop(source)
            writer.release()
            context.__exit__(None, None, None)
            self.written.append(target)

    def close(self, error: BaseException | None = None) -> None:
        """Finish (or, after `error`, remove) every video still open."""
        for source in list(self._videos):
            if error is None:
                self.end(source)
            else:
                writer, context, _ = self._videos.pop(source)
                writer.release()
                context.__exit__(type(error), error, error.__traceback__)


def annotate_inputs(analysis: Analysis, out: Path) -> list[Path]:
    """`Analysis.annotate`: each file input read again and its rows drawn onto its frames."""
    annotator = Annotator(out, analysis.classes, analysis.cues)
    inputs = [str(i) for i in pd.unique(analysis["input"]) if not str(i).startswith("camera:")]
    by_frame = {key: rows for key, rows in analysis.groupby(["input", "frame"], sort=False)}
    try:
        for item in FrameStream([Source(Path(i)) for i in inputs]):
            if isinstance(item, Frame):
                rows = by_frame.get((item.source.name, item.index))
                if rows is not None:
                    annotator.add(item, rows)
            elif isinstance(item, End):
                annotator.end(item.source)
    except BaseException as err:
        annotator.close(err)
        raise
    annotator.close()
    return annotator.written
