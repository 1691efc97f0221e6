"""A benchmark suite end to end on prepared real-layout fixtures: a JAFFE-like and a CK+-like tree as two regions."""
from __future__ import annotations

from pathlib import Path

import cv2
import pandas as pd

import fixtures_raw as fx
from mcam.datasets import create_adapter
from mcam.datasets.prepare import PrepareOptions, prepare
from mcam.suites.runner import run_suite
from mcam.suites.spec import SuiteSpec

JAFFE_SUBJECTS = ("KA", "KM", "NA", "YM")
JAFFE_CODES = ("HA", "SU", "AN", "NE")
CK_SUBJECTS = ("S005", "S010", "S011", "S022")
CK_EMOTIONS = (("001", 5), ("002", 7))  # happy, surprise


def _jaffe(root: Path) -> Path:
    for s, subject in enumerate(JAFFE_SUBJECTS):
        for c, code in enumerate(JAFFE_CODES):
            image = cv2.cvtColor(fx.face(s + c), cv2.COLOR_BGR2GRAY)
            fx.write(root / "jaffe" / f"{subject}.{code}1.{100 + 10 * s + c}.tiff", image)
    return root


def _ckplus(root: Path) -> Path:
    for s, subject in enumerate(CK_SUBJECTS):
        for sequence, code in CK_EMOTIONS:
            for frame in range(1, 4):
                fx.write(root / "cohn-kanade-images" / subject / sequence / f"{subject}_{sequence}_{frame:08d}.png",
                         fx.face(s + frame))
            emotion = root / "Emotion" / subject / sequence / f"{subject}_{sequence}_00000003_emotion.txt"
            emotion.parent.mkdir(parents=True, exist_ok=True)
            emotion.write_text(f"   {code:.7e}\n")
    return root


def test_suite_on_prepared_jaffe_and_ckplus(tmp_path: Path) -> None:
    jaffe, ckplus = tmp_path / "jaffe", tmp_path / "ckplus"
    prepare(create_adapter("jaffe", _jaffe(tmp_path / "raw_jaffe")), jaffe, PrepareOptions(region="japanese"),
            progress=False)
    prepare(create_adapter("ckplus", _ckplus(tmp_path / "raw_ck")), ckplus,
            PrepareOptions(region="western", clip_size=32, clip_frames=8), progress=False)
    spec = SuiteSpec(name="real_fixture", protocol="loro", data={"dirs": [str(jaffe), str(ckplus)]},
                     source_region="western", detectors=["micro", "macro_cnn", "macro"],
                     pretrain=["micro", "macro_cnn"], pretrain_epochs=1, detector_seeds=[0],
                     modes=["lam", "gam"], gam_epochs=1, models=["attention", "late_average"], single_cue_models=[],
                     seeds=[0], max_epochs=3, patience=2, store=str(tmp_path / "store"), min_test_subjects=1)
    report = run_suite(spec, tmp_path / "suite", progress=False)
    results = pd.read_csv(tmp_path / "suite" / "results.csv")
    assert sorted(results["fold"].unique()) == ["japanese", "western"]
    assert len(results) == 2 * 2 * 2  # folds x modes x models
    assert set(results["mode"]) == {"lam", "gam"}
    # CK+ subjects that pre-trained the detectors are never scored
    western = pd.read_csv(tmp_path / "suite" / results[results["fold"] == "western"]["run_dir"].iloc[0] / "predictions.csv")
    pretrain_subjects = set(pd.read_csv(ckplus / "manifest.csv").query("split != 'test'")["subject"])
    assert not set(western["subject"]) & pretrain_subjects
    assert "japanese" in report.read_text()
