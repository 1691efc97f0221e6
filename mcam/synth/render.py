"""Shaded rendering of a face mesh with OpenCV: depth-sorted filled triangles, Lambert shading, painted features."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mcam.synth.mesh import N_VERTICES, FaceMeshModel

# MediaPipe face-mesh landmark indices of the painted features.
LEFT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
RIGHT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
LEFT_BROW = [46, 53, 52, 65, 55, 107, 66, 105, 63, 70]
RIGHT_BROW = [276, 283, 282, 295, 285, 336, 296, 334, 293, 300]
OUTER_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
INNER_LIPS = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
IRIS_CENTERS = (468, 473)
SUPERSAMPLE = 2


@dataclass(frozen=True)
class FaceShape:
    """A subject's identity: anisotropic scale, jaw taper and depth of the face."""

    width: float = 1.0
    height: float = 1.0
    depth: float = 1.0
    jaw_taper: float = 0.0  # >0 narrows the lower face
    eye_spacing: float = 0.0  # fraction of face width, added to each eye's offset


@dataclass(frozen=True)
class RenderParams:
    """Capture conditions and appearance for one rendered frame."""

    size: int = 128
    yaw: float = 0.0  # degrees
    pitch: float = 0.0
    roll: float = 0.0
    light: tuple[float, float, float] = (0.0, 0.3, 1.0)  # direction towards the light, camera frame
    ambient: float = 0.35
    skin: tuple[float, float, float] = (0.85, 0.68, 0.56)  # RGB in [0, 1]
    hair: tuple[float, float, float] = (0.15, 0.1, 0.08)
    background: tuple[float, float, float] = (0.55, 0.6, 0.65)
    noise_sd: float = 0.0  # in [0, 255] units
    blur_sigma: float = 0.0
    grayscale: bool = False
    shape: FaceShape = field(default_factory=FaceShape)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rz @ rx @ ry).astype(np.float32)


class FaceRenderer:
    """Renders meshes of one FaceMeshModel; the scale is fixed from the neutral face so expressions never rescale."""

    def __init__(self, model: FaceMeshModel) -> None:
        self.model = model
        neutral = model.intercept[:N_VERTICES]
        self.center = neutral.mean(axis=0)
        self.extent = float((neutral.max(axis=0) - neutral.min(axis=0))[:2].max())

    def _shape(self, vertices: np.ndarray, shape: FaceShape) -> np.ndarray:
        v = vertices - self.center
        half = self.extent / 2
        lower = np.clip(-v[:, 1] / half, 0, 1)  # 0 above the centre, 1 at the chin
        v[:, 0] *= shape.width * (1 - shape.jaw_taper * lower)
        v[:, 1] *= shape.height
        v[:, 2] *= shape.depth
        for eye, sign in ((LEFT_EYE + [IRIS_CENTERS[0]], -1), (RIGHT_EYE + [IRIS_CENTERS[1]], 1)):
            v[eye, 0] += sign * shape.eye_spacing * half
        return v

    def render(self, aus: np.ndarray, params: RenderParams, rng: np.random.Generator | None = None) -> np.ndarray:
        """RGB uint8 image [size, size, 3] of the face whose expression is the AU vector `aus`."""
        s = params.size * SUPERSAMPLE
        v = self._shape(self.model.mesh(aus), params.shape) @ _rotation(params.yaw, params.pitch, params.roll).T
        scale = 0.78 * s / self.extent
        xy = np.empty((len(v), 2), np.float32)
        xy[:, 0] = s / 2 + v[:, 0] * scale
        xy[:, 1] = s / 2 - v[:, 1] * scale + 0.04 * s
        image = np.empty((s, s, 3), np.float32)
        image[:] = params.background
        # head silhouette behind the face: hair colour; also what shows through eye and mouth holes
        hull = cv2.convexHull(xy[:N_VERTICES]).astype(np.int32)
        cv2.fillConvexPoly(image, hull, params.hair, lineType=cv2.LINE_AA)
        tri = self.model.triangles
        a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
        normals = np.cross(b - a, c - a)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-9
        facing = normals[:, 2] > 0
        light = np.asarray(params.light, np.float32)
        light /= np.linalg.norm(light)
        shade = params.ambient + (1 - params.ambient) * np.clip(normals @ light, 0, 1)
        order = np.argsort((a[:, 2] + b[:, 2] + c[:, 2]))  # far to near: painter's algorithm
        drawn = order[facing[order]]
        colors = (np.asarray(params.skin, np.float32)[None] * shade[drawn, None]).tolist()
        points = np.round(xy[tri[drawn]] * 16).astype(np.int32)  # 4 fractional bits for sub-pixel accuracy
        fill = cv2.fillConvexPoly  # one call per triangle: the loop is most of a frame's time, kept lean
        for triangle, color in zip(points, colors):
            fill(image, triangle, color, cv2.LINE_8, 4)
        mean_shade = float(np.median(shade[facing]))
        self._paint_features(image, xy, params, mean_shade)
        image = cv2.resize(image, (params.size, params.size), interpolation=cv2.INTER_AREA)
        return self._camera(image, params, rng)

    def _paint_features(self, image: np.ndarray, xy: np.ndarray, params: RenderParams, shade: float) -> None:
        s = image.shape[0]
        width = max(1, int(round(s / 64)))
        sclera = np.array([0.92, 0.9, 0.88]) * min(1.0, shade + 0.25)
        iris = np.array([0.25, 0.17, 0.1]) * shade
        lips = np.array([0.72, 0.36, 0.36]) * shade * np.asarray(params.skin) / np.array([0.85, 0.68, 0.56]) ** 0.3
        for eye, center in ((LEFT_EYE, IRIS_CENTERS[0]), (RIGHT_EYE, IRIS_CENTERS[1])):
            polygon = xy[eye].astype(np.int32)
            mask = np.zeros(image.shape[:2], np.uint8)
            cv2.fillPoly(mask, [polygon], 1, cv2.LINE_AA)
            eye_layer = image.copy()
            cv2.fillPoly(eye_layer, [polygon], sclera.tolist(), cv2.LINE_AA)
            radius = int(round(0.42 * np.linalg.norm(xy[eye[0]] - xy[eye[8]]) / 2 * 1.6))
            cv2.circle(eye_layer, tuple(int(t) for t in xy[center]), max(radius, 1), iris.tolist(), -1, cv2.LINE_AA)
            image[mask > 0] = eye_layer[mask > 0]
            cv2.polylines(image, [polygon], True, (np.asarray(params.hair) * 0.8).tolist(), width, cv2.LINE_AA)
        for brow in (LEFT_BROW, RIGHT_BROW):
            cv2.fillPoly(image, [xy[brow].astype(np.int32)], params.hair, cv2.LINE_AA)
        cv2.fillPoly(image, [xy[OUTER_LIPS].astype(np.int32)], lips.tolist(), cv2.LINE_AA)
        cv2.fillPoly(image, [xy[INNER_LIPS].astype(np.int32)], (0.12, 0.05, 0.05), cv2.LINE_AA)

    @staticmethod
    def _camera(image: np.ndarray, params: RenderParams, rng: np.random.Generator | None) -> np.ndarray:
        image = image * 255.0
        if params.blur_sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), params.blur_sigma)
        if params.noise_sd > 0:
            rng = rng or np.random.default_rng(0)
            image = image + rng.normal(0, params.noise_sd, image.shape).astype(np.float32)
        image = np.clip(image, 0, 255).astype(np.uint8)
        if params.grayscale:
            image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
        return image
