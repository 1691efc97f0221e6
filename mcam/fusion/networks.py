"""Fusion networks (plain nn.Modules): the paper's attention MLP and the baselines beside it.

Every network takes the concatenated cue matrix x [B, sum(D_c)] (cues in `cue_dims` order) and a
validity mask valid [B, n_cues], and returns (logits [B, K], cue weights [B, n_cues]); the weights
of an invalid cue are exactly 0 and rows without any valid cue get all-zero weights.

A network may ask its trainer for two training aids (`fusion_loss`, `drop_cues`): `aux_weight` > 0 makes
`forward(x, valid, aux=True)` also return per-cue logits [B, n_cues, K], each cue's own classifier, trained
with an auxiliary cross-entropy; `cue_dropout` > 0 hides each valid cue of a training row with that
probability (one always stays), drawn by the trainer from the member's own generator.

A stack of networks (`FusionEnsemble`: one per seed) runs the same forward with each parameter stacked along a
leading member dim ([M, *shape]): the layers here (`Linear`, `LayerNorm`) run all members at once, the forwards
work over trailing dims, and outputs that depend on the parameters come out as [M, B, ...]; valid may then be
[M, B, n_cues] (each member's own cue dropout). A stack that spans replicates of the cues (one per detector seed)
passes x as `ReplicateRows`: each replicate's rows, read by that replicate's members only.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcam.labels import CANONICAL, head_map


def softmax(logits: Tensor) -> Tensor:
    """Softmax over the last dimension. On CPU, torch's kernel is several times slower than these four ops when
    that dimension is short (a handful of cues or classes), and fusion training calls it at every step."""
    exp = (logits - logits.amax(-1, keepdim=True).detach()).exp()  # the shift leaves value and gradient unchanged
    return exp / exp.sum(-1, keepdim=True)


def nll(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy [...] of logits [..., K] against integer classes y [...] (like `F.cross_entropy` with
    reduction='none', faster on short rows for the reason `softmax` gives)."""
    shift = logits.amax(-1, keepdim=True).detach()
    log_norm = (logits - shift).exp().sum(-1).log() + shift.squeeze(-1)
    return log_norm - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def masked_softmax(logits: Tensor, valid: Tensor) -> Tensor:
    """Softmax over cues with invalid cues at exactly 0; an all-invalid row gives all zeros (no NaN)."""
    any_valid = valid.any(dim=-1, keepdim=True)
    filled = logits.masked_fill(~valid, float("-inf"))
    filled = torch.where(any_valid, filled, torch.zeros_like(filled))
    return softmax(filled) * any_valid


def with_presence(emb: Tensor, valid: Tensor) -> Tensor:
    """Cue embeddings [..., B, n_cues, E] flattened, then which cues each row has: [..., B, n_cues * E + n_cues]."""
    flat = emb.flatten(-2)
    return torch.cat([flat, valid.to(flat.dtype).expand(*flat.shape[:-1], valid.shape[-1])], dim=-1)


