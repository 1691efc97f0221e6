"""Fusion stage speed, side by side on the same rows: the per-run path (one FusionModule LightningCLI fit per seed,
as suites ran before stacks), the stacked path (one FusionEnsemble fit per model, every seed a member) and
scikit-learn's MLPClassifier(10, 10, 10), at 1 and 2 threads.

    python benchmarks/fusion_speed.py                      # synthetic cues shaped like the main job's
    python benchmarks/fusion_speed.py --cue-dir D --data M # cached cue tables (<cue>.npz) over manifest folder M
    python benchmarks/fusion_speed.py --run outputs/loro/runs/latin_wild/lam/attention/A/d0/seed0
                                                           # the cues and fold of a main-job run (its config.yaml)

Prints `fusion_stage_speedup: X` (per-run total / stacked total, 5 models x --seeds seeds) and
`per_model_vs_sklearn: Y` (sklearn seconds per model / stacked seconds per member), and writes the output to
benchmarks/results/fusion_speed-<device>.md.
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

MODELS = ("attention", "attention_paper", "concat", "static_weights", "late_average")
SHAPES = {"vgg": 2752, "au": 24, "micro": 3, "micro_plus": 4, "macro": 7}


def synthetic(folder: Path, n: int = 1500, seed: int = 0) -> dict[str, str]:
    """A manifest (train/val/test split column, 4 regions) and cue tables shaped like the main job's."""
    rng = np.random.default_rng(seed)
    label = rng.integers(len(CANONICAL), size=n)
    region = np.array(["western_posed", "east_asian", "suppressed_neg", "latin_wild"])[rng.integers(4, size=n)]
    subject = [f"{r}-s{rng.integers(40):02d}" for r in region]
    part = np.where(np.arange(n) < int(0.66 * n), "train", np.where(np.arange(n) < int(0.83 * n), "val", "test"))
    ids = np.array([f"s{i:05d}" for i in range(n)])
    save_manifest(pd.DataFrame({"sample_id": ids, "path": "x.png", "label": np.array(CANONICAL)[label],
                                "region": region, "dataset": "synthetic", "subject": subject, "split": part}),
                  folder / "manifest.csv")
    files = {}
    for name, dim in SHAPES.items():
        signal = {"vgg": 0.02, "au": 0.25, "macro": 0.8}.get(name, 0.5)  # sklearn ~0.7-0.8, not 1.0
        values = rng.normal(size=(n, dim)) + signal * (np.eye(7)[label] @ rng.normal(size=(7, dim)))
        if name in ("micro", "micro_plus", "macro"):  # probabilities, as the detectors give them
            values = np.exp(values) / np.exp(values).sum(1, keepdims=True)
        labels = [f"{name}.{c}" for c in CANONICAL] if name == "macro" else [f"{name}.{i:04d}" for i in range(dim)]
        valid = rng.random(n) > (0.2 if name in ("micro", "micro_plus") else 0.0)
        table = CueTable(name, f"synthetic-{name}", ids, labels, values.astype(np.float32), valid)
        files[name] = str(table.save(folder / "cues" / f"{name}.npz"))
    return files


def fit_args(model: str, data: Path, cue_files: dict[str, str], out: Path, threads: int,
             accelerator: str = "cpu") -> list[str]:
    """A suite run's LightningCLI arguments (benchmarks/loro.yaml: max_epochs 50, patience 10, batch 256)."""
    cue_args = "{" + ", ".join(f"{k}: {v}" for k, v in cue_files.items()) + "}"
    return ["fit", "--config", str(asset_path("configs/trainer/default.yaml")),
            "--config", str(asset_path(f"configs/model/{model}.yaml")),
            "--trainer.max_epochs", "50", "--early_stopping.patience", "10", "--data.batch_size", "256",
            "--data.data_dir", str(data), "--data.split", "manifest", "--data.cue_files", cue_args,
            "--threads", str(threads), "--trainer.accelerator", accelerator, "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "50", "--model.image_every_n_epochs", "0",
            "--model.details_every_n_epochs", "10", "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.logger.init_args.name", "", "--trainer.logger.init_args.version", ""]


def test_accuracy(folder: Path) -> float:
    frame = pd.read_csv(folder / "predictions.csv")
    return float((frame["label"] == frame["pred"]).mean())


def per_run(models, seeds, data, files, scratch, threads) -> tuple[float, float]:
    from mcam.fusion.cli import run_lightning_cli

    started, accs = time.perf_counter(), []
    for model in models:
        for seed in seeds:
            out = scratch / f"per_run-{threads}" / model / f"seed{seed}"
            # the per-run trainer has no per-cue early stopping (cue dropout it ignores): otherwise the same fit
            run_lightning_cli([*fit_args(model, data, files, out, threads), "--seed_everything", str(seed),
                               "--data.seed", str(seed), "--model.cue_patience", "null"], per_run=True)
            accs.append(test_accuracy(out))
    return time.perf_counter() - started, float(np.mean(accs))


