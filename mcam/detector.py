"""The detector plugin interface: a face (image or clip) in, a labelled cue vector out."""
from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from mcam.errors import InputError, UserError
from mcam.store import file_digest


NOT_IDENTITY = ("batch_size", "device")  # config keys that do not change what a detector outputs


def _is_file(value: object) -> bool:
    return isinstance(value, (str, Path)) and Path(value).is_file()


class InputKind(str, Enum):
    """What a detector reads: a still face crop or a short clip of face crops."""

    IMAGE = "image"
    CLIP = "clip"


@dataclass(frozen=True)
class WeightsInfo:
    """Where a detector's weights come from and whether they are usable offline now."""

    source: str
    available_offline: bool
    licence: str = ""


@dataclass
class FaceBatch:
    """A batch of face crops handed to `Detector.extract`.

    images: RGB uint8 arrays [H, W, 3] (already cropped to the face).
    clips: RGB uint8 arrays [T, H, W, 3] (for clip detectors; stills become clips by `still_to_clip`).
    """

    sample_ids: list[str]
    images: list[np.ndarray] = field(default_factory=list)
    clips: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sample_ids)


@dataclass
class TrainingSet:
    """Faces with targets for `Detector.fit`: labels are canonical emotions; aus are ground-truth intensities."""

    faces: list[np.ndarray]
    labels: list[str]
    subjects: list[str]
    aus: np.ndarray | None = None
    au_names: list[str] | None = None
    sample_ids: list[str] | None = None  # manifest ids, for detectors that read per-sample files (openface)


class DetectorUnavailableError(UserError, RuntimeError):
    """The detector's weights cannot be had here (offline, missing file); the message says how to get them."""


