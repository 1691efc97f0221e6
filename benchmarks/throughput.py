"""Throughput of the whole pipeline on one device: cue extraction (faces/s, per detector and all five cues together,
decoding and cropping included, warm-up excluded), detector training (images/s) and fusion (members/s).

    python benchmarks/throughput.py                       # CPU, on data/synth (the main job's data) if present
    python benchmarks/throughput.py --device cuda --data data/synth

Extraction runs as `mcam extract` does (`extract_cues` into an empty store, each detector's default batch size,
`--threads` CPU threads, `--workers` face-loading processes): each detector alone, then all five cues in one call,
which decodes and crops each face once per input kind (image, clip) for all of them; a warm-up extraction of
--warmup rows (another store) comes first and is not counted.
Trainable detectors carry seeded random weights (throughput does not depend on what they learned); `macro` its
shipped FER2013 weights. Detector training: one epoch of each trainable detector's `fit` on the data's
`train` split, faces already decoded. Fusion: one stack of 10 attention members (benchmarks/fusion_speed.py's
synthetic cues shaped like the main job's) trained as the main job trains it; members/s = 10 / its seconds.
On CUDA every timing ends with a synchronisation of that device. Targets (issue 11): >= 100 faces/s for all five
cues on a 2-core CPU; >= 3,000 faces/s on one H100.
Writes benchmarks/results/throughput-<device>.md naming the device.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from mcam.cues.extract import default_clip_column, extract_cues, load_faces, training_set
from mcam.determinism import training_threads
from mcam.manifest import load_manifest
from mcam.registry import detector_class

DETECTORS = ("vgg", "au", "micro", "micro_plus", "macro")
TARGET_CPU = 100


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{model or platform.machine()} ({torch.get_num_threads()} threads)"


def synchronise(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def build(name: str, device: str):
    config = {"device": device, **({"weights": "random"} if detector_class(name).trainable else {})}
    return detector_class(name)(**config)


def data_folder(given: str | None, scratch: Path) -> Path:
    if given:
        return Path(given)
    if (Path("data/synth") / "manifest.csv").exists():
        return Path("data/synth")
    from mcam.assets import asset_path
    from mcam.synth.generate import generate

    generate(scratch / "synth_tiny", asset_path("configs/synth/tiny.yaml"), seed=0, progress=False)
    return scratch / "synth_tiny"


def gemm_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    """This device's fp32 matrix-multiply rate (GFLOP/s): a practical ceiling for convolution-heavy detectors."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronise(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def compute_floor(detectors: dict, manifest, device: str, measured: float, say) -> None:
    """Per-face FLOPs of each detector's network (torch's FlopCounterMode on one face) against this device's
    GEMM rate: how many faces/s the arithmetic alone allows, whatever the pipeline around it does."""
    from torch.utils.flop_counter import FlopCounterMode

    say("| detector | GFLOP per face | faces/s at the GEMM rate |")
    say("|---|---|---|")
    rate = gemm_gflops(device)
    total = 0.0
    for name, detector in detectors.items():
        faces, _ = load_faces(manifest, detector.input_kind, [0], default_clip_column(manifest))
        x = detector.preprocess(faces).to(device)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            detector.cue_outputs(x)
        gflop = counter.get_total_flops() / 1e9
        total += gflop
        say(f"| {name} | {gflop:.3f} | {rate / gflop:.0f} |")
    say(f"| all five | {total:.3f} | {rate / total:.0f} |")
    say()
    say(f"fp32 GEMM on this device: {rate:.0f} GFLOP/s (2048x2048 matmuls). The five networks need {total:.2f} GFLOP "
        f"per face, so the arithmetic alone caps all five cues at {rate / total:.0f} faces/s here; measured "
        f"{measured:.1f} faces/s ({measured * total:.0f} GFLOP/s sustained, {measured * total / rate:.0%} of GEMM).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="manifest folder (default: data/synth, else tiny synthetic data)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2: this machine's cores)")
    parser.add_argument("--rows", type=int, default=1000, help="rows extracted per detector (default 1000)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes decoding and cropping faces ahead of the detectors (extract_cues; default 0)")
    parser.add_argument("--warmup", type=int, default=32)
    parser.add_argument("--out", default=None, help="default benchmarks/results/throughput-<device type>.md")
    args = parser.parse_args()
    from mcam.quiet import quiet_lightning

    quiet_lightning()
    torch.set_num_threads(args.threads)
    device = args.device
    lines = [f"# throughput on {device}: {device_name(device)}, torch {torch.__version__}", ""]

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="mcam-throughput-") as tmp:
        scratch = Path(tmp)
        manifest = load_manifest(data_folder(args.data, scratch))
        rows = min(args.rows, len(manifest))
        index = manifest.table.index.to_series()
        part, warm = manifest.subset(index < rows), manifest.subset(index >= len(manifest) - args.warmup)
        say(f"data: {manifest.root} ({rows} of {len(manifest)} rows extracted per detector; warm-up on "
            f"{len(warm)} others)")
        say()
        say("## Cue extraction (decode, crop, detector; into an empty store)")
        say()
        say("| detector | seconds | faces/s |")
        say("|---|---|---|")
        options = {"progress": False, "threads": args.threads, "workers": args.workers}
        detectors = {name: build(name, device) for name in DETECTORS}
        alone = 0.0
        for name, detector in detectors.items():
            with training_threads(args.threads):
                extract_cues(warm, {name: detector}, scratch / "warm", **options)
                synchronise(device)
                start = time.perf_counter()
                extract_cues(part, {name: detector}, scratch / "alone", **options)
                synchronise(device)
            seconds = time.perf_counter() - start
            alone += seconds
            say(f"| {name} | {seconds:.1f} | {rows / seconds:.1f} |")
        say(f"| sum of the five alone | {alone:.1f} | {rows / alone:.1f} |")
        with training_threads(args.threads):  # the detectors are warm: each was warmed up above
            synchronise(device)
            start = time.perf_counter()
            extract_cues(part, detectors, scratch / "together", **options)
            synchronise(device)
        total = time.perf_counter() - start
        say(f"| all five together (one extract_cues call) | {total:.1f} | {rows / total:.1f} |")
        say()
        compute_floor(detectors, part, device, rows / total, say)
        say()
        say("## Detector training (one epoch of `fit` on decoded faces of the train split)")
        say()
        say("| detector | faces | seconds | images/s |")
        say("|---|---|---|---|")
        train = manifest.subset(manifest.table["split"] == "train") if "split" in manifest.table else manifest
        train = train.subset(train.table.index.to_series() < 336)  # at most the main job's source-region size
        for name in ("vgg", "au", "micro", "micro_plus"):
            detector = build(name, device)
            faces = training_set(train, detector.input_kind, clip_column=default_clip_column(train))
            with training_threads(args.threads):
                synchronise(device)
                start = time.perf_counter()
                detector.fit(faces, None, epochs=1, seed=0)
                synchronise(device)
            seconds = time.perf_counter() - start
            say(f"| {name} | {len(faces.faces)} | {seconds:.1f} | {len(faces.faces) / seconds:.1f} |")
        say()
        say("## Fusion (one stack of 10 attention members, the main job's settings, synthetic cues)")
        say()
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from fusion_speed import stacked, synthetic

        on_cpu = torch.device(device).type == "cpu"
        seconds, _ = stacked("attention", list(range(10)), scratch / "cues", synthetic(scratch / "cues", 1), scratch,
                             1 if on_cpu else args.threads, "cpu" if on_cpu else "gpu")
        say(f"10 members in {seconds:.1f} s: {10 / seconds:.2f} members/s" + (" (1 thread)" if on_cpu else ""))
        say()
        faces_per_s = rows / total
        if torch.device(device).type == "cpu":
            say(f"all five cues: {faces_per_s:.1f} faces/s; target >= {TARGET_CPU} on a 2-core CPU: "
                f"{'met' if faces_per_s >= TARGET_CPU else 'NOT met'}")
        say(f"faces_per_second_all_cues: {faces_per_s:.1f}")
    out = Path(args.out or Path(__file__).parent / "results" / f"throughput-{torch.device(device).type}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
