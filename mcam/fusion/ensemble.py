"""FusionEnsemble: a stack of fusion networks of one configuration, differing by seed, trained as one module.

Each member is exactly a single run: its own initial weights and cue dropout (drawn from its seed), its own Adam
and ReduceLROnPlateau, early stopping on its own validation loss with its best-epoch weights kept (and, with
`cue_patience`, per-cue early stopping). The batch order is the data's (data.seed), the same for every member,
so each minibatch's rows are gathered once and every member reads them. The members' forward and backward
passes run at once, as one forward of the network with its parameters stacked over the members (the fusion
networks are written for it, `mcam.fusion.networks`); a stopped member leaves the computation. `mcam fit` trains a
stack of one.

A stack may also span replicates of its cues (`replicates`: each member's index into the data's `cue_replicates`,
e.g. one per detector seed): a member reads its own replicate's rows (`networks.ReplicateRows`: the layers that
read the rows run once per replicate, everything after them once for the whole stack).

On CPU, MKL picks matrix kernels by memory alignment, so a member at an odd position of the stack would get
gradients that differ from its single run in the last bit; `mcam/__init__.py` sets MKL_CBWR=AUTO,STRICT,
which makes them identical (tests/test_fusion_ensemble.py checks it through `mcam fit`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning
import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim.adam import adam
from torch.utils.tensorboard.summary import Summary

from mcam.determinism import seeded
from mcam.errors import InputError
from mcam.fusion.metrics import stacked_scores
from mcam.fusion.module import CUE_METADATA, CueCheckpoints, breakdowns, log_figures
from mcam.fusion.networks import FusionNetwork, ReplicateRows, cue_losses, drop_cues, fusion_loss

Batch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]  # x, valid, y, region, group, row index


def member_parameters(network: nn.Module, seeds: Sequence[int]) -> Tensor:
    """[len(seeds), P]: per seed, the network's parameters re-initialised from it (every submodule's
    `reset_parameters`, the global RNG left as it was), flattened in `named_parameters` order."""
    member, rows = copy.deepcopy(network), []
    for seed in seeds:
        with seeded(seed):
            for module in member.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        flat = [p.detach().reshape(-1) for p in member.parameters()]
        rows.append(torch.cat(flat) if flat else torch.zeros(0))
    return torch.stack(rows)


@dataclass
class _Member:
    """One member's training state: optimizer, schedule, batch order and early stopping."""

    seed: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    generator: torch.Generator
    best: float = math.inf
    best_epoch: int = -1
    best_state: Tensor | None = None
    wait: int = 0
    stopped_epoch: int | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    # per-cue early stopping (cue_patience): best per-cue validation loss, epochs since, the cue's best weights
    cue_best: list[float] = field(default_factory=list)
    cue_wait: list[int] = field(default_factory=list)
    cue_state: list[list[Tensor] | None] = field(default_factory=list)
    cue_frozen: dict[int, int] = field(default_factory=dict)  # cue -> epoch it was frozen


