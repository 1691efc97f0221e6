"""Python API mirroring `mcam fit`: train one fusion model on cue tables and get predictions back."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from mcam.assets import asset_path, load_yaml
from mcam.cues.table import CueTable
from mcam.fusion.data import CueDataModule
from mcam.fusion.ensemble import FusionEnsemble, member_outputs
from mcam.fusion.module import predictions_frame
from mcam.fusion.networks import NETWORKS
from mcam.fusion.predictions import Predictions
from mcam.manifest import Manifest

ModelSpec = str | Mapping[str, Any] | nn.Module


@dataclass
class FusionResult:
    """One trained fusion model: test predictions (probs + cue weights per sample), test metrics, files."""

    predictions: Predictions
    metrics: dict[str, float]
    checkpoint: Path | None
    run_dir: Path | None
    module: FusionEnsemble
    data: CueDataModule

    def weights_by(self, column: str = "region") -> pd.DataFrame:
        """Mean cue weight (columns: cues) per value of a predictions column (region, label, group, ...)."""
        return self.predictions.weights_by(column)


def _network_class(model: ModelSpec) -> type:
    if isinstance(model, nn.Module):
        return type(model)
    if isinstance(model, str):
        if model not in NETWORKS:
            raise KeyError(f"unknown fusion model {model!r}; known: {sorted(NETWORKS)} or a class_path mapping")
        return NETWORKS[model]
    module_name, _, name = str(model["class_path"]).rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def model_settings(model: ModelSpec) -> dict[str, Any]:
    """The `model:` section of configs/model/<name>.yaml for a NETWORKS name (what `mcam fit` starts from: the
    network's init_args, lr, weight_decay, cue_patience); {} for anything else."""
    if not isinstance(model, str):
        return {}
    try:
        return dict(load_yaml(asset_path(f"configs/model/{model}.yaml")).get("model") or {})
    except FileNotFoundError:
        return {}


def build_network(model: ModelSpec, data: CueDataModule, **init_args: Any) -> nn.Module:
    """A fusion network for the data's cues/classes: a NETWORKS name (with its configs/model/<name>.yaml init_args,
    as `mcam fit` builds it), a {class_path, init_args} mapping or a module."""
    if isinstance(model, nn.Module):
        return model
    configured = model_settings(model).get("network", {}) if isinstance(model, str) else model
    init_args = {**dict(configured.get("init_args") or {}), **init_args}
    return _network_class(model)(cue_dims=data.cue_dims, num_classes=data.num_classes, cue_labels=data.cue_labels,
                                 class_names=data.class_names, **init_args)


def train_fusion(cue_tables: Mapping[str, CueTable], manifest: Manifest | pd.DataFrame, model: ModelSpec = "attention",
                 cues: str | list[str] | None = None, split: Mapping[str, Any] | None = None, max_epochs: int = 100,
                 seed: int = 0, log_dir: str | Path | None = None, lr: float | None = None, batch_size: int = 256,
                 patience: int = 10, target: str = "canonical7", balance: str = "weights",
                 accelerator: str = "auto", progress: bool = False, log_images: bool = False,
                 network_args: Mapping[str, Any] | None = None, weight_decay: float | None = None) -> FusionResult:
    """Train and test one fusion model (early stopping on val loss, best weights restored) with the trainer of
    `mcam fit` and the suites (a FusionEnsemble of one member).

    lr, weight_decay and (for a named model) the network's arguments and per-cue early stopping default to
    configs/model/<model>.yaml, as `mcam fit` has them. `split` holds CueDataModule split arguments, e.g. {'split': 'regions', 'test_regions': ['east_asian']}.
    With `log_dir` the run keeps TensorBoard events and its checkpoint there; without, nothing is written.
    """
    pl.seed_everything(seed, verbose=False)
    raw = getattr(_network_class(model), "needs_raw_cues", False)
    data = CueDataModule.from_tables(cue_tables, manifest, cues=cues, seed=seed, target=target, balance=balance,
                                     batch_size=batch_size, standardize=not raw, **dict(split or {}))
    network = build_network(model, data, **dict(network_args or {}))
    settings = model_settings(model)
    module = FusionEnsemble(network, seeds=[seed], lr=settings.get("lr", 1e-3) if lr is None else lr,
                            weight_decay=settings.get("weight_decay", 0.0) if weight_decay is None else weight_decay,
                            cue_patience=settings.get("cue_patience"), patience=patience,
                            class_weights=data.class_weights, region_names=data.region_names,
                            group_names=data.group_names, image_every_n_epochs=10 if log_images else 0)
    logger = TensorBoardLogger(str(log_dir), name="", version="") if log_dir is not None else False
    run_dir = Path(logger.log_dir) if logger else None
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator=accelerator, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1)
    trainer.fit(module, datamodule=data)  # the member ends at its best epoch's weights
    trainer.test(module, datamodule=data, verbose=False)
    metrics = {k: v for epoch, scores in module.member_history(0) for k, v in scores.items() if k.startswith("test/")}
    outputs = trainer.predict(module, dataloaders=data.test_dataloader())
    best = None
    if run_dir is not None:
        best = run_dir / "checkpoints" / "best.ckpt"
        best.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.member_checkpoint(0), best)
    predictions = predictions_frame(member_outputs(outputs, 0), data.metadata, network.cue_names, network.class_names)
    return FusionResult(predictions, metrics, best, run_dir, module, data)
