"""The suite driver: data -> LAM detectors -> cues -> folds -> fusion runs (resumable) -> results.csv -> report."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
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
RUN_COLUMNS = ["run_id", "suite", "protocol", "fold", "mode", "model", "cue_set", "cues", "seed"]


def ensure_data(data: Mapping[str, Any], out: Path) -> Manifest:
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
        generate(folder, config if config.is_absolute() else REPO / config, seed=int(data.get("synth_seed", 0)))
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


class SuiteRunner:
    """Runs one suite spec into an output folder; every expensive step is cached or skipped when done."""

    def __init__(self, spec: SuiteSpec, out: str | Path, progress: bool = True) -> None:
        self.spec, self.out, self.progress = spec, Path(out), progress
        self.cache = self.out / "cache"
        self.results = ResultsTable(self.out / RESULTS)
        self._gam: tuple[str, dict[str, CueTable]] | None = None

    def run(self) -> Path:
        """Execute every run not yet in results.csv, then write the report; returns the report path."""
        from mcam.suites.report import write_report

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "suite.yaml").write_text(yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        started = time.time()
        manifest = ensure_data(self.spec.data, self.out)
        self.manifest = manifest
        self.lam_spec, reserved = self._lam_detectors(manifest)
        self.lam_tables = extract_cues(manifest, build_detectors(self.lam_spec), self.cache, progress=self.progress)
        folds = {f.name: f for f in make_folds(self.spec.protocol, manifest.table, reserved, self.spec.val_fraction,
                                               seed=0, args=self.spec.protocol_args, only=self.spec.folds)}
        runs = expand_runs(self.spec, list(folds), list(self.lam_tables))
        done = self.results.done()
        todo = [r for r in runs if r.run_id not in done]
        log.info("%d runs, %d already done, %d to go", len(runs), len(runs) - len(todo), len(todo))
        for run in tqdm(todo, desc=f"{self.spec.name} runs", unit="run", disable=not self.progress):
            self._execute(run, folds[run.fold])
        report = write_report(self.out)
        (self.out / "timing.txt").write_text(f"wall seconds (this invocation): {time.time() - started:.1f}\n")
        return report

    def _lam_detectors(self, manifest: Manifest) -> tuple[Path, set[str]]:
        """Pre-train the trainable detectors on the source region's train/val subjects; those subjects are reserved."""
        if self.spec.source_region is None:
            spec = REPO / "configs" / "detectors" / "default.yaml"
            return spec, set()
        table = manifest.table
        source = (table["region"] == self.spec.source_region) & (table.get("split", "train") != "test")
        source_manifest = manifest.subset(source)
        path = pretrain_detectors(source_manifest, self.spec.detectors, self.out / "detectors" / "lam",
                                  region=self.spec.source_region, epochs=self.spec.pretrain_epochs, seed=0)
        return path, set(source_manifest.table["subject"])

    def _tables(self, run: RunSpec, fold: Fold) -> dict[str, CueTable]:
        if run.mode == "lam":
            return self.lam_tables
        if run.mode != "gam":
            raise ValueError(f"unknown mode {run.mode!r}; expected lam or gam")
        if self._gam is None or self._gam[0] != fold.name:
            training = self.manifest.subset(pd.Series(fold.mask("train") | fold.mask("val")))
            folder = self.out / "detectors" / f"gam-{fold.name.replace('/', '_').replace('>', '')}"
            path = pretrain_detectors(training, self.spec.detectors, folder, base_spec=self.lam_spec,
                                      epochs=self.spec.gam_epochs, seed=0, fine_tune=self.spec.gam_detectors)
            tables = extract_cues(self.manifest, build_detectors(path), self.cache, progress=self.progress)
            self._gam = (fold.name, tables)
        return self._gam[1]

    def _execute(self, run: RunSpec, fold: Fold) -> None:
        from mcam.fusion.api import train_fusion

        started = time.time()
        tables = self._tables(run, fold)
        table = self.manifest.table.copy()
        table["split"] = fold.parts
        table = table[table["split"].notna()].reset_index(drop=True)
        run_dir = self.out / "runs" / run.run_id.replace(">", "")
        cues = list(run.cues) if isinstance(run.cues, tuple) else run.cues
        result = train_fusion(tables, Manifest(table, self.manifest.root), model=run.model, cues=cues,
                              split={"split": "manifest"}, max_epochs=self.spec.max_epochs, seed=run.seed,
                              log_dir=run_dir, patience=self.spec.patience, batch_size=self.spec.batch_size,
                              log_images=run.model == "attention",
                              network_args={"cue": run.cues[0]} if run.model == "single_cue" else None)
        result.predictions.to_csv(run_dir / "predictions.csv", index=False)
        (run_dir / "run.yaml").write_text(yaml.safe_dump({
            "run": {**run.__dict__, "cues": cues}, "fold": fold.description, "suite": self.spec.to_dict(),
            "detectors": str(self.lam_spec if run.mode == "lam" else self._gam and self._gam[0])}, sort_keys=False))
        row = {"run_id": run.run_id, "suite": self.spec.name, "protocol": self.spec.protocol, "fold": run.fold,
               "mode": run.mode, "model": run.model, "cue_set": run.cue_set,
               "cues": ",".join(result.data.cue_names), "seed": run.seed,
               **run_metrics(result.predictions, result.data.class_names, seed=run.seed),
               "seconds": round(time.time() - started, 2), "run_dir": str(run_dir.relative_to(self.out))}
        self.results.append(row)


def run_suite(spec: SuiteSpec, out: str | Path, progress: bool = True) -> Path:
    """Run a suite spec into `out`; returns the report path."""
    return SuiteRunner(spec, out, progress).run()
