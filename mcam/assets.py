"""Files that ship with the library: configs, suite specs and research protocols.

In the checkout they stay at the top level (`configs/`, `benchmarks/*.yaml`, `experiments/`);
an install carries them as the package data `mcam.configs`, `mcam.suite_specs` and
`mcam.experiments` (pyproject.toml maps the folders). Callers name an asset by its path in the
checkout, e.g. `asset_path("configs/detectors/default.yaml")`, and get a real file either way:
from a wheel or `pip install --target` (importlib.resources), from an editable install or a plain
checkout (setuptools' editable finder cannot expose a package nested under another package's
folder, so there the checkout folder is used).

Relative paths written inside specs and configs (`synth_config: configs/synth/default.yaml`)
go through `resolve_path`: a file that exists relative to the working directory wins, else the
packaged asset.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import os
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from mcam.errors import InputError, UnknownNameError

__all__ = ["UnknownSuiteError", "asset_path", "find_suite", "list_suites", "load_yaml", "parse_config",
           "resolve_path", "ASSET_FOLDERS"]
T = TypeVar("T")

# top-level folder in the checkout -> package it is installed as
ASSET_FOLDERS: dict[str, str] = {"configs": "mcam.configs", "benchmarks": "mcam.suite_specs",
                                 "experiments": "mcam.experiments"}
SUITE_FOLDERS: tuple[str, ...] = ("benchmarks", "experiments")  # searched in this order by find_suite
_CHECKOUT = Path(__file__).resolve().parent.parent


class UnknownSuiteError(UnknownNameError):
    """No suite spec of that name; the message lists the known ones."""


def _folder(top: str) -> Path:
    """The folder holding the assets of checkout folder `top` (installed package data or the checkout)."""
    if top not in ASSET_FOLDERS:
        raise ValueError(f"unknown asset folder {top!r}; assets live under {', '.join(ASSET_FOLDERS)}")
    try:
        root = importlib.resources.files(ASSET_FOLDERS[top])
    except ModuleNotFoundError:  # editable install or plain checkout: the top-level folder itself
        checkout = _CHECKOUT / top
        if checkout.is_dir():
            return checkout
        raise FileNotFoundError(f"MCAM's {top}/ assets are neither installed ({ASSET_FOLDERS[top]}) "
                                f"nor next to the package ({checkout})") from None
    # a namespace package gives a MultiplexedPath; joinpath('.') yields a real path under its first location
    folder = root if isinstance(root, Path) else Path(str(root.joinpath(".")))
    return folder.resolve()


def asset_path(relative: str) -> Path:
    """The installed file for a checkout-relative path such as 'configs/synth/default.yaml'.

    FileNotFoundError when there is no such asset; ValueError when the path does not start
    with one of the asset folders (configs/, benchmarks/, experiments/).
    """
    parts = PurePosixPath(str(relative).replace(os.sep, "/")).parts
    if not parts or parts[0] not in ASSET_FOLDERS or ".." in parts or PurePosixPath(*parts).is_absolute():
        raise ValueError(f"asset path {relative!r} must be relative and start with one of "
                         f"{', '.join(f'{t}/' for t in ASSET_FOLDERS)}")
    path = _folder(parts[0]).joinpath(*parts[1:])
    if not path.exists():
        raise FileNotFoundError(f"no packaged asset {relative!r} (looked at {path})")
    return path


def resolve_path(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None,
                 asset_base: str | None = None) -> Path:
    """Where a path named in a spec or config points.

    Absolute: itself. Relative, the first that exists of: `base/path` (`base`: the folder of the
    file that names it, when given), `path` relative to the working directory, the packaged asset
    `<asset_base>/path` (e.g. asset_base='configs/synth' for the region files a synth config
    names), the packaged asset `<base's place among the assets>/path`, the packaged asset `path`.
    FileNotFoundError listing the places tried otherwise.
    """
    given = Path(path)
    if given.is_absolute():
        return given
    tried = []
    if base is not None:
        candidate = Path(base) / given
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    if given.exists():
        return given
    tried.append(str(Path.cwd() / given))
    prefixes = [asset_base, _asset_relative(Path(base)) if base is not None else None, None]
    names = [(PurePosixPath(p) / given.as_posix()).as_posix() if p else given.as_posix() for p in prefixes]
    for name in dict.fromkeys(names):
        try:
            return asset_path(name)
        except (ValueError, FileNotFoundError):
            tried.append(f"packaged {name}")
    raise FileNotFoundError(f"{path}: not found (tried {'; '.join(tried)})")


def _asset_relative(folder: Path) -> str | None:
    """`folder` as a checkout-relative asset path ('configs/synth'), or None when it is no asset folder."""
    folder = folder.resolve()
    for top in ASSET_FOLDERS:
        try:
            inside = folder.relative_to(_folder(top))
        except (ValueError, FileNotFoundError):
            continue
        return (PurePosixPath(top) / inside.as_posix()).as_posix()
    return None


def _suite_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in SUITE_FOLDERS:
        try:
            folder = _folder(top)
        except FileNotFoundError:
            continue
        for spec in sorted(folder.glob("*.yaml")):
            found.setdefault(spec.stem, spec)  # benchmarks/ before experiments/
    return found


def list_suites() -> list[str]:
    """Names of the packaged suite specs (benchmarks/*.yaml and experiments/*.yaml), sorted."""
    return sorted(_suite_files())


def find_suite(name: str) -> Path:
    """The packaged spec of suite `name`: benchmarks/<name>.yaml, else experiments/<name>.yaml.

    UnknownSuiteError (a KeyError) listing the known suite names otherwise.
    """
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    suites = _suite_files()
    if stem not in suites:
        raise UnknownSuiteError(f"unknown suite {name!r}; known suites: {', '.join(sorted(suites)) or 'none'} "
                                f"(or pass a spec file with --config PATH)")
    return suites[stem]


def load_yaml(path: str | os.PathLike[str], error: type[InputError] = InputError) -> Any:
    """A YAML file's content (None when empty); an `error` naming the file, line and problem when it is no YAML."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise error(f"{path}: not valid YAML{where} ({getattr(err, 'problem', None) or err})") from None


def parse_config(cls: type[T], data: Any, source: str | os.PathLike[str], overrides: list[str] | None = None,
                 error: type[InputError] = InputError) -> T:
    """Dataclass `cls` built from a config file's mapping `data` (then command-line style `overrides`, e.g.
    `--seeds '[0,1]'`), checked by jsonargparse against the field types: an unknown key, a wrong type or a
    missing field is an `error` naming `source` and the key."""
    from jsonargparse import ArgumentParser

    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}, "
                    f"got {type(data).__name__}")
    parser = ArgumentParser(exit_on_error=False, prog=str(source))
    parser.add_class_arguments(cls)
    try:
        namespace = parser.parse_object(data)
        if overrides:
            namespace = parser.parse_args(list(overrides), namespace=namespace)
    except Exception as err:  # jsonargparse's ArgumentError: names the key and the expected type
        raise error(f"{source}: {' '.join(str(err).split())}") from None
    try:
        return cls(**namespace.as_dict())
    except (ValueError, TypeError) as err:  # the dataclass's own checks (__post_init__): ranges, choices
        raise error(f"{source}: {err}") from None
