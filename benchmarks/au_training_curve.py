"""What the AU regressor's training time buys: wall seconds against quality, per training setting.

The suites' AU regressor (`au`, MCAM's off-the-shelf AU model) trains on the AU corpus joined by the source
region's AU-coded training faces (`mcam.cues.pretrain.au_corpus_base`). For each setting (epochs, batch size, peak
learning rate) this trains it exactly so, from the same seeded start, and scores it on the AU-corpus identities it
never trained on (the corpus's own validation identities): mean per-AU Pearson r and MAE. Never on a region: the
setting the suites use is chosen here, so no region's faces may choose it.

    python benchmarks/au_training_curve.py                                   # the default grid, seed 0
    python benchmarks/au_training_curve.py --settings 25x32,12x64 --out /tmp/curve.md

Rule (issue 30): a cheaper setting is kept only if its mean r on the unseen identities is within 0.01 of the
reference's (the setting the regressor had, 25 epochs at batch 32, lr 2e-3).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from au_quality import pearson_by_au, unseen_corpus  # the same split and scoring as benchmarks/au_quality.py
from mcam.cues.extract import training_set
from mcam.cues.pretrain import au_coded_rows
from mcam.detector import InputKind
from mcam.determinism import training_threads
from mcam.splits import train_val_split
from mcam.suites.runner import ensure_data
from mcam_detectors.au_regressor import AURegressor
from mcam_detectors.au_svm import au_targets

DATA = {"dir": "data/synth", "synth_config": "configs/synth/default.yaml", "synth_seed": 1}
CORPUS = {"dir": "data/au_corpus", "synth_config": "configs/synth/au_corpus.yaml", "synth_seed": 1}
REFERENCE = "25x32"  # the regressor's training before issue 30
DEFAULT_GRID = "25x64,15x64,25x128@4e-3,12x128@4e-3"
TOLERANCE = 0.01


def parse_setting(text: str) -> dict[str, float]:
    """'EPOCHSxBATCH' or 'EPOCHSxBATCH@LR' -> fit arguments (lr default 2e-3, the regressor's)."""
    shape, _, lr = text.partition("@")
    epochs, batch = shape.split("x")
    return {"epochs": int(epochs), "batch_size": int(batch), "lr": float(lr or 2e-3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=DEFAULT_GRID,
                        help=f"comma-separated EPOCHSxBATCH[@LR] (default {DEFAULT_GRID}); the reference "
                             f"{REFERENCE} is always measured")
    parser.add_argument("--seed", type=int, default=0, help="the regressor's seed (the suites' au_corpus.seed)")
    parser.add_argument("--source", default="western_posed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "au_training_curve.md"))
    args = parser.parse_args()
    settings = list(dict.fromkeys([REFERENCE, *args.settings.split(",")]))
    manifest = ensure_data(DATA, Path("."))
    corpus = ensure_data(CORPUS, Path("."), labelled=False)
    table = manifest.table
    source = manifest.subset((table["region"] == args.source) & (table["split"] != "test"))
    rows = au_coded_rows(corpus, train_val_split(source, 0.2, args.seed)[0])  # as au_corpus_base joins them
    train = training_set(train_val_split(rows, 0.2, args.seed)[0], InputKind.IMAGE)  # as stored_detectors splits
    unseen = unseen_corpus(corpus, source, args.seed)  # the corpus identities of the other part
    truth = au_targets(unseen)
    results = []
    for text in settings:
        fit = parse_setting(text)
        detector = AURegressor(weights="random", seed=args.seed, device="cpu")
        with training_threads(args.threads):
            started, cpu = time.perf_counter(), time.process_time()
            detector.fit(train, None, seed=args.seed, **fit)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            predicted = detector.predict_aus(unseen.faces)
        results.append({"setting": text, **fit, "train faces": len(train.faces), "seconds": round(seconds, 1),
                        "CPU seconds": round(cpu, 1),
                        "mean r (unseen identities)": float(np.mean(list(pearson_by_au(predicted, truth).values()))),
                        "MAE": float(np.abs(predicted - truth).mean())})
        print(results[-1], flush=True)
    frame = pd.DataFrame(results)
    reference = frame.set_index("setting").loc[REFERENCE]
    frame["r - reference"] = frame["mean r (unseen identities)"] - reference["mean r (unseen identities)"]
    frame["time / reference"] = frame["seconds"] / reference["seconds"]
    frame["kept?"] = np.where(frame["r - reference"] >= -TOLERANCE, "within 0.01", "no")
    text = "\n".join([
        f"# AU regressor: training time vs quality (seed {args.seed}, {args.threads} threads, "
        f"torch {torch.__version__})", "",
        f"Trained on {len(train.faces)} faces (the AU corpus's training identities joined by {args.source}'s "
        f"AU-coded training faces), scored on {len(unseen.faces)} faces of {len(set(unseen.subjects))} AU "
        "corpus identities it never trained on (never a region). Settings measured one after another in one run; "
        "seconds include data loading inside the fit.", "",
        frame.to_markdown(index=False, floatfmt=".3f"), "",
        f"Rule: a setting cheaper than the reference ({REFERENCE}) is kept only within {TOLERANCE} of its mean r."])
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
