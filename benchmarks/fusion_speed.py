"""Fusion stage speed, side by side on the same rows: the per-run path (one FusionModule LightningCLI fit per run,
as suites ran before stacks), the stacked path (one FusionEnsemble fit per model, as the main job trains them: every
fusion seed of every detector replicate a member) and scikit-learn's MLPClassifier(10, 10, 10), at 1 and 2 threads.

One fold of the main job's fusion stage: its models (the five fusions and a single-cue model per cue,
`single_cue:<cue>`), 3 detector replicates (the cues of detector seeds 0, 1, 2) x 10 fusion seeds each.

    python benchmarks/fusion_speed.py                      # synthetic cues shaped like the main job's
    python benchmarks/fusion_speed.py --run outputs/loro/runs/latin_wild/lam/attention/A/d{0,1,2}/seed0
                                                           # the cues and fold of main-job runs (their config.yaml),
                                                           # one run folder per detector replicate

Prints `fusion_stage_speedup: X` (per-run total / stacked total over every model, replicate and seed),
`per_model_vs_sklearn: Y` (seconds per sklearn fit / seconds per member of MCAM's `attention` stack, both reading
every cue of every replicate: sklearn fits each replicate x seed as the stack's members are) and
`per_model_test_acc_vs_sklearn: Z` (their mean test accuracies' difference), all at 1 thread; every model's ratio
and accuracy difference are in the table. Writes the output to benchmarks/results/fusion_speed-<device>.md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from mcam.assets import asset_path
from mcam.cues.table import CueTable
from mcam.labels import CANONICAL
from mcam.manifest import load_manifest, save_manifest
from mcam.suites.runner import cpu_model

FUSIONS = ("attention", "attention_paper", "concat", "static_weights", "late_average")
# the model per_model_vs_sklearn is about: MCAM's fusion (the default; of the five fusions the slowest per member)
HEADLINE = "attention"
SHAPES = {"vgg": 2752, "au": 24, "micro": 3, "micro_plus": 4, "macro": 7}


def synthetic(folder: Path, replicates: int, n: int = 1500) -> list[dict[str, str]]:
    """A manifest (train/val/test split column, 4 regions) and cue tables shaped like the main job's, per replicate
    (other values over the same rows, as other detector seeds give)."""
    rng = np.random.default_rng(0)
    label = rng.integers(len(CANONICAL), size=n)
    region = np.array(["western_posed", "east_asian", "suppressed_neg", "latin_wild"])[rng.integers(4, size=n)]
    subject = [f"{r}-s{rng.integers(40):02d}" for r in region]
    part = np.where(np.arange(n) < int(0.66 * n), "train", np.where(np.arange(n) < int(0.83 * n), "val", "test"))
    ids = np.array([f"s{i:05d}" for i in range(n)])
    save_manifest(pd.DataFrame({"sample_id": ids, "path": "x.png", "label": np.array(CANONICAL)[label],
                                "region": region, "dataset": "synthetic", "subject": subject, "split": part}),
                  folder / "manifest.csv")
    return [_synthetic_cues(folder / f"cues{r}", ids, label, np.random.default_rng(1 + r)) for r in range(replicates)]


def _synthetic_cues(folder: Path, ids: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> dict[str, str]:
    n, files = len(ids), {}
    for name, dim in SHAPES.items():
        signal = {"vgg": 0.02, "au": 0.25, "macro": 0.8}.get(name, 0.5)  # sklearn ~0.7-0.8, not 1.0
        values = rng.normal(size=(n, dim)) + signal * (np.eye(7)[label] @ rng.normal(size=(7, dim)))
        if name in ("micro", "micro_plus", "macro"):  # probabilities, as the detectors give them
            values = np.exp(values) / np.exp(values).sum(1, keepdims=True)
        labels = [f"{name}.{c}" for c in CANONICAL] if name == "macro" else [f"{name}.{i:04d}" for i in range(dim)]
        valid = rng.random(n) > (0.2 if name in ("micro", "micro_plus") else 0.0)
        table = CueTable(name, f"synthetic-{name}", ids, labels, values.astype(np.float32), valid)
        files[name] = str(table.save(folder / f"{name}.npz"))
    return files


def _mapping(files: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}"


def fit_args(model: str, data: Path, cue_files: dict[str, str], out: Path, threads: int,
             accelerator: str = "cpu") -> list[str]:
    """A suite run's LightningCLI arguments (benchmarks/loro.yaml: max_epochs 50, patience 10, batch 256); model
    'single_cue:<cue>' is the single-cue model of that cue, reading that cue alone (as suites run it)."""
    name, _, cue = model.partition(":")
    single = ["--model.network.init_args.cue", cue, "--data.cues", cue] if cue else []
    return ["fit", "--config", str(asset_path("configs/trainer/default.yaml")),
            "--config", str(asset_path(f"configs/model/{name}.yaml")),
            "--trainer.max_epochs", "50", "--early_stopping.patience", "10", "--data.batch_size", "256",
            "--data.data_dir", str(data), "--data.split", "manifest", "--data.cue_files", _mapping(cue_files),
            "--threads", str(threads), "--trainer.accelerator", accelerator, "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "50", "--model.image_every_n_epochs", "0",
            "--model.details_every_n_epochs", "10", "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.logger.init_args.name", "", "--trainer.logger.init_args.version", "", *single]


def test_accuracy(folder: Path) -> float:
    frame = pd.read_csv(folder / "predictions.csv")
    return float((frame["label"] == frame["pred"]).mean())


def per_run(model, seeds, data, replicates, scratch, threads, accelerator="cpu") -> tuple[float, float]:
    """Every run of `model` alone: replicate by replicate, seed by seed."""
    from mcam.fusion.cli import run_lightning_cli

    started, accs = time.perf_counter(), []
    for r, files in enumerate(replicates):
        for seed in seeds:
            out = scratch / f"per_run-{threads}" / model / f"r{r}-seed{seed}"
            # the per-run trainer has no per-cue early stopping (cue dropout it ignores): otherwise the same fit
            no_cue_stop = ["--model.cue_patience", "null"] if model == "attention" else []
            run_lightning_cli([*fit_args(model, data, files, out, threads, accelerator), "--seed_everything", str(seed),
                               "--data.seed", str(seed), *no_cue_stop], per_run=True)
            accs.append(test_accuracy(out))
    return time.perf_counter() - started, float(np.mean(accs))


def stacked(model, seeds, data, replicates, scratch, threads, accelerator="cpu") -> tuple[float, float]:
    """Every run of `model` as one stack (the main job's: its members span the seeds and the replicates)."""
    from mcam.fusion.cli import run_lightning_cli

    out = scratch / f"stacked-{threads}" / model
    members = [(r, s) for r in range(len(replicates)) for s in seeds]
    spanned = ["--data.cue_replicates", "[" + ", ".join(_mapping(f) for f in replicates) + "]",
               "--model.replicates", str([r for r, _ in members])] if len(replicates) > 1 else []
    started = time.perf_counter()
    run_lightning_cli([*fit_args(model, data, replicates[0], out, threads, accelerator),
                       "--model.seeds", str([s for _, s in members]), *spanned])
    seconds = time.perf_counter() - started
    names = [f"r{r}-seed{s}" if len(replicates) > 1 else f"seed{s}" for r, s in members]
    folders = [out / name for name in names] if len(members) > 1 else [out]  # a stack of one is its own run folder
    return seconds, float(np.mean([test_accuracy(folder) for folder in folders]))


def sklearn_mlp(seeds, data, replicates, threads) -> tuple[float, float]:
    """MLPClassifier(10, 10, 10) on every replicate's cues (all of them concatenated, as the fusions read them), one
    fit per replicate and seed: the same runs as a model's stack."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from mcam.fusion.data import CueDataModule

    started, accs = time.perf_counter(), []
    for files in replicates:
        module = CueDataModule(data_dir=str(data), split="manifest", cue_files=files)
        (xt, _, yt, *_), (xs, _, ys, *_) = module.part_tensors("train"), module.part_tensors("test")
        with threadpool_limits(threads):
            for seed in seeds:
                clf = MLPClassifier(hidden_layer_sizes=(10, 10, 10), random_state=seed).fit(xt.numpy(), yt.numpy())
                accs.append(float((clf.predict(xs.numpy()) == ys.numpy()).mean()))
    return time.perf_counter() - started, float(np.mean(accs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="fusion seeds per model and replicate")
    parser.add_argument("--replicates", type=int, default=3, help="detector replicates of synthetic cues")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", help="comma-separated (default: the five fusions and single_cue:<cue> per cue)")
    parser.add_argument("--run", nargs="+", help="suite run folders of one fold, one per detector replicate: their "
                        "config.yaml's cue files and fold (data.cue_files, data.data_dir, paths relative to where "
                        "the suite ran)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"),
                        help="where the fusion runs train (Lightning's accelerator; sklearn stays on the CPU)")
    parser.add_argument("--out", default=None, help="default benchmarks/results/fusion_speed-<accelerator>.md")
    args = parser.parse_args()
    args.out = args.out or str(Path(__file__).parent / "results" / f"fusion_speed-{args.accelerator}.md")
    from mcam.quiet import quiet_lightning

    quiet_lightning()
    seeds = list(range(args.seeds))
    lines = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="fusion-speed-") as tmp:
        scratch = Path(tmp)
        if args.run:
            configs = [yaml.safe_load((Path(run) / "config.yaml").read_text())["data"] for run in args.run]
            if len({c["data_dir"] for c in configs}) != 1:
                parser.error("--run: the run folders are of different folds (data.data_dir)")
            data, replicates = Path(configs[0]["data_dir"]), [dict(c["cue_files"]) for c in configs]
        else:
            data, replicates = scratch / "data", synthetic(scratch / "data", args.replicates)
        models = args.models.split(",") if args.models else [*FUSIONS, *(f"single_cue:{c}" for c in replicates[0])]
        fusions = [m for m in models if m in FUSIONS]
        n = len(replicates) * len(seeds)  # runs per model
        say(f"# fusion_speed: {len(models)} models x {len(replicates)} replicates x {len(seeds)} seeds on "
            f"{args.accelerator}, torch {torch.__version__}, {cpu_model()} ({torch.backends.cpu.get_cpu_capability()} kernels)")
        say("")
        rows = load_manifest(data).table["split"].value_counts().to_dict()
        say(f"rows: {rows}; cues: {', '.join(f'{k} ({CueTable.load(v).dim})' for k, v in replicates[0].items())}")
        say("")
        ratios = {}
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            # sklearn before and after the models (the same fits twice; their mean is its time), and each model's
            # per-run fits right before its stack: a shared machine's speed drifts by 20% over minutes, and a drift
            # between two long blocks would move a ratio by as much
            sk_first, sk_acc = sklearn_mlp(seeds, data, replicates, threads)
            timed = {}
            for model in models:
                timed[model] = (per_run(model, seeds, data, replicates, scratch, threads, args.accelerator),
                                stacked(model, seeds, data, replicates, scratch, threads, args.accelerator))
            sk_last, _ = sklearn_mlp(seeds, data, replicates, threads)
            sk_fit = (sk_first + sk_last) / 2 / n
            say(f"## {threads} thread(s)")
            say("")
            say("| model | per-run s | stacked s | speedup | stacked s per member | sklearn s per fit / stacked s per "
                "member | per-run test acc | stacked test acc | stacked - sklearn test acc |")
            say("|---|---|---|---|---|---|---|---|---|")
            for model, ((old, old_acc), (new, new_acc)) in timed.items():
                say(f"| {model} | {old:.1f} | {new:.1f} | {old / new:.2f} | {new / n:.3f} | {sk_fit / (new / n):.2f} | "
                    f"{old_acc:.3f} | {new_acc:.3f} | {new_acc - sk_acc:+.3f} |")
            old, new = (sum(timed[m][path][0] for m in models) for path in (0, 1))
            fusion_new = sum(timed[m][1][0] for m in fusions)
            fusion_old = sum(timed[m][0][0] for m in fusions)
            fusions_acc = float(np.mean([timed[m][1][1] for m in fusions]))
            say("")
            say("| per-run total s | stacked total s | per-run, five fusions | stacked, five fusions | "
                "sklearn MLPClassifier(10,10,10) s, before / after the models (test acc) |")
            say("|---|---|---|---|---|")
            say(f"| {old:.1f} | {new:.1f} | {fusion_old:.1f} | {fusion_new:.1f} | "
                f"{sk_first:.1f} / {sk_last:.1f} ({n} fits, {sk_fit:.2f} s per fit, {sk_acc:.3f}) |")
            say("")
            own = timed.get(HEADLINE)
            headline = own and (sk_fit / (own[1][0] / n), own[1][1] - sk_acc)  # (ratio, accuracy difference)
            ratios[threads] = (old / new, headline)
            say(f"threads {threads}: fusion_stage_speedup {old / new:.2f} (the five fusions alone "
                f"{fusion_old / fusion_new:.2f}); vs sklearn per model: the five fusions "
                f"{sk_fit / (fusion_new / (len(fusions) * n)):.2f}x at {fusions_acc - sk_acc:+.3f} test acc"
                + (f", {HEADLINE} {headline[0]:.2f}x at {headline[1]:+.3f}" if headline else ""))
            say("")
            write(args.out, lines)  # each block as it ends: a long run cut short keeps what it measured
        speedup, own = ratios[min(ratios)]
        say(f"fusion_stage_speedup: {speedup:.2f}")
        if own:
            say(f"per_model_vs_sklearn: {own[0]:.2f}")
            say(f"per_model_test_acc_vs_sklearn: {own[1]:+.3f}")
    write(args.out, lines)


def write(out: str, lines: list[str]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
