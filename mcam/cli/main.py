"""`mcam` entry point: dispatches subcommands; fit|validate|test|predict go to LightningCLI."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module under mcam.cli, one-line help). Each module defines
# `configure(parser)` and `run(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "render the synthetic regional face dataset"),
    "detectors": ("detectors", "list registered detector plugins"),
    "pretrain": ("pretrain", "pre-train trainable detectors on a source dataset/region"),
    "extract": ("extract", "extract (cached) cues of detectors over a dataset"),
    "prepare": ("prepare", "turn a raw real dataset into a manifest of face crops"),
    "bench": ("bench", "run a benchmark suite (default: leave-one-region-out)"),
    "cache": ("cache", "list the artifact store (detectors, cues, folds) and prune unused entries"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcam", description="Multi-cue attention fusion for cross-regional FER.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} of a fusion model (--config YAML ...)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_SUBCOMMANDS:
        from mcam.fusion.cli import run_lightning_cli

        run_lightning_cli([command, *rest])
        return 0
    if command not in SUBCOMMANDS:
        build_parser().error(f"unknown command {command!r}")
    module = importlib.import_module(f"mcam.cli.{SUBCOMMANDS[command][0]}")
    parser = argparse.ArgumentParser(prog=f"mcam {command}", description=SUBCOMMANDS[command][1])
    module.configure(parser)
    if command == "bench":  # every suite spec field is an option too: the spec parser takes what argparse does not
        args, overrides = parser.parse_known_args(rest)
        return int(module.run(args, overrides) or 0)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
