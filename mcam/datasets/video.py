"""Video decoding as a stream: frames are read one at a time, so memory stays bounded for any video length."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np


class VideoError(ValueError):
    """A video that cannot be opened. Names the file."""


def stream_frames(path: str | Path, wanted: Iterable[int]) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield (index, RGB frame) for each wanted 0-based index in increasing order; None where the video ends first.

    Frames in between are skipped with grab() (no decode into Python); at most one frame is held at a time.
    """
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot open video")
    try:
        position = 0
        ended = False
        for index in sorted(set(wanted)):
            while not ended and position < index:
                ended = not capture.grab()
                position += 1
            frame = None
            if not ended:
                ok, bgr = capture.read()
                position += 1
                ended = not ok
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
            yield index, frame
    finally:
        capture.release()


def frame_count(path: str | Path) -> int:
    """Frame count from the container header (0 when unknown)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if capture.isOpened() else 0
    finally:
        capture.release()


def sample_indices(total: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices over `total` frames (the first `count` when the total is unknown)."""
    if total <= 0:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, num=min(count, total))})
