"""FusionModule: trains any fusion network (passed in) and logs metrics and cue weights by class/region/group."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from mcam.errors import InputError
from mcam.fusion.data import check_cue_metadata
from mcam.fusion.figures import heatmap
from mcam.fusion.metrics import accuracy, macro_f1, mean_by, stacked_confusion, stacked_scores
from mcam.fusion.networks import fusion_loss
from mcam.fusion.predictions import Predictions

Batch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]  # x, valid, y, region, group, row index
CUE_METADATA = "mcam_cues"  # checkpoint key: cue names/dims, detector fingerprints, normalisation, classes


class CueCheckpoints:
    """What the LightningModules that train fusion networks (they have a `network`) share: the network's cue and
    class names, and what a checkpoint carries and checks, the cues' metadata (`CUE_METADATA`) of its data."""

    @property
    def cue_names(self) -> list[str]:
        return list(self.network.cue_names)

    @property
    def class_names(self) -> list[str]:
        return list(self.network.class_names)

    def _datamodule(self) -> Any:
        trainer = self._trainer
        data = getattr(trainer, "datamodule", None) if trainer is not None else None
        return data if hasattr(data, "cue_metadata") else None

    def _cue_metadata(self, replicate: int = 0) -> dict[str, Any]:
        """The cue metadata of the data (of its replicate `replicate`, `CueDataModule.cue_replicates`)."""
        data = self._datamodule()
        network = {"cue_dims": dict(self.network.cue_dims), "class_names": self.class_names}
        return {**(data.replicate(replicate).cue_metadata() if data is not None else {}), **network}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CUE_METADATA] = self._cue_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained on other cues or classes (InputError naming both sides); reuse its training
        normalisation statistics instead of this data's. An older checkpoint without them: a warning."""
        trainer, data = self._trainer, self._datamodule()
        path = f"checkpoint {getattr(trainer, 'ckpt_path', None) or '(given)'}"
        where = data.describe() if data is not None else "this model's data"
        saved = checkpoint.get(CUE_METADATA)
        if saved is None:
            warnings.warn(f"{path} has no cue metadata (saved by an older MCAM): its detector fingerprints and "
                          "normalisation cannot be checked and the cues are standardised with this data's own "
                          "statistics; refit to store them", UserWarning, stacklevel=2)
            own = {f"network.{k}": v for k, v in self.network.state_dict().items()}
            _check_shapes(checkpoint.get("state_dict", {}), own, path, where)
            return
        check_cue_metadata(saved, self._cue_metadata(), path, where)
        if data is not None:
            data.use_normalisation(saved.get("normalisation"))


