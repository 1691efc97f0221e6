"""Bad input never becomes a silent wrong result.

CLI and configs: a user mistake at the command line ends as one line `mcam <cmd>: error: ...` naming the
file/field/option, exit 2. Media inputs: truncated/tiny images, bboxes off the image, odd bit depths, bad clips,
and `mcam prepare` sample ids and split leaks end as a reject with its reason code, never a valid cue. Thin data,
checkpoints, manifests: manifest placeholders, data too thin to learn from and checkpoints for other cues are
refused (or warned about) before training or prediction.
"""
from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.accelerators.cuda import CUDAAccelerator

import fixtures_raw as fx
import mcam.cli.extract as cli_extract
from fusion_toy import toy_manifest, toy_tables
from mcam.cli.main import UsageError, main
from mcam.cues.extract import extract_cues, load_faces
from mcam.cues.pretrain import pretrain_detectors, stored_detectors
from mcam.cues.table import CueTable
from mcam.datasets import create_adapter
from mcam.datasets.prepare import PrepareOptions, prepare
from mcam.detector import InputKind
from mcam.errors import InputError
from mcam.faces import MIN_FACE_SIZE, FaceCropper, FaceError, checked_clip, load_clip, read_rgb
from mcam.fusion.api import build_network, train_fusion
from mcam.fusion.data import CueDataModule
from mcam.fusion.module import CUE_METADATA, FusionModule
from mcam.manifest import Manifest, ManifestError, load_manifest, save_manifest, validate
from mcam.registry import create_detector
from mcam.splits import train_val_split
from mcam.store import ArtifactStore
from mcam_detectors._lightning_fit import FaceDataset, FitSettings, fit_network
from mcam_detectors.au_svm import AUEmotionSVM
from tiny_detector import TinyDetector, TinyTrainable, write_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
HEADER = "sample_id,path,label,region,dataset,subject\n"


@pytest.fixture(autouse=True)
def _root_handlers():
    """Subcommands call logging.basicConfig: drop the handler it binds to this test's captured stderr.

    For every test of this file: it puts back the root logger's handlers as they were when the test started
    (pytest's own capture handlers included), so it only removes handlers a test added; a no-op for the rest.
    """
    before = list(logging.getLogger().handlers)
    yield
    logging.getLogger().handlers[:] = before


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """Run `mcam argv` in-process; assert exit 2 and exactly one stderr line holding every needle; return it."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    command = argv[0] if argv[0] in ("synth", "detectors", "pretrain", "extract", "prepare", "bench", "cache", "fit",
                                     "validate", "test", "predict") else ""
    assert lines[0].startswith(f"mcam {command}: error: " if command else "mcam: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# === CLI and configs ===============================================================================================
@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A small valid manifest (its files are not needed before extraction starts)."""
    path = tmp_path / "data" / "manifest.csv"
    path.parent.mkdir()
    path.write_text(HEADER + "".join(f"s{i},img/{i}.png,happy,r1,d,p{i}\n" for i in range(3)))
    return path


# --- one error path ---------------------------------------------------------------------------------------------
def test_unknown_command(capsys):
    fails(capsys, ["nosuch"], "unknown command 'nosuch'", "extract")


def test_missing_required_option_is_one_line(capsys):
    fails(capsys, ["extract", "--detectors", "macro"], "required", "--data")


def test_unknown_option_is_one_line(capsys, manifest):
    fails(capsys, ["extract", "--data", str(manifest), "--detectors", "macro", "--bogus", "1"], "--bogus")


def test_debug_flag_and_env_reraise(manifest, monkeypatch):
    argv = ["extract", "--data", str(manifest), "--detectors", "macro", "--batch-size", "0"]
    with pytest.raises(UsageError, match="--batch-size"):
        main(["--debug", *argv])
    monkeypatch.setenv("MCAM_DEBUG", "1")
    with pytest.raises(UsageError, match="--batch-size"):
        main(argv)


def test_bug_keeps_its_traceback(monkeypatch, manifest):
    """An exception that is not a user mistake is not turned into a one-liner."""
    monkeypatch.setattr(cli_extract, "load_manifest", lambda path: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["extract", "--data", str(manifest), "--detectors", "macro"])


