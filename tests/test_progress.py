"""The job's progress display: stage lines with the elapsed time, a bar over each detector fit (epochs, ETA), and
nothing at all when the job is not shown (`--quiet`, library use)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mcam import progress
from mcam.suites.runner import StageClock
from mcam_detectors._lightning_fit import FaceDataset, FitSettings, fit_network


def _fit() -> None:
    faces = [np.full((4, 4), i, np.uint8) for i in range(12)]
    data = FaceDataset(faces, np.arange(12) % 2, lambda f: torch.tensor(np.stack(f), dtype=torch.float32).flatten(1))
    fit_network(nn.Linear(16, 2), data, loss=nn.functional.cross_entropy, device="cpu", what="toy",
                settings=FitSettings(epochs=3, batch_size=4, lr=0.01))


def test_stages_and_fits_are_shown_while_the_job_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.shown("loro"):
        clock = StageClock()
        clock.start("AU model")
        _fit()
        clock.stop()
    err = capsys.readouterr().err
    assert "[loro 00:00:0" in err and "] AU model" in err
    assert "training toy (seed 0, 12 faces)" in err and "9/9" in err and "epoch 3/3, loss " in err
    assert not progress.enabled()  # left as it was


def test_nothing_is_shown_outside_a_shown_job(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.shown("loro", enabled=False):
        StageClock().start("AU model")
        _fit()
    _fit()
    captured = capsys.readouterr()
    assert "AU model" not in captured.err + captured.out and "training toy" not in captured.err + captured.out


def test_a_status_bar_redraws_between_steps(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(progress, "STATUS_EVERY", 0.05)
    with progress.shown("loro"):
        bar = progress.bar(10, "fusion runs", "run", status=lambda: "2 stack(s) training, 3 waiting")
        time.sleep(0.3)  # no step: the bar still says what is going on
        bar.close()
    assert "2 stack(s) training, 3 waiting" in capsys.readouterr().err
