"""FusionEnsemble: a member of a stack is the single run `mcam fit` makes with its seed; members stop on their own."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fusion_toy import toy_manifest, toy_tables
from mcam.cli.main import main
from mcam.errors import InputError
from mcam.fusion.data import CueDataModule
from mcam.fusion.ensemble import FusionEnsemble
from mcam.fusion.module import CUE_METADATA, FusionModule
from mcam.fusion.networks import NETWORKS, AttentionFusion, AttentionPaper
from mcam.labels import CANONICAL

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _fit(root: Path, save_dir: Path, *extra: str, config: Path | None = None) -> None:
    first = ["--config", str(config)] if config else []
    assert main(["fit", *first, "--config", str(CONFIGS / "model/attention.yaml"), "--config",
                 str(CONFIGS / "trainer/default.yaml"), "--config", str(CONFIGS / "trainer/cpu_fast.yaml"),
                 "--data.data_dir", str(root), "--data.cue_dir", str(root / "cues"), "--data.batch_size", "64",
                 "--trainer.max_epochs", "12", "--model.image_every_n_epochs", "0",
                 "--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.logger.init_args.name", "",
                 "--trainer.logger.init_args.version", "", *extra]) == 0


def test_a_member_of_a_stack_is_the_single_run_of_its_seed(cue_data: Path, tmp_path: Path) -> None:
    _fit(cue_data, tmp_path / "stack", "--model.seeds", "[4, 7, 9]")
    _fit(cue_data, tmp_path / "single", "--seed_everything", "7")
    member = tmp_path / "stack" / "seed7"
    assert (member / "predictions.csv").read_bytes() == (tmp_path / "single" / "predictions.csv").read_bytes()
    others = [pd.read_csv(tmp_path / "stack" / f"seed{s}" / "predictions.csv") for s in (4, 9)]
    assert not others[0]["prob_happy"].equals(others[1]["prob_happy"])  # members differ by seed
    # the member's folder is a run of its own: config.yaml re-runs it alone, events, a checkpoint a FusionModule loads
    config = yaml.safe_load((member / "config.yaml").read_text())
    assert config["seed_everything"] == 7 and config["model"]["seeds"] is None
    _fit(cue_data, tmp_path / "again", config=member / "config.yaml")
    assert (tmp_path / "again" / "predictions.csv").read_bytes() == (member / "predictions.csv").read_bytes()
    scalars = EventAccumulator(str(member)).Reload().Tags()["scalars"]
    assert {"val/loss", "val/acc", "train/f1", "test/acc", "val/weight/macro"} <= set(scalars)
    for seed in (4, 9):  # every member's scalars in its own folder (the stack's own folder holds none of them)
        assert "val/weight/vgg" in EventAccumulator(str(tmp_path / "stack" / f"seed{seed}")).Reload().Tags()["scalars"]
    state = torch.load(member / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    data = CueDataModule(data_dir=str(cue_data), cue_dir=str(cue_data / "cues"))
    network = AttentionFusion(data.cue_dims, data.num_classes, class_names=data.class_names)
    FusionModule(network).load_state_dict(state)


def test_a_stack_over_cue_replicates_is_the_single_run_of_each_member(cue_data: Path, tmp_path: Path) -> None:
    """Members of a stack spanning two replicates of the cues (as two detector seeds give them) are the single runs
    on their own replicate's cues, cue dropout and per-cue early stopping included."""
    import numpy as np

    from mcam.cues.table import CueTable

    first = {p.stem: str(p) for p in sorted((cue_data / "cues").glob("*.npz"))}
    second, rng = {}, np.random.default_rng(3)
    for name, path in first.items():  # other detector weights: other values and validity over the same rows
        table = CueTable.load(path)
        values = table.values + rng.normal(scale=0.5, size=table.values.shape).astype(np.float32)
        valid = table.valid & (rng.random(len(table.valid)) > 0.1)
        second[name] = str(CueTable(table.detector, f"{table.fingerprint}-r1", table.sample_ids, table.labels,
                                    values, valid).save(tmp_path / "cues1" / f"{name}.npz"))
    mappings = ("{" + ", ".join(f"{k}: {v}" for k, v in f.items()) + "}" for f in (first, second))
    replicates = "[" + ", ".join(mappings) + "]"
    _fit(cue_data, tmp_path / "stack", "--model.seeds", "[4, 7, 4, 9]", "--model.replicates", "[0, 0, 1, 1]",
         "--data.cue_replicates", replicates, "--data.cue_dir", "null")
    folders = {(r, s): tmp_path / "stack" / f"r{r}-seed{s}" for r, s in ((0, 4), (0, 7), (1, 4), (1, 9))}
    for (r, seed), member in folders.items():
        config = yaml.safe_load((member / "config.yaml").read_text())
        assert config["data"]["cue_files"] == (first, second)[r] and config["data"]["cue_replicates"] is None
        assert config["model"]["replicates"] is None and config["seed_everything"] == seed
        checkpoint = torch.load(member / "checkpoints" / "best.ckpt", weights_only=False)
        fingerprints = set(checkpoint[CUE_METADATA]["fingerprints"].values())
        assert all(fp.endswith("-r1") == (r == 1) for fp in fingerprints)
    for key in ((1, 4), (0, 7)):
        _fit(cue_data, tmp_path / f"single{key}", "--data.cue_dir", "null", config=folders[key] / "config.yaml")
        assert (tmp_path / f"single{key}" / "predictions.csv").read_bytes() == \
            (folders[key] / "predictions.csv").read_bytes()
    assert main(["fit", "--config", str(CONFIGS / "model/attention.yaml"), "--data.data_dir", str(cue_data),
                 "--data.cue_replicates", replicates, "--model.seeds", "[0, 1]", "--trainer.max_epochs", "1",
                 "--trainer.logger.init_args.save_dir", str(tmp_path / "unnamed")]) == 2  # replicate 1 has no member
    same_seed = [pd.read_csv(folders[(r, 4)] / "predictions.csv") for r in (0, 1)]
    assert not same_seed[0]["prob_happy"].equals(same_seed[1]["prob_happy"])  # the replicates' cues differ
    without_au = {k: v for k, v in second.items() if k != "au"}
    fewer = CueDataModule(data_dir=str(cue_data), cue_replicates=[first, without_au])
    with pytest.raises(InputError, match=r"cue_replicates\[1\] gives cues \[macro"):
        fewer.stacked_tensors("train")
    with pytest.raises(InputError, match="cue_files must be"):
        CueDataModule(data_dir=str(cue_data), cue_files=second, cue_replicates=[first, second])
    with pytest.raises(ValueError, match="replicates"):
        FusionEnsemble(AttentionFusion({"au": 3}, 7), seeds=[0, 1], replicates=[1, 0])
    with pytest.raises(ValueError, match="distinct"):
        FusionEnsemble(AttentionFusion({"au": 3}, 7), seeds=[0, 0], replicates=[0, 0])


