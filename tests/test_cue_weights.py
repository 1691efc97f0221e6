"""Where the trained `attention` network (configs/model/attention.yaml defaults) puts its cue weights, on generated
cues whose information is known: mean softmax weights over the held-out (test part) rows.

Every scenario trains one FusionEnsemble stack of the model seeds SEEDS (each member is the single run of its seed)
on data drawn from DATA_SEED, both fixed before anything was measured, and asserts on every member.
`python tests/test_cue_weights.py [attention|attention_paper ...] [--seeds 0,1,2] [--data-seeds 0]` prints the
measured weights of every scenario (how the thresholds below and the paper network's numbers were measured).

Measured with the defaults (fuse: logits, aux 0.5, cue dropout 0.3, weight decay 1e-4, cue_patience 5), data seed 0,
model seeds 0-2: one informative cue beside three noise cues 1.00 / 1.00 / 1.00 on it; complementary cues margins
(a's classes / b's classes) 0.82/0.59, 0.78/0.48, 0.82/0.50; a 2000-dim noise cue beside the informative one
0.94 / 0.89 / 0.86 on the informative cue (test accuracy 0.88-0.92). Before per-cue early stopping and the mixture
(fuse: embeddings, no cue_patience) the third scenario gave 0.03 / 0.20 / 0.29 (25 runs, data seeds 0-4 x model seeds
0-4: 0.03-0.79, never 0.8): the noise cue's encoder memorised the ~220 training rows and the attention followed it;
attention_paper gives 0.001-0.06 there.
"""
from __future__ import annotations

import argparse
import functools
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from mcam.cues.table import CueTable
from mcam.fusion.api import build_network
from mcam.fusion.data import CueDataModule
from mcam.fusion.ensemble import FusionEnsemble
from mcam.labels import CANONICAL

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
SEEDS = [0, 1, 2]  # model seeds of the stack; every member is asserted on
DATA_SEED = 0
BATCH_SIZE = 64  # as configs/data/*.yaml
MAX_EPOCHS, PATIENCE = 200, 20  # configs/trainer/default.yaml and the CLI's early-stopping patience
INFORMATIVE_SHARE = 0.8  # the bar: the informative cue's share of the mean attention
CLASS_MARGIN = 0.2  # scenario 2: mean per-class (weight on the right cue - weight on the other) over a cue's classes


# --- generated cues --------------------------------------------------------------------------------------------
def generated_manifest(n: int, n_classes: int, seed: int) -> pd.DataFrame:
    """n rows, balanced over the first n_classes canonical classes, 2 regions x 10 subjects (subject-disjoint split)."""
    rng = np.random.default_rng(seed)
    region = np.array(["r0", "r1"])[np.arange(n) % 2]
    subject = [f"{r}-s{i:02d}" for r, i in zip(region, rng.integers(10, size=n))]
    label = np.array(CANONICAL[:n_classes])[np.arange(n) % n_classes]
    rng.shuffle(label)
    return pd.DataFrame({"sample_id": [f"g{i:05d}" for i in range(n)], "path": [f"img/{i}.png" for i in range(n)],
                         "label": label, "region": region, "dataset": "generated", "subject": subject})


def class_codes(manifest: pd.DataFrame) -> np.ndarray:
    return np.array([CANONICAL.index(label) for label in manifest["label"]])


def informative(y: np.ndarray, dim: int, rng: np.random.Generator, classes: Sequence[int] | None = None) -> np.ndarray:
    """Unit Gaussian noise around a class mean drawn N(0, 1) per dimension (10 dims: means ~4.5 sd apart); classes
    not in `classes` share the mean 0, so the cue cannot tell them apart."""
    means = rng.normal(size=(int(y.max()) + 1, dim))
    if classes is not None:
        means[~np.isin(np.arange(len(means)), list(classes))] = 0.0
    return means[y] + rng.normal(size=(len(y), dim))


def cue_tables(manifest: pd.DataFrame, values: dict[str, np.ndarray]) -> dict[str, CueTable]:
    ids = manifest["sample_id"].to_numpy().astype(str)
    return {name: CueTable(name, f"generated-{name}", ids, [f"{name}.{j:04d}" for j in range(v.shape[1])],
                           v.astype(np.float32), np.ones(len(ids), bool)) for name, v in values.items()}


