"""CueStore + extract_cues: caching, staleness, corruption, resumption, rejects, face loading."""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
import yaml

from mcam.cues.extract import build_detectors, extract_cues, load_faces, load_spec, training_set
from mcam.cues.store import CueStore, StaleCueWarning
from mcam.detector import InputKind
from mcam.manifest import Manifest
from tiny_detector import TinyClipDetector, TinyDetector, write_dataset

torch.set_num_threads(1)


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data", missing=(4,))


def _no_warnings():
    return warnings.catch_warnings(record=True)


def test_extract_then_cache_hit(data, tmp_path):
    detector = TinyDetector()
    tables = extract_cues(data, {"tiny": detector}, tmp_path / "cache", batch_size=5, progress=False)
    table = tables["tiny"]
    assert table.labels == ["tiny.r", "tiny.g", "tiny.b"]
    assert table.values.dtype == np.float32 and table.values.shape == (12, 3)
    assert list(table.sample_ids) == list(data.table["sample_id"])
    assert detector.calls == 3  # 12 rows in batches of 5
    path = CueStore(tmp_path / "cache").path(data, detector)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["manifest_fingerprint"] == data.fingerprint() and meta["n_rows"] == 12 and meta["n_valid"] == 11

    again = TinyDetector()
    with _no_warnings() as caught:
        warnings.simplefilter("always")
        cached = extract_cues(data, {"tiny": again}, tmp_path / "cache", batch_size=5, progress=False)["tiny"]
    assert again.calls == 0 and not caught
    np.testing.assert_array_equal(cached.values, table.values)
    np.testing.assert_array_equal(cached.valid, table.valid)


def test_config_change_is_a_new_entry(data, tmp_path):
    extract_cues(data, {"tiny": TinyDetector()}, tmp_path / "cache", progress=False)
    scaled = TinyDetector(scale=2.0)
    table = extract_cues(data, {"tiny": scaled}, tmp_path / "cache", progress=False)["tiny"]
    assert scaled.calls == 1
    plain = extract_cues(data, {"tiny": TinyDetector()}, tmp_path / "cache", progress=False)["tiny"]
    np.testing.assert_allclose(table.values, 2 * plain.values, rtol=1e-6)


def test_manifest_change_reextracts(data, tmp_path):
    extract_cues(data, {"tiny": TinyDetector()}, tmp_path / "cache", progress=False)
    changed = data.table.copy()
    changed.loc[0, "label"] = "fear"
    detector = TinyDetector()
    extract_cues(Manifest(changed, data.root), {"tiny": detector}, tmp_path / "cache", progress=False)
    assert detector.calls == 1
    assert len(list((tmp_path / "cache").glob("*/tiny-*.npz"))) == 2  # both manifest versions kept


def test_mismatched_entry_warns_and_is_overwritten(data, tmp_path):
    store = CueStore(tmp_path / "cache")
    table = extract_cues(data, {"tiny": TinyDetector()}, store.root, progress=False)["tiny"]
    path = store.path(data, TinyDetector())
    wrong = type(table)(table.detector, table.fingerprint, table.sample_ids[::-1].copy(), table.labels,
                        table.values, table.valid)
    wrong.save(path)
    detector = TinyDetector()
    with pytest.warns(StaleCueWarning, match=r"tiny-.*\.npz.*sample ids differ"):
        extract_cues(data, {"tiny": detector}, store.root, progress=False)
    assert detector.calls == 1
    assert list(store.get(data, detector).sample_ids) == list(data.table["sample_id"])


def test_corrupt_cache_file_warns_and_reextracts(data, tmp_path):
    store = CueStore(tmp_path / "cache")
    extract_cues(data, {"tiny": TinyDetector()}, store.root, progress=False)
    path = store.path(data, TinyDetector())
    path.write_bytes(b"not an npz file")
    detector = TinyDetector()
    with pytest.warns(StaleCueWarning, match="unreadable"):
        table = extract_cues(data, {"tiny": detector}, store.root, progress=False)["tiny"]
    assert detector.calls == 1 and table.valid.sum() == 11
    assert store.get(data, detector) is not None


def test_interrupted_extraction_resumes(data, tmp_path):
    store = CueStore(tmp_path / "cache")
    reference = extract_cues(data, {"tiny": TinyDetector()}, tmp_path / "ref", batch_size=2, progress=False)["tiny"]
    first = TinyDetector()
    first.fail_on_call = 4  # rows 0-5 done (batches of 2), interrupted inside the 4th batch
    with pytest.raises(KeyboardInterrupt):
        extract_cues(data, {"tiny": first}, store.root, batch_size=2, progress=False)
    partial = store.partial_path(data, first)
    assert partial.exists() and not store.path(data, first).exists()
    second = TinyDetector()
    table = extract_cues(data, {"tiny": second}, store.root, batch_size=2, progress=False)["tiny"]
    assert second.calls == 3  # rows 6-11 only
    assert not partial.exists()
    np.testing.assert_array_equal(table.values, reference.values)
    np.testing.assert_array_equal(table.valid, reference.valid)
    rejects = list(csv.DictReader(store.rejects_path(data, second).open()))
    assert [r["sample_id"] for r in rejects] == ["s004"]  # the reject found before the interruption is kept


