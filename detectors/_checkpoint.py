"""Checkpoint files of trainable detectors: state_dict + architecture + provenance, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mcam.detector import DetectorUnavailableError
from mcam.io import atomic_output

FORMAT = "mcam-detector-checkpoint/1"


def save_checkpoint(path: str | Path, *, detector: str, arch: dict[str, Any], provenance: str,
                    state_dict: dict[str, torch.Tensor]) -> Path:
    """Write a checkpoint that `weights=PATH` (or `init_from=PATH`) loads; atomic (temp file + rename)."""
    path = Path(path)
    payload = {"format": FORMAT, "detector": detector, "arch": arch, "provenance": provenance,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, accepted: tuple[str, ...]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` for one of the `accepted` detector names."""
    path = Path(path)
    if not path.is_file():
        raise DetectorUnavailableError(f"checkpoint {path} not found; train one with `mcam pretrain` "
                                       f"(or a detector's fit() + save(path))")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an MCAM detector checkpoint (expected format {FORMAT!r})")
    if payload["detector"] not in accepted:
        raise ValueError(f"{path}: checkpoint of detector {payload['detector']!r}, expected one of {accepted}")
    return payload
