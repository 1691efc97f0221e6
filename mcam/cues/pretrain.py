"""Source pre-training (LAM) and target fine-tuning (GAM) of trainable detectors, written as a detector spec.

One training path, `train_detectors`, writes `<name>.pt`, `<name>.metrics.json` and a
`detectors.yaml` into a folder. `stored_detectors` runs it into the content-addressed artifact
store (keyed by the training rows' content, the base detectors' fingerprints, the settings and the
seed); `adapt_detectors` is GAM, the one way `mcam fit` and every suite adapt detectors to a set
of training rows; `pretrain_detectors` is `mcam pretrain`'s user-chosen output folder.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from mcam.cues.extract import build_detectors, default_clip_column, load_spec, training_set
from mcam.detector import Detector, default_device
from mcam.determinism import training_threads
from mcam.io import write_atomic
from mcam.errors import InputError
from mcam.manifest import MANIFEST_FILE, Manifest, validate
from mcam.registry import create_detector, detector_class
from mcam.splits import check_learnable, train_val_split
from mcam.store import ArtifactStore

log = logging.getLogger(__name__)

SPEC_FILE = "detectors.yaml"
DEFAULT_PRECISION = "32-true"  # Lightning's name for full fp32 training
PRECISIONS = (DEFAULT_PRECISION, "bf16-mixed", "16-mixed")  # Lightning precisions `mcam pretrain` offers
MADE_FROM = "made_from.json"
SpecLike = Mapping[str, Mapping[str, Any] | None] | str | Path


def _initial_config(name: str, base: Mapping[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """Where a trained detector starts: its base spec entry (fine-tuning), else an explicit seeded random init."""
    if name in base:
        return dict(base[name])
    init: dict[str, Any] = {"weights": "random"}
    if "seed" in inspect.signature(detector_class(name).__init__).parameters:
        init["seed"] = seed
    return init


def _check_names(manifest: Manifest, names: Sequence[str], train: Sequence[str], region: str | None) -> None:
    if region is not None and region not in manifest.regions:
        raise InputError(f"region {region!r} not in the manifest; regions: {manifest.regions}")
    untrainable = [n for n in train if not detector_class(n).trainable]
    if untrainable:
        raise InputError(f"detectors {untrainable} are not trainable; list them in `names` only")
    missing = [n for n in train if n not in names]
    if missing:
        raise InputError(f"detectors {missing} are to be trained but not among the spec's names {list(names)}")


def _check_learnable(manifest: Manifest, train: Sequence[str], val_fraction: float, seed: int,
                     region: str | None = None) -> None:
    """Refuse training rows too thin to learn from (one class; one subject when a val part is asked for)."""
    if not train:
        return
    if not manifest.labelled:
        where = f"{manifest.root / MANIFEST_FILE}"
        refusing = [n for n in train if not detector_class(n).learns_from_aus]
        if refusing:
            raise InputError(f"{where}: rows without emotion labels (an AU corpus) train AU regressors only; "
                             f"{refusing} need labelled rows")
        if val_fraction > 0 and manifest.table["subject"].nunique() < 2:
            raise InputError(f"{where}: one subject; a subject-disjoint validation part needs at least two")
        return
    _, val_m = train_val_split(manifest, val_fraction, seed)
    is_val = manifest.table["sample_id"].isin(val_m.table["sample_id"]) if val_m is not None else False
    frame = manifest.table.assign(part=np.where(is_val, "val", "train"))
    rows = f"{len(manifest)} rows" + (f" (region {region!r})" if region is not None else "")
    check_learnable(frame, f"training {list(train)} on {rows} of {manifest.root / MANIFEST_FILE}",
                    need_val=val_fraction > 0, val_hint="; val_fraction 0 (--val-fraction 0) trains without one")


def train_detectors(out_dir: str | Path, manifest: Manifest, names: Sequence[str], train: Sequence[str], *,
                    base_spec: SpecLike | None = None, epochs: int | None = None, seed: int = 0,
                    val_fraction: float = 0.2, threads: int = 1, device: str | None = None,
                    precision: str = DEFAULT_PRECISION) -> Path:
    """Train the detectors in `train` on `manifest` and write `out_dir/detectors.yaml` listing all `names`.

    Trained detectors start from their `base_spec` entry (GAM: fine-tuning) or from an explicit
    random init seeded with `seed` (source pre-training); `seed` also drives their training. A
    seeded `val_fraction` of subjects is held out for the detectors' own metrics. Detectors not in
    `train` are listed with their base entry (or defaults). Uses exactly `threads` threads, on `device` (None: the
    default, cuda when visible; the spec it writes names no device: whoever reads it chooses), at the Lightning
    `precision` given (detectors whose `fit` has no such option refuse any but the default). Callers refuse
    rows too thin to learn from first (`_check_learnable`), before any other work.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = load_spec(base_spec) if base_spec is not None else {}
    train_m, val_m = train_val_split(manifest, val_fraction, seed)
    spec: dict[str, dict[str, Any]] = {}
    for name in names:
        kept = _relative(base.get(name, {}), out_dir)
        if name not in train:
            spec[name] = kept
            continue
        detector = create_detector(name, **{**_initial_config(name, base, seed), **_on(device)})
        with training_threads(threads):
            metrics = _train(detector, train_m, val_m, epochs, seed, precision)
        detector.save(out_dir / f"{name}.pt")
        write_atomic(out_dir / f"{name}.metrics.json", json.dumps({
            "detector": name, "seed": seed, "epochs": epochs, "val_fraction": val_fraction, "metrics": metrics,
            "subjects_train": int(train_m.table["subject"].nunique()),
            "subjects_val": 0 if val_m is None else int(val_m.table["subject"].nunique())}, indent=2, default=str))
        log.info("%s: trained in %.1f s %s", name, metrics["seconds"], metrics)
        spec[name] = {**{k: v for k, v in kept.items() if k != "weights"}, "weights": f"{name}.pt"}
    path = out_dir / SPEC_FILE
    write_atomic(path, yaml.safe_dump({"detectors": spec}, sort_keys=False))
    return path


