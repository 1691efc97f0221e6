"""The suite driver: data -> detectors (per detector seed) -> cues -> folds -> fusion runs -> results.csv -> report.

Every derived artifact (trained detectors, cue tables, fold tables) comes from the content-addressed
store (`mcam.store`), so suites, profiles and `mcam fit` share them safely. Runs that differ only by
fusion seed (and, for LAM, by detector seed: the detector seeds' cues are replicates of one another) train together
as one stack (a FusionEnsemble in one LightningCLI `fit`, built from the same config groups `mcam fit` uses); each
run still gets its own folder with the resolved `config.yaml` that reproduces it alone. A lock on the output folder
keeps a second process out; rows land atomically, so a killed suite resumes where it stopped with identical results.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import socket
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
import yaml

from mcam import progress
from mcam.assets import asset_path, resolve_path
from mcam.cues.extract import build_detectors, extract_cues
from mcam.cues.pretrain import adapt_detectors, au_corpus_base, stored_detectors
from mcam.cues.store import CueStore
from mcam.cues.table import CueTable
from mcam.detector import accelerator_device, default_device
from mcam.fusion.predictions import Predictions
from mcam.errors import UserError
from mcam.io import write_atomic
from mcam.manifest import Manifest, load_manifest, save_manifest
from mcam.quiet import quiet_lightning
from mcam.registry import detector_class
from mcam.store import ArtifactStore
from mcam.suites.metrics import run_metrics
from mcam.suites.protocols import Fold, make_folds, selection_folds
from mcam.suites.spec import RunSpec, SpecError, SuiteSpec, expand_runs

log = logging.getLogger(__name__)
RESULTS = "results.csv"
LOCK = ".lock"
# Spec fields that change a run's result: a suite resumes only while these (and the data and configs) are
# unchanged. Others (seeds, detector seeds, models, cue sets, folds, modes, workers, store) may grow or move.
RESULT_SETTINGS = ("protocol", "protocol_args", "data", "source_region", "au_corpus", "detectors", "pretrain",
                   "pretrain_epochs", "gam_detectors", "gam_epochs", "fusion_configs", "fusion_overrides", "max_epochs",
                   "patience", "batch_size", "val_fraction", "split_seed", "selection", "accelerator", "threads")
RUN_COLUMNS = ["run_id", "suite", "protocol", "fold", "fold_role", "mode", "model", "cue_set", "cues",
               "detector_seed", "seed"]
PATH_COLUMNS = ("run_dir",)  # columns that name places, not results
TIME_COLUMNS = ("seconds",)


class SuiteMismatchError(UserError, RuntimeError):
    """An output folder whose results were made with other settings or data."""


class SuiteLockedError(UserError, RuntimeError):
    """Another process is running a suite into the same output folder."""


@contextlib.contextmanager
def suite_lock(out: Path, command: str) -> Iterator[None]:
    """Hold `out/.lock` (refusing at once, naming the holder, when another process has it); freed on exit or death."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SuiteLockedError(f"{out} is in use by {holder}; wait for it to finish or choose another --out") from None
    try:
        handle.seek(0)
        handle.truncate()
        started = _dt.datetime.now().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started} ({command})\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def ensure_data(data: Mapping[str, Any], out: Path, progress: bool = True, labelled: bool = True) -> Manifest:
    """The suite's dataset: one manifest folder (`dir`, the synthetic data rendered there on first use), or
    several prepared folders (`dirs`, e.g. a JAFFE and a CK+ preparation as two regions) merged into out/data;
    `labelled=False`: an AU corpus (one folder)."""
    if "dirs" in data:
        return merge_manifests([Path(d) for d in data["dirs"]], out / "data")
    folder = Path(data["dir"])
    if data.get("synth_config"):
        from mcam.synth.generate import check_rendering, generate

        config, seed = resolve_path(str(data["synth_config"])), int(data.get("synth_seed", 0))
        if (folder / "manifest.csv").exists():
            check_rendering(folder, config, seed)
        else:
            generate(folder, config, seed=seed, progress=progress)
    elif not (folder / "manifest.csv").exists():
        raise FileNotFoundError(f"{folder}/manifest.csv not found (prepare the dataset with `mcam prepare`)")
    return load_manifest(folder, labelled=labelled)


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
    """results.csv: one row per finished run (sorted by run_id), replaced atomically after each run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path) if self.path.exists() else pd.DataFrame(columns=RUN_COLUMNS)

    def done(self) -> set[str]:
        return set(self.read()["run_id"])

    def append(self, rows: list[Mapping[str, Any]]) -> None:
        """Add rows in one atomic write (a stack's members land together)."""
        table = self.read()
        again = sorted({r["run_id"] for r in rows} & set(table["run_id"]))
        if again:
            raise RuntimeError(f"{self.path}: runs {again} are already recorded")
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if len(table) else pd.DataFrame(rows)
        write_atomic(self.path, table.sort_values("run_id", kind="stable").to_csv(index=False))


@dataclass(frozen=True)
class CueSource:
    """The cues of one detector seed: where its tables are, and the artifact keys recorded with its runs."""

    detector_seed: int
    cue_files: tuple[tuple[str, str], ...]  # cue name -> CueTable .npz in the store
    keys: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FusionJob:
    """Everything one stack of fusion runs (the same run but for the fusion seed and the detector seed) needs,
    picklable so it can run in a worker process."""

    runs: tuple[RunSpec, ...]  # by detector seed in the order of `sources`, then by fusion seed
    fold_role: str
    # (name, manifest folder) per selection variant of the fold (store entries; `split` column = train/val/test):
    # one for selection in_domain, one per held-out training region for leave_one_source_region_out
    fold_dirs: tuple[tuple[str, Path], ...]
    sources: tuple[CueSource, ...]  # the runs' detector seeds' cues (the stack's cue replicates)
    out: Path
    spec: SuiteSpec

    def source(self, run: RunSpec) -> CueSource:
        return next(s for s in self.sources if s.detector_seed == run.detector_seed)


def _nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """{'trainer.max_epochs': 5} -> {'trainer': {'max_epochs': 5}}."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def fusion_configs(spec: SuiteSpec, model: str) -> list[Path]:
    """The LightningCLI config files a suite run starts from: the spec's groups, then the model's."""
    return [resolve_path(c) for c in spec.fusion_configs] + [asset_path(f"configs/model/{model}.yaml")]


def stack_key(run: RunSpec) -> str:
    """The run id without detector and fusion seed: runs that share it train as one stack (LAM; GAM per seed)."""
    return run.run_id.rsplit("/", 2)[0]


def stack_id(runs: tuple[RunSpec, ...] | list[RunSpec]) -> str:
    """The stack's key with every detector seed of its runs: 'east_asian/lam/attention/A/d0-1-2'."""
    seeds = "-".join(str(s) for s in dict.fromkeys(r.detector_seed for r in runs))
    return f"{stack_key(runs[0])}/d{seeds}"


def run_dir(out: Path, run: RunSpec) -> Path:
    return out / "runs" / run.run_id.replace(">", "")


def variant_folder(job: FusionJob, name: str) -> str:
    """Sub-folder of a stack and of its runs for one selection variant ('' when the fold has only itself)."""
    return "" if len(job.fold_dirs) == 1 else f"val-{name.rsplit('~', 1)[-1]}"


def run_arguments(job: FusionJob, stack_dir: Path, variant: int = 0) -> dict[str, Any]:
    """The stack's own settings for one selection variant of its fold, applied over its config files (last wins)."""
    name, fold_dir = job.fold_dirs[variant]
    run, spec = job.runs[0], job.spec
    shorthands = {"trainer.max_epochs": spec.max_epochs, "early_stopping.patience": spec.patience,
                  "data.batch_size": spec.batch_size}
    settings = _nested({k: v for k, v in shorthands.items() if v is not None})
    overrides = _nested(spec.fusion_overrides)
    cues = list(run.cues) if isinstance(run.cues, tuple) else run.cues
    # figures per run cost more than the run (the report draws them); per-region/group/cue scalars every 10 epochs
    model: dict[str, Any] = {"image_every_n_epochs": 0, "details_every_n_epochs": 10,
                             "seeds": [r.seed for r in job.runs]}
    data: dict[str, Any] = {"data_dir": str(fold_dir), "split": "manifest",
                            "cue_files": dict(job.sources[0].cue_files), "cues": cues}
    if len(job.sources) > 1:  # one stack over the detector seeds: each member reads its own seed's cues
        order = [s.detector_seed for s in job.sources]
        model["replicates"] = [order.index(r.detector_seed) for r in job.runs]
        data["cue_replicates"] = [dict(s.cue_files) for s in job.sources]
    if run.model == "single_cue":
        model["network"] = {"init_args": {"cue": cues[0]}}
    own = {
        "seed_everything": run.seed, "threads": 1,
        "member_dirs": [str(run_dir(job.out, r) / variant_folder(job, name)) for r in job.runs],
        "trainer": {"accelerator": spec.accelerator, "devices": 1, "deterministic": True, "log_every_n_steps": 50,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(stack_dir), "name": "", "version": ""}}},
        "data": data,
        "model": model,
    }
    merged = settings
    for layer in (overrides, own):
        merged = _merge_dicts(merged, layer)
    return merged


