"""`mcam export RUN --out DIR`: a trained fusion run as a self-contained model bundle (mcam.apply.bundle)."""
from __future__ import annotations

import argparse

from mcam.apply.bundle import export_bundle, read_bundle
from mcam.faces import ALIGNMENTS, FINDERS


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="folder of one `mcam fit` run (config.yaml + checkpoints/best.ckpt)")
    parser.add_argument("--out", required=True, help="bundle folder to write (new or empty)")
    parser.add_argument("--real-face", type=_names, default=(),
                        help="cues whose detectors were trained on real faces (comma-separated; default: MCAM-"
                             "trained detectors of a fusion trained on `mcam synth` data count as synthetic-only)")
    parser.add_argument("--synthetic", type=_names, default=(),
                        help="cues whose detectors were trained on synthetic renders only (comma-separated)")
    faces = parser.add_argument_group("face settings (default: `mcam prepare`'s, at the run's face crop size)")
    faces.add_argument("--face-finder", dest="finder", choices=FINDERS, help="how faces are found")
    faces.add_argument("--align", choices=ALIGNMENTS, help="how face crops are aligned")
    faces.add_argument("--margin", type=float, help="crop margin (fraction of the face's side)")
    faces.add_argument("--size", type=int, help="face crop side in pixels")
    faces.add_argument("--clip-size", type=int, help="side of clip detectors' crops in pixels")
    faces.add_argument("--min-face-score", dest="min_score", type=float, help="faces scored lower are left out")


def run(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in ("finder", "align", "margin", "size", "clip_size", "min_score")
                 if getattr(args, k) is not None}
    path = export_bundle(args.run, args.out, args.real_face, args.synthetic, overrides)
    spec = read_bundle(path.parent)
    print(f"bundle {path.parent}: cues {list(spec.detectors)} (trained on synthetic renders only: "
          f"{spec.synthetic_only or 'none'}); faces {spec.faces.finder}, {spec.faces.align}-aligned, "
          f"{spec.faces.size} px")
    return 0
