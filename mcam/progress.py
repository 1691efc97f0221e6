"""What a long job shows while it works: a line as each stage starts (with the job's elapsed time) and a bar with
an ETA for each long step inside it (rendering, detector training, extraction, fusion stacks).

Whoever runs a job for a user (`mcam bench`, `mcam pretrain`) turns the display on with `shown()`; code deep in
the job (a detector's training loop) asks `enabled()` instead of threading a flag through every call. Bars write
to stderr, so results on stdout stay clean.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from typing import Iterator

from tqdm import tqdm

_SHOWN: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar("mcam_progress", default=None)


@contextlib.contextmanager
def shown(job: str, enabled: bool = True) -> Iterator[None]:
    """Show the progress of `job` (a name such as 'loro') inside this block, when `enabled`."""
    token = _SHOWN.set((job, time.monotonic()) if enabled else None)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def enabled() -> bool:
    """Whether the running job shows its progress."""
    return _SHOWN.get() is not None


def announce(text: str) -> None:
    """One line naming what the job starts now, with the job's elapsed time (nothing when not shown)."""
    job = _SHOWN.get()
    if job is not None:
        name, since = job
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - since))
        tqdm.write(f"[{name} {elapsed}] {text}", file=sys.stderr)


def bar(total: int, desc: str, unit: str, show: bool | None = None) -> tqdm:
    """A progress bar with its rate and ETA (disabled unless `show`, or, when None, unless the job is shown)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled() if show is None else show),
                dynamic_ncols=True, mininterval=1.0)
