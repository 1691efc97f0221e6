"""`mcam fit|predict` on tiny precomputed cues: run folder, TensorBoard scalars/images, predictions CSV, GAM wiring."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fusion_toy import toy_manifest, toy_tables
from mcam.cli.main import main
from mcam.fusion.data import CueDataModule
from mcam.manifest import load_manifest

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _fit_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIGS / "model/attention.yaml"), "--config", str(CONFIGS / "trainer/default.yaml"),
            "--config", str(CONFIGS / "trainer/cpu_fast.yaml"), "--data.data_dir", str(root),
            "--trainer.max_epochs", "3", "--model.image_every_n_epochs", "2",
            "--trainer.logger.init_args.save_dir", str(runs), *extra]


def test_fit_writes_config_checkpoint_and_tensorboard_then_predict(cue_data: Path, tmp_path: Path) -> None:
    assert main(_fit_args(cue_data, tmp_path, "--data.cue_dir", str(cue_data / "cues"))) == 0
    run = tmp_path / "fusion" / "version_0"
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "best.ckpt").exists()
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for cue in ("au", "macro", "micro_plus", "vgg"):
        assert f"val/weight/{cue}" in scalars and f"val/weight_region/east_asian/{cue}" in scalars
        assert f"val/weight_class/happy/{cue}" in scalars
    assert {"val/loss", "val/acc", "val/f1", "train/f1", "val/acc_region/latin_wild", "val/f1_group/dark"} <= scalars
    weights = [events.Scalars(f"val/weight/{c}")[-1].value for c in ("au", "macro", "micro_plus", "vgg")]
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)
    images = set(events.Tags()["images"])
    assert {"val/weights_by_class", "val/weights_by_region", "val/confusion"} <= images

    assert main(["predict", "--config", str(run / "config.yaml"),
                 "--ckpt_path", str(run / "checkpoints" / "best.ckpt")]) == 0
    predictions = pd.read_csv(tmp_path / "fusion" / "version_1" / "predictions.csv")
    assert {"sample_id", "region", "subject", "label", "pred", "prob_happy", "weight_macro"} <= set(predictions)
    assert set(predictions["part"]) == {"test"}
    assert (predictions.filter(like="weight_").sum(1) - 1).abs().max() < 1e-5


class _FakeDetector:
    def __init__(self, name: str, trainable: bool) -> None:
        self.name, self.trainable = name, trainable

    def fingerprint(self) -> str:
        return f"fake-{self.name}"


def test_gam_finetunes_on_training_part_then_reextracts(cue_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import mcam.cues.extract as extract
    import mcam.cues.pretrain as pretrain

    tables = toy_tables(toy_manifest())
    calls: dict[str, object] = {}
    base_spec = tmp_path / "lam.yaml"
    base_spec.write_text("detectors: {macro: {}, vgg: {}}\n")

    def build(spec: object, device: object = None) -> dict[str, _FakeDetector]:
        calls.setdefault("built", []).append(Path(spec).name)
        calls.setdefault("devices", []).append(device)
        return {"macro": _FakeDetector("macro", True), "vgg": _FakeDetector("vgg", False)}

    def fake_adapt(store, base_spec, train, fine_tune, **kw):  # noqa: ANN001, ANN003
        calls["pretrain"] = (set(train.table["sample_id"]), list(fine_tune), base_spec)
        calls["adapt_device"] = kw.get("device")
        out_dir = Path(store.root) / "detectors" / "adapted"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "detectors.yaml").write_text("detectors: {macro: {weights: tuned.ckpt}}\n")
        return out_dir / "detectors.yaml"

    def fake_extract(manifest, detectors, cache_dir, **kw):  # noqa: ANN001, ANN003
        calls["extracted"] = sorted(detectors)
        return {n: tables[n] for n in detectors}

    monkeypatch.setattr(extract, "build_detectors", build)
    monkeypatch.setattr(extract, "extract_cues", fake_extract)
    monkeypatch.setattr(pretrain, "adapt_detectors", fake_adapt)
    assert main(_fit_args(cue_data, tmp_path, "--config", str(CONFIGS / "mode/gam.yaml"),
                          "--data.detectors", str(base_spec), "--data.store", str(tmp_path / "store"))) == 0
    run = tmp_path / "fusion" / "version_0"
    frame = pd.read_csv(cue_data / "manifest.csv")
    trained_ids, names, spec = calls["pretrain"]
    assert names == ["macro"] and Path(spec) == base_spec
    # exactly the data module's training part (GAM fine-tunes on part == 'train' only), never a val/test row
    data_args = yaml.safe_load((run / "config.yaml").read_text())["data"]
    split_args = {k: data_args[k] for k in ("split", "val_fraction", "test_fraction", "seed", "regions",
                                            "train_regions", "test_regions", "train_datasets", "test_datasets",
                                            "target")}
    parts = CueDataModule.from_tables(tables, load_manifest(cue_data), **split_args).metadata()
    expected = set(parts.loc[parts["part"] == "train", "sample_id"])
    assert 0 < len(expected) < len(frame) and trained_ids == expected
    assert not trained_ids & set(parts.loc[parts["part"] != "train", "sample_id"])
    assert calls["built"] == ["lam.yaml", "detectors.yaml"] and calls["extracted"] == ["macro", "vgg"]
    # the detectors follow the trainer (accelerator cpu): built, fine-tuned and extracted on the CPU, said in the config
    assert calls["devices"] == ["cpu", "cpu"] and calls["adapt_device"] == "cpu" and data_args["device"] == "cpu"
    assert (run / "gam_detectors.yaml").exists() and (run / "config.yaml").exists()
