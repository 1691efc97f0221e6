"""Cross-region AU regression: train the `au` detector on one region's subjects, score every region.

Splits each region's subjects 80/20 (subject-disjoint, seeded); trains the AU CNN + SVM on the
source region's 80 %, then reports per-AU mean absolute error against the synthetic ground truth
and the SVM's emotion accuracy on the held-out 20 % of subjects of EVERY region. A baseline row
gives the MAE of always predicting the source training mean (what "learned nothing" scores).

    python benchmarks/au_regressor_mae.py --data /tmp/synth            # reuses DIR/manifest.csv
    python benchmarks/au_regressor_mae.py --data /tmp/synth --config configs/synth/tiny.yaml
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mcam.cues.extract import training_set
from mcam.detector import InputKind
from mcam.manifest import MANIFEST_FILE, load_manifest
from mcam.splits import subject_parts
from mcam_detectors.au_regressor import AU_NAMES, AURegressor, au_targets

ROOT = Path(__file__).resolve().parents[1]


def subject_split(table: pd.DataFrame, held_out: float, seed: int) -> pd.Series:
    """True for rows whose subject is held out (a seeded `held_out` fraction of each region's subjects)."""
    return pd.Series(subject_parts(table, test_fraction=held_out, seed=seed) == "test", index=table.index)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic data folder (generated if absent)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/synth/default.yaml")
    parser.add_argument("--source", default="western_posed")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the MAE table (CSV) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if not (args.data / MANIFEST_FILE).exists():
        from mcam.synth.generate import generate
        generate(args.data, args.config, args.seed)
    manifest = load_manifest(args.data / MANIFEST_FILE)
    missing = [au for au in AU_NAMES if au not in manifest.table.columns]
    if missing:
        raise SystemExit(f"{args.data / MANIFEST_FILE}: no ground-truth AU columns {missing}")
    held_out = subject_split(manifest.table, 0.2, args.seed)
    source = manifest.table["region"] == args.source
    train = training_set(manifest.subset(source & ~held_out), InputKind.IMAGE)
    test = manifest.subset(held_out)

    detector = AURegressor(weights=None, image_size=args.image_size)
    start = time.time()
    metrics = detector.fit(train, epochs=args.epochs, seed=args.seed)
    fit_s = time.time() - start
    print(f"trained on {len(train.faces)} faces of {args.source} "
          f"({len(set(train.subjects))} subjects) in {fit_s:.1f} s: "
          f"train AU MAE {metrics['train_au_mae']:.3f}, train acc {metrics['train_acc']:.3f}")

    baseline_mean = au_targets(train).mean(axis=0)
    mae, accuracy, baseline, counts = {}, {}, {}, {}
    for region in manifest.regions:
        part = test.subset(test.table["region"] == region)
        data = training_set(part, InputKind.IMAGE)
        predicted = detector.predict_aus(data.faces)
        truth = au_targets(data)
        mae[region] = np.abs(predicted - truth).mean(axis=0)
        baseline[region] = float(np.abs(baseline_mean - truth).mean())
        accuracy[region] = detector.svm.score(predicted, data.labels)
        counts[region] = len(data.faces)

    table = pd.DataFrame(mae, index=[f"{au}_r" for au in AU_NAMES])
    table.loc["mean"] = table.mean(axis=0)
    table.loc["baseline (train mean)"] = pd.Series(baseline)
    table.loc["SVM emotion accuracy"] = pd.Series(accuracy)
    table.loc["held-out faces"] = pd.Series(counts)
    print(f"\nPer-AU MAE on held-out subjects (source: {args.source}, {len(manifest)} faces in "
          f"{args.data}, seed {args.seed}, image_size {args.image_size}, {args.epochs} epochs)\n")
    print(table.to_markdown(floatfmt=".3f") if _has_tabulate() else table.round(3).to_string())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out)
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
