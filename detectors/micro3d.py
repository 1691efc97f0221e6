"""Cues I and I+: a small 3D CNN over short face clips classifying micro-expressions."""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from mcam.detector import FaceBatch, InputKind, TrainingSet, still_to_clip
from mcam.labels import head_map
from mcam_detectors._lightning_fit import FitSettings
from mcam_detectors._torch_detector import PretrainedConfig, TorchDetector

DIFF_GAIN = 8.0  # scales frame-to-onset differences (micro-expressions move pixels by a few grey levels)
DETECTORS = ("micro", "micro_plus")


class Micro3DNet(nn.Module):
    """Three Conv3d blocks (the first strided) over (intensity, difference-to-first-frame) channels, coarse 2x2 pooling, linear head."""

    def __init__(self, n_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]

        # Spatial stride 2 in the first conv and early pooling keep a clip at ~30M multiply-adds (CPU-affordable).
        self.body = nn.Sequential(
            nn.Conv3d(2, width, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(width),
            nn.ReLU(inplace=True), nn.MaxPool3d((1, 2, 2)),
            *block(width, 2 * width), nn.MaxPool3d(2),
            *block(2 * width, 4 * width), nn.AdaptiveAvgPool3d((1, 2, 2)), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(16 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class _MicroBase(TorchDetector):
    """Shared implementation of the micro-expression cues (see MicroExpression)."""

    input_kind = InputKind.CLIP
    checkpoint_detectors = DETECTORS
    supports_init_from = True
    no_weights = ("pre-train with `mcam pretrain` and pass weights=PATH (or init_from=PATH of a micro checkpoint), "
                  "or weights=random explicitly (none ship with MCAM)")

    def __init__(self, device: str | None = None, weights: str | None = None, frames: int = 8, size: int = 48,
                 init_from: str | None = None, batch_size: int = 64, seed: int = 0, **kw: Any) -> None:
        if init_from is not None and weights not in (None, "random"):
            raise ValueError(f"{self.name}: init_from and weights={weights!r} conflict; give one of them")
        if frames < 2 or size < 8:
            raise ValueError(f"{self.name}: need frames >= 2 and size >= 8, got frames={frames}, size={size}")
        super().__init__(device=device, weights=weights, frames=int(frames), size=int(size), init_from=init_from,
                         batch_size=batch_size, seed=seed, **kw)

    # --- description -------------------------------------------------
    def output_names(self) -> list[str]:
        return list(head_map(self.head).classes)

    def pretrained_config(self) -> PretrainedConfig:
        frames, size = self.config["frames"], self.config["size"]
        return PretrainedConfig(input_size=(2, frames, size, size), mean=None, std=None,
                                labels=tuple(self.output_names()))

    # --- weights -----------------------------------------------------
    def arch(self) -> dict[str, Any]:
        return {"head": self.head, "frames": self.config["frames"], "size": self.config["size"]}

    def build_network(self, arch: dict[str, Any]) -> nn.Module:
        return Micro3DNet(len(self.output_names()))

    # --- use ---------------------------------------------------------
    def usable(self, clip: Any) -> bool:
        return isinstance(clip, np.ndarray) and clip.ndim in (2, 3, 4) and clip.size > 0

    def faces_of(self, batch: FaceBatch) -> list[np.ndarray]:
        return batch.clips if len(batch.clips) == len(batch) else batch.images

    def preprocess(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        """Clips (or stills) -> float tensor [N, 2, frames, size, size]: standardised gray + gained onset difference."""
        frames, size = self.config["frames"], self.config["size"]
        out = np.empty((len(clips), 2, frames, size, size), dtype=np.float32)
        for i, clip in enumerate(clips):
            gray = _gray_clip(as_clip(clip, frames))
            gray = gray[np.linspace(0, len(gray) - 1, frames).round().astype(int)]
            gray = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in gray]) / 255.0
            out[i, 0] = (gray - gray.mean()) / (gray.std() + 1e-3)
            out[i, 1] = (gray - gray[0]) * DIFF_GAIN
        return torch.from_numpy(out)

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int | None = None,
            batch_size: int = 32, lr: float = 1e-3, seed: int = 0, precision: str = "32-true",
            **kwargs: Any) -> dict[str, float]:
        """Train on clips whose labels are canonical (mapped by the head) or head classes; others skipped.

        epochs None: 15 from random init, 8 when fine-tuning loaded weights.
        """
        if kwargs:
            raise TypeError(f"{self.name}.fit: unexpected arguments {sorted(kwargs)}")
        self.load()
        settings = FitSettings(epochs=epochs if epochs is not None else 15 if self._from_scratch else 8,
                               batch_size=batch_size, lr=lr, seed=seed, precision=precision)
        return self.fit_classifier(train, val, settings)


class MicroExpression(_MicroBase):
    """Cue I: micro-expression probabilities {positive, negative, surprise} (SMIC's classes) from a 3D CNN.

    Input: clips [T, H, W, 3] or [T, H, W] uint8. Each is converted to gray, resampled to `frames`
    frames by uniform index selection (round(linspace(0, T-1, frames)); shorter clips repeat frames),
    and each frame resized to `size` x `size` (default 8 x 48 x 48). The network sees two channels:
    the clip standardised per clip, and each frame's difference to the first (onset) frame.
    Still images [H, W, 3] / [H, W] become clips by `mcam.detector.still_to_clip` (the still repeated,
    i.e. zero motion), so a still's difference channel is all zero.
    Config: weights None (default: none ship, DetectorUnavailableError; pre-train with `mcam pretrain`),
    "random" (explicit seeded init) or a checkpoint path; init_from=PATH copies all but the last layer
    of a micro/micro_plus checkpoint. Labels may be canonical (mapped by the head map) or head classes.
    """

    name = "micro"
    prefix = "micro"
    head = "micro3"


class MicroExpressionPlus(_MicroBase):
    """Cue I+: {positive, negative, surprise, neutral} (SMIC + CK+); same network and rules as MicroExpression.

    The paper's I+ is I fine-tuned on SMIC + CK+: build it with init_from=<micro checkpoint> (all
    but the last layer copied) and fit on data that includes neutral clips.
    """

    name = "micro_plus"
    prefix = "microplus"
    head = "micro4"


def as_clip(array: np.ndarray, frames: int) -> np.ndarray:
    """A clip [T, H, W(, 3)] as is; a still [H, W, 3] or [H, W] via still_to_clip.

    A 3-dim array whose last axis is 3 is an RGB still, otherwise a gray clip [T, H, W].
    """
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3):
        return still_to_clip(array, frames)
    return array


def _gray_clip(clip: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] or [T, H, W] (uint8) -> float32 gray [T, H, W] in 0..255."""
    clip = np.asarray(clip)
    if clip.ndim == 4 and clip.shape[-1] == 1:
        clip = clip[..., 0]
    if clip.ndim == 4:
        clip = clip[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return clip.astype(np.float32)
