"""`mcam bench SUITE [--field value ...]`: run a benchmark suite (a shipped or given spec) and write its report."""
from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="loro",
                        help="suite name (shipped benchmarks/<name>.yaml, experiments/<name>.yaml) or a spec file")
    parser.add_argument("--config", default=None, help="suite spec YAML (overrides the name lookup)")
    parser.add_argument("--profile", default=None, help="named profile inside the spec, e.g. smoke")
    parser.add_argument("--out", default=None, help="output folder (default outputs/<suite>[-<profile>])")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.epilog = ("Any spec field can be overridden after these: --seeds '[0,1]' --workers 1 "
                     "--data.dir data/other --fusion_overrides '{trainer.max_epochs: 20}'.")


def run(args: argparse.Namespace, overrides: list[str] | None = None) -> int:
    from mcam.io import ensure_writable
    from mcam.quiet import quiet_lightning
    from mcam.suites.runner import run_suite
    from mcam.suites.spec import SuiteSpec, check_environment, resolve_suite

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[mcam] %(message)s"))
    logging.getLogger("mcam").addHandler(handler)
    logging.getLogger("mcam").setLevel(logging.INFO)
    quiet_lightning()
    overrides = list(overrides or [])
    path = resolve_suite(args.suite, args.config)
    spec = SuiteSpec.load(path, args.profile, overrides)
    check_environment(spec, path)
    out = Path(args.out or f"outputs/{spec.name}{'-' + args.profile if args.profile else ''}")
    ensure_writable(out, "suite output folder (--out)")
    ensure_writable(spec.store, f"artifact store (store: in {path})")
    command = ["mcam", "bench", args.suite, "--out", str(out)]
    command += ["--config", str(args.config)] if args.config else []
    command += ["--profile", args.profile] if args.profile else []
    report = run_suite(spec, out, progress=not args.quiet, command=shlex.join(command + overrides))
    print(f"report: {report}")
    print(report.read_text())
    return 0
