"""Atomic file writes: readers see the old file or the complete new one, never half of it.

`write_atomic(path, data)` writes text or bytes; `atomic_output(path)` yields a temporary path for
writers that need one (np.savez, torch.save, DataFrame.to_csv, cv2.imwrite) and renames it onto
`path` when the block finishes without error (removes it otherwise). The temporary file lives in
the target's folder (same file system, so the rename is atomic), has a unique name from
`tempfile` (two processes never share one) and ends with the target's suffix (np.savez appends
'.npz' to a name without it; cv2.imwrite picks the format from it).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from mcam.errors import InputError

__all__ = ["atomic_output", "ensure_writable", "write_atomic"]

_UMASK = os.umask(0o022)  # read once (the only way to read it portably), then restored
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    Creates `path`'s parent folders. The temporary file exists (empty) when yielded; writers overwrite it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(handle)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600: give the final file the usual permissions
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write `data` (str as UTF-8, or bytes) to `path` atomically, creating parent folders; returns the path."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_output(target) as tmp:
        tmp.write_bytes(payload)
    return target


def ensure_writable(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create `folder` if needed and prove a file can be written in it, before long work starts; an InputError
    naming the folder (and `what` it is for) otherwise."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path, prefix=".mcam-write-test.")
        os.close(handle)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"{what} {path}: not writable ({reason}); choose another folder or fix its permissions") from None
    return path