class _StackedLinear(torch.autograd.Function):
    """Rows x [B, in] shared by M stacked members with weights [M, out, in] and biases [M, out]: outputs [M, B, out]
    as one matrix product with all members' weights side by side, and one for the weights' gradient (a batched
    product over the rows repeated M times costs up to twice as much on CPU). Each member's numbers are those of
    its own product (tests/test_fusion_ensemble.py: a member equals its single run)."""

    @staticmethod
    def product(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """[M, B, out]: the rows times every member's weights side by side, one matrix product."""
        m, out, d = weight.shape
        return torch.addmm(bias.reshape(1, m * out), x, weight.reshape(m * out, d).t()).view(-1, m, out).transpose(0, 1)

    @staticmethod
    def weight_grad(grad: Tensor, x: Tensor, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """(the members' weights' gradient [M, out, in], grad [M, B, out] as [B, M * out]), one matrix product."""
        m, out, d = shape
        flat = grad.transpose(0, 1).reshape(-1, m * out)
        return (flat.t() @ x).view(m, out, d), flat

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return _StackedLinear.product(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:2])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        m, out, d = weight.shape
        grad_weight, flat = _StackedLinear.weight_grad(grad, x, weight.shape)
        grad_x = flat @ weight.reshape(m * out, d) if ctx.needs_input_grad[0] else None
        return grad_x, grad_weight, grad.contiguous().sum(1)


@dataclass
class ReplicateRows:
    """The rows of a stack spanning replicates of its cues: x [R, B, D], replicate r's rows read by `sizes[r]`
    members (the members are in replicate order). The layers that read x run each replicate's members on its rows
    as a stack of their own, so each member's numbers are those of its single run."""

    x: Tensor
    sizes: Sequence[int]

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    def split(self, dims: Sequence[int]) -> tuple["ReplicateRows", ...]:
        return tuple(ReplicateRows(part, self.sizes) for part in torch.split(self.x, list(dims), dim=-1))

    def _groups(self) -> list[tuple[int, slice]]:
        """(replicate, its members' positions) of every replicate some member reads."""
        starts = [0, *itertools.accumulate(self.sizes)]
        return [(r, slice(starts[r], starts[r + 1])) for r, k in enumerate(self.sizes) if k]

    def linear(self, weight: Tensor, bias: Tensor) -> Tensor:
        """[A, B, out]: each replicate's members (weights [A, out, in]) on its rows (`_ReplicateLinear`)."""
        return _ReplicateLinear.apply(self.x, weight, bias, self._groups())

    def per_member(self, function: Callable[[Tensor], Tensor]) -> Tensor:
        """[A, ...]: `function` of each replicate's rows [B, D], once for all of its members."""
        outputs = []
        for r, own in self._groups():
            value = function(self.x[r])
            outputs.append(value.expand(own.stop - own.start, *value.shape))
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def scaled(self, mask: Tensor) -> "ReplicateRows":
        """Each replicate's rows times its members' mask (mask [A, B, 1], the same for a replicate's members: no
        cue dropout)."""
        x = self.x.clone()
        for r, own in self._groups():
            x[r] = self.x[r] * mask[own.start]
        return ReplicateRows(x, self.sizes)


class _ReplicateLinear(torch.autograd.Function):
    """`_StackedLinear` per replicate (`ReplicateRows`): replicate r's rows x[r] [B, in] times its members' weights
    (their slice of weight [A, out, in]) side by side, written into one output [A, B, out], and each replicate's
    members' gradients written into one weight gradient (slicing the weights in autograd would add up a weight-sized
    gradient per replicate)."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor, groups: list[tuple[int, slice]]) -> Tensor:
        result = x.new_empty(weight.shape[0], x.shape[-2], weight.shape[1])
        for r, own in groups:
            result[own] = _StackedLinear.product(x[r], weight[own], bias[own])
        return result

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:2])
        ctx.groups = inputs[3]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_weight = torch.empty_like(weight)
        for r, own in ctx.groups:
            grad_weight[own] = _StackedLinear.weight_grad(grad[own], x[r], weight[own].shape)[0]
        return None, grad_weight, grad.contiguous().sum(1), None


class Linear(nn.Linear):
    """nn.Linear that also runs a stack of members (`FusionEnsemble`): with weight [M, out, in] and bias [M, out] it
    maps rows every member reads, x [B, in], by one product with all members' weights side by side
    (`_StackedLinear`), each replicate's rows (`ReplicateRows`) by such a product per replicate, and per-member
    rows x [M, B, in] by a batched product; either way onto [M, B, out]."""

    def forward(self, x: Tensor | ReplicateRows) -> Tensor:
        if isinstance(x, ReplicateRows):
            return x.linear(self.weight, self.bias)
        if self.weight.dim() == 2:
            return super().forward(x)
        if x.dim() == 2:
            return _StackedLinear.apply(x, self.weight, self.bias)
        return torch.baddbmm(self.bias.unsqueeze(-2), x, self.weight.transpose(-1, -2))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that also runs a stack of members: weight and bias [M, E] scale x [M, B, E] member by member."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 1:
            return super().forward(x)
        normed = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        return normed * self.weight.unsqueeze(-2) + self.bias.unsqueeze(-2)  # as vmap's rule did: numbers unchanged


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear+ReLU(+Dropout) hidden layers then a linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [Linear(in_dim, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    layers.append(Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class FusionNetwork(nn.Module):
    """Common constructor of all fusion networks: the cues (name -> dim), class count and labels."""

    aux_weight: float = 0.0  # > 0: forward(..., aux=True) also gives per-cue logits for an auxiliary loss
    cue_dropout: float = 0.0  # > 0: the trainer hides valid cues of training rows with this probability

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not cue_dims:
            raise ValueError(f"{type(self).__name__}: no cues given")
        self.cue_names: list[str] = list(cue_dims)
        self.cue_dims: dict[str, int] = {k: int(v) for k, v in cue_dims.items()}
        self.num_classes = int(num_classes)
        self.cue_labels = {k: list(v) for k, v in (cue_labels or {}).items()}
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def split(self, x: Tensor | ReplicateRows) -> tuple[Tensor, ...] | tuple[ReplicateRows, ...]:
        """x [B, sum D] -> one tensor per cue (each replicate's rows: one `ReplicateRows` per cue)."""
        dims = [self.cue_dims[c] for c in self.cue_names]
        return x.split(dims) if isinstance(x, ReplicateRows) else torch.split(x, dims, dim=-1)


class CueEncoders(nn.Module):
    """One Linear+ReLU encoder per cue onto a common embedding size (then LayerNorm with `layer_norm`: every cue
    enters the fusion at the same scale, whatever its dimension or variance); invalid cues embed to 0."""

    def __init__(self, cue_dims: Mapping[str, int], embed_dim: int, dropout: float = 0.0,
                 layer_norm: bool = False) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(
            nn.Sequential(Linear(d, embed_dim), nn.ReLU(), *([nn.Dropout(dropout)] if dropout > 0 else []),
                          *([LayerNorm(embed_dim)] if layer_norm else []))
            for d in cue_dims.values())

    def forward(self, parts: Sequence[Tensor], valid: Tensor) -> Tensor:
        """Embeddings [..., B, n_cues, E]."""
        embedded = torch.stack([enc(p) for enc, p in zip(self.encoders, parts)], dim=-2)
        return embedded * valid.unsqueeze(-1)


class AttentionPaper(FusionNetwork):
    """The paper's attention MLP: per-sample masked softmax weights over cue embeddings, then an MLP head.

    Kept as published (`attention_paper`) so its results stay comparable; `AttentionFusion` is MCAM's own.
    """

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None, class_names: Sequence[str] | None = None,
                 embed_dim: int = 16, attention_hidden: Sequence[int] = (32,), hidden: Sequence[int] = (10, 10, 10),
                 dropout: float = 0.0) -> None:
        super().__init__(cue_dims, num_classes, cue_labels, class_names)
        n = len(self.cue_names)
        self.encoders = CueEncoders(self.cue_dims, embed_dim, dropout)
        # The attention MLP sees every cue embedding plus which cues are present.
        self.attention = mlp(n * embed_dim + n, attention_hidden, n)
        self.head = mlp(embed_dim, hidden, num_classes, dropout)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.encoders(self.split(x), valid)
        scores = self.attention(with_presence(emb, valid))
        weights = masked_softmax(scores, valid)
        fused = (weights.unsqueeze(-1) * emb).sum(dim=-2)
        return self.head(fused), weights


class AttentionFusion(FusionNetwork):
    """MCAM's attention fusion: normalised cue embeddings, a classifier per cue, attention over cues.

    Each cue is encoded (Linear, ReLU, LayerNorm) and read by its own linear classifier; an attention MLP sees
    every embedding and which cues are present and gives per-sample masked-softmax weights. `fuse`:
    'embeddings' feeds the weighted sum of embeddings to an MLP head; 'logits' mixes the per-cue classifiers'
    probabilities (a mixture of experts: the weights say whose vote counts). Training adds the per-cue
    classifiers' cross-entropy (`aux_weight`) so every cue keeps learning however little attention it gets,
    and hides cues at random (`cue_dropout`) so the fusion cannot lean on one of them alone.
    """

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None, class_names: Sequence[str] | None = None,
                 embed_dim: int = 16, attention_hidden: Sequence[int] = (32,), hidden: Sequence[int] = (10, 10, 10),
                 fuse: Literal["embeddings", "logits"] = "logits", aux_weight: float = 0.5,
                 cue_dropout: float = 0.3) -> None:
        super().__init__(cue_dims, num_classes, cue_labels, class_names)
        if fuse not in ("embeddings", "logits"):
            raise ValueError(f"fuse must be 'embeddings' or 'logits', got {fuse!r}")
        if aux_weight < 0 or not 0 <= cue_dropout < 1:
            raise ValueError(f"aux_weight must be >= 0 and cue_dropout in [0, 1), got {aux_weight}, {cue_dropout}")
        n = len(self.cue_names)
        self.fuse, self.aux_weight, self.cue_dropout = fuse, float(aux_weight), float(cue_dropout)
        self.encoders = CueEncoders(self.cue_dims, embed_dim, layer_norm=True)
        self.attention = mlp(n * embed_dim + n, attention_hidden, n)
        self.cue_heads = nn.ModuleList(Linear(embed_dim, num_classes) for _ in range(n))
        self.head = mlp(embed_dim, hidden, num_classes) if fuse == "embeddings" else None

    def cue_parameters(self, c: int) -> tuple[str, ...]:
        """Name prefixes of cue c's own parameters (its encoder and classifier): what per-cue early stopping
        (FusionEnsemble `cue_patience`) freezes."""
        return (f"encoders.encoders.{c}.", f"cue_heads.{c}.")

    def forward(self, x: Tensor, valid: Tensor, aux: bool = False) -> tuple[Tensor, ...]:
        emb = self.encoders(self.split(x), valid)
        weights = masked_softmax(self.attention(with_presence(emb, valid)), valid)
        cue_logits = torch.stack([head(emb[..., c, :]) for c, head in enumerate(self.cue_heads)], dim=-2)
        if self.head is not None:
            logits = self.head((weights.unsqueeze(-1) * emb).sum(dim=-2))
        else:  # mixture of experts: log of the attention-weighted average of the cues' probabilities
            probs = (weights.unsqueeze(-1) * softmax(cue_logits)).sum(dim=-2)
            logits = torch.log(probs.clamp_min(1e-8))
        return (logits, weights, cue_logits) if aux else (logits, weights)