class FusionModule(CueCheckpoints, pl.LightningModule):
    """Class-weighted cross-entropy training of a fusion network with Adam and LR-on-plateau.

    Logs <split>/loss|acc|f1, per region/group acc and f1, mean cue weight per cue, per class and per
    region, and (TensorBoard) class x cue and region x cue weight heatmaps and a confusion matrix.
    Checkpoints carry the cues' metadata (`CUE_METADATA`); loading one checks it against the data.
    """

    def __init__(self, network: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
                 class_weights: list[float] | None = None, plateau_factor: float = 0.5, plateau_patience: int = 5,
                 monitor: str = "val/loss", region_names: list[str] | None = None,
                 group_names: list[str] | None = None, image_every_n_epochs: int = 10,
                 details_every_n_epochs: int = 1, cue_patience: int | None = None) -> None:
        super().__init__()
        if cue_patience is not None:
            raise ValueError("per-cue early stopping (cue_patience) is FusionEnsemble's; this per-run trainer has none")
        self.save_hyperparameters(ignore=["network", "class_weights", "region_names", "group_names"])
        self.network = network
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weight", weight, persistent=False)
        self.region_names = list(region_names or [])
        self.group_names = list(group_names or [])
        self._collected: dict[str, list[tuple[Tensor, ...]]] = {"train": [], "val": [], "test": []}
        self.epoch_metrics: dict[str, dict[str, float]] = {}  # last epoch's full metrics per split

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(logits [B, K], cue weights [B, n_cues])."""
        return self.network(x, valid)

    # --- steps ------------------------------------------------------------
    def _step(self, batch: Batch, split: str) -> Tensor:
        x, valid, y, region, group, _ = batch
        aux = getattr(self.network, "aux_weight", 0.0)
        outputs = self.network(x, valid, aux=True) if aux > 0 else self.network(x, valid)
        logits, weights = outputs[:2]
        loss = fusion_loss(outputs, y, valid, self.class_weight, aux)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self._collected[split].append((logits.detach().argmax(1), weights.detach(), y, region, group))
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        x, valid, _, _, _, index = batch
        logits, weights = self.network(x, valid)
        return {"index": index, "probs": logits.softmax(1), "weights": weights}

    # --- epoch ends -----------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", images=False)

    def on_validation_epoch_end(self) -> None:
        every = self.hparams.image_every_n_epochs
        if self.trainer.sanity_checking:
            self._collected["val"].clear()
            return
        self._log_epoch("val", images=every > 0 and self.current_epoch % every == 0)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", images=self.hparams.image_every_n_epochs > 0)

    def _log_epoch(self, split: str, images: bool) -> None:
        if not self._collected[split]:
            return
        pred, weights, y, region, group = (torch.cat(t).cpu() for t in zip(*self._collected[split]))
        self._collected[split].clear()
        k = self.network.num_classes
        core = {f"{split}/acc": accuracy(y, pred), f"{split}/f1": macro_f1(y, pred, k)}
        self.log_dict(core)
        every = max(1, self.hparams.get("details_every_n_epochs", 1))
        if split != "test" and self.current_epoch % every and not images:  # breakdowns cost more than a step
            self.epoch_metrics[split] = core
            return
        details = self._breakdown(split, pred, weights.float(), y, region, group, images)
        self.epoch_metrics[split] = {**core, **details}
        # Breakdowns go straight to the loggers: routing ~100 scalars through self.log costs more than training.
        for logger in self.loggers:
            logger.log_metrics(details, step=self.global_step)

    def _breakdown(self, split: str, pred: Tensor, weights: Tensor, y: Tensor, region: Tensor, group: Tensor,
                   images: bool) -> dict[str, float]:
        values, figures = breakdown(split, pred, weights, y, region, group, self.cue_names, self.class_names,
                                    self.region_names, self.group_names)
        if images:
            log_figures(self.loggers, figures, self.current_epoch)
        return values

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        optimizer = torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=self.hparams.plateau_factor,
                                                               patience=self.hparams.plateau_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor}}


def _names(names: Sequence[str], n: int, stem: str) -> list[str]:
    return list(names) if len(names) >= n else [f"{stem}{i}" for i in range(n)]


def breakdown(split: str, pred: Tensor, weights: Tensor, y: Tensor, region: Tensor, group: Tensor,
              cue_names: Sequence[str], class_names: Sequence[str], region_names: Sequence[str],
              group_names: Sequence[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """Scalars of one split's epoch (cue weights overall/per class/per region, acc and F1 per region and group)
    and the figures' data (class x cue and region x cue weights, confusion matrix) for `log_figures`."""
    return breakdowns(split, pred[None], weights[None], y, region, group, cue_names, class_names, region_names,
                      group_names)[0]


def breakdowns(split: str, pred: Tensor, weights: Tensor, y: Tensor, region: Tensor, group: Tensor,
               cue_names: Sequence[str], class_names: Sequence[str], region_names: Sequence[str],
               group_names: Sequence[str]) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """`breakdown` of each of A models' predictions pred [A, B] and weights [A, B, n_cues] of the same rows, at once."""
    k, cues, classes = len(class_names), list(cue_names), list(class_names)
    overall = weights.mean(dim=1).tolist()
    values = [{f"{split}/weight/{cue}": w[c] for c, cue in enumerate(cues)} for w in overall]
    by_class, class_counts = mean_by(weights, y, k)
    regions = _names(region_names, int(region.max()) + 1, "region")
    by_region, region_counts = mean_by(weights, region, len(regions))
    for stem, names, table, counts in (("weight_class", classes, by_class, class_counts),
                                       ("weight_region", regions, by_region, region_counts)):
        rows = table.tolist()
        for i, name in enumerate(names):
            if counts[i]:
                for member, own in zip(values, rows):
                    member.update({f"{split}/{stem}/{name}/{cue}": own[i][c] for c, cue in enumerate(cues)})
    for kind, keys, names in (("region", region, regions),
                              ("group", group, _names(group_names, int(group.max()) + 1, "group"))):
        for i, name in enumerate(names):
            rows = keys == i
            if rows.any():
                acc, f1 = stacked_scores(y[rows], pred[:, rows], k)
                for member, own_acc, own_f1 in zip(values, acc.tolist(), f1.tolist()):
                    member[f"{split}/acc_{kind}/{name}"], member[f"{split}/f1_{kind}/{name}"] = own_acc, own_f1
    matrices = stacked_confusion(y, pred, k)
    class_rows = [c for c, n in zip(classes, class_counts) if n]
    region_rows = [r for r, n in zip(regions, region_counts) if n]
    return [(own, {"split": split, "cues": cues, "classes": classes, "confusion": matrix.numpy(),
                   "by_class": member_class[class_counts > 0].numpy(), "class_rows": class_rows,
                   "by_region": member_region[region_counts > 0].numpy(), "region_rows": region_rows})
            for own, matrix, member_class, member_region in zip(values, matrices, by_class, by_region)]


