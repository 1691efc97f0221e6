"""CueDataModule: cue tables of a manifest -> standardised in-memory tensors split train/val/test.

What a fusion checkpoint must match (cue names and dims, the detectors' fingerprints, class names)
and the training part's normalisation statistics travel with it as `cue_metadata()`; `check_cue_metadata`
refuses other cues at predict time and `use_normalisation` reapplies the training statistics.
"""
from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from torch.utils.data import WeightedRandomSampler

from mcam.assets import resolve_path
from mcam.cues.table import CueTable
from mcam.detector import check_device
from mcam.errors import InputError
from mcam.fusion.splits import SplitMode, assign_parts
from mcam.fusion.subsets import parse_cues
from mcam.labels import head_map
from mcam.manifest import MANIFEST_FILE, Manifest, load_manifest, validate
from mcam.splits import check_learnable
from mcam.store import ArtifactStore, default_store_root

PARTS = ("train", "val", "test")
Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]  # cue -> (mean [D], divisor [D]) of the training part
DEFAULT_DETECTORS = Path("configs/detectors/default.yaml")


def default_detector_spec() -> Path | None:
    """configs/detectors/default.yaml under the working directory, else the packaged one; None if neither exists."""
    try:
        return resolve_path(DEFAULT_DETECTORS)
    except FileNotFoundError:
        return None


