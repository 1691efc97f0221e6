"""`mcam pretrain`: train detectors on a source dataset/region (LAM) or fine-tune them on a target (GAM)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcam import progress
from mcam.cli.options import device, fraction, non_negative_int, positive_int
from mcam.cues.pretrain import DEFAULT_PRECISION, PRECISIONS, au_coded_rows, frozen_regressors, pretrain_detectors
from mcam.errors import InputError
from mcam.io import ensure_writable
from mcam.manifest import load_manifest
from mcam.registry import detector_class
from mcam.splits import train_val_split

DEFAULT_TRAIN = "vgg,au,micro,micro_plus,macro_cnn"
DEFAULT_KEEP = "macro"


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder holding manifest.csv, or the manifest CSV")
    parser.add_argument("--region", default="western_posed",
                        help="train on this region only; 'all' for every row (default western_posed)")
    parser.add_argument("--detectors", default=DEFAULT_TRAIN, help=f"detectors to train (default {DEFAULT_TRAIN})")
    parser.add_argument("--keep", default=DEFAULT_KEEP,
                        help=f"detectors listed in the spec untrained, e.g. pre-trained elsewhere (default {DEFAULT_KEEP})")
    parser.add_argument("--base", default=None,
                        help="spec YAML to start from (GAM: fine-tune the detectors of a LAM detectors.yaml)")
    parser.add_argument("--au-corpus", default=None,
                        help="an AU corpus folder (ground-truth AUs, no emotion labels; e.g. `mcam synth --config "
                             "configs/synth/au_corpus.yaml`): the AU detectors among --detectors train their regressor "
                             "on it first (into <out>/au_corpus; joined by --data's training faces that carry AU "
                             "columns), then only their AU -> emotion SVM on --data")
    parser.add_argument("--out", required=True, help="folder for <name>.pt, <name>.metrics.json, detectors.yaml")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per detector (default: each detector's)")
    parser.add_argument("--val-fraction", type=fraction, default=0.2, help="fraction of subjects held out for val")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seeds the random init, the val split and training")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for training (explicit: results depend on it; default 1)")
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda, cuda:1 for training (default: cuda when visible; part of what the "
                             "trained weights are keyed by)")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help=f"Lightning training precision (default {DEFAULT_PRECISION}; bf16-mixed on GPUs with bf16)")
    parser.add_argument("--force", action="store_true", help="retrain even where a checkpoint exists")
    parser.add_argument("--include-test", action="store_true",
                        help="also train on rows whose manifest split is 'test' (default: left out, so the "
                             "manifest's test subjects stay unseen by the detectors)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with progress.shown("pretrain"):  # a bar per detector's training
        return _pretrain(args)


def _pretrain(args: argparse.Namespace) -> int:
    train = _names(args.detectors)
    manifest = load_manifest(args.data)
    ensure_writable(args.out, "output folder (--out)")
    if "split" in manifest.table.columns and not args.include_test:
        held_out = manifest.table["split"] == "test"
        print(f"mcam pretrain: leaving out {int(held_out.sum())} rows of split 'test' (--include-test keeps them)")
        manifest = manifest.subset(~held_out)
    settings = {"val_fraction": args.val_fraction, "seed": args.seed, "epochs": args.epochs, "force": args.force,
                "threads": args.threads, "device": args.device, "precision": args.precision}
    base = args.base
    if args.au_corpus is not None:
        if base is not None:
            raise InputError("--au-corpus and --base: the AU corpus pre-trains from a random init; fine-tune (--base) "
                             "a spec that was pre-trained with it instead")
        names = [n for n in train if detector_class(n).learns_from_aus]
        if not names:
            raise InputError(f"--au-corpus: none of --detectors {train} learns from an AU corpus")
        if args.region != "all" and args.region not in manifest.regions:
            raise InputError(f"--region {args.region!r} not in {args.data}; regions: {manifest.regions}")
        region = manifest if args.region == "all" else manifest.subset(manifest.table["region"] == args.region)
        # the AU-coded faces --data trains on (its train part: the SVM's rows) join the corpus, as in suites
        corpus = au_coded_rows(load_manifest(args.au_corpus, labelled=False),
                               train_val_split(region, args.val_fraction, args.seed)[0])
        base = frozen_regressors(pretrain_detectors(corpus, names, Path(args.out) / "au_corpus", train=names,
                                                    **settings))
    spec = pretrain_detectors(manifest, [*train, *_names(args.keep)], args.out,
                              region=None if args.region == "all" else args.region, base_spec=base, train=train,
                              **settings)
    print(f"detector spec: {spec}")
    return 0