def log_figures(loggers: Sequence[Any], figures: Mapping[str, Any], step: int, prefix: str = "") -> None:
    """Class x cue and region x cue weight heatmaps and the confusion matrix (from `breakdown`) to TensorBoard."""
    writers = [lg.experiment for lg in loggers if isinstance(lg, TensorBoardLogger)]
    if not writers:
        return
    split, cues, classes = figures["split"], figures["cues"], figures["classes"]
    drawn = {
        f"{prefix}{split}/weights_by_class": heatmap(figures["by_class"], figures["class_rows"], cues,
                                                     f"{split}: mean cue weight by class"),
        f"{prefix}{split}/weights_by_region": heatmap(figures["by_region"], figures["region_rows"], cues,
                                                      f"{split}: mean cue weight by region"),
        f"{prefix}{split}/confusion": heatmap(figures["confusion"], classes, classes, f"{split}: confusion",
                                              fmt="{:.0f}", xlabel="predicted", ylabel="true"),
    }
    for writer in writers:
        for tag, fig in drawn.items():
            writer.add_figure(tag, fig, global_step=step, close=False)


def _check_shapes(saved: dict[str, Tensor], own: dict[str, Tensor], checkpoint: str, data: str) -> None:
    """InputError when a checkpoint's weights do not fit this network (another cue set or class count)."""
    for key, value in saved.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise InputError(f"{checkpoint} holds weights for other cues or classes than {data}: {key} is "
                             f"{list(value.shape)} in the checkpoint, {list(own[key].shape)} for this data")


def predictions_frame(outputs: Sequence[dict[str, Tensor]], metadata: Any, cue_names: Sequence[str],
                      class_names: Sequence[str]) -> Predictions:
    """Per-sample rows (a Predictions): metadata columns, label, pred, class probabilities, cue weights.

    `metadata(rows)` returns the data module's metadata frame for the given row indices.
    """
    index = torch.cat([o["index"] for o in outputs]).cpu().numpy()
    probs = torch.cat([o["probs"] for o in outputs]).float().cpu().numpy()
    weights = torch.cat([o["weights"] for o in outputs]).float().cpu().numpy()
    return Predictions.build(metadata(index), probs, weights, class_names, cue_names)


class PredictionCSVWriter(BasePredictionWriter):
    """Writes `predict` outputs to CSV (default: <log_dir>/predictions.csv)."""

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.path: Path | None = None

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        log_dir = Path(trainer.log_dir or ".")
        default = Path(self.output) if self.output else log_dir / "predictions.csv"
        if outputs and outputs[0]["probs"].dim() == 3:  # a stack: [members, rows, classes], one file per member
            from mcam.fusion.ensemble import member_outputs

            for i, folder in enumerate(pl_module.member_folders(log_dir)):
                self._write(trainer, pl_module, member_outputs(outputs, i),
                            default if folder == log_dir else folder / "predictions.csv")
            return
        self._write(trainer, pl_module, outputs, default)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Sequence[dict[str, Tensor]],
               path: Path) -> None:
        frame = predictions_frame(outputs, trainer.datamodule.metadata, pl_module.cue_names, pl_module.class_names)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path)
