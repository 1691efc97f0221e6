"""`mcam extract`: cached cues of detectors over a dataset (batched, resumable, CPU or GPU)."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from mcam.cli.options import device, non_negative_int, positive_int
from mcam.cues.extract import build_detectors, extract_cues
from mcam.cues.store import CueStore
from mcam.io import ensure_writable
from mcam.manifest import load_manifest
from mcam.store import default_store_root


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder holding manifest.csv, or the manifest CSV")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--detectors", help="comma-separated registry names, default init args (e.g. macro,vgg)")
    which.add_argument("--spec", help="detector spec YAML {detectors: {name: {weights: ..., ...}}} "
                                      "(e.g. the detectors.yaml written by `mcam pretrain`)")
    parser.add_argument("--store", default=None,
                        help=f"artifact store; cues go to <store>/cues (default $MCAM_STORE or {default_store_root()})")
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads for extraction (default 1)")
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="processes that decode and crop faces ahead of the detectors (default 0: the main "
                             "process does, between batches); each face is decoded once per input kind either way")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="faces loaded per step (default: the largest of the detectors' own batch sizes); "
                             "each detector still runs its own batch size, and cues do not depend on either")
    parser.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 (default: cuda when visible)")
    parser.add_argument("--clip-column", default=None,
                        help="manifest column of clips for clip detectors (default: micro_clip if present, else clip)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cache = Path(args.store or default_store_root()) / "cues"
    start = time.perf_counter()
    manifest = load_manifest(args.data)
    spec = args.spec or {name.strip(): {} for name in args.detectors.split(",") if name.strip()}
    detectors = build_detectors(spec, device=args.device)
    ensure_writable(cache, "cue cache (--store)")
    tables = extract_cues(manifest, detectors, cache, batch_size=args.batch_size,
                          progress=not args.no_progress, clip_column=args.clip_column, threads=args.threads,
                          workers=args.workers)
    seconds = time.perf_counter() - start
    store = CueStore(cache)
    print(f"{'detector':<12} {'dim':>5} {'valid':>11}  file")
    for name, table in tables.items():
        print(f"{name:<12} {table.dim:>5} {int(table.valid.sum()):>5}/{len(table.valid):<5}  "
              f"{store.path(manifest, detectors[name], table.fingerprint)}")
    print(f"{len(manifest)} samples, {len(tables)} detectors in {seconds:.1f} s "
          f"({len(manifest) * len(tables) / max(seconds, 1e-9):.0f} sample-cues/s)")
    return 0
