"""The suite driver: resumable and worker-count independent, locked output folders, no orphaned workers,
refused resumes that change nothing, and suite runs that `mcam fit --config` reproduces."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mcam.cli.main import main
from mcam.cues.table import CueTable
from mcam.fusion.predictions import Predictions
from mcam.labels import CANONICAL
from mcam.manifest import Manifest, validate
from mcam.suites import runner as runner_module
from mcam.suites.spec import SuiteSpec, expand_runs


def _toy_manifest(n_subjects: int = 4) -> pd.DataFrame:
    rows = [{"sample_id": f"{region}-{s}-{emotion}", "path": "x.png", "label": emotion, "region": region,
             "dataset": "toy", "subject": f"{region}-s{s}", "group": "g1" if s % 2 else "g2"}
            for region in ("r1", "r2", "r3") for s in range(n_subjects) for emotion in CANONICAL]
    return validate(pd.DataFrame(rows))


def _toy_tables(table: pd.DataFrame, folder: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    codes = table["label"].map({c: k for k, c in enumerate(CANONICAL)}).to_numpy()
    files = {}
    for name, dim in (("au", 6), ("macro", 7)):
        values = rng.normal(0, 1, (len(table), dim)).astype(np.float32)
        values[np.arange(len(table)), codes % dim] += 2.0
        labels = [f"{name}.{c}" for c in CANONICAL][:dim] if name == "macro" else [f"au.f{i}" for i in range(dim)]
        files[name] = CueTable(name, f"fp{seed}", table["sample_id"].to_numpy(), labels, values,
                               np.ones(len(table), bool)).save(folder / f"{name}{seed or ''}.npz")
    return files


def _patch(monkeypatch: pytest.MonkeyPatch, table: pd.DataFrame, cues: Path, fail_at: int | None = None) -> None:
    """Real fusion runs (LightningCLI) on toy cues: data, detectors and extraction stubbed."""
    monkeypatch.chdir(cues)  # the spec's default store (outputs/store) lands in the test's folder
    files = _toy_tables(table, cues)
    tables = {name: CueTable.load(path) for name, path in files.items()}
    monkeypatch.setattr(runner_module, "ensure_data", lambda data, out, progress: Manifest(table, Path(".")))
    monkeypatch.setattr(runner_module.SuiteRunner, "_lam", lambda self, m, reserved, seed: (Path("spec.yaml"), tables))
    monkeypatch.setattr(runner_module.SuiteRunner, "_cue_files",
                        lambda self, m, t: tuple((n, str(files[n])) for n in t))
    if fail_at is None:  # worker processes import the real execute_job: nothing to patch
        return
    original = runner_module.execute_job
    calls = {"n": 0}

    def execute(job):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("killed midway")
        return original(job)

    monkeypatch.setattr(runner_module, "execute_job", execute)


def _spec(**changes: object) -> SuiteSpec:
    base = dict(name="toy", source_region=None, modes=["lam"], models=["attention", "concat"], single_cue_models=[],
                detectors=["au", "macro"], pretrain=[], detector_seeds=[0], seeds=[0, 1], max_epochs=3, patience=2,
                batch_size=32, folds=["r1", "r2"], workers=1, min_test_subjects=1)
    return SuiteSpec(**{**base, **changes})


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != runner_module.LOCK}


def _comparable(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    return frame.drop(columns=list(runner_module.TIME_COLUMNS)).reset_index(drop=True)


def test_killed_suite_resumes_to_the_same_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _toy_manifest()
    _patch(monkeypatch, table, tmp_path)
    spec = _spec(workers=2)
    expected = len(expand_runs(spec, ["r1", "r2"], ["au", "macro"]))
    runner_module.run_suite(spec, tmp_path / "whole", progress=False)
    whole = _comparable(tmp_path / "whole" / "results.csv")
    assert len(whole) == expected and list(whole["run_id"]) == sorted(whole["run_id"])

    one_worker = _spec(workers=1)  # the kill is simulated in-process; also checks 2 workers == 1 worker
    _patch(monkeypatch, table, tmp_path, fail_at=4)  # the 4th stack
    with pytest.raises(KeyboardInterrupt):
        runner_module.run_suite(one_worker, tmp_path / "resumed", progress=False)
    assert len(pd.read_csv(tmp_path / "resumed" / "results.csv")) == 6  # 3 stacks of 2 seeds
    _patch(monkeypatch, table, tmp_path)
    runner_module.run_suite(one_worker, tmp_path / "resumed", progress=False)
    pd.testing.assert_frame_equal(whole, _comparable(tmp_path / "resumed" / "results.csv"))
    for run_dir in pd.read_csv(tmp_path / "whole" / "results.csv")["run_dir"]:
        assert (tmp_path / "whole" / run_dir / "predictions.csv").read_bytes() == \
            (tmp_path / "resumed" / run_dir / "predictions.csv").read_bytes()
    assert (tmp_path / "whole" / "report.md").read_text() == (tmp_path / "resumed" / "report.md").read_text()

    before = _snapshot(tmp_path / "resumed")
    with pytest.raises(runner_module.SuiteMismatchError, match="max_epochs"):
        runner_module.run_suite(_spec(max_epochs=4), tmp_path / "resumed", progress=False)
    assert _snapshot(tmp_path / "resumed") == before  # a refused resume changes nothing on disk
    runner_module.run_suite(_spec(seeds=[0, 1, 2]), tmp_path / "resumed", progress=False)  # growing is a resume
    assert len(pd.read_csv(tmp_path / "resumed" / "results.csv")) == expected * 3 // 2


def test_one_stack_spans_the_detector_seeds_with_each_run_as_its_own(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """LAM runs of every detector seed train as one stack per (fold, model, cue set), each member on its own detector
    seed's cues: the same results as stacks of one detector seed each (a suite grown seed by seed)."""
    table = _toy_manifest()
    _patch(monkeypatch, table, tmp_path)
    files = {seed: _toy_tables(table, tmp_path, seed) for seed in (0, 1)}
    tables = {seed: {n: CueTable.load(p) for n, p in f.items()} for seed, f in files.items()}
    by_fingerprint = {t.fingerprint: files[seed] for seed, own in tables.items() for t in own.values()}
    monkeypatch.setattr(runner_module.SuiteRunner, "_lam", lambda self, m, reserved, seed: (Path("spec.yaml"),
                                                                                          tables[seed]))
    monkeypatch.setattr(runner_module.SuiteRunner, "_cue_files",
                        lambda self, m, t: tuple((n, str(by_fingerprint[x.fingerprint][n])) for n, x in t.items()))
    runner_module.run_suite(_spec(detector_seeds=[0, 1]), tmp_path / "spanned", progress=False)
    runner_module.run_suite(_spec(detector_seeds=[0]), tmp_path / "apart", progress=False)
    runner_module.run_suite(_spec(detector_seeds=[0, 1]), tmp_path / "apart", progress=False)
    spanned, apart = (_comparable(tmp_path / f / "results.csv").sort_values("run_id").reset_index(drop=True)
                      for f in ("spanned", "apart"))
    pd.testing.assert_frame_equal(spanned, apart)
    assert set(spanned["detector_seed"]) == {0, 1}
    assert (spanned.groupby("detector_seed")["cue_keys"].nunique() == 1).all() and spanned["cue_keys"].nunique() == 2
    stacks = {yaml.safe_load((tmp_path / "spanned" / d / "run.yaml").read_text())["stack"] for d in spanned["run_dir"]}
    assert stacks == {f"stacks/{fold}/lam/{model}/A/d0-1" for fold in ("r1", "r2") for model in ("attention", "concat")}
    for run_dir in spanned["run_dir"]:
        assert (tmp_path / "spanned" / run_dir / "predictions.csv").read_bytes() == \
            (tmp_path / "apart" / run_dir / "predictions.csv").read_bytes()
        config = yaml.safe_load((tmp_path / "spanned" / run_dir / "config.yaml").read_text())
        seed = int(run_dir.split("/d")[1].split("/")[0])
        assert config["data"]["cue_files"] == {n: str(p) for n, p in files[seed].items()}