def _stack(seeds: list[int], patience: int = 3) -> tuple[FusionEnsemble, CueDataModule]:
    import lightning.pytorch as pl

    manifest = toy_manifest()
    data = CueDataModule.from_tables(toy_tables(manifest), manifest, batch_size=64)
    network = AttentionFusion(data.cue_dims, data.num_classes, class_names=data.class_names)
    model = FusionEnsemble(network, seeds=seeds, lr=0.01, patience=patience, class_weights=data.class_weights,
                           image_every_n_epochs=0)
    trainer = pl.Trainer(max_epochs=40, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, deterministic=True)
    trainer.fit(model, datamodule=data)
    return model, data


def test_members_stop_on_their_own_and_leave_the_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    stacked: list[int] = []
    original = FusionEnsemble._stacked

    def spy(self, members, *tensors):  # noqa: ANN001, ANN202
        stacked.append(len(members))
        return original(self, members, *tensors)

    monkeypatch.setattr(FusionEnsemble, "_stacked", spy)
    model, _ = _stack([0, 1, 2], patience=3)
    stops = [state.stopped_epoch for state in model._state]
    assert all(s is not None for s in stops) and len(set(stops)) > 1, stops  # each on its own val loss
    assert stacked[0] == 3 and stacked[-1] == 1 and sorted(stacked, reverse=True) == stacked
    for state in model._state:  # best-epoch weights kept: the stop came `patience` epochs after the best
        assert state.stopped_epoch - state.best_epoch == 3
        assert min(v["val/loss"] for _, v in state.history) == state.best
    epochs = [len(model.member_history(i)) for i in range(3)]
    assert epochs == [s + 1 for s in stops]