def _merge_dicts(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge_dicts(merged[key], value) if isinstance(value, Mapping) and isinstance(
            merged.get(key), Mapping) else value
    return merged


def _watch_parent(parent: int) -> None:
    """Worker processes end themselves when the suite process is gone (e.g. killed with -9)."""
    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="mcam-parent-watch").start()


def execute_job(job: FusionJob) -> list[dict[str, Any]]:
    """Train and test one stack of fusion runs as one LightningCLI fit; return one results row per run."""
    import torch

    from mcam.fusion.cli import run_lightning_cli
    from mcam.fusion.subsets import parse_cues

    torch.set_num_threads(1)
    quiet_lightning()
    started = time.monotonic()
    spec, first = job.spec, job.runs[0]
    stack_dir = job.out / "stacks" / stack_id(job.runs).replace(">", "")
    for folder in [stack_dir, *(run_dir(job.out, r) for r in job.runs)]:
        shutil.rmtree(folder, ignore_errors=True)  # what a killed attempt left
    for variant, (name, _) in enumerate(job.fold_dirs):
        folder = stack_dir / variant_folder(job, name)
        folder.mkdir(parents=True)
        write_atomic(folder / "run_args.yaml", yaml.safe_dump(run_arguments(job, folder, variant), sort_keys=False))
        args = ["fit"]
        for config in [*fusion_configs(spec, first.model), folder / "run_args.yaml"]:
            args += ["--config", str(config)]
        run_lightning_cli(args)
    seconds = round((time.monotonic() - started) / len(job.runs), 2)
    rows = []
    for run in job.runs:
        folder = run_dir(job.out, run)
        variants = [folder / variant_folder(job, name) for name, _ in job.fold_dirs]
        if len(variants) > 1:  # leave_one_source_region_out: the run is the average of its variants' models
            average_runs(variants, folder)
        predictions = Predictions.read_csv(folder / "predictions.csv")
        cues = list(run.cues) if isinstance(run.cues, tuple) else run.cues
        keys, names = dict(job.source(run).keys), [name for name, _ in job.source(run).cue_files]
        write_atomic(folder / "run.yaml", yaml.safe_dump({
            "run": {**dataclasses.asdict(run), "cues": cues},
            "fold_role": job.fold_role, "selection": spec.selection, "artifacts": keys,
            "stack": str(stack_dir.relative_to(job.out)),
            "reproduce": [f"mcam fit --config {v / 'config.yaml'}" for v in variants]
            + ([f"average the predictions of {len(variants)} runs (mcam.suites.runner.average_runs)"]
               if len(variants) > 1 else [])}, sort_keys=False))
        rows.append({"run_id": run.run_id, "suite": spec.name, "protocol": spec.protocol, "fold": run.fold,
                     "fold_role": job.fold_role, "mode": run.mode, "model": run.model, "cue_set": run.cue_set,
                     "cues": ",".join(parse_cues(cues, names)),
                     "detector_seed": run.detector_seed, "seed": run.seed,
                     **run_metrics(predictions, predictions.classes, seed=run.seed), **_training(folder), **keys,
                     "seconds": seconds, "run_dir": str(folder.relative_to(job.out))})
    return rows


