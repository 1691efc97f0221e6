"""extract_cues' shared pass: one decode per face per input kind feeds every detector of that kind."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import mcam.cues.extract as extract
from mcam.cues.extract import extract_cues
from mcam.cues.store import CueStore
from mcam.detector import FaceBatch
from mcam.manifest import Manifest
from tiny_detector import TinyClipDetector, TinyDetector, write_dataset

torch.set_num_threads(1)


class TinyGrey(TinyDetector):
    """A second image detector (its own store entry): TinyDetector's cues of the face's grey levels."""

    name = "tinygrey"
    prefix = "tinygrey"

    def _extract(self, batch):
        grey = [np.repeat(face.mean(axis=-1, keepdims=True), 3, axis=-1) for face in batch.images]
        return super()._extract(FaceBatch(batch.sample_ids, images=grey))


def detectors() -> dict[str, TinyDetector]:
    """Two image detectors and a clip detector, fresh (call counts at 0)."""
    return {"tiny": TinyDetector(), "tinygrey": TinyGrey(), "tinyclip": TinyClipDetector()}


@pytest.fixture
def data(tmp_path) -> Manifest:
    """12 rows: row 4's image is missing, row 9's truncated; the clip detector reads clips of rows 0-2 (row 1's
    clip is missing), the other rows' stills."""
    manifest = write_dataset(tmp_path / "data", missing=(4,))
    image = manifest.resolve(manifest.table["path"].iloc[9])
    image.write_bytes(image.read_bytes()[:200])
    table = manifest.table.copy()
    table["clip"] = ""
    np.save(manifest.root / "c0.npy", np.random.default_rng(0).integers(1, 255, (8, 24, 24, 3), dtype=np.uint8))
    np.save(manifest.root / "c2.npy", np.random.default_rng(2).integers(1, 255, (8, 24, 24, 3), dtype=np.uint8))
    table.loc[[0, 1, 2], "clip"] = ["c0.npy", "missing.npy", "c2.npy"]
    return Manifest(table, manifest.root)


def _rejects(store: CueStore, manifest: Manifest, detector: TinyDetector, fingerprint: str) -> list[dict[str, str]]:
    return list(csv.DictReader(store.rejects_path(manifest, detector, fingerprint).open()))


@pytest.mark.parametrize("workers", [0, 1])
def test_shared_pass_equals_one_detector_at_a_time(data, tmp_path, workers):
    together = detectors()
    tables = extract_cues(data, together, tmp_path / "together", batch_size=5, progress=False, workers=workers)
    assert list(tables) == ["tiny", "tinygrey", "tinyclip"]  # the order of the detectors mapping
    for name, detector in together.items():
        alone = {name: detectors()[name]}
        single = extract_cues(data, alone, tmp_path / name, batch_size=5, progress=False)[name]
        table = tables[name]
        assert table.fingerprint == single.fingerprint and detector.calls == 3  # 12 rows in batches of 5
        assert np.array_equal(table.values, single.values) and np.array_equal(table.valid, single.valid)
        rejects = _rejects(CueStore(tmp_path / "together"), data, detector, table.fingerprint)
        assert rejects == _rejects(CueStore(tmp_path / name), data, alone[name], single.fingerprint)
        assert {r["sample_id"]: r["reason"] for r in rejects}["s009"] == "truncated_image"
    assert not tables["tiny"].valid[[4, 9]].any() and tables["tiny"].valid.sum() == 10
    assert not tables["tinyclip"].valid[[1, 4, 9]].any() and tables["tinyclip"].valid.sum() == 9


def test_each_face_is_decoded_once_per_input_kind(data, tmp_path, monkeypatch):
    decoded = []
    read_rgb = extract.read_rgb
    monkeypatch.setattr(extract, "read_rgb", lambda path: decoded.append(path.name) or read_rgb(path))
    image_detectors = {"tiny": TinyDetector(), "tinygrey": TinyGrey()}
    extract_cues(data, image_detectors, tmp_path / "cache", batch_size=5, progress=False)
    assert sorted(decoded) == sorted(data.table["path"])  # one decode per row, not one per detector
    decoded.clear()
    tables = extract_cues(data, {**image_detectors, "tinyclip": TinyClipDetector()}, tmp_path / "cache",
                          batch_size=5, progress=False)
    assert sorted(decoded) == sorted(data.table["path"].iloc[3:])  # the clip pass: stills of rows without a clip
    assert tables["tiny"].valid.sum() == 10  # the image cues came from the store


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_when_detectors_stopped_at_different_rows(data, tmp_path, workers):
    reference = extract_cues(data, detectors(), tmp_path / "ref", batch_size=2, progress=False)
    store = CueStore(tmp_path / "cache")
    first = detectors()
    first["tinygrey"].fail_on_call = 4  # 'tiny' has finished batch 4 (rows 0-7), 'tinygrey' only rows 0-5
    with pytest.raises(KeyboardInterrupt):
        extract_cues(data, first, store.root, batch_size=2, progress=False, workers=workers)
    assert store.load_partial(data, first["tiny"], first["tiny"].fingerprint()).done == 8
    assert store.load_partial(data, first["tinygrey"], first["tinygrey"].fingerprint()).done == 6
    assert first["tinyclip"].calls == 0  # the clip pass never started
    second = detectors()
    tables = extract_cues(data, second, store.root, batch_size=2, progress=False, workers=workers)
    assert (second["tiny"].calls, second["tinygrey"].calls, second["tinyclip"].calls) == (2, 3, 6)
    for name, detector in second.items():
        assert np.array_equal(tables[name].values, reference[name].values)
        assert np.array_equal(tables[name].valid, reference[name].valid)
        assert (_rejects(store, data, detector, tables[name].fingerprint)
                == _rejects(CueStore(tmp_path / "ref"), data, detector, reference[name].fingerprint))
        assert not store.partial_path(data, detector, tables[name].fingerprint).exists()


def test_extraction_leaves_the_global_random_state_alone(data, tmp_path):
    """Iterating a DataLoader draws a seed: from the pass's own generator, so cached or not, training after
    extraction draws the same numbers."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    extract_cues(data, detectors(), tmp_path / "cache", progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_loading_step_defaults_to_the_largest_detector_batch(data, tmp_path):
    """No detector's own batch is capped by the loading step: it loads as many faces as the largest detector batch."""
    small, large = TinyDetector(), TinyGrey()
    small.config["batch_size"], large.config["batch_size"] = 3, 8
    tables = extract_cues(data, {"tiny": small, "tinygrey": large}, tmp_path / "cache", progress=False)
    assert small.calls == large.calls == 2  # 12 rows (10 loadable) in loading steps of 8
    reference = extract_cues(data, {"tiny": TinyDetector()}, tmp_path / "ref", batch_size=1, progress=False)["tiny"]
    assert np.array_equal(tables["tiny"].values, reference.values)  # cues do not depend on the step
