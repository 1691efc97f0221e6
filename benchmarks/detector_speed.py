"""Extraction speed of cue F (vgg, ms/face) and cues I / I+ (micro, ms/clip) on CPU and, when present, GPU.

Usage: python benchmarks/detector_speed.py [--threads N] [--repeats R]
Random-init weights (explicit): speed does not depend on the weights' values.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mcam.detector import Detector, FaceBatch
from mcam_detectors.micro3d import MicroExpression
from mcam_detectors.vgg_features import VGGFeatures


def time_extract(detector: Detector, batch: FaceBatch, repeats: int) -> float:
    """Median milliseconds per sample of detector.extract over `repeats` runs (after one warm-up)."""
    detector.extract(batch)
    times = []
    for _ in range(repeats):
        if torch.device(detector.device).type == "cuda":
            torch.cuda.synchronize(detector.device)
        start = time.perf_counter()
        detector.extract(batch)
        if torch.device(detector.device).type == "cuda":
            torch.cuda.synchronize(detector.device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000 / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    faces = FaceBatch([str(i) for i in range(32)], images=list(rng.integers(0, 255, (32, 128, 128, 3), np.uint8)))
    clips = FaceBatch([str(i) for i in range(32)], clips=list(rng.integers(0, 255, (32, 8, 64, 64, 3), np.uint8)))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, CPU threads {args.threads}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if "cuda" in devices else ", no GPU"))
    print("detector  | input            | device | ms/sample (batch 32)")
    for device in devices:
        for size in (64, 112, 224):
            detector = VGGFeatures(weights="random", input_size=size, device=device)
            print(f"vgg       | face {f'{size}x{size}':12}| {device:6} | {time_extract(detector, faces, args.repeats):8.2f}")
        detector = MicroExpression(weights="random", device=device)
        print(f"micro     | clip 8x48x48     | {device:6} | {time_extract(detector, clips, args.repeats):8.2f}")


if __name__ == "__main__":
    main()
