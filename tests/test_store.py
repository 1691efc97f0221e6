"""The content-addressed artifact store: built once (also under concurrent builders), never modified,
portable keys, listed and pruned by what results refer to."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pandas as pd

from mcam.cli.main import main
from mcam.manifest import load_manifest
from mcam.store import ArtifactStore, content_key
from tiny_detector import write_dataset


def _slow_build(root: str, marker: str) -> str:
    def make(folder: Path) -> None:
        with open(marker, "a") as handle:
            handle.write("built\n")
        time.sleep(1.0)
        (folder / "payload.txt").write_text("made once")

    return str(ArtifactStore(root).build("detectors", {"what": "x"}, make))


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    marker = tmp_path / "calls.txt"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.starmap(_slow_build, [(str(tmp_path / "store"), str(marker))] * 2)
    assert paths[0] == paths[1] and marker.read_text() == "built\n"
    assert (Path(paths[0]) / "payload.txt").read_text() == "made once"
    assert not list((tmp_path / "store" / "detectors").glob(".tmp-*"))


def test_failed_build_leaves_nothing_and_keys_are_content(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    try:
        store.build("detectors", {"a": 1}, broken)
    except RuntimeError:
        pass
    assert store.get("detectors", content_key({"a": 1})) is None and not store.leftovers()
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1}) != content_key({"a": 2})


def test_manifest_fingerprint_is_content_not_place_or_time(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "a", n_subjects=2, per_subject=2)
    copy = tmp_path / "b"
    copy.mkdir()
    for file in data.root.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())  # new mtimes, another folder
    assert load_manifest(copy).fingerprint() == data.fingerprint()
    image = copy / data.table["path"].iloc[0]
    image.write_bytes(image.read_bytes()[::-1])
    assert load_manifest(copy).fingerprint() != data.fingerprint()


def test_cache_lists_and_prunes_what_no_result_uses(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    store = ArtifactStore(tmp_path / "store")
    used = store.build("detectors", {"n": 1}, lambda f: (f / "w.pt").write_bytes(b"1" * 1000))
    base = store.build("detectors", {"n": 0}, lambda f: (f / "w.pt").write_bytes(b"0" * 1000))
    store.build("detectors", {"n": 2}, lambda f: (f / "w.pt").write_bytes(b"2" * 1000))
    record = json.loads((used / "entry.json").read_text())  # `used` was adapted from `base`
    record["depends_on"] = [f"detectors/{base.name}"]
    (used / "entry.json").write_text(json.dumps(record))
    results = tmp_path / "outputs" / "suite"
    results.mkdir(parents=True)
    pd.DataFrame({"run_id": ["r"], "detectors_key": [f"detectors/{used.name}"]}).to_csv(results / "results.csv")

    assert main(["cache", "--store", str(store.root)]) == 0
    listing = capsys.readouterr().out
    assert "3 entries" in listing and used.name in listing
    assert main(["cache", "--store", str(store.root), "--prune", "--results", str(tmp_path / "outputs")]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert sorted(e.key for e in store.entries()) == sorted([used.name, base.name])


def test_detector_checkpoints_of_equal_weights_are_equal_bytes(tmp_path: Path) -> None:
    """Fingerprints hash a checkpoint's bytes: the same weights saved twice (each via a randomly named temp file)
    must give the same bytes, or two identical runs get different detector and cue keys."""
    import torch

    from mcam_detectors._checkpoint import save_checkpoint

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    paths = [save_checkpoint(tmp_path / part / "vgg.pt", detector="vgg", arch={"n": 2}, provenance="test",
                             state_dict=state) for part in ("a", "b")]
    assert paths[0].read_bytes() == paths[1].read_bytes()
