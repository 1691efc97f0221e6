"""Tiny synthetic manifests and cue tables for the fusion tests (no detector involved)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from mcam.cues.table import CueTable
from mcam.labels import CANONICAL, head_map

REGIONS = ("western_posed", "east_asian", "suppressed_neg", "latin_wild")


def toy_manifest(n: int = 280, subjects_per_region: int = 7, seed: int = 0) -> pd.DataFrame:
    """A manifest table (no files behind it) with regions, subjects, groups and balanced-ish labels."""
    rng = np.random.default_rng(seed)
    region = np.array(REGIONS)[np.arange(n) % len(REGIONS)]
    subject = [f"{r}-s{rng.integers(subjects_per_region):03d}" for r in region]
    return pd.DataFrame({
        "sample_id": [f"s{i:05d}" for i in range(n)], "path": [f"img/{i}.png" for i in range(n)],
        "label": np.array(CANONICAL)[rng.integers(len(CANONICAL), size=n)], "region": region,
        "dataset": "toy", "subject": subject, "group": np.array(["light", "dark"])[rng.integers(2, size=n)]})


def _probs(labels: pd.Series, head: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    hm = head_map(head)
    logits = rng.normal(size=(len(labels), len(hm.classes)))
    idx = np.array([hm.index(label) for label in labels])
    rows = idx >= 0
    logits[np.flatnonzero(rows), idx[rows]] += strength
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def toy_tables(manifest: pd.DataFrame, seed: int = 0, au_invalid: float = 0.3,
               vgg_dim: int = 48) -> dict[str, CueTable]:
    """Cue tables vgg/au/micro_plus/macro; macro is informative, 'au' invalid for a fraction of rows."""
    rng = np.random.default_rng(seed)
    ids = manifest["sample_id"].to_numpy().astype(str)
    labels = manifest["label"]
    onehot = np.eye(len(CANONICAL))[[CANONICAL.index(x) for x in labels]]
    vgg = (onehot @ rng.normal(size=(len(CANONICAL), vgg_dim)) * 0.5 + rng.normal(size=(len(ids), vgg_dim)))
    au_valid = rng.random(len(ids)) >= au_invalid
    au = np.concatenate([rng.random((len(ids), 5)), _probs(labels, "canonical7", 1.0, rng)], axis=1)
    au[~au_valid] = 0.0
    canon = list(CANONICAL)
    tables = {
        "vgg": (vgg, [f"vgg.{i:04d}" for i in range(vgg_dim)], np.ones(len(ids), bool)),
        "au": (au, [f"au.AU{k:02d}" for k in (1, 2, 4, 6, 12)] + [f"au.{c}" for c in canon], au_valid),
        "micro_plus": (_probs(labels, "micro4", 2.0, rng), [f"microplus.{c}" for c in head_map("micro4").classes],
                       np.ones(len(ids), bool)),
        "macro": (_probs(labels, "fer2013", 3.0, rng), [f"macro.{c}" for c in head_map("fer2013").classes],
                  np.ones(len(ids), bool)),
    }
    return {name: CueTable(name, f"fp-{name}", ids, labels_, values.astype(np.float32), valid)
            for name, (values, labels_, valid) in tables.items()}
