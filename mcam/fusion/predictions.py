"""Per-sample fusion predictions that know their column groups (as py-feat's `Fex` knows its AU/emotion columns).

A `Predictions` is a pandas DataFrame (subclass) of one row per test sample:

- metadata: sample_id, region, subject, label, group, dataset, part, ... (whatever the data module gives)
- `pred`: the predicted class name (argmax of the probabilities)
- one probability column per class and one attention (cue weight) column per cue

On disk (predictions.csv) and inside the frame the group columns are named `prob_<class>` and `weight_<cue>`, so files
written before this class existed stay readable and plain pandas code keeps working. That naming is known here
only: everything else asks for `classes`, `cues`, `probabilities`, `weights`, `metadata`, `weights_by(...)`.
"""
from __future__ import annotations

from os import PathLike
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

PROB_PREFIX, WEIGHT_PREFIX = "prob_", "weight_"
PREDICTED, LABEL = "pred", "label"


def prob_column(class_name: str) -> str:
    """The column holding the probability of `class_name`."""
    return f"{PROB_PREFIX}{class_name}"


def weight_column(cue: str) -> str:
    """The column holding the attention weight of `cue` (also the per-run mean weight's column in results.csv)."""
    return f"{WEIGHT_PREFIX}{cue}"


def _last_block(columns: Sequence[str], prefix: str, numeric: Mapping[str, bool] | None) -> list[str]:
    """Names after `prefix` of the last contiguous run of `prefix<name>` columns (numeric ones when dtypes are known).

    Predictions are written metadata first, then pred, the probabilities and the weights, each group contiguous, so
    a metadata column that merely starts like a group column (e.g. 'weight_kg') is not taken for one.
    """
    runs: list[list[str]] = []
    previous = -2
    for i, column in enumerate(map(str, columns)):
        if column.startswith(prefix) and len(column) > len(prefix) and (numeric is None or numeric.get(column, True)):
            if i != previous + 1:
                runs.append([])
            runs[-1].append(column[len(prefix):])
            previous = i
    return runs[-1] if runs else []


def infer_groups(columns: Iterable[Any], numeric: Mapping[str, bool] | None = None) -> tuple[list[str], list[str]]:
    """(classes, cues) from column names in the on-disk layout; `numeric` (column -> is numeric) rules out text
    columns such as a metadata 'prob_source'."""
    columns = [str(c) for c in columns]
    return _last_block(columns, PROB_PREFIX, numeric), _last_block(columns, WEIGHT_PREFIX, numeric)


def _floats(values: Any) -> np.ndarray:
    values = np.asarray(values)
    return values if np.issubdtype(values.dtype, np.floating) else values.astype(float)


def _numeric(frame: pd.DataFrame) -> dict[str, bool]:
    return {str(c): pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}


