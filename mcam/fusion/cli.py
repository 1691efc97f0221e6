"""`mcam fit|validate|test|predict --config ...`: the LightningCLI of the fusion models."""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from mcam.errors import InputError
from mcam.fusion.data import CueDataModule
from mcam.fusion.module import FusionModule, PredictionCSVWriter

# "Seed set to N" on stderr before every run (and before a one-line error): the seed is in the run's config.yaml.
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)

TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "name": "fusion"}},
    "accelerator": "auto",
    "max_epochs": 200,
    "log_every_n_steps": 1,
}


class FusionCLI(LightningCLI):
    """LightningCLI with the default callbacks and the data -> network links."""

    # Building the parser (every class signature, four subcommands) costs about a second; a suite's worker
    # process runs many fits, so the parser is built once per process and reused (parsing keeps no state
    # between calls; instantiators are re-registered per run, replacing the previous run's).
    _parsers: dict[tuple[bool, str], tuple[Any, ...]] = {}

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        key = (add_subcommands, repr((main_kwargs, subparser_kwargs)))
        if key not in FusionCLI._parsers:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            FusionCLI._parsers[key] = (self.parser, getattr(self, "_subcommand_parsers", None),
                                       getattr(self, "_subcommand_method_arguments", None))
        self.parser, parsers, arguments = FusionCLI._parsers[key]
        if parsers is not None:
            self._subcommand_parsers, self._subcommand_method_arguments = parsers, arguments

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse; a refused option or config value is an InputError (one line from `mcam`), not usage + exit."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise InputError(" ".join(str(err).split())) from err
        command = self.config.get("subcommand")
        ckpt_path = self.config[command].get("ckpt_path") if command else None
        if ckpt_path not in (None, "best", "last", "hpc", "registry"):  # Lightning loads it next, with a traceback
            check_checkpoint_file(ckpt_path)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(PredictionCSVWriter, "prediction_writer")
        parser.add_argument("--threads", type=int, default=1,
                            help="CPU threads for training, GAM fine-tuning included (explicit: results depend on it)")
        parser.link_arguments("threads", "data.threads")
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

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.threads < 1:
            raise InputError(f"threads must be >= 1, got {config.threads}")
        torch.set_num_threads(config.threads)

    def after_fit(self) -> None:
        """Score the best checkpoint: test metrics, then the test part's predictions (predictions.csv in the log
        folder), so `mcam fit --config <run>/config.yaml` reproduces a suite run's predictions."""
        if self.trainer.interrupted or not len(self.datamodule.metadata().query("part == 'test'")):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = "best" if checkpoint is not None and checkpoint.best_model_path else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
        self.trainer.predict(self.model, datamodule=self.datamodule, ckpt_path=best, return_predictions=False)

    def before_fit(self) -> None:
        self._check_raw_cues()
        adapted = self.datamodule.adapted_spec
        if adapted is not None:  # GAM: keep the fine-tuned detectors spec beside the run's config.yaml
            log_dir = Path(self.trainer.log_dir or ".")
            log_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(adapted, log_dir / "gam_detectors.yaml")

    def _check_raw_cues(self) -> None:
        if getattr(self.model.network, "needs_raw_cues", False) and self.datamodule.standardize:
            raise InputError(f"{type(self.model.network).__name__} reads detector probabilities: "
                             "set data.standardize: false (configs/model/late_average.yaml does)")


def check_checkpoint_file(path: str | Path) -> None:
    """InputError naming the file unless it is a readable Lightning checkpoint (Lightning would raise a traceback)."""
    if not Path(path).is_file():
        raise InputError(f"ckpt_path {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # as Lightning loads it
    except Exception as err:  # corrupt, truncated or not a torch file at all: torch raises many kinds
        raise InputError(f"ckpt_path {path}: not a readable checkpoint ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise InputError(f"ckpt_path {path}: not a Lightning checkpoint of a fusion model (no state_dict in it)")


class _Parsed(Exception):
    """Raised by _ParseOnlyCLI once the arguments are parsed: nothing gets instantiated."""


class _ParseOnlyCLI(FusionCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        raise _Parsed


def run_lightning_cli(argv: Sequence[str] | None = None, run: bool = True,
                      cli_class: type[FusionCLI] = FusionCLI) -> FusionCLI:
    """Run (or, with run=False, only build) the fusion LightningCLI on `argv`."""
    if argv is not None and list(argv) == sys.argv[1:]:
        argv = None  # the same words as the command line: let LightningCLI read them (no double-args warning)
    try:
        return cli_class(FusionModule, CueDataModule, args=None if argv is None else list(argv), run=run,
                         trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0,
                         save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False})
    except MisconfigurationException as err:  # Lightning's word for a user setting it cannot honour (e.g. no GPU)
        raise InputError(" ".join(str(err).split())) from err


def check_arguments(argv: Sequence[str]) -> None:
    """Parse `argv` (e.g. `fit --config ...`) as `run_lightning_cli` would, instantiating nothing: an InputError
    naming the refused key, before any long work that would end in this run."""
    try:
        run_lightning_cli(list(argv), cli_class=_ParseOnlyCLI)
    except _Parsed:
        return
