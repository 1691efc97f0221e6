"""Checkpoint files of trainable detectors: state_dict + architecture + provenance, written atomically."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from mcam.detector import DetectorUnavailableError
from mcam.errors import InputError
from mcam.io import write_atomic

FORMAT = "mcam-detector-checkpoint/1"


def save_checkpoint(path: str | Path, *, detector: str, arch: dict[str, Any], provenance: str,
                    state_dict: dict[str, torch.Tensor]) -> Path:
    """Write a checkpoint that `weights=PATH` (or `init_from=PATH`) loads; atomic (temp file + rename).

    Serialised in memory first: torch.save names its zip records after the file it writes, so saving straight to
    a randomly named temp file gave the same weights other bytes, and detector fingerprints (which hash the
    bytes) that differed between two identical runs."""
    path = Path(path)
    payload = {"format": FORMAT, "detector": detector, "arch": arch, "provenance": provenance,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(path, buffer.getvalue())


def source_of(path: str | Path | None) -> str:
    """A checkpoint file as provenance records it: its name and content digest, never its folder (a saved
    provenance with an absolute path made equal weights into other bytes, and so other detector keys)."""
    from mcam.store import file_digest

    if path is None or not Path(path).is_file():  # None or a name such as 'random', not a file
        return str(path)
    return f"{Path(path).name} (sha256 {file_digest(path)})"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload of an MCAM detector checkpoint file; InputError naming the file when it is none (corrupt,
    truncated, another program's .pt)."""
    path = Path(path)
    if not path.is_file():
        raise DetectorUnavailableError(f"checkpoint {path} not found; train one with `mcam pretrain` "
                                       f"(or a detector's fit() + save(path))")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip/pickle/EOF errors of a damaged or foreign file all mean the same
        raise InputError(f"{path}: not a readable MCAM detector checkpoint ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("state_dict"), dict):
        raise InputError(f"{path}: not an MCAM detector checkpoint (expected format {FORMAT!r}; "
                         f"write one with `mcam pretrain` or a detector's save(path))")
    return payload


def load_checkpoint(path: str | Path, accepted: tuple[str, ...]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` for one of the `accepted` detector names."""
    payload = read_checkpoint(path)
    if payload.get("detector") not in accepted:
        raise InputError(f"{path}: checkpoint of detector {payload.get('detector')!r}, expected one of {accepted}")
    return payload
