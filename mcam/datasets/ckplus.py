"""CK+: the extended Cohn-Kanade database (sequences, Emotion labels, FACS codes)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

from mcam.datasets.base import BAD_ROW, MISSING_FRAME, NO_LABEL, Adapter, Record, Reject, image_files, relative
from mcam.labels import AU_NAMES  # the ground-truth AU columns written for CK+, as in the synthetic data
FACS_LETTERS = "ABCDE"


def facs_intensity(token: str, unscored: float) -> float:
    """A FACS intensity (letters A-E or numbers 1-5) scaled to [0, 1] by /5; 0 (AU present, not scored) -> `unscored`."""
    token = token.strip()
    if token.upper() in FACS_LETTERS and token:
        return (FACS_LETTERS.index(token.upper()) + 1) / 5.0
    value = float(token)
    if value == 0:
        return unscored
    return min(value, 5.0) / 5.0


class FacsLineError(ValueError):
    """A `*_facs.txt` line that is not 'AU number, intensity'; `line` is 1-based."""

    def __init__(self, line: int, text: str, err: Exception) -> None:
        super().__init__(f"line {line}: cannot parse {text.strip()!r}: {err}")
        self.line = line


def read_facs(path: Path, unscored: float) -> dict[str, float]:
    """AU intensities of a CK+ `*_facs.txt` (lines '   1.0000000e+00   2.0000000e+00': AU number, intensity).

    Raises FacsLineError (a ValueError) naming the first malformed line.
    """
    values = {column: 0.0 for column in AU_NAMES}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            column = f"AU{int(float(parts[0])):02d}"
            intensity = facs_intensity(parts[1] if len(parts) > 1 else "0", unscored)
        except (ValueError, OverflowError) as err:
            raise FacsLineError(number, line, err) from err
        if column in values:
            values[column] = intensity
    return values


class CKPlus(Adapter):
    """CK+ as distributed.

    Layout: ROOT/cohn-kanade-images/S005/001/S005_001_00000001.png (one folder per sequence, neutral -> apex),
    ROOT/Emotion/S005/001/S005_001_00000011_emotion.txt (one float code: 0 neutral, 1 anger, 2 contempt,
    3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise), ROOT/FACS/S005/001/S005_001_00000011_facs.txt.
    Each sequence gives (a) its FIRST frame as a `neutral` image sample (AUs all 0) and (b), when an Emotion
    file exists, the frame it names (the apex, normally the last) as an image sample with that label, whose
    clip (and micro_clip) is the whole sequence. Sequences without an Emotion file (about 45% of CK+) give
    the neutral sample plus a `no_label` reject; contempt (2) is rejected as out of scope.
    FACS intensities (A-E or 1-5) are divided by 5; intensity 0 in CK+ means "present, not scored" and is
    written as option `facs_unscored` (default NaN: consumers must mask NaN). AUs outside the 20 py-feat AU
    columns (e.g. AU16, AU27) are not written. An apex without a FACS file gets NaN AUs; an apex whose FACS
    file has a malformed line is rejected (bad_row, source 'FACS/...txt:line N'), its neutral sample kept.
    """

    name = "ckplus"
    default_region = "western"
    label_map = "ckplus"
    defaults = {"label_map": None, "facs_unscored": math.nan, "images": "cohn-kanade-images"}

    def scan(self) -> Iterator[Record | Reject]:
        images = self.root / self.options["images"]
        if not images.is_dir():
            raise FileNotFoundError(f"ckplus: {images} not found (expected ROOT/cohn-kanade-images/Sxxx/yyy/*.png)")
        for subject_dir in sorted(p for p in images.iterdir() if p.is_dir()):
            for seq_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                yield from self._sequence(subject_dir.name, seq_dir)

    def _sequence(self, subject: str, seq_dir: Path) -> Iterator[Record | Reject]:
        seq = seq_dir.name
        source = relative(seq_dir, self.root)
        frames = image_files(seq_dir)
        if not frames:
            yield Reject(source, MISSING_FRAME, "sequence folder has no frames")
            return
        neutral_aus = {column: 0.0 for column in AU_NAMES}
        yield Record(f"ckplus-{subject}-{seq}-neutral", "neutral", subject, str(frames[0]), extra=neutral_aus)
        emotion_files = sorted((self.root / "Emotion" / subject / seq).glob("*_emotion.txt"))
        if not emotion_files:
            yield Reject(source, NO_LABEL, "no Emotion/*_emotion.txt for this sequence (apex not labelled)")
            return
        emotion = emotion_files[0]
        try:
            code = int(float(emotion.read_text().split()[0]))
        except (IndexError, ValueError) as err:
            yield Reject(relative(emotion, self.root), BAD_ROW, f"cannot parse emotion code: {err}")
            return
        label = self.label(code, relative(emotion, self.root))
        if isinstance(label, Reject):
            yield label
            return
        stem = emotion.name[: -len("_emotion.txt")]
        apex = [f for f in frames if f.stem == stem]
        if not apex:
            yield Reject(relative(emotion, self.root), MISSING_FRAME, f"apex frame {stem}.* not in {source}")
            return
        aus = self._aus(subject, seq, stem)
        if isinstance(aus, Reject):
            yield aus
            return
        yield Record(f"ckplus-{subject}-{seq}-apex", label, subject, str(apex[0]), frames=frames, extra=aus)

    def _aus(self, subject: str, seq: str, stem: str) -> dict[str, float] | Reject:
        """The apex's AU intensities, or a BAD_ROW Reject ('FACS/...:line N') when its FACS file is malformed."""
        unscored = float(self.options["facs_unscored"])
        folder = self.root / "FACS" / subject / seq
        facs = folder / f"{stem}_facs.txt"
        if not facs.exists():
            found = sorted(folder.glob("*_facs.txt")) if folder.is_dir() else []
            if not found:
                return {column: math.nan for column in AU_NAMES}
            facs = found[0]
        try:
            return read_facs(facs, unscored)
        except FacsLineError as err:
            return Reject(f"{relative(facs, self.root)}:line {err.line}", BAD_ROW, f"FACS: {err}")
