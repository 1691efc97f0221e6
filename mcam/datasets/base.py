"""What every dataset adapter yields: records (samples to prepare) and rejects (inputs left out, with a reason)."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from mcam.faces import IMAGE_SUFFIXES, NO_FACE, UNREADABLE  # noqa: F401  (re-exported: one definition each)
from mcam.labels import UnknownLabelError, to_canonical

VIDEO_SUFFIXES: frozenset[str] = frozenset({".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})

# Reject reasons (rejects.csv `reason` column); those of pixel data (unreadable, no_face, ...) are in mcam.faces.
UNKNOWN_LABEL = "unknown_label"
AMBIGUOUS_LABEL = "ambiguous_label"
OUT_OF_SCOPE = "out_of_scope_label"
NO_LABEL = "no_label"
MISSING_FRAME = "missing_frame"
MISSING_FILE = "missing_file"
BAD_NAME = "bad_name"
BAD_ROW = "bad_row"


@dataclass
class Record:
    """One sample to prepare. Exactly one pixel source: `image` (in memory), `video_frame`/`video_clip`, or the file `source`.

    kind='image': `source` (or `image`, or a video frame) becomes the face crop; `frames`, when given, become its clip.
    kind='clip': `frames` (or the decoded video) become a frame folder, which is the row's path.
    `bbox` (pixels) or `bbox_pct` (percent of the frame) replace face detection; `cropped` skips it.
    An empty `subject` makes the sample its own subject.
    """

    sample_id: str
    label: str
    subject: str
    source: str
    kind: str = "image"
    image: np.ndarray | None = None
    frames: list[Path] | None = None
    video_frame: int | None = None
    video_clip: bool = False
    bbox: tuple[int, int, int, int] | None = None
    bbox_pct: tuple[float, float, float, float] | None = None
    cropped: bool = False
    split: str | None = None
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None  # where a reject of this record points (e.g. 'table.csv:row 7'); default: source
    id_given: bool = False  # the dataset names the sample itself (a sample_id column): a repeat is a duplicate

    def own_subject(self) -> str:
        """The subject id, or the sample's own id where the dataset names no subject (each sample its own)."""
        return self.subject or self.sample_id


@dataclass(frozen=True)
class Reject:
    """An input that will not become a sample: where it came from (file or file:row) and why."""

    source: str
    reason: str
    detail: str = ""


class Adapter(ABC):
    """Reads one dataset in its published layout. Subclasses document their layout and assumptions."""

    name: ClassVar[str]
    default_region: ClassVar[str]
    label_map: ClassVar[str] = "folder"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, root: str | Path, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown options {unknown}; known: {sorted(self.defaults)}")
        self.root = Path(root)
        self.options: dict[str, Any] = {**self.defaults, **options}
        if not self.root.exists():
            raise FileNotFoundError(f"{self.name}: dataset root {self.root} does not exist")

    @abstractmethod
    def scan(self) -> Iterator[Record | Reject]:
        """Yield a Record per usable input and a Reject per input left out."""

    def label(self, code: object, source: str, map_name: str | None = None) -> str | Reject:
        """Canonical label of a dataset code, or the Reject saying why there is none."""
        mapping = map_name or self.options.get("label_map") or self.label_map
        try:
            label = to_canonical(mapping, code)
        except UnknownLabelError as err:
            return Reject(source, UNKNOWN_LABEL, str(err))
        if label is None:
            return Reject(source, OUT_OF_SCOPE, f"{mapping}: {code!r} has no canonical label")
        return label


def safe_id(*parts: object) -> str:
    """A sample id that is also a safe file name: letters and digits of any script, '.', '_' and '-' are kept.

    Distinct inputs whose ids still coincide (`a b.png` and `a_b.png`) are told apart by `mcam prepare`.
    """
    return re.sub(r"[^\w.-]+", "_", "-".join(str(p) for p in parts)).strip("_")


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def relative(path: Path, root: Path) -> str:
    """A path relative to the dataset root, for reject messages."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