def average_runs(variants: list[Path], folder: Path) -> None:
    """One run from the models of its selection variants: predictions.csv with their mean class probabilities and
    cue weights, training.yaml with their mean validation scores (epochs summed)."""
    from mcam.fusion.cli import TRAINING_SUMMARY

    Predictions.average([Predictions.read_csv(v / "predictions.csv") for v in variants]).to_csv(
        folder / "predictions.csv")
    summaries = [yaml.safe_load((v / TRAINING_SUMMARY).read_text()) for v in variants]
    mean = {k: float(np.mean([s[k] for s in summaries])) for k in ("val_loss", "val_acc", "best_epoch")}
    write_atomic(folder / TRAINING_SUMMARY, yaml.safe_dump(
        {**mean, "epochs": int(sum(s["epochs"] for s in summaries)),
         "variants": {v.name: s for v, s in zip(variants, summaries)}}, sort_keys=False))


def _training(folder: Path) -> dict[str, Any]:
    """The run's validation scores at its best epoch and its epochs (model selection reads these, never test)."""
    from mcam.fusion.cli import TRAINING_SUMMARY

    summary = yaml.safe_load((folder / TRAINING_SUMMARY).read_text())
    return {"val_loss": summary["val_loss"], "val_acc": summary["val_acc"], "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs"]}