def test_partial_written_every_n_batches(data, tmp_path):
    """A hard kill (no exception handler runs) still leaves the periodic checkpoint behind."""
    store = CueStore(tmp_path / "cache")
    seen = []

    class Spy(TinyDetector):
        def _extract(self, batch):
            partial = store.load_partial(data, self, self.fingerprint())
            seen.append(0 if partial is None else partial.done)
            return super()._extract(batch)

    extract_cues(data, {"tiny": Spy()}, store.root, batch_size=2, progress=False, checkpoint_every=2)
    assert seen == [0, 0, 4, 4, 8, 8]


def test_face_errors_become_invalid_rows_with_rejects(data, tmp_path, caplog):
    store = CueStore(tmp_path / "cache")
    black = data.table.index[data.table["sample_id"] == "s007"][0]
    import cv2

    cv2.imwrite(str(data.resolve(data.table["path"].iloc[black])), np.zeros((32, 32, 3), np.uint8))
    detector = TinyDetector()
    with caplog.at_level("WARNING"):
        table = extract_cues(data, {"tiny": detector}, store.root, progress=False)["tiny"]
    assert not table.valid[4] and not table.valid[black] and table.valid.sum() == 10
    assert (table.values[4] == 0).all()
    rejects = {r["sample_id"]: r for r in csv.DictReader(store.rejects_path(data, detector).open())}
    assert set(rejects) == {"s004", "s007"}
    assert rejects["s004"]["path"] == "img004.png" and rejects["s004"]["reason"] == "unreadable"
    assert "img004.png" in rejects["s004"]["detail"]
    assert rejects["s007"]["reason"] == "no_cue" and "no valid cue" in rejects["s007"]["detail"]
    assert "2/12 rows invalid" in caplog.text and "1 x unreadable" in caplog.text


def test_load_faces_images_and_clip_fallbacks(data, tmp_path):
    faces, errors = load_faces(data, InputKind.IMAGE, rows=[0, 4])
    assert faces[0].shape == (32, 32, 3) and faces[1] is None and "img004.png" in errors[1]
    table = data.table.copy()
    table["clip"] = ""
    clip = np.random.default_rng(0).integers(0, 255, (8, 16, 16), dtype=np.uint8)
    np.save(data.root / "c0.npy", clip)
    table.loc[0, "clip"] = "c0.npy"
    table.loc[1, "clip"] = "missing.npy"
    clips, errors = load_faces(Manifest(table, data.root), InputKind.CLIP, rows=[0, 1, 2])
    assert clips[0].shape == (8, 16, 16, 3) and (clips[0][..., 1] == clip).all()
    assert clips[1] is None and "missing.npy" in errors[1]
    assert clips[2].shape == (8, 32, 32, 3) and (clips[2][0] == clips[2][-1]).all()  # still -> clip


def test_clip_detector_extracts(data, tmp_path):
    table = extract_cues(data, {"tinyclip": TinyClipDetector()}, tmp_path / "cache", progress=False)["tinyclip"]
    image = extract_cues(data, {"tiny": TinyDetector()}, tmp_path / "cache", progress=False)["tiny"]
    np.testing.assert_allclose(table.values, image.values, rtol=1e-6)  # no clip column: still repeated


def test_training_set(data):
    train = training_set(data, InputKind.IMAGE)
    assert len(train.faces) == 11 and len(train.labels) == 11 and "s004" not in train.subjects
    assert train.au_names == ["AU01", "AU12"] and train.aus.shape == (11, 2)
    with pytest.raises(ValueError, match="non-canonical"):
        training_set(data, InputKind.IMAGE, label_column="region")


def test_spec_yaml_resolves_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "ck").mkdir()
    spec = tmp_path / "ck" / "detectors.yaml"
    spec.write_text(yaml.safe_dump({"detectors": {"a": {"weights": "a.pt", "dim": 3}, "b": {"weights": "random"},
                                                  "c": None}}))
    loaded = load_spec(spec)
    assert loaded["a"] == {"weights": str(tmp_path / "ck" / "a.pt"), "dim": 3}
    assert loaded["b"] == {"weights": "random"} and loaded["c"] == {}
    made = {}
    monkeypatch.setattr("mcam.cues.extract.create_detector", lambda name, **cfg: made.setdefault(name, cfg))
    build_detectors({"x": {"weights": "w.pt"}}, device="cpu")
    assert made["x"] == {"weights": "w.pt", "device": "cpu"}


def test_extract_cli(data, tmp_path, monkeypatch, capsys):
    from mcam.cli.main import main

    monkeypatch.setattr("mcam.cues.extract.create_detector", lambda name, **cfg: TinyDetector(**cfg))
    args = ["extract", "--data", str(data.root), "--detectors", "tiny", "--store", str(tmp_path / "c"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "11/12" in out and "12 samples, 1 detectors" in out
    assert len(list((tmp_path / "c" / "cues").glob("tiny-*/tiny-*.npz"))) == 1
    def unknown(name, **config):  # a user error (mcam.errors.UserError): one line, exit 2
        from mcam.registry import UnknownDetectorError

        raise UnknownDetectorError(f"unknown detector {name!r}")

    monkeypatch.setattr("mcam.cues.extract.create_detector", unknown)
    assert main(args) == 2
    assert "unknown detector 'tiny'" in capsys.readouterr().err