def _on(device: str | None) -> dict[str, str]:
    """A detector's init args for `device` (none for the default)."""
    return {} if device is None else {"device": device}


def _made_from(manifest: Manifest, names: Sequence[str], train: Sequence[str], base_spec: SpecLike | None,
               epochs: int | None, seed: int, val_fraction: float, threads: int,
               device: str | None, precision: str = DEFAULT_PRECISION) -> dict[str, Any]:
    """What a set of trained detectors is made of: rows' content, every starting detector's fingerprint, settings,
    the version of each trained detector's fit procedure, and the thread count, device type and precision it
    trains with (all change the trained weights)."""
    base = load_spec(base_spec) if base_spec is not None else {}
    starts = {n: _initial_config(n, base, seed) if n in train else base.get(n, {}) for n in names}
    fingerprints = {n: d.fingerprint() for n, d in build_detectors(starts, device=device).items()}
    return {"rows": manifest.fingerprint(), "names": list(names), "train": list(train), "start": fingerprints,
            "epochs": epochs, "seed": seed, "val_fraction": val_fraction, "threads": threads,
            "device": (device or default_device()).split(":")[0], "precision": precision,
            "fit": {n: detector_class(n).fit_version for n in train}}


def stored_detectors(store: ArtifactStore, manifest: Manifest, names: Sequence[str], train: Sequence[str], *,
                     base_spec: SpecLike | None = None, epochs: int | None = None, seed: int = 0,
                     val_fraction: float = 0.2, threads: int = 1, purpose: str = "pretrain",
                     device: str | None = None, precision: str = DEFAULT_PRECISION) -> Path:
    """`train_detectors` into the artifact store: trained once per content key, shared by every caller after."""
    _check_names(manifest, names, train, None)
    _check_learnable(manifest, train, val_fraction, seed)
    made_from = {"purpose": purpose, **_made_from(manifest, names, train, base_spec, epochs, seed, val_fraction,
                                                  threads, device, precision)}
    base = load_spec(base_spec) if base_spec is not None else {}
    depends = tuple(sorted({f"detectors/{Path(c['weights']).parent.name}" for c in base.values()
                            if _in_store(c.get("weights"), store)}))
    folder = store.build("detectors", made_from, depends_on=depends, make=lambda scratch: train_detectors(
        scratch, manifest, names, train, base_spec=base_spec, epochs=epochs, seed=seed, val_fraction=val_fraction,
        threads=threads, device=device, precision=precision))
    return folder / SPEC_FILE


