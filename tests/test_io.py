"""mcam.io: atomic writes (text, bytes, writers that need a path), temp files cleaned up on failure."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcam.io import atomic_output, write_atomic


def test_write_atomic_text_bytes_and_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "note.txt"
    assert write_atomic(target, "héllo") == target and target.read_text(encoding="utf-8") == "héllo"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["note.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_output_keeps_the_suffix_for_path_writers(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "cues.npz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".npz") and tmp != target
        np.savez(tmp, values=np.arange(3))  # would append '.npz' to a name without it
    assert np.load(target)["values"].tolist() == [0, 1, 2]
    with atomic_output(tmp_path / "table.csv") as tmp:
        pd.DataFrame({"x": [1]}).to_csv(tmp, index=False)
    assert (tmp_path / "table.csv").read_text() == "x\n1\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cues.npz"]


def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_temp_names_are_unique(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "x.pt") as first, atomic_output(tmp_path / "x.pt") as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert (tmp_path / "x.pt").read_bytes() == b"1"  # the outer block finished last