def one_informative(seed: int) -> tuple[pd.DataFrame, dict[str, CueTable]]:
    """Scenario 1: 360 rows, 4 classes; 'info' (10 dims) separates them, three 10-dim cues are pure noise."""
    manifest = generated_manifest(360, 4, seed)
    y, rng = class_codes(manifest), np.random.default_rng(seed)
    values = {"noise1": rng.normal(size=(len(y), 10)), "info": informative(y, 10, rng),
              "noise2": rng.normal(size=(len(y), 10)), "noise3": rng.normal(size=(len(y), 10))}
    return manifest, cue_tables(manifest, values)


A_CLASSES, B_CLASSES = (0, 1, 2), (3, 4, 5)


def complementary(seed: int) -> tuple[pd.DataFrame, dict[str, CueTable]]:
    """Scenario 2: 480 rows, 6 classes; cue 'a' separates classes 0-2 (3-5 share one mean), cue 'b' the reverse."""
    manifest = generated_manifest(480, 6, seed)
    y, rng = class_codes(manifest), np.random.default_rng(seed)
    values = {"a": informative(y, 10, rng, A_CLASSES), "b": informative(y, 10, rng, B_CLASSES)}
    return manifest, cue_tables(manifest, values)


def wide_noise(seed: int) -> tuple[pd.DataFrame, dict[str, CueTable]]:
    """Scenario 3: scenario 1's 'info' cue (360 rows, 4 classes) beside one 2000-dim pure-noise cue."""
    manifest = generated_manifest(360, 4, seed)
    y, rng = class_codes(manifest), np.random.default_rng(seed)
    values = {"info": informative(y, 10, rng), "noise": rng.normal(size=(len(y), 2000))}
    return manifest, cue_tables(manifest, values)


SCENARIOS = {"one_informative": one_informative, "complementary": complementary, "wide_noise": wide_noise}


# --- training ----------------------------------------------------------------------------------------------------
def train(manifest: pd.DataFrame, tables: dict[str, CueTable], network: str = "attention",
          seeds: Sequence[int] = SEEDS) -> tuple[CueDataModule, FusionEnsemble]:
    """A stack of `seeds` of the network in configs/model/<network>.yaml (its init_args, lr, weight_decay)."""
    import lightning.pytorch as pl

    config = yaml.safe_load((CONFIGS / f"{network}.yaml").read_text())["model"]
    pl.seed_everything(0, verbose=False)
    data = CueDataModule.from_tables(tables, manifest, batch_size=BATCH_SIZE)
    model = FusionEnsemble(build_network(config["network"], data), seeds=list(seeds), lr=config["lr"],
                           weight_decay=config["weight_decay"], cue_patience=config.get("cue_patience"),
                           patience=PATIENCE, class_weights=data.class_weights, image_every_n_epochs=0)
    trainer = pl.Trainer(max_epochs=MAX_EPOCHS, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, deterministic=True, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on dataloader workers and the like
        trainer.fit(model, datamodule=data)
    return data, model


def held_out_weights(data: CueDataModule, model: FusionEnsemble) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cue weights [members, rows, cues], predicted class [members, rows], labels [rows]) on the test part."""
    x, valid, y = data.part_tensors("test")[:3]
    with torch.no_grad():
        outputs = [model.member_network(i).eval()(x, valid) for i in range(len(model.seeds))]
    weights = torch.stack([w.detach() for _, w in outputs])
    pred = torch.stack([logits.detach().argmax(-1) for logits, _ in outputs])
    return weights, pred, y


def per_class_weights(weights: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Mean weights of each class's rows [members, len(classes), cues]."""
    return torch.stack([weights[:, y == k].mean(dim=1) for k in classes], dim=1)


def centroid_accuracy(data: CueDataModule, cue: str) -> float:
    """Test accuracy of nearest training-class-mean on one cue alone: how well the generated cue separates classes."""
    start = sum(d for c, d in data.cue_dims.items() if data.cue_names.index(c) < data.cue_names.index(cue))
    cols = slice(start, start + data.cue_dims[cue])
    xt, _, yt = data.part_tensors("train")[:3]
    xs, _, ys = data.part_tensors("test")[:3]
    classes = yt.unique()
    means = torch.stack([xt[yt == k, cols].mean(0) for k in classes])
    return float((classes[torch.cdist(xs[:, cols], means).argmin(1)] == ys).float().mean())


