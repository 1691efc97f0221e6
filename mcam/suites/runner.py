"""The suite driver: data -> LAM detectors -> cues -> folds -> fusion runs (resumable) -> results.csv -> report."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch
import yaml
from tqdm import tqdm

from mcam.cues.extract import build_detectors, extract_cues
from mcam.cues.pretrain import pretrain_detectors
from mcam.cues.table import CueTable
from mcam.manifest import Manifest, load_manifest, save_manifest
from mcam.suites.metrics import run_metrics
from mcam.suites.protocols import Fold, make_folds
from mcam.suites.spec import REPO, RunSpec, SuiteSpec, expand_runs

log = logging.getLogger(__name__)
RESULTS = "results.csv"
# Spec fields that change a run's result: a suite resumes only while these (and the data) are unchanged.
# Others (seeds, models, cue sets, folds, modes, workers) may grow between invocations.
RESULT_SETTINGS = ("protocol", "protocol_args", "data", "source_region", "detectors", "pretrain_epochs",
                   "gam_detectors", "gam_epochs", "max_epochs", "patience", "batch_size", "val_fraction")


class SuiteMismatchError(RuntimeError):
    """An output folder whose results were made with other settings or data."""
RUN_COLUMNS = ["run_id", "suite", "protocol", "fold", "mode", "model", "cue_set", "cues", "seed"]


def ensure_data(data: Mapping[str, Any], out: Path, progress: bool = True) -> Manifest:
    """The suite's dataset: one manifest folder (`dir`, the synthetic data rendered there on first use), or
    several prepared folders (`dirs`, e.g. a JAFFE and a CK+ preparation as two regions) merged into out/data."""
    if "dirs" in data:
        return merge_manifests([Path(d) for d in data["dirs"]], out / "data")
    folder = Path(data["dir"])
    if not (folder / "manifest.csv").exists():
        if not data.get("synth_config"):
            raise FileNotFoundError(f"{folder}/manifest.csv not found (prepare the dataset with `mcam prepare`)")
        from mcam.synth.generate import generate

        config = Path(data["synth_config"])
        generate(folder, config if config.is_absolute() else REPO / config, seed=int(data.get("synth_seed", 0)),
                 progress=progress)
    return load_manifest(folder)


def merge_manifests(folders: list[Path], out: Path) -> Manifest:
    """One manifest over several dataset folders (file paths made absolute); sample ids must stay unique."""
    tables = []
    for folder in folders:
        manifest = load_manifest(folder)
        table = manifest.table.copy()
        for column in ("path", "clip", "micro_clip"):
            if column in table:
                table[column] = table[column].map(lambda p: str(manifest.resolve(p).resolve()) if isinstance(p, str) else p)
        tables.append(table)
    save_manifest(pd.concat(tables, ignore_index=True), out / "manifest.csv")
    return load_manifest(out)


class ResultsTable:
    """results.csv: one row per finished run, rewritten atomically after each run so a kill never corrupts it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path) if self.path.exists() else pd.DataFrame(columns=RUN_COLUMNS)

    def done(self) -> set[str]:
        return set(self.read()["run_id"])

    def append(self, row: Mapping[str, Any]) -> None:
        table = self.read()
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
        tmp = self.path.with_suffix(".csv.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class FusionJob:
    """Everything one fusion run needs, picklable so it can run in a worker process."""

    run: RunSpec
    fold: str
    manifest: Manifest  # the fold's rows, `split` column = train/val/test
    tables: tuple[tuple[str, Path], ...]  # cue name -> saved CueTable
    detectors: str  # the detectors.yaml the cues came from
    out: Path
    spec: SuiteSpec


def quiet_lightning() -> None:
    """Keep Lightning's per-run banners (GPU available, tips) out of suite output; warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


@lru_cache(maxsize=2)
def _load_tables(tables: tuple[tuple[str, Path], ...]) -> dict[str, CueTable]:
    return {name: CueTable.load(path) for name, path in tables}


def execute_job(job: FusionJob) -> dict[str, Any]:
    """Train and test one fusion model; write its predictions and run.yaml; return its results row."""
    from mcam.fusion.api import train_fusion

    torch.set_num_threads(1)
    quiet_lightning()
    started = time.time()
    run, spec = job.run, job.spec
    run_dir = job.out / "runs" / run.run_id.replace(">", "")
    cues = list(run.cues) if isinstance(run.cues, tuple) else run.cues
    result = train_fusion(_load_tables(job.tables), job.manifest, model=run.model, cues=cues,
                          split={"split": "manifest"}, max_epochs=spec.max_epochs, seed=run.seed, log_dir=run_dir,
                          patience=spec.patience, batch_size=spec.batch_size, log_images=run.model == "attention",
                          network_args={"cue": run.cues[0]} if run.model == "single_cue" else None)
    result.predictions.to_csv(run_dir / "predictions.csv", index=False)
    (run_dir / "run.yaml").write_text(yaml.safe_dump({
        "run": {**dataclasses.asdict(run), "cues": cues}, "fold": job.fold, "detectors": job.detectors,
        "suite": spec.to_dict()}, sort_keys=False))
    return {"run_id": run.run_id, "suite": spec.name, "protocol": spec.protocol, "fold": run.fold, "mode": run.mode,
            "model": run.model, "cue_set": run.cue_set, "cues": ",".join(result.data.cue_names), "seed": run.seed,
            **run_metrics(result.predictions, result.data.class_names, seed=run.seed),
            "seconds": round(time.time() - started, 2), "run_dir": str(run_dir.relative_to(job.out))}


class JobRunner:
    """Runs fusion jobs inline (1 worker) or in spawned worker processes; rows land in results.csv as runs finish."""

    def __init__(self, workers: int, total: int, results: ResultsTable, name: str, progress: bool) -> None:
        self.workers, self.results = workers, results
        self.bar = tqdm(total=total, desc=f"{name} runs", unit="run", disable=not progress)
        self.pool: ProcessPoolExecutor | None = None
        self.pending: list[Future] = []

    def __enter__(self) -> "JobRunner":
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        return self

    def submit(self, jobs: list[FusionJob]) -> None:
        if self.pool is None:
            for job in jobs:
                self._record(execute_job(job))
            return
        self.pending += [self.pool.submit(execute_job, job) for job in jobs]
        self._collect(block=False)

    def _collect(self, block: bool) -> None:
        done = [f for f in self.pending if block or f.done()]
        for future in (as_completed(done) if block else done):
            self._record(future.result())
        self.pending = [f for f in self.pending if f not in done]

    def _record(self, row: dict[str, Any]) -> None:
        self.results.append(row)
        self.bar.update()

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if error is None:
                self._collect(block=True)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=error is None, cancel_futures=error is not None)
            self.bar.close()


class SuiteRunner:
    """Runs one suite spec into an output folder; every expensive step is cached or skipped when done."""

    def __init__(self, spec: SuiteSpec, out: str | Path, progress: bool = True) -> None:
        self.spec, self.out, self.progress = spec, Path(out), progress
        # content-keyed (fingerprints, manifest hashes), so suites can safely share them
        self.work = Path(spec.workdir) if spec.workdir else self.out
        self.cache = self.work / "cache"
        self.results = ResultsTable(self.out / RESULTS)

    def run(self) -> Path:
        """Execute every run not yet in results.csv, then write the report; returns the report path."""
        from mcam.suites.report import write_report

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "suite.yaml").write_text(yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        started = time.time()
        manifest = ensure_data(self.spec.data, self.out, self.progress)
        self._check_resumable(manifest)
        lam_spec, reserved = self._lam_detectors(manifest)
        lam_tables = extract_cues(manifest, build_detectors(lam_spec), self.cache, progress=self.progress)
        folds = make_folds(self.spec.protocol, manifest.table, reserved, self.spec.val_fraction, seed=0,
                           args=self.spec.protocol_args, only=self.spec.folds)
        runs = expand_runs(self.spec, [f.name for f in folds], list(lam_tables))
        done = self.results.done()
        todo = [r for r in runs if r.run_id not in done]
        log.info("%d runs, %d already done, %d to go", len(runs), len(runs) - len(todo), len(todo))
        groups = [(fold, mode, [r for r in todo if r.fold == fold.name and r.mode == mode])
                  for fold in folds for mode in self.spec.modes]
        with JobRunner(self.spec.workers, len(todo), self.results, self.spec.name, self.progress) as jobs:
            for fold, mode, mode_runs in groups:  # LAM groups first: their cues are ready
                if mode_runs and mode == "lam":
                    jobs.submit(self._jobs(manifest, fold, mode_runs, lam_spec, lam_tables))
            for fold, mode, mode_runs in groups:  # GAM: fine-tune + extract while workers train LAM fusions
                if mode_runs and mode != "lam":
                    if mode != "gam":
                        raise ValueError(f"unknown mode {mode!r}; expected lam or gam")
                    jobs.submit(self._jobs(manifest, fold, mode_runs, *self._gam_tables(manifest, fold, lam_spec)))
        report = write_report(self.out)
        (self.out / "timing.txt").write_text(f"wall seconds (this invocation): {time.time() - started:.1f}\n")
        return report

    def _check_resumable(self, manifest: Manifest) -> None:
        """Refuse to add runs to results made with other settings or data (rows would silently mix)."""
        signature = {"manifest": manifest.fingerprint(),
                     **{k: v for k, v in self.spec.to_dict().items() if k in RESULT_SETTINGS}}
        path = self.out / "signature.json"
        if self.results.path.exists() and path.exists():
            previous = json.loads(path.read_text())
            changed = sorted(k for k in {*previous, *signature} if previous.get(k) != signature.get(k))
            if changed:
                raise SuiteMismatchError(
                    f"{self.out} holds results made with other {', '.join(changed)}; resuming would mix them. "
                    f"Use another --out, or delete {self.results.path} to start over.")
        path.write_text(json.dumps(signature, indent=1, sort_keys=True, default=str))

    def _jobs(self, manifest: Manifest, fold: Fold, runs: list[RunSpec], detectors: Path,
              tables: Mapping[str, CueTable]) -> list[FusionJob]:
        saved = self._save_tables(manifest, tables)
        fold_manifest = self._fold_manifest(manifest, fold)
        return [FusionJob(r, fold.description, fold_manifest, saved, str(detectors), self.out, self.spec) for r in runs]

    @staticmethod
    def _fold_manifest(manifest: Manifest, fold: Fold) -> Manifest:
        table = manifest.table.copy()
        table["split"] = fold.parts
        return Manifest(table[table["split"].notna()].reset_index(drop=True), manifest.root)

    def _lam_detectors(self, manifest: Manifest) -> tuple[Path, set[str]]:
        """Pre-train the trainable detectors on the source region's train/val subjects; those subjects are reserved."""
        if self.spec.source_region is None:
            return REPO / "configs" / "detectors" / "default.yaml", set()
        table = manifest.table
        source = (table["region"] == self.spec.source_region) & (table.get("split", "train") != "test")
        source_manifest = manifest.subset(source)
        path = pretrain_detectors(source_manifest, self.spec.detectors,
                                  self.work / "detectors" / f"lam-{self.spec.source_region}",
                                  region=self.spec.source_region, epochs=self.spec.pretrain_epochs, seed=0)
        return path, set(source_manifest.table["subject"])

    def _gam_tables(self, manifest: Manifest, fold: Fold, lam_spec: Path) -> tuple[Path, dict[str, CueTable]]:
        """GAM: fine-tune the detectors on the fold's training rows, then re-extract (new fingerprints)."""
        fold_rows = self._fold_manifest(manifest, fold)
        training = fold_rows.subset(fold_rows.table["split"].isin(["train", "val"]))
        folder = self.work / "detectors" / f"gam-{self.spec.protocol}-{fold.name.replace('/', '_').replace('>', '')}"
        path = pretrain_detectors(training, self.spec.detectors, folder, base_spec=lam_spec,
                                  epochs=self.spec.gam_epochs, seed=0, fine_tune=self.spec.gam_detectors)
        return path, extract_cues(manifest, build_detectors(path), self.cache, progress=self.progress)

    def _save_tables(self, manifest: Manifest, tables: Mapping[str, CueTable]) -> tuple[tuple[str, Path], ...]:
        """Cue tables as files that worker processes load (one file per data + detector fingerprint, written once)."""
        saved = []
        data = manifest.fingerprint()
        for name, table in tables.items():
            path = self.out / "tables" / f"{name}-{data}-{table.fingerprint}.npz"
            if not path.exists():
                table.save(path)
            saved.append((name, path))
        return tuple(saved)


def run_suite(spec: SuiteSpec, out: str | Path, progress: bool = True) -> Path:
    """Run a suite spec into `out`; returns the report path."""
    return SuiteRunner(spec, out, progress).run()