def test_per_cue_early_stopping_freezes_a_cue_at_its_best_weights() -> None:
    """cue_patience: a cue whose own validation loss stalls is put back to its best epoch and stays there; the
    member's final (best-epoch) weights keep it frozen, and the run's training summary names it."""
    import lightning.pytorch as pl

    manifest = toy_manifest()
    data = CueDataModule.from_tables(toy_tables(manifest), manifest, batch_size=64)
    network = AttentionFusion(data.cue_dims, data.num_classes, class_names=data.class_names)

    def fit(seeds: list[int]) -> FusionEnsemble:
        model = FusionEnsemble(network, seeds=seeds, lr=0.01, patience=6, cue_patience=1,
                               class_weights=data.class_weights, image_every_n_epochs=0)
        pl.Trainer(max_epochs=30, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, deterministic=True).fit(model, datamodule=data)
        return model

    model = fit([0, 1])
    # a cue every member has frozen trains no more (no gradient through it); each member is still its single run
    assert set(model._state[0].cue_frozen) & set(model._state[1].cue_frozen)
    assert torch.equal(model.members[1], fit([1]).members[0])
    spans, checked = model._cue_spans(), 0
    names = [(name, p.numel()) for name, p in network.named_parameters()]
    for c, own in enumerate(spans):  # the spans are exactly the cue's parameters (cue_parameters), nothing else
        mask, start = torch.zeros(sum(n for _, n in names), dtype=torch.bool), 0
        for name, n in names:
            mask[start:start + n] = name.startswith(network.cue_parameters(c))
            start += n
        covered = torch.zeros_like(mask)
        for span in own:
            covered[span] = True
        assert torch.equal(covered, mask) and mask.any()
    for i, state in enumerate(model._state):
        summary = model.member_summary(i)
        assert summary["frozen_cues"] == {model.cue_names[c]: e for c, e in sorted(state.cue_frozen.items())}
        for c, epoch in state.cue_frozen.items():
            if epoch <= state.best_epoch:  # frozen before the kept epoch: the kept weights hold the frozen cue
                kept = torch.cat([model.members[i].detach()[span] for span in spans[c]])
                assert torch.equal(kept, torch.cat(state.cue_state[c]))
                checked += 1
    assert checked, "no cue froze before a member's best epoch on the toy data"
    with pytest.raises(ValueError, match="cue_patience"):  # the paper's network has no per-cue classifiers
        FusionEnsemble(AttentionPaper(data.cue_dims, data.num_classes, class_names=data.class_names), seeds=[0],
                       cue_patience=2)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_runs_as_a_stack_of_its_members(name: str) -> None:
    """A stack's one forward over member-stacked parameters gives each member the outputs of the network holding
    that member's weights, with the rows' cue mask shared or per member (cue dropout)."""
    labels = {cue: [f"{cue}.{c}" for c in CANONICAL] for cue in ("macro", "au")}
    labels |= {"vgg": [f"vgg.{i:04d}" for i in range(40)],
               "micro": ["micro.positive", "micro.negative", "micro.surprise"]}
    dims = {cue: len(v) for cue, v in labels.items()}
    network = NETWORKS[name](dims, len(CANONICAL), cue_labels=labels, class_names=list(CANONICAL),
                             **({"cue": "au"} if name == "single_cue" else {}))
    model = FusionEnsemble(network, seeds=[3, 5, 8])
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(30, sum(dims.values()), generator=generator)
    valid = torch.rand(30, len(dims), generator=generator) > 0.2
    for mask in (valid, valid.expand(3, *valid.shape) & (torch.rand(3, *valid.shape, generator=generator) > 0.3)):
        outputs = model._outputs([0, 1, 2], x, mask)
        for i in range(3):
            own = model.member_network(i)(x, mask if mask.dim() == 2 else mask[i],
                                          **({"aux": True} if network.aux_weight > 0 else {}))
            assert len(own) == len(outputs)
            for stacked, single in zip(outputs, own):
                torch.testing.assert_close(stacked[i], single)
    # a stack over two replicates of the cues (members 0, 1 read replicate 0's rows, member 2 replicate 1's), and
    # the same with member 1 gone (stopped)
    model = FusionEnsemble(network, seeds=[3, 5, 8], replicates=[0, 0, 1])
    rows = torch.stack([x, torch.rand(x.shape, generator=generator)])
    masks = torch.stack([valid, torch.rand(valid.shape, generator=generator) > 0.2])
    for members in ([0, 1, 2], [0, 2], [2]):
        outputs = model._outputs(members, rows, model._member_masks(members, rows, masks))
        for a, i in enumerate(members):
            r = model.replicates[i]
            own = model.member_network(i)(rows[r], masks[r], **({"aux": True} if network.aux_weight > 0 else {}))
            for stacked, single in zip(outputs, own):
                assert stacked[a].equal(single.expand_as(stacked[a]))
    with pytest.raises(TypeError, match="FusionNetwork"):
        FusionEnsemble(torch.nn.Linear(4, 2))


def test_a_stacks_breakdowns_are_its_members_own() -> None:
    """The per-region/group/class scalars and figures of a stack's members, computed at once, are each member's."""
    from mcam.fusion.module import breakdown, breakdowns

    generator = torch.Generator().manual_seed(0)
    pred, y = torch.randint(7, (3, 60), generator=generator), torch.randint(7, (60,), generator=generator)
    weights = torch.rand(3, 60, 4, generator=generator).softmax(-1)
    region, group = torch.randint(3, (60,), generator=generator), torch.randint(2, (60,), generator=generator)
    names = (["au", "macro", "micro", "vgg"], list(CANONICAL), ["r0", "r1", "r2"], ["g0", "g1"])
    together = breakdowns("val", pred, weights, y, region, group, *names)
    for member, (values, figures) in enumerate(together):
        own_values, own_figures = breakdown("val", pred[member], weights[member], y, region, group, *names)
        assert values.keys() == own_values.keys() and "val/acc_region/r2" in values
        assert values == pytest.approx(own_values, abs=1e-6)
        for key, value in own_figures.items():
            if hasattr(value, "shape"):
                assert figures[key] == pytest.approx(value, abs=1e-6)
            else:
                assert figures[key] == value
    assert together[0][0] != together[1][0]