class Detector(ABC):
    """Base class of every cue detector plugin.

    Subclasses set `name`, `input_kind`, `prefix` and implement `output_names`,
    `weights_info`, `_load` and `_extract`; trainable ones set `trainable = True`
    and implement `fit` and `save`.
    """

    name: ClassVar[str]
    input_kind: ClassVar[InputKind] = InputKind.IMAGE
    prefix: ClassVar[str]
    trainable: ClassVar[bool] = False
    learns_from_aus: ClassVar[bool] = False  # its fit trains on an AU corpus (ground-truth AUs, no emotion labels)
    # The version of the training procedure behind `fit`: part of trained detectors' store keys, so a change to
    # how a detector trains makes new entries instead of reusing weights the old procedure made.
    fit_version: ClassVar[str] = "1"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's `fit` marks the weights as changed in memory (they no longer match a weights file)."""
        super().__init_subclass__(**kwargs)
        if "fit" in cls.__dict__:
            original = cls.__dict__["fit"]

            @functools.wraps(original)
            def fit(self: "Detector", *args: Any, **kw: Any) -> dict[str, float]:
                try:
                    return original(self, *args, **kw)
                finally:
                    self._weights_changed = True

            cls.fit = fit  # type: ignore[method-assign]

    def __init__(self, device: str | None = None, **config: Any) -> None:
        self.device = default_device() if device is None else check_device(device, f"detector {self.name!r}: device")
        self.config: dict[str, Any] = dict(config)
        self._loaded = False

    # --- description -------------------------------------------------
    @abstractmethod
    def output_names(self) -> list[str]:
        """Names of the cue dimensions without prefix (e.g. 'happy', 'AU12_r', '0017')."""

    @property
    def labels(self) -> list[str]:
        """Cue column labels, prefixed: 'macro.happy', 'au.AU12_r', 'vgg.0017'."""
        return [f"{self.prefix}.{n}" for n in self.output_names()]

    @property
    def dim(self) -> int:
        return len(self.output_names())

    @abstractmethod
    def weights_info(self) -> WeightsInfo:
        """Where the weights come from and whether they are available offline."""

    def weights_digest(self) -> str:
        """A hash of the weights actually used: a checkpoint file's bytes (no model is loaded), else (no file,
        or weights changed in memory by `fit`) the loaded model's state_dict."""
        weights = self.config.get("weights")
        if _is_file(weights) and not getattr(self, "_weights_changed", False):
            return file_digest(weights)
        self.load()
        module = getattr(self, "model", None)
        if module is None:
            return "no-weights"
        digest = hashlib.sha256()
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of name, config and weights' content: any change invalidates cached cues.

        Portable: a weights file counts by its content, not its path; settings that do not change
        the cue (`batch_size`, `device`) are left out.
        """
        config = {k: v for k, v in self.config.items() if k not in NOT_IDENTITY}
        if _is_file(config.get("weights")):
            config["weights"] = "<file>"
        payload = json.dumps({"name": self.name, "config": config, "weights": self.weights_digest()},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # --- use ----------------------------------------------------------
    def load(self) -> None:
        """Load weights once, lazily."""
        if not self._loaded:
            self._load()
            self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Load weights (raise DetectorUnavailableError with instructions if impossible)."""

    def extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        """Cues float32 [B, D] and validity bool [B] for a batch of faces."""
        self.load()
        cues, valid = self._extract(batch)
        cues = np.asarray(cues, dtype=np.float32)
        valid = np.asarray(valid, dtype=bool)
        if cues.shape != (len(batch), self.dim) or valid.shape != (len(batch),):
            raise RuntimeError(f"{self.name}: extract returned {cues.shape}/{valid.shape}, "
                               f"expected ({len(batch)}, {self.dim})/({len(batch)},)")
        cues[~valid] = 0.0
        return cues, valid

    @abstractmethod
    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        """Detector-specific extraction."""

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, **kwargs: Any) -> dict[str, float]:
        """Train or fine-tune on faces; returns final metrics. Only for trainable detectors."""
        raise NotImplementedError(f"detector {self.name!r} is not trainable")

    def save(self, path: str | Path) -> Path:
        """Save trained weights + config as a checkpoint usable via config `weights: PATH`."""
        raise NotImplementedError(f"detector {self.name!r} is not trainable")


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def accelerator_device(accelerator: object) -> str | None:
    """The detectors' device for a Lightning `accelerator` setting, so detectors run where the fusion does:
    'cpu' -> 'cpu', 'gpu'/'cuda' -> 'cuda', anything else ('auto', None) -> None (the default: cuda when visible)."""
    if isinstance(accelerator, str) and accelerator.lower() in ("cpu", "gpu", "cuda"):
        return "cpu" if accelerator.lower() == "cpu" else "cuda"
    return None


def lightning_device(device: str) -> dict[str, Any]:
    """Lightning Trainer arguments that train on exactly `device`: 'cpu' -> cpu; 'cuda' / 'cuda:1' -> that one GPU
    (one device: never a multi-device strategy started on the detector's behalf); 'mps' -> mps."""
    import torch

    parsed = torch.device(device)
    if parsed.type == "cuda":
        return {"accelerator": "gpu", "devices": [parsed.index if parsed.index is not None else torch.cuda.current_device()]}
    return {"accelerator": parsed.type, "devices": 1}


def check_device(device: str, what: str = "device") -> str:
    """`device` itself when torch can use it here ('cpu', 'cuda', 'cuda:1', 'mps'); InputError saying why not."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"{what} {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"{what} {device!r}: CUDA is not available here (torch {torch.__version__}, "
                             f"no visible GPU); use cpu")
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"{what} {device!r}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{what} {device!r}: MPS is not available here; use cpu")
    return device


def still_to_clip(image: np.ndarray, frames: int) -> np.ndarray:
    """Documented rule for clip detectors given a still: the still repeated `frames` times (zero motion)."""
    return np.repeat(image[None], frames, axis=0)


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack equally shaped arrays (helper for detectors)."""
    return np.stack(list(arrays), axis=0)
