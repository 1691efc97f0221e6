"""The synthetic regional face generator: valid output, determinism, distinct emotions and regions, disjoint splits."""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from mcam.labels import CANONICAL
from mcam.manifest import check_files, load_manifest
from mcam.synth.generate import SynthConfig, generate
from mcam.synth.mesh import AU_NAMES, load_mesh_model
from mcam.synth.render import FaceRenderer, RenderParams

from conftest import TINY_CONFIG


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "synth_config.yaml"}


def test_manifest_is_complete(tiny_synth: Path) -> None:
    manifest = load_manifest(tiny_synth, check_paths=True)
    table = manifest.table
    assert len(manifest.regions) >= 4
    assert set(table["label"]) == set(CANONICAL)
    assert (table.groupby("region")["subject"].nunique() == 4).all()
    assert manifest.au_columns == list(AU_NAMES)
    assert table[manifest.au_columns].to_numpy().min() >= 0 and table[manifest.au_columns].to_numpy().max() <= 1
    assert (tiny_synth / "contact_sheet.png").stat().st_size > 10_000
    clip = np.load(tiny_synth / table["clip"].iloc[0])
    micro = np.load(tiny_synth / table["micro_clip"].iloc[0])
    assert clip.shape == (8, 64, 64) and micro.shape == (8, 64, 64) and clip.dtype == np.uint8
    assert set(table["micro_label"]) == {"positive", "negative", "surprise", "neutral"}
    # sequences start neutral and peak in the middle; micro clips are low-intensity
    assert np.abs(clip[0].astype(int) - clip[-1].astype(int)).mean() < np.abs(clip[0].astype(int) - clip[3].astype(int)).mean() + 1


def test_subjects_never_cross_splits(tiny_synth: Path) -> None:
    table = load_manifest(tiny_synth).table
    assert (table.groupby("subject")["split"].nunique() == 1).all()
    for _, rows in table.groupby("region"):
        assert set(rows["split"]) == {"train", "val", "test"}
        # tiny.yaml: 4 subjects per region, val 0.25, test 0.25 -> 1 val, 1 test, 2 train subjects
        assert rows.drop_duplicates("subject")["split"].value_counts().to_dict() == {"train": 2, "val": 1, "test": 1}


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", TINY_CONFIG, seed=3, subjects_per_region=1, workers=1, progress=False).parent
    b = generate(tmp_path / "b", TINY_CONFIG, seed=3, subjects_per_region=1, workers=2, progress=False).parent
    c = generate(tmp_path / "c", TINY_CONFIG, seed=4, subjects_per_region=1, workers=1, progress=False).parent
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    check_files(load_manifest(a))


def test_every_emotion_renders_a_different_face() -> None:
    config = SynthConfig.from_yaml(TINY_CONFIG)
    renderer = FaceRenderer(load_mesh_model())
    for region in config.regions:
        images = {e: renderer.render(region.prototype(e), RenderParams(size=96)).astype(float) for e in CANONICAL}
        for e1, e2 in itertools.combinations(CANONICAL, 2):
            assert np.abs(images[e1] - images[e2]).mean() > 0.3, (region.name, e1, e2)


def test_regions_differ() -> None:
    regions = SynthConfig.from_yaml(TINY_CONFIG).regions
    for r1, r2 in itertools.combinations(regions, 2):
        p1 = np.stack([r1.prototype(e) for e in CANONICAL])
        p2 = np.stack([r2.prototype(e) for e in CANONICAL])
        assert np.abs(p1 - p2).sum() > 1.0, (r1.name, r2.name)  # not a relabelled copy
        assert r1.capture != r2.capture


def test_region_yaml_errors_name_the_file(tmp_path: Path) -> None:
    from mcam.synth.regions import Region, RegionConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndisplay_rules: {prototypes: {happy: {AU99: 1}}}\ncapture: {}\nsubjects: {}\n")
    with pytest.raises(RegionConfigError, match="bad.yaml"):
        Region.from_yaml(bad)
