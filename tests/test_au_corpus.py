"""The AU corpus (issue 13): rendered without emotion labels, read only as such, and what the AU detector learns
from it: the regressor on the corpus (joined by the source region's AU-coded training faces), then (regressor:
frozen) only the AU -> emotion SVM on the source region."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mcam.cues.extract import build_detectors, training_set
from mcam.cues.pretrain import au_coded_rows, au_corpus_base, stored_detectors
from mcam.detector import InputKind
from mcam.errors import InputError
from mcam.labels import AU_NAMES
from mcam.manifest import Manifest, ManifestError, load_manifest
from mcam.splits import train_val_split
from mcam.store import ArtifactStore
from mcam.synth.generate import corpus_aus
from mcam_detectors.au_regressor import AURegressor

REPO = Path(__file__).resolve().parents[1]
CORPUS_CONFIG = REPO / "configs" / "synth" / "au_corpus_tiny.yaml"


@pytest.fixture
def corpus(tiny_au_corpus: Path, tmp_path: Path) -> Path:
    """A copy of the session's tiny AU corpus (tests write beside it)."""
    return Path(shutil.copytree(tiny_au_corpus, tmp_path / "au_corpus"))


def test_corpus_has_aus_and_no_emotion_labels(corpus: Path) -> None:
    manifest = load_manifest(corpus, labelled=False)
    table = manifest.table
    config = yaml.safe_load(CORPUS_CONFIG.read_text())["au_corpus"]
    assert len(table) == config["subjects"] * config["samples_per_subject"]
    assert table["subject"].nunique() == config["subjects"] and not manifest.labelled
    assert (table["label"] == "").all() and manifest.au_columns == list(AU_NAMES)
    regions = {yaml.safe_load((REPO / "configs/synth" / r).read_text())["name"]
               for r in yaml.safe_load(CORPUS_CONFIG.read_text())["regions"]}
    assert set(table["capture"]) <= regions and table["capture"].nunique() > 1  # capture drawn from every region
    active = (table[list(AU_NAMES)] > 0).sum(axis=1)
    low, high = config["active_aus"]
    assert active.max() <= high and set(active) - {0} and min(set(active) - {0}) >= low
    assert (corpus / "contact_sheet.png").is_file()


def test_corpus_draws_cover_every_au_sparsely() -> None:
    rng = np.random.default_rng(0)
    spec = {"active_aus": [1, 6], "intensity": [0.15, 1.0], "neutral_fraction": 0.1}
    draws = np.stack([corpus_aus(spec, rng) for _ in range(2000)])
    active = (draws > 0).sum(axis=1)
    assert 0.05 < (active == 0).mean() < 0.15 and active.max() == 6
    assert (draws > 0).mean(axis=0).min() > 0.05  # every AU shows up
    assert draws[draws > 0].min() >= 0.15 and draws.max() <= 1.0


def test_emotion_readers_refuse_the_corpus(corpus: Path) -> None:
    with pytest.raises(ManifestError, match="row 2, column 'label'.*AU corpus"):
        load_manifest(corpus)
    table = pd.read_csv(corpus / "manifest.csv").drop(columns=list(AU_NAMES))
    table.to_csv(corpus.parent / "no_aus.csv", index=False)
    with pytest.raises(ManifestError, match="needs ground-truth AU columns"):
        load_manifest(corpus.parent / "no_aus.csv", labelled=False)


def test_regressor_on_corpus_then_frozen_svm_on_labelled_rows(corpus: Path, tiny_synth: Path) -> None:
    torch.set_num_threads(1)
    faces = training_set(load_manifest(corpus, labelled=False), InputKind.IMAGE)
    detector = AURegressor(weights=None, image_size=32, device="cpu")
    metrics = detector.fit(faces, epochs=1, seed=0)
    assert metrics["regressor_trained"] == 1.0 and not detector.svm.fitted and "train_acc" not in metrics
    regressor = {k: v.clone() for k, v in detector.model.state_dict().items()}
    labelled = training_set(load_manifest(tiny_synth), InputKind.IMAGE)
    frozen = AURegressor(weights="random", image_size=32, device="cpu", regressor="frozen")
    frozen.load()
    frozen.model.load_state_dict(regressor)
    metrics = frozen.fit(labelled, epochs=1, seed=0)
    assert metrics["regressor_trained"] == 0.0 and frozen.svm.fitted and "train_acc" in metrics
    assert all(torch.equal(regressor[k], v) for k, v in frozen.model.state_dict().items())
    with pytest.raises(ValueError, match="regressor only"):
        AURegressor(weights="random", image_size=32, device="cpu", regressor="frozen").fit(faces, epochs=1)