class ConcatMLP(FusionNetwork):
    """Concatenation baseline: cue embeddings (invalid zeroed) + validity indicators into an MLP.

    Weights returned: uniform over the sample's valid cues (nothing is learned per cue).
    """

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None, class_names: Sequence[str] | None = None,
                 embed_dim: int = 16, hidden: Sequence[int] = (10, 10, 10), dropout: float = 0.0) -> None:
        super().__init__(cue_dims, num_classes, cue_labels, class_names)
        n = len(self.cue_names)
        self.encoders = CueEncoders(self.cue_dims, embed_dim, dropout)
        self.head = mlp(n * embed_dim + n, hidden, num_classes, dropout)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.encoders(self.split(x), valid)
        logits = self.head(with_presence(emb, valid))
        return logits, masked_softmax(torch.zeros_like(valid, dtype=x.dtype), valid)


class StaticWeightFusion(FusionNetwork):
    """Learned static cue weights: one trainable logit per cue, masked softmax, weighted sum, MLP head."""

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None, class_names: Sequence[str] | None = None,
                 embed_dim: int = 16, hidden: Sequence[int] = (10, 10, 10), dropout: float = 0.0) -> None:
        super().__init__(cue_dims, num_classes, cue_labels, class_names)
        self.encoders = CueEncoders(self.cue_dims, embed_dim, dropout)
        self.cue_logits = nn.Parameter(torch.zeros(len(self.cue_names)))
        self.head = mlp(embed_dim, hidden, num_classes, dropout)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.encoders(self.split(x), valid)
        static = self.cue_logits.unsqueeze(-2)  # [..., 1, n_cues]: one row of weights for every row of x
        weights = masked_softmax(static.expand(*static.shape[:-2], valid.shape[-2], -1), valid)
        return self.head((weights.unsqueeze(-1) * emb).sum(dim=-2)), weights


