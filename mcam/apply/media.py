"""Media in: photos, folders (recursive), videos (anything OpenCV reads) and cameras as one stream of frames.

Frames are decoded in a background thread into a small bounded queue, so decoding overlaps the detectors and
memory holds a few frames whatever the video's length. An input that cannot be read, or a video that breaks
off (the frames before the break are analysed), is a `Reject` in the stream; mistakes the user must fix before
anything runs (a path that is not there, an empty folder, a camera that does not open) are InputErrors raised
by `check_inputs` / `open_camera` up front.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from mcam.errors import InputError
from mcam.faces import IMAGE_SUFFIXES, UNREADABLE, FaceError, read_rgb

VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                                            ".wmv", ".flv", ".gif"})
VIDEO_TRUNCATED = "video_truncated"  # reject reason: decoding stopped before the frame count the header gives
QUEUE_FRAMES = 16  # frames decoded ahead of the analysis (bounded: memory does not grow with the video)


@dataclass(frozen=True)
class Source:
    """One input: a file (image or video) or a camera (`camera` its OpenCV index)."""

    path: Path | None = None
    camera: int | None = None

    @property
    def name(self) -> str:
        return f"camera:{self.camera}" if self.camera is not None else str(self.path)

    @property
    def is_video(self) -> bool:
        return self.camera is not None or (self.path is not None and self.path.suffix.lower() in VIDEO_SUFFIXES)


@dataclass
class Frame:
    """A decoded RGB frame of a source: its 0-based index, time in seconds (None for a photo), whether faces are
    to be found on it (else they are tracked from the frames before), the seconds its decoding took and the
    video's frame rate."""

    source: Source
    index: int
    time: float | None
    image: np.ndarray
    find: bool = True
    decode_seconds: float = 0.0
    fps: float | None = None  # the video's frame rate (None: a photo, or a camera that gives none)


@dataclass(frozen=True)
class Reject:
    """An input, or the rest of a video from `frame` on, that could not be read: reason code and detail."""

    source: Source
    frame: int | None
    reason: str
    detail: str


@dataclass(frozen=True)
class End:
    """The end of a source's frames (its face tracks end with it)."""

    source: Source


Item = Frame | Reject | End


def check_inputs(inputs: Sequence[str | Path]) -> list[Source]:
    """The sources of INPUT arguments: files as given, folders searched recursively for images and videos (sorted);
    InputError for a path that does not exist, a file of another kind, or a folder holding no media."""
    sources: list[Source] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"{path}: the folder holds no image or video ({', '.join(sorted(IMAGE_SUFFIXES))}, "
                                 f"{', '.join(sorted(VIDEO_SUFFIXES))})")
            sources += [Source(p) for p in found]
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                raise InputError(f"{path}: not an image or video file (by its suffix); expected one of "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}")
            sources.append(Source(path))
        else:
            raise InputError(f"{path}: no such file or folder")
    return sources


def open_camera(index: int) -> cv2.VideoCapture:
    """The opened camera `index`; InputError when it does not open or gives no frame."""
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        capture.release()
        raise InputError(f"camera {index} does not open (no such device, or in use); list cameras with "
                         "`v4l2-ctl --list-devices` on Linux")
    return capture


class FrameStream:
    """The frames of `sources` in order, decoded by a background thread (see the module docstring).

    Faces are to be found on every `every`-th frame of a video (and on every photo). `max_frames` stops each
    source after that many frames (cameras run until then, or until `stop()`). Iterate once; `stop()` ends early.
    """

    def __init__(self, sources: Sequence[Source], every: int = 1, max_frames: int | None = None,
                 cameras: dict[int, cv2.VideoCapture] | None = None, queue_frames: int = QUEUE_FRAMES) -> None:
        if every < 1:
            raise InputError(f"--every must be >= 1 (find faces on every k-th frame), got {every}")
        if max_frames is not None and max_frames < 1:
            raise InputError(f"--max-frames must be >= 1, got {max_frames}")
        self.sources, self.every, self.max_frames = list(sources), every, max_frames
        self.cameras = dict(cameras or {})
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mcam-decode", daemon=True)

    def __iter__(self) -> Iterator[Item]:
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                yield item
        finally:
            self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End decoding (frames already queued are dropped) and wait for the thread."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
        for capture in self.cameras.values():
            capture.release()

    def _put(self, item: Item | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for source in self.sources:
                items = self._video(source) if source.is_video else self._photo(source)
                for item in items:
                    if not self._put(item):
                        return
                if not self._put(End(source)):
                    return
        except BaseException as err:  # handed to the consuming thread, which raises it
            self._error = err
        finally:
            self._put(None)

    def _photo(self, source: Source) -> Iterator[Item]:
        start = time.perf_counter()
        try:
            image = read_rgb(source.path)
        except FaceError as err:
            yield Reject(source, None, err.reason, str(err))
            return
        yield Frame(source, 0, None, image, True, time.perf_counter() - start)

    def _video(self, source: Source) -> Iterator[Item]:
        if source.camera is not None:
            capture = self.cameras.get(source.camera) or open_camera(source.camera)
        else:
            capture = cv2.VideoCapture(str(source.path))
            if not capture.isOpened():
                capture.release()
                yield Reject(source, None, UNREADABLE, f"{source.path}: OpenCV cannot open it as a video")
                return
        fps = capture.get(cv2.CAP_PROP_FPS) if source.camera is None else 0.0
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if source.camera is None else 0
        started = time.monotonic()
        index = 0
        try:
            while not self._stop.is_set() and (self.max_frames is None or index < self.max_frames):
                start = time.perf_counter()
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    break
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                stamp = index / fps if fps > 0 else time.monotonic() - started
                yield Frame(source, index, stamp, image, index % self.every == 0, time.perf_counter() - start,
                            fps if fps > 0 else None)
                index += 1
        finally:
            if source.camera is None:
                capture.release()
        limited = self.max_frames is not None and index >= self.max_frames
        if source.camera is None and not self._stop.is_set() and not limited:
            if index == 0:
                yield Reject(source, None, UNREADABLE, f"{source.path}: no frame could be decoded")
            elif expected > 0 and index < expected:
                yield Reject(source, index, VIDEO_TRUNCATED,
                             f"{source.path}: decoding stopped at frame {index} of the {expected} its header gives "
                             f"(damaged or truncated file); frames {index}..{expected - 1} not analysed")
