"""Choose the `attention` network's defaults on validation folds only (never a test region).

Runs the main job's leave-one-region-out folds (benchmarks/loro.yaml: its data, store and detectors; one
detector seed, 10 fusion seeds, LAM) once per variant of the attention fusion, then tabulates each variant's
validation accuracy and loss at its best epoch (results.csv `val_acc`, `val_loss`: the validation part of each
fold, held-out subjects of its training regions). Test columns are dropped before anything is tabulated.

    python benchmarks/attention_selection.py --out outputs/attention_selection   # writes docs/attention_selection.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mcam.assets import find_suite
from mcam.suites.runner import run_suite
from mcam.suites.spec import SuiteSpec

ARGS = "model.network.init_args"


def attention(fuse: str = "embeddings", aux: float = 0.0, cue_dropout: float = 0.0, weight_decay: float = 0.0,
              cue_patience: int | None = None) -> dict[str, object]:
    """Every knob of an `attention` variant, set explicitly (whatever configs/model/attention.yaml defaults to)."""
    return {f"{ARGS}.fuse": fuse, f"{ARGS}.aux_weight": aux, f"{ARGS}.cue_dropout": cue_dropout,
            "model.weight_decay": weight_decay, "model.cue_patience": cue_patience}


# (name, model, fusion_overrides): the paper's network, then MCAM's with its parts added one at a time
VARIANTS = [
    ("paper", "attention_paper", {}),
    ("layernorm", "attention", attention()),
    ("+aux", "attention", attention(aux=0.5)),
    ("+aux+cue_dropout+wd", "attention", attention(aux=0.5, cue_dropout=0.3, weight_decay=1e-4)),
    ("+aux+cue_dropout+wd+cue_stopping", "attention",
     attention(aux=0.5, cue_dropout=0.3, weight_decay=1e-4, cue_patience=5)),
    ("mixture: +aux+cue_dropout+wd", "attention",
     attention("logits", aux=0.5, cue_dropout=0.3, weight_decay=1e-4)),
    ("mixture: +aux+cue_dropout+wd+cue_stopping", "attention",
     attention("logits", aux=0.5, cue_dropout=0.3, weight_decay=1e-4, cue_patience=5)),
]
SELECTED = ["fold", "fold_role", "seed", "val_acc", "val_loss", "best_epoch"]  # no test column is read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/attention_selection")
    parser.add_argument("--doc", default="docs/attention_selection.md")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, model, overrides in VARIANTS:
        spec = SuiteSpec.load(find_suite("loro"), overrides=[
            "--models", f"[{model}]", "--single_cue_models", "[]", "--detector_seeds", "[0]",
            "--seeds", str(list(range(args.seeds))), "--fusion_overrides", json.dumps(overrides)])
        out = Path(args.out) / name.replace(" ", "_").replace(":", "").replace("+", "_")
        run_suite(spec, out, progress=False, command=f"benchmarks/attention_selection.py variant {name!r}")
        results = pd.read_csv(out / "results.csv", usecols=SELECTED)
        held_out = results[results["fold_role"] == "held_out"]
        per_fold = held_out.groupby("fold")[["val_acc", "val_loss"]].mean()
        rows.append({"variant": name, "model": model, "overrides": overrides or "-",
                     "val_acc (mean of held-out folds)": per_fold["val_acc"].mean(),
                     "val_loss": per_fold["val_loss"].mean(),
                     **{f"val_acc {fold}": acc for fold, acc in per_fold["val_acc"].items()},
                     "best_epoch": held_out["best_epoch"].mean()})
    table = pd.DataFrame(rows)
    text = ["# Choosing the attention fusion's defaults on validation folds", "",
            "Each variant trained on the main job's leave-one-region-out folds (detector seed 0, "
            f"{args.seeds} fusion seeds, LAM); scores are validation accuracy/loss at the best epoch on each fold's "
            "validation part (held-out subjects of its training regions), averaged over seeds, then over the "
            "held-out folds. No test score was read. Regenerate: `python benchmarks/attention_selection.py`.", "",
            table.to_markdown(index=False, floatfmt=".3f"), ""]
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    Path(args.doc).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