class SingleCue(FusionNetwork):
    """One cue through an MLP (the paper's single-cue models); weights are one-hot on that cue."""

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None, class_names: Sequence[str] | None = None,
                 cue: str | None = None, hidden: Sequence[int] = (16, 10, 10, 10), dropout: float = 0.0) -> None:
        super().__init__(cue_dims, num_classes, cue_labels, class_names)
        if cue is None:
            if len(self.cue_names) != 1:
                raise ValueError(f"SingleCue: choose `cue` among {self.cue_names}")
            cue = self.cue_names[0]
        if cue not in self.cue_dims:
            raise ValueError(f"SingleCue: cue {cue!r} not among the data's cues {self.cue_names}")
        self.cue = cue
        self.position = self.cue_names.index(cue)
        self.net = mlp(self.cue_dims[cue], hidden, num_classes, dropout)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        part, mask = self.split(x)[self.position], valid[..., self.position:self.position + 1]
        part = part.scaled(mask) if isinstance(part, ReplicateRows) else part * mask
        weights = torch.zeros_like(valid, dtype=x.dtype)
        weights[..., self.position] = valid[..., self.position].to(x.dtype)
        return self.net(part), weights


def class_probability_map(labels: Sequence[str], class_names: Sequence[str]) -> Tensor:
    """Matrix [D, K] sending a cue's class-probability columns onto the target classes (zeros elsewhere).

    A column '<prefix>.<c>' counts when c is a target class, or a micro-head class (positive, negative, ...)
    whose mass is split evenly over the canonical classes that map onto it and are targets.
    """
    index = {name: k for k, name in enumerate(class_names)}
    micro = head_map("micro4")
    matrix = torch.zeros(len(labels), len(class_names))
    for row, label in enumerate(labels):
        name = label.split(".", 1)[-1]
        if name in index:
            matrix[row, index[name]] = 1.0
        elif name in micro.classes:
            targets = [index[c] for c in CANONICAL if micro.mapping[c] == name and c in index]
            for k in targets:
                matrix[row, k] = 1.0 / len(targets)
    return matrix


