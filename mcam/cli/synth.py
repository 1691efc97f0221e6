"""`mcam synth`: render the synthetic regional face dataset."""
from __future__ import annotations

import argparse

import pandas as pd

from mcam.cli.options import non_negative_int, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    from mcam.synth.generate import DEFAULT_CONFIG

    parser.add_argument("--out", required=True, help="output folder (manifest.csv, images/, clips/, contact_sheet.png)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="synth config YAML (configs/synth/*.yaml)")
    parser.add_argument("--subjects-per-region", type=positive_int, default=None,
                        help="override the config's subject count")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")


def run(args: argparse.Namespace) -> int:
    from mcam.synth.generate import generate

    manifest = generate(args.out, args.config, args.seed, args.subjects_per_region, args.workers)
    print(summary(pd.read_csv(manifest)))
    print(f"manifest: {manifest}\ncontact sheet: {manifest.parent / 'contact_sheet.png'}")
    return 0


def summary(table: pd.DataFrame) -> str:
    """Samples per region x emotion, with subject counts; for an AU corpus, faces and identities, and how many
    faces show each AU."""
    if table["label"].isna().all():
        aus = [c for c in table.columns if c.startswith("AU")]
        shown = (table[aus] > 0).sum().to_frame("faces showing it").T.to_string()
        return f"AU corpus: {len(table)} faces of {table['subject'].nunique()} identities, no emotion labels\n{shown}"
    counts = pd.crosstab(table["region"], table["label"])
    counts["subjects"] = table.groupby("region")["subject"].nunique()
    return counts.to_string()
