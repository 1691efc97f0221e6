"""Shared fixtures: pinned threads, one tiny synthetic dataset per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "synth" / "tiny.yaml"
TINY_AU_CORPUS = REPO / "configs" / "synth" / "au_corpus_tiny.yaml"


def _rendered(tmp_path_factory: pytest.TempPathFactory, config: Path) -> Path:
    from mcam.synth.generate import generate

    out = tmp_path_factory.mktemp(config.stem)
    generate(out, config, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (4 regions x 7 emotions x 4 subjects), rendered once per session."""
    return _rendered(tmp_path_factory, TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_au_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AU corpus (configs/synth/au_corpus_tiny.yaml: 8 identities x 6 faces), rendered once per session."""
    return _rendered(tmp_path_factory, TINY_AU_CORPUS)


@pytest.fixture(scope="session")
def cue_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy fusion manifest (tests/fusion_toy.py) and its cue tables as <cue>.npz under cues/."""
    from fusion_toy import toy_manifest, toy_tables
    from mcam.manifest import save_manifest

    root = tmp_path_factory.mktemp("cues")
    manifest = toy_manifest()
    save_manifest(manifest, root / "manifest.csv")
    for name, table in toy_tables(manifest).items():
        table.save(root / "cues" / f"{name}.npz")
    return root
