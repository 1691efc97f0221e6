"""Suite specs (YAML) and their expansion into runs: fold x mode x model x cue subset x seed."""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SUITES_DIR = REPO / "benchmarks"
PROTOCOLS = ("loro", "cross", "kfold", "mixing", "ablation")


@dataclass
class SuiteSpec:
    """Everything a suite needs; every field has a default so a spec lists only what it changes."""

    name: str = "loro"
    protocol: str = "loro"
    data: dict[str, Any] = field(default_factory=lambda: {
        "dir": "data/synth", "synth_config": "configs/synth/default.yaml", "synth_seed": 1})
    source_region: str | None = "western_posed"  # LAM detectors are pre-trained on its train/val subjects
    detectors: list[str] = field(default_factory=lambda: ["vgg", "au", "micro", "micro_plus", "macro"])
    pretrain_epochs: int | None = None
    modes: list[str] = field(default_factory=lambda: ["lam", "gam"])
    gam_detectors: list[str] | None = None  # which detectors GAM fine-tunes (default: all trainable)
    gam_epochs: int = 1
    models: list[str] = field(default_factory=lambda: ["attention", "concat", "static_weights", "late_average"])
    single_cue_models: list[str] = field(default_factory=lambda: ["lam"])  # modes that also get single-cue models
    cue_sets: dict[str, Any] = field(default_factory=lambda: {"A": None})  # name -> cue subset spec (None = all)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 256
    val_fraction: float = 0.2
    folds: list[str] | None = None  # restrict to these folds (e.g. held-out regions)
    protocol_args: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = "outputs/shared"  # cue cache + pre-trained detectors shared by suites (None: inside out)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # parallel fusion runs (processes)

    @classmethod
    def load(cls, path: str | Path, profile: str | None = None) -> "SuiteSpec":
        """Read a spec YAML; a named profile's overrides are merged on top."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        profiles = data.pop("profiles", {}) or {}
        if profile:
            if profile not in profiles:
                raise KeyError(f"{path}: no profile {profile!r}; profiles: {sorted(profiles)}")
            data = _merge(data, profiles[profile])
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        spec = cls(**data)
        if spec.protocol not in PROTOCOLS:
            raise ValueError(f"{path}: unknown protocol {spec.protocol!r}; known: {PROTOCOLS}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_suite(suite: str, config: str | None = None) -> Path:
    """The spec file for a suite name (benchmarks/<name>.yaml, experiments/<name>.yaml) or an explicit path."""
    if config:
        return Path(config)
    for folder in (SUITES_DIR, REPO / "experiments"):
        candidate = folder / f"{suite}.yaml"
        if candidate.exists():
            return candidate
    if Path(suite).exists():
        return Path(suite)
    raise FileNotFoundError(f"no suite spec for {suite!r} in benchmarks/ or experiments/; pass --config PATH")


@dataclass(frozen=True)
class RunSpec:
    """One fusion training run of a suite."""

    fold: str
    mode: str
    model: str
    cue_set: str
    cues: tuple[str, ...] | str | None  # names, a subset spec like 'A_{-i+,-u}', or None = all
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.fold}/{self.mode}/{self.model}/{self.cue_set}/seed{self.seed}"


def expand_runs(spec: SuiteSpec, folds: list[str], cue_names: list[str]) -> list[RunSpec]:
    """Every run of the suite, in a stable order."""
    cue_sets = dict(spec.cue_sets)
    if spec.protocol == "ablation":  # all cues, and each leave-one-cue-out (single cues come from single_cue_models)
        cue_sets = {"A": None, **{f"A-{c}": tuple(o for o in cue_names if o != c) for c in cue_names}}
    runs = []
    for fold in folds:
        for mode in spec.modes:
            combos = [(model, name, tuple(c) if isinstance(c, list) else c) for model in spec.models
                      for name, c in cue_sets.items()]
            if mode in spec.single_cue_models:
                combos += [("single_cue", cue, (cue,)) for cue in cue_names]
            for model, cue_set, cues in combos:
                for seed in spec.seeds:
                    runs.append(RunSpec(fold, mode, model, cue_set, cues, seed))
    return runs