def test_second_process_on_the_same_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with runner_module.suite_lock(out, "mcam bench loro (the first)"):
        with pytest.raises(runner_module.SuiteLockedError, match="the first"):
            runner_module.run_suite(_spec(), out, progress=False)
        done = subprocess.run([sys.executable, "-m", "mcam.cli.main", "bench", "loro", "--profile", "smoke",
                               "--out", str(out), "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "in use by pid" in done.stderr and "the first" in done.stderr
    assert not (out / "results.csv").exists() and not (out / "suite.yaml").exists()


def test_killing_the_suite_process_ends_its_workers(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        from mcam.suites.runner import _watch_parent
        pool = ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=_watch_parent,
                                   initargs=(os.getpid(),))
        futures = [pool.submit(time.sleep, 120) for _ in range(2)]
        time.sleep(3)
        print(" ".join(str(p) for p in pool._processes), flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    # A worker ends itself within 0.5 s of noticing; one still importing its modules (seconds, much longer on a
    # loaded machine) notices only once its initializer runs.
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")  # a zombie has ended


def test_fit_config_of_a_suite_run_reproduces_its_predictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _toy_manifest()
    _patch(monkeypatch, table, tmp_path)
    out = tmp_path / "suite"
    runner_module.run_suite(_spec(seeds=[0], models=["attention"], folds=["r1"]), out, progress=False)
    run_dir = out / pd.read_csv(out / "results.csv")["run_dir"].iloc[0]
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.yaml").exists()
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(run_dir / "config.yaml"),
                 "--trainer.logger.init_args.save_dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "predictions.csv").read_bytes() == (run_dir / "predictions.csv").read_bytes()


def _garble_region(files: dict[str, Path], table: pd.DataFrame, region: str) -> None:
    """Replace one region's cue values by large noise (the test region: nothing trained or selected may change)."""
    rows = table["region"].to_numpy() == region
    rng = np.random.default_rng(1)
    for path in files.values():
        cue = CueTable.load(path)
        index = pd.Index(cue.sample_ids)
        values = cue.values.copy()
        values[index.get_indexer(table.loc[rows, "sample_id"])] = rng.normal(0, 100, (rows.sum(), cue.dim))
        CueTable(cue.detector, cue.fingerprint, cue.sample_ids, cue.labels, values.astype(np.float32),
                 cue.valid).save(path)


@pytest.mark.parametrize("selection", ["in_domain", "leave_one_source_region_out"])
def test_the_test_region_is_never_read_during_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         selection: str) -> None:
    """Early stopping (and what selection reads: validation scores, best epochs, the kept weights) is the same
    whatever the test region's cues hold; only the test predictions change."""
    import torch

    table = _toy_manifest()
    spec = _spec(selection=selection, folds=["r1"], models=["attention"], seeds=[0, 1], max_epochs=4)
    outs = {}
    for name in ("clean", "garbled"):
        folder = tmp_path / name
        folder.mkdir()
        _patch(monkeypatch, table, folder)
        if name == "garbled":
            _garble_region({n: folder / f"{n}.npz" for n in ("au", "macro")}, table, "r1")
        runner_module.run_suite(spec, folder / "out", progress=False)
        outs[name] = folder / "out"
    results = {name: pd.read_csv(out / "results.csv") for name, out in outs.items()}
    selected = ["val_loss", "val_acc", "best_epoch", "epochs"]
    pd.testing.assert_frame_equal(results["clean"][selected], results["garbled"][selected])
    assert not results["clean"]["accuracy"].equals(results["garbled"]["accuracy"]) or not all(
        (outs["clean"] / d / "predictions.csv").read_bytes() == (outs["garbled"] / d / "predictions.csv").read_bytes()
        for d in results["clean"]["run_dir"])
    checkpoints = sorted(p.relative_to(outs["clean"]) for p in outs["clean"].rglob("best.ckpt"))
    assert len(checkpoints) == (2 if selection == "in_domain" else 4)  # one per seed (x held-out training region)
    for path in checkpoints:
        clean, garbled = (torch.load(outs[n] / path, weights_only=True)["state_dict"] for n in ("clean", "garbled"))
        assert all(torch.equal(clean[k], garbled[k]) for k in clean)
    if selection == "leave_one_source_region_out":  # each training region held out in turn; the run averages them
        run = outs["clean"] / results["clean"]["run_dir"].iloc[0]
        variants = [Predictions.read_csv(run / f"val-{r}" / "predictions.csv") for r in ("r2", "r3")]
        combined = Predictions.read_csv(run / "predictions.csv")
        np.testing.assert_allclose(combined.probabilities.to_numpy(),
                                   (variants[0].probabilities.to_numpy() + variants[1].probabilities.to_numpy()) / 2,
                                   atol=1e-6)
        for region, variant in zip(("r2", "r3"), variants):
            fold = pd.read_csv(Path(yaml.safe_load((run / f"val-{region}" / "config.yaml").read_text())["data"]
                                    ["data_dir"]) / "manifest.csv")
            assert set(fold.loc[fold["split"] == "val", "region"]) == {region}
            assert set(fold.loc[fold["split"] == "test", "region"]) == {"r1"}
            assert "r1" not in set(fold.loc[fold["split"] == "train", "region"])
        assert "leave_one_source_region_out" in (outs["clean"] / "report.md").read_text()