@functools.lru_cache(maxsize=None)
def trained(scenario: str, network: str = "attention", seeds: tuple[int, ...] = tuple(SEEDS),
            data_seed: int = DATA_SEED) -> tuple[CueDataModule, FusionEnsemble]:
    return train(*SCENARIOS[scenario](data_seed), network=network, seeds=seeds)


# --- tests ----------------------------------------------------------------------------------------------------------
def test_one_informative_cue_gets_the_attention() -> None:
    data, model = trained("one_informative")
    # the generated cues are what they claim: 'info' alone classifies the test rows, a noise cue is at chance (1/4)
    assert centroid_accuracy(data, "info") > 0.85
    assert max(centroid_accuracy(data, c) for c in ("noise1", "noise2", "noise3")) < 0.45
    weights, _, _ = held_out_weights(data, model)
    share = weights.mean(dim=1)[:, data.cue_names.index("info")]
    assert (share >= INFORMATIVE_SHARE).all(), f"mean weight on 'info' per seed {SEEDS}: {share.tolist()}"


def test_each_cue_gets_the_attention_on_the_classes_it_separates() -> None:
    data, model = trained("complementary")
    weights, _, y = held_out_weights(data, model)
    a, b = data.cue_names.index("a"), data.cue_names.index("b")
    on_a = per_class_weights(weights, y, A_CLASSES)  # [members, 3, cues]
    on_b = per_class_weights(weights, y, B_CLASSES)
    # for rows of a cue's own classes, weight on that cue minus weight on the other, averaged over those classes
    margin_a = (on_a[..., a] - on_a[..., b]).mean(dim=1)
    margin_b = (on_b[..., b] - on_b[..., a]).mean(dim=1)
    assert (margin_a > CLASS_MARGIN).all() and (margin_b > CLASS_MARGIN).all(), \
        f"per seed {SEEDS}: classes of 'a' {margin_a.tolist()}, classes of 'b' {margin_b.tolist()}"


def test_a_wide_noise_cue_does_not_capture_the_attention() -> None:
    data, model = trained("wide_noise")
    assert centroid_accuracy(data, "info") > 0.85
    weights, _, _ = held_out_weights(data, model)
    share = weights.mean(dim=1)[:, data.cue_names.index("info")]
    assert (share >= INFORMATIVE_SHARE).all(), f"mean weight on 'info' per seed {SEEDS}: {share.tolist()}"


# --- measuring (not a test) -----------------------------------------------------------------------------------------
def report(network: str, seeds: Sequence[int], data_seed: int) -> None:
    for scenario in SCENARIOS:
        data, model = trained(scenario, network, tuple(seeds), data_seed)
        weights, pred, y = held_out_weights(data, model)
        print(f"{network} {scenario} data seed {data_seed} cues {data.cue_names} ({len(y)} test rows)")
        for i, seed in enumerate(seeds):
            acc = float((pred[i] == y).float().mean())
            line = f"  seed {seed}: test acc {acc:.3f} mean weights {np.round(weights[i].mean(0).numpy(), 3).tolist()}"
            if scenario == "complementary":
                rows = per_class_weights(weights[i:i + 1], y, A_CLASSES + B_CLASSES)[0].numpy()
                line += "  per class " + " ".join(f"{k}:{np.round(r, 3).tolist()}" for k, r in enumerate(rows))
                line += (f"  margins a {float(rows[:3, 0].mean() - rows[:3, 1].mean()):.3f}"
                         f" b {float(rows[3:, 1].mean() - rows[3:, 0].mean()):.3f}")
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["attention", "attention_paper"])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--data-seeds", default=str(DATA_SEED))
    args = parser.parse_args()
    for net in args.networks:
        for data_seed in (int(s) for s in args.data_seeds.split(",")):
            report(net, [int(s) for s in args.seeds.split(",")], data_seed)