class LateFusionAverage(FusionNetwork):
    """Late fusion: average of the detectors' own class probabilities mapped to the target classes.

    Needs raw (unstandardised) cues. Columns named after a class (macro.happy, au.happy,
    microplus.positive, ...) are read as probabilities (clamped >= 0, renormalised per cue);
    cues without such columns (vgg) get weight 0. Weights are uniform over the sample's valid
    probability cues. `calibrate` adds a learned temperature and per-class bias on the log-average.
    """

    needs_raw_cues = True

    def __init__(self, cue_dims: Mapping[str, int], num_classes: int,
                 cue_labels: Mapping[str, Sequence[str]] | None = None, class_names: Sequence[str] | None = None,
                 calibrate: bool = True) -> None:
        super().__init__(cue_dims, num_classes, cue_labels, class_names)
        if set(self.cue_labels) < set(self.cue_names):
            raise ValueError("LateFusionAverage needs cue_labels for every cue (linked from the data module)")
        maps = [class_probability_map(self.cue_labels[c], self.class_names) for c in self.cue_names]
        # only the probability columns are read (a VGG embedding's thousands of columns would cost most of a fit)
        rows = torch.block_diag(*maps).any(dim=1)
        self.register_buffer("prob_columns", torch.nonzero(rows).flatten())
        self.register_buffer("prob_map", torch.block_diag(*maps)[rows])
        self.register_buffer("has_probs", torch.tensor([bool(m.any()) for m in maps]))
        if not bool(self.has_probs.any()):
            raise ValueError(f"LateFusionAverage: none of the cues {self.cue_names} carries class probabilities")
        self.calibrate = calibrate
        if calibrate:
            self.log_temperature = nn.Parameter(torch.zeros(()))
            self.bias = nn.Parameter(torch.zeros(num_classes))

    def _per_cue(self, x: Tensor) -> Tensor:
        """[B, n, K]: each cue's probabilities on the target classes (block-diagonal map keeps cues apart)."""
        per_cue = (x[:, self.prob_columns].clamp_min(0) @ self.prob_map).reshape(x.shape[0], len(self.cue_names),
                                                                                  self.num_classes)
        return per_cue / per_cue.sum(-1, keepdim=True).clamp_min(1e-8)

    def forward(self, x: Tensor | ReplicateRows, valid: Tensor) -> tuple[Tensor, Tensor]:
        per_cue = x.per_member(self._per_cue) if isinstance(x, ReplicateRows) else self._per_cue(x)
        use = valid & self.has_probs
        weights = masked_softmax(torch.zeros_like(use, dtype=x.dtype), use)
        probs = (weights.unsqueeze(-1) * per_cue).sum(-2)
        logits = torch.log(probs.clamp_min(1e-6))
        if self.calibrate:  # (a stack's temperatures [M] and biases [M, K] scale its members' rows [M, B, K])
            logits = logits * torch.exp(self.log_temperature)[..., None, None] + self.bias.unsqueeze(-2)
        return logits, weights


