"""`mcam fit|validate|test|predict --config ...`: the LightningCLI of the fusion models."""
from __future__ import annotations

import copy
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from mcam.detector import accelerator_device
from mcam.errors import InputError
from mcam.fusion.data import CueDataModule
from mcam.fusion.ensemble import FusionEnsemble, replay_scalars
from mcam.fusion.module import FusionModule, PredictionCSVWriter
from mcam.io import write_atomic

# "Seed set to N" on stderr before every run (and before a one-line error): the seed is in the run's config.yaml.
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)

TRAINING_SUMMARY = "training.yaml"  # per run: best/stopped epoch and validation scores at the best epoch
TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "name": "fusion"}},
    "accelerator": "auto",
    "max_epochs": 200,
    "log_every_n_steps": 1,
}


class _CLI(LightningCLI):
    """What both fusion CLIs share: a parser built once per process, data -> network links, threads."""

    # Building the parser (every class signature, four subcommands) costs about a second; a suite's worker
    # process runs many fits, so the parser is built once per process and reused (parsing keeps no state
    # between calls; instantiators are re-registered per run, replacing the previous run's).
    _parsers: dict[tuple[type, bool, str], tuple[Any, ...]] = {}

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        key = (type(self), add_subcommands, repr((main_kwargs, subparser_kwargs)))
        if key not in _CLI._parsers:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            _CLI._parsers[key] = (self.parser, getattr(self, "_subcommand_parsers", None),
                                  getattr(self, "_subcommand_method_arguments", None))
        self.parser, parsers, arguments = _CLI._parsers[key]
        if parsers is not None:
            self._subcommand_parsers, self._subcommand_method_arguments = parsers, arguments

    def add_callback_groups(self, parser: LightningArgumentParser) -> None:
        """The early_stopping, checkpoint and lr_monitor settings (as Lightning callbacks, or applied by the model)."""
        raise NotImplementedError

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
        self.add_callback_groups(parser)
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
        device = accelerator_device(config.trainer.accelerator)
        if config.data.device is None and (device != "cuda" or torch.cuda.is_available()):
            config.data.device = device  # the detectors (extraction, GAM) run where the trainer does (without CUDA
            # the trainer refuses the accelerator itself, naming it)

    def before_fit(self) -> None:
        if self.datamodule.n_replicates > 1 and not isinstance(self.model, FusionEnsemble):
            raise InputError("data.cue_replicates: only a stack (FusionEnsemble, `mcam fit`) trains on replicates")
        if getattr(self.model.network, "needs_raw_cues", False) and self.datamodule.standardize:
            raise InputError(f"{type(self.model.network).__name__} reads detector probabilities: "
                             "set data.standardize: false (configs/model/late_average.yaml does)")

    def _keep_adapted_spec(self, folders: Sequence[Path]) -> None:
        """GAM: the fine-tuned detectors spec beside each run's config.yaml."""
        adapted = self.datamodule.adapted_spec
        for folder in folders if adapted is not None else ():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(adapted, folder / "gam_detectors.yaml")