def _load_table(path: str) -> CueTable:
    """A cue table file, read once per process while unchanged (a suite's worker reads the same tables for
    every run; store entries are never modified, the stat check covers files that are)."""
    stat = Path(path).stat()
    return _load_table_version(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _load_table_version(path: str, size: int, mtime_ns: int) -> CueTable:
    return CueTable.load(path)


class _IndexBatches(BatchSampler):
    """BatchSampler yielding index tensors: one conversion per batch instead of one per tensor indexed."""

    def __iter__(self):  # type: ignore[override]
        for batch in super().__iter__():
            yield torch.as_tensor(batch, dtype=torch.long)


def _codes(values: pd.Series, names: list[str]) -> np.ndarray:
    return values.map({name: i for i, name in enumerate(names)}).to_numpy(dtype=np.int64)


def _warn_crossing_subjects(subjects: pd.Series, parts: np.ndarray) -> None:
    """UserWarning when a subject has rows in train/val and in test (the manifest's split is used as is)."""
    subjects = subjects.astype(str).to_numpy()
    is_test = np.array([p == "test" for p in parts])
    crossing = sorted(set(subjects[is_test]) & set(subjects[~is_test]))
    if crossing:
        shown = ", ".join(crossing[:5]) + (", ..." if len(crossing) > 5 else "")
        warnings.warn(f"split 'manifest': {len(crossing)} subjects cross splits: {shown} (in train/val and test); "
                      "use split: subject for subject-disjoint evaluation", UserWarning, stacklevel=3)


@dataclass
class _Prepared:
    frame: pd.DataFrame  # kept rows: sample_id, region, subject, label, group, dataset, part
    x: torch.Tensor  # float32 [N, sum D]
    valid: torch.Tensor  # bool [N, n_cues]
    y: torch.Tensor  # long [N]
    region: torch.Tensor  # long [N]
    group: torch.Tensor  # long [N]
    cue_dims: dict[str, int]
    cue_labels: dict[str, list[str]]
    region_names: list[str]
    group_names: list[str]
    tables: dict[str, CueTable]  # the cue tables x was built from (unscaled; the loaded ones, not copies)
    stats: Stats | None  # the normalisation x was built with (None: raw cues)


class CueDataModule(pl.LightningDataModule):
    """Cues of a manifest as in-memory tensors with a split spec; statistics from the training part only.

    Cues come from (first that applies) tables given to `from_tables`, `cue_files` ({cue: CueTable .npz},
    as suites write them), `cue_dir` (<cue>.npz CueTables), or the detectors spec run through the
    artifact store `store` (`adaptation='gam'` fine-tunes the trainable detectors on the training part
    first, through `mcam.cues.pretrain.adapt_detectors`), the detectors on `device` (in `mcam fit`: the trainer's
    accelerator unless given). Batches: (x, valid, y, region, group, row index).

    `cue_replicates` are replicates of the same cues over the same rows (one set of cue files each, e.g. one per
    detector seed; cue_files is the first): a `FusionEnsemble` with `replicates` trains each member on its own
    replicate, standardised with that replicate's own training statistics (`replicate(r)`), as its single run.
    """

    def __init__(self, data_dir: str | None = None, cues: str | list[str] | None = None,
                 detectors: str | None = None, store: str | None = None, cue_dir: str | None = None,
                 cue_files: dict[str, str] | None = None, cue_replicates: list[dict[str, str]] | None = None,
                 split: SplitMode = "subject", val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                 regions: list[str] | None = None, train_regions: list[str] | None = None,
                 test_regions: list[str] | None = None, train_datasets: list[str] | None = None,
                 test_datasets: list[str] | None = None, target: Literal["canonical7", "macro6"] = "canonical7",
                 balance: Literal["weights", "sampler", "none"] = "weights", standardize: bool = True,
                 batch_size: int = 0, predict_split: Literal["train", "val", "test", "all"] = "test",
                 adaptation: Literal["lam", "gam"] = "lam", gam_epochs: int | None = None,
                 gam_seed: int = 0, threads: int = 1, device: str | None = None) -> None:
        super().__init__()
        if batch_size < 0:
            raise InputError(f"data.batch_size must be >= 1, or 0 for the whole part in one batch; got {batch_size}")
        if cue_replicates is not None:
            if not cue_replicates:
                raise InputError("data.cue_replicates is empty: give one set of cue files per replicate, or leave "
                                 "it out")
            if cue_files is not None and dict(cue_files) != dict(cue_replicates[0]):
                raise InputError("data.cue_files must be data.cue_replicates[0] (the first replicate), or left out")
            cue_files = dict(cue_replicates[0])
        self.save_hyperparameters()
        self.data_dir, self.cues, self.detectors, self.cue_dir = data_dir, cues, detectors, cue_dir
        self.store, self.cue_files = store, cue_files
        self.cue_replicates = [dict(files) for files in cue_replicates] if cue_replicates else None
        self._replicates: dict[int, CueDataModule] = {}
        self.split, self.val_fraction, self.test_fraction, self.seed = split, val_fraction, test_fraction, seed
        self.regions = regions
        self.split_values = {"regions": (train_regions, test_regions), "datasets": (train_datasets, test_datasets)}
        self.target, self.balance, self.standardize = target, balance, standardize
        self.batch_size, self.predict_split = batch_size, predict_split
        self.adaptation, self.gam_epochs, self.gam_seed, self.threads = adaptation, gam_epochs, gam_seed, threads
        self.device = None if device is None else check_device(device, "data.device")
        self.adapted_spec: Path | None = None
        # Set by models that draw their own minibatches (FusionEnsemble): every loader yields its whole part once.
        self.whole_parts = False
        self._manifest: Manifest | None = None
        self._tables: dict[str, CueTable] | None = None
        self._data: _Prepared | None = None

    @classmethod
    def from_tables(cls, tables: Mapping[str, CueTable], manifest: Manifest | pd.DataFrame,
                    **kwargs: object) -> "CueDataModule":
        """A data module over precomputed cue tables (keyed by cue name); no detector is run."""
        module = cls(**kwargs)  # type: ignore[arg-type]
        module._tables = dict(tables)
        module._manifest = manifest if isinstance(manifest, Manifest) else Manifest(validate(manifest), Path("."))
        return module

    # --- values linked into the model (computed on first access) -----------
    @property
    def cue_dims(self) -> dict[str, int]:
        return dict(self._prepared().cue_dims)

    @property
    def cue_names(self) -> list[str]:
        return list(self._prepared().cue_dims)

    @property
    def cue_labels(self) -> dict[str, list[str]]:
        return dict(self._prepared().cue_labels)

    @property
    def class_names(self) -> list[str]:
        return list(head_map(self.target).classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def region_names(self) -> list[str]:
        return list(self._prepared().region_names)

    @property
    def group_names(self) -> list[str]:
        return list(self._prepared().group_names)

    @property
    def class_weights(self) -> list[float] | None:
        """Inverse class frequency on the training part (None when balance is 'sampler' or 'none')."""
        if self.balance != "weights":
            return None
        counts = np.bincount(self.part_tensors("train")[2].numpy(), minlength=self.num_classes)
        total = counts.sum()
        return [float(total / (self.num_classes * c)) if c else 0.0 for c in counts]

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            if self.data_dir is None:
                raise ValueError("CueDataModule needs data_dir (a manifest folder) or from_tables(...)")
            self._manifest = load_manifest(self.data_dir)
        return self._manifest

    def cue_metadata(self) -> dict[str, object]:
        """What a checkpoint trained on these cues must match, and the normalisation it was trained with."""
        data = self._prepared()
        return {"cue_dims": dict(data.cue_dims),
                "fingerprints": {c: t.fingerprint for c, t in data.tables.items()},
                "class_names": self.class_names, "target": self.target,
                "normalisation": None if data.stats is None else {c: {"mean": m, "std": s}
                                                                  for c, (m, s) in data.stats.items()}}

    def describe(self) -> str:
        """Where these cues come from, for messages: the manifest and the cue source."""
        source = (f"cue_files {sorted(self.cue_files)}" if self.cue_files else f"cue_dir {self.cue_dir}" if self.cue_dir
                  else "tables given to from_tables" if self._tables is not None
                  else f"detectors {self.detectors or DEFAULT_DETECTORS}")
        return f"{self._source()} with {source}"

    @property
    def n_replicates(self) -> int:
        return len(self.cue_replicates) if self.cue_replicates else 1

    def replicate(self, r: int) -> "CueDataModule":
        """The data module of replicate r (0: this one): the same rows and settings over replicate r's cue files."""
        if r == 0:
            return self
        if r not in self._replicates:
            if not 0 < r < self.n_replicates:
                raise IndexError(f"replicate {r} of {self.n_replicates} (data.cue_replicates)")
            settings = {k: v for k, v in self.hparams.items() if k in inspect.signature(CueDataModule).parameters}
            own = self._prepared()
            module = CueDataModule(**{**settings, "cue_files": self.cue_replicates[r], "cue_replicates": None})
            module._manifest = self._manifest  # read once: the replicates' rows are this manifest's
            other = module._prepared()
            if list(other.cue_dims.items()) != list(own.cue_dims.items()) or other.cue_labels != own.cue_labels:
                raise InputError(f"data.cue_replicates[{r}] gives cues {_dims(other.cue_dims)}, replicate 0 gives "
                                 f"{_dims(own.cue_dims)}: replicates must be the same cues (names, dims, columns)")
            if not other.frame.equals(own.frame):  # the rows come from the manifest and split alone: a bug if not
                raise RuntimeError(f"replicate {r} has other rows than replicate 0")
            self._replicates[r] = module
        return self._replicates[r]

    def stacked_tensors(self, part: str) -> tuple[torch.Tensor, ...]:
        """`part_tensors`, with x [R, n, D] and valid [R, n, n_cues] over the R replicates when there are several."""
        if self.n_replicates == 1:
            return self.part_tensors(part)
        parts = [self.replicate(r).part_tensors(part) for r in range(self.n_replicates)]
        return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]), *parts[0][2:]

    def use_normalisation(self, normalisation: Mapping[str, Mapping[str, torch.Tensor]] | None) -> None:
        """Rebuild the cue tensor with a checkpoint's training statistics (None: raw cues), not this data's own."""
        data = self._prepared()
        stats = None if normalisation is None else {
            c: (torch.as_tensor(v["mean"]), torch.as_tensor(v["std"])) for c, v in normalisation.items()}
        ids = data.frame["sample_id"].to_numpy()
        data.x, data.stats = _matrix({c: data.tables[c].align(ids) for c in data.cue_dims}, stats), stats

    def metadata(self, rows: np.ndarray | torch.Tensor | None = None) -> pd.DataFrame:
        """Kept-row metadata (sample_id, region, subject, label, group, dataset, part), optionally for some rows."""
        frame = self._prepared().frame
        return frame if rows is None else frame.iloc[np.asarray(rows)].reset_index(drop=True)

    # --- Lightning hooks ---------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._prepared()
        if stage == "fit":
            self._check_learnable(self._prepared().frame)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

    # --- internals -----------------------------------------------------------
    def part_tensors(self, part: str) -> tuple[torch.Tensor, ...]:
        """(x, valid, y, region, group, row index) of a part ('train', 'val', 'test' or 'all')."""
        data = self._prepared()
        rows = np.arange(len(data.frame)) if part == "all" else np.flatnonzero(data.frame["part"].to_numpy() == part)
        index = torch.as_tensor(rows, dtype=torch.long)
        return data.x[index], data.valid[index], data.y[index], data.region[index], data.group[index], index

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        tensors = self.stacked_tensors(part) if self.whole_parts else self.part_tensors(part)
        n = len(tensors[2])
        if n == 0:
            raise InputError(f"{self._source()}: the {part!r} part is empty (split {self.split!r}); check the split "
                             "options" + ("" if part != "test" else " or data.predict_split"))
        if self.whole_parts:  # the part itself, once per epoch (not gathered again by an index of all its rows)
            return DataLoader([tensors], batch_size=None)
        dataset = TensorDataset(*tensors)
        generator = torch.Generator().manual_seed(self.seed)
        if shuffle and self.balance == "sampler":
            counts = torch.bincount(tensors[2], minlength=self.num_classes).float()
            sampler = WeightedRandomSampler(1.0 / counts[tensors[2]], n, generator=generator)
        elif shuffle:
            sampler = RandomSampler(dataset, generator=generator)
        else:
            sampler = SequentialSampler(dataset)
        size = n if self.batch_size <= 0 else min(self.batch_size, n)
        # batch_size=None + a batch sampler: TensorDataset is indexed with whole index tensors (no per-sample collate)
        return DataLoader(dataset, sampler=_IndexBatches(sampler, size, drop_last=False), batch_size=None)

    def _source(self) -> str:
        if self.data_dir is None:
            return "the given manifest"
        path = Path(self.data_dir)
        return str(path / MANIFEST_FILE if path.is_dir() else path)

    def _check_learnable(self, frame: pd.DataFrame) -> None:
        """InputError before any training (GAM fine-tuning included) when the training part is too thin."""
        classes = np.asarray(self.class_names, dtype=object)
        labelled = frame.assign(label=classes[[head_map(self.target).index(x) for x in frame["label"]]])
        hint = ("; hold out more subjects per region (split 'subject' draws val subjects from regions with 3 or "
                "more; a larger data.val_fraction helps with 2), or give 'val' rows with split: manifest")
        check_learnable(labelled, f"{self._source()} (split {self.split!r}, target {self.target!r})",
                        need_val=True, val_hint=hint)

    def _prepared(self) -> _Prepared:
        if self._data is None:
            self._data = self._prepare()
        return self._data

    def _prepare(self) -> _Prepared:
        table = self.manifest.table
        if self.regions:
            table = table[table["region"].isin(self.regions)]
        head = head_map(self.target)
        y = np.array([head.index(label) for label in table["label"]], dtype=np.int64)
        table, y = table[y >= 0].reset_index(drop=True), y[y >= 0]
        train_values, test_values = self.split_values.get(self.split, (None, None))
        parts = assign_parts(table, self.split, self.val_fraction, self.test_fraction, self.seed,
                             train_values, test_values)
        keep = np.array([p is not None for p in parts])
        table, y, parts = table[keep].reset_index(drop=True), y[keep], parts[keep]
        if self.split == "manifest":
            _warn_crossing_subjects(table["subject"], parts)
        groups = table["group"].fillna("all").astype(str) if "group" in table.columns else pd.Series("all", index=table.index)
        frame = pd.DataFrame({"sample_id": table["sample_id"], "region": table["region"], "subject": table["subject"],
                              "label": table["label"], "group": groups, "dataset": table["dataset"], "part": parts})
        tables = self._cue_tables(frame)
        names = list(tables)
        aligned = [tables[c].align(frame["sample_id"].to_numpy()) for c in names]
        train = frame["part"].to_numpy() == "train"
        stats = {c: _fit_stats(t.values.astype(np.float32), t.valid, train) for c, t in zip(names, aligned)} \
            if self.standardize else None
        region_names = sorted(frame["region"].unique())
        group_names = sorted(frame["group"].unique())
        return _Prepared(
            frame=frame, x=_matrix(dict(zip(names, aligned)), stats),
            valid=torch.from_numpy(np.stack([t.valid for t in aligned], axis=1).astype(bool)),
            y=torch.tensor(y), region=torch.tensor(_codes(frame["region"], region_names)),
            group=torch.tensor(_codes(frame["group"], group_names)),
            cue_dims={c: t.dim for c, t in zip(names, aligned)},
            cue_labels={c: list(t.labels) for c, t in zip(names, aligned)},
            region_names=region_names, group_names=group_names, tables=tables, stats=stats)

    def _cue_tables(self, frame: pd.DataFrame) -> dict[str, CueTable]:
        """The selected cues' tables (from_tables, cue_dir or the detectors through the cue store)."""
        if self._tables is None and self.cue_files:
            self._tables = {name: _load_table(str(path)) for name, path in self.cue_files.items()}
        if self._tables is None and self.cue_dir is not None:
            files = sorted(Path(self.cue_dir).glob("*.npz"))
            if not files:
                raise FileNotFoundError(f"cue_dir {self.cue_dir}: no <cue>.npz CueTable files")
            self._tables = {f.stem: CueTable.load(f) for f in files}
        if self._tables is not None:
            if self.adaptation == "gam":
                raise ValueError("adaptation 'gam' needs detectors (a detectors spec), not precomputed cue tables")
            names = parse_cues(self.cues, list(self._tables))
            return {n: self._tables[n] for n in names}
        return self._extract(frame)

    def _detector_spec(self) -> Path:
        spec = Path(self.detectors) if self.detectors else default_detector_spec()
        if spec is None or not spec.exists():
            raise FileNotFoundError(f"detectors spec {spec or DEFAULT_DETECTORS} not found; pass data.detectors "
                                    "or precomputed cues (cue_dir / from_tables)")
        return spec

    def _artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.store if self.store else default_store_root())

    def _extract(self, frame: pd.DataFrame) -> dict[str, CueTable]:
        from mcam.cues.extract import build_detectors, extract_cues

        spec = self._detector_spec()
        detectors = build_detectors(spec, device=self.device)
        names = parse_cues(self.cues, list(detectors))
        chosen = {n: detectors[n] for n in names}
        if self.adaptation == "gam":
            chosen.update(self._adapt(spec, frame, chosen))
        tables = extract_cues(self.manifest, chosen, self._artifacts().root / "cues", progress=False,
                              threads=self.threads)
        return {n: tables[n] for n in names}

    def _adapt(self, spec: Path, frame: pd.DataFrame, detectors: Mapping[str, object]) -> dict[str, object]:
        """GAM: fine-tune the trainable detectors on the training part (never val/test rows); rebuilt from the
        adapted spec (a store entry keyed by those rows' content, the base weights' content, epochs and seed)."""
        from mcam.cues.extract import build_detectors
        from mcam.cues.pretrain import adapt_detectors

        trainable = [n for n, d in detectors.items() if getattr(d, "trainable", False)]
        if not trainable:
            raise ValueError(f"adaptation 'gam': none of the cues {list(detectors)} is trainable")
        self._check_learnable(frame)  # fine-tuning is training: refuse thin data before it
        train_ids = frame.loc[frame["part"] == "train", "sample_id"]
        train = self.manifest.subset(self.manifest.table["sample_id"].isin(train_ids))
        self.adapted_spec = adapt_detectors(self._artifacts(), spec, train, trainable, epochs=self.gam_epochs,
                                            seed=self.gam_seed, threads=self.threads, device=self.device)
        rebuilt = build_detectors(self.adapted_spec, device=self.device)
        return {n: rebuilt[n] for n in trainable}


