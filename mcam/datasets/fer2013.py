"""FER2013 (`fer2013.csv`: emotion, pixels, Usage), optionally relabelled by FER+ (`fer2013new.csv`)."""
from __future__ import annotations

import csv
from contextlib import ExitStack
from typing import Iterator

import numpy as np

from mcam.datasets.base import AMBIGUOUS_LABEL, BAD_ROW, MISSING_FILE, Adapter, Record, Reject

USAGE_SPLITS: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FERPLUS_VOTES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")


class FER2013(Adapter):
    """FER2013 as published on Kaggle.

    Layout: ROOT/fer2013.csv with columns emotion (0-6), pixels (48*48 space-separated gray values), Usage.
    Assumptions: images are already aligned 48x48 face crops, so no face detection runs (cropped=True).
    Usage Training/PublicTest/PrivateTest -> split train/val/test. FER2013 has no subject ids: each row is
    its own subject `fer2013-<row>` (subject-disjoint folds are therefore row-disjoint only).
    The CSV is streamed row by row (bounded memory).
    FER+ (option `ferplus: fer2013new.csv`, rows in the same order): label = the class with most votes;
    a tie for the most votes is rejected as `ambiguous_label`; contempt/unknown/NF winners are out of scope.
    """

    name = "fer2013"
    default_region = "fer2013"
    label_map = "fer2013"
    defaults = {"csv": "fer2013.csv", "ferplus": None, "label_map": None}

    def scan(self) -> Iterator[Record | Reject]:
        path = self.root / self.options["csv"]
        if not path.exists():
            yield Reject(str(path), MISSING_FILE, "fer2013.csv not found")
            return
        with ExitStack() as stack:
            handle = stack.enter_context(open(path, newline=""))
            ferplus = self._ferplus_rows(stack)
            for row_no, row in enumerate(csv.DictReader(handle)):
                source = f"{path.name}:row {row_no + 2}"
                plus = next(ferplus, None) if ferplus is not None else None
                try:
                    pixels = np.array(row["pixels"].split(), dtype=np.uint8)
                    image = pixels.reshape(48, 48)
                    split = USAGE_SPLITS[row["Usage"]]
                except (KeyError, ValueError, AttributeError) as err:
                    yield Reject(source, BAD_ROW, f"cannot parse pixels/Usage: {err}")
                    continue
                label = self._ferplus_label(plus, source) if ferplus is not None else self.label(row["emotion"].strip(), source)
                if isinstance(label, Reject):
                    yield label
                    continue
                yield Record(f"fer2013-{row_no:05d}", label, f"fer2013-{row_no:05d}", source, image=image, cropped=True, split=split,
                             origin=source)

    def _ferplus_rows(self, stack: ExitStack) -> Iterator[dict[str, str]] | None:
        if not self.options["ferplus"]:
            return None
        path = self.root / self.options["ferplus"]
        if not path.exists():
            raise FileNotFoundError(f"fer2013: FER+ label file {path} not found")
        return iter(csv.DictReader(stack.enter_context(open(path, newline=""))))

    def _ferplus_label(self, row: dict[str, str] | None, source: str) -> str | Reject:
        if row is None:
            return Reject(source, BAD_ROW, "FER+ file has fewer rows than fer2013.csv")
        try:
            votes = [float(row[c]) for c in FERPLUS_VOTES]
        except (KeyError, ValueError) as err:
            return Reject(source, BAD_ROW, f"FER+ votes unreadable: {err}")
        top = max(votes)
        winners = [c for c, v in zip(FERPLUS_VOTES, votes) if v == top]
        if top <= 0 or len(winners) > 1:
            return Reject(source, AMBIGUOUS_LABEL, f"FER+ votes tie between {winners}")
        return self.label(winners[0], source, "ferplus")