class JobRunner:
    """Runs fusion stacks inline (1 worker) or in spawned worker processes; a stack's rows land in results.csv as soon
    as it finishes (also while the main process is busy training detectors)."""

    def __init__(self, workers: int, total: int, results: ResultsTable, name: str) -> None:
        self.workers, self.results = workers, results
        self.total, self.name = total, name
        self.bar = None  # opened with the first stack, so it does not sit at 0 while detectors train
        self.stacks = [0, 0]  # submitted, finished
        self.pool: ProcessPoolExecutor | None = None
        self.pending: list[Future] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []

    def __enter__(self) -> "JobRunner":
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                            initializer=_watch_parent, initargs=(os.getpid(),))
        return self

    def submit(self, jobs: list[FusionJob]) -> None:
        if self.bar is None and jobs:
            self.bar = progress.bar(self.total, f"{self.name} fusion runs", "run", status=self._status)
        self.stacks[0] += len(jobs)
        if self.pool is None:
            for job in jobs:
                self._record(execute_job(job))
            return
        for job in jobs:
            future = self.pool.submit(execute_job, job)
            future.add_done_callback(self._finished)
            self.pending.append(future)

    def _finished(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is None:
            try:
                self._record(future.result())
            except BaseException as error:  # raised again in __exit__: a callback's errors are otherwise only logged
                self.errors.append(error)

    def _record(self, rows: list[dict[str, Any]]) -> None:
        with self.lock:  # rows arrive from the pool's thread and the main thread
            self.results.append(rows)
            self.stacks[1] += 1
            self.bar.update(len(rows))

    def _status(self) -> str:
        """What the fusion stage is doing, for its progress bar."""
        left = self.stacks[0] - self.stacks[1]
        running = min(left, max(self.workers, 1))
        return f"{running} stack(s) training, {left - running} waiting"

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if error is None:
                wait(self.pending)
                failed = [f.exception() for f in self.pending if f.exception() is not None] + self.errors
                if failed:
                    raise failed[0]
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=error is None, cancel_futures=error is not None)
            if self.bar is not None:
                self.bar.close()


