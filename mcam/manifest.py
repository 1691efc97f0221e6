"""The dataset manifest: one validated table per dataset (see DESIGN.md)."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mcam.errors import InputError
from mcam.io import atomic_output
from mcam.labels import CANONICAL

REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "path", "label", "region", "dataset", "subject")
OPTIONAL_COLUMNS: tuple[str, ...] = ("group", "frames", "bbox", "split", "kind", "clip", "micro_clip", "micro_label")
KINDS: tuple[str, ...] = ("image", "clip")
SPLITS: tuple[str, ...] = ("train", "val", "test")
AU_COLUMN = re.compile(r"^AU\d{2}$")
MANIFEST_FILE = "manifest.csv"
FILE_COLUMNS: tuple[str, ...] = ("path", "clip", "micro_clip")  # columns naming files or frame folders
# Text that spreadsheets and pandas write for a missing value (pandas' own NA spellings, compared lowercased).
# Not 'NA': it is a real code (JAFFE's subject NA, a region 'NA' for North America).
MISSING_TEXT = frozenset({"nan", "-nan", "none", "null", "n/a", "#n/a", "<na>"})


class ManifestError(InputError):
    """A manifest that breaks the schema; the message names the file, row and column."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest table plus the root its relative paths start from."""

    table: pd.DataFrame
    root: Path

    def __len__(self) -> int:
        return len(self.table)

    @property
    def au_columns(self) -> list[str]:
        """Ground-truth AU intensity columns (e.g. AU12), if the dataset carries them."""
        return [c for c in self.table.columns if AU_COLUMN.match(c)]

    @property
    def labelled(self) -> bool:
        """Every row has an emotion label (an AU corpus, loaded with labelled=False, has none)."""
        return bool((self.table["label"] != "").all()) if "label" in self.table.columns else False

    @property
    def regions(self) -> list[str]:
        return sorted(self.table["region"].unique())

    def resolve(self, relative: str) -> Path:
        """Absolute path of a manifest path value."""
        return self.root / relative

    def subset(self, mask: pd.Series) -> "Manifest":
        """Rows selected by a boolean mask, same root."""
        return Manifest(self.table[mask].reset_index(drop=True), self.root)

    def fingerprint(self) -> str:
        """Hash of the table (column names and values) and of the bytes of every file it names.

        Changes whenever a row, a value or a referenced file's content changes (e.g. faces re-rendered
        or re-cropped under the same manifest), or, for a table with rows without a `bbox`, how extraction finds
        and cuts their faces (`FaceCropper.describe`), and only then: no paths outside the table, no
        modification times, so a copied dataset keeps its fingerprint. Computed once per Manifest.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = self._compute_fingerprint()
            object.__setattr__(self, "_fingerprint", cached)  # a memo on a frozen dataclass
        return cached

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256("\x1f".join(map(str, self.table.columns)).encode())
        digest.update(pd.util.hash_pandas_object(self.table.astype(str), index=False).values.tobytes())
        for column in FILE_COLUMNS:
            for value in self.table[column] if column in self.table.columns else ():
                if isinstance(value, str) and value:
                    digest.update(f"{content_digest(self.resolve(value))};".encode())
        bbox = self.table["bbox"] if "bbox" in self.table.columns else pd.Series("", index=self.table.index)
        if not bbox.map(lambda v: isinstance(v, str) and bool(v.strip())).all():
            from mcam.faces import FaceCropper  # rows without a bbox are cut by the face finder: how is content too

            digest.update(f"faces found by {FaceCropper().describe()}".encode())
        return digest.hexdigest()[:16]


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> content digest: hashes each file once


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes (a frame folder: of its files' names and bytes); 'missing' when absent.

    The (size, mtime) memo only saves re-reading an unchanged file within a process; the digest
    itself depends on the content alone.
    """
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS or path.is_dir():  # a folder's mtime misses edits inside its files: always re-read
        digest = hashlib.sha256()
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
                with open(file, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()[:16]
    return _DIGESTS[memo]


def _fail(source: str, row: int | None, column: str | None, message: str) -> None:
    where = source
    if row is not None:
        where += f", row {row + 2}"  # +2: header line and 1-based numbering, as in a spreadsheet
    if column is not None:
        where += f", column {column!r}"
    raise ManifestError(f"{where}: {message}")


def validate(table: pd.DataFrame, source: str = "manifest", labelled: bool = True) -> pd.DataFrame:
    """Check the schema and return the table with normalised dtypes; raise ManifestError naming row and column.

    `labelled=False` reads an AU corpus (faces with ground-truth AUs and no emotion labels, standing in for
    DISFA/BP4D): its `label` column may be empty or absent (it reads as ''), and it needs AU columns."""
    if not labelled and "label" not in table.columns:
        table = table.assign(label="")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        _fail(source, None, None, f"missing required columns {missing}; required: {list(REQUIRED_COLUMNS)}")
    table = table.copy()
    for column in REQUIRED_COLUMNS:
        text = table[column].astype(str).str.strip()
        empty = table[column].isna() | (text == "")
        if not labelled and column == "label":
            table[column] = text.where(~empty, "")
            continue
        if empty.any():
            if column == "label" and empty.all() and any(AU_COLUMN.match(str(c)) for c in table.columns):
                _fail(source, 0, column, "empty value (every row: an AU corpus without emotion labels is read by "
                      "the AU detectors' pre-training, not as an emotion dataset)")
            _fail(source, int(empty.to_numpy().argmax()), column, "empty value")
        placeholder = text.str.lower().isin(MISSING_TEXT)
        if placeholder.any():  # e.g. a region 'NaN' would otherwise become one more region
            row = int(placeholder.to_numpy().argmax())
            _fail(source, row, column, f"{text.iloc[row]!r} stands for a missing value; fill it in or drop the row")
        table[column] = table[column].astype(str)
    duplicated = table["sample_id"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        _fail(source, row, "sample_id", f"duplicate sample_id {table['sample_id'].iloc[row]!r}")
    unknown = ~table["label"].isin(CANONICAL) & ((table["label"] != "") | labelled)
    if unknown.any():
        row = int(unknown.to_numpy().argmax())
        _fail(source, row, "label", f"unknown label {table['label'].iloc[row]!r}; canonical labels: {list(CANONICAL)}")
    if "kind" in table.columns:
        bad = ~table["kind"].isin(KINDS)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            _fail(source, row, "kind", f"unknown kind {table['kind'].iloc[row]!r}; expected one of {list(KINDS)}")
    if "split" in table.columns:
        present = table["split"].notna() & (table["split"].astype(str) != "")
        bad = present & ~table["split"].isin(SPLITS)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            _fail(source, row, "split", f"unknown split {table['split'].iloc[row]!r}; expected one of {list(SPLITS)}")
    if "bbox" in table.columns:
        for row, value in enumerate(table["bbox"]):
            if isinstance(value, str) and value.strip():
                parts = value.split()
                if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts) or int(parts[2]) <= 0 or int(parts[3]) <= 0:
                    _fail(source, row, "bbox", f"bbox {value!r} is not 'x y width height' in pixels")
    for column in [c for c in table.columns if AU_COLUMN.match(c)]:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            _fail(source, int(bad.to_numpy().argmax()), column, f"AU intensity {table[column].iloc[int(bad.to_numpy().argmax())]!r} is not a number")
        table[column] = values.astype("float32")
    if not labelled and not any(AU_COLUMN.match(str(c)) for c in table.columns):
        _fail(source, None, None, "an AU corpus (no emotion labels) needs ground-truth AU columns (AU01, AU02, ...)")
    return table


def check_files(manifest: Manifest, source: str = "manifest") -> None:
    """Raise ManifestError naming the first row whose path does not exist."""
    for row, rel in enumerate(manifest.table["path"]):
        if not manifest.resolve(rel).exists():
            _fail(source, row, "path", f"file not found: {manifest.resolve(rel)}")


def read_table(path: Path, required: tuple[str, ...] = (), **read_csv: object) -> pd.DataFrame:
    """A comma-separated UTF-8 CSV file as a table; ManifestError naming the file when it is another encoding
    or, lacking `required` columns, evidently uses another separator."""
    try:
        table = pd.read_csv(path, **read_csv)  # type: ignore[arg-type]
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r}); "
                            f"expected a UTF-8 CSV file: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except pd.errors.ParserError as err:
        raise ManifestError(f"{path}: not a readable CSV file ({' '.join(str(err).split())})") from None
    header = ",".join(map(str, table.columns))
    if any(c not in table.columns for c in required):
        for separator, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if separator in header:
                raise ManifestError(f"{path}: the header {header[:80]!r} looks {name}-separated; expected a "
                                    f"comma-separated CSV file with columns {list(required)}")
    return table


def load_manifest(path: str | os.PathLike, check_paths: bool = False, labelled: bool = True) -> Manifest:
    """Read and validate a manifest CSV (or a dataset folder holding manifest.csv); `labelled=False`: an AU
    corpus (see `validate`)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    # keep_default_na=False: codes like JAFFE's subject 'NA' are text, not missing values
    text = {c: str for c in (*REQUIRED_COLUMNS, "group", "bbox", "split", "kind", "clip", "micro_clip", "micro_label")}
    table = read_table(path, REQUIRED_COLUMNS, dtype=text, keep_default_na=False, na_values=[""])
    manifest = Manifest(validate(table, source=str(path), labelled=labelled), path.parent)
    if check_paths:
        check_files(manifest, source=str(path))
    return manifest


def save_manifest(manifest: Manifest | pd.DataFrame, path: str | os.PathLike, labelled: bool = True) -> Path:
    """Validate and write a manifest CSV atomically (`labelled=False`: an AU corpus, see `validate`)."""
    table = manifest.table if isinstance(manifest, Manifest) else manifest
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    table = validate(table, source=str(path), labelled=labelled)
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)
    return path
