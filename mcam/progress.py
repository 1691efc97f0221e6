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
import threading
import time
from typing import Callable, Iterator

from tqdm import tqdm

STATUS_EVERY = 5.0  # seconds between a status bar's redraws
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


def bar(total: int, desc: str, unit: str, show: bool | None = None,
        status: Callable[[], str] | None = None) -> tqdm:
    """A progress bar with its rate and ETA (disabled unless `show`, or, when None, unless the job is shown).

    With `status`, the bar also redraws every few seconds with `status()` beside it, so work whose steps are long
    (a fusion stack of 30 members) shows what it is doing and its clock moving between steps."""
    shown_now = enabled() if show is None else show
    return _StatusBar(status, total=total, desc=desc, unit=unit, disable=not shown_now, dynamic_ncols=True,
                      mininterval=1.0)


class _StatusBar(tqdm):
    """tqdm that redraws every STATUS_EVERY seconds with a status text beside it (until closed)."""

    def __init__(self, status: Callable[[], str] | None, **kw: object) -> None:
        super().__init__(**kw)
        self._stopped = threading.Event()
        if status is not None and not self.disable:
            threading.Thread(target=self._redraw, args=(status,), daemon=True, name="mcam-progress").start()

    def _redraw(self, status: Callable[[], str]) -> None:
        while not self._stopped.wait(STATUS_EVERY):
            self.set_postfix_str(status())

    def close(self) -> None:
        self._stopped.set()
        super().close()
