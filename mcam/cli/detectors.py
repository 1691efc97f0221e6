"""`mcam detectors`: the registered detector plugins, described without loading any weights."""
from __future__ import annotations

import argparse
from pathlib import Path

from mcam.errors import InputError
from mcam.registry import available, create_detector

COLUMNS = ("name", "input", "shape", "dim", "prefix", "trainable", "offline", "weights source")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None,
                        help="describe with this `weights` init arg (e.g. 'random', or a checkpoint file: "
                             "loaded, so a file a detector cannot use shows as its error) instead of each default")


def describe(name: str, weights: str | None = None) -> dict[str, str]:
    """One table row for a registered detector; a plugin that fails to import or build (or to load a weights
    file given as `weights`) reports its error."""
    try:
        detector = create_detector(name, **({} if weights is None else {"weights": weights}))
        if weights is not None and Path(weights).is_file():
            detector.load()
        info = detector.weights_info()
        config = detector.pretrained_config() if hasattr(detector, "pretrained_config") else None
        shape = "x".join(str(v) for v in config.input_size) if config is not None else "-"
        return {"name": name, "input": detector.input_kind.value, "shape": shape, "dim": str(detector.dim),
                "prefix": detector.prefix, "trainable": "yes" if detector.trainable else "no",
                "offline": "yes" if info.available_offline else "no",
                "weights source": info.source + (f" [{info.licence}]" if info.licence else "")}
    except Exception as err:  # noqa: BLE001 - a broken plugin is listed with its error, not a crash
        return {"name": name, "input": "?", "shape": "?", "dim": "?", "prefix": "?", "trainable": "?", "offline": "no",
                "weights source": f"ERROR {type(err).__name__}: {err}"}


def run(args: argparse.Namespace) -> int:
    if args.weights is not None and Path(args.weights).suffix and not Path(args.weights).is_file():
        raise InputError(f"--weights {args.weights}: no such file")
    rows = [describe(name, args.weights) for name in sorted(available())]
    if not rows:
        print("no detectors registered (entry-point group 'mcam.detectors')")
        return 1
    if args.weights is not None and Path(args.weights).is_file() and all(r["offline"] == "no" for r in rows):
        raise InputError(f"--weights {args.weights}: no detector can use this file "
                         f"({rows[0]['weights source'].removeprefix('ERROR ')})")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS[:-1]}
    print("  ".join(c.ljust(widths.get(c, 0)) for c in COLUMNS))
    for row in rows:
        print("  ".join(row[c].ljust(widths.get(c, 0)) for c in COLUMNS))
    return 0