def au_corpus_base(store: ArtifactStore, corpus: Manifest, names: Sequence[str], *, source: Manifest | None = None,
                   source_val_fraction: float = 0.2, epochs: int | None = None, seed: int = 0, threads: int = 1,
                   device: str | None = None, precision: str = DEFAULT_PRECISION) -> dict[str, dict[str, Any]]:
    """The AU detectors `names` with their regressors pre-trained on an AU corpus (rows with ground-truth AUs and no
    emotion labels, standing in for DISFA/BP4D; a store entry per detector), as base spec entries for the source
    pre-training: the corpus weights with `regressor: frozen`, so the source region trains only their AU -> emotion
    SVM.

    With `source` (the source pre-training's rows), the AU-coded rows of its train part
    (`train_val_split(source, source_val_fraction, seed)`: the rows the SVM trains on) join the corpus
    (`au_coded_rows`), as real AU detectors train on several AU-coded datasets (DISFA, BP4D, CK+'s FACS codes)."""
    if not names:
        return {}
    rows = corpus if source is None else au_coded_rows(corpus, train_val_split(source, source_val_fraction, seed)[0])
    base: dict[str, dict[str, Any]] = {}
    for name in names:  # each trains alone from its own seeded start: a suite with au and mesh_au reuses au's entry
        base |= frozen_regressors(stored_detectors(store, rows, [name], [name], epochs=epochs, seed=seed,
                                                   val_fraction=0.2, threads=threads, purpose="au_corpus",
                                                   device=device, precision=precision))
    return base


def au_coded_rows(corpus: Manifest, coded: Manifest) -> Manifest:
    """The AU corpus and the rows of `coded` whose AUs are annotated, as one AU corpus (their emotion labels left out,
    so they train AU regressors only; paths relative to the two folders' common parent). `corpus` itself when
    `coded` carries no AU columns (e.g. FER2013) or none of its rows is annotated."""
    aus = [c for c in corpus.au_columns if c in coded.au_columns]
    annotated = coded.table[aus].notna().any(axis=1) if aus else pd.Series(False, index=coded.table.index)
    if not annotated.any():
        return corpus
    root = Path(os.path.commonpath([corpus.root.resolve(), coded.root.resolve()]))
    columns = [c for c in corpus.table.columns if c in coded.table.columns and c not in ("clip", "micro_clip")]
    parts = []
    for part in (corpus, coded.subset(annotated)):
        table = part.table[columns].assign(label="")
        folder = os.path.relpath(part.root.resolve(), root)
        parts.append(table.assign(path=[Path(folder, p).as_posix() for p in table["path"]]))
    return Manifest(validate(pd.concat(parts, ignore_index=True), f"{corpus.root} + {coded.root}", labelled=False),
                    root)


def frozen_regressors(spec: SpecLike) -> dict[str, dict[str, Any]]:
    """A spec of AU detectors trained on an AU corpus as base entries whose next training fits only their SVM."""
    return {name: {**config, "regressor": "frozen"} for name, config in load_spec(spec).items()}


