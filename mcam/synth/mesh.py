"""py-feat's shipped AU-to-3D-mesh model (v4, offline) and the canonical face triangulation."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mcam.labels import AU_NAMES

N_VERTICES = 468  # triangulated vertices; the model's 10 extra points are iris landmarks

# FACS displacement fields added to py-feat's PLS map. The PLS model was fitted on
# detector output in the wild, so single AUs move the mesh weakly and entangled;
# these fields make each AU's FACS appearance change visible at 128 px.
# (AU, anchor landmarks, (outward dx, dy up, dz), gaussian radius in mesh units).
FACS_FIELDS: tuple[tuple[str, tuple[int, ...], tuple[float, float, float], float], ...] = (
    ("AU01", (107, 336, 55, 285, 66, 296), (0.0, 9.0, 0.0), 12.0),
    ("AU02", (70, 300, 46, 276, 63, 293), (0.0, 9.0, 0.0), 12.0),
    ("AU04", (107, 336, 55, 285, 65, 295), (-4.0, -7.0, 0.0), 12.0),
    ("AU05", (159, 386, 158, 385, 160, 387), (0.0, 3.0, 0.0), 5.0),
    ("AU06", (205, 425, 117, 346), (0.0, 4.0, 2.0), 14.0),
    ("AU07", (145, 374, 153, 380), (0.0, 2.5, 0.0), 5.0),
    ("AU09", (98, 327, 129, 358), (0.0, 5.0, 0.0), 9.0),
    ("AU10", (0, 37, 267), (0.0, 5.0, 0.0), 8.0),
    ("AU12", (61, 291), (7.0, 9.0, -2.0), 10.0),
    ("AU14", (61, 291), (4.0, 0.0, -3.0), 8.0),
    ("AU15", (61, 291), (2.0, -8.0, 0.0), 10.0),
    ("AU17", (17, 200, 18), (0.0, 4.0, 2.0), 10.0),
    ("AU20", (61, 291), (9.0, -2.0, 0.0), 10.0),
    ("AU23", (61, 291), (-4.0, 0.0, 1.0), 8.0),
    ("AU24", (14, 87, 317), (0.0, 2.0, 0.0), 6.0),
    ("AU43", (159, 386, 158, 385, 160, 387), (0.0, -6.0, 0.0), 5.0),
)
# Lower-face drop below the mouth line: (AU, millimetre-like mesh units of drop).
JAW_FIELDS: tuple[tuple[str, float], ...] = (("AU25", 3.0), ("AU26", 11.0), ("AU28", -2.0))


@dataclass(frozen=True)
class FaceMeshModel:
    """Linear AU -> mesh map: mesh = intercept + aus @ coef, vertices [478, 3] (x right, y up)."""

    coef: np.ndarray  # [20, 478, 3]
    intercept: np.ndarray  # [478, 3]
    triangles: np.ndarray  # [898, 3] int

    def mesh(self, aus: np.ndarray) -> np.ndarray:
        """Vertices [..., 478, 3] for AU vectors [..., 20] (values in [0, 1])."""
        aus = np.asarray(aus, dtype=np.float32)
        return self.intercept + np.tensordot(aus, self.coef, axes=([-1], [0]))


def _resource_dir() -> Path:
    """py-feat's resources folder, found without importing feat (whose import is slow and heavy)."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("py-feat is not installed; it ships the AU-to-mesh model the synthetic faces need")
    return Path(list(spec.submodule_search_locations)[0]) / "resources"


@lru_cache(maxsize=1)
def load_mesh_model() -> FaceMeshModel:
    """Load the v4 PLS model that ships inside the py-feat wheel (no download).

    Same arrays as `feat.plotting.load_face_mesh_viz_model(model_version="v4")` (checked in tests).
    """
    with np.load(_resource_dir() / "au_to_mesh_pls_v4.npz", allow_pickle=False) as z:
        if [str(c) for c in z["au_columns"]] != list(AU_NAMES):
            raise RuntimeError(f"py-feat AU-to-mesh columns changed: {list(z['au_columns'])}")
        raw_coef, raw_intercept = z["coef"].astype(np.float32), z["intercept"].astype(np.float32)
    n_au = len(AU_NAMES)
    coef = raw_coef[:n_au]  # rows beyond the AUs are pose terms, held at zero (we rotate ourselves)
    n_points = coef.shape[1] // 3
    # axis-major flat layout [x_0..x_n | y_0..y_n | z_0..z_n]
    coef = coef.reshape(n_au, 3, n_points).transpose(0, 2, 1)
    intercept = raw_intercept.reshape(3, n_points).T
    triangles = np.asarray(json.loads((_resource_dir() / "canonical_face_tessellation.json").read_text())["triangles"])
    coef = coef + facs_fields(intercept)
    return FaceMeshModel(np.ascontiguousarray(coef, dtype=np.float32),
                         np.ascontiguousarray(intercept, dtype=np.float32), triangles.astype(np.int32))


def facs_fields(neutral: np.ndarray) -> np.ndarray:
    """Per-AU displacement fields [20, n_points, 3] from FACS_FIELDS and JAW_FIELDS around a neutral mesh."""
    fields = np.zeros((len(AU_NAMES), *neutral.shape), np.float32)
    midline = neutral[:N_VERTICES, 0].mean()
    outward = np.sign(neutral[:, 0] - midline)
    for au, anchors, (dx, dy, dz), radius in FACS_FIELDS:
        for anchor in anchors:
            distance = np.linalg.norm(neutral - neutral[anchor], axis=1)
            weight = np.exp(-0.5 * (distance / radius) ** 2)
            side = np.sign(neutral[anchor, 0] - midline)
            same_side = (outward == side) | (side == 0)
            fields[AU_NAMES.index(au), :, 0] += weight * same_side * dx * side
            fields[AU_NAMES.index(au), :, 1] += weight * dy / len(anchors) * 2
            fields[AU_NAMES.index(au), :, 2] += weight * dz
    mouth_line = neutral[13, 1]  # upper inner lip
    below = np.clip((mouth_line - neutral[:, 1]) / 4.0, 0.0, 1.0)
    for au, drop in JAW_FIELDS:
        fields[AU_NAMES.index(au), :, 1] -= below * drop
    return fields