class FusionCLI(_CLI):
    """`mcam fit`: a FusionEnsemble of the seeds in model.seeds (default: one member, seed_everything).

    Early stopping and checkpoint settings (early_stopping.*, checkpoint.*) are applied per member by the
    ensemble. A stack of one writes its run into the logger's folder; a larger stack writes one run folder
    per member (`member_dirs`, default <log_dir>/seed<s>, or r<replicate>-seed<s> over `model.replicates`) with
    config.yaml (that member alone, its own replicate's cue files), predictions.csv,
    checkpoints/best.ckpt and TensorBoard events.
    """

    def add_callback_groups(self, parser: LightningArgumentParser) -> None:
        for callback, key in ((EarlyStopping, "early_stopping"), (ModelCheckpoint, "checkpoint"),
                              (LearningRateMonitor, "lr_monitor")):  # settings kept; the ensemble applies them
            parser.add_class_arguments(callback, key, instantiate=False)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        for setting in ("patience", "min_delta", "monitor"):
            parser.link_arguments(f"early_stopping.{setting}", f"model.{setting}")
        parser.add_argument("--member_dirs", type=Optional[list[str]], default=None,
                            help="run folder of each member of a stack (default: <log_dir>/seed<seed>)")

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._default_seeds = config.model.seeds is None
        if self._default_seeds:  # one member, seeded like the run; config.yaml keeps `seeds: null`
            config.model.seeds = [int(config.seed_everything or 0)]

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self._default_seeds:
            config = self.config[self.subcommand] if self.subcommand else self.config
            config.model.seeds = None

    def before_fit(self) -> None:
        super().before_fit()
        config = self.config[self.subcommand]
        log_dir = Path(self.trainer.log_dir or ".")
        self.model.member_dirs = config.member_dirs
        folders = self.model.member_folders(log_dir)
        if len(folders) != len(self.model.seeds):
            raise InputError(f"{len(folders)} member_dirs for {len(self.model.seeds)} seeds (model.seeds)")
        self.model.member_dirs = [str(f) for f in folders]
        self._keep_adapted_spec(sorted({log_dir, *folders}))

    def after_fit(self) -> None:
        """Each member at its best epoch: test metrics and the test part's predictions, its checkpoint, and for a
        member with its own folder its config.yaml and TensorBoard events, so `mcam fit --config <run>/config.yaml`
        reproduces a suite run's predictions."""
        if self.trainer.interrupted:
            return
        model, config = self.model, self.config[self.subcommand]
        if len(self.datamodule.metadata().query("part == 'test'")):
            self.trainer.test(model, datamodule=self.datamodule, verbose=False)
            self.trainer.predict(model, datamodule=self.datamodule, return_predictions=False)
        log_dir = Path(self.trainer.log_dir or ".")
        name = f"{config.checkpoint.filename or 'best'}.ckpt"
        template = self._member_template(config)
        for i, folder in enumerate(model.member_folders(log_dir)):
            own = folder != log_dir
            checkpoints = Path(config.checkpoint.dirpath) if config.checkpoint.dirpath and not own \
                else folder / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save(model.member_checkpoint(i), checkpoints / name)
            write_atomic(folder / TRAINING_SUMMARY,
                         yaml.dump(model.member_summary(i), Dumper=yaml.CSafeDumper, sort_keys=False))
            if own:
                replay_scalars(model.member_history(i), str(folder))
                member = {**template, "seed_everything": model.seeds[i]}
                if self.datamodule.n_replicates > 1:  # the member's own replicate's cues, as its single run reads them
                    own = self.datamodule.cue_replicates[model.replicates[i]]
                    member["data"] = {**member["data"], "cue_files": own}
                logger = member["trainer"].get("logger")
                if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
                    member["trainer"] = {**member["trainer"], "logger": {**logger, "init_args": {
                        **logger["init_args"], "save_dir": str(folder), "name": "", "version": ""}}}
                write_atomic(folder / "config.yaml",
                             yaml.dump(member, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True))

    def _member_template(self, config: Namespace) -> dict[str, Any]:
        """The stack's config as one member's (seed and folder filled in per member): `mcam fit --config` of it
        re-runs that member alone. Dumped once: jsonargparse's dump costs more than a member's training."""
        member = copy.deepcopy(config)
        member.model.seeds, member.model.replicates, member.data.cue_replicates = None, None, None
        member.member_dirs = None
        member.checkpoint.dirpath, member.prediction_writer.output = None, None
        return yaml.load(self._parser(self.subcommand).dump(member, skip_none=False), Loader=yaml.CSafeLoader)


class SingleRunCLI(_CLI):
    """The per-run path MCAM had before stacks: one FusionModule per fit, Lightning's EarlyStopping and
    ModelCheckpoint (kept so benchmarks/fusion_speed.py can compare both on the same rows)."""

    def add_callback_groups(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")

    def before_fit(self) -> None:
        super().before_fit()
        self._keep_adapted_spec([Path(self.trainer.log_dir or ".")])

    def after_fit(self) -> None:
        """Score the best checkpoint: test metrics, then the test part's predictions (predictions.csv)."""
        if self.trainer.interrupted or not len(self.datamodule.metadata().query("part == 'test'")):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = "best" if checkpoint is not None and checkpoint.best_model_path else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
        self.trainer.predict(self.model, datamodule=self.datamodule, ckpt_path=best, return_predictions=False)


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


def run_lightning_cli(argv: Sequence[str] | None = None, run: bool = True, per_run: bool = False,
                      cli_class: type[_CLI] | None = None) -> _CLI:
    """Run (or, with run=False, only build) the fusion LightningCLI on `argv`; `per_run` runs the previous
    one-FusionModule-per-fit path instead of a FusionEnsemble."""
    if argv is not None and list(argv) == sys.argv[1:]:
        argv = None  # the same words as the command line: let LightningCLI read them (no double-args warning)
    cli_class = cli_class or (SingleRunCLI if per_run else FusionCLI)
    module = FusionModule if issubclass(cli_class, SingleRunCLI) else FusionEnsemble
    # the ensemble writes each member's best checkpoint itself: no Lightning checkpoint of the whole stack
    defaults = TRAINER_DEFAULTS if module is FusionModule else {**TRAINER_DEFAULTS, "enable_checkpointing": False}
    try:
        return cli_class(module, CueDataModule, args=None if argv is None else list(argv), run=run,
                         trainer_defaults=defaults, seed_everything_default=0,
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
