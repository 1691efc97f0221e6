"""Fusion networks: shapes, exact-zero masked weights, all-invalid rows, baselines, cue subsets, data module."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fusion_toy import toy_manifest, toy_tables
from mcam.fusion.api import train_fusion
from mcam.fusion.data import CueDataModule
from mcam.fusion.networks import NETWORKS, LateFusionAverage, class_probability_map, masked_softmax
from mcam.fusion.predictions import Predictions
from mcam.fusion.subsets import parse_cues

torch.set_num_threads(1)
DIMS = {"vgg": 12, "au": 5, "micro_plus": 4, "macro": 7}
LABELS = {"vgg": [f"vgg.{i:04d}" for i in range(12)], "au": [f"au.AU{i:02d}" for i in range(5)],
          "micro_plus": ["microplus.positive", "microplus.negative", "microplus.surprise", "microplus.neutral"],
          "macro": [f"macro.{c}" for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")]}
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _net(name: str) -> torch.nn.Module:
    kwargs = {"cue": "macro"} if name == "single_cue" else {}
    return NETWORKS[name](DIMS, 7, LABELS, CLASSES, **kwargs)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_shapes_masking_and_all_invalid_rows(name: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(6, sum(DIMS.values()))
    valid = torch.ones(6, 4, dtype=torch.bool)
    valid[:3, 1] = False  # 'au' missing for half the rows
    valid[5] = False  # a row without any cue
    logits, weights = _net(name)(x, valid)
    assert logits.shape == (6, 7) and weights.shape == (6, 4)
    assert torch.isfinite(logits).all() and torch.isfinite(weights).all()
    assert (weights[~valid] == 0).all()
    assert (weights[5] == 0).all()
    assert torch.allclose(weights[:5].sum(1), torch.ones(5)) or name in ("single_cue", "late_average")


def test_masked_softmax_exact_zero_and_gradients() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    valid = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    weights = masked_softmax(logits, valid)
    assert (weights[~valid] == 0).all() and torch.equal(weights[3], torch.tensor([0.0, 1.0, 0.0]))
    weights.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_attention_weights_vary_per_sample_and_static_do_not() -> None:
    torch.manual_seed(0)
    x, valid = torch.randn(8, sum(DIMS.values())), torch.ones(8, 4, dtype=torch.bool)
    assert _net("attention")(x, valid)[1].std(0).sum() > 0
    assert _net("static_weights")(x, valid)[1].std(0).sum() == 0


def test_late_fusion_maps_detector_classes_onto_targets() -> None:
    matrix = class_probability_map(LABELS["micro_plus"], CLASSES)
    assert matrix[0, CLASSES.index("happy")] == 1.0  # positive -> happy
    assert torch.allclose(matrix[1, [0, 1, 2, 4]], torch.full((4,), 0.25))  # negative split over 4 classes
    net = LateFusionAverage(DIMS, 7, LABELS, CLASSES, calibrate=False)
    x = torch.zeros(1, sum(DIMS.values()))
    x[0, 12 + 5 + 4 + CLASSES.index("sad")] = 1.0  # macro says sad; micro_plus gives nothing
    valid = torch.tensor([[True, True, False, True]])
    logits, weights = net(x, valid)
    assert logits.argmax().item() == CLASSES.index("sad")
    assert weights.tolist() == [[0.0, 0.0, 0.0, 1.0]]  # vgg/au carry no probabilities, micro_plus invalid


def test_parse_cue_subsets() -> None:
    names = ["vgg", "au", "micro", "micro_plus", "macro"]
    assert parse_cues("A_{-i+,-u}", names) == ["vgg", "micro", "macro"]
    assert parse_cues("A_{-f}", names) == ["au", "micro", "micro_plus", "macro"]
    assert parse_cues("A", names) == names and parse_cues(None, names) == names
    assert parse_cues(["A", "I+"], names) == ["macro", "micro_plus"]
    assert parse_cues("vgg,macro", names) == ["vgg", "macro"]
    with pytest.raises(ValueError, match="unknown cue"):
        parse_cues("A_{-x}", names)


def test_data_module_splits_and_training_statistics() -> None:
    manifest = toy_manifest()
    tables = toy_tables(manifest)
    data = CueDataModule.from_tables(tables, manifest, cues="A_{-i+}")
    frame = data.metadata()
    parts = {p: set(frame.loc[frame.part == p, "subject"]) for p in ("train", "val", "test")}
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"]) and parts["test"]
    assert data.cue_names == ["vgg", "au", "macro"] and data.cue_dims["au"] == 12
    x, valid = data.part_tensors("train")[:2]
    au = x[:, 48:60][valid[:, 1]]
    assert torch.allclose(au.mean(0), torch.zeros(12), atol=1e-4)  # standardised on valid training rows
    assert (x[:, 48:60][~valid[:, 1]] == 0).all()
    assert len(data.class_weights) == 7
    loro = CueDataModule.from_tables(tables, manifest, split="regions", test_regions=["east_asian"]).metadata()
    assert set(loro.loc[loro.part == "test", "region"]) == {"east_asian"}
    assert "east_asian" not in set(loro.loc[loro.part != "test", "region"])
    batch = next(iter(data.train_dataloader()))
    assert [t.shape[0] for t in batch] == [len(batch[0])] * 6


def test_manifest_split_warns_when_subjects_cross_train_and_test() -> None:
    manifest = toy_manifest()
    tables = toy_tables(manifest)
    crossing = manifest.assign(split=np.array(["train", "val", "test"])[np.arange(len(manifest)) % 3])
    with pytest.warns(UserWarning, match=r"(\d+) subjects cross splits: .*use split: subject") as caught:
        frame = CueDataModule.from_tables(tables, crossing, split="manifest").metadata()
    assert list(frame.part) == list(crossing.split)  # used as is, not raised
    message = next(str(w.message) for w in caught if "cross splits" in str(w.message))
    n = len(set(crossing.subject[crossing.split == "test"]) & set(crossing.subject[crossing.split != "test"]))
    assert n > 5 and message.startswith(f"split 'manifest': {n} subjects cross splits:")
    assert len(message.split("cross splits: ")[1].split(" (in")[0].split(", ")) == 6  # 5 names + '...'
    subjects = sorted(manifest.subject.unique())
    disjoint = manifest.assign(split=manifest.subject.map(
        {s: "test" if i % 3 == 0 else "val" if i % 3 == 1 else "train" for i, s in enumerate(subjects)}))
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        CueDataModule.from_tables(tables, disjoint, split="manifest").metadata()
    assert not [w for w in quiet if "cross splits" in str(w.message)]


def test_masked_cue_gets_zero_weight_in_training_and_prediction() -> None:
    manifest = toy_manifest()
    result = train_fusion(toy_tables(manifest, au_invalid=0.4), manifest, model="attention", max_epochs=3,
                          accelerator="cpu")
    tables_valid = toy_tables(manifest, au_invalid=0.4)["au"].align(result.predictions["sample_id"]).valid
    predictions, weights = result.predictions, result.predictions.weights
    assert isinstance(predictions, Predictions) and predictions.classes == list(result.data.class_names)
    assert (~tables_valid).any() and (weights.loc[~tables_valid, "au"] == 0).all()
    assert (weights.loc[tables_valid, "au"] > 0).all()
    assert np.allclose(weights.sum(1), 1.0, atol=1e-5)
    assert np.allclose(predictions.probabilities.sum(1), 1.0, atol=1e-5)
    by_region = result.weights_by("region")
    assert list(by_region.columns) == predictions.cues and np.allclose(by_region.sum(1), 1.0, atol=1e-5)
    assert result.metrics["test/acc"] >= 0 and "test/weight_region/east_asian/au" in result.metrics


def test_api_trains_baselines_and_single_cue() -> None:
    manifest = toy_manifest()
    tables = toy_tables(manifest)
    late = train_fusion(tables, manifest, model="late_average", max_epochs=2, accelerator="cpu")
    assert late.metrics["test/acc"] > 0.6  # macro probabilities are informative in the toy cues
    assert (late.predictions.weights["vgg"] == 0).all()
    single = train_fusion(tables, manifest, model="single_cue", network_args={"cue": "macro"}, max_epochs=2,
                          accelerator="cpu")
    assert (single.predictions.weights["macro"] == 1).all()
