"""pretrain_detectors: region filter, subject-disjoint split, checkpoints + spec, resume, GAM from a base spec."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mcam.cues.extract import build_detectors, extract_cues
from mcam.cues.pretrain import adapt_detectors, pretrain_detectors, stored_detectors
from mcam.manifest import load_manifest
from mcam.splits import train_val_split
from mcam.store import ArtifactStore
from tiny_detector import TinyDetector, TinyTrainable, write_dataset

torch.set_num_threads(1)
CLASSES = {"tiny": TinyDetector, "tinytrain": TinyTrainable}


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setattr("mcam.cues.pretrain.detector_class", CLASSES.__getitem__)
    monkeypatch.setattr("mcam.cues.pretrain.create_detector", lambda name, **cfg: CLASSES[name](**cfg))
    monkeypatch.setattr("mcam.cues.extract.create_detector", lambda name, **cfg: CLASSES[name](**cfg))
    TinyTrainable.seen.clear()
    return write_dataset(tmp_path / "data", n_subjects=10, per_subject=2)


def test_subject_split_is_disjoint_and_seeded(data):
    train, val = train_val_split(data, 0.2, seed=3)
    assert set(train.table["subject"]).isdisjoint(val.table["subject"])
    assert val.table["subject"].nunique() == 2 and len(train) + len(val) == len(data)
    again, _ = train_val_split(data, 0.2, seed=3)
    assert list(again.table["sample_id"]) == list(train.table["sample_id"])
    assert train_val_split(data, 0.0, seed=3)[1] is None


def test_pretrain_writes_spec_and_resumes(data, tmp_path):
    out = tmp_path / "lam"
    spec_path = pretrain_detectors(data, ["tinytrain", "tiny"], out, train=["tinytrain"], region="western_posed",
                                   epochs=2)
    spec = yaml.safe_load(spec_path.read_text())["detectors"]
    assert spec == {"tinytrain": {"weights": "tinytrain.pt"}, "tiny": {}}
    (train, val), = TinyTrainable.seen
    assert set(train.subjects).isdisjoint(val.subjects)
    assert all(s.startswith("western_posed") for s in train.subjects + val.subjects)
    metrics = json.loads((out / "tinytrain.metrics.json").read_text())
    assert metrics["metrics"]["n_train"] + metrics["metrics"]["n_val"] == 10
    assert json.loads((out / "made_from.json").read_text())["region"] == "western_posed"

    loaded = build_detectors(spec_path)["tinytrain"]
    loaded.load()
    assert loaded.config["weights"] == str(out / "tinytrain.pt")
    torch.testing.assert_close(loaded.model.bias, torch.load(out / "tinytrain.pt")["state_dict"]["bias"])
    pretrain_detectors(data, ["tinytrain", "tiny"], out, train=["tinytrain"], region="western_posed", epochs=2)
    assert len(TinyTrainable.seen) == 1  # made from the same content and settings: skipped
    pretrain_detectors(data, ["tinytrain", "tiny"], out, train=["tinytrain"], region="western_posed", epochs=2,
                       force=True)
    assert len(TinyTrainable.seen) == 2
    pretrain_detectors(data, ["tinytrain", "tiny"], out, train=["tinytrain"], region="east_asian", epochs=2)
    assert len(TinyTrainable.seen) == 3  # other data: retrained


def test_gam_fine_tunes_from_base_spec(data, tmp_path):
    lam = pretrain_detectors(data, ["tinytrain", "tiny"], tmp_path / "lam", train=["tinytrain"], epochs=1,
                             val_fraction=0)
    gam = pretrain_detectors(data, ["tinytrain", "tiny"], tmp_path / "gam", train=["tinytrain"], base_spec=lam,
                             epochs=1)
    lam_bias = torch.load(tmp_path / "lam" / "tinytrain.pt")["state_dict"]["bias"]
    gam_bias = torch.load(tmp_path / "gam" / "tinytrain.pt")["state_dict"]["bias"]
    torch.testing.assert_close(gam_bias, lam_bias + 1.0)  # started from the LAM weights, one more epoch
    tables = extract_cues(data, build_detectors(gam), tmp_path / "cache", progress=False)
    assert set(tables) == {"tinytrain", "tiny"} and tables["tinytrain"].fingerprint != \
        extract_cues(data, build_detectors(lam), tmp_path / "cache", progress=False)["tinytrain"].fingerprint


def test_detectors_not_trained_are_kept_as_given(data, tmp_path):
    spec = pretrain_detectors(data, ["tinytrain"], tmp_path / "lam", train=[])
    assert yaml.safe_load(spec.read_text())["detectors"] == {"tinytrain": {}} and not TinyTrainable.seen


def test_unknown_region_and_untrainable(data, tmp_path):
    with pytest.raises(ValueError, match="region 'mars'"):
        pretrain_detectors(data, ["tinytrain"], tmp_path / "x", train=["tinytrain"], region="mars")
    with pytest.raises(ValueError, match="not trainable"):
        pretrain_detectors(data, ["tiny"], tmp_path / "x", train=["tiny"])


def test_stored_detectors_are_trained_once_per_content_key(data, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = stored_detectors(store, data, ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0)
    again = stored_detectors(store, data, ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0)
    assert first == again and len(TinyTrainable.seen) == 1
    assert json.loads((first.parent / "entry.json").read_text())["made_from"]["seed"] == 0
    other_seed = stored_detectors(store, data, ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=1)
    assert other_seed != first and len(TinyTrainable.seen) == 2
    # the thread count and device type change trained weights: they are part of the key
    made_from = json.loads((first.parent / "entry.json").read_text())["made_from"]
    assert made_from["threads"] == 1 and made_from["device"] == "cpu"
    two_threads = stored_detectors(store, data, ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0, threads=2)
    assert two_threads != first and len(TinyTrainable.seen) == 3
    # so are the training precision and the version of the detector's fit procedure
    assert made_from["precision"] == "32-true" and made_from["fit"] == {"tinytrain": TinyTrainable.fit_version}
    with pytest.raises(ValueError, match="tinytrain: its fit has no precision option"):
        stored_detectors(store, data, ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0, precision="bf16-mixed")
    assert len(TinyTrainable.seen) == 3

    copied = tmp_path / "elsewhere"  # the same bytes in another folder, files touched: the same key
    shutil.copytree(data.root, copied)
    for file in copied.iterdir():
        os.utime(file, (1, 1))
    moved = stored_detectors(store, load_manifest(copied), ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0)
    assert moved == first and len(TinyTrainable.seen) == 3
    image = copied / data.table["path"].iloc[0]
    image.write_bytes(image.read_bytes()[:-1] + b"x")  # content changed: a new entry, the old one untouched
    before = (first.parent / "tinytrain.pt").read_bytes()
    changed = stored_detectors(store, load_manifest(copied), ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0)
    assert changed != first and (first.parent / "tinytrain.pt").read_bytes() == before


def test_gam_adapts_on_exactly_the_given_rows_from_the_base_content(data, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    lam = stored_detectors(store, data, ["tinytrain", "tiny"], ["tinytrain"], epochs=1, seed=0)
    rows = data.subset(data.table["region"] == "east_asian")
    gam = adapt_detectors(store, lam, rows, ["tinytrain"], epochs=1, seed=0)
    (train, val) = TinyTrainable.seen[-1]
    assert val is None and sorted(train.sample_ids) == sorted(rows.table["sample_id"])
    spec = yaml.safe_load(gam.read_text())["detectors"]
    assert spec["tinytrain"] == {"weights": "tinytrain.pt"} and spec["tiny"] == {}
    record = json.loads((gam.parent / "entry.json").read_text())
    assert record["made_from"]["purpose"] == "gam" and record["depends_on"] == [f"detectors/{lam.parent.name}"]
    assert adapt_detectors(store, lam, rows, ["tinytrain"], epochs=1, seed=0) == gam and len(TinyTrainable.seen) == 2


@pytest.mark.slow
def test_real_detectors_pretrain_then_extract(tmp_path):
    """LAM end to end on tiny synthetic data with every registered trainable default cue (one epoch each)."""
    from mcam.manifest import load_manifest
    from mcam.registry import available, detector_class
    from mcam.synth.generate import generate

    root = Path(__file__).resolve().parents[1]
    generate(tmp_path / "data", root / "configs/synth/tiny.yaml", 0)
    manifest = load_manifest(tmp_path / "data")
    names = [n for n in ("au", "micro", "micro_plus", "macro_cnn", "vgg") if n in available()
             and detector_class(n).trainable]
    spec = pretrain_detectors(manifest, names, tmp_path / "lam", train=names, region="western_posed", epochs=1)
    for name in names:
        metrics = json.loads((tmp_path / "lam" / f"{name}.metrics.json").read_text())
        assert metrics["subjects_train"] == 3 and metrics["subjects_val"] == 1
    tables = extract_cues(manifest, build_detectors(spec), tmp_path / "cache", progress=False)
    assert set(tables) == set(names)
    assert all(t.valid.all() and t.values.shape[0] == len(manifest) for t in tables.values())