def environment_text() -> str:
    """What ran a suite, for environment.txt: Python, the platform, the CPU and the vector instructions torch's
    kernels use on it, and every installed distribution's version (scripts/constraints.txt pins them; results from
    two environments are not the same experiment: on another CPU type the kernels round differently)."""
    packages = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                       if d.metadata["Name"]}, key=str.lower)
    return "\n".join([f"python {platform.python_version()} ({platform.platform()})",
                      f"cpu {cpu_model()} (torch kernels: {torch.backends.cpu.get_cpu_capability()})", *packages]) + "\n"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())


class StageClock:
    """Wall seconds per stage of a suite invocation, for timing.txt (first line: the whole invocation)."""

    def __init__(self) -> None:
        self.begun = time.monotonic()
        self.stages: dict[str, float] = {}
        self._open: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        """Time stage `name` from now (closing the open one); announced on the job's progress display."""
        self.stop()
        self._open = (name, time.monotonic())
        progress.announce(name)

    def stop(self) -> None:
        if self._open is not None:
            name, since = self._open
            self.stages[name] = self.stages.get(name, 0.0) + time.monotonic() - since
            self._open = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()

    def text(self) -> str:
        lines = [f"wall seconds (this invocation): {time.monotonic() - self.begun:.1f}"]
        return "\n".join(lines + [f"  {name}: {seconds:.1f}" for name, seconds in self.stages.items()]) + "\n"


