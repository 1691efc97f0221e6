"""`mcam` entry point: dispatches subcommands; fit|validate|test|predict go to LightningCLI.

The one error path: a user mistake (`mcam.errors.UserError`, a bad option, a missing or unwritable
file) escaping any subcommand prints one line `mcam <cmd>: error: <message>` on stderr and exits 2;
`mcam --debug ...` (or MCAM_DEBUG=1) shows its traceback instead. Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from typing import NoReturn

from mcam.errors import UserError

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
    "export": ("export", "write a trained fusion run as a self-contained model bundle"),
    "analyze": ("analyze", "apply a model bundle to photos, folders, videos or a camera: a per-face table"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEBUG_ENV = "MCAM_DEBUG"
# File-system problems that are the user's to fix (a path that is not there, a folder they may not write to,
# a full disk): reported like a UserError. Other OSErrors are bugs.
USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
USER_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES)


class UsageError(UserError):
    """A command line that argparse refuses (unknown option, missing or malformed value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing the usage and exiting: main() reports it in one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mcam", description="Multi-cue attention fusion for cross-regional FER.",
                            epilog=f"--debug (or {DEBUG_ENV}=1) before the command: tracebacks for user errors too")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} of a fusion model (--config YAML ...)", add_help=False)
    return parser


def is_user_error(error: BaseException) -> bool:
    """Whether an exception is the user's to fix (one line, exit 2) rather than a bug (traceback)."""
    if isinstance(error, (UserError, *USER_OS_ERRORS)):
        return True
    return isinstance(error, OSError) and error.errno in USER_ERRNOS


def error_line(command: str, error: BaseException) -> str:
    """`mcam <command>: error: <message>` on one line."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"mcam {command}: error: {message}" if command else f"mcam: error: {message}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    command = argv[0] if argv and argv[0] in (*SUBCOMMANDS, *LIGHTNING_SUBCOMMANDS) else ""
    try:
        return _dispatch(argv)
    except Exception as error:
        if debug or not is_user_error(error):
            raise
        print(error_line(command, error), file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_SUBCOMMANDS:
        from mcam.fusion.cli import run_lightning_cli

        run_lightning_cli([command, *rest])
        return 0
    if command not in SUBCOMMANDS:
        raise UsageError(f"unknown command {command!r}; commands: {', '.join([*SUBCOMMANDS, *LIGHTNING_SUBCOMMANDS])}")
    module = importlib.import_module(f"mcam.cli.{SUBCOMMANDS[command][0]}")
    parser = ArgumentParser(prog=f"mcam {command}", description=SUBCOMMANDS[command][1])
    module.configure(parser)
    if command == "bench":  # every suite spec field is an option too: the spec parser takes what argparse does not
        args, overrides = parser.parse_known_args(rest)
        return int(module.run(args, overrides) or 0)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