def stacked(models, seeds, data, files, scratch, threads, accelerator="cpu") -> tuple[float, float]:
    from mcam.fusion.cli import run_lightning_cli

    started, accs = time.perf_counter(), []
    for model in models:
        out = scratch / f"stacked-{threads}" / model
        run_lightning_cli([*fit_args(model, data, files, out, threads, accelerator), "--model.seeds", str(list(seeds))])
        accs += [test_accuracy(out / f"seed{s}") for s in seeds]
    return time.perf_counter() - started, float(np.mean(accs))


def sklearn_mlp(seeds, data, files, threads) -> tuple[float, float]:
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from mcam.fusion.data import CueDataModule

    module = CueDataModule(data_dir=str(data), split="manifest", cue_files=files)
    (xt, _, yt, *_), (xs, _, ys, *_) = module.part_tensors("train"), module.part_tensors("test")
    started, accs = time.perf_counter(), []
    with threadpool_limits(threads):
        for seed in seeds:
            clf = MLPClassifier(hidden_layer_sizes=(10, 10, 10), random_state=seed).fit(xt.numpy(), yt.numpy())
            accs.append(float((clf.predict(xs.numpy()) == ys.numpy()).mean()))
    return time.perf_counter() - started, float(np.mean(accs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="fusion seeds per model")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cue-dir", help="cached cue tables <cue>.npz (default: synthetic ones)")
    parser.add_argument("--data", help="manifest folder of --cue-dir (with a train/val/test `split` column)")
    parser.add_argument("--run", help="a suite run folder: its config.yaml's cue files and fold (data.cue_files, "
                        "data.data_dir, paths relative to where the suite ran)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fusion_speed-cpu.md"))
    args = parser.parse_args()
    from mcam.quiet import quiet_lightning

    quiet_lightning()
    seeds, models = list(range(args.seeds)), args.models.split(",")
    lines = [f"# fusion_speed: {len(models)} models x {len(seeds)} seeds, torch {torch.__version__}", ""]

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="fusion-speed-") as tmp:
        scratch = Path(tmp)
        if args.run:
            config = yaml.safe_load((Path(args.run) / "config.yaml").read_text())["data"]
            data, files = Path(config["data_dir"]), dict(config["cue_files"])
        elif args.cue_dir:
            data, files = Path(args.data), {p.stem: str(p) for p in sorted(Path(args.cue_dir).glob("*.npz"))}
        else:
            data, files = scratch / "data", synthetic(scratch / "data")
        rows = load_manifest(data).table["split"].value_counts().to_dict()
        say(f"rows: {rows}; cues: {', '.join(f'{k} ({CueTable.load(v).dim})' for k, v in files.items())}")
        say("")
        say("| threads | path | seconds | seconds per model | test acc |")
        say("|---|---|---|---|---|")
        ratios = {}
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            n = len(models) * len(seeds)
            # model by model, each model's per-run fits right before its stack: a shared machine's speed drifts by
            # 20% over minutes, and a drift between two long blocks would move the ratio by as much
            timed = [(per_run([model], seeds, data, files, scratch, threads),
                      stacked([model], seeds, data, files, scratch, threads)) for model in models]
            (old, old_acc), (new, new_acc) = ((sum(secs for secs, _ in path), float(np.mean([acc for _, acc in path])))
                                              for path in zip(*timed))
            sk, sk_acc = sklearn_mlp(seeds, data, files, threads)
            for name, secs, acc, count in (("per-run FusionModule fits", old, old_acc, n),
                                           ("stacked FusionEnsemble", new, new_acc, n),
                                           ("sklearn MLPClassifier(10,10,10)", sk, sk_acc, len(seeds))):
                say(f"| {threads} | {name} | {secs:.1f} | {secs / count:.3f} | {acc:.3f} |")
            ratios[threads] = (old / new, (sk / len(seeds)) / (new / n), new_acc - sk_acc)
        say("")
        for threads, (speedup, vs_sklearn, acc_gap) in ratios.items():
            say(f"threads {threads}: fusion_stage_speedup {speedup:.2f}, per_model_vs_sklearn {vs_sklearn:.2f}, "
                f"stacked - sklearn test acc {acc_gap:+.3f}")
        speedup, vs_sklearn, _ = ratios[min(ratios)]
        say(f"fusion_stage_speedup: {speedup:.2f}")
        say(f"per_model_vs_sklearn: {vs_sklearn:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
