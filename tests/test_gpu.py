"""On a CUDA device: the smoke suite (pre-training, GAM fine-tuning, extraction, fusion stacks) and `mcam fit` in GAM
mode with the detectors following the trainer's accelerator. Marked `gpu`: the default run deselects them;
`pytest -m gpu` runs them (skipped where torch sees no CUDA device). Extraction on CUDA against CPU is
tests/test_detector_conformance.py::test_cues_on_cuda_equal_cues_on_cpu."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from mcam.assets import asset_path
from test_bench_smoke import _mcam

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _made_on(store: Path) -> set[str]:
    """The device types the store's trained detectors were made on."""
    return {json.loads(p.read_text())["made_from"].get("device") for p in (store / "detectors").glob("*/entry.json")}


def test_smoke_suite_on_cuda(tmp_path: Path) -> None:
    out, store = tmp_path / "smoke", tmp_path / "store"
    _mcam(tmp_path, "bench", "loro", "--profile", "smoke", "--out", str(out), "--quiet", "--accelerator", "gpu",
          "--store", str(store))
    results = pd.read_csv(out / "results.csv")
    assert set(results["mode"]) == {"lam", "gam"} and results["accuracy"].between(0, 1).all()
    assert _made_on(store) == {"cuda"}  # pre-training and GAM ran on the GPU, and their keys say so
    config = (out / results["run_dir"].iloc[0] / "config.yaml").read_text()
    assert "accelerator: gpu" in config


def test_gam_fit_follows_the_trainer_accelerator(tmp_path: Path) -> None:
    """`mcam fit` in GAM mode: detectors fine-tune on the trainer's device (cuda here, cpu with accelerator cpu)."""
    lam = tmp_path / "lam"
    _mcam(tmp_path, "synth", "--config", str(asset_path("configs/synth/tiny.yaml")), "--out", "data/synth_tiny")
    _mcam(tmp_path, "pretrain", "--data", "data/synth_tiny", "--detectors", "au,micro", "--keep", "",
          "--epochs", "1", "--out", str(lam), "--device", "cuda")
    for accelerator, device in (("gpu", "cuda"), ("cpu", "cpu")):
        store = tmp_path / f"store-{accelerator}"
        _mcam(tmp_path, "fit", "--config", str(asset_path("configs/model/attention.yaml")),
              "--config", str(asset_path("configs/data/synth_within.yaml")),
              "--config", str(asset_path("configs/trainer/cpu_fast.yaml")),
              "--config", str(asset_path("configs/mode/gam.yaml")),
              "--trainer.accelerator", accelerator, "--data.data_dir", "data/synth_tiny",
              "--data.detectors", str(lam / "detectors.yaml"), "--data.store", str(store), "--data.cues", "[au, micro]",
              "--data.gam_epochs", "1", "--trainer.max_epochs", "2",
              "--trainer.logger.init_args.save_dir", str(tmp_path / f"fit-{accelerator}"))
        assert _made_on(store) == {device}