class SuiteRunner:
    """Runs one suite spec into an output folder; every expensive step is a store entry or skipped when done."""

    def __init__(self, spec: SuiteSpec, out: str | Path, progress: bool = True, command: str = "") -> None:
        self.spec, self.out, self.progress, self.command = spec, Path(out), progress, command
        self.store = ArtifactStore(spec.store)
        self.cue_root = self.store.root / "cues"
        self.results = ResultsTable(self.out / RESULTS)
        self.device = accelerator_device(spec.accelerator)  # detectors run where the fusion runs do
        self._au_base: dict[str, dict[str, Any]] | None = None

    def _workers(self) -> int:
        """Fusion worker processes: the spec's on CPU; one (this process) on a GPU, so that the GPU holds one CUDA
        context, not one per worker, and the stacks run on it one after another."""
        if (self.device or default_device()) == "cpu" or self.spec.workers <= 1:
            return self.spec.workers
        log.info("accelerator %s: fusion stacks run in this process (workers: 1, not %d)", self.spec.accelerator,
                 self.spec.workers)
        return 1

    def run(self) -> Path:
        """Execute every run not yet in results.csv, then write the report; returns the report path."""
        with suite_lock(self.out, self.command or f"suite {self.spec.name}"), \
                progress.shown(self.spec.name, self.progress):
            return self._run()

    def _run(self) -> Path:
        from mcam.suites.report import write_report

        clock = StageClock()
        with clock("data"):
            manifest = ensure_data(self.spec.data, self.out, self.progress)
        self._check_resumable(manifest)  # before anything in `out` is written: a refused resume changes nothing
        write_atomic(self.out / "suite.yaml", yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        if self.command:
            write_atomic(self.out / "command.txt", self.command + "\n")
        write_atomic(self.out / "environment.txt", environment_text())
        reserved = self._reserved(manifest)
        folds = make_folds(self.spec.protocol, manifest.table, reserved, self.spec.val_fraction,
                           seed=self.spec.split_seed, args=self.spec.protocol_args, only=self.spec.folds)
        self._check_folds(manifest, folds)
        fold_dirs = {fold.name: tuple((variant.name, self._fold_dir(manifest, variant)) for variant in
                                      selection_folds(fold, manifest.table, self.spec.selection)) for fold in folds}
        cue_names = list(dict.fromkeys(self.spec.detectors))
        runs = expand_runs(self.spec, [f.name for f in folds], cue_names)
        done = self.results.done()
        todo = [r for r in runs if r.run_id not in done]
        progress.announce(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to go")
        with clock("data"):
            self._au_corpus  # rendered here on first use, so the detector stages time training alone
        if self._corpus_detectors and self.spec.source_region and todo:
            with clock(f"AU model (off the shelf, seed {self.spec.au_corpus['seed']}, shared by every detector seed)"):
                self._au_model(manifest)
        with JobRunner(self._workers(), len(todo), self.results, self.spec.name) as jobs:
            # Every detector seed's LAM detectors and cues first, then their fusions: pre-training and extraction
            # (`threads` threads) beside busy fusion workers ran 2.5 times slower (VGG pre-training 198 s instead
            # of 79 s on 2 cores), and they are the main job's longest chain.
            lam = {}
            for seed in self.spec.detector_seeds:
                if any(r.detector_seed == seed for r in todo):
                    with clock(f"LAM detectors and cues, detector seed {seed}"):
                        lam[seed] = self._lam(manifest, reserved, seed)
            for fold in folds:  # LAM first: its fusions train while GAM fine-tunes; one stack spans the detector seeds
                fold_runs = [r for r in todo if r.fold == fold.name and r.mode == "lam"]
                if fold_runs:
                    jobs.submit(self._jobs(manifest, fold, fold_dirs[fold.name], fold_runs,
                                           [(seed, *lam[seed]) for seed in lam]))
            for seed in self.spec.detector_seeds:
                for fold in folds:
                    fold_runs = [r for r in todo if r.detector_seed == seed and r.fold == fold.name and r.mode == "gam"]
                    if fold_runs:
                        with clock(f"GAM detectors and cues, fold {fold.name}, detector seed {seed} (beside fusions)"):
                            gam = self._gam(manifest, fold, lam[seed][0], seed)
                        jobs.submit(self._jobs(manifest, fold, fold_dirs[fold.name], fold_runs, [(seed, *gam)]))
            clock.start(f"fusion stacks after the last detectors ({self._workers()} worker(s))")
        clock.stop()
        with clock("report"):
            report = write_report(self.out)
        write_atomic(self.out / "timing.txt", clock.text())
        return report

    # --- checks -----------------------------------------------------------------
    def _signature(self, manifest: Manifest) -> dict[str, Any]:
        spec = self.spec.to_dict()
        configs = sorted({str(p) for m in [*self.spec.models, "single_cue"] for p in fusion_configs(self.spec, m)
                          if p.is_file()})
        return {"manifest": manifest.fingerprint(), **{k: v for k, v in spec.items() if k in RESULT_SETTINGS},
                "config_files": {Path(c).name if "model" not in c else f"model/{Path(c).name}":
                                 hashlib.sha256(Path(c).read_bytes()).hexdigest()[:16] for c in configs}}

    def _check_resumable(self, manifest: Manifest) -> None:
        """Refuse to add runs to results made with other settings, configs or data (rows would silently mix)."""
        signature = json.loads(json.dumps(self._signature(manifest), sort_keys=True, default=str))
        path = self.out / "signature.json"
        if self.results.path.exists() and path.exists():
            previous = json.loads(path.read_text())
            changed = sorted(k for k in {*previous, *signature} if previous.get(k) != signature.get(k))
            if changed:
                raise SuiteMismatchError(
                    f"{self.out} holds results made with other {', '.join(changed)}; resuming would mix them. "
                    f"Use another --out, or delete {self.results.path} to start over.")
        if not path.exists() or json.loads(path.read_text()) != signature:
            write_atomic(path, json.dumps(signature, indent=1, sort_keys=True))

    def _check_folds(self, manifest: Manifest, folds: list[Fold]) -> None:
        table = manifest.table
        for fold in folds:
            subjects = table.loc[fold.mask("test"), "subject"].nunique()
            if subjects < self.spec.min_test_subjects:
                raise SpecError(f"fold {fold.name!r} tests only {subjects} subjects (min_test_subjects: "
                                 f"{self.spec.min_test_subjects}); its accuracy would rest on too few people")

    # --- artifacts ------------------------------------------------------------------
    def _reserved(self, manifest: Manifest) -> set[str]:
        """Subjects that pre-train the LAM detectors (the source region's train/val subjects): never tested."""
        return set(self._source(manifest).table["subject"]) if self.spec.source_region else set()

    def _source(self, manifest: Manifest) -> Manifest:
        table = manifest.table
        if self.spec.source_region not in set(table["region"]):
            raise SpecError(f"source_region {self.spec.source_region!r} not in the data; regions: {manifest.regions}")
        split = table["split"] if "split" in table.columns else pd.Series("train", index=table.index)
        return manifest.subset((table["region"] == self.spec.source_region) & (split != "test"))

    def _lam(self, manifest: Manifest, reserved: set[str], seed: int) -> tuple[Path, dict[str, CueTable]]:
        """LAM detectors of one detector seed (pre-trained on the source region) and their cues over the manifest."""
        names = list(dict.fromkeys(self.spec.detectors))
        if self.spec.source_region is None:
            spec_path = asset_path("configs/detectors/default.yaml")
            spec_names = {n: c for n, c in yaml.safe_load(spec_path.read_text())["detectors"].items() if n in names}
            detectors = build_detectors({n: spec_names.get(n, {}) for n in names}, device=self.device)
            return spec_path, self._extract(manifest, detectors)
        spec_path = stored_detectors(self.store, self._source(manifest), names, self.spec.pretrain,
                                     base_spec=self._au_model(manifest), val_fraction=0.2, purpose="pretrain",
                                     **self._pretrain_settings(seed))
        return spec_path, self._extract(manifest, build_detectors(spec_path, device=self.device))

    def _pretrain_settings(self, seed: int) -> dict[str, Any]:
        return {"epochs": self.spec.pretrain_epochs, "seed": seed, "threads": self.spec.threads, "device": self.device}

    def _au_model(self, manifest: Manifest) -> dict[str, dict[str, Any]]:
        """The AU regressors pre-trained on the AU corpus (joined by the source region's AU-coded training faces):
        one off-the-shelf model per suite, trained with the corpus's own `seed` and shared by every detector seed
        (a store entry: also by every suite on the same store), as base spec entries whose SVM the detector seeds
        train. Empty without an AU corpus."""
        if not self._corpus_detectors:
            return {}
        if self._au_base is None:  # once per suite: its key hashes the whole corpus
            self._au_base = au_corpus_base(self.store, self._au_corpus, self._corpus_detectors,
                                           source=self._source(manifest), source_val_fraction=0.2,
                                           **self._pretrain_settings(self.spec.au_corpus["seed"]))
        return self._au_base

    @functools.cached_property
    def _corpus_detectors(self) -> list[str]:
        """The detectors that pre-train on the AU corpus: those among `pretrain` that learn from one."""
        if self.spec.au_corpus is None:
            return []
        return [n for n in dict.fromkeys(self.spec.pretrain) if detector_class(n).learns_from_aus]

    @functools.cached_property
    def _au_corpus(self) -> Manifest | None:
        """The AU corpus (rendered on first use), read once per suite; None when no detector learns from it."""
        if not self._corpus_detectors:
            return None
        return ensure_data(self.spec.au_corpus, self.out, self.progress, labelled=False)

    def _gam(self, manifest: Manifest, fold: Fold, lam_spec: Path, seed: int) -> tuple[Path, dict[str, CueTable]]:
        """GAM: the one adaptation path, on the fold's train rows only, then cues of the adapted detectors."""
        train = manifest.subset(pd.Series(fold.mask("train"), index=manifest.table.index))
        spec_path = adapt_detectors(self.store, lam_spec, train, self.spec.fine_tuned, epochs=self.spec.gam_epochs,
                                    seed=seed, threads=self.spec.threads, device=self.device)
        return spec_path, self._extract(manifest, build_detectors(spec_path, device=self.device))

    def _extract(self, manifest: Manifest, detectors: Mapping[str, Any]) -> dict[str, CueTable]:
        return extract_cues(manifest, detectors, self.cue_root, progress=self.progress, threads=self.spec.threads)

    def _fold_dir(self, manifest: Manifest, fold: Fold) -> Path:
        """The fold's rows with their train/val/test part as a manifest (a store entry keyed by its content)."""
        table = manifest.table.copy()
        table["split"] = fold.parts
        table = table[table["split"].notna()].reset_index(drop=True)
        text = table.to_csv(index=False)
        made_from = {"fold": fold.name, "table": hashlib.sha256(text.encode()).hexdigest()}
        return self.store.build("folds", made_from, lambda scratch: save_manifest(table, scratch / "manifest.csv"))

    def _jobs(self, manifest: Manifest, fold: Fold, fold_dirs: tuple[tuple[str, Path], ...], runs: list[RunSpec],
              cues: list[tuple[int, Path, Mapping[str, CueTable]]]) -> list[FusionJob]:
        """The stacks of `runs`: one per run id without fusion and detector seed, over the detector seeds' cues
        `cues` ((detector seed, detectors spec, cue tables) each)."""
        sources = {}
        for seed, detectors, tables in cues:
            files = self._cue_files(manifest, tables)
            sources[seed] = CueSource(seed, files, (
                ("detectors_key", _entry_id(detectors)),
                ("fold_key", ",".join(f"folds/{d.name}" for _, d in fold_dirs)),
                ("cue_keys", ",".join(f"cues/{Path(p).parent.name}/{Path(p).stem}" for _, p in files))))
        role = self._fold_role(manifest, fold)
        stacks: dict[str, list[RunSpec]] = {}
        for run in sorted(runs, key=lambda r: list(sources).index(r.detector_seed)):  # stable: seeds keep their order
            # the runs of a stack not in results.csv (its rows land together: a killed stack redoes all)
            stacks.setdefault(stack_key(run), []).append(run)
        return [FusionJob(tuple(members), role, fold_dirs,
                          tuple(sources[s] for s in dict.fromkeys(r.detector_seed for r in members)), self.out,
                          self.spec) for members in stacks.values()]

    def _cue_files(self, manifest: Manifest, tables: Mapping[str, CueTable]) -> tuple[tuple[str, str], ...]:
        """Where the cue store keeps each table (fusion runs read them from there)."""
        folder = CueStore(self.cue_root).folder(manifest)
        files = tuple((name, str(folder / f"{name}-{table.fingerprint}.npz")) for name, table in tables.items())
        for name, path in files:
            if not Path(path).is_file():
                raise FileNotFoundError(f"cue table of {name} expected at {path}")
        return files

    def _fold_role(self, manifest: Manifest, fold: Fold) -> str:
        """'source' when every test row is from the region the LAM detectors were trained on, else 'held_out'."""
        regions = set(manifest.table.loc[fold.mask("test"), "region"])
        return "source" if self.spec.source_region and regions == {self.spec.source_region} else "held_out"


def _entry_id(spec_path: Path) -> str:
    """'detectors/<key>' for a store entry's detectors.yaml, else the spec's file name."""
    folder = spec_path.parent
    return f"detectors/{folder.name}" if folder.parent.name == "detectors" and (folder / "entry.json").is_file() \
        else spec_path.name


def run_suite(spec: SuiteSpec, out: str | Path, progress: bool = True, command: str = "") -> Path:
    """Run a suite spec into `out`; returns the report path."""
    return SuiteRunner(spec, out, progress, command).run()