def test_lam_detectors_train_au_on_the_corpus_and_only_its_svm_on_the_source(corpus: Path, tiny_synth: Path,
                                                                           tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    manifest = load_manifest(corpus, labelled=False)
    with pytest.raises(InputError, match=r"AU corpus\) train AU regressors only; \['micro'\]"):
        stored_detectors(store, manifest, ["au", "micro"], ["au", "micro"], epochs=1)
    base = au_corpus_base(store, manifest, ["au"], epochs=1, seed=0)
    assert base["au"]["regressor"] == "frozen" and Path(base["au"]["weights"]).is_file()
    both = au_corpus_base(store, manifest, ["au", "mesh_au"], epochs=1, seed=0)  # one entry per detector: au's reused
    assert both["au"] == base["au"] and Path(both["mesh_au"]["weights"]).parent != Path(base["au"]["weights"]).parent
    source = load_manifest(tiny_synth)
    source = source.subset(source.table["region"] == "western_posed")
    spec = stored_detectors(store, source, ["au"], ["au"], base_spec=base, epochs=1, seed=0)
    corpus_au = build_detectors({"au": {"weights": base["au"]["weights"]}}, device="cpu")["au"]
    lam_au = build_detectors(spec, device="cpu")["au"]
    lam_au.load(), corpus_au.load()
    assert all(torch.equal(a, b) for a, b in zip(corpus_au.model.state_dict().values(),
                                                 lam_au.model.state_dict().values()))
    assert lam_au.svm.fitted and yaml.safe_load(spec.read_text())["detectors"]["au"]["regressor"] == "frozen"


def test_pretrain_cli_trains_the_au_regressor_on_the_corpus(corpus: Path, tiny_synth: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from mcam.cli.main import main

    out = tmp_path / "det"
    argv = ["pretrain", "--data", str(tiny_synth), "--au-corpus", str(corpus), "--keep", "", "--epochs", "1"]
    assert main([*argv, "--detectors", "au", "--out", str(out)]) == 0
    spec = yaml.safe_load((out / "detectors.yaml").read_text())["detectors"]
    assert spec == {"au": {"regressor": "frozen", "weights": "au.pt"}}
    assert (out / "au_corpus" / "au.pt").is_file()
    data = load_manifest(tiny_synth)
    source = data.subset((data.table["region"] == "western_posed") & (data.table["split"] != "test"))
    made = json.loads((out / "au_corpus" / "au.metrics.json").read_text())["metrics"]
    assert made["n_train"] + made["n_val"] == len(load_manifest(corpus, labelled=False)) + len(
        train_val_split(source, 0.2, 0)[0])  # the corpus and --data's AU-coded training faces
    capsys.readouterr()
    assert main([*argv, "--detectors", "micro", "--out", str(tmp_path / "det2")]) == 2
    assert "none of --detectors ['micro'] learns from an AU corpus" in capsys.readouterr().err
    assert main([*argv, "--detectors", "au", "--region", "mars", "--out", str(tmp_path / "det3")]) == 2
    assert "--region 'mars' not in" in capsys.readouterr().err and not (tmp_path / "det3" / "au_corpus").exists()


def test_source_au_codes_join_the_corpus_train_part_only(corpus: Path, tiny_synth: Path, tmp_path: Path) -> None:
    """The AU-coded faces of the source pre-training's train part join the corpus (labels left out, files the same);
    its val subjects and rows without AUs stay out, and a source without AU columns adds nothing."""
    manifest = load_manifest(corpus, labelled=False)
    source = load_manifest(tiny_synth)
    source = source.subset(source.table["region"] == "western_posed")
    train, val = train_val_split(source, 0.2, 0)
    train.table.loc[0, list(AU_NAMES)] = np.nan  # an unannotated row
    joined = au_coded_rows(manifest, train)
    table = joined.table
    assert len(table) == len(manifest) + len(train) - 1 and not joined.labelled and (table["label"] == "").all()
    assert set(table["sample_id"]) == set(manifest.table["sample_id"]) | set(train.table["sample_id"][1:])
    assert not set(table["subject"]) & set(val.table["subject"])
    for part in (manifest, train.subset(train.table.index > 0)):
        row = table.set_index("sample_id").loc[part.table["sample_id"].iloc[-1]]
        assert joined.resolve(row["path"]).resolve() == part.resolve(part.table["path"].iloc[-1]).resolve()
        assert np.allclose(row[list(AU_NAMES)].to_numpy(float), part.table[list(AU_NAMES)].iloc[-1].to_numpy(float))
    assert au_coded_rows(manifest, train.subset(train.table.index == 0)) is manifest
    assert au_coded_rows(manifest, Manifest(train.table.drop(columns=list(AU_NAMES)), train.root)) is manifest

    store = ArtifactStore(tmp_path / "store")
    base = au_corpus_base(store, manifest, ["au"], source=source, source_val_fraction=0.2, epochs=1, seed=0)
    made = json.loads((Path(base["au"]["weights"]).parent / "au.metrics.json").read_text())["metrics"]
    assert made["n_train"] + made["n_val"] == len(manifest) + len(train_val_split(source, 0.2, 0)[0])


def test_a_rendered_folder_is_reused_only_for_the_config_and_seed_that_made_it(corpus: Path, tmp_path: Path) -> None:
    from mcam.suites.runner import ensure_data

    spec = {"dir": str(corpus), "synth_config": str(CORPUS_CONFIG), "synth_seed": 0}
    assert len(ensure_data(spec, tmp_path, progress=False, labelled=False)) == 48  # as rendered: reused
    with pytest.raises(InputError, match=r"seed 0 \(wanted 3\).*Remove the folder"):
        ensure_data({**spec, "synth_seed": 3}, tmp_path, progress=False, labelled=False)
    bigger = tmp_path / "au_corpus_bigger.yaml"  # the same corpus config with more identities
    bigger.write_text(CORPUS_CONFIG.read_text().replace("subjects: 8", "subjects: 9").replace(
        "regions/", str(REPO / "configs" / "synth" / "regions") + "/"))
    with pytest.raises(InputError, match=r"subjects 8 \(wanted 9\)"):
        ensure_data({**spec, "synth_config": str(bigger)}, tmp_path, progress=False, labelled=False)
    record = corpus / "synth_config.yaml"  # a folder rendered before the digest was recorded: seed and size compared
    record.write_text(yaml.safe_dump({"config": "x.yaml", "seed": 0, "subjects": 8}))
    assert len(ensure_data(spec, tmp_path, progress=False, labelled=False)) == 48
    with pytest.raises(InputError, match=r"subjects 8 \(wanted 9\)"):
        ensure_data({**spec, "synth_config": str(bigger)}, tmp_path, progress=False, labelled=False)


def test_detector_seeds_of_a_suite_share_one_au_regressor(tiny_synth: Path, corpus: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The AU regressor is the suite's one off-the-shelf AU model (seed `au_corpus.seed`): every detector seed builds
    on the same store entry, while what the detector seeds train (vgg, the au SVM) differs between them."""
    from mcam.suites.runner import SuiteRunner
    from mcam.suites.spec import SuiteSpec

    spec = SuiteSpec(data={"dir": str(tiny_synth)}, au_corpus={"dir": str(corpus), "seed": 3},
                     detectors=["vgg", "au"], pretrain=["vgg", "au"], pretrain_epochs=1, detector_seeds=[0, 1],
                     store=str(tmp_path / "store"))
    runner = SuiteRunner(spec, tmp_path / "out", progress=False)
    monkeypatch.setattr(SuiteRunner, "_extract", lambda self, manifest, detectors: {})  # detectors are the point
    manifest = load_manifest(tiny_synth)
    specs = [runner._lam(manifest, runner._reserved(manifest), seed)[0] for seed in (0, 1)]
    records = [e.made_from for e in ArtifactStore(tmp_path / "store").entries() if e.kind == "detectors"]
    corpus_entries = [r for r in records if r["purpose"] == "au_corpus"]
    assert len(corpus_entries) == 1 and corpus_entries[0]["seed"] == 3  # one regressor, trained with the corpus seed
    detectors = [build_detectors(path, device="cpu") for path in specs]
    for detector in (d for pair in detectors for d in pair.values()):
        detector.load()
    regressors = [d["au"].model.state_dict() for d in detectors]
    assert all(torch.equal(regressors[0][k], regressors[1][k]) for k in regressors[0])
    assert detectors[0]["au"].svm.digest() != detectors[1]["au"].svm.digest()  # the SVM heads: per detector seed
    vgg = [d["vgg"].model.state_dict() for d in detectors]
    assert not all(torch.equal(vgg[0][k], vgg[1][k]) for k in vgg[0] if vgg[0][k].is_floating_point())
