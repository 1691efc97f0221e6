"""Cue extraction speed: all default cues over a synthetic dataset, first run (extract) vs second run (cache).

    .venv/bin/python benchmarks/extract_cues.py [--synth configs/synth/default.yaml] [--work runs/bench_extract]
        [--spec DETECTORS_YAML] [--threads 2] [--epochs N]

Without --spec the trainable default detectors are first pre-trained on the western_posed
region (`pretrain_detectors`, resumable; not timed as extraction). Prints one line per phase.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", default=str(ROOT / "configs/synth/default.yaml"))
    parser.add_argument("--work", default=str(ROOT / "runs/bench_extract"))
    parser.add_argument("--spec", default=None, help="detector spec YAML; default: pre-train into WORK/detectors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="pre-training epochs (default: each detector's)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from mcam.cues.extract import build_detectors, extract_cues
    from mcam.cues.pretrain import pretrain_detectors
    from mcam.manifest import load_manifest
    from mcam.synth.generate import generate

    work = Path(args.work)
    data = work / "data" / Path(args.synth).stem
    if not (data / "manifest.csv").exists():
        start = time.perf_counter()
        generate(data, args.synth, 0)
        print(f"synth        {time.perf_counter() - start:8.1f} s  ({args.synth})")
    manifest = load_manifest(data)
    default_cues = list(yaml.safe_load((ROOT / "configs/detectors/default.yaml").read_text())["detectors"])
    spec = args.spec
    if spec is None:
        start = time.perf_counter()
        trainable = [n for n in default_cues if n != "macro"]
        spec = pretrain_detectors(manifest, default_cues, work / "detectors", region="western_posed",
                                  epochs=args.epochs, fine_tune=trainable)
        print(f"pretrain     {time.perf_counter() - start:8.1f} s  ({', '.join(trainable)} on western_posed)")
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    names = list(build_detectors(spec))
    print(f"{len(manifest)} samples, cues {names}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, device {build_detectors(spec)[names[0]].device}")
    for phase in ("first", "second"):
        detectors = build_detectors(spec)  # fresh objects: the second run pays for fingerprints, reads the cache
        total = 0.0
        for name, detector in detectors.items():
            start = time.perf_counter()
            table = extract_cues(manifest, {name: detector}, cache, progress=False, batch_size=args.batch_size)[name]
            seconds = time.perf_counter() - start
            total += seconds
            print(f"{phase:<6} {name:<11} {seconds:8.1f} s  {len(manifest) / seconds:8.1f} samples/s  "
                  f"dim {table.dim}, valid {int(table.valid.sum())}/{len(table.valid)}")
        print(f"{phase:<6} {'all':<11} {total:8.1f} s  {len(manifest) / total:8.1f} samples/s")


if __name__ == "__main__":
    main()