def adapt_detectors(store: ArtifactStore, base_spec: SpecLike, train_rows: Manifest, fine_tune: Sequence[str], *,
                    epochs: int | None = None, seed: int = 0, threads: int = 1, device: str | None = None) -> Path:
    """GAM: fine-tune `fine_tune` of `base_spec` on exactly `train_rows` (a fold's train part: never its val or
    test rows); returns the adapted detectors.yaml (a store entry) listing every detector of the base spec."""
    names = list(load_spec(base_spec))
    if not fine_tune:
        raise InputError(f"GAM: nothing to fine-tune among {names}")
    return stored_detectors(store, train_rows, names, list(fine_tune), base_spec=base_spec, epochs=epochs,
                            seed=seed, val_fraction=0.0, threads=threads, purpose="gam", device=device)


def pretrain_detectors(manifest: Manifest, names: Sequence[str], out_dir: str | Path, train: Sequence[str],
                       region: str | None = None, val_fraction: float = 0.2, seed: int = 0,
                       base_spec: SpecLike | None = None, epochs: int | None = None, force: bool = False,
                       threads: int = 1, device: str | None = None, precision: str = DEFAULT_PRECISION) -> Path:
    """`mcam pretrain`: `train_detectors` into a folder of the user's choosing (optionally one region).

    Skipped when the folder already holds detectors made from the same content and settings
    (`made_from.json`), unless `force`.
    """
    _check_names(manifest, names, train, region)
    if region is not None:
        manifest = manifest.subset(manifest.table["region"] == region)
    _check_learnable(manifest, train, val_fraction, seed, region)
    out_dir = Path(out_dir)
    made_from = {"region": region, **_made_from(manifest, names, train, base_spec, epochs, seed, val_fraction,
                                                threads, device, precision)}
    record = out_dir / MADE_FROM
    if not force and (out_dir / SPEC_FILE).is_file() and record.is_file() \
            and json.loads(record.read_text()) == json.loads(json.dumps(made_from, default=str)):
        log.info("%s: detectors already trained from the same data and settings; skipping (force retrains)", out_dir)
        return out_dir / SPEC_FILE
    path = train_detectors(out_dir, manifest, names, train, base_spec=base_spec, epochs=epochs, seed=seed,
                           val_fraction=val_fraction, threads=threads, device=device, precision=precision)
    write_atomic(record, json.dumps(made_from, indent=2, default=str))
    return path


def _train(detector: Detector, train_m: Manifest, val_m: Manifest | None, epochs: int | None,
           seed: int, precision: str) -> dict[str, Any]:
    """Fit on faces loaded for the detector's input kind; micro clips (`micro_clip`) feed clip detectors."""
    clip_column = default_clip_column(train_m)
    start = time.perf_counter()
    train = training_set(train_m, detector.input_kind, clip_column=clip_column)
    val = None if val_m is None else training_set(val_m, detector.input_kind, clip_column=clip_column)
    kwargs: dict[str, Any] = {"seed": seed} if epochs is None else {"seed": seed, "epochs": epochs}
    if precision != DEFAULT_PRECISION:
        if "precision" not in inspect.signature(detector.fit).parameters:
            raise InputError(f"{detector.name}: its fit has no precision option; train it at {DEFAULT_PRECISION}")
        kwargs["precision"] = precision
    metrics = {k: float(v) for k, v in (detector.fit(train, val, **kwargs) or {}).items()}
    return {**metrics, "n_train": len(train.faces), "n_val": 0 if val is None else len(val.faces),
            "seconds": round(time.perf_counter() - start, 2)}


def _in_store(weights: object, store: ArtifactStore) -> bool:
    if not isinstance(weights, str) or not Path(weights).is_file():
        return False
    return Path(weights).resolve().parent.parent == (store.root / "detectors").resolve()


def _relative(config: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Init args for a spec in `out_dir`: a weights file beside or inside `out_dir`'s parent becomes a relative
    path (store entries refer to each other portably); others stay as given."""
    config = dict(config)
    weights = config.get("weights")
    if isinstance(weights, str) and Path(weights).is_absolute():
        home = out_dir.resolve().parent
        if Path(weights).resolve().is_relative_to(home):
            config["weights"] = os.path.relpath(Path(weights).resolve(), out_dir.resolve())
    return config
