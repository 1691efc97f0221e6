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

from mcam.detector import Detector, DetectorUnavailableError, FaceBatch, InputKind, TrainingSet, WeightsInfo
from mcam.determinism import seeded
from mcam.labels import head_map
from mcam_detectors._checkpoint import load_checkpoint, save_checkpoint, source_of
from mcam_detectors._classifier_fit import head_targets, random_hflip, train_classifier

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


class VGGFeatures(Detector):
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
    trainable = True

    def __init__(self, device: str | None = None, weights: str | None = None, layers: Sequence[int] | None = None,
                 input_size: int = 64, batch_size: int = 32, batch_norm: bool = True, seed: int = 0,
                 **kw: Any) -> None:
        layers = list(range(len(CONV_WIDTHS))) if layers is None else [int(k) for k in layers]
        if not layers or any(k not in range(len(CONV_WIDTHS)) for k in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"vgg: layers must be distinct conv indices in 0..7, got {layers}")
        super().__init__(device=device, weights=weights, layers=layers, input_size=int(input_size),
                         batch_size=int(batch_size), batch_norm=bool(batch_norm), seed=int(seed), **kw)
        self.model: VGG11Net | None = None
        self._provenance: str | None = None
        self._from_scratch = False

    # --- description -------------------------------------------------
    def output_names(self) -> list[str]:
        dim = sum(CONV_WIDTHS[k] for k in self.config["layers"])
        return [f"{i:04d}" for i in range(dim)]

    def weights_info(self) -> WeightsInfo:
        weights = self.config["weights"]
        if self._provenance is not None:
            return WeightsInfo(self._provenance, True, IMAGENET_LICENCE if "ImageNet" in self._provenance else "")
        if weights is None:
            return WeightsInfo("none chosen: pre-train with `mcam pretrain`, or pass weights=imagenet|random|PATH", False)
        if weights == "imagenet":
            cached = _imagenet_cache_file(self.config["batch_norm"])
            where = f"in the torch cache {cached}" if cached.is_file() else "not in the torch cache; download needs network"
            return WeightsInfo(f"torchvision {self._imagenet_name()} ({where})", cached.is_file(), IMAGENET_LICENCE)
        if weights == "random":
            return WeightsInfo(f"random init (explicit, seed {self.config['seed']})", True)
        return WeightsInfo(f"checkpoint {weights}", Path(weights).is_file())

    # --- weights -----------------------------------------------------
    def _imagenet_name(self) -> str:
        weights = _imagenet_weights(self.config["batch_norm"])
        return f"{type(weights).__name__}.{weights.name}"

    def _load(self) -> None:
        weights = self.config["weights"]
        batch_norm = self.config["batch_norm"]
        if weights is None:
            raise DetectorUnavailableError(
                "vgg: no weights chosen; pre-train with `mcam pretrain` (weights=PATH), or pass weights=imagenet "
                "(torch cache, else a download) or weights=random explicitly")
        with seeded(self.config["seed"]):  # draws from torch's global generators: seeded, then restored
            model = VGG11Net(len(head_map(HEAD).classes), self.config["batch_norm"])
        if weights == "imagenet":
            model.features.load_state_dict(_imagenet_features(batch_norm))
            provenance = f"torchvision {self._imagenet_name()} (ImageNet) features, head untrained"
        elif weights == "random":
            provenance = f"random init (explicit, seed {self.config['seed']})"
        else:
            payload = load_checkpoint(weights, accepted=(self.name,))
            if payload["arch"].get("batch_norm") != batch_norm:
                raise ValueError(f"vgg: checkpoint {weights} has batch_norm={payload['arch'].get('batch_norm')}; "
                                 f"construct the detector with the same batch_norm")
            model.load_state_dict(payload["state_dict"])
            provenance = f"checkpoint {source_of(weights)}: {payload['provenance']}"
        self.model = model.to(self.device).eval()
        self._provenance = provenance
        self._from_scratch = weights == "random"

    # --- use ---------------------------------------------------------
    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        assert self.model is not None
        valid = np.array([_usable(image) for image in batch.images], dtype=bool)
        cues = np.zeros((len(batch), self.dim), dtype=np.float32)
        index = np.flatnonzero(valid)
        step = self.config["batch_size"]
        with torch.no_grad():
            for start in range(0, len(index), step):
                chunk = index[start:start + step]
                x = preprocess([batch.images[i] for i in chunk], self.config["input_size"]).to(self.device)
                cues[chunk] = self.model.pooled_activations(x, self.config["layers"]).cpu().numpy()
        return cues, valid

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int | None = None,
            batch_size: int = 32, lr: float | None = None, freeze_layers: int = 0, seed: int = 0,
            **kwargs: Any) -> dict[str, float]:
        """Train VGG11 + head on canonical7 labels (pre-training), or fine-tune loaded weights (GAM).

        epochs/lr None: 4 epochs at lr 1e-3 from random init; 1 epoch at lr 1e-4 when fine-tuning loaded weights. freeze_layers: the first
        that many conv layers stay fixed (fine-tuning). Unusable faces and unmapped labels are skipped.
        """
        if kwargs:
            raise TypeError(f"vgg.fit: unexpected arguments {sorted(kwargs)}")
        self.load()
        assert self.model is not None and self._provenance is not None
        if epochs is None:
            epochs = 4 if self._from_scratch else 1
        if lr is None:
            lr = 1e-3 if self._from_scratch else 1e-4
        x, y, skipped = self._training_tensors(train)
        if len(y) == 0:
            raise ValueError("vgg.fit: no usable training faces with a canonical label")
        val_xy = None if val is None else self._training_tensors(val)[:2]
        self.model.freeze_first(freeze_layers)
        try:
            metrics = train_classifier(self.model, x, y, device=self.device, epochs=epochs, batch_size=batch_size,
                                       lr=lr, seed=seed, augment=random_hflip, val=val_xy)
        finally:
            self.model.freeze_first(0)
        metrics.update(n_train=float(len(y)), n_skipped=float(skipped))
        self._from_scratch = False
        self._provenance += f"; fit on {len(y)} faces ({epochs} epochs, {freeze_layers} conv layers frozen)"
        return metrics

    def _training_tensors(self, data: TrainingSet) -> tuple[torch.Tensor, torch.Tensor, int]:
        targets = head_targets(data.labels, head_map(HEAD))
        keep = [i for i in targets.keep if _usable(data.faces[i])]
        y = targets.y[np.isin(targets.keep, keep)]
        x = preprocess([data.faces[i] for i in keep], self.config["input_size"])
        return x, torch.as_tensor(y), len(data.labels) - len(keep)

    def save(self, path: str | Path) -> Path:
        self.load()
        assert self.model is not None and self._provenance is not None
        return save_checkpoint(path, detector=self.name, arch={"head": HEAD, "batch_norm": self.config["batch_norm"]}, provenance=self._provenance,
                               state_dict=self.model.state_dict())


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


def _usable(image: np.ndarray | None) -> bool:
    return image is not None and image.ndim in (2, 3) and image.size > 0 and (image.ndim == 2 or image.shape[-1] in (1, 3))


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
