"""Model bundles: a trained fusion run as one self-contained folder, and loading one (or a run folder) to apply it.

A bundle (`mcam export RUN --out DIR`) holds:

- `fusion.ckpt`: the run's fusion checkpoint (its cue names and dims, the detector fingerprints the fusion was
  trained on, the training part's cue normalisation and the class names travel inside it, `CUE_METADATA`);
- `weights/`: every detector weights file the cues were extracted with, found by fingerprint (the run's detector
  spec, its cue tables' records, or the artifact store's cue records) and copied by content;
- `bundle.yaml`: the network's class and settings, the detectors' init args (weights relative to the bundle),
  how faces are found and cut, which detectors were trained on synthetic renders only, the licences of shipped
  weights and the command that trained the fusion (its resolved `config.yaml` is `train_config.yaml`).

Loading rebuilds every detector and refuses one whose fingerprint differs from the checkpoint's, naming both.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import yaml

from mcam.cues.extract import entry_fingerprint, load_spec
from mcam.detector import Detector, InputKind
from mcam.errors import InputError
from mcam.faces import ALIGNMENTS, FINDERS, MIN_FACE_SCORE
from mcam.fusion.module import CUE_METADATA
from mcam.io import write_atomic
from mcam.registry import create_detector
from mcam.store import default_store_root, file_digest

FORMAT = "mcam-bundle/1"
BUNDLE_FILE = "bundle.yaml"
FUSION_FILE = "fusion.ckpt"
TRAIN_CONFIG = "train_config.yaml"
WEIGHTS_DIR = "weights"
RUN_CONFIG = "config.yaml"
CLIP_COLUMNS = ("micro_clip", "clip")  # the clips a clip detector's cue table may have been extracted from
SYNTHETIC_DATASETS = ("synth", "synth_au_corpus")  # `mcam synth`'s dataset names


@dataclass(frozen=True)
class FaceSettings:
    """How faces are found and cut, as `mcam prepare` cuts the faces detectors and fusions are trained on."""

    finder: str = "mediapipe"  # mcam.faces.FINDERS; 'none': every image is a face crop already
    align: str = "mesh"
    margin: float = 0.15
    size: int = 128  # side of the image detectors' face crop
    clip_size: int = 64  # side of the crops clip detectors read
    min_score: float = MIN_FACE_SCORE

    def __post_init__(self) -> None:
        if self.finder not in FINDERS:
            raise InputError(f"face finder {self.finder!r}: expected one of {FINDERS}")
        if self.align not in ALIGNMENTS:
            raise InputError(f"face alignment {self.align!r}: expected one of {ALIGNMENTS}")
        if not 0 <= self.min_score <= 1:
            raise InputError(f"minimum face score {self.min_score} is not in [0, 1]")


@dataclass
class DetectorEntry:
    """One cue's detector as the fusion was trained on it: registry name, init args, the cue table's fingerprint
    (for clip detectors with the clip column it read), weights' source and licence, synthetic-only training."""

    name: str
    config: dict[str, Any]
    fingerprint: str
    clip_column: str | None = None
    weights: str = ""
    licence: str = ""
    synthetic_only: bool = False


@dataclass
class BundleSpec:
    """Everything a bundle holds, paths absolute (see the module docstring)."""

    root: Path
    checkpoint: Path
    network: dict[str, Any]
    detectors: dict[str, DetectorEntry]
    faces: FaceSettings = field(default_factory=FaceSettings)
    trained_on: list[str] = field(default_factory=list)
    command: str = ""
    train_config: Path | None = None

    @property
    def synthetic_only(self) -> list[str]:
        """Cues whose detectors were trained on synthetic renders only."""
        return [cue for cue, entry in self.detectors.items() if entry.synthetic_only]


