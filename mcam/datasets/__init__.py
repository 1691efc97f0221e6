"""Dataset adapters: each reads one raw dataset layout into records and rejects (see README.md here)."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mcam.datasets.base import Adapter, Record, Reject

# name -> "module:Class" under mcam.datasets; imported only when asked for.
ADAPTERS: dict[str, str] = {
    "fer2013": "fer2013:FER2013",
    "jaffe": "jaffe:JAFFE",
    "ckplus": "ckplus:CKPlus",
    "tfeid": "folder:TFEID",
    "tfed": "folder:TFED",
    "smic": "smic:SMIC",
    "sfew": "folder:SFEW",
    "afew": "folder:AFEW",
    "imagefolder": "folder:ImageFolder",
    "csv": "csv_manifest:CSVManifest",
    "video_table": "video_table:VideoTable",
}


def adapter_class(name: str) -> type[Adapter]:
    """The adapter class registered under `name`."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(f"mcam.datasets.{module}"), cls)


def create_adapter(name: str, root: str | Path, **options: Any) -> Adapter:
    """An adapter for the raw dataset at `root`, with adapter options (see each adapter's docstring)."""
    return adapter_class(name)(root, **options)


__all__ = ["ADAPTERS", "Adapter", "Record", "Reject", "adapter_class", "create_adapter"]
