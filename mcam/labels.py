"""Canonical emotion labels and the label maps (data, in resources/label_maps.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Mapping

import yaml

from mcam.errors import InputError

CANONICAL: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The 20 action units of py-feat's AU models (AU_LANDMARK_MAP['Feat']): the order of every AU vector in MCAM.
AU_NAMES: tuple[str, ...] = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
                             "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43")


class UnknownLabelError(InputError):
    """A label that a map does not know."""


@dataclass(frozen=True)
class HeadMap:
    """Maps canonical labels onto one detector head's classes."""

    name: str
    classes: tuple[str, ...]
    mapping: Mapping[str, str | None]

    def target(self, label: str) -> str | None:
        """Head class for a canonical label (None: the head has no such class)."""
        if label not in self.mapping:
            raise UnknownLabelError(f"label {label!r} is not canonical; expected one of {CANONICAL}")
        return self.mapping[label]

    def index(self, label: str) -> int:
        """Class index of a canonical label; -1 where the head has no such class."""
        target = self.target(label)
        return -1 if target is None else self.classes.index(target)


@lru_cache(maxsize=1)
def _maps() -> dict:
    text = resources.files("mcam").joinpath("resources/label_maps.yaml").read_text()
    data = yaml.safe_load(text)
    if tuple(data["canonical"]) != CANONICAL:
        raise RuntimeError("label_maps.yaml canonical labels drifted from mcam.labels.CANONICAL")
    return data


def head_map(name: str) -> HeadMap:
    """The label map of a detector head (canonical7, fer2013, macro6, micro3, micro4)."""
    heads = _maps()["heads"]
    if name not in heads:
        raise KeyError(f"unknown head {name!r}; known: {sorted(heads)}")
    spec = heads[name]
    return HeadMap(name, tuple(spec["classes"]), dict(spec["map"]))


def dataset_map(name: str) -> dict[str, str | None]:
    """A dataset's own label codes mapped to canonical labels (None: out of scope)."""
    datasets = _maps()["datasets"]
    if name not in datasets:
        raise KeyError(f"unknown dataset label map {name!r}; known: {sorted(datasets)}")
    return {str(k): v for k, v in datasets[name].items()}


def to_canonical(dataset: str, code: object) -> str | None:
    """Canonical label for a dataset code; raises UnknownLabelError for unknown codes."""
    mapping = dataset_map(dataset)
    key = str(code)
    if key not in mapping:
        raise UnknownLabelError(f"{dataset}: unknown label {code!r}; known: {sorted(mapping)}")
    return mapping[key]
