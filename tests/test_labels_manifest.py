"""Label maps (data) and manifest validation errors that name row and column."""
from __future__ import annotations

import pandas as pd
import pytest

from mcam.labels import CANONICAL, UnknownLabelError, dataset_map, head_map, to_canonical
from mcam.manifest import ManifestError, load_manifest, save_manifest, validate


def _table(**overrides: list) -> pd.DataFrame:
    data = {"sample_id": ["a", "b"], "path": ["a.png", "b.png"], "label": ["happy", "sad"],
            "region": ["r1", "r1"], "dataset": ["d", "d"], "subject": ["s1", "s2"]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_head_maps() -> None:
    assert head_map("macro6").classes == ("angry", "fear", "happy", "sad", "surprise", "neutral")
    assert head_map("macro6").target("disgust") is None and head_map("macro6").index("disgust") == -1
    assert head_map("micro3").target("happy") == "positive"
    assert head_map("micro3").target("neutral") is None
    assert head_map("micro4").index("neutral") == 3
    assert head_map("fer2013").classes == CANONICAL
    for name in ("canonical7", "fer2013", "macro6", "micro3", "micro4"):
        assert set(head_map(name).mapping) == set(CANONICAL)
    with pytest.raises(UnknownLabelError):
        head_map("micro3").target("contempt")


def test_dataset_maps() -> None:
    assert to_canonical("jaffe", "HA") == "happy"
    assert to_canonical("fer2013", 6) == "neutral"
    assert to_canonical("ckplus", 2) is None  # contempt: out of scope
    assert set(v for v in dataset_map("jaffe").values()) == set(CANONICAL)
    with pytest.raises(UnknownLabelError, match="XX"):
        to_canonical("jaffe", "XX")


@pytest.mark.parametrize("overrides, pattern", [
    ({"label": ["happy", "joy"]}, r"row 3, column 'label': unknown label 'joy'"),
    ({"sample_id": ["a", "a"]}, r"row 3, column 'sample_id': duplicate"),
    ({"subject": ["s1", ""]}, r"row 3, column 'subject': empty"),
    ({"bbox": ["0 0 10 10", "0 0 ten 10"]}, r"row 3, column 'bbox'"),
    ({"split": ["train", "holdout"]}, r"row 3, column 'split'"),
    ({"AU12": [0.5, "high"]}, r"row 3, column 'AU12'"),
])
def test_validation_names_row_and_column(overrides: dict, pattern: str) -> None:
    with pytest.raises(ManifestError, match=pattern):
        validate(_table(**overrides), source="m.csv")


def test_missing_column() -> None:
    with pytest.raises(ManifestError, match="missing required columns \\['subject'\\]"):
        validate(_table().drop(columns="subject"))


def test_roundtrip_and_fingerprint(tmp_path) -> None:
    path = save_manifest(_table(AU12=[0.5, 0.1]), tmp_path)
    manifest = load_manifest(tmp_path)
    assert path.name == "manifest.csv" and len(manifest) == 2 and manifest.au_columns == ["AU12"]
    changed = load_manifest(save_manifest(_table(AU12=[0.5, 0.2]), tmp_path / "b"))
    assert manifest.fingerprint() != changed.fingerprint()
    assert manifest.fingerprint() == load_manifest(path).fingerprint()


def test_fingerprint_sees_column_names_and_file_changes(tmp_path) -> None:
    import os

    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"y")
    path = save_manifest(_table(), tmp_path)
    manifest = load_manifest(path)
    first = manifest.fingerprint()
    renamed = manifest.table.rename(columns={"region": "group"})  # same values, another column name
    assert manifest.__class__(renamed, tmp_path).fingerprint() != first
    os.utime(tmp_path / "a.png", ns=(1, 1))  # touched, same bytes: the same data
    assert load_manifest(path).fingerprint() == first
    (tmp_path / "a.png").write_bytes(b"z")  # same table, the face file's content changed
    assert load_manifest(path).fingerprint() != first


def test_fingerprint_names_how_faces_are_found_only_where_they_must_be(tmp_path, monkeypatch) -> None:
    """Rows without a bbox are cut by extraction's face finder: another way of finding or aligning faces makes
    other crops, so another fingerprint (cached cues and detectors are not reused); rows with boxes are unaffected."""
    from mcam.faces import FaceCropper

    found = save_manifest(_table(bbox=["", "0 0 8 8"]), tmp_path / "found")
    boxed = save_manifest(_table(bbox=["0 0 8 8", "0 0 8 8"]), tmp_path / "boxed")
    before = {path: load_manifest(path).fingerprint() for path in (found, boxed)}
    monkeypatch.setattr(FaceCropper, "describe", lambda self: "another finder or alignment")
    assert load_manifest(found).fingerprint() != before[found]
    assert load_manifest(boxed).fingerprint() == before[boxed]
