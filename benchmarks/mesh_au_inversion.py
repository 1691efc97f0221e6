"""Does inverting the AU-to-mesh model refine `mesh_au`'s AU intensities (issue 13, item 3's optional refinement)?

Aligned MediaPipe meshes of the AU corpus and of the embedded data; a RidgeCV from mesh to AUs (as `mesh_au`) fit on
80 % of the corpus identities; the inversion: bounded least squares (AUs in [0, 1]) of the mesh's displacement from
the mean neutral corpus mesh (MediaPipe's own neutral: the calibration) onto the AU-to-mesh model the renderer uses
(py-feat's v4 PLS coefficients plus MCAM's FACS fields), with the ridge's AUs as a prior of weight lambda. Lambda is
chosen on the other 20 % of corpus identities, never on a region; cells are the mean per-AU Pearson r on each region's
test rows.

    python benchmarks/mesh_au_inversion.py --data data/synth --corpus data/au_corpus
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear
from sklearn.linear_model import RidgeCV

from mcam.cues.extract import load_faces
from mcam.detector import InputKind
from mcam.labels import AU_NAMES
from mcam.landmarks import N_POINTS, aligned_meshes, template
from mcam.manifest import load_manifest
from mcam.synth.mesh import load_mesh_model
from mcam_detectors.mesh_cues import ALPHAS

from au_quality import pearson_by_au  # benchmarks/ is the script's folder

LAMBDAS = (0.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)


def mean_r(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean per-AU Pearson r, as benchmarks/au_quality.py scores it (`pearson_by_au`)."""
    return float(np.mean(list(pearson_by_au(pred, true).values())))


def invert(meshes: np.ndarray, prior: np.ndarray, lam: float, coef: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """AUs in [0, 1] minimising |coef @ a - (mesh - neutral)|^2 + lam |a - prior|^2, per face."""
    eye = np.sqrt(lam) * np.eye(coef.shape[1])
    matrix = np.vstack([coef, eye])
    return np.array([lsq_linear(matrix, np.concatenate([m.reshape(-1) - neutral, eye @ p]), bounds=(0, 1)).x
                     for m, p in zip(meshes, prior)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synth", help="the embedded data (a manifest folder)")
    parser.add_argument("--corpus", default="data/au_corpus", help="the AU corpus (a manifest folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mesh_au_inversion.md"))
    args = parser.parse_args()
    corpus, data = load_manifest(args.corpus, labelled=False), load_manifest(args.data)
    (cm, cf), (dm, df) = (aligned_meshes(load_faces(m, InputKind.IMAGE)[0]) for m in (corpus, data))
    ct, dt = (m.table[list(AU_NAMES)].to_numpy(float) for m in (corpus, data))
    subjects = corpus.table["subject"].to_numpy()
    rng = np.random.default_rng(0)
    held = set(rng.choice(np.unique(subjects), size=len(np.unique(subjects)) // 5, replace=False))
    val = np.array([s in held for s in subjects])
    fit, val = cf & ~val, cf & val

    def features(meshes: np.ndarray) -> np.ndarray:
        return (meshes - template()).reshape(len(meshes), -1)

    ridge = RidgeCV(alphas=ALPHAS).fit(features(cm[fit]), ct[fit])
    coef = load_mesh_model().coef[:, :N_POINTS, :].reshape(len(AU_NAMES), -1).T.astype(np.float64)
    neutral = cm[fit & (ct.sum(1) == 0)].mean(0).reshape(-1)

    def ridge_aus(meshes: np.ndarray) -> np.ndarray:
        return np.clip(ridge.predict(features(meshes)), 0, 1)

    lines = ["# mesh_au: the ridge vs the AU-to-mesh inversion", "",
             f"corpus {args.corpus}: {int(fit.sum())} fit / {int(val.sum())} validation faces with a mesh; "
             f"data {args.data}", "", "| lambda (prior weight) | corpus validation mean r |", "|---|---|"]
    scores = {}
    for lam in LAMBDAS:
        scores[lam] = mean_r(invert(cm[val], ridge_aus(cm[val]), lam, coef, neutral), ct[val])
        lines.append(f"| {lam:g} | {scores[lam]:.3f} |")
    chosen = max(scores, key=scores.get)
    lines += [f"| ridge alone | {mean_r(ridge_aus(cm[val]), ct[val]):.3f} |", "",
              f"lambda chosen on corpus validation: {chosen:g}", "",
              "| region (test rows) | ridge | inversion, prior lambda chosen | inversion alone |", "|---|---|---|---|"]
    test = (data.table["split"] == "test").to_numpy() & df
    for region in sorted(data.table["region"].unique()):
        rows = test & (data.table["region"] == region).to_numpy()
        prior = ridge_aus(dm[rows])
        lines.append(f"| {region} | {mean_r(prior, dt[rows]):.3f} | "
                     f"{mean_r(invert(dm[rows], prior, chosen, coef, neutral), dt[rows]):.3f} | "
                     f"{mean_r(invert(dm[rows], prior, 0.0, coef, neutral), dt[rows]):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