# --- reading a run folder -------------------------------------------------------------------------------------------
def _run_checkpoint(run: Path) -> Path:
    found = sorted((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []
    best = run / "checkpoints" / "best.ckpt"
    if best.is_file():
        return best
    if len(found) == 1:
        return found[0]
    raise InputError(f"{run}: no fusion checkpoint (checkpoints/best.ckpt){'; several: ' + str(found) if found else ''}"
                     "; give the folder of one `mcam fit` run or a bundle made by `mcam export`")


def read_checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The cue metadata of a fusion checkpoint (InputError naming the file when it has none or is unreadable)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or not a torch file: torch raises many kinds
        raise InputError(f"{path}: not a readable fusion checkpoint ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise InputError(f"{path}: not a fusion checkpoint (no state_dict)")
    metadata = payload.get(CUE_METADATA)
    if not isinstance(metadata, dict) or not metadata.get("fingerprints"):
        raise InputError(f"{path}: the checkpoint records no detector fingerprints (saved by an older MCAM?): "
                         "its detectors cannot be checked; refit with `mcam fit`")
    return metadata


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping")
    return data


def _existing(value: object, run: Path) -> Path | None:
    """A path from a run's config: as written (relative to where `mcam fit` ran), else relative to the run."""
    if not isinstance(value, str) or not value:
        return None
    for candidate in (Path(value), run / value):
        if candidate.exists():
            return candidate
    return None


def _candidates(run: Path, data: Mapping[str, Any], cue: str, fingerprint: str) -> Iterator[tuple[str, dict, str]]:
    """(registry name, init args, where it was found) of the detectors that may have made the cue: the run's GAM
    spec, its detector spec, the records beside its cue tables, then the artifact store's cue records."""
    for spec in (run / "gam_detectors.yaml", _existing(data.get("detectors"), run)):
        if spec is not None and Path(spec).is_file():
            specs = load_spec(spec)
            if cue in specs:
                yield cue, specs[cue], str(spec)
    sidecars = []
    cue_file = _existing((data.get("cue_files") or {}).get(cue), run)
    if cue_file is not None:
        sidecars.append(cue_file.with_suffix(".json"))
    cue_dir = _existing(data.get("cue_dir"), run)
    if cue_dir is not None:
        sidecars.append(cue_dir / f"{cue}.json")
    store = _existing(data.get("store"), run) or default_store_root()
    sidecars += sorted((Path(store) / "cues").glob(f"*/*-{fingerprint}.json"))
    for sidecar in sidecars:
        if sidecar.is_file():
            record = json.loads(sidecar.read_text())
            if isinstance(record.get("config"), dict) and record.get("detector"):
                yield str(record["detector"]), dict(record["config"]), str(sidecar)


def _matching(name: str, config: Mapping[str, Any], fingerprint: str) -> tuple[Detector, str | None] | None:
    """The detector and its clip column when `config` reproduces `fingerprint`, else None."""
    config = {k: v for k, v in config.items() if k != "device"}
    try:
        detector = create_detector(name, **config, device="cpu")
        if detector.input_kind == InputKind.CLIP:
            for column in CLIP_COLUMNS:
                if entry_fingerprint(detector, column) == fingerprint:
                    return detector, column
            return None
        return (detector, None) if detector.fingerprint() == fingerprint else None
    except (InputError, OSError, ValueError):  # a record whose weights moved or whose config no longer loads
        return None


def _trained_on(data: Mapping[str, Any], run: Path) -> list[str]:
    """The datasets of the fusion's manifest (empty when it cannot be read)."""
    from mcam.manifest import MANIFEST_FILE, read_table

    folder = _existing(data.get("data_dir"), run)
    if folder is None:
        return []
    path = folder / MANIFEST_FILE if folder.is_dir() else folder
    try:
        return sorted(read_table(path)["dataset"].astype(str).unique())
    except (InputError, OSError, KeyError):
        return []


def describe_run(run: str | Path, real_face: tuple[str, ...] = (), synthetic: tuple[str, ...] = (),
                 faces: Mapping[str, Any] | None = None) -> BundleSpec:
    """The bundle of a `mcam fit` run folder (config.yaml + checkpoints/best.ckpt), paths absolute.

    Detectors trained by MCAM (a weights file or an explicit random init) count as trained on synthetic renders
    only when the fusion's own data is `mcam synth`'s, unless named in `real_face`; `synthetic` marks others.
    `faces` overrides face settings (FaceSettings fields; default: `mcam prepare`'s, at the run's crop size).
    """
    run = Path(run)
    if not (run / RUN_CONFIG).is_file():
        raise InputError(f"model {run}: neither a bundle ({BUNDLE_FILE}) nor a run folder ({RUN_CONFIG}); give a "
                         "folder made by `mcam export` or by `mcam fit`")
    config = _yaml(run / RUN_CONFIG)
    checkpoint = _run_checkpoint(run)
    metadata = read_checkpoint_metadata(checkpoint)
    data = config.get("data") or {}
    network = (config.get("model") or {}).get("network")
    if not isinstance(network, dict) or "class_path" not in network:
        raise InputError(f"{run / RUN_CONFIG}: no model.network class_path")
    trained_on = _trained_on(data, run)
    on_renders = bool(trained_on) and all(d in SYNTHETIC_DATASETS for d in trained_on)
    unknown = sorted((set(real_face) | set(synthetic)) - set(metadata["cue_dims"]))
    if unknown:
        raise InputError(f"--real-face/--synthetic name cues {unknown} the fusion does not use "
                         f"({list(metadata['cue_dims'])})")
    detectors: dict[str, DetectorEntry] = {}
    for cue in metadata["cue_dims"]:
        fingerprint = metadata["fingerprints"][cue]
        tried = []
        for name, init, where in _candidates(run, data, cue, fingerprint):
            tried.append(where)
            found = _matching(name, init, fingerprint)
            if found is None:
                continue
            detector, clip_column = found
            info = detector.weights_info()
            own = detector.trainable and (_is_weights_file(init.get("weights")) or init.get("weights") == "random")
            detectors[cue] = DetectorEntry(
                name=name, config={k: v for k, v in init.items() if k != "device"}, fingerprint=fingerprint,
                clip_column=clip_column, weights=info.source, licence=info.licence,
                synthetic_only=cue not in real_face and (cue in synthetic or (own and on_renders)))
            break
        else:
            raise InputError(f"{run}: no detector with fingerprint {fingerprint} (cue {cue!r}, as the fusion was "
                             f"trained on) found; looked in {tried or 'no spec, cue record or store entry'}; "
                             "pass the store the run used (data.store) or re-extract its cues")
    return BundleSpec(root=run, checkpoint=checkpoint, network=network, detectors=detectors,
                      faces=dataclasses.replace(_face_settings(data, run), **dict(faces or {})), trained_on=trained_on,
                      command=f"mcam fit --config {TRAIN_CONFIG}", train_config=run / RUN_CONFIG)


def _is_weights_file(value: object) -> bool:
    return isinstance(value, str) and Path(value).is_file()


def _face_settings(data: Mapping[str, Any], run: Path) -> FaceSettings:
    """`mcam prepare`'s face settings, with the crop size of the fusion's own face images (the first row's)."""
    from mcam.faces import read_rgb
    from mcam.manifest import MANIFEST_FILE, read_table

    folder = _existing(data.get("data_dir"), run)
    if folder is not None:
        try:
            table = read_table(folder / MANIFEST_FILE if folder.is_dir() else folder)
            root = folder if folder.is_dir() else folder.parent
            return FaceSettings(size=int(read_rgb(root / str(table["path"].iloc[0])).shape[0]))
        except (InputError, OSError, KeyError, IndexError):
            pass
    return FaceSettings()


# --- writing and reading bundles ------------------------------------------------------------------------------------
def export_bundle(run: str | Path, out: str | Path, real_face: tuple[str, ...] = (), synthetic: tuple[str, ...] = (),
                  faces: Mapping[str, Any] | None = None) -> Path:
    """Write the bundle of run folder `run` into `out` (see the module docstring); returns `out/bundle.yaml`.

    Written into a temporary sibling folder and renamed into place: `out` is complete or absent."""
    spec = describe_run(run, real_face, synthetic, faces)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: exists and is not empty; choose a new folder")
    scratch = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / WEIGHTS_DIR).mkdir(parents=True)
    try:
        shutil.copyfile(spec.checkpoint, scratch / FUSION_FILE)
        if spec.train_config is not None:
            shutil.copyfile(spec.train_config, scratch / TRAIN_CONFIG)
        detectors = {}
        for cue, entry in spec.detectors.items():
            config, source = dict(entry.config), entry.weights
            for key, value in entry.config.items():
                if _is_weights_file(value):  # copied by content: the fingerprint counts bytes, not paths
                    digest = file_digest(value)
                    name = f"{cue}-{key}-{digest}{Path(value).suffix}"
                    shutil.copyfile(value, scratch / WEIGHTS_DIR / name)
                    config[key] = f"{WEIGHTS_DIR}/{name}"
                    if key == "weights":
                        source = f"checkpoint {WEIGHTS_DIR}/{name} (sha256 {digest}, from {Path(value).name})"
            detectors[cue] = {**dataclasses.asdict(entry), "config": config, "weights": source}
        record = {
            "format": FORMAT,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "exported_from": str(Path(run).resolve()),
            "fusion": {"checkpoint": FUSION_FILE, "network": spec.network},
            "trained_on": spec.trained_on,
            "command": spec.command,
            "faces": dataclasses.asdict(spec.faces),
            "detectors": detectors,
            "synthetic_only": spec.synthetic_only,
            "licences": {cue: {"weights": e.weights, "licence": e.licence} for cue, e in spec.detectors.items()
                         if e.licence},
        }
        write_atomic(scratch / BUNDLE_FILE, yaml.safe_dump(record, sort_keys=False, allow_unicode=True))
        if out.exists():
            out.rmdir()
        scratch.rename(out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return out / BUNDLE_FILE


def read_bundle(path: str | Path) -> BundleSpec:
    """A bundle folder (bundle.yaml) or a `mcam fit` run folder as a BundleSpec; InputError naming what is missing."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"model {path}: no such file or folder")
    if path.is_file() and path.name == BUNDLE_FILE:
        path = path.parent
    if not path.is_dir():
        raise InputError(f"model {path}: expected a bundle folder (`mcam export`) or a run folder (`mcam fit`)")
    if not (path / BUNDLE_FILE).is_file():
        return describe_run(path)
    record = _yaml(path / BUNDLE_FILE)
    if record.get("format") != FORMAT:
        raise InputError(f"{path / BUNDLE_FILE}: format {record.get('format')!r}, expected {FORMAT!r} (made by "
                         "another MCAM version?); export the run again")
    try:
        detectors = {}
        for cue, entry in record["detectors"].items():
            config = {k: str(path / v) if isinstance(v, str) and v.startswith(f"{WEIGHTS_DIR}/") else v
                      for k, v in entry["config"].items()}
            detectors[cue] = DetectorEntry(**{**entry, "config": config})
        train_config = path / TRAIN_CONFIG
        return BundleSpec(root=path, checkpoint=path / record["fusion"]["checkpoint"],
                          network=record["fusion"]["network"], detectors=detectors,
                          faces=FaceSettings(**record["faces"]), trained_on=list(record.get("trained_on") or []),
                          command=str(record.get("command", "")),
                          train_config=train_config if train_config.is_file() else None)
    except (KeyError, TypeError) as err:
        raise InputError(f"{path / BUNDLE_FILE}: incomplete or malformed ({type(err).__name__}: {err})") from None


# --- the loaded model -----------------------------------------------------------------------------------------------
@dataclass
class FusionModel:
    """A loaded bundle: its detectors (fingerprints checked), fusion network, normalisation and settings."""

    spec: BundleSpec
    detectors: dict[str, Detector]
    network: torch.nn.Module
    normalisation: dict[str, tuple[np.ndarray, np.ndarray]] | None
    class_names: list[str]
    device: str

    @property
    def cues(self) -> list[str]:
        return list(self.detectors)

    def fuse(self, cues: Mapping[str, np.ndarray], valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities [N, K] and cue weights [N, n_cues] of raw cue values {cue: [N, D]} and validity
        [N, n_cues], standardised with the training part's statistics as `mcam predict` does."""
        blocks = []
        for c, cue in enumerate(self.cues):
            values = np.asarray(cues[cue], dtype=np.float32)
            if self.normalisation is not None:
                mean, std = self.normalisation[cue]
                values = (values - mean) / std
            values = values.astype(np.float32, copy=True)
            values[~valid[:, c]] = 0.0
            blocks.append(values)
        x = torch.from_numpy(np.concatenate(blocks, axis=1)).to(self.device)
        with torch.inference_mode():
            logits, weights = self.network(x, torch.from_numpy(valid).to(self.device))[:2]
            return logits.softmax(1).float().cpu().numpy(), weights.float().cpu().numpy()


def _network(spec: BundleSpec, metadata: Mapping[str, Any], cue_labels: Mapping[str, list[str]]) -> torch.nn.Module:
    module_name, _, class_name = str(spec.network["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise InputError(f"{spec.root}: fusion network {spec.network['class_path']} not found ({err})") from None
    class_names = list(metadata["class_names"])
    return cls(cue_dims=dict(metadata["cue_dims"]), num_classes=len(class_names), cue_labels=dict(cue_labels),
               class_names=class_names, **dict(spec.network.get("init_args") or {}))


def load_model(path: str | Path, device: str = "cpu") -> FusionModel:
    """A bundle or run folder loaded for analysis on `device`: every detector rebuilt and its fingerprint checked
    against the fusion checkpoint's (InputError naming both when they differ)."""
    spec = read_bundle(path)
    if not spec.checkpoint.is_file():
        raise InputError(f"model {spec.root}: fusion checkpoint {spec.checkpoint} is missing")
    metadata = read_checkpoint_metadata(spec.checkpoint)
    trained = dict(metadata["fingerprints"])
    if list(spec.detectors) != list(metadata["cue_dims"]):
        raise InputError(f"model {spec.root}: the bundle lists detectors {list(spec.detectors)}, the fusion was "
                         f"trained on cues {list(metadata['cue_dims'])}")
    detectors: dict[str, Detector] = {}
    for cue, entry in spec.detectors.items():
        detector = create_detector(entry.name, **{**entry.config, "device": device})
        own = entry_fingerprint(detector, entry.clip_column) if entry.clip_column else detector.fingerprint()
        if own != trained[cue]:
            raise InputError(f"model {spec.root}: detector {cue!r} ({entry.name}) has fingerprint {own}, but the "
                             f"fusion was trained on cues of fingerprint {trained[cue]}: its weights or settings "
                             "differ from those the fusion learnt; export the run again")
        if detector.dim != int(metadata["cue_dims"][cue]):
            raise InputError(f"model {spec.root}: detector {cue!r} gives {detector.dim} values, the fusion reads "
                             f"{metadata['cue_dims'][cue]}")
        detectors[cue] = detector
    network = _network(spec, metadata, {c: d.labels for c, d in detectors.items()})
    state = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    own_state = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    try:
        network.load_state_dict(own_state)
    except RuntimeError as err:
        raise InputError(f"model {spec.root}: the checkpoint does not fit {spec.network['class_path']} with the "
                         f"bundle's settings ({' '.join(str(err).split())[:200]})") from None
    network.eval().to(device)
    saved = metadata.get("normalisation")
    normalisation = None if saved is None else {
        c: (np.asarray(v["mean"], dtype=np.float32), np.asarray(v["std"], dtype=np.float32)) for c, v in saved.items()}
    return FusionModel(spec=spec, detectors=detectors, network=network, normalisation=normalisation,
                       class_names=list(metadata["class_names"]), device=device)


__all__ = ["BundleSpec", "DetectorEntry", "FaceSettings", "FusionModel", "describe_run", "export_bundle",
           "load_model", "read_bundle"]
