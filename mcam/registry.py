"""Detector registry: plugins found through the `mcam.detectors` entry-point group, loaded only when asked for."""
from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any

from mcam.detector import Detector
from mcam.errors import InputError, UnknownNameError, UserError

GROUP = "mcam.detectors"


class UnknownDetectorError(UnknownNameError):
    """No detector registered under that name; the message lists the registered ones."""


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
    raise UnknownDetectorError(f"unknown detector {name!r}; registered: {sorted(available())} (plugins register "
                               f"under the entry-point group {GROUP!r}; reinstall after adding one)")


def init_arguments(cls: type[Detector]) -> list[str]:
    """The init arguments a detector class accepts: the named parameters of its `__init__` and of every base
    `__init__` its `**kwargs` are passed on to (up to `Detector`)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        names += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if klass is Detector or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return sorted(dict.fromkeys(names))


def check_config(name: str, config: dict[str, Any]) -> None:
    """InputError naming the detector and the key when `config` holds an init argument the detector lacks."""
    accepted = init_arguments(detector_class(name))
    unknown = [key for key in config if key not in accepted]
    if unknown:
        raise InputError(f"detector {name!r}: unknown init argument(s) {unknown}; accepted: {', '.join(accepted)}")


def create_detector(name: str, **config: Any) -> Detector:
    """Build a detector by registered name with its config; a config the detector refuses is an InputError."""
    check_config(name, config)
    try:
        return detector_class(name)(**config)
    except (ValueError, TypeError) as err:  # the detector's own checks of its init args (sizes, choices, types)
        if isinstance(err, UserError):
            raise
        raise InputError(f"detector {name!r}: {err}") from err
