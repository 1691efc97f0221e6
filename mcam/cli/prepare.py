"""`mcam prepare DATASET --root RAW --out DIR`: raw dataset -> face crops + manifest.csv + rejects.csv."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mcam.assets import load_yaml, parse_config
from mcam.cli.options import non_negative_int, positive_int
from mcam.datasets import ADAPTERS, create_adapter
from mcam.datasets.prepare import AUGMENTATIONS, PrepareOptions, prepare
from mcam.errors import InputError, UserError
from mcam.faces import ALIGNMENTS, FINDERS
from mcam.io import ensure_writable

# options that the command line may override in the config (argparse default None = "not given")
OVERRIDABLE = ("region", "group", "detector", "faces", "min_face_score", "align", "size", "clip_size", "grayscale",
               "augment", "seed")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=sorted(ADAPTERS), help="adapter name")
    parser.add_argument("--root", required=True, type=Path, help="raw dataset folder, in its published layout")
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--config", type=Path, help="YAML: region, group, detector, size, ..., options: {adapter options}")
    parser.add_argument("--region", help="region written into every row (default: the adapter's)")
    parser.add_argument("--group", help="group attribute written where the dataset gives none")
    parser.add_argument("--detector", choices=FINDERS, help="face finder (default mediapipe: MediaPipe's face "
                        "detector, a detection score per face; haar and mtcnn as before; none: inputs are face crops)")
    parser.add_argument("--faces", choices=("largest", "all"), help="per image: its largest face (default), or one row "
                        "per face (sample '<id>-f<k>', subject '<subject>-f<k>')")
    parser.add_argument("--min-face-score", dest="min_face_score", type=float,
                        help="faces the detector scores lower are left out (default 0.5; all of them: a "
                             "low_face_score reject)")
    parser.add_argument("--align", choices=ALIGNMENTS, help="how found faces are cropped: mesh (default: MediaPipe's "
                        "face mesh, rotation, scale and position from its rigid points; the eyes where it finds no "
                        "mesh) or eyes (the detector's box squared, eye line levelled); column `aligned` says which")
    parser.add_argument("--size", type=positive_int, help="face crop side in pixels (default 128)")
    parser.add_argument("--clip-size", dest="clip_size", type=positive_int, help="clip frame side in pixels (default 64)")
    parser.add_argument("--grayscale", action="store_true", default=None, help="write gray crops")
    parser.add_argument("--augment", help=f"comma list of {','.join(AUGMENTATIONS)}: extra augmented copies")
    parser.add_argument("--seed", type=non_negative_int, help="augmentation seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_config(path: Path | None) -> dict[str, Any]:
    """The prepare config YAML as a dict (empty without a file)."""
    if path is None:
        return {}
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of prepare options")
    return data


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    source = args.config or "the command line"
    if config.get("dataset", args.dataset) != args.dataset:
        raise InputError(f"{args.config}: dataset: {config['dataset']!r}, but the command prepares {args.dataset!r}")
    if not args.root.is_dir():
        raise InputError(f"--root {args.root}: no such folder (the raw {args.dataset} dataset, in its published layout)")
    try:
        adapter = create_adapter(args.dataset, args.root, **(config.pop("options", None) or {}))
    except (ValueError, TypeError) as err:  # the adapter's check of its options
        if isinstance(err, UserError):
            raise
        raise InputError(f"{source}: options: {err}") from err
    config.pop("dataset", None)
    for key in OVERRIDABLE:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    augment = config.get("augment") or ()
    config["augment"] = tuple(a.strip() for a in augment.split(",") if a.strip()) if isinstance(augment, str) else tuple(augment)
    config.setdefault("region", adapter.default_region)
    options = parse_config(PrepareOptions, config, source)
    ensure_writable(args.out, "output folder (--out)")
    summary = prepare(adapter, args.out, options, progress=not args.no_progress)
    print(f"mcam prepare {args.dataset}: {args.root} -> {args.out}")
    for line in summary.lines():
        print(line)
    print(f"manifest: {args.out / 'manifest.csv'}  rejects: {args.out / 'rejects.csv'}")
    return 0
