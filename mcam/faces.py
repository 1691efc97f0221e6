"""Face preprocessing shared by all detectors: read, find the face, crop with margin, load clips."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np


class FaceError(ValueError):
    """An input that yields no face: unreadable file, no face found, missing frame. Names the file."""


class FaceFinder(Protocol):
    """Finds face boxes (x, y, w, h) in an RGB image, largest first."""

    def __call__(self, image: np.ndarray) -> list[tuple[int, int, int, int]]: ...


@dataclass
class HaarFaceFinder:
    """OpenCV's frontal-face Haar cascade (ships with opencv-python < 5)."""

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size_fraction: float = 0.1

    def __call__(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        side = int(min(gray.shape[:2]) * self.min_size_fraction)
        boxes = _haar_cascade().detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=(side, side))
        boxes = [tuple(int(v) for v in b) for b in boxes]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


@lru_cache(maxsize=1)
def _haar_cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {path}; opencv-python must be < 5")
    return cascade


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8; FaceError naming the file if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FaceError(f"{path}: unreadable or corrupt image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def parse_bbox(value: object) -> tuple[int, int, int, int] | None:
    """A manifest bbox 'x y w h' as ints, or None when absent."""
    if not isinstance(value, str) or not value.strip():
        return None
    x, y, w, h = (int(v) for v in value.split())
    return x, y, w, h


def crop(image: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.0) -> np.ndarray:
    """Crop a box enlarged by `margin` (fraction of its size), padded by edge replication at borders."""
    x, y, w, h = box
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0, x1, y1 = x - dx, y - dy, x + w + dx, y + h + dy
    pad = max(0, -x0, -y0, x1 - image.shape[1], y1 - image.shape[0])
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return image[y0:y1, x0:x1]


@dataclass
class FaceCropper:
    """Turns an image into a face crop: manifest bbox when given, else the face finder's largest face."""

    finder: FaceFinder | None = None
    margin: float = 0.15

    def __call__(self, image: np.ndarray, bbox: object = None, source: str = "image") -> np.ndarray:
        box = parse_bbox(bbox)
        if box is not None:
            return crop(image, box, 0.0)
        boxes = (self.finder or HaarFaceFinder())(image)
        if not boxes:
            raise FaceError(f"{source}: no face found")
        return crop(image, boxes[0], self.margin)


def load_clip(path: str | Path) -> np.ndarray:
    """A clip as RGB uint8 [T, H, W, 3]: a .npy stack or a folder of frame images (sorted by name)."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            clip = np.load(path)
        except (OSError, ValueError) as err:
            raise FaceError(f"{path}: unreadable clip ({err})") from err
        if clip.ndim == 3:
            clip = np.repeat(clip[..., None], 3, axis=-1)
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise FaceError(f"{path}: clip has shape {clip.shape}, expected [T, H, W, 3]")
        return clip.astype(np.uint8)
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
        if not frames:
            raise FaceError(f"{path}: clip folder has no frames")
        images = [read_rgb(p) for p in frames]
        shape = images[0].shape
        return np.stack([cv2.resize(im, (shape[1], shape[0])) for im in images])
    raise FaceError(f"{path}: not a clip (.npy stack or frame folder)")