def test_subprocess_prints_one_line_no_traceback(tmp_path):
    bad = tmp_path / "manifest.csv"
    bad.write_bytes((HEADER + "s1,img/1.png,happy,Réunion,d,p1\n").encode("latin-1"))
    done = subprocess.run([sys.executable, "-m", "mcam.cli.main", "extract", "--data", str(bad), "--detectors",
                           "macro"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert str(bad) in done.stderr and "UTF-8" in done.stderr


# --- CLI numbers and devices ------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--batch-size", "-8"), ("--batch-size", "0"), ("--threads", "0")])
def test_extract_numbers_range_checked(capsys, manifest, tmp_path, option, value):
    fails(capsys, ["extract", "--data", str(manifest), "--detectors", "macro", "--store", str(tmp_path / "s"),
                   option, value], option, value)
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_device_cuda_without_cuda(capsys, manifest, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails(capsys, ["extract", "--data", str(manifest), "--detectors", "macro", "--device", "cuda"],
          "--device", "CUDA is not available")


def test_device_index_beyond_visible_gpus(capsys, manifest, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    fails(capsys, ["extract", "--data", str(manifest), "--detectors", "macro", "--device", "cuda:3"],
          "cuda:3", "only 1 CUDA device")


def test_pretrain_numbers_range_checked(capsys, manifest, tmp_path):
    fails(capsys, ["pretrain", "--data", str(manifest), "--out", str(tmp_path / "o"), "--val-fraction", "1.5"],
          "--val-fraction", "1.5")


# --- files: encoding, separator, writability --------------------------------------------------------------------
def test_latin1_manifest_names_file_and_encoding(capsys, tmp_path):
    bad = tmp_path / "manifest.csv"
    bad.write_bytes((HEADER + "s1,img/1.png,happy,Réunion,d,p1\n").encode("latin-1"))
    fails(capsys, ["extract", "--data", str(bad), "--detectors", "macro"], str(bad), "not UTF-8", "re-save")


def test_semicolon_manifest_names_separator(capsys, tmp_path):
    bad = tmp_path / "manifest.csv"
    bad.write_text(HEADER.replace(",", ";") + "s1;img/1.png;happy;r1;d;p1\n")
    fails(capsys, ["extract", "--data", str(bad), "--detectors", "macro"], str(bad), "semicolon-separated",
          "comma-separated")


def test_semicolon_labels_file_for_prepare_csv(capsys, tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "labels.csv").write_text("path;label\na.png;happy\n")
    fails(capsys, ["prepare", "csv", "--root", str(root), "--out", str(tmp_path / "out"), "--no-progress"],
          "labels.csv", "semicolon-separated")


def test_unwritable_store_found_before_extraction(capsys, manifest, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    fails(capsys, ["extract", "--data", str(manifest), "--detectors", "macro", "--store", str(blocker / "store")],
          "cue cache", str(blocker / "store" / "cues"), "not writable")


def test_unwritable_synth_out_names_folder(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    fails(capsys, ["synth", "--out", str(blocker / "out"), "--config", str(CONFIGS / "synth/tiny.yaml")],
          str(blocker / "out"), "not writable")


def test_cache_prune_with_missing_results_folder(capsys, tmp_path):
    (tmp_path / "store").mkdir()
    fails(capsys, ["cache", "--store", str(tmp_path / "store"), "--prune", "--results", str(tmp_path / "nope")],
          "--results", str(tmp_path / "nope"))


# --- detector specs and weights ----------------------------------------------------------------------------------
def test_misspelt_detector_init_argument(capsys, manifest, tmp_path):
    spec = tmp_path / "detectors.yaml"
    spec.write_text("detectors:\n  au: {image_sise: 64}\n")
    line = fails(capsys, ["extract", "--data", str(manifest), "--spec", str(spec), "--store", str(tmp_path / "s")],
                 "detector 'au'", "image_sise", "image_size")
    assert "accepted" in line


def test_unknown_detector_name(capsys, manifest):
    fails(capsys, ["extract", "--data", str(manifest), "--detectors", "macro,nosuch"], "unknown detector 'nosuch'")


def test_corrupt_weights_file_named_by_detectors_command(capsys, tmp_path):
    corrupt = tmp_path / "vgg.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    fails(capsys, ["detectors", "--weights", str(corrupt)], str(corrupt), "not a readable MCAM detector checkpoint")


def test_non_checkpoint_pt_named_on_load(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(InputError, match=f"{other}: not an MCAM detector checkpoint"):
        create_detector("macro", device="cpu", weights=str(other)).load()


# --- synth configs -----------------------------------------------------------------------------------------------
def _synth_config(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((CONFIGS / "synth/tiny.yaml").read_text())
    data["regions"] = [str(CONFIGS / "synth" / r) for r in data["regions"]]
    data.update(changes)
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_synth_config_typo_names_file_and_key(capsys, tmp_path):
    config = _synth_config(tmp_path, subjects_per_regoin=3)
    fails(capsys, ["synth", "--out", str(tmp_path / "out"), "--config", str(config)], str(config),
          "subjects_per_regoin")
    assert not (tmp_path / "out").exists()


def test_synth_config_wrong_type(capsys, tmp_path):
    config = _synth_config(tmp_path, image_size="big")
    fails(capsys, ["synth", "--out", str(tmp_path / "out"), "--config", str(config)], str(config), "image_size")


def test_synth_config_negative_subjects(capsys, tmp_path):
    config = _synth_config(tmp_path, subjects_per_region=-3)
    fails(capsys, ["synth", "--out", str(tmp_path / "out"), "--config", str(config)], str(config),
          "subjects_per_region", "-3")


def test_synth_subjects_per_region_zero_is_refused(capsys, tmp_path):
    fails(capsys, ["synth", "--out", str(tmp_path / "out"), "--subjects-per-region", "0"],
          "--subjects-per-region", "0")


def test_region_file_typo_names_region_file(capsys, tmp_path):
    region = yaml.safe_load((CONFIGS / "synth/regions/east_asian.yaml").read_text())
    region["capture"]["yawn"] = region["capture"].pop("yaw")
    path = tmp_path / "east_asian.yaml"
    path.write_text(yaml.safe_dump(region))
    config = _synth_config(tmp_path, regions=[str(path)])
    fails(capsys, ["synth", "--out", str(tmp_path / "out"), "--config", str(config)], str(path), "yawn")


# --- suite specs -------------------------------------------------------------------------------------------------
def test_unknown_suite_lists_known(capsys):
    fails(capsys, ["bench", "nosuch"], "unknown suite 'nosuch'", "loro")


def test_unknown_profile_lists_profiles(capsys):
    fails(capsys, ["bench", "loro", "--profile", "smokey"], "no profile 'smokey'", "smoke")


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needles", [
    ("name: x\nseedz: [0]\n", ("seedz",)),
    ("name: x\ncue_sets: {A: 5}\n", ("cue_sets",)),
    ("name: x\ndata: {dir: data/x, synth_sed: 2}\n", ("data", "synth_sed")),
    ("name: x\nprotocol_args: {k: 5}\n", ("protocol_args", "'k'", "loro")),
    ("name: x\nbatch_size: -7\n", ("batch_size", "-7")),
])
def test_suite_spec_key_and_type_errors_before_work(capsys, tmp_path, text, needles):
    spec = _spec(tmp_path, text)
    fails(capsys, ["bench", "--config", str(spec), "--out", str(tmp_path / "out")], str(spec), *needles)
    assert not (tmp_path / "out").exists()


def test_suite_override_wrong_type(capsys, tmp_path):
    fails(capsys, ["bench", "loro", "--seeds", "[a]", "--out", str(tmp_path / "out")], "loro.yaml", "seeds")


# --- LightningCLI --------------------------------------------------------------------------------------------------
def test_fit_unknown_option_is_one_line(capsys):
    fails(capsys, ["fit", "--config", str(CONFIGS / "model/attention.yaml"), "--data.batch_sise", "8"],
          "--data.batch_sise")


def test_fit_negative_batch_size(capsys, tmp_path):
    fails(capsys, ["fit", "--config", str(CONFIGS / "model/attention.yaml"), "--data.data_dir", str(tmp_path),
                   "--data.batch_size", "-7", "--trainer.logger", "false"], "data.batch_size", "-7")


@pytest.mark.parametrize("text, needles", [
    ("name: x\nmodels: [attentoin]\n", ("models", "attentoin")),
    ("name: x\nfusion_overrides: {trainer.max_epoch: 3}\n", ("fusion_overrides", "trainer.max_epoch")),
    ("name: x\ndata: {dirs: [nowhere]}\n", ("data.dirs", "nowhere/manifest.csv")),
])
def test_suite_spec_checked_against_its_files_before_work(capsys, tmp_path, text, needles):
    spec = _spec(tmp_path, text)
    fails(capsys, ["bench", "--config", str(spec), "--out", str(tmp_path / "out")], str(spec), *needles)
    assert not (tmp_path / "out").exists()


def test_suite_gpu_accelerator_without_cuda(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = _spec(tmp_path, "name: x\naccelerator: gpu\n")
    fails(capsys, ["bench", "--config", str(spec), "--out", str(tmp_path / "out")], str(spec), "accelerator",
          "CUDA is not available")


def test_fit_accelerator_cuda_without_cuda(capsys, tmp_path, monkeypatch):
    manifest = toy_manifest(n=56)
    save_manifest(manifest, tmp_path / "manifest.csv")
    for name, table in toy_tables(manifest).items():
        table.save(tmp_path / "cues" / f"{name}.npz")
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    fails(capsys, ["fit", "--config", str(CONFIGS / "model/attention.yaml"), "--data.data_dir", str(tmp_path),
                   "--data.cue_dir", str(tmp_path / "cues"), "--trainer.accelerator", "cuda",
                   "--trainer.logger", "false"], "CUDAAccelerator", "accelerator")


# --- prepare and pretrain -------------------------------------------------------------------------------------------
def test_prepare_missing_root(capsys, tmp_path):
    fails(capsys, ["prepare", "jaffe", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
          "--root", str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()


def test_prepare_config_typo_names_file_and_key(capsys, tmp_path):
    (tmp_path / "raw").mkdir()
    config = tmp_path / "jaffe.yaml"
    config.write_text("dataset: jaffe\nsise: 64\n")
    fails(capsys, ["prepare", "jaffe", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                   "--config", str(config)], str(config), "sise")
    assert not (tmp_path / "out").exists()


def test_prepare_size_range_checked(capsys, tmp_path):
    (tmp_path / "raw").mkdir()
    fails(capsys, ["prepare", "jaffe", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                   "--size", "0"], "--size", "0")


def test_pretrain_unwritable_out(capsys, manifest, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    fails(capsys, ["pretrain", "--data", str(manifest), "--out", str(blocker / "out"), "--region", "all"],
          str(blocker / "out"), "not writable")


def test_malformed_yaml_names_file_and_line(capsys, tmp_path):
    spec = _spec(tmp_path, "name: x\nseeds: [0, 1\nworkers: 1\n")
    fails(capsys, ["bench", "--config", str(spec)], str(spec), "not valid YAML at line")


# === media inputs ==================================================================================================
# --- helpers -------------------------------------------------------------------------------------------------------
def face_rgb(size: int = 96) -> np.ndarray:
    return cv2.cvtColor(fx.face(0, size), cv2.COLOR_BGR2RGB)


def write_truncated_jpeg(path: Path) -> Path:
    """A real face JPEG with its second half cut off (OpenCV decodes it with a grey bottom half)."""
    fx.write(path, fx.face(0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def manifest_of(root: Path, rows: list[dict]) -> Manifest:
    """A manifest over files already under root (label/region/... filled in)."""
    base = {"label": "happy", "region": "r1", "dataset": "t", "subject": "p1"}
    table = pd.DataFrame([{**base, "sample_id": f"s{i}", **row} for i, row in enumerate(rows)])
    return Manifest(table, root)


def reason_of(error: str | None) -> str | None:
    """The reason code of a load_faces error ('<code>: <detail>')."""
    return None if error is None else error.split(": ", 1)[0]


def prepare_csv(tmp_path: Path, lines: list[str], **options) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    summary = prepare(create_adapter("csv", raw), out, PrepareOptions(region="r1", **options), progress=False)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return manifest, pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False), summary


# --- images ---------------------------------------------------------------------------------------
def test_truncated_jpeg_is_rejected_not_a_cue(tmp_path):
    write_truncated_jpeg(tmp_path / "cut.jpg")
    fx.write(tmp_path / "ok.jpg", fx.face(1))
    manifest = manifest_of(tmp_path, [{"path": "cut.jpg", "bbox": "0 0 96 96"}, {"path": "ok.jpg", "bbox": "0 0 96 96"}])
    table = extract_cues(manifest, {"tiny": TinyDetector()}, tmp_path / "cache", progress=False)["tiny"]
    assert list(table.valid) == [False, True]
    rejects = list(csv.DictReader(next((tmp_path / "cache").rglob("*.rejects.csv")).open()))
    assert [(r["sample_id"], r["reason"]) for r in rejects] == [("s0", "truncated_image")]
    assert "cut.jpg" in rejects[0]["detail"]


def test_truncated_jpeg_is_rejected_by_prepare_without_detector(tmp_path):
    raw = tmp_path / "raw"
    write_truncated_jpeg(raw / "cut.jpg")
    fx.write(raw / "ok.png", fx.face(1))
    table, rejects, _ = prepare_csv(tmp_path, ["path,label", "cut.jpg,happy", "ok.png,sad"], detector="none", size=48)
    assert list(table.label) == ["sad"]
    assert list(zip(rejects.source, rejects.reason)) == [("labels.csv:row 2", "truncated_image")]


def test_one_pixel_image_is_face_too_small_in_extraction(tmp_path):
    fx.write(tmp_path / "dot.png", np.full((1, 1, 3), 200, np.uint8))
    manifest = manifest_of(tmp_path, [{"path": "dot.png", "bbox": "0 0 128 128"}, {"path": "dot.png", "bbox": ""}])
    faces, errors = load_faces(manifest, InputKind.IMAGE)
    assert faces == [None, None]
    assert [reason_of(e) for e in errors] == ["face_too_small", "face_too_small"]
    assert "1x1" in errors[0] and "dot.png" in errors[0]


def test_small_face_box_is_face_too_small(tmp_path):
    image = face_rgb()
    small = MIN_FACE_SIZE - 1
    with pytest.raises(FaceError, match=f"{small}x{small}") as caught:
        FaceCropper()(image, f"10 10 {small} {small}", source="x.png")
    assert caught.value.reason == "face_too_small"
    assert FaceCropper()(image, f"10 10 {MIN_FACE_SIZE} {MIN_FACE_SIZE}").shape == (MIN_FACE_SIZE, MIN_FACE_SIZE, 3)


def test_one_pixel_and_tiny_images_are_rejected_by_prepare(tmp_path):
    raw = tmp_path / "raw"
    fx.write(raw / "dot.png", np.full((1, 1, 3), 200, np.uint8))
    fx.write(raw / "thumb.png", fx.face(0, 8))
    fx.write(raw / "ok.png", fx.face(1))
    lines = ["path,label", "dot.png,happy", "thumb.png,happy", "ok.png,sad"]
    table, rejects, _ = prepare_csv(tmp_path, lines, detector="none", size=48)
    assert list(table.label) == ["sad"]
    assert list(zip(rejects.source, rejects.reason)) == [("labels.csv:row 2", "face_too_small"),
                                                         ("labels.csv:row 3", "face_too_small")]


@pytest.mark.parametrize("bbox", ["500 500 64 64", "-200 -200 64 64", "80 80 64 64"])
def test_bbox_outside_the_image_is_rejected(tmp_path, bbox):
    """Entirely outside (either side) or mostly outside: the crop would be replicated border pixels."""
    with pytest.raises(FaceError, match="outside the 96x96 image") as caught:
        FaceCropper()(face_rgb(), bbox, source="img.png")
    assert caught.value.reason == "bbox_outside_image"


def test_bbox_partly_outside_is_still_cropped():
    crop = FaceCropper()(face_rgb(), "50 50 64 64")  # 46x46 of 64x64 inside (52%): padded at the border
    assert crop.shape == (64, 64, 3)


def test_bbox_outside_the_image_is_rejected_by_prepare_and_extraction(tmp_path):
    raw = tmp_path / "raw"
    fx.write(raw / "a.png", fx.face(0))
    fx.write(raw / "b.png", fx.face(1))
    lines = ["path,label,bbox", "a.png,happy,300 300 60 60", "b.png,sad,10 10 60 60"]
    table, rejects, _ = prepare_csv(tmp_path, lines, detector="none", size=48)
    assert list(table.label) == ["sad"]
    assert list(zip(rejects.source, rejects.reason)) == [("labels.csv:row 2", "bbox_outside_image")]
    faces, errors = load_faces(manifest_of(raw, [{"path": "a.png", "bbox": "300 300 60 60"}]), InputKind.IMAGE)
    assert faces == [None] and reason_of(errors[0]) == "bbox_outside_image"


def test_image_bit_depths_and_channels_are_scaled_not_wrapped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    cv2.imwrite(str(tmp_path / "grey16.png"), ramp)
    grey16 = read_rgb(tmp_path / "grey16.png")
    assert grey16.dtype == np.uint8 and grey16.shape == (64, 64, 3)
    np.testing.assert_array_equal(grey16[..., 0], (ramp >> 8).astype(np.uint8))  # wrapping would give ramp % 256
    assert grey16[-1, -1, 0] == 255 and (grey16[..., 0] == grey16[..., 2]).all()

    colour = np.dstack([ramp, ramp // 2, ramp // 4]).astype(np.uint16)  # written as BGR
    cv2.imwrite(str(tmp_path / "rgb16.png"), colour)
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgb16.png"), (colour[..., ::-1] >> 8).astype(np.uint8))

    rgb = face_rgb(32)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "grey8.png"), grey)
    np.testing.assert_array_equal(read_rgb(tmp_path / "grey8.png"), np.repeat(grey[..., None], 3, axis=-1))
    rgba = np.dstack([rgb[..., ::-1], np.full((32, 32), 40, np.uint8)])  # BGRA with a mostly transparent alpha
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgb)


def test_image_decode_errors_are_quiet_and_named(tmp_path, capfd):
    """No OpenCV/libpng lines on stderr; the reject itself says what is wrong with which file."""
    fx.write_corrupt(tmp_path / "corrupt.png")
    png = (tmp_path / "ok.png")
    fx.write(png, fx.face(0))
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    capfd.readouterr()
    reasons = {}
    for name in ("corrupt.png", "cut.png", "missing.png"):
        with pytest.raises(FaceError, match=name) as caught:
            read_rgb(tmp_path / name)
        reasons[name] = caught.value.reason
    stderr = capfd.readouterr().err
    assert reasons == {"corrupt.png": "unreadable", "cut.png": "truncated_image", "missing.png": "unreadable"}
    assert "WARN" not in stderr and "libpng" not in stderr and "ERROR" not in stderr


# --- clips ----------------------------------------------------------------------------------------
def test_float_clip_in_unit_range_is_scaled_to_255(tmp_path):
    clip = np.random.default_rng(0).random((8, 32, 32)).astype(np.float64)
    clip[0, 0, 0], clip[0, 0, 1] = 0.0, 1.0
    np.save(tmp_path / "float.npy", clip)
    loaded = load_clip(tmp_path / "float.npy")
    assert loaded.dtype == np.uint8 and loaded.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(loaded[..., 1], np.rint(clip * 255).astype(np.uint8))
    assert loaded.max() == 255 and loaded.mean() > 100  # not cast to zeros


@pytest.mark.parametrize("values, dtype", [
    (300, np.int16),     # would wrap to 44
    (-5, np.int16),      # would wrap to 251
    (70000, np.int32),
    (2.0, np.float64),   # float beyond [0, 1]
    (255.0, np.float32),  # 0..255 floats are not assumed
    (np.nan, np.float32),
])
def test_clip_values_outside_the_pixel_range_are_rejected(tmp_path, values, dtype):
    clip = np.zeros((8, 32, 32), dtype=dtype)
    clip[3, 5, 5] = values
    np.save(tmp_path / "c.npy", clip)
    with pytest.raises(FaceError, match=r"c\.npy.*values") as caught:
        load_clip(tmp_path / "c.npy")
    assert caught.value.reason == "clip_bad_range"


def test_integer_clip_within_uint8_range_is_kept():
    clip = np.arange(8 * 16 * 16, dtype=np.int16).reshape(8, 16, 16) % 256
    np.testing.assert_array_equal(checked_clip(clip, "c")[..., 0], clip.astype(np.uint8))


@pytest.mark.parametrize("shape", [(8, 64, 4), (8, 64, 3), (8, 32, 32, 2), (8, 32, 32, 3, 1), (64,)])
def test_clip_with_a_bad_shape_is_rejected(shape):
    with pytest.raises(FaceError, match=r"expected \[T, H, W\]") as caught:
        checked_clip(np.zeros(shape, np.uint8), "clip.npy")
    assert caught.value.reason == "clip_bad_shape"


def test_short_and_tiny_clips_are_rejected(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((1, 32, 32), np.uint8))
    np.save(tmp_path / "tiny.npy", np.zeros((8, 2, 2), np.uint8))
    frames = tmp_path / "frames"
    fx.write(frames / "0001.png", fx.face(0, 32))
    with pytest.raises(FaceError) as one:
        load_clip(tmp_path / "one.npy")
    with pytest.raises(FaceError, match="2x2") as tiny:
        load_clip(tmp_path / "tiny.npy")
    with pytest.raises(FaceError) as folder:
        load_clip(frames)
    assert (one.value.reason, tiny.value.reason, folder.value.reason) == ("clip_too_short", "clip_too_small",
                                                                         "clip_too_short")


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage", b"not numpy at all", "truncated"])
def test_corrupt_npy_is_clip_unreadable(tmp_path, content):
    path = tmp_path / "bad.npy"
    if content == "truncated":
        np.save(path, np.zeros((8, 32, 32), np.uint8))
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(FaceError, match="bad.npy") as caught:
        load_clip(path)
    assert caught.value.reason == "clip_unreadable"


def test_bad_clips_become_reject_rows_in_extraction(tmp_path):
    fx.write(tmp_path / "still.png", fx.face(0, 32))
    np.save(tmp_path / "wrap.npy", np.full((8, 32, 32), 300, np.int16))
    np.save(tmp_path / "unit.npy", np.full((8, 32, 32), 0.5))
    np.save(tmp_path / "one.npy", np.zeros((1, 32, 32), np.uint8))
    rows = [{"path": "still.png", "bbox": "0 0 32 32", "clip": name} for name in ("wrap.npy", "unit.npy", "one.npy", "")]
    clips, errors = load_faces(manifest_of(tmp_path, rows), InputKind.CLIP)
    assert [reason_of(e) for e in errors] == ["clip_bad_range", None, "clip_too_short", None]
    assert (clips[1] == 128).all() and clips[3].shape == (8, 32, 32, 3)  # 0.5 -> 128; no clip: the still repeated


def test_short_and_tiny_clip_folders_are_rejected_by_prepare(tmp_path):
    raw = tmp_path / "raw"
    fx.write(raw / "one" / "0001.png", fx.face(0))
    for i in range(3):
        fx.write(raw / "tiny" / f"{i:04d}.png", fx.face(i, 4))
        fx.write(raw / "good" / f"{i:04d}.png", fx.face(i))
    lines = ["path,label", "one,happy", "tiny,happy", "good,sad"]
    table, rejects, _ = prepare_csv(tmp_path, lines, detector="none", clip_size=32)
    assert list(table.label) == ["sad"]
    assert list(zip(rejects.source, rejects.reason)) == [("labels.csv:row 2", "clip_too_short"),
                                                         ("labels.csv:row 3", "clip_too_small")]


@pytest.mark.parametrize("option, value", [("size", 8), ("clip_size", 4), ("clip_frames", 1)])
def test_prepare_sizes_under_the_minimum_are_an_input_error(option, value):
    """Crops or clips that `mcam extract` would reject every one of are refused up front, naming the option."""
    with pytest.raises(InputError, match=f"^{option}: {value} is under the minimum"):
        PrepareOptions(region="r1", **{option: value})


# --- prepare: sample ids and splits -------------------------------------------------------------
def test_prepare_csv_gives_distinct_files_distinct_ids(tmp_path):
    raw = tmp_path / "raw"
    names = ["with space.png", "with_space.png", "日本.png", "中国.png", "x.png", "x.jpg"]
    for i, name in enumerate(names):
        fx.write(raw / name, fx.face(i))
    table, rejects, summary = prepare_csv(tmp_path, ["path,label", *(f"{n},happy" for n in names)], detector="none",
                                          size=32)
    assert rejects.empty and summary.samples == 6
    assert table.sample_id.is_unique and table.subject.is_unique  # each row its own subject, still
    # unicode kept; the second of two inputs whose names give one id gets a hash of its path appended
    expected = ["csv-with_space", "csv-with_space-[0-9a-f]{8}", "csv-日本", "csv-中国", "csv-x", "csv-x-[0-9a-f]{8}"]
    assert all(re.fullmatch(pattern, sample_id) for pattern, sample_id in zip(expected, table.sample_id, strict=True))
    for path in table.path:
        assert (tmp_path / "out" / path).is_file()


def test_prepare_csv_same_file_or_same_given_id_twice_is_a_duplicate(tmp_path):
    raw = tmp_path / "raw"
    fx.write(raw / "a.png", fx.face(0))
    fx.write(raw / "b.png", fx.face(1))
    lines = ["path,label,sample_id", "a.png,happy,", "a.png,sad,", "a.png,happy,k1", "b.png,sad,k1"]
    table, rejects, _ = prepare_csv(tmp_path, lines, detector="none", size=32)
    assert list(table.sample_id) == ["csv-a", "k1"]
    assert list(zip(rejects.source, rejects.reason)) == [("labels.csv:row 3", "duplicate_sample"),
                                                         ("labels.csv:row 5", "duplicate_sample")]


def test_prepare_warns_naming_subjects_in_more_than_one_split(tmp_path, caplog):
    raw = tmp_path / "raw"
    for i in range(4):
        fx.write(raw / f"{i}.png", fx.face(i))
    lines = ["path,label,subject,split", "0.png,happy,p1,train", "1.png,sad,p1,test", "2.png,happy,p2,train",
             "3.png,sad,p2,train"]
    with caplog.at_level(logging.WARNING, logger="mcam"):
        _, _, summary = prepare_csv(tmp_path, lines, detector="none", size=32)
    assert len(summary.warnings) == 1 and "csv-p1 (test/train)" in summary.warnings[0]
    assert "csv-p2" not in summary.warnings[0]
    assert "csv-p1 (test/train)" in caplog.text and "1 subject(s) in more than one split" in caplog.text


# === thin data, checkpoints, manifests =============================================================================
# --- manifest: placeholders and empty cells -----------------------------------------------------------
@pytest.mark.parametrize("row, column", [
    ("b,b.png,sad,NaN,d,s2", "region"),  # read as text 'NaN': was a fifth region
    ("b,b.png,sad,,d,s2", "region"),  # an empty cell
    ("b,b.png,sad,r1,d,", "subject"),
    ("b,b.png,,r1,d,s2", "label"),
    ("b,b.png,sad,r1,None,s2", "dataset"),
    ("b,b.png,sad,r1,d,null", "subject"),
])
def test_manifest_missing_values_name_file_row_and_column(tmp_path: Path, row: str, column: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "a,a.png,happy,r1,d,s1\n" + row + "\n")
    with pytest.raises(ManifestError, match=rf"m\.csv, row 3, column '{column}': .*(empty value|missing value)"):
        load_manifest(path)


def test_manifest_nan_from_a_dataframe_and_real_codes_kept(tmp_path: Path) -> None:
    table = pd.DataFrame({"sample_id": ["a", "b"], "path": ["a.png", "b.png"], "label": ["happy", "sad"],
                          "region": ["r1", float("nan")], "dataset": ["d", "d"], "subject": ["NA", "KA"]})
    with pytest.raises(ManifestError, match=r"row 3, column 'region': empty value"):
        save_manifest(table, tmp_path)
    with pytest.raises(ManifestError, match=r"row 3, column 'region': 'nan' stands for a missing value"):
        validate(table.assign(region=table["region"].map(str)), source="prepared.csv")  # str(NaN): "nan"
    assert list(load_manifest(save_manifest(table.assign(region="NA"), tmp_path)).table["subject"]) == ["NA", "KA"]
    assert issubclass(ManifestError, InputError)


# --- detector pre-training: thin data refused before any training -------------------------------------
CLASSES = {"tiny": TinyDetector, "tinytrain": TinyTrainable}


@pytest.fixture
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("mcam.cues.pretrain.detector_class", CLASSES.__getitem__)
    monkeypatch.setattr("mcam.cues.pretrain.create_detector", lambda name, **cfg: CLASSES[name](**cfg))
    monkeypatch.setattr("mcam.cues.extract.create_detector", lambda name, **cfg: CLASSES[name](**cfg))
    TinyTrainable.seen.clear()
    return write_dataset(tmp_path / "data", n_subjects=6, per_subject=2)


def _relabel(manifest, root: Path, **columns: object):
    save_manifest(manifest.table.assign(**columns), root / "manifest.csv")
    return load_manifest(root)


def test_pretrain_one_class_refused_before_training(tiny_data, tmp_path: Path) -> None:
    manifest = _relabel(tiny_data, tiny_data.root, label="happy")
    with pytest.raises(InputError, match=r"training \['tinytrain'\] on 6 rows \(region 'western_posed'\) of "
                                         r".*manifest\.csv: every training row \(\d+\) is class 'happy'; at least two"):
        pretrain_detectors(manifest, ["tinytrain"], tmp_path / "lam", train=["tinytrain"], region="western_posed")
    assert not TinyTrainable.seen and not (tmp_path / "lam").exists()
    store = ArtifactStore(tmp_path / "store")  # the suites' and GAM's path: nothing stored either
    with pytest.raises(InputError, match="is class 'happy'"):
        stored_detectors(store, manifest, ["tinytrain"], ["tinytrain"], epochs=1)
    assert not TinyTrainable.seen and not list((tmp_path / "store").glob("detectors/*"))


def test_pretrain_one_subject_needs_val_fraction_zero(tiny_data, tmp_path: Path) -> None:
    manifest = _relabel(tiny_data, tiny_data.root, subject="only-one")
    with pytest.raises(InputError, match=r"one subject \('only-one'\) in the training rows; a subject-disjoint "
                                         r"validation part needs at least two subjects; val_fraction 0"):
        pretrain_detectors(manifest, ["tinytrain"], tmp_path / "lam", train=["tinytrain"], region="western_posed")
    assert not TinyTrainable.seen
    pretrain_detectors(manifest, ["tinytrain"], tmp_path / "lam", train=["tinytrain"], region="western_posed",
                       val_fraction=0.0)  # asked for no val part: trains
    assert len(TinyTrainable.seen) == 1


def test_pretrain_warns_for_a_val_class_never_trained(tiny_data, tmp_path: Path) -> None:
    table = tiny_data.table
    subjects = sorted(table["subject"].unique())
    # every subject 'happy' or 'sad', except one subject whose rows are 'fear'; that subject is drawn for val
    _, val = train_val_split(tiny_data, 0.2, seed=0)
    held = set(val.table["subject"])
    labels = np.where(table["subject"].isin(held), "fear", np.where(np.arange(len(table)) % 2, "happy", "sad"))
    manifest = _relabel(tiny_data, tiny_data.root, label=labels)
    with pytest.warns(UserWarning, match=r"classes 'fear' \(\d+ rows\) are in val/test but not in the training rows"):
        pretrain_detectors(manifest, ["tinytrain"], tmp_path / "lam", train=["tinytrain"], epochs=1)
    assert len(TinyTrainable.seen) == 1 and len(subjects) == 6


def test_detector_fit_helpers_refuse_one_class_and_warn_constant_svm() -> None:
    model = torch.nn.Linear(3, 7)
    before = model.weight.detach().clone()
    with pytest.raises(InputError, match=r"Linear: 5 training targets .*every training row \(5\) is class '3'"):
        fit_network(model, FaceDataset([np.zeros(3, np.float32)] * 5, torch.full((5,), 3), torch.as_tensor),
                    loss=torch.nn.functional.cross_entropy, settings=FitSettings(epochs=1, batch_size=2, lr=0.1),
                    device="cpu")
    assert torch.equal(model.weight, before)  # refused before any step
    with pytest.warns(UserWarning, match=r"fewer than two classes have two or more training rows.*'happy'"):
        AUEmotionSVM().fit(np.zeros((3, 20)), ["happy", "happy", "sad"])


# --- fusion fit: thin data refused in the data module's setup -------------------------------------
def _fit(manifest: pd.DataFrame, **kw: object):
    return train_fusion(toy_tables(manifest), manifest, max_epochs=1, **kw)


def test_fit_on_one_class_refused_not_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = toy_manifest(n=80).assign(label="happy")
    with pytest.raises(InputError, match=r"the given manifest \(split 'subject', target 'canonical7'\): every "
                                         r"training row \(\d+\) is class 'happy'"):
        _fit(manifest)
    root = tmp_path / "data"
    save_manifest(manifest, root / "manifest.csv")
    for name, table in toy_tables(manifest).items():
        table.save(root / "cues" / f"{name}.npz")
    fails(capsys, ["fit", "--config", str(CONFIGS / "model/attention.yaml"),
                   "--config", str(CONFIGS / "trainer/cpu_fast.yaml"), "--data.data_dir", str(root),
                   "--data.cue_dir", str(root / "cues"), "--trainer.max_epochs", "1",
                   "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
          f"{root / 'manifest.csv'} (split 'subject'", "class 'happy'")
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("subjects, pattern", [
    (1, r"one subject \('r-s0'\) in the training rows; a subject-disjoint validation part needs at least two"),
    (2, r"the validation part is empty \(2 training subjects\), so early stopping .*data\.val_fraction"),
])
def test_fit_without_a_validation_part_refused(subjects: int, pattern: str) -> None:
    manifest = toy_manifest(n=80).assign(region="r")
    manifest["subject"] = [f"r-s{i % subjects}" for i in range(len(manifest))]
    with pytest.raises(InputError, match=pattern):
        _fit(manifest)


def test_fit_warns_for_a_test_class_absent_from_training() -> None:
    manifest = toy_manifest(n=120)
    subjects = sorted(manifest["subject"].unique())  # subject-disjoint parts: train, val, test, train, ...
    parts = manifest["subject"].map({s: ("train", "val", "test")[i % 3] for i, s in enumerate(subjects)}).to_numpy()
    manifest = manifest.assign(split=parts)
    manifest.loc[(manifest["label"] == "fear") & (manifest["split"] != "test"), "label"] = "sad"
    with pytest.warns(UserWarning, match=r"classes 'fear' \(\d+ rows\) are in val/test but not in the training"):
        result = _fit(manifest, split={"split": "manifest"})
    assert len(result.predictions) == (parts == "test").sum()


def test_empty_predict_part_named() -> None:
    manifest = toy_manifest(n=80)
    data = CueDataModule.from_tables(toy_tables(manifest), manifest.assign(split="train").assign(
        split=np.where(np.arange(80) % 4, "train", "val")), split="manifest")
    with pytest.raises(InputError, match=r"the given manifest: the 'test' part is empty \(split 'manifest'\)"):
        data.predict_dataloader()


# --- checkpoints carry cue names/dims, detector fingerprints, normalisation and classes -------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    manifest = toy_manifest(n=120)
    run = tmp_path_factory.mktemp("fusion")
    result = train_fusion(toy_tables(manifest), manifest, max_epochs=2, log_dir=run)
    return manifest, result


def _predict(manifest: pd.DataFrame, tables: dict[str, CueTable], checkpoint: Path, **kw: object):
    data = CueDataModule.from_tables(tables, manifest, predict_split="all", **kw)
    module = FusionModule(build_network("attention", data))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(module, datamodule=data, ckpt_path=str(checkpoint))
    return data, torch.cat([o["probs"] for o in outputs])


def test_checkpoint_stores_cues_fingerprints_normalisation_classes(trained) -> None:
    manifest, result = trained
    saved = torch.load(result.checkpoint, map_location="cpu", weights_only=True)[CUE_METADATA]
    assert saved["cue_dims"] == result.data.cue_dims and saved["class_names"] == result.data.class_names
    assert saved["fingerprints"] == {c: f"fp-{c}" for c in result.data.cue_names}
    tables, train = toy_tables(manifest), result.data.metadata()["part"] == "train"
    rows = result.data.metadata().loc[train, "sample_id"].to_numpy()
    macro = tables["macro"].align(rows).values
    torch.testing.assert_close(saved["normalisation"]["macro"]["mean"], torch.from_numpy(macro.mean(0)))


def test_predict_uses_the_checkpoints_training_statistics(trained) -> None:
    manifest, result = trained
    tables = toy_tables(manifest)
    saved = torch.load(result.checkpoint, weights_only=True)[CUE_METADATA]["normalisation"]["vgg"]["mean"]
    _, same = _predict(manifest, tables, result.checkpoint)
    # other rows make the training part (seed 7), so this data's own statistics differ: the checkpoint's are used
    own = CueDataModule.from_tables(tables, manifest, seed=7).cue_metadata()["normalisation"]["vgg"]["mean"]
    assert not torch.allclose(own, saved)
    data, probs = _predict(manifest, tables, result.checkpoint, seed=7)
    assert data.cue_metadata()["normalisation"]["vgg"]["mean"].equal(saved)
    torch.testing.assert_close(probs, same)


def test_predict_refuses_cues_from_other_detector_weights(trained) -> None:
    manifest, result = trained
    tables = toy_tables(manifest)
    tables["macro"].fingerprint = "fp-macro-retrained"  # same cue names and dims, other weights
    with pytest.raises(InputError, match=r"checkpoint .*best\.ckpt was trained on cues from other detector weights "
                                         r"than the given manifest .*macro: checkpoint fp-macro, data "
                                         r"fp-macro-retrained"):
        _predict(manifest, tables, result.checkpoint)


def test_predict_refuses_another_cue_set_naming_both(trained) -> None:
    manifest, result = trained
    tables = toy_tables(manifest, vgg_dim=16)
    del tables["au"]
    with pytest.raises(InputError, match=r"best\.ckpt was trained on cues \[vgg \(48\), au \(12\), micro_plus \(4\), "
                                         r"macro \(7\)\]; the given manifest with tables given to from_tables gives "
                                         r"\[vgg \(16\), micro_plus \(4\), macro \(7\)\]"):
        _predict(manifest, tables, result.checkpoint)


def test_older_checkpoint_without_metadata_warns_then_checks_shapes(trained, tmp_path: Path) -> None:
    manifest, result = trained
    checkpoint = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    del checkpoint[CUE_METADATA]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match="has no cue metadata"):
        _predict(manifest, toy_tables(manifest), old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(InputError, match=r"old\.ckpt holds weights for other cues or classes .*in the checkpoint"):
            _predict(manifest, toy_tables(manifest, vgg_dim=16), old)


def test_mcam_predict_with_other_detector_weights_exits_2(trained, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    manifest, result = trained
    root = tmp_path / "data"
    save_manifest(manifest, root / "manifest.csv")
    for name, table in toy_tables(manifest).items():
        table.fingerprint = f"other-{name}"
        table.save(root / "cues" / f"{name}.npz")
    args = ["predict", "--config", str(CONFIGS / "model/attention.yaml"), "--config",
            str(CONFIGS / "trainer/cpu_fast.yaml"), "--data.data_dir", str(root), "--data.cue_dir", str(root / "cues"),
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
            "--ckpt_path", str(result.checkpoint)]
    fails(capsys, args,  # cue_dir lists the cues by name: another order than the checkpoint's
          "cues in the order ['vgg', 'au', 'micro_plus', 'macro']",
          "gives ['au', 'macro', 'micro_plus', 'vgg']: pass data.cues vgg,au,micro_plus,macro")
    fails(capsys, [*args, "--data.cues", "vgg,au,micro_plus,macro"], "other detector weights",
          f"cue_dir {root / 'cues'}", "checkpoint fp-au, data other-au")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "tensor"])
def test_mcam_predict_with_a_corrupt_or_foreign_checkpoint_names_the_file(
        trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object) -> None:
    manifest, _ = trained
    root = tmp_path / "data"
    save_manifest(manifest, root / "manifest.csv")
    for name, table in toy_tables(manifest).items():
        table.save(root / "cues" / f"{name}.npz")
    bad = tmp_path / "bad.ckpt"
    if content == "tensor":
        torch.save(torch.zeros(3), bad)
    else:
        bad.write_bytes(content)
    fails(capsys, ["predict", "--config", str(CONFIGS / "model/attention.yaml"), "--config",
                   str(CONFIGS / "trainer/cpu_fast.yaml"), "--data.data_dir", str(root), "--data.cue_dir",
                   str(root / "cues"), "--trainer.logger", "false", "--ckpt_path", str(bad)],
          f"ckpt_path {bad}", "no state_dict" if content == "tensor" else "not a readable checkpoint")
