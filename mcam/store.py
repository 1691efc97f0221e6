"""One content-addressed store for derived artifacts: trained detectors, cue tables and fold tables.

Every entry lives under `root/<kind>/<key>`, where the key hashes what made it (data content,
configs, base weights' content, training rows, settings, seed) and nothing else: no absolute
paths, no modification times, so a copied store keeps its keys. An entry is built once, in a
temporary sibling folder, under a per-entry lock, and renamed into place complete; after that it
is never modified. Any number of suites, profiles and `mcam fit` runs may share one store, also
in parallel. Cue tables (`root/cues/`) follow the same rules through `mcam.cues.store.CueStore`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from mcam.io import write_atomic

ENTRY = "entry.json"  # written last inside an entry: its presence means the entry is complete
KINDS = ("detectors", "folds", "cues")


def default_store_root() -> Path:
    """The artifact store used when none is named: `$MCAM_STORE`, else `outputs/store` under the working folder."""
    return Path(os.environ.get("MCAM_STORE") or "outputs/store")


def content_key(made_from: Mapping[str, Any]) -> str:
    """The key of an artifact: a hash of the canonical JSON of what made it."""
    text = json.dumps(made_from, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held while inside (blocks until free); released when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Entry:
    """One stored artifact: kind, key, folder, bytes on disk and the record of what made it."""

    kind: str
    key: str
    path: Path
    size: int
    made_from: dict[str, Any]
    depends_on: tuple[str, ...]  # '<kind>/<key>' of entries this one was built from


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ArtifactStore:
    """Content-addressed, write-once artifacts under `root` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get(self, kind: str, key: str) -> Path | None:
        """The entry's folder when it is complete, else None."""
        path = self.path(kind, key)
        return path if (path / ENTRY).is_file() else None

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A store-wide lock by name (one per entry being built)."""
        return file_lock(self.root / ".locks" / f"{name.replace('/', '-')}.lock")

    def build(self, kind: str, made_from: Mapping[str, Any], make: Callable[[Path], Any],
              depends_on: tuple[str, ...] = ()) -> Path:
        """The entry for `made_from`, built by `make(folder)` the first time; returns its folder.

        `make` writes into an empty temporary folder beside the final one (relative paths from it
        to other entries therefore stay valid after the rename). Concurrent builders of the same
        entry wait for the first; a killed builder leaves only a temporary folder, cleaned up by
        the next build or `mcam cache --prune`.
        """
        key = content_key(made_from)
        done = self.get(kind, key)
        if done is not None:
            return done
        with self.lock(f"{kind}-{key}"):
            done = self.get(kind, key)
            if done is not None:
                return done
            final = self.path(kind, key)
            scratch = final.with_name(f".tmp-{key}-{os.getpid()}")
            shutil.rmtree(scratch, ignore_errors=True)
            if final.exists():  # an incomplete leftover (no entry.json): never used, safe to replace
                shutil.rmtree(final)
            scratch.mkdir(parents=True)
            try:
                make(scratch)
                write_atomic(scratch / ENTRY, json.dumps({"kind": kind, "key": key, "made_from": made_from,
                                                          "depends_on": list(depends_on)},
                                                         indent=2, sort_keys=True, default=str))
                os.rename(scratch, final)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
        return final

    # --- listing and pruning ---------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every complete entry: built folders, and cue tables (`cues/<data>/<detector>.npz` with a sidecar)."""
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if not folder.is_dir():
                continue
            if kind == "cues":
                for npz in sorted(folder.glob("*/*.npz")):
                    if npz.name.endswith(".partial.npz") or npz.name.startswith("."):  # unfinished writes
                        continue
                    sidecar = npz.with_suffix(".json")
                    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
                    size = npz.stat().st_size + sum(p.stat().st_size for p in (sidecar, npz.with_suffix(".rejects.csv"))
                                                    if p.is_file())
                    found.append(Entry("cues", f"{npz.parent.name}/{npz.stem}", npz, size, meta,
                                       tuple(meta.get("depends_on", ()))))
                continue
            for path in sorted(p for p in folder.iterdir() if (p / ENTRY).is_file()):
                record = json.loads((path / ENTRY).read_text())
                found.append(Entry(kind, path.name, path, _size(path), record.get("made_from", {}),
                                   tuple(record.get("depends_on", ()))))
        return found

    def leftovers(self) -> list[Path]:
        """Temporary folders of builds that never finished (killed builders)."""
        if not self.root.is_dir():
            return []
        return sorted({*(p for kind in KINDS for p in (self.root / kind).glob(".tmp-*")),
                       *(self.root / "cues").glob("*/.*.tmp*")})  # an atomic write killed midway

    def prune(self, referenced: set[str], dry_run: bool = False) -> list[Entry]:
        """Remove entries that no referenced entry needs ('<kind>/<key>' ids, dependencies followed)."""
        entries = {f"{e.kind}/{e.key}": e for e in self.entries()}
        keep: set[str] = set()
        todo = [r for r in referenced if r in entries]
        while todo:
            ident = todo.pop()
            if ident not in keep:
                keep.add(ident)
                todo += [d for d in entries[ident].depends_on if d in entries]
        removed = [e for ident, e in entries.items() if ident not in keep]
        if not dry_run:
            for entry in removed:
                if entry.kind == "cues":
                    for suffix in (".npz", ".json", ".rejects.csv"):
                        entry.path.with_suffix(suffix).unlink(missing_ok=True)
                else:
                    shutil.rmtree(entry.path)
            for path in self.leftovers():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return removed
