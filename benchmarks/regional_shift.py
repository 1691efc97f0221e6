"""Measure the regional shift of the synthetic data: train on one region, test on held-out subjects of every region.

Two plain classifiers (logistic regression on downsampled gray pixels, and on the
ground-truth AU intensities) are trained on one region's train+val subjects and
scored on the test subjects of each region. The diagonal (same region) should be
clearly higher than the off-diagonal if the regions differ the way they are meant to.

    .venv/bin/python benchmarks/regional_shift.py [--data data/synth] [--out outputs/regional_shift]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mcam.manifest import Manifest, load_manifest
from mcam.synth.generate import DEFAULT_CONFIG, generate

PIXELS = 24


def pixel_features(manifest: Manifest) -> np.ndarray:
    """Gray images downsampled to PIXELS x PIXELS, flattened."""
    rows = []
    for rel in manifest.table["path"]:
        gray = cv2.imread(str(manifest.resolve(rel)), cv2.IMREAD_GRAYSCALE)
        rows.append(cv2.resize(gray, (PIXELS, PIXELS), interpolation=cv2.INTER_AREA).ravel() / 255.0)
    return np.asarray(rows, np.float32)


def shift_matrix(features: np.ndarray, table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Accuracy [train region x test region] on held-out (test-split) subjects."""
    regions = sorted(table["region"].unique())
    is_test = (table["split"] == "test").to_numpy()
    matrix = pd.DataFrame(index=pd.Index(regions, name="train \\ test"), columns=regions, dtype=float)
    for train_region in regions:
        train = (~is_test) & (table["region"] == train_region).to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=seed))
        model.fit(features[train], table["label"].to_numpy()[train])
        for test_region in regions:
            test = is_test & (table["region"] == test_region).to_numpy()
            matrix.loc[train_region, test_region] = model.score(features[test], table["label"].to_numpy()[test])
    return matrix


def summarize(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per train region: accuracy on its own held-out subjects vs mean over the other regions."""
    own = pd.Series(np.diag(matrix.to_numpy()), index=matrix.index)
    others = matrix.apply(lambda row: row.drop(row.name).mean(), axis=1)
    return pd.DataFrame({"same region": own, "other regions (mean)": others, "gap": own - others})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synth", help="synthetic dataset folder (rendered if absent)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/regional_shift")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "manifest.csv").exists():
        generate(data, DEFAULT_CONFIG, seed=args.seed)
    manifest = load_manifest(data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chance = 1 / manifest.table["label"].nunique()
    lines = [f"# Regional shift of {data} (chance = {chance:.3f}; test = held-out subjects)\n"]
    for name, features in (("pixels (logistic regression, 24x24 gray)", pixel_features(manifest)),
                           ("ground-truth AUs (logistic regression)", manifest.table[manifest.au_columns].to_numpy())):
        matrix = shift_matrix(features, manifest.table, args.seed)
        lines += [f"## {name}\n", matrix.round(3).to_markdown(), "", summarize(matrix).round(3).to_markdown(), ""]
    report = "\n".join(lines)
    (out / "regional_shift.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