class Predictions(pd.DataFrame):
    """Per-sample predictions: metadata, `pred`, class probabilities and cue weights (see the module docstring).

    Pandas operations return Predictions that keep the groups (rows kept, columns added); groups whose columns an
    operation dropped are left out. A frame built without explicit groups (e.g. `Predictions(df)`, or the result of
    pd.concat) infers them from its column names.
    """

    _metadata = ["_classes", "_cues"]
    _classes: list[str] | None = None
    _cues: list[str] | None = None

    @property
    def _constructor(self) -> type["Predictions"]:
        return Predictions

    # --- constructors --------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, metadata: pd.DataFrame, probs: np.ndarray, weights: np.ndarray | None,
              class_names: Sequence[str], cue_names: Sequence[str]) -> "Predictions":
        """Metadata rows [N] + probabilities [N, K] (class_names order) + cue weights [N, C] (cue_names order)."""
        probs = _floats(probs)  # float32 stays float32: the CSV keeps its short numbers
        weights = np.zeros((len(probs), 0), dtype=probs.dtype) if weights is None else _floats(weights)
        class_names, cue_names = [str(c) for c in class_names], [str(c) for c in cue_names]
        if probs.ndim != 2 or probs.shape != (len(metadata), len(class_names)):
            raise ValueError(f"probabilities of shape {probs.shape} do not fit {len(metadata)} rows x "
                             f"{len(class_names)} classes")
        if weights.ndim != 2 or weights.shape != (len(metadata), len(cue_names)):
            raise ValueError(f"weights of shape {weights.shape} do not fit {len(metadata)} rows x "
                             f"{len(cue_names)} cues")
        for kind, names in (("class", class_names), ("cue", cue_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names: {names}")
        groups = {prob_column(c): probs[:, k] for k, c in enumerate(class_names)}
        groups.update({weight_column(c): weights[:, i] for i, c in enumerate(cue_names)})
        clash = sorted(set(metadata.columns) & ({PREDICTED} | set(groups)))
        if clash:
            raise ValueError(f"metadata columns {clash} clash with the prediction columns")
        predicted = np.asarray(class_names, dtype=object)[probs.argmax(1)] if len(class_names) else None
        frame = pd.concat([metadata.reset_index(drop=True),
                           pd.DataFrame({PREDICTED: predicted, **groups}, index=range(len(metadata)))], axis=1)
        return cls._with_groups(frame, class_names, cue_names)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, classes: Sequence[str] | None = None,
                   cues: Sequence[str] | None = None) -> "Predictions":
        """A frame in the on-disk layout; classes/cues inferred from the column names unless given."""
        if isinstance(frame, Predictions) and classes is None and cues is None:
            return frame
        inferred = infer_groups(frame.columns, _numeric(frame))
        classes = inferred[0] if classes is None else [str(c) for c in classes]
        cues = inferred[1] if cues is None else [str(c) for c in cues]
        missing = [c for c in [*map(prob_column, classes), *map(weight_column, cues)] if c not in frame.columns]
        if missing:
            raise KeyError(f"predictions lack the columns {missing}")
        return cls._with_groups(frame, classes, cues)

    @classmethod
    def read_csv(cls, path: str | PathLike, metadata: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 cues: Sequence[str] | None = None) -> "Predictions":
        """A predictions.csv; groups inferred from the header unless given. Metadata and `pred` are read as text
        (sample ids such as '007' stay as written); `metadata` limits which metadata columns are read."""
        head = pd.read_csv(path, nrows=100)
        header = [str(c) for c in head.columns]
        inferred = infer_groups(header, _numeric(head) if len(head) else None)
        classes = inferred[0] if classes is None else [str(c) for c in classes]
        cues = inferred[1] if cues is None else [str(c) for c in cues]
        groups = [*map(prob_column, classes), *map(weight_column, cues)]
        missing = [c for c in groups if c not in header]
        if missing:
            raise KeyError(f"{path}: no columns {missing}")
        others = [c for c in header if c not in groups]
        if metadata is not None:
            absent = [c for c in metadata if c not in header]
            if absent:
                raise KeyError(f"{path}: no metadata columns {absent}")
            others = [c for c in others if c in set(metadata) | {PREDICTED}]
        frame = pd.read_csv(path, usecols=[*others, *groups], dtype={c: str for c in others} | {c: float for c in groups})
        return cls._with_groups(frame[[c for c in header if c in frame.columns]], classes, cues)

    @classmethod
    def average(cls, predictions: Sequence[pd.DataFrame], key: str = "sample_id") -> "Predictions":
        """Several models' predictions of the same samples as one: the mean class probabilities and cue weights
        (rows matched by `key`), pred = argmax of the mean probabilities, metadata and row order of the first."""
        if not predictions:
            raise ValueError("no predictions to average")
        members = [cls.from_frame(p) for p in predictions]
        first = members[0]
        if not first[key].is_unique:
            raise ValueError(f"predictions to average: {key} is not unique")
        order = pd.Index(first[key].astype(str))
        probs, weights = [], []
        for i, member in enumerate(members):
            if member.classes != first.classes or member.cues != first.cues:
                raise ValueError(f"predictions {i} have classes {member.classes} and cues {member.cues}; the first "
                                 f"has {first.classes} and {first.cues}")
            rows = pd.Index(member[key].astype(str)).get_indexer(order)
            if len(member) != len(order) or (rows < 0).any():
                raise ValueError(f"predictions {i} hold other samples ({key}) than the first")
            probs.append(member.probabilities.to_numpy(dtype=float)[rows])
            weights.append(member.weights.to_numpy(dtype=float)[rows])
        # float32, as written by the fusion runs: the averaged file keeps their short numbers
        return cls.build(first.metadata, np.mean(probs, axis=0).astype(np.float32),
                         np.mean(weights, axis=0).astype(np.float32), first.classes, first.cues)

    @classmethod
    def _with_groups(cls, frame: pd.DataFrame, classes: Sequence[str], cues: Sequence[str]) -> "Predictions":
        result = cls(frame)
        result._classes, result._cues = list(classes), list(cues)
        return result

    def to_csv(self, path_or_buf: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """The on-disk layout (prob_<class>, weight_<cue> columns), without the index unless asked for."""
        kwargs.setdefault("index", False)
        return super().to_csv(path_or_buf, **kwargs)

    # --- groups ----------------------------------------------------------------------------------------------------
    def _groups(self) -> tuple[list[str], list[str]]:
        if self._classes is None or self._cues is None:
            classes, cues = infer_groups(self.columns, _numeric(self))
            return (classes if self._classes is None else list(self._classes),
                    cues if self._cues is None else list(self._cues))
        return list(self._classes), list(self._cues)

    @property
    def classes(self) -> list[str]:
        """Class names, in probability-column order."""
        return [c for c in self._groups()[0] if prob_column(c) in self.columns]

    @property
    def cues(self) -> list[str]:
        """Cue names, in weight-column order."""
        return [c for c in self._groups()[1] if weight_column(c) in self.columns]

    @property
    def probability_columns(self) -> list[str]:
        return [prob_column(c) for c in self.classes]

    @property
    def weight_columns(self) -> list[str]:
        return [weight_column(c) for c in self.cues]

    @property
    def probabilities(self) -> pd.DataFrame:
        """[N, K] class probabilities; columns are the class names."""
        classes = self.classes
        return pd.DataFrame(self[[prob_column(c) for c in classes]].to_numpy(dtype=float), index=self.index,
                            columns=pd.Index(classes, dtype=object))

    @property
    def weights(self) -> pd.DataFrame:
        """[N, n_cues] attention weight of each cue; columns are the cue names (no columns when the frame has none)."""
        cues = self.cues
        return pd.DataFrame(self[[weight_column(c) for c in cues]].to_numpy(dtype=float).reshape(len(self), len(cues)),
                            index=self.index, columns=pd.Index(cues, dtype=object))

    @property
    def metadata(self) -> pd.DataFrame:
        """The other columns (sample_id, region, subject, label, ...): neither `pred` nor a group column."""
        groups = {*self.probability_columns, *self.weight_columns, PREDICTED}
        return pd.DataFrame(self[[c for c in self.columns if c not in groups]])

    @property
    def predicted(self) -> pd.Series:
        """Predicted class name per row (the `pred` column, else the argmax of the probabilities)."""
        if PREDICTED in self.columns:
            return pd.Series(self[PREDICTED], name=PREDICTED)
        probs = self.probabilities
        return pd.Series(np.asarray(probs.columns, dtype=object)[probs.to_numpy().argmax(1)], index=self.index,
                         name=PREDICTED)

    @property
    def correct(self) -> pd.Series:
        """Whether each row's prediction is its true label."""
        return pd.Series(self[LABEL].astype(str).to_numpy() == self.predicted.astype(str).to_numpy(),
                         index=self.index, name="correct")

    def mean_weights(self) -> pd.Series:
        """Mean attention weight per cue over all rows."""
        return self.weights.mean()

    def weights_by(self, column: str | Sequence[str] = "region") -> pd.DataFrame:
        """Mean cue weight (columns: cues) per value of a metadata column (rows), e.g. 'region', 'label', 'group'."""
        keys = [column] if isinstance(column, str) else list(column)
        table = self.weights.groupby([self[k] for k in keys], sort=True).mean()
        return pd.DataFrame(table)