class FusionEnsemble(CueCheckpoints, pl.LightningModule):
    """Trains one fusion network per seed (class-weighted CE, Adam, LR on plateau, early stopping on val/loss).

    With `cue_patience`, each cue is early-stopped on its own: when its classifier's validation loss has not
    improved for that many epochs, its encoder and classifier go back to their best epoch and stay frozen (a
    cue that only memorises the training rows stops changing, so the attention cannot keep learning to trust
    it). The data module gives whole parts as batches; each `training_step` is one epoch of minibatches of
    the data module's `batch_size`. Scalars go to the loggers per member (`seed<s>/val/loss`;
    without the prefix for a stack of one); `member_state_dict(i)` is a state_dict a `FusionModule` loads.
    """

    def __init__(self, network: nn.Module, seeds: list[int] | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, class_weights: list[float] | None = None, plateau_factor: float = 0.5,
                 plateau_patience: int = 5, monitor: str = "val/loss", patience: int = 20, min_delta: float = 0.0,
                 region_names: list[str] | None = None, group_names: list[str] | None = None,
                 image_every_n_epochs: int = 10, details_every_n_epochs: int = 1,
                 cue_patience: int | None = None, replicates: list[int] | None = None) -> None:
        super().__init__()
        if not isinstance(network, FusionNetwork):
            raise TypeError(f"FusionEnsemble stacks fusion networks (mcam.fusion.networks.FusionNetwork, whose forward "
                            f"runs on member-stacked parameters), not {type(network).__name__}")
        if cue_patience is not None and (cue_patience < 1 or not hasattr(network, "cue_parameters")):
            raise ValueError(f"cue_patience needs a network with per-cue classifiers (cue_parameters) and >= 1, got "
                             f"{cue_patience} for {type(network).__name__}")
        if monitor != "val/loss":
            raise ValueError(f"FusionEnsemble stops and keeps weights on val/loss, not {monitor!r}")
        self.save_hyperparameters(ignore=["network", "class_weights", "region_names", "group_names"])
        self.automatic_optimization = False
        self.seeds = [0] if seeds is None else [int(s) for s in seeds]
        self.replicates = [0] * len(self.seeds) if replicates is None else [int(r) for r in replicates]
        if not self.seeds or len(set(zip(self.replicates, self.seeds))) != len(self.seeds):
            raise ValueError(f"seeds must be distinct (per replicate) and not empty, got {self.seeds}")
        if len(self.replicates) != len(self.seeds) or min(self.replicates) < 0 or self.replicates != sorted(
                self.replicates):
            raise ValueError(f"replicates: one replicate index >= 0 per seed, in increasing order (the members of "
                             f"a replicate side by side); got {self.replicates} for seeds {self.seeds}")
        self._template = [network]  # a list: not a submodule (its own weights are no member's)
        # the network's structure without weights (meta device): functional_call runs it on each member's own
        self._structure = [copy.deepcopy(network).to("meta")]
        self._shapes = [(name, p.shape, p.numel()) for name, p in network.named_parameters()]
        self._buffer_names = [name for name, _ in network.named_buffers()]
        for i, (_, buffer) in enumerate(network.named_buffers()):
            self.register_buffer(f"constant_{i}", buffer.detach().clone(), persistent=False)
        # every member's flat parameters, one row each [M, P]: the stacked forward reads it as it is
        self.members = nn.Parameter(member_parameters(network, self.seeds))
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weight", weight, persistent=False)
        self.region_names = list(region_names or [])
        self.group_names = list(group_names or [])
        self.member_dirs: list[str] | None = None  # where each member's run folder goes (set by the CLI)
        self._state: list[_Member] = []
        self._active: list[int] = []
        self._pending_figures: list[tuple[int, dict[str, Any]]] = []  # (member, figures) of the scores being recorded

    # --- what the network knows ---------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The configured network (its weights are no member's: see `member_network`)."""
        return self._template[0]

    @property
    def _meta(self) -> nn.Module:
        return self._structure[0]

    def member_name(self, i: int) -> str:
        """'seed<s>', or 'r<replicate>-seed<s>' in a stack that spans replicates."""
        own = f"seed{self.seeds[i]}"
        return own if max(self.replicates) == 0 else f"r{self.replicates[i]}-{own}"

    def prefix(self, i: int) -> str:
        """Scalar tag prefix of member i: '' for a stack of one, else '<member name>/'."""
        return "" if len(self.seeds) == 1 else f"{self.member_name(i)}/"

    def member_folders(self, log_dir: Path) -> list[Path]:
        """Each member's run folder: `member_dirs` when set, else the logger's folder for a stack of one and
        <log_dir>/<member name> for a larger stack."""
        if self.member_dirs:
            return [Path(d) for d in self.member_dirs]
        return [log_dir] if len(self.seeds) == 1 else [log_dir / self.member_name(i) for i in range(len(self.seeds))]

    def member_state_dict(self, i: int) -> dict[str, Tensor]:
        """Member i's weights as the network's state_dict."""
        params = torch.split(self.members[i].detach().cpu(), [n for _, _, n in self._shapes])
        state = {name: p.reshape(shape).clone() for (name, shape, _), p in zip(self._shapes, params)}
        state.update({name: getattr(self, f"constant_{i}").cpu() for i, name in enumerate(self._buffer_names)})
        return state

    def member_network(self, i: int) -> nn.Module:
        """A copy of the network holding member i's weights."""
        network = copy.deepcopy(self.network)
        network.load_state_dict(self.member_state_dict(i))
        return network

    def member_history(self, i: int) -> list[tuple[int, dict[str, float]]]:
        """(epoch, unprefixed scalars) of member i, every epoch it trained and its test."""
        return list(self._state[i].history) if self._state else []

    def member_summary(self, i: int) -> dict[str, Any]:
        """How member i's training went: its seed, best and last epoch, and its validation scores at the best
        epoch (what model selection may read; never a test score)."""
        state = self._state[i]
        best = next((v for e, v in state.history if e == state.best_epoch and "val/loss" in v), {})
        return {"seed": state.seed, **({"replicate": self.replicates[i]} if max(self.replicates) else {}),
                "best_epoch": state.best_epoch, "stopped_epoch": state.stopped_epoch,
                "epochs": sum(1 for _, v in state.history if "train/loss" in v),
                "frozen_cues": {self.cue_names[c]: epoch for c, epoch in sorted(state.cue_frozen.items())},
                "val_loss": best.get("val/loss"), "val_acc": best.get("val/acc"), "val_f1": best.get("val/f1")}

    # --- the stacked forward -----------------------------------------------------------
    def _outputs(self, members: Sequence[int], x: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        """Per-member network outputs (logits [A, B, K], weights [A, B, n_cues][, cue logits]) on rows every member
        shares (x [B, ...]; valid [B, n_cues], or [A, B, n_cues] when cue dropout hid other cues per member): one
        forward of the network with every parameter stacked over the members ([A, *shape]; see
        `mcam.fusion.networks`). The rows go in once: layers that read them compute every member's product as one,
        with each member's numbers those of its single run. Outputs that no member's weights touch are expanded.
        With replicates, x is [R, B, ...] (each replicate's rows) and valid [A, B, n_cues] (`_member_masks`)."""
        if x.dim() == 3:
            sizes = [0] * len(x)
            for i in members:
                sizes[self.replicates[i]] += 1
            x = ReplicateRows(x, sizes)
        a = len(members)
        flat = self.members if a == len(self.seeds) else self.members[torch.tensor(members, device=self.members.device)]
        views = torch.split(flat, [n for _, _, n in self._shapes], dim=1)
        params = {name: v.view(a, *shape) for (name, shape, _), v in zip(self._shapes, views)}
        for name in self._frozen_parameters(members):  # no gradient (it would be thrown away): no backward through
            params[name] = params[name].detach()        # the cue's encoder, whose input needs none either
        buffers = {name: getattr(self, f"constant_{i}") for i, name in enumerate(self._buffer_names)}
        outputs = functional_call(self._meta, (params, buffers), (x, valid),
                                  {"aux": True} if self.network.aux_weight > 0 else {})
        # logits [B, K], weights [B, n_cues] and cue logits [B, n_cues, K] without the member dim: the same for all
        return tuple(o if o.dim() > d else o.expand(a, *o.shape) for o, d in zip(outputs, (2, 2, 3)))

    def _stacked(self, members: Sequence[int], x: Tensor, valid: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-member (loss [A], logits [A, B, K], weights [A, B, n_cues]) (see `_outputs`)."""
        outputs = self._outputs(members, x, valid)
        return fusion_loss(outputs, y, valid, self.class_weight, self.network.aux_weight), outputs[0], outputs[1]

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Every member on the same rows (x [B, ...], or [R, B, ...] over replicates): (logits [M, B, K], cue weights
        [M, B, n_cues])."""
        members = range(len(self.seeds))
        outputs = self._outputs(members, x, self._member_masks(members, x, valid))
        return outputs[0], outputs[1]

    def _member_masks(self, members: Sequence[int], x: Tensor, valid: Tensor) -> Tensor:
        """The rows' cue masks as the members read them: valid as it is, or over replicates (x [R, B, ...], valid
        [R, B, n_cues]) each member's replicate's, [A, B, n_cues]."""
        if x.dim() < 3:
            return valid
        return valid[torch.tensor([self.replicates[i] for i in members], device=valid.device)]

    # --- training -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if data is None or not hasattr(data, "part_tensors"):
            raise TypeError("FusionEnsemble trains from a CueDataModule (it draws each member's batches itself)")
        if set(self.replicates) != set(range(data.n_replicates)):
            raise InputError(f"model.replicates {self.replicates}: the data has {data.n_replicates} cue "
                             "replicate(s) (data.cue_replicates); give each member's, every replicate at least one")
        data.whole_parts = True  # one batch per part: the epoch's minibatches are drawn here, per member
        # deterministic mode fills every new tensor with NaN, against reads of memory never written; no kernel here
        # reads any, and the fills cost about 6% of an attention stack's epoch (two identical runs stay identical)
        self._fill_memory = torch.utils.deterministic.fill_uninitialized_memory
        torch.utils.deterministic.fill_uninitialized_memory = False

    def teardown(self, stage: str) -> None:
        torch.utils.deterministic.fill_uninitialized_memory = getattr(self, "_fill_memory", True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Per member an Adam that holds its settings and learning rate (its plateau schedule's); the steps are
        `_adam_step`'s, on the member's row of `members` and of the moments kept here."""
        optimizers = [torch.optim.Adam([torch.zeros(0, requires_grad=True)], lr=self.hparams.lr,
                                       weight_decay=self.hparams.weight_decay) for _ in self.seeds]
        self._moments = (torch.zeros_like(self.members.detach()), torch.zeros_like(self.members.detach()))
        self._steps = [torch.zeros((), device=self.members.device) for _ in self.seeds]
        self._state = [
            _Member(seed, optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=self.hparams.plateau_factor, patience=self.hparams.plateau_patience),
                torch.Generator().manual_seed(seed))
            for seed, optimizer in zip(self.seeds, optimizers)]
        self._active = list(range(len(self.seeds)))
        return optimizers

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        self._val = [t.to(self.device) for t in data.stacked_tensors("val")]
        self._batch_size, self._balance = int(data.batch_size), data.balance
        # the batch order is the data's (data.seed), shared by every member: a member's draws (its initial weights,
        # cue dropout) are its seed's, so it is the single run of `seed_everything: <seed>` with this data seed
        self._order_generator = torch.Generator().manual_seed(int(data.seed))
        self._spans = self._cue_spans() if self.hparams.cue_patience else []

    def _order(self, y: Tensor) -> Tensor:
        """This epoch's row order (a permutation, or class-balanced draws for balance='sampler')."""
        n, generator = len(y), self._order_generator
        if self._balance == "sampler":
            counts = torch.bincount(y.cpu(), minlength=len(self.class_names)).float()
            return torch.multinomial(1.0 / counts[y.cpu()], n, replacement=True, generator=generator)
        return torch.randperm(n, generator=generator)

    def _member_valid(self, active: Sequence[int], x: Tensor, valid: Tensor) -> Tensor:
        """The rows' cue masks as each member trains on them (`_member_masks`): cue dropout from the member's own
        generator."""
        valid = self._member_masks(active, x, valid)
        p = self.network.cue_dropout
        if p <= 0:
            return valid
        draws = [torch.rand(valid.shape[-2:], generator=self._state[i].generator) for i in active]
        return drop_cues(valid, p, torch.stack(draws).to(valid.device))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x, valid, y, region, group, _ = batch
        active = list(self._active)
        n = len(y)
        size = n if self._batch_size <= 0 else min(self._batch_size, n)
        order = self._order(y).to(x.device)
        trainable = self.members.numel() > 0
        self._meta.train()
        losses, preds, cue_weights = [], [], []
        for rows in _minibatches(order, size):
            xs, masks = x.index_select(-2, rows), valid.index_select(-2, rows)
            with torch.set_grad_enabled(trainable):
                loss, logits, weights = self._stacked(active, xs, self._member_valid(active, xs, masks), y[rows])
            if trainable:
                self.manual_backward(loss.sum())
                self._adam_step(active)
            losses.append(loss.detach() * len(rows))
            preds.append(logits.detach().argmax(-1))
            cue_weights.append(weights.detach())
        train_loss = torch.stack(losses).sum(0) / n
        seen = (y[order], region[order], group[order])
        train = self._scores("train", torch.cat(preds, dim=1), torch.cat(cue_weights, dim=1), *seen)
        val_loss, val_pred, val_weights, val_cue_loss = self._evaluate(active, self._val)
        val = self._scores("val", val_pred, val_weights, *self._val[2:5])
        for a, i in enumerate(active):
            scalars = {"train/loss": float(train_loss[a]), "val/loss": float(val_loss[a]),
                       "lr": self._state[i].optimizer.param_groups[0]["lr"], **train[a], **val[a]}
            if val_cue_loss is not None:
                scalars.update({f"val/cue_loss/{c}": float(v) for c, v in zip(self.cue_names, val_cue_loss[a])})
                if self.hparams.cue_patience:
                    self._stop_cues(i, val_cue_loss[a].tolist())
            self._record(i, scalars)
            self._stop_or_go(i, float(val_loss[a]))
        if not self._active:
            self.trainer.should_stop = True

    @torch.no_grad()
    def _adam_step(self, active: Sequence[int]) -> None:
        """One Adam step of every active member: torch's fused Adam kernel (`torch.optim.adam.adam`, fused; 4-5x
        faster than foreach on CPU, each element's update computed alone, so a member's numbers do not depend on the
        stack) on each member's row and its own moments and step count, one call per learning rate in use (members'
        plateau schedules differ)."""
        by_lr: dict[float, list[int]] = {}
        for i in active:
            by_lr.setdefault(self._state[i].optimizer.param_groups[0]["lr"], []).append(i)
        weights, grads, (exp_avg, exp_avg_sq) = self.members.detach(), self.members.grad, self._moments
        for lr, members in by_lr.items():
            group = self._state[members[0]].optimizer.param_groups[0]
            adam([weights[i] for i in members], [grads[i] for i in members], [exp_avg[i] for i in members],
                 [exp_avg_sq[i] for i in members], [], [self._steps[i] for i in members], fused=True, amsgrad=False,
                 beta1=group["betas"][0], beta2=group["betas"][1], lr=lr, weight_decay=group["weight_decay"],
                 eps=group["eps"], maximize=False)
        self.members.grad = None
        for i in active:
            self._hold_frozen_cues(i)

    @torch.no_grad()
    def _evaluate(self, members: Sequence[int], tensors: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """(loss [A], predictions [A, B], weights [A, B, n_cues], per-cue classifier losses [A, n_cues] or None)."""
        x, valid, y = tensors[:3]
        self._meta.eval()
        valid = self._member_masks(members, x, valid)
        outputs = self._outputs(members, x, valid)
        loss = fusion_loss(outputs, y, valid, self.class_weight, self.network.aux_weight)
        per_cue = cue_losses(outputs[2], y, valid, self.class_weight) if len(outputs) > 2 else None
        return loss, outputs[0].argmax(-1), outputs[1], per_cue

    def _scores(self, split: str, pred: Tensor, weights: Tensor, y: Tensor, region: Tensor,
                group: Tensor) -> list[dict[str, float]]:
        """Per member (pred [A, B], weights [A, B, n_cues] on rows y [B]): acc, macro F1 and mean cue weights; every
        `details_every_n_epochs` (and with figures) the full breakdown."""
        k, cues = len(self.class_names), self.cue_names
        acc, f1 = stacked_scores(y, pred, k)
        mean_weights = weights.float().mean(dim=1).cpu().tolist()
        scores = [{f"{split}/acc": a, f"{split}/f1": f, **{f"{split}/weight/{c}": w[j] for j, c in enumerate(cues)}}
                  for a, f, w in zip(acc.tolist(), f1.tolist(), mean_weights)]
        every = max(1, self.hparams.details_every_n_epochs)
        images = split != "train" and self._images_due(split)
        if split == "test" or self.current_epoch % every == 0 or images:
            details = breakdowns(split, pred.cpu(), weights.float().cpu(), y.cpu(), region.cpu(), group.cpu(), cues,
                                 self.class_names, self.region_names, self.group_names)
            for member, (values, figures) in enumerate(details):
                scores[member].update(values)
                if images:
                    self._pending_figures.append((member, figures))
        return scores

    def _images_due(self, split: str) -> bool:
        every = self.hparams.image_every_n_epochs
        return every > 0 and (split == "test" or self.current_epoch % every == 0)

    def _record(self, i: int, scalars: dict[str, float]) -> None:
        """Keep member i's scalars; a member whose run folder is the logger's gets them (and its figures) at once,
        the others when their folders are written (`replay_scalars`): one event file per run either way."""
        epoch = self.current_epoch
        self._state[i].history.append((epoch, scalars))
        if self.member_dirs is not None and len(self.member_dirs) > 1:
            self._pending_figures = [f for f in self._pending_figures if f[0] != i]
            return
        prefix = self.prefix(i)
        for logger in self.loggers:
            write_scalars(logger, {f"{prefix}{k}": v for k, v in scalars.items()}, epoch)
        for member, figures in self._pending_figures:
            if member == i:
                log_figures(self.loggers, figures, epoch, prefix)
        self._pending_figures = [f for f in self._pending_figures if f[0] != i]

    def _frozen_parameters(self, members: Sequence[int]) -> list[str]:
        """Names of the parameters of the cues that every one of `members` has frozen (`cue_patience`): each
        member's frozen weights go back to their best after every step (`_hold_frozen_cues`), so their gradient
        changes nothing but their Adam moments, which only those weights read."""
        if not self._state or not members or not torch.is_grad_enabled():
            return []
        frozen = set.intersection(*(set(self._state[i].cue_frozen) for i in members))
        prefixes = tuple(prefix for c in frozen for prefix in self.network.cue_parameters(c))
        return [name for name, _, _ in self._shapes if prefixes and name.startswith(prefixes)]

    def _cue_spans(self) -> list[list[slice]]:
        """Per cue, the stretches of a member's flat parameter vector that are the cue's own (`cue_parameters`):
        slices, so holding a frozen cue is a few contiguous copies (a boolean mask costs a scan per step)."""
        spans, start = [[] for _ in self.cue_names], 0
        for name, _, n in self._shapes:
            for c in range(len(self.cue_names)):
                if name.startswith(self.network.cue_parameters(c)):
                    own = spans[c]
                    if own and own[-1].stop == start:  # adjacent to the cue's last stretch: one slice
                        own[-1] = slice(own[-1].start, start + n)
                    else:
                        own.append(slice(start, start + n))
            start += n
        return spans

    def _stop_cues(self, i: int, cue_loss: list[float]) -> None:
        """Per-cue early stopping of member i: a cue whose classifier's validation loss has not improved for
        `cue_patience` epochs goes back to its best epoch's weights and stays there."""
        state = self._state[i]
        if not state.cue_best:
            n = len(cue_loss)
            state.cue_best, state.cue_wait, state.cue_state = [math.inf] * n, [0] * n, [None] * n
        for c, loss in enumerate(cue_loss):
            if c in state.cue_frozen or not math.isfinite(loss):
                continue
            if loss < state.cue_best[c]:
                state.cue_best[c], state.cue_wait[c] = loss, 0
                state.cue_state[c] = [self.members[i].detach()[span].clone() for span in self._spans[c]]
                continue
            state.cue_wait[c] += 1
            if state.cue_wait[c] >= self.hparams.cue_patience:
                state.cue_frozen[c] = self.current_epoch
                self._hold_frozen_cues(i)

    @torch.no_grad()
    def _hold_frozen_cues(self, i: int) -> None:
        """Member i's frozen cues back at their best weights (Adam's momentum and weight decay move them)."""
        state = self._state[i]
        for c in state.cue_frozen:
            for span, values in zip(self._spans[c], state.cue_state[c]):
                self.members.detach()[i, span] = values

    def _stop_or_go(self, i: int, val_loss: float) -> None:
        """EarlyStopping + ModelCheckpoint(save_top_k=1) + ReduceLROnPlateau of one member, as a single run has."""
        state = self._state[i]
        if not math.isfinite(val_loss):
            state.stopped_epoch = self.current_epoch
        elif val_loss - self.hparams.min_delta < state.best:
            state.best, state.best_epoch, state.wait = val_loss, self.current_epoch, 0
            state.best_state = self.members[i].detach().clone()
        else:
            state.wait += 1
            if state.wait >= self.hparams.patience:
                state.stopped_epoch = self.current_epoch
        if state.stopped_epoch is None:
            state.scheduler.step(val_loss)
        else:
            self._active.remove(i)

    def on_train_end(self) -> None:
        """Every member back at its best epoch's weights."""
        with torch.no_grad():
            for i, state in enumerate(self._state):
                if state.best_state is not None:
                    self.members.detach()[i].copy_(state.best_state)

    # --- test / predict on whole parts --------------------------------------------------
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        x, valid, y, region, group, _ = batch
        members = list(range(len(self.seeds)))
        loss, pred, weights, _ = self._evaluate(members, (x, valid, y))
        for i, scores in zip(members, self._scores("test", pred, weights, y, region, group)):
            self._record(i, {"test/loss": float(loss[i]), **scores})

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        x, valid, _, _, _, index = batch
        self._meta.eval()
        logits, weights = self(x, valid)
        return {"index": index, "probs": logits.softmax(-1), "weights": weights}

    # --- checkpoints ------------------------------------------------------------------
    def member_checkpoint(self, i: int) -> dict[str, Any]:
        """Member i's best weights as a checkpoint that `FusionModule` (state_dict) and `mcam predict` load."""
        state = self._state[i] if self._state else None
        return {"state_dict": {f"network.{k}": v for k, v in self.member_state_dict(i).items()},
                "seed": self.seeds[i], "epoch": state.best_epoch if state else None,
                "stopped_epoch": state.stopped_epoch if state else None,
                "pytorch-lightning_version": lightning.__version__,
                CUE_METADATA: self._cue_metadata(self.replicates[i])}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A member's checkpoint (network.* keys, its cue metadata checked) loads into a stack of one."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        if not any(k.startswith("network.") for k in state):
            return
        if len(self.seeds) != 1:
            raise ValueError(f"a single member's checkpoint cannot fill a stack of {len(self.seeds)}")
        own = {k.removeprefix("network."): v for k, v in state.items()}
        checkpoint["state_dict"] = {"members": torch.cat([own[name].reshape(-1) for name, _, _ in self._shapes])[None]
                                    if self._shapes else torch.zeros(1, 0)}


def _minibatches(order: Tensor, size: int) -> list[Tensor]:
    """The epoch's row order cut into minibatches of `size` rows; a lone last row joins the minibatch before it.

    A one-row step is noise, and on some CPUs (a Xeon with AVX512-FP16, torch 2.14.1) LayerNorm's backward over a
    single row rounded differently in a stack of members than alone (seen when stacks ran through `torch.func.vmap`),
    so a member would no longer be its single run (tests/test_fusion_ensemble.py)."""
    batches = list(torch.split(order, size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def member_outputs(outputs: Sequence[Mapping[str, Tensor]], i: int) -> list[dict[str, Tensor]]:
    """Member i's share of `predict` outputs of a stack (probs/weights [members, rows, ...])."""
    return [{"index": o["index"], "probs": o["probs"][i], "weights": o["weights"][i]} for o in outputs]


def write_scalars(logger: Any, scalars: Mapping[str, float], step: int) -> None:
    """One step's scalars: for TensorBoard one event holding all of them (an event per scalar, as Lightning
    writes them, costs more than training a member), each a simple_value as `torch.utils.tensorboard`'s `scalar`
    makes it, without its per-value conversions; other loggers through `log_metrics`."""
    if not isinstance(logger, TensorBoardLogger):
        logger.log_metrics(dict(scalars), step=step)
        return
    summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(number)) for tag, number in scalars.items()])
    logger.experiment._get_file_writer().add_summary(summary, step)


def replay_scalars(history: Sequence[tuple[int, dict[str, float]]], folder: str) -> None:
    """Write a member's scalars (from `FusionEnsemble.member_history`) as TensorBoard events in its run folder."""
    logger = TensorBoardLogger(folder, name="", version="")
    for epoch, scalars in history:
        write_scalars(logger, scalars, epoch)
    logger.finalize("success")
