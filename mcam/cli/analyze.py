"""`mcam analyze INPUT... --model M --out DIR`: a trained MCAM applied to photos, folders, videos or a camera.

One row per face per frame (fused emotion, each cue's attention weight, the cues' own summaries) in
OUT/analysis.csv and OUT/analysis.parquet, written as the frames are analysed; see mcam.apply.
"""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from mcam.apply.pipeline import DEFAULT_BATCH_FRAMES
from mcam.apply.results import FORMATS
from mcam.apply.run import FACE_MODES, SUMMARY_FILE, TIMELINE_FILE, analyze
from mcam.cli.options import device, int_at_least, positive_int


def _formats(text: str) -> list[str]:
    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(FORMATS)}, got {text!r}")
    return chosen


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="photos, videos (anything OpenCV reads) and folders (searched recursively)")
    parser.add_argument("--model", required=True, help="a bundle (`mcam export`) or a `mcam fit` run folder")
    parser.add_argument("--out", required=True, help="output folder (analysis.csv/.parquet, rejects.csv, "
                                                     f"{SUMMARY_FILE}, annotated/, {TIMELINE_FILE})")
    parser.add_argument("--camera", type=int_at_least(0), default=None, metavar="N",
                        help="also analyse camera N (OpenCV index) until --max-frames or Ctrl-C")
    # type int, not positive_int: `--every 0` is refused by analyze() itself, in the one error line of the API
    parser.add_argument("--every", type=int, default=1, metavar="K",
                        help="find faces on every K-th video frame, tracking them in between (default 1)")
    parser.add_argument("--faces", choices=FACE_MODES, default="find",
                        help="find faces in the media (default), or take every image as a face crop (a prepared "
                             "dataset's images)")
    parser.add_argument("--batch-frames", type=positive_int, default=DEFAULT_BATCH_FRAMES,
                        help=f"frames whose faces go through the detectors together (default {DEFAULT_BATCH_FRAMES})")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="at most this many frames per video")
    parser.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:1")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--format", dest="formats", type=_formats, default=list(FORMATS),
                        help="table formats, comma-separated (default csv,parquet)")
    parser.add_argument("--annotate", action="store_true",
                        help="also write OUT/annotated/: photos and videos with boxes, labels and cue-weight bars")
    parser.add_argument("--timeline", action="store_true",
                        help=f"also write OUT/{TIMELINE_FILE}: probabilities and cue weights over time per face")


class _Notes(logging.Handler):
    """Notes and rejects as `mcam analyze: note: ...` lines on the stderr of the moment (not the one at setup)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"mcam analyze: note: {record.getMessage()}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    notes = logging.getLogger("mcam.apply")
    if not any(isinstance(h, _Notes) for h in notes.handlers):
        notes.addHandler(_Notes())
    notes.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    try:
        analyze(*args.inputs, model=args.model, out=args.out, camera=args.camera, every=args.every,
                batch_frames=args.batch_frames, max_frames=args.max_frames, device=args.device, faces=args.faces,
                annotate=args.annotate, timeline=args.timeline, formats=args.formats, keep=False)
    except KeyboardInterrupt:  # files and folders only (a camera's Ctrl-C ends it and keeps its rows)
        print("mcam analyze: interrupted; nothing written", file=sys.stderr)
        return 130
    tables = " and ".join(f"{args.out}/analysis.{fmt}" for fmt in args.formats)
    print(f"mcam analyze: wrote {tables} ({SUMMARY_FILE} beside them: counts, column groups, stage seconds)")
    return 0
