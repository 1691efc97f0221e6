"""Cue U from py-feat: the AU head of py-feat's multitask model (the one inside `feat.Detectorv2`).

Runs `feat.multitask.inference.MultitaskModel` directly on MCAM's face crops (resized to py-feat's
256x256 chip, RGB in [0, 1]); RetinaFace is skipped because faces arrive already cropped. Output:
20 AU occurrence probabilities in [0, 1] (`pyfeat.AU01` ... py-feat's 20-AU order). Not trainable.

Weights are never downloaded here: `weights=PATH` (a .safetensors/.pt multitask checkpoint), else
$FEAT_MULTITASK_WEIGHTS, else the file already in the Hugging Face cache (py-feat's resource
folder, where Detectorv2 downloads it, or the default HF cache), looked up offline. Otherwise
DetectorUnavailableError says how to fetch it on a machine with internet.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mcam.detector import Detector, DetectorUnavailableError, FaceBatch, InputKind, WeightsInfo
from mcam.labels import AU_NAMES  # py-feat's 20-AU order, shared with the synthetic data

HF_REPO = "py-feat/face_multitask_v2"
HF_FILE = "face_multitask_v28.safetensors"
CHIP = 256
DOWNLOAD_HINT = ("on a machine with internet run: python -c \"from huggingface_hub import hf_hub_download; "
                 "from feat.utils.io import get_resource_path; "
                 f"print(hf_hub_download('{HF_REPO}', '{HF_FILE}', cache_dir=get_resource_path()))\" "
                 "(or build feat.Detectorv2() once), then copy the printed file here and pass weights=PATH "
                 "or set FEAT_MULTITASK_WEIGHTS=PATH")


def find_local_weights(weights: str | None) -> Path | None:
    """The multitask checkpoint available on this machine without network, or None."""
    if weights is not None:
        return Path(weights) if Path(weights).is_file() else None
    if os.environ.get("FEAT_MULTITASK_WEIGHTS"):
        path = Path(os.environ["FEAT_MULTITASK_WEIGHTS"])
        return path if path.is_file() else None
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a cache lookup must never turn into a download
    try:
        from huggingface_hub import try_to_load_from_cache

        from feat.utils.io import get_resource_path

        for cache_dir in (get_resource_path(), None):
            found = try_to_load_from_cache(HF_REPO, HF_FILE, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
    return None


class PyFeatAU(Detector):
    """py-feat multitask AU probabilities for face crops; see module docstring."""

    name = "pyfeat_au"
    input_kind = InputKind.IMAGE
    prefix = "pyfeat"

    def __init__(self, device: str | None = None, weights: str | None = None, batch_size: int = 16,
                 **kw: Any) -> None:
        super().__init__(device=device, weights=weights, batch_size=batch_size, **kw)
        self.model: Any = None
        self._path: Path | None = None

    def output_names(self) -> list[str]:
        return list(AU_NAMES)

    def weights_info(self) -> WeightsInfo:
        path = find_local_weights(self.config["weights"])
        source = str(path) if path else (self.config["weights"] or f"huggingface {HF_REPO}/{HF_FILE}")
        return WeightsInfo(source, path is not None, "see huggingface.co/" + HF_REPO)

    def weights_digest(self) -> str:
        self.load()
        digest = hashlib.sha256()
        with open(self._path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    def _load(self) -> None:
        path = find_local_weights(self.config["weights"])
        if path is None:
            wanted = self.config["weights"] or os.environ.get("FEAT_MULTITASK_WEIGHTS")
            where = f"{wanted} does not exist" if wanted else f"{HF_REPO}/{HF_FILE} is not in the local cache"
            raise DetectorUnavailableError(f"pyfeat_au: py-feat's multitask weights are not available offline "
                                           f"({where}); {DOWNLOAD_HINT}")
        from feat.multitask.inference import MultitaskModel

        self.model = MultitaskModel(device=self.device, weights_path=str(path))
        missing = [au for au in AU_NAMES if au not in self.model.au_names]
        if missing:
            raise ValueError(f"pyfeat_au: checkpoint {path} has no outputs for {missing}")
        self._columns = [list(self.model.au_names).index(au) for au in AU_NAMES]
        self._path = path

    def _extract(self, batch: FaceBatch) -> tuple[np.ndarray, np.ndarray]:
        cues = np.zeros((len(batch), self.dim), dtype=np.float32)
        valid = np.array([f.ndim == 3 and min(f.shape[:2]) > 1 for f in batch.images], dtype=bool)
        rows = np.flatnonzero(valid)
        step = self.config["batch_size"]
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            chips = np.stack([cv2.resize(batch.images[i], (CHIP, CHIP), interpolation=cv2.INTER_AREA) for i in chunk])
            tensor = torch.from_numpy(chips).permute(0, 3, 1, 2).float().div(255.0)
            cues[chunk] = self.model(tensor).au[:, self._columns]
        return cues, valid
