"""`mcam fit|validate|test|predict --config ...`: the LightningCLI of the fusion models."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mcam.fusion.data import CueDataModule
from mcam.fusion.module import FusionModule, PredictionCSVWriter

TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "name": "fusion"}},
    "accelerator": "auto",
    "max_epochs": 200,
    "log_every_n_steps": 1,
}


class FusionCLI(LightningCLI):
    """LightningCLI with the default callbacks and the data -> network links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(PredictionCSVWriter, "prediction_writer")
        parser.set_defaults({"early_stopping.monitor": "val/loss", "early_stopping.patience": 20,
                             "checkpoint.monitor": "val/loss", "checkpoint.filename": "best",
                             "lr_monitor.logging_interval": "epoch"})
        for source, target in (("cue_dims", "network.init_args.cue_dims"),
                               ("num_classes", "network.init_args.num_classes"),
                               ("cue_labels", "network.init_args.cue_labels"),
                               ("class_names", "network.init_args.class_names"),
                               ("class_weights", "class_weights"),
                               ("region_names", "region_names"),
                               ("group_names", "group_names")):
            parser.link_arguments(f"data.{source}", f"model.{target}", apply_on="instantiate")

    def before_fit(self) -> None:
        self._check_raw_cues()
        adapted = self.datamodule.adapted_spec
        if adapted is not None:  # GAM: keep the fine-tuned detectors spec beside the run's config.yaml
            log_dir = Path(self.trainer.log_dir or ".")
            log_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(adapted, log_dir / "gam_detectors.yaml")

    def _check_raw_cues(self) -> None:
        if getattr(self.model.network, "needs_raw_cues", False) and self.datamodule.standardize:
            raise ValueError(f"{type(self.model.network).__name__} reads detector probabilities: "
                             "set data.standardize: false (configs/model/late_average.yaml does)")


def run_lightning_cli(argv: Sequence[str] | None = None, run: bool = True) -> FusionCLI:
    """Run (or, with run=False, only build) the fusion LightningCLI on `argv`."""
    if argv is not None and list(argv) == sys.argv[1:]:
        argv = None  # the same words as the command line: let LightningCLI read them (no double-args warning)
    return FusionCLI(FusionModule, CueDataModule, args=None if argv is None else list(argv), run=run,
                     trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0,
                     save_config_kwargs={"overwrite": True})
