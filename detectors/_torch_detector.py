"""One base for the trainable CNN detectors (vgg, micro, micro_plus, au, macro, macro_cnn).

A subclass says what its network is (`build_network` from an architecture dict), what the network reads and
says (`pretrained_config`: input size, normalisation, output labels and licence, like timm's pretrained
configs), how faces become an input batch (`preprocess`) and the cue of a batch (`cue_outputs`). The base does
the rest the same way for all: weights (None: the detector's default or a clear error; "random": an explicit
seeded init; a checkpoint path, checked against the architecture; `init_from`: all but the head), checkpoints
(`save`), provenance, batched inference under `torch.inference_mode`, and training through
`mcam_detectors._lightning_fit` (a LightningModule run by a Lightning Trainer).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from mcam.detector import Detector, DetectorUnavailableError, FaceBatch, InputKind, TrainingSet, WeightsInfo
from mcam.determinism import seeded
from mcam.labels import head_map
from mcam_detectors._checkpoint import load_checkpoint, save_checkpoint, source_of
from mcam_detectors._lightning_fit import (Augment, FaceDataset, FitSettings, accuracy, fit_network, head_targets,
                                          to_layout)


@dataclass(frozen=True)
class PretrainedConfig:
    """What a detector's network reads and says (cf. timm's `pretrained_cfg`).

    input_size: (channels, height, width), for clips (channels, frames, height, width).
    mean, std: per-channel normalisation of pixel values in [0, 1]; None = each face (or clip) is standardised
    on its own. labels: the network's outputs in order. interpolation: how faces are resized (OpenCV name).
    """

    input_size: tuple[int, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    labels: tuple[str, ...]
    interpolation: str = "area"
    licence: str = ""


def _plain(value: Any) -> Any:
    """Tuples as lists, so an architecture value compares equal to the same value read back from a checkpoint."""
    return list(value) if isinstance(value, tuple) else value


class TorchDetector(Detector):
    """Base of the trainable CNN detectors; see the module docstring for what subclasses provide.

    Config every subclass has: weights (see `_load`), seed (random init and nothing else), batch_size (inference
    chunk size: not part of the cue's identity). `head` names the label head a classifier's `fit` trains.
    """

    trainable = True
    fit_version = "lightning-1"  # fit through mcam_detectors._lightning_fit
    head: ClassVar[str] = "canonical7"
    named_weights: ClassVar[tuple[str, ...]] = ()  # keywords besides "random" that `load_named` understands
    checkpoint_detectors: ClassVar[tuple[str, ...]] = ()  # other detectors whose checkpoints this one reads
    supports_init_from: ClassVar[bool] = False
    no_weights: ClassVar[str] = "pre-train with `mcam pretrain` (weights=PATH), or pass weights=random explicitly"

    def __init__(self, device: str | None = None, weights: str | None = None, seed: int = 0, batch_size: int = 64,
                 **config: Any) -> None:
        super().__init__(device=device, weights=weights, seed=int(seed), batch_size=int(batch_size), **config)
        self.model: nn.Module | None = None
        self._provenance: str | None = None
        self._from_scratch = False
        self._arch: dict[str, Any] | None = None

    # --- what a subclass provides -----------------------------------------------------------------
    @abstractmethod
    def pretrained_config(self) -> PretrainedConfig:
        """Input size, normalisation, output labels and licence of this detector's network."""

    def arch(self) -> dict[str, Any]:
        """Architecture values a checkpoint must match (None: whatever the checkpoint has)."""
        return {}

    @abstractmethod
    def build_network(self, arch: dict[str, Any]) -> nn.Module:
        """A freshly initialised network for `arch` (built under the detector's seed)."""

    @abstractmethod
    def preprocess(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """Usable faces -> the network's float input batch (on the CPU)."""

    def usable(self, face: Any) -> bool:
        """Whether `face` can be read at all (unusable faces are invalid rows)."""
        return isinstance(face, np.ndarray) and face.ndim in (2, 3) and face.size > 0 and \
            (face.ndim == 2 or face.shape[-1] in (1, 3))

    def faces_of(self, batch: FaceBatch) -> list[np.ndarray]:
        """The faces of a batch this detector reads."""
        return batch.clips if self.input_kind == InputKind.CLIP else batch.images

    def cue_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The cue of an input batch (default: the class probabilities of a classifier)."""
        return torch.softmax(self.model(x), dim=1)

    def load_default(self, model: nn.Module) -> str:
        """Weights for `weights=None` into `model`, returning their provenance (default: none exist)."""
        raise DetectorUnavailableError(f"{self.name}: no weights chosen; {self.no_weights}")

    def default_weights_info(self) -> WeightsInfo:
        return WeightsInfo(f"none chosen: {self.no_weights}", False)

    def load_named(self, weights: str, model: nn.Module) -> str:
        """Weights named by a keyword of `named_weights` into `model`, returning their provenance."""
        raise NotImplementedError

    def named_weights_info(self, weights: str) -> WeightsInfo:
        raise NotImplementedError

    def restore(self, model: nn.Module, state: dict[str, Any]) -> None:
        """A checkpoint's state_dict into `model` (subclasses keep extra entries, such as a fitted SVM)."""
        model.load_state_dict(state)

    def state_to_save(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    # --- description ----------------------------------------------------------------------------
    def weights_info(self) -> WeightsInfo:
        licence = self.pretrained_config().licence
        weights, init_from = self.config["weights"], self.config.get("init_from")
        if self._provenance is not None:
            return WeightsInfo(self._provenance, True, licence)
        if init_from is not None:
            return WeightsInfo(f"initialised from checkpoint {init_from} (all but the last layer)",
                               Path(init_from).is_file(), licence)
        if weights is None:
            return self.default_weights_info()
        if weights == "random":
            return WeightsInfo(f"random init (explicit, seed {self.config['seed']})", True, licence)
        if weights in self.named_weights:
            return self.named_weights_info(weights)
        return WeightsInfo(f"checkpoint {weights}", Path(weights).is_file(), licence)

    # --- weights --------------------------------------------------------------------------------
    def _load(self) -> None:
        """Build the network and fill it: `init_from` (all but the head of a checkpoint), weights None (the
        default, `load_default`), "random" (the seeded init as built), a keyword (`load_named`) or a checkpoint."""
        weights, init_from = self.config["weights"], self.config.get("init_from")
        arch, payload = self.arch(), None
        source = init_from if init_from is not None else weights
        if source is not None and source != "random" and source not in self.named_weights:
            payload, arch = self._checkpoint(source, whole=init_from is None)
        with seeded(self.config["seed"]):  # draws from torch's global generators: seeded, then restored
            model = self.build_network(arch)
        if init_from is not None:
            model.load_state_dict({k: v for k, v in payload["state_dict"].items() if not k.startswith("head.")},
                                  strict=False)
            provenance = f"all but the last layer from checkpoint {source_of(init_from)} ({payload['provenance']})"
        elif weights is None:
            provenance = self.load_default(model)
        elif weights == "random":
            provenance = f"random init (explicit, seed {self.config['seed']})"
        elif payload is None:
            provenance = self.load_named(weights, model)
        else:
            self.restore(model, dict(payload["state_dict"]))
            provenance = f"checkpoint {source_of(weights)}: {payload['provenance']}"
        self.model = model.to(self.device).eval()
        self._arch = arch
        self._provenance = provenance
        self._from_scratch = weights == "random" and init_from is None

    def _checkpoint(self, path: str, whole: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """A checkpoint's payload and the architecture to build for it; ValueError where it does not fit this
        detector's settings (`whole=False`: only the body is taken, so the head may differ)."""
        payload = load_checkpoint(path, accepted=(self.name, *self.checkpoint_detectors))
        saved = payload.get("arch", {})
        for key, value in self.arch().items():
            if value is None or (key == "head" and not whole) or _plain(saved.get(key)) == _plain(value):
                continue
            hint = (f"; to start from it use init_from={path}" if key == "head" and self.supports_init_from
                    else "; construct the detector with the same settings")
            raise ValueError(f"{self.name}: checkpoint {path} was made with {key}={saved.get(key)!r}, this detector "
                             f"has {key}={value!r}{hint}")
        return payload, {key: saved.get(key) if value is None else value for key, value in self.arch().items()}

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint that `weights=PATH` loads: state_dict, architecture, provenance."""
        self.load()
        assert self._provenance is not None and self._arch is not None
        return save_checkpoint(path, detector=self.name, arch={k: _plain(v) for k, v in self._arch.items()},
                               provenance=self._provenance, state_dict=self.state_to_save())

    # --- use ------------------------------------------------------------------------------------
    def infer(self, faces: Sequence[np.ndarray],
              outputs: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
        """`outputs` (default `cue_outputs`) of usable faces as float32 [N, ...], in chunks of `batch_size`."""
        self.load()
        self.model.eval()
        outputs = outputs or self.cue_outputs
        step = self.config["batch_size"]
        parts = []
        with torch.inference_mode():
            for start in range(0, len(faces), step):
                x = to_layout(self.preprocess(faces[start:start + step]).to(self.device))
                parts.append(outputs(x).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        faces = self.faces_of(batch)
        valid = np.array([self.usable(face) for face in faces], dtype=bool)
        cues = np.zeros((len(batch), self.dim), dtype=np.float32)
        index = np.flatnonzero(valid)
        if len(index):
            cues[index] = self.infer([faces[i] for i in index])
        return cues, valid

    # --- training -------------------------------------------------------------------------------
    def labelled(self, data: TrainingSet) -> tuple[FaceDataset, int]:
        """Usable faces whose label the head knows, as a dataset of class indices; and how many were skipped."""
        targets = head_targets(data.labels, head_map(self.head))
        keep = [i for i in targets.keep if self.usable(data.faces[i])]
        y = targets.y[np.isin(targets.keep, keep)]
        return FaceDataset([data.faces[i] for i in keep], y, self.preprocess), len(data.labels) - len(keep)

    def fit_classifier(self, train: TrainingSet, val: TrainingSet | None, settings: FitSettings,
                       augment: Augment | None = None, note: str = "") -> dict[str, float]:
        """Train the loaded network (logits out) with cross-entropy on the head's labels; metrics returned.

        `after_fit` then runs (e.g. BatchNorm recalibration); train/val accuracy are measured after it.
        """
        self.load()
        data, skipped = self.labelled(train)
        if len(data) == 0:
            raise ValueError(f"{self.name}.fit: no usable training face has a label of head {self.head}")
        metrics = fit_network(self.model, data, loss=nn.functional.cross_entropy, settings=settings,
                              device=self.device, augment=augment, what=self.name)
        self.after_fit(data)
        batch = self.config["batch_size"]
        metrics["train_acc"] = accuracy(self.model, data, self.device, batch)
        if val is not None:
            metrics["val_acc"] = accuracy(self.model, self.labelled(val)[0], self.device, batch)
        metrics.update(n_train=float(len(data)), n_skipped=float(skipped))
        self._from_scratch = False
        self._provenance += (f"; fit on {len(data)} faces ({settings.epochs} epochs, lr {settings.lr}, "
                             f"seed {settings.seed}{note})")
        return metrics

    def after_fit(self, data: FaceDataset) -> None:
        """Hook run after training, before the metrics (default: nothing)."""
