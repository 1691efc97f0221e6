"""`mcam bench SUITE`: run a benchmark suite (default spec: benchmarks/<SUITE>.yaml) and write its report."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="loro", help="suite name (benchmarks/<name>.yaml, experiments/<name>.yaml)")
    parser.add_argument("--config", default=None, help="suite spec YAML (overrides the name lookup)")
    parser.add_argument("--profile", default=None, help="named profile inside the spec, e.g. smoke")
    parser.add_argument("--out", default=None, help="output folder (default outputs/<suite>[-<profile>])")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mcam.suites.runner import SuiteMismatchError, quiet_lightning, run_suite
    from mcam.suites.spec import SuiteSpec, resolve_suite

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[mcam] %(message)s"))
    logging.getLogger("mcam").addHandler(handler)
    logging.getLogger("mcam").setLevel(logging.INFO)
    quiet_lightning()
    path = resolve_suite(args.suite, args.config)
    spec = SuiteSpec.load(path, args.profile)
    out = Path(args.out or f"outputs/{spec.name}{'-' + args.profile if args.profile else ''}")
    out.mkdir(parents=True, exist_ok=True)
    command = ["mcam", "bench", args.suite, "--config", str(path), "--out", str(out)]
    if args.profile:
        command += ["--profile", args.profile]
    (out / "command.txt").write_text(shlex.join(command) + "\n")
    try:
        report = run_suite(spec, out, progress=not args.quiet)
    except SuiteMismatchError as err:
        print(f"mcam bench: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    print(report.read_text(), file=sys.stdout)
    return 0
