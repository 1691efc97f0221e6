"""Python API mirroring `mcam fit`: train one fusion model on cue tables and get predictions back."""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from mcam.cues.table import CueTable
from mcam.fusion.data import CueDataModule
from mcam.fusion.module import FusionModule, predictions_frame
from mcam.fusion.networks import NETWORKS
from mcam.manifest import Manifest

ModelSpec = str | Mapping[str, Any] | nn.Module


@dataclass
class FusionResult:
    """One trained fusion model: test predictions (probs + cue weights per sample), test metrics, files."""

    predictions: pd.DataFrame
    metrics: dict[str, float]
    checkpoint: Path | None
    run_dir: Path | None
    module: FusionModule
    data: CueDataModule

    def weights_by(self, column: str = "region") -> pd.DataFrame:
        """Mean cue weight per value of a predictions column (region, label, group, ...)."""
        return self.predictions.groupby(column)[[c for c in self.predictions if c.startswith("weight_")]].mean()


def _network_class(model: ModelSpec) -> type:
    if isinstance(model, nn.Module):
        return type(model)
    if isinstance(model, str):
        if model not in NETWORKS:
            raise KeyError(f"unknown fusion model {model!r}; known: {sorted(NETWORKS)} or a class_path mapping")
        return NETWORKS[model]
    module_name, _, name = str(model["class_path"]).rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def build_network(model: ModelSpec, data: CueDataModule, **init_args: Any) -> nn.Module:
    """A fusion network for the data's cues/classes: a NETWORKS name, a {class_path, init_args} mapping or a module."""
    if isinstance(model, nn.Module):
        return model
    if not isinstance(model, str):
        init_args = {**dict(model.get("init_args", {})), **init_args}
    return _network_class(model)(cue_dims=data.cue_dims, num_classes=data.num_classes, cue_labels=data.cue_labels,
                                 class_names=data.class_names, **init_args)


def train_fusion(cue_tables: Mapping[str, CueTable], manifest: Manifest | pd.DataFrame, model: ModelSpec = "attention",
                 cues: str | list[str] | None = None, split: Mapping[str, Any] | None = None, max_epochs: int = 100,
                 seed: int = 0, log_dir: str | Path | None = None, lr: float = 1e-3, batch_size: int = 256,
                 patience: int = 10, target: str = "canonical7", balance: str = "weights",
                 accelerator: str = "auto", progress: bool = False, log_images: bool = False,
                 network_args: Mapping[str, Any] | None = None) -> FusionResult:
    """Train and test one fusion model (early stopping on val loss, best weights restored).

    `split` holds CueDataModule split arguments, e.g. {'split': 'regions', 'test_regions': ['east_asian']}.
    With `log_dir` the run keeps TensorBoard events and its checkpoint there; without, nothing is written.
    """
    pl.seed_everything(seed, verbose=False)
    raw = getattr(_network_class(model), "needs_raw_cues", False)
    data = CueDataModule.from_tables(cue_tables, manifest, cues=cues, seed=seed, target=target, balance=balance,
                                     batch_size=batch_size, standardize=not raw, **dict(split or {}))
    network = build_network(model, data, **dict(network_args or {}))
    module = FusionModule(network, lr=lr, class_weights=data.class_weights, region_names=data.region_names,
                          group_names=data.group_names, image_every_n_epochs=10 if log_images else 0)
    with tempfile.TemporaryDirectory(prefix="mcam-fusion-") as scratch:
        logger = TensorBoardLogger(str(log_dir), name="", version="") if log_dir is not None else False
        run_dir = Path(logger.log_dir) if logger else None
        checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints") if run_dir else scratch, filename="best",
                                     monitor="val/loss")
        trainer = pl.Trainer(max_epochs=max_epochs, accelerator=accelerator, logger=logger,
                             callbacks=[EarlyStopping("val/loss", patience=patience), checkpoint],
                             enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                             log_every_n_steps=1)
        trainer.fit(module, datamodule=data)
        if checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        trainer.test(module, datamodule=data, verbose=False)
        metrics = dict(module.epoch_metrics["test"])
        outputs = trainer.predict(module, dataloaders=data.test_dataloader())
        best = Path(checkpoint.best_model_path) if run_dir and checkpoint.best_model_path else None
    predictions = predictions_frame(outputs, data.metadata, network.cue_names, network.class_names)
    return FusionResult(predictions, metrics, best, run_dir, module, data)
