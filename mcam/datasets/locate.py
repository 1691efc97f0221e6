"""Face location for `mcam prepare`: Haar (default), MTCNN with eye alignment (optional), or none."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mcam.faces import NO_FACE, FaceError, HaarFaceFinder, crop

Box = tuple[int, int, int, int]
DETECTORS: tuple[str, ...] = ("haar", "mtcnn", "none")


@dataclass(frozen=True)
class Face:
    """A face box (x, y, w, h) and, where the finder gives landmarks, the eye-line angle in degrees."""

    box: Box
    roll: float | None = None
    eyes_center: tuple[float, float] | None = None


class MTCNNFinder:
    """facenet-pytorch's MTCNN (optional dependency): largest face plus eye landmarks for alignment."""

    def __init__(self, device: str | None = None) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:
            raise RuntimeError("detector 'mtcnn' needs facenet-pytorch: pip install facenet-pytorch==2.5.3 "
                               "--no-deps requests (2.5.3 leaves torch alone)") from err
        from mcam.detector import default_device

        self._mtcnn = MTCNN(keep_all=True, device=device or default_device())

    def __call__(self, image: np.ndarray) -> list[Face]:
        boxes, _, points = self._mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for (x0, y0, x1, y1), pts in zip(boxes, points):
            (lx, ly), (rx, ry) = pts[0], pts[1]  # MTCNN order: left eye, right eye, nose, mouth corners
            box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
            roll = math.degrees(math.atan2(float(ry - ly), float(rx - lx)))
            faces.append(Face(box, roll, ((lx + rx) / 2.0, (ly + ry) / 2.0)))
        return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


class HaarFinder:
    """OpenCV Haar cascade: boxes only, so no alignment."""

    def __init__(self) -> None:
        self._haar = HaarFaceFinder()

    def __call__(self, image: np.ndarray) -> list[Face]:
        return [Face(box) for box in self._haar(image)]


def make_finder(name: str, device: str | None = None) -> HaarFinder | MTCNNFinder | None:
    """The face finder named `name` (None for 'none': inputs are already face crops)."""
    if name == "haar":
        return HaarFinder()
    if name == "mtcnn":
        return MTCNNFinder(device)
    if name == "none":
        return None
    raise ValueError(f"unknown face detector {name!r}; expected one of {DETECTORS}")


def square(box: Box) -> Box:
    """The square box with the same centre and the longer side."""
    x, y, w, h = box
    side = max(w, h)
    return x + (w - side) // 2, y + (h - side) // 2, side, side


def align(image: np.ndarray, face: Face) -> np.ndarray:
    """Rotate the image about the eye midpoint so the eyes are level (identity without landmarks)."""
    if face.roll is None or face.eyes_center is None or abs(face.roll) < 0.5:
        return image
    matrix = cv2.getRotationMatrix2D(face.eyes_center, face.roll, 1.0)
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def locate(image: np.ndarray, finder: HaarFinder | MTCNNFinder, source: str) -> Face:
    """The largest face in an image; FaceError naming the source when there is none."""
    faces = finder(image)
    if not faces:
        raise FaceError(f"{source}: no face found", NO_FACE)
    return faces[0]


def cut(image: np.ndarray, face: Face, margin: float, source: str = "image") -> np.ndarray:
    """Aligned square crop of a located face with a margin (FaceError as `mcam.faces.crop`)."""
    return crop(align(image, face), square(face.box), margin, source)


def pct_box(bbox_pct: tuple[float, float, float, float], shape: tuple[int, ...]) -> Box:
    """A box given in percent of the frame (x, y, width, height) in pixels."""
    height, width = shape[:2]
    x, y, w, h = bbox_pct
    return (int(round(x * width / 100)), int(round(y * height / 100)),
            max(1, int(round(w * width / 100))), max(1, int(round(h * height / 100))))
