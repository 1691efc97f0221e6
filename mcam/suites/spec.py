"""Suite specs (YAML, parsed and type-checked by jsonargparse) and their expansion into runs.

A run is fold x mode x model x cue subset x detector seed x fusion seed. Any field can be
overridden on the command line (`mcam bench loro --seeds '[0,1]'`); unknown keys and wrong types
are errors naming the file and the field.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, TypedDict

import yaml

from mcam.assets import find_suite, load_yaml, parse_config
from mcam.errors import InputError

PROTOCOLS = ("loro", "cross", "kfold", "mixing", "ablation")
Protocol = Literal["loro", "cross", "kfold", "mixing", "ablation"]


class SpecError(InputError):
    """A suite spec that cannot be used: unknown key, wrong type, unknown profile; the message names them."""


class DataSpec(TypedDict, total=False):
    """Where a suite's data comes from: one manifest folder (`dir`, rendered from `synth_config` when missing) or
    several prepared folders merged (`dirs`)."""

    dir: str
    dirs: list[str]
    synth_config: str | None
    synth_seed: int


class CorpusSpec(DataSpec, total=False):
    """The AU corpus of a suite, and the seed of the one AU regressor trained on it (MCAM's off-the-shelf AU model,
    as OpenFace is the paper's: trained once and shared by every detector seed)."""

    seed: int


class ProtocolArgs(TypedDict, total=False):
    """Extra arguments of the protocols' fold makers (mcam.suites.protocols); each protocol takes some of them."""

    column: str  # cross, mixing: the manifest column whose values are the domains (default region)
    k: int  # kfold
    base: str  # mixing
    added: str  # mixing
    fractions: list[float]  # mixing


CueSubset = list[str] | str | None  # names, a subset spec like 'A_{-i+,-u}', or None = all


@dataclass
class SuiteSpec:
    """Everything a suite needs; every field has a default so a spec lists only what it changes."""

    name: str = "loro"
    protocol: Protocol = "loro"
    data: DataSpec = field(default_factory=lambda: {
        "dir": "data/synth", "synth_config": "configs/synth/default.yaml", "synth_seed": 1})
    source_region: str | None = "western_posed"  # LAM detectors are pre-trained on its train/val subjects
    # an AU corpus (faces with ground-truth AUs, no emotion labels; rendered from `synth_config` when missing): the
    # AU detectors among `pretrain` train their regressor on it (joined by the source region's AU-coded training
    # faces), then only their AU -> emotion SVM on the source region (null: everything trains on the source region).
    # The regressor is one off-the-shelf model trained once with `seed` and shared by every detector seed (whose
    # replicates vary the SVM on top of it and every other trained detector)
    au_corpus: CorpusSpec | None = field(default_factory=lambda: {
        "dir": "data/au_corpus", "synth_config": "configs/synth/au_corpus.yaml", "synth_seed": 1, "seed": 0})
    detectors: list[str] = field(default_factory=lambda: ["vgg", "au", "micro", "micro_plus", "macro"])
    # trained from a seeded random init on the source region; the others keep their shipped weights
    pretrain: list[str] = field(default_factory=lambda: ["vgg", "au", "micro", "micro_plus"])
    pretrain_epochs: int | None = None
    detector_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # detector-training replicates
    modes: list[Literal["lam", "gam"]] = field(default_factory=lambda: ["lam", "gam"])
    gam_detectors: list[str] | None = None  # which detectors GAM fine-tunes (default: every one in `pretrain`)
    gam_epochs: int = 1
    models: list[str] = field(default_factory=lambda: ["attention", "attention_paper", "concat", "static_weights",
                                                       "late_average"])
    single_cue_models: list[str] = field(default_factory=lambda: ["lam"])  # modes that also get single-cue models
    cue_sets: dict[str, CueSubset] = field(default_factory=lambda: {"A": None})  # name -> cue subset spec (None = all)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # fusion seeds, per detector seed
    # LightningCLI config groups every fusion run starts from (then configs/model/<model>.yaml), as `mcam fit`
    fusion_configs: list[str] = field(default_factory=lambda: ["configs/trainer/default.yaml"])
    fusion_overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys, e.g. {trainer.max_epochs: 40}
    max_epochs: int | None = None  # shorthands for trainer.max_epochs / early_stopping.patience / data.batch_size
    patience: int | None = None
    batch_size: int | None = None
    val_fraction: float = 0.2
    split_seed: int = 0  # seeds the subject-disjoint train/val/test assignment of the folds
    # what fusion runs are early-stopped on: held-out subjects of the training regions (in_domain), or each
    # training region held out in turn, the run's prediction averaging those models (leave_one_source_region_out)
    selection: Literal["in_domain", "leave_one_source_region_out"] = "in_domain"
    folds: list[str] | None = None  # restrict to these folds (e.g. held-out regions)
    protocol_args: ProtocolArgs = field(default_factory=dict)  # type: ignore[assignment]
    min_test_subjects: int = 10  # a scored fold with fewer test subjects is an error
    store: str = "outputs/store"  # the content-addressed artifact store (detectors, cues, folds), shareable
    accelerator: Literal["cpu", "gpu", "cuda", "auto"] = "cpu"  # device of the fusion runs and the detectors
    threads: int = 2  # CPU threads for detector training and extraction (each fusion run uses 1)
    workers: int = 2  # parallel fusion runs (processes); results do not depend on it

    def __post_init__(self) -> None:
        for name in ("detector_seeds", "seeds", "modes", "models", "detectors"):
            if not getattr(self, name):
                raise SpecError(f"{name}: must not be empty")
        for name in ("workers", "threads", "min_test_subjects", "gam_epochs", "max_epochs", "patience", "batch_size",
                     "pretrain_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SpecError(f"{name}: must be >= 1, got {value}")
        for name in ("detector_seeds", "seeds"):
            if any(seed < 0 for seed in getattr(self, name)):
                raise SpecError(f"{name}: seeds must be >= 0, got {getattr(self, name)}")
        if not ("dir" in self.data) ^ ("dirs" in self.data):
            raise SpecError(f"data: give either dir or dirs, got {dict(self.data)}")
        if self.au_corpus is not None and ("dir" not in self.au_corpus or "dirs" in self.au_corpus):
            raise SpecError(f"au_corpus: give one folder (dir), got {dict(self.au_corpus or {})}")
        if self.au_corpus is not None:  # the regressor's seed named in every spec, so equal specs compare equal
            self.au_corpus = {**self.au_corpus, "seed": self.au_corpus.get("seed", 0)}
            if self.au_corpus["seed"] < 0:
                raise SpecError(f"au_corpus.seed: must be >= 0, got {self.au_corpus['seed']}")
        self._check_protocol_args()
        if not 0 <= self.val_fraction < 1:
            raise SpecError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        unknown = sorted(set(self.pretrain) - set(self.detectors))
        if unknown:
            raise SpecError(f"pretrain: {unknown} not among detectors {self.detectors}")

    def _check_protocol_args(self) -> None:
        from mcam.suites.protocols import PROTOCOL_FOLDS

        maker = inspect.signature(PROTOCOL_FOLDS[self.protocol])
        taken = [n for n, p in list(maker.parameters.items())[4:] if p.kind is not p.VAR_KEYWORD]
        unknown = sorted(set(self.protocol_args) - set(taken))
        if unknown:
            raise SpecError(f"protocol_args: {unknown} not used by protocol {self.protocol!r}; "
                            f"it takes {taken or 'none'}")

    @property
    def fine_tuned(self) -> list[str]:
        """The detectors GAM fine-tunes."""
        return list(self.pretrain if self.gam_detectors is None else self.gam_detectors)

    @classmethod
    def load(cls, path: str | Path, profile: str | None = None, overrides: Sequence[str] = ()) -> "SuiteSpec":
        """Read a spec YAML; a named profile's overrides are merged on top, then command-line `overrides`
        (`--seeds '[0,1]'`, `--data.dir X`)."""
        data = load_yaml(path, error=SpecError) or {}
        if not isinstance(data, dict):
            raise SpecError(f"{path}: expected a mapping of spec fields")
        profiles = data.pop("profiles", {}) or {}
        if profile:
            if profile not in profiles:
                raise SpecError(f"{path}: no profile {profile!r}; profiles: {sorted(profiles)}")
            data = _merge(data, profiles[profile])
        return parse_config(cls, data, path, list(overrides), error=SpecError)

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


def check_environment(spec: SuiteSpec, source: str | Path) -> None:
    """What a spec needs from this machine and from its other files, checked before any work: the device,
    the detectors, the data folders, the fusion config files and every model's fusion arguments (an option
    in `fusion_overrides` that LightningCLI would refuse after the detectors are trained)."""
    import tempfile

    from mcam.assets import resolve_path
    from mcam.detector import check_device
    from mcam.fusion.cli import check_arguments
    from mcam.registry import detector_class
    from mcam.suites.runner import CueSource, FusionJob, fusion_configs, run_arguments

    if spec.accelerator in ("gpu", "cuda"):
        check_device("cuda", f"{source}: accelerator")
    for name in dict.fromkeys(spec.detectors):
        detector_class(name)
    for folder in spec.data.get("dirs", []):
        if not (Path(folder) / "manifest.csv").is_file():
            raise SpecError(f"{source}: data.dirs: {folder}/manifest.csv not found (prepare it with `mcam prepare`)")
    if "dir" in spec.data and not (Path(spec.data["dir"]) / "manifest.csv").is_file():
        if not spec.data.get("synth_config"):
            raise SpecError(f"{source}: data.dir: {spec.data['dir']}/manifest.csv not found and no synth_config")
        resolve_path(spec.data["synth_config"])
    models = [*spec.models, *(["single_cue"] if set(spec.single_cue_models) & set(spec.modes) else [])]
    with tempfile.TemporaryDirectory(prefix="mcam-check-") as scratch:
        for model in dict.fromkeys(models):
            try:
                configs = fusion_configs(spec, model)
            except FileNotFoundError as err:
                raise SpecError(f"{source}: models: no fusion model {model!r} ({err})") from None
            run = RunSpec("check", spec.modes[0], model, "A", (spec.detectors[0],), 0, 0)
            job = FusionJob((run,), "held_out", (("check", Path(scratch)),), (CueSource(0, (), ()),), Path(scratch),
                            spec)
            arguments = Path(scratch) / "run_args.yaml"
            arguments.write_text(yaml.safe_dump(run_arguments(job, Path(scratch))))
            try:
                check_arguments(["fit", *(a for c in [*configs, arguments] for a in ("--config", str(c)))])
            except InputError as err:
                raise SpecError(f"{source}: fusion run of model {model!r} (fusion_configs, fusion_overrides, "
                                f"max_epochs, patience, batch_size): {err}") from None


def resolve_suite(suite: str, config: str | None = None) -> Path:
    """The spec file for a suite name (shipped benchmarks/<name>.yaml, experiments/<name>.yaml) or a path."""
    if config:
        if not Path(config).is_file():
            raise SpecError(f"suite spec {config} not found")
        return Path(config)
    if Path(suite).is_file():
        return Path(suite)
    try:
        return find_suite(suite)
    except (KeyError, FileNotFoundError) as err:
        raise SpecError(str(err.args[0] if err.args else err)) from None


@dataclass(frozen=True)
class RunSpec:
    """One fusion training run of a suite."""

    fold: str
    mode: str
    model: str
    cue_set: str
    cues: tuple[str, ...] | str | None  # names, a subset spec like 'A_{-i+,-u}', or None = all
    detector_seed: int
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.fold}/{self.mode}/{self.model}/{self.cue_set}/d{self.detector_seed}/seed{self.seed}"


def expand_runs(spec: SuiteSpec, folds: list[str], cue_names: list[str]) -> list[RunSpec]:
    """Every run of the suite, in a stable order."""
    cue_sets = dict(spec.cue_sets)
    if spec.protocol == "ablation":  # all cues, and each leave-one-cue-out (single cues come from single_cue_models)
        cue_sets = {"A": None, **{f"A-{c}": tuple(o for o in cue_names if o != c) for c in cue_names}}
    runs = []
    for detector_seed in spec.detector_seeds:
        for fold in folds:
            for mode in spec.modes:
                combos = [(model, name, tuple(c) if isinstance(c, list) else c) for model in spec.models
                          for name, c in cue_sets.items()]
                if mode in spec.single_cue_models:
                    combos += [("single_cue", cue, (cue,)) for cue in cue_names]
                for model, cue_set, cues in combos:
                    for seed in spec.seeds:
                        runs.append(RunSpec(fold, mode, model, cue_set, cues, detector_seed, seed))
    return runs
