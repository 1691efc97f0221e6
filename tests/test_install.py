"""A real, non-editable install of the repo: from any folder, the installed copy finds its configs, suite specs
and detector plugins (package data and entry points), never the source checkout.

The install goes into a temporary `--target` folder with the venv's setuptools (no dependencies, no
index, no build isolation: no network). The checks run with `python -S` and PYTHONPATH = that folder
+ the venv's site-packages: without site processing the venv's editable install (a .pth finder) is
never loaded, so nothing can silently fall back to the checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "mcam", "detectors", "configs", "experiments", "benchmarks")
BUILT_INS = ("au", "macro", "macro_cnn", "mesh", "mesh_au", "micro", "micro_plus", "openface", "pyfeat_au", "vgg")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo installed (non-editable) into a temporary --target folder."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: the in-tree build writes build/ and *.egg-info, and must not see old ones
    source.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    target = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--no-compile", "--disable-pip-version-check", "--quiet", "--target", str(target),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return target


def _installed_python(site: Path, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    paths = dict.fromkeys([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


CHECKS = r"""
import contextlib, io, json, sys
from importlib.metadata import entry_points
import mcam, mcam_detectors
from mcam.assets import asset_path, find_suite, list_suites, resolve_path
from mcam.fusion.data import default_detector_spec
from mcam.synth.generate import DEFAULT_CONFIG, SynthConfig
try:
    find_suite("no_such_suite")
    unknown = None
except KeyError as err:
    unknown = str(err)
eps = entry_points(group="mcam.detectors")
classes = {ep.name: ep.load() for ep in eps}
tiny = SynthConfig.from_yaml("configs/synth/tiny.yaml")
from mcam.cli.main import main
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    main(["detectors"])  # `mcam detectors`, in this process (one interpreter start, one torch import)
print(json.dumps({
    "files": [mcam.__file__, mcam_detectors.__file__, str(asset_path("configs/detectors/default.yaml")),
              str(asset_path("configs/synth/default.yaml")), str(find_suite("loro")), str(find_suite("within_region")),
              str(default_detector_spec()), str(resolve_path(DEFAULT_CONFIG)),
              *[sys.modules[c.__module__].__file__ for c in classes.values()]],
    "loaded": sorted({m.__file__ for n, m in list(sys.modules.items())
                      if n.split(".")[0] in ("mcam", "mcam_detectors") and getattr(m, "__file__", None)}),
    "suites": list_suites(), "unknown": unknown, "entry_points": sorted(classes),
    "ep_dists": sorted({str(ep.dist.locate_file("")) for ep in eps}), "regions": [r.name for r in tiny.regions],
    "detectors_listing": listing.getvalue(),
    "configs": sorted(p.relative_to(asset_path("configs")).as_posix() for p in asset_path("configs").rglob("*.yaml")),
}))
"""


@pytest.fixture(scope="module")
def found(site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the installed copy reports about itself, run from an empty folder."""
    done = _installed_python(site, ["-c", CHECKS], cwd=tmp_path_factory.mktemp("empty"))
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_installed_copy_finds_assets_and_detectors(site: Path, found: dict) -> None:
    for path in [*found["files"], *found["loaded"], *found["ep_dists"]]:
        assert Path(path).resolve().is_relative_to(site.resolve()), f"{path} is not the installed copy"
    assert found["configs"] == sorted(p.relative_to(REPO / "configs").as_posix()
                                      for p in (REPO / "configs").rglob("*.yaml"))
    shipped_suites = sorted({p.stem for folder in ("benchmarks", "experiments") for p in (REPO / folder).glob("*.yaml")})
    assert found["suites"] == shipped_suites and "loro" in found["suites"]
    assert "known suites: " in found["unknown"] and "loro" in found["unknown"]
    assert found["entry_points"] == sorted(BUILT_INS)
    assert found["regions"] == ["western_posed", "east_asian", "suppressed_neg", "latin_wild"]
    assert not list((site / "mcam" / "suite_specs").glob("*.md"))  # only the specs' YAML ships from benchmarks/


def test_installed_cli_lists_the_built_in_detectors(found: dict) -> None:
    names = {line.split()[0] for line in found["detectors_listing"].splitlines()[1:] if line.strip()}
    assert set(BUILT_INS) <= names


def test_installed_bench_smoke_runs_from_an_empty_folder(site: Path, tmp_path: Path) -> None:
    """`mcam bench loro --profile smoke` with nothing but the installed package: specs and configs from package data."""
    out = tmp_path / "smoke"
    _installed_python(site, ["-m", "mcam.cli.main", "bench", "loro", "--profile", "smoke", "--out", str(out), "--quiet"],
                      cwd=tmp_path, timeout=900)
    assert (out / "results.csv").exists() and (out / "report.md").exists()
    assert (tmp_path / "data" / "synth_tiny" / "manifest.csv").exists()