def _fit_stats(values: np.ndarray, valid: np.ndarray, train: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and divisor (std; 1 where ~0) of the valid training rows; (0, 1) when there are none."""
    fit_rows = values[train & valid]
    if not len(fit_rows):
        return torch.zeros(values.shape[1]), torch.ones(values.shape[1])
    mean, std = fit_rows.mean(axis=0), fit_rows.std(axis=0)
    divisor = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(divisor)


def _matrix(aligned: Mapping[str, CueTable], stats: Stats | None) -> torch.Tensor:
    """The cue tensor [N, sum D]: each cue standardised with `stats` (None: as they are); invalid rows are 0."""
    blocks = []
    for cue, table in aligned.items():
        values = table.values.astype(np.float32)  # a copy: the table's own values stay untouched
        if stats is not None:
            values = (values - stats[cue][0].numpy()) / stats[cue][1].numpy()
        values[~table.valid] = 0.0
        blocks.append(values.astype(np.float32, copy=False))
    return torch.from_numpy(np.concatenate(blocks, axis=1))


def check_cue_metadata(saved: Mapping[str, object], current: Mapping[str, object], checkpoint: str,
                       data: str) -> None:
    """InputError naming both sides when a checkpoint's cues (names, dims, order, detector fingerprints) or
    classes differ from the data's: its weights would read other numbers as the cues it learnt."""
    saved_dims, dims = dict(saved["cue_dims"]), dict(current["cue_dims"])
    if saved_dims == dims and list(saved_dims) != list(dims):  # the same cues, another order of the cue blocks
        raise InputError(f"{checkpoint} was trained on cues in the order {list(saved_dims)}; {data} gives "
                         f"{list(dims)}: pass data.cues {','.join(saved_dims)} to keep the checkpoint's order")
    if list(saved_dims.items()) != list(dims.items()):
        raise InputError(f"{checkpoint} was trained on cues {_dims(saved_dims)}; {data} gives {_dims(dims)}: "
                         "predict with the checkpoint's cue set (data.cues, the cue files) or fit on these cues")
    if list(saved["class_names"]) != list(current["class_names"]):
        raise InputError(f"{checkpoint} predicts classes {list(saved['class_names'])}; {data} has "
                         f"{list(current['class_names'])} (data.target {current.get('target')!r}): use the "
                         f"checkpoint's target {saved.get('target')!r}")
    fingerprints = dict(current.get("fingerprints") or {})
    saved_fps = dict(saved.get("fingerprints") or {})
    differ = [c for c, fp in saved_fps.items() if c in fingerprints and fingerprints[c] != fp]
    if differ:
        shown = "; ".join(f"{c}: checkpoint {saved_fps[c]}, data {fingerprints[c]}" for c in differ)
        raise InputError(f"{checkpoint} was trained on cues from other detector weights than {data} "
                         f"(detector fingerprints {shown}): extract the cues with the checkpoint's detectors "
                         "or fit on these cues")


def _dims(dims: Mapping[str, int]) -> str:
    return "[" + ", ".join(f"{c} ({d})" for c, d in dims.items()) + "]"
