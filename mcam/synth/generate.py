"""Render the synthetic regional face dataset: images, clips, ground-truth AUs, manifest, contact sheet."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from mcam.assets import load_yaml, parse_config, resolve_path
from mcam.errors import InputError
from mcam.io import atomic_output, ensure_writable, write_atomic
from mcam.labels import CANONICAL, head_map
from mcam.manifest import save_manifest
from mcam.splits import assign_splits
from mcam.synth.mesh import AU_NAMES, load_mesh_model
from mcam.synth.regions import Region, RegionConfigError, Subject
from mcam.synth.render import FaceRenderer, RenderParams

# Relative: the file under the working directory if there is one, else the packaged config (mcam.assets.resolve_path).
DEFAULT_CONFIG = "configs/synth/default.yaml"
# Intensity envelopes over the frames of a clip (scaled to the clip length).
SEQUENCE_ENVELOPE = np.array([0.0, 0.33, 0.67, 1.0, 1.0, 0.67, 0.33, 0.0])  # neutral -> apex -> offset
MICRO_ENVELOPE = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0])  # brief onset/offset
AU_CORPUS = "au_corpus"  # region and subject prefix of an AU corpus's rows
RENDERING = "synth_config.yaml"  # in a rendered folder: what it was rendered from (`rendering`)
AU_CORPUS_STREAM = 7919  # keeps the corpus's random streams apart from the regional dataset's


class ClipsConfig(TypedDict, total=False):
    """Which clips to render per sample, and their shape."""

    sequence: bool  # a neutral -> apex -> offset clip (`clip` column)
    micro: bool  # a low-intensity brief clip (`micro_clip` column)
    frames: int
    size: int
    micro_gain: list[float]  # [low, high] of the micro clip's AU gain


class SplitFractions(TypedDict, total=False):
    """Subject fractions per region held out for validation and test (the rest trains)."""

    val: float
    test: float


@dataclass(frozen=True)
class SynthConfigFile:
    """The schema of a synth config YAML (configs/synth/*.yaml): unknown keys and wrong types are refused."""

    regions: list[str]  # region YAML files, relative to the config's folder
    subjects_per_region: int
    samples_per_emotion: int
    image_size: int
    skin_tones: dict[str, list[float]]  # group -> RGB in [0, 1]
    clips: ClipsConfig = field(default_factory=lambda: ClipsConfig())
    splits: SplitFractions | None = None

    def __post_init__(self) -> None:
        for name in ("subjects_per_region", "samples_per_emotion", "image_size"):
            check_count(name, getattr(self, name))
        for name in ("frames", "size"):
            if name in self.clips:
                check_count(f"clips.{name}", self.clips[name])
        if not self.regions:
            raise RegionConfigError("regions: must list at least one region file")


class AUCorpusSpec(TypedDict, total=False):
    """What an AU-coverage corpus shows: sparse random AU combinations, none of any region's emotion prototypes."""

    subjects: int
    samples_per_subject: int
    active_aus: list[int]  # [low, high]: how many AUs a sample shows (uniform, each AU equally likely)
    intensity: list[float]  # [low, high]: an active AU's intensity (uniform)
    neutral_fraction: float  # samples showing no AU at all


@dataclass(frozen=True)
class AUCorpusConfigFile:
    """The schema of an AU corpus config (configs/synth/au_corpus*.yaml): faces with ground-truth AUs and no
    emotion labels, standing in for DISFA/BP4D. Identities come from the listed regions' subject mixes in turn;
    each sample's capture conditions from one of the regions drawn at random (the full range of all of them);
    the regions' display rules are not read."""

    au_corpus: AUCorpusSpec
    regions: list[str]  # region YAML files, relative to the config's folder
    image_size: int
    skin_tones: dict[str, list[float]]

    def __post_init__(self) -> None:
        check_count("image_size", self.image_size)
        for name in ("subjects", "samples_per_subject"):
            check_count(f"au_corpus.{name}", int(self.au_corpus.get(name, 1)))
        low, high = self.au_corpus.get("active_aus", [1, 6])
        if not 1 <= low <= high <= len(AU_NAMES):
            raise RegionConfigError(f"au_corpus.active_aus: need 1 <= low <= high <= {len(AU_NAMES)}, got {[low, high]}")
        low, high = self.au_corpus.get("intensity", [0.15, 1.0])
        if not 0 < low <= high <= 1:
            raise RegionConfigError(f"au_corpus.intensity: need 0 < low <= high <= 1, got {[low, high]}")
        if not 0 <= self.au_corpus.get("neutral_fraction", 0.1) < 1:
            raise RegionConfigError("au_corpus.neutral_fraction: must be in [0, 1)")
        if not self.regions:
            raise RegionConfigError("regions: must list at least one region file")


def check_count(name: str, value: int) -> int:
    """`value` when it is a count >= 1; RegionConfigError naming `name` otherwise."""
    if value < 1:
        raise RegionConfigError(f"{name}: must be >= 1, got {value}")
    return value


@dataclass(frozen=True)
class SynthConfig:
    """What to render; loaded from configs/synth/*.yaml."""

    regions: list[Region]
    subjects_per_region: int
    samples_per_emotion: int
    image_size: int
    clips: dict[str, Any]
    splits: dict[str, float]  # {'val': .., 'test': ..}: subject fractions per region (mcam.splits.assign_splits)
    skin_tones: dict[str, list[float]]

    @classmethod
    def from_yaml(cls, path: str | Path, subjects_per_region: int | None = None) -> "SynthConfig":
        """The config file, checked (SynthConfigFile), its region files read; `subjects_per_region` overrides."""
        path = resolve_path(path)
        data = parse_config(SynthConfigFile, load_yaml(path, RegionConfigError), path, error=RegionConfigError)
        regions = [Region.from_yaml(resolve_path(r, base=path.parent, asset_base="configs/synth"))
                   for r in data.regions]
        names = [r.name for r in regions]
        if len(set(names)) != len(names):
            raise RegionConfigError(f"{path}: duplicate region names {names}")
        groups = sorted({g for r in regions for g in r.subjects["groups"]} - set(data.skin_tones))
        if groups:
            raise RegionConfigError(f"{path}: skin_tones lacks groups {groups} that the regions use")
        count = data.subjects_per_region if subjects_per_region is None else check_count(
            "subjects_per_region (--subjects-per-region)", subjects_per_region)
        return cls(regions, count, data.samples_per_emotion, data.image_size, dict(data.clips),
                   {"val": 0.15, "test": 0.15, **dict(data.splits or {})}, dict(data.skin_tones))


def _envelope(base: np.ndarray, frames: int) -> np.ndarray:
    return np.interp(np.linspace(0, 1, frames), np.linspace(0, 1, len(base)), base)


def _render_at(renderer: FaceRenderer, aus: np.ndarray, params: RenderParams, size: int, effective: int,
               rng: np.random.Generator) -> np.ndarray:
    """Render with detail limited to `effective` pixels, then resample to `size` (low-resolution capture)."""
    if effective >= size:
        return renderer.render(aus, dataclasses.replace(params, size=size), rng)
    small = renderer.render(aus, dataclasses.replace(params, size=effective, noise_sd=0.0), rng)
    image = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    image += rng.normal(0, params.noise_sd, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _clip(renderer: FaceRenderer, aus: np.ndarray, params: RenderParams, envelope: np.ndarray, size: int,
          rng: np.random.Generator) -> np.ndarray:
    """Gray uint8 [T, size, size] frames of the AU vector under an intensity envelope, with slight head motion."""
    frames = []
    for weight in envelope:
        moved = dataclasses.replace(params, size=size, yaw=params.yaw + rng.normal(0, 0.5),
                                    pitch=params.pitch + rng.normal(0, 0.5), noise_sd=params.noise_sd * 0.5)
        frames.append(cv2.cvtColor(renderer.render(aus * weight, moved, rng), cv2.COLOR_RGB2GRAY))
    return np.stack(frames)


def _render_subject(job: tuple[SynthConfig, int, int, int, str]) -> list[dict[str, Any]]:
    """All samples of one subject (runs in a worker process); returns manifest rows."""
    config, region_index, subject_index, seed, out = job
    region = config.regions[region_index]
    out_dir = Path(out)
    renderer = FaceRenderer(load_mesh_model())
    rng = np.random.default_rng([seed, region_index, subject_index])
    subject: Subject = region.sample_subject(subject_index, config.skin_tones, rng)
    micro3, micro4 = head_map("micro3"), head_map("micro4")
    clips = config.clips
    frames = int(clips.get("frames", 8))
    rows = []
    for emotion_index, emotion in enumerate(CANONICAL):
        for rep in range(config.samples_per_emotion):
            sample_rng = np.random.default_rng([seed, region_index, subject_index, emotion_index, rep])
            sample_id = f"{subject.subject_id}-{emotion}-{rep}"
            aus = region.sample_aus(emotion, subject, sample_rng)
            params = region.sample_render(subject, config.image_size, sample_rng)
            image = _render_at(renderer, aus, params, config.image_size, region.effective_resolution(sample_rng),
                               sample_rng)
            rel_image = Path("images") / region.name / f"{sample_id}.png"
            (out_dir / rel_image.parent).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out_dir / rel_image), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            row: dict[str, Any] = {
                "sample_id": sample_id, "path": rel_image.as_posix(), "label": emotion, "region": region.name,
                "dataset": "synth", "subject": subject.subject_id, "group": subject.group, "kind": "image",
                "bbox": f"0 0 {config.image_size} {config.image_size}",
            }
            clip_dir = out_dir / "clips" / region.name
            if clips.get("sequence"):
                clip_dir.mkdir(parents=True, exist_ok=True)
                sequence = _clip(renderer, aus, params, _envelope(SEQUENCE_ENVELOPE, frames), clips["size"], sample_rng)
                np.save(clip_dir / f"{sample_id}.seq.npy", sequence)
                row["clip"] = f"clips/{region.name}/{sample_id}.seq.npy"
            if clips.get("micro"):
                clip_dir.mkdir(parents=True, exist_ok=True)
                gain = float(sample_rng.uniform(*clips.get("micro_gain", [0.2, 0.4])))
                micro = _clip(renderer, aus * gain, params, _envelope(MICRO_ENVELOPE, frames), clips["size"], sample_rng)
                np.save(clip_dir / f"{sample_id}.micro.npy", micro)
                row["micro_clip"] = f"clips/{region.name}/{sample_id}.micro.npy"
                row["micro_label"] = micro3.target(emotion) or micro4.target(emotion)
            row.update({name: round(float(v), 4) for name, v in zip(AU_NAMES, aus)})
            rows.append(row)
    return rows


def corpus_aus(spec: AUCorpusSpec, rng: np.random.Generator) -> np.ndarray:
    """One AU corpus sample's AU vector: none (neutral_fraction), else k ~ U{active_aus} AUs drawn uniformly
    without replacement, each at an intensity ~ U(intensity)."""
    aus = np.zeros(len(AU_NAMES), np.float32)
    if rng.random() < spec.get("neutral_fraction", 0.1):
        return aus
    low, high = spec.get("active_aus", [1, 6])
    active = rng.choice(len(AU_NAMES), size=int(rng.integers(low, high + 1)), replace=False)
    aus[active] = rng.uniform(*spec.get("intensity", [0.15, 1.0]), size=len(active))
    return aus


def _render_corpus_subject(job: tuple[AUCorpusConfigFile, list[Region], int, int, str]) -> list[dict[str, Any]]:
    """All samples of one AU corpus identity (runs in a worker process); returns manifest rows."""
    config, regions, subject_index, seed, out = job
    renderer = FaceRenderer(load_mesh_model())
    rng = np.random.default_rng([seed, AU_CORPUS_STREAM, subject_index])
    home = regions[subject_index % len(regions)]
    subject = dataclasses.replace(home.sample_subject(subject_index, config.skin_tones, rng),
                                  subject_id=f"{AU_CORPUS}-s{subject_index:04d}", region=AU_CORPUS)
    size, rows = config.image_size, []
    folder = Path(out) / "images" / AU_CORPUS
    folder.mkdir(parents=True, exist_ok=True)
    for sample in range(int(config.au_corpus.get("samples_per_subject", 1))):
        sample_rng = np.random.default_rng([seed, AU_CORPUS_STREAM, subject_index, sample])
        capture = regions[int(sample_rng.integers(len(regions)))]
        aus = corpus_aus(config.au_corpus, sample_rng)
        params = capture.sample_render(subject, size, sample_rng)
        image = _render_at(renderer, aus, params, size, capture.effective_resolution(sample_rng), sample_rng)
        sample_id = f"{subject.subject_id}-{sample:03d}"
        cv2.imwrite(str(folder / f"{sample_id}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append({"sample_id": sample_id, "path": f"images/{AU_CORPUS}/{sample_id}.png", "label": "",
                     "region": AU_CORPUS, "dataset": "synth_au_corpus", "subject": subject.subject_id,
                     "group": subject.group, "kind": "image", "bbox": f"0 0 {size} {size}", "capture": capture.name,
                     **{name: round(float(v), 4) for name, v in zip(AU_NAMES, aus)}})
    return rows


def _render_jobs(render: Any, jobs: list[Any], workers: int | None, progress: bool) -> list[dict[str, Any]]:
    """Every job's rows, rendered in `workers` forked processes (all cores by default)."""
    workers = workers or os.cpu_count() or 1
    load_mesh_model()  # once, before forking: workers inherit it
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="rendering subjects", unit="subject", disable=not progress)
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            for result in pool.imap_unordered(render, jobs):
                rows.extend(result)
                bar.update()
    else:
        for job in jobs:
            rows.extend(render(job))
            bar.update()
    bar.close()
    return rows


def generate_au_corpus(out_dir: str | Path, config_path: str | Path, seed: int = 0, subjects: int | None = None,
                       workers: int | None = None, progress: bool = True) -> Path:
    """Render an AU corpus (an AUCorpusConfigFile) into out_dir; returns its manifest path (label column empty:
    load it with `load_manifest(..., labelled=False)`). Deterministic for (config, seed)."""
    path = resolve_path(config_path)
    config = parse_config(AUCorpusConfigFile, load_yaml(path, RegionConfigError), path, error=RegionConfigError)
    if subjects is not None:
        config = dataclasses.replace(config, au_corpus={**config.au_corpus, "subjects": check_count(
            "au_corpus.subjects (--subjects-per-region)", subjects)})
    regions = [Region.from_yaml(resolve_path(r, base=path.parent, asset_base="configs/synth")) for r in config.regions]
    groups = sorted({g for r in regions for g in r.subjects["groups"]} - set(config.skin_tones))
    if groups:
        raise RegionConfigError(f"{path}: skin_tones lacks groups {groups} that the regions use")
    out = ensure_writable(out_dir, "synth output folder")
    jobs = [(config, regions, s, seed, str(out)) for s in range(int(config.au_corpus.get("subjects", 1)))]
    rows = _render_jobs(_render_corpus_subject, jobs, workers, progress)
    table = pd.DataFrame(rows).sort_values("sample_id").reset_index(drop=True)
    manifest = save_manifest(table, out / "manifest.csv", labelled=False)
    contact_sheet(table, out, out / "contact_sheet.png")
    write_atomic(out / RENDERING, yaml.safe_dump(
        {"config": str(path.resolve()), **rendering(path, seed, int(config.au_corpus.get("subjects", 1)))}))
    return manifest


def is_au_corpus_config(config_path: str | Path) -> bool:
    """Whether a synth config describes an AU corpus (an `au_corpus` section) rather than the regional dataset."""
    data = load_yaml(resolve_path(config_path), RegionConfigError)
    return isinstance(data, dict) and "au_corpus" in data


def image_grid(rows: list[tuple[str, list[tuple[Path, str]]]], columns: list[str], path: Path,
               cell: int = 112) -> Path:
    """PNG grid: one named row per entry of `rows`, each cell an image with an optional caption under it."""
    label_w, header_h = 150, 24
    width = max(len(columns), max(len(cells) for _, cells in rows))
    sheet = np.full((header_h + cell * len(rows), label_w + cell * width, 3), 255, np.uint8)
    for j, name in enumerate(columns):
        cv2.putText(sheet, name, (label_w + j * cell + 8, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, cells) in enumerate(rows):
        cv2.putText(sheet, name, (6, header_h + i * cell + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for j, (image_path, caption) in enumerate(cells):
            y, x = header_h + i * cell, label_w + j * cell
            sheet[y:y + cell, x:x + cell] = cv2.resize(cv2.imread(str(image_path)), (cell, cell),
                                                       interpolation=cv2.INTER_AREA)
            if caption:
                cv2.putText(sheet, caption, (x + 3, y + cell - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1,
                            cv2.LINE_AA)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise OSError(f"could not write {path}")
    return path


def contact_sheet(table: pd.DataFrame, root: Path, path: Path) -> Path:
    """One row per region, one column per emotion (first subject's first sample); for an AU corpus (no labels),
    one row per identity (the first six), its faces captioned with the AUs they show."""
    if (table["label"] == "").all():
        subjects = sorted(table["subject"].unique())[:6]
        rows = [(subject, [(root / r.path, " ".join(a.removeprefix("AU") for a in AU_NAMES if getattr(r, a) > 0))
                           for r in table[table["subject"] == subject].head(8).itertuples()]) for subject in subjects]
        return image_grid(rows, [], path)
    rows = []
    for region in sorted(table["region"].unique()):
        first = table[table["region"] == region]["subject"].min()
        rows.append((region, [(root / table[(table["subject"] == first) & (table["label"] == emotion)]["path"].iloc[0],
                               "") for emotion in CANONICAL]))
    return image_grid(rows, list(CANONICAL), path)


def generate(out_dir: str | Path, config_path: str | Path = DEFAULT_CONFIG, seed: int = 0,
             subjects_per_region: int | None = None, workers: int | None = None, progress: bool = True) -> Path:
    """Render the dataset into out_dir (an AU corpus for an AU corpus config, `generate_au_corpus`); returns the
    manifest path. Deterministic for (config, seed)."""
    if is_au_corpus_config(config_path):
        return generate_au_corpus(out_dir, config_path, seed, subjects_per_region, workers, progress)
    config = SynthConfig.from_yaml(config_path, subjects_per_region)
    out = ensure_writable(out_dir, "synth output folder")
    jobs = [(config, r, s, seed, str(out)) for r in range(len(config.regions)) for s in range(config.subjects_per_region)]
    rows = _render_jobs(_render_subject, jobs, workers, progress)
    table = pd.DataFrame(rows).sort_values("sample_id").reset_index(drop=True)
    table.insert(table.columns.get_loc("kind") + 1, "split", assign_splits(table, config.splits, seed))
    manifest = save_manifest(table, out / "manifest.csv")
    contact_sheet(table, out, out / "contact_sheet.png")
    write_atomic(out / RENDERING, yaml.safe_dump({"config": str(resolve_path(config_path).resolve()),
                                                  **rendering(config_path, seed, config.subjects_per_region)}))
    return manifest


def rendering(config_path: str | Path, seed: int, subjects: int | None = None) -> dict[str, Any]:
    """What a rendering is made from: the seed, the subject count (the config's, or `subjects` when overridden) and
    a digest of the config file's and its region files' bytes. Written beside every rendering; `check_rendering`
    compares it before a folder is reused."""
    path = resolve_path(config_path)
    data = load_yaml(path, RegionConfigError)
    if subjects is None:
        corpus = data.get("au_corpus")
        subjects = corpus.get("subjects", 1) if isinstance(corpus, dict) else data.get("subjects_per_region")
    digest = hashlib.sha256(path.read_bytes())
    for region in data.get("regions") or []:
        digest.update(resolve_path(region, base=path.parent, asset_base="configs/synth").read_bytes())
    return {"seed": int(seed), "subjects": int(subjects), "config_sha256": digest.hexdigest()[:16]}


def check_rendering(folder: str | Path, config_path: str | Path, seed: int) -> None:
    """InputError unless `folder` was rendered from `config_path` with `seed` (its synth_config.yaml; a
    folder without one, e.g. a prepared dataset, passes): a folder rendered from another config, seed or size would
    otherwise be reused as if the spec had made it."""
    recorded_path = Path(folder) / RENDERING
    if not recorded_path.is_file():
        return
    recorded = yaml.safe_load(recorded_path.read_text()) or {}
    if "subjects" not in recorded:  # written before `rendering` (subjects_per_region, no digest)
        recorded["subjects"] = recorded.get("subjects_per_region")
    wanted = rendering(config_path, seed)
    differ = [f"{key} {recorded[key]} (wanted {value})" for key, value in wanted.items()
              if key in recorded and recorded[key] != value]  # an older record lacks the digest
    if differ:
        raise InputError(
            f"{folder}: rendered from another config than {config_path} seed {seed}: {', '.join(differ)}. Remove the "
            "folder to render it again, or point the spec's `dir` at another folder")
