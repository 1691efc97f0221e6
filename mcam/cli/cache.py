"""`mcam cache`: list the artifact store's entries (size, what made them) and prune those no result uses."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from mcam.errors import InputError
from mcam.store import ArtifactStore, Entry, default_store_root

KEY_COLUMNS = ("detectors_key", "fold_key", "cue_keys")  # results.csv columns naming store entries


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help=f"artifact store (default $MCAM_STORE or {default_store_root()})")
    parser.add_argument("--prune", action="store_true",
                        help="remove entries that no results.csv under --results refers to (dependencies kept)")
    parser.add_argument("--results", nargs="+", default=["outputs"],
                        help="folders searched for results.csv files whose entries are kept (default outputs)")
    parser.add_argument("--dry-run", action="store_true", help="with --prune: only say what would go")


def referenced(folders: list[str]) -> set[str]:
    """Store entries ('<kind>/<key>') named by the results.csv files under `folders`."""
    keys: set[str] = set()
    for folder in folders:
        if not Path(folder).is_dir():  # else every entry would look unused and be pruned
            raise InputError(f"--results {folder}: no such folder")
        for path in sorted(Path(folder).rglob("results.csv")):
            table = pd.read_csv(path)
            for column in KEY_COLUMNS:
                for value in table[column].dropna() if column in table else ():
                    keys.update(k for k in str(value).split(",") if k)
    return keys


def describe(entry: Entry) -> str:
    """One line saying what made an entry."""
    made = entry.made_from
    if entry.kind == "detectors":
        return (f"{made.get('purpose')}: trained {','.join(made.get('train', []))} of {','.join(made.get('names', []))} "
                f"on rows {made.get('rows')}, seed {made.get('seed')}, epochs {made.get('epochs')}")
    if entry.kind == "cues":
        return f"{made.get('detector')} cues of manifest {made.get('manifest_fingerprint')} ({made.get('n_rows')} rows)"
    return f"fold {made.get('fold')}"


def run(args: argparse.Namespace) -> int:
    store = ArtifactStore(args.store or default_store_root())
    if not store.root.is_dir():
        raise InputError(f"no store at {store.root} (--store, or $MCAM_STORE)")
    if args.prune:
        keep = referenced(args.results)
        removed = store.prune(keep, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for entry in removed:
            print(f"{verb} {entry.kind}/{entry.key} ({entry.size / 1e6:.1f} MB): {describe(entry)}")
        print(f"{verb} {len(removed)} entries, {sum(e.size for e in removed) / 1e6:.1f} MB; kept those of "
              f"{len(keep)} referenced keys found under {', '.join(args.results)}")
        return 0
    entries = store.entries()
    rows = [[e.kind, e.key, f"{e.size / 1e6:.1f}", describe(e)] for e in entries]
    print(tabulate(rows, headers=["kind", "key", "MB", "made from"]))
    print(f"{len(entries)} entries, {sum(e.size for e in entries) / 1e6:.1f} MB in {store.root}")
    return 0
