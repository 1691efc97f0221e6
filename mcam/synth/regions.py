"""Regions as display rules + capture conditions (YAML), and the sampling of AU vectors and render params from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from mcam.assets import load_yaml, parse_config
from mcam.errors import InputError
from mcam.labels import CANONICAL
from mcam.synth.mesh import AU_NAMES
from mcam.synth.render import FaceShape, RenderParams


class RegionConfigError(InputError):
    """A synth config or region YAML that breaks the schema; names the file and key."""


class MeanSd(TypedDict):
    mean: float
    sd: float


class MaskSmile(TypedDict):
    """A smile (AU12) masking some emotions' displays with some probability."""

    emotions: list[str]
    probability: float
    AU12: float


class DisplayRules(TypedDict, total=False):
    """How a region shows emotions: per-emotion AU prototypes and how they vary."""

    prototypes: dict[str, dict[str, float] | None]  # emotion -> {AU: intensity}
    intensity: MeanSd
    au_jitter_sd: float
    au_dropout: float
    spontaneous_aus: float
    emotion_gain: dict[str, float]
    mask_smile: MaskSmile


class Capture(TypedDict, total=False):
    """Capture conditions: [low, high] ranges drawn per sample, backgrounds, grayscale share."""

    yaw: list[float]
    pitch: list[float]
    roll: list[float]
    light_azimuth: list[float]
    light_elevation: list[float]
    ambient: list[float]
    noise_sd: list[float]
    blur_sigma: list[float]
    effective_resolution: list[int]
    grayscale_fraction: float
    background: list[list[float]]


class SubjectMix(TypedDict, total=False):
    """Who lives in a region: skin-tone group shares, expressiveness, face-shape spread."""

    groups: dict[str, float]
    expressiveness: MeanSd
    shape_sd: float


@dataclass(frozen=True)
class RegionFile:
    """The schema of a region YAML (configs/synth/regions/*.yaml): unknown keys and wrong types are refused."""

    name: str
    display_rules: DisplayRules
    capture: Capture
    subjects: SubjectMix
    description: str = ""
    references: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Subject:
    """One synthetic person: identity shape, skin tone group and how strongly they express."""

    subject_id: str
    region: str
    group: str
    skin: tuple[float, float, float]
    expressiveness: float
    shape: FaceShape


@dataclass(frozen=True)
class Region:
    """A region's display rules (per-emotion AU prototypes) and capture conditions."""

    name: str
    rules: dict[str, Any]
    capture: dict[str, Any]
    subjects: dict[str, Any]

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Region":
        path = Path(path)
        data = load_yaml(path, RegionConfigError)
        if isinstance(data, dict):
            for key in ("name", "display_rules", "capture", "subjects"):
                if key not in data:
                    raise RegionConfigError(f"{path}: missing key {key!r}")
        region = parse_config(RegionFile, data, path, error=RegionConfigError)
        prototypes = region.display_rules.get("prototypes", {})
        missing = [e for e in CANONICAL if e not in prototypes]
        if missing:
            raise RegionConfigError(f"{path}: display_rules.prototypes lacks emotions {missing}")
        for emotion, aus in prototypes.items():
            unknown = [a for a in (aus or {}) if a not in AU_NAMES]
            if unknown:
                raise RegionConfigError(f"{path}: prototype {emotion!r} uses unknown AUs {unknown}; known {AU_NAMES}")
        if not region.subjects.get("groups") or min(region.subjects["groups"].values()) < 0:
            raise RegionConfigError(f"{path}: subjects.groups must give each skin-tone group a share >= 0")
        return cls(region.name, dict(region.display_rules), dict(region.capture), dict(region.subjects))

    def prototype(self, emotion: str) -> np.ndarray:
        """The emotion's AU prototype as a vector in AU_NAMES order."""
        vector = np.zeros(len(AU_NAMES), np.float32)
        for au, value in (self.rules["prototypes"][emotion] or {}).items():
            vector[AU_NAMES.index(au)] = value
        return vector

    def sample_subject(self, index: int, skin_tones: dict[str, list[float]], rng: np.random.Generator) -> Subject:
        """Draw a subject: group (skin tone) by the region's mix, shape and expressiveness."""
        groups = self.subjects["groups"]
        names = sorted(groups)
        group = str(rng.choice(names, p=np.asarray([groups[n] for n in names]) / sum(groups.values())))
        tone = np.asarray(skin_tones[group]) * rng.uniform(0.92, 1.08)
        sd = float(self.subjects.get("shape_sd", 0.05))
        shape = FaceShape(width=1 + rng.normal(0, sd), height=1 + rng.normal(0, sd), depth=1 + rng.normal(0, 2 * sd),
                          jaw_taper=float(np.clip(rng.normal(0.05, 2 * sd), -0.1, 0.25)),
                          eye_spacing=float(rng.normal(0, sd / 2)))
        expressive = self.subjects.get("expressiveness", {"mean": 1.0, "sd": 0.1})
        return Subject(f"{self.name}-s{index:03d}", self.name, group, tuple(float(t) for t in np.clip(tone, 0, 1)),
                       float(np.clip(rng.normal(expressive["mean"], expressive["sd"]), 0.4, 1.6)), shape)

    def sample_aus(self, emotion: str, subject: Subject, rng: np.random.Generator) -> np.ndarray:
        """An apex AU vector in [0, 1] for this emotion under the region's display rules."""
        rules = self.rules
        proto = self.prototype(emotion)
        shown = (proto > 0) & (rng.random(len(proto)) >= rules.get("au_dropout", 0.0))
        intensity = rng.normal(rules["intensity"]["mean"], rules["intensity"]["sd"])
        gain = intensity * subject.expressiveness * rules.get("emotion_gain", {}).get(emotion, 1.0)
        aus = proto * shown * gain + (proto > 0) * rng.normal(0, rules.get("au_jitter_sd", 0.0), len(proto))
        for _ in range(rng.poisson(rules.get("spontaneous_aus", 0.0))):
            aus[rng.integers(len(aus))] += rng.uniform(0.1, 0.35)
        mask = rules.get("mask_smile")
        if mask and emotion in mask["emotions"] and rng.random() < mask["probability"]:
            aus[AU_NAMES.index("AU12")] += mask["AU12"]
        return np.clip(aus, 0.0, 1.0).astype(np.float32)

    def sample_render(self, subject: Subject, size: int, rng: np.random.Generator) -> RenderParams:
        """Capture conditions for one sample: pose, light, noise, blur, colour."""
        c = self.capture

        def uniform(key: str) -> float:
            low, high = c[key]
            return float(rng.uniform(low, high))

        azimuth, elevation = np.deg2rad(uniform("light_azimuth")), np.deg2rad(uniform("light_elevation"))
        light = (float(np.sin(azimuth) * np.cos(elevation)), float(np.sin(elevation)),
                 float(np.cos(azimuth) * np.cos(elevation)))
        backgrounds = c["background"]
        return RenderParams(size=size, yaw=uniform("yaw"), pitch=uniform("pitch"), roll=uniform("roll"), light=light,
                            ambient=uniform("ambient"), skin=subject.skin,
                            background=tuple(backgrounds[rng.integers(len(backgrounds))]),
                            noise_sd=uniform("noise_sd"), blur_sigma=uniform("blur_sigma"),
                            grayscale=bool(rng.random() < c.get("grayscale_fraction", 0.0)), shape=subject.shape)

    def effective_resolution(self, rng: np.random.Generator) -> int:
        low, high = self.capture.get("effective_resolution", [128, 128])
        return int(rng.integers(low, high + 1))