def drop_cues(valid: Tensor, p: float, draws: Tensor) -> Tensor:
    """Cue dropout: each valid cue of a row (valid [..., B, n_cues]) hidden where its uniform draw (draws, valid's shape
    or with leading member dims) is below p; a row keeps its cues when all would go."""
    kept = valid & (draws >= p)
    return torch.where(kept.any(dim=-1, keepdim=True), kept, valid)


def _row_weight(y: Tensor, class_weight: Tensor | None, dtype: torch.dtype) -> Tensor:
    return class_weight[y] if class_weight is not None else torch.ones_like(y, dtype=dtype)


def _cue_nll(cue_logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy [..., B, n_cues] of each cue's own classifier (cue_logits [..., B, n_cues, K])."""
    return nll(cue_logits, y.unsqueeze(-1).expand(cue_logits.shape[:-1]))


def fusion_loss(outputs: Sequence[Tensor], y: Tensor, valid: Tensor, class_weight: Tensor | None,
                aux_weight: float = 0.0) -> Tensor:
    """Class-weighted cross-entropy of the fused logits, plus `aux_weight` x the class-weighted mean cross-entropy
    of the per-cue classifiers over the cues each row has. outputs: (logits [..., B, K], weights[, cue_logits
    [..., B, n_cues, K]]) with any leading (member) dims, y [B], valid [..., B, n_cues]; the loss has the leading
    dims. Each member's loss is reduced over its own rows only, so a stack computes each member's single-run loss."""
    logits = outputs[0]
    row_weight = _row_weight(y, class_weight, logits.dtype)
    loss = (nll(logits, y.expand(logits.shape[:-1])) * row_weight).sum(-1) / row_weight.sum()
    if aux_weight > 0 and len(outputs) > 2:
        mask = valid.to(logits.dtype) * row_weight.unsqueeze(-1)
        aux = (_cue_nll(outputs[2], y) * mask).sum((-1, -2)) / mask.sum((-1, -2)).clamp_min(1e-8)
        loss = loss + aux_weight * aux
    return loss


def cue_losses(cue_logits: Tensor, y: Tensor, valid: Tensor, class_weight: Tensor | None) -> Tensor:
    """Class-weighted cross-entropy [..., n_cues] of each cue's own classifier over the rows that have the cue
    (inf for a cue no row has)."""
    mask = valid.to(cue_logits.dtype) * _row_weight(y, class_weight, cue_logits.dtype).unsqueeze(-1)
    total = mask.sum(-2)
    loss = (_cue_nll(cue_logits, y) * mask).sum(-2) / total.clamp_min(1e-8)
    return torch.where(total > 0, loss, torch.full_like(loss, math.inf))


NETWORKS: dict[str, type[FusionNetwork]] = {
    "attention": AttentionFusion,
    "attention_paper": AttentionPaper,
    "concat": ConcatMLP,
    "static_weights": StaticWeightFusion,
    "late_average": LateFusionAverage,
    "single_cue": SingleCue,
}
