"""pretrain_detectors: region filter, subject-disjoint split, checkpoints + spec, resume, GAM from a base spec."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mcam.cues.extract import build_detectors, extract_cues
from mcam.cues.pretrain import pretrain_detectors, subject_split
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
    train, val = subject_split(data, 0.2, seed=3)
    assert set(train.table["subject"]).isdisjoint(val.table["subject"])
    assert val.table["subject"].nunique() == 2 and len(train) + len(val) == len(data)
    again, _ = subject_split(data, 0.2, seed=3)
    assert list(again.table["sample_id"]) == list(train.table["sample_id"])
    assert subject_split(data, 0.0, seed=3)[1] is None


def test_pretrain_writes_spec_and_resumes(data, tmp_path):
    out = tmp_path / "lam"
    spec_path = pretrain_detectors(data, ["tinytrain", "tiny"], out, region="western_posed", epochs=2)
    spec = yaml.safe_load(spec_path.read_text())["detectors"]
    assert spec == {"tinytrain": {"weights": "tinytrain.pt"}, "tiny": {}}
    (train, val), = TinyTrainable.seen
    assert set(train.subjects).isdisjoint(val.subjects)
    assert all(s.startswith("western_posed") for s in train.subjects + val.subjects)
    metrics = json.loads((out / "tinytrain.metrics.json").read_text())
    assert metrics["metrics"]["n_train"] + metrics["metrics"]["n_val"] == 10 and metrics["region"] == "western_posed"

    loaded = build_detectors(spec_path)["tinytrain"]
    loaded.load()
    assert loaded.config["weights"] == str(out / "tinytrain.pt")
    torch.testing.assert_close(loaded.model.bias, torch.load(out / "tinytrain.pt")["state_dict"]["bias"])
    pretrain_detectors(data, ["tinytrain", "tiny"], out, region="western_posed", epochs=2)
    assert len(TinyTrainable.seen) == 1  # checkpoint + metrics exist: skipped
    pretrain_detectors(data, ["tinytrain", "tiny"], out, region="western_posed", epochs=2, force=True)
    assert len(TinyTrainable.seen) == 2
    pretrain_detectors(data, ["tinytrain", "tiny"], out, region="east_asian", epochs=2)
    assert len(TinyTrainable.seen) == 3  # other data: retrained


def test_gam_fine_tunes_from_base_spec(data, tmp_path):
    lam = pretrain_detectors(data, ["tinytrain", "tiny"], tmp_path / "lam", epochs=1, val_fraction=0)
    gam = pretrain_detectors(data, ["tinytrain", "tiny"], tmp_path / "gam", base_spec=lam, epochs=1)
    lam_bias = torch.load(tmp_path / "lam" / "tinytrain.pt")["state_dict"]["bias"]
    gam_bias = torch.load(tmp_path / "gam" / "tinytrain.pt")["state_dict"]["bias"]
    torch.testing.assert_close(gam_bias, lam_bias + 1.0)  # started from the LAM weights, one more epoch
    tables = extract_cues(data, build_detectors(gam), tmp_path / "cache", progress=False)
    assert set(tables) == {"tinytrain", "tiny"} and tables["tinytrain"].fingerprint != \
        extract_cues(data, build_detectors(lam), tmp_path / "cache", progress=False)["tinytrain"].fingerprint


def test_detectors_with_pretrained_defaults_are_kept(data, tmp_path, monkeypatch):
    monkeypatch.setattr(TinyTrainable, "pretrained_default", True)
    spec = pretrain_detectors(data, ["tinytrain"], tmp_path / "lam")
    assert yaml.safe_load(spec.read_text())["detectors"] == {"tinytrain": {}} and not TinyTrainable.seen
    spec = pretrain_detectors(data, ["tinytrain"], tmp_path / "lam", fine_tune=["tinytrain"])
    assert len(TinyTrainable.seen) == 1  # asked explicitly: trained from random


def test_unknown_region_and_untrainable_fine_tune(data, tmp_path):
    with pytest.raises(ValueError, match="region 'mars'"):
        pretrain_detectors(data, ["tinytrain"], tmp_path / "x", region="mars")
    with pytest.raises(ValueError, match="not trainable"):
        pretrain_detectors(data, ["tiny"], tmp_path / "x", fine_tune=["tiny"])


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
    spec = pretrain_detectors(manifest, names, tmp_path / "lam", region="western_posed", epochs=1)
    for name in names:
        metrics = json.loads((tmp_path / "lam" / f"{name}.metrics.json").read_text())
        assert metrics["subjects_train"] == 3 and metrics["subjects_val"] == 1
    tables = extract_cues(manifest, build_detectors(spec), tmp_path / "cache", progress=False)
    assert set(tables) == set(names)
    assert all(t.valid.all() and t.values.shape[0] == len(manifest) for t in tables.values())
