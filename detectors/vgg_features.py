"""Cue F: VGG11 image features (torchvision), the paper's 2752-dim vector, trainable on a source dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from mcam.detector import DetectorUnavailableError, InputKind, TrainingSet, WeightsInfo
from mcam.labels import head_map
from mcam_detectors._lightning_fit import FitSettings, random_hflip
from mcam_detectors._torch_detector import PretrainedConfig, TorchDetector

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONV_WIDTHS = (64, 128, 256, 256, 512, 512, 512, 512)  # VGG11's 8 conv layers; sum = 2752
HEAD = "canonical7"
IMAGENET_LICENCE = "torchvision BSD-3-Clause; ImageNet-trained weights: see the ImageNet terms of use"


class VGG11Net(nn.Module):
    """torchvision VGG11 conv features plus a small classification head (global average pool + linear)."""

    def __init__(self, n_classes: int, batch_norm: bool = False) -> None:
        super().__init__()
        # VGG11 (configuration "A", optionally with batch norm) conv stack, initialised as torchvision
        # does; built without the 100M-parameter ImageNet classifier the cue never uses.
        self.features = make_layers(cfgs["A"], batch_norm=batch_norm)
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(CONV_WIDTHS[-1], n_classes))
        self.conv_positions = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        self.relu_positions = [next(j for j in range(i, len(self.features)) if isinstance(self.features[j], nn.ReLU))
                               for i in self.conv_positions]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))

    def pooled_activations(self, x: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """Global-average-pooled ReLU output of the chosen conv layers (0..7), concatenated in that order."""
        wanted = {self.relu_positions[k]: k for k in layers}  # the ReLU right after each conv (and BN)
        pooled: dict[int, torch.Tensor] = {}
        for position, module in enumerate(self.features[:max(wanted) + 1]):
            x = module(x)
            if position in wanted:
                pooled[wanted[position]] = x.mean(dim=(2, 3))
        return torch.cat([pooled[k] for k in layers], dim=1)

    def freeze_first(self, n_conv: int) -> None:
        """Freeze the first `n_conv` conv layers (0 unfreezes everything)."""
        for k, position in enumerate(self.conv_positions):
            for p in self.features[position:self.relu_positions[k]].parameters():
                p.requires_grad = k >= n_conv


class VGGFeatures(TorchDetector):
    """Cue F: VGG11 image features, as in the paper (2752 dims by default).

    The cue is the global-average-pooled output (after ReLU) of each conv layer of VGG11,
    concatenated: 64+128+256+256+512+512+512+512 = 2752 dims (labels vgg.0000..vgg.2751).
    Config:
      weights: None (default) = none chosen: DetectorUnavailableError (what the cue means never depends
        on what happens to sit in the torch cache); "imagenet" = ImageNet weights (torch cache, else download);
        "random" = explicit seeded random init (`seed`); a path = a checkpoint from fit()+save().
      layers: subset of the conv indices 0..7 (dimension = sum of their widths, see CONV_WIDTHS).
      input_size: side in pixels faces are resized to (default 64 so that pre-training fits a CPU
        budget; 112 or ImageNet's 224 cost 3x / 12x per face).
      batch_size: extraction batch size.
      batch_norm: True (default) = torchvision's VGG11-BN (`vgg11_bn`, ImageNet weights
        VGG11_BN_Weights), because plain VGG11 does not learn from random init within a CPU budget
        (on 600 synthetic faces: chance after 6 epochs vs 53% held-out after 4 with BN);
        False = plain `vgg11` exactly as in the paper (ImageNet weights VGG11_Weights).
    Faces are RGB uint8 crops of any size (gray ones are converted), normalised with ImageNet mean/std.
    fit() trains the conv layers plus a GAP + linear head over the canonical7 labels (Adam, batch 32,
    random horizontal flips). Measured on 600 synthetic faces, 2 shared CPU cores, from random init:
    input 64 with BN, 4 epochs = 45-165 s depending on the other load (held-out accuracy 53-65%,
    7 classes); input 112 needs ~85 s per epoch, which is why 64 is the default. GAM fine-tuning
    (1 epoch, freeze_layers=4) on ~300 faces: ~8 s.
    """

    name = "vgg"
    input_kind = InputKind.IMAGE
    prefix = "vgg"
    named_weights = ("imagenet",)
    no_weights = ("pre-train with `mcam pretrain` (weights=PATH), or pass weights=imagenet (torch cache, else a "
                  "download) or weights=random explicitly")

    def __init__(self, device: str | None = None, weights: str | None = None, layers: Sequence[int] | None = None,
                 input_size: int = 64, batch_size: int = 32, batch_norm: bool = True, seed: int = 0,
                 **kw: Any) -> None:
        layers = list(range(len(CONV_WIDTHS))) if layers is None else [int(k) for k in layers]
        if not layers or any(k not in range(len(CONV_WIDTHS)) for k in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"vgg: layers must be distinct conv indices in 0..7, got {layers}")
        super().__init__(device=device, weights=weights, layers=layers, input_size=int(input_size),
                         batch_size=batch_size, batch_norm=bool(batch_norm), seed=seed, **kw)

    # --- description -------------------------------------------------
    def output_names(self) -> list[str]:
        dim = sum(CONV_WIDTHS[k] for k in self.config["layers"])
        return [f"{i:04d}" for i in range(dim)]

    def pretrained_config(self) -> PretrainedConfig:
        size = self.config["input_size"]
        imagenet = self.config["weights"] == "imagenet" or "ImageNet" in (self._provenance or "")
        return PretrainedConfig(input_size=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                labels=tuple(self.output_names()), licence=IMAGENET_LICENCE if imagenet else "")

    def named_weights_info(self, weights: str) -> WeightsInfo:
        cached = _imagenet_cache_file(self.config["batch_norm"])
        where = f"in the torch cache {cached}" if cached.is_file() else "not in the torch cache; download needs network"
        return WeightsInfo(f"torchvision {self._imagenet_name()} ({where})", cached.is_file(), IMAGENET_LICENCE)

    # --- weights -----------------------------------------------------
    def _imagenet_name(self) -> str:
        weights = _imagenet_weights(self.config["batch_norm"])
        return f"{type(weights).__name__}.{weights.name}"

    def arch(self) -> dict[str, Any]:
        return {"head": HEAD, "batch_norm": self.config["batch_norm"]}

    def build_network(self, arch: dict[str, Any]) -> nn.Module:
        return VGG11Net(len(head_map(HEAD).classes), arch["batch_norm"])

    def load_named(self, weights: str, model: nn.Module) -> str:
        model.features.load_state_dict(_imagenet_features(self.config["batch_norm"]))
        return f"torchvision {self._imagenet_name()} (ImageNet) features, head untrained"

    # --- use ---------------------------------------------------------
    def preprocess(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        return preprocess(faces, self.config["input_size"])

    def cue_outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.pooled_activations(x, self.config["layers"])

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int | None = None,
            batch_size: int = 32, lr: float | None = None, freeze_layers: int = 0, seed: int = 0,
            precision: str = "32-true", **kwargs: Any) -> dict[str, float]:
        """Train VGG11 + head on canonical7 labels (pre-training), or fine-tune loaded weights (GAM).

        epochs/lr None: 4 epochs at lr 1e-3 from random init; 1 epoch at lr 1e-4 when fine-tuning loaded weights.
        freeze_layers: the first that many conv layers stay fixed (fine-tuning). Random horizontal flips.
        Unusable faces and unmapped labels are skipped.
        """
        if kwargs:
            raise TypeError(f"vgg.fit: unexpected arguments {sorted(kwargs)}")
        self.load()
        settings = FitSettings(epochs=epochs if epochs is not None else 4 if self._from_scratch else 1,
                               lr=lr if lr is not None else 1e-3 if self._from_scratch else 1e-4,
                               batch_size=batch_size, seed=seed, precision=precision)
        self.model.freeze_first(freeze_layers)
        try:
            return self.fit_classifier(train, val, settings, augment=random_hflip,
                                       note=f", {freeze_layers} conv layers frozen")
        finally:
            self.model.freeze_first(0)


def preprocess(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """RGB (or gray) uint8 faces -> float tensor [N, 3, size, size], ImageNet-normalised."""
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        if image.ndim == 2 or image.shape[-1] == 1:
            image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        shrink = min(image.shape[:2]) > size
        out[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out = (out / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _imagenet_weights(batch_norm: bool) -> torchvision.models.WeightsEnum:
    return (torchvision.models.VGG11_BN_Weights if batch_norm else torchvision.models.VGG11_Weights).IMAGENET1K_V1


def _imagenet_cache_file(batch_norm: bool = False) -> Path:
    url = _imagenet_weights(batch_norm).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _imagenet_features(batch_norm: bool) -> dict[str, torch.Tensor]:
    """ImageNet VGG11(-BN) conv weights from the torch cache, downloading if absent (clear error when offline)."""
    url = _imagenet_weights(batch_norm).url
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception as error:  # urllib/http/ssl errors differ by platform; all mean "no download"
        raise DetectorUnavailableError(
            f"vgg: could not download ImageNet VGG11 weights from {url} ({type(error).__name__}: {error}); "
            f"put the file at {_imagenet_cache_file(batch_norm)} or pre-train with `mcam pretrain` "
            "(weights=PATH), or choose weights=random explicitly") from error
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
