"""Detector registry: plugins found through the `mcam.detectors` entry-point group, loaded only when asked for."""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from mcam.detector import Detector

GROUP = "mcam.detectors"


def available() -> dict[str, str]:
    """Registered detector names mapped to their 'module:Class' targets (nothing imported)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def detector_class(name: str) -> type[Detector]:
    """Import and return the class registered under `name`."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Detector)):
                raise TypeError(f"entry point {name!r} ({ep.value}) is not a mcam.detector.Detector subclass")
            return cls
    raise KeyError(f"unknown detector {name!r}; registered: {sorted(available())} "
                   f"(plugins register under the entry-point group {GROUP!r}; reinstall after adding one)")


def create_detector(name: str, **config: Any) -> Detector:
    """Build a detector by registered name with its config."""
    return detector_class(name)(**config)
