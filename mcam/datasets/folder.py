"""Folder-per-emotion layouts: a generic image folder, TFEID, TFED, SFEW (images) and AFEW (video clips)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from mcam.datasets.base import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Adapter, Record, Reject, relative, safe_id

SPLIT_DIRS: dict[str, str] = {"train": "train", "training": "train", "val": "val", "valid": "val",
                              "validation": "val", "test": "test", "testing": "test"}
UNSUPPORTED = "unsupported_file"


class ImageFolder(Adapter):
    """ROOT/<emotion>/<file>, optionally under ROOT/<split>/ (Train, Val, Test ...).

    Emotion folder names go through the label map (default `folder`: English names, any case, e.g.
    Angry, happiness, Surprise). Files may sit in sub-folders of an emotion folder: the first sub-folder is
    then the subject; otherwise the subject is the `subject` group of option `subject_regex` matched against
    the file stem (default: the stem's first token before `_`, `-` or `.`). Image files become image samples,
    video files clips (decoded as a stream); hidden files are skipped, any other file is rejected as
    `unsupported_file`.
    """

    name = "imagefolder"
    default_region = "imagefolder"
    defaults = {"label_map": None, "subject_regex": r"^(?P<subject>[^_.\-]+)"}

    def scan(self) -> Iterator[Record | Reject]:
        tops = [p for p in sorted(self.root.iterdir()) if p.is_dir()]
        if tops and all(p.name.lower() in SPLIT_DIRS for p in tops):
            for top in tops:
                yield from self._emotions(top, SPLIT_DIRS[top.name.lower()])
        else:
            yield from self._emotions(self.root, None)

    def _emotions(self, folder: Path, split: str | None) -> Iterator[Record | Reject]:
        pattern = re.compile(self.options["subject_regex"])
        for emotion_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = sorted(p for p in emotion_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
            for path in files:
                source = relative(path, self.root)
                suffix = path.suffix.lower()
                if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                    yield Reject(source, UNSUPPORTED, f"not an image or video ({suffix or 'no suffix'})")
                    continue
                label = self.label(emotion_dir.name.lower(), source)
                if isinstance(label, Reject):
                    yield label
                    continue
                inner = path.relative_to(emotion_dir).parts
                match = pattern.search(path.stem)
                subject = inner[0] if len(inner) > 1 else (match["subject"] if match else path.stem)
                sample_id = safe_id(self.name, split or "", emotion_dir.name, *Path(*inner).with_suffix("").parts)
                video = suffix in VIDEO_SUFFIXES
                yield Record(sample_id, label, subject, str(path), kind="clip" if video else "image",
                             video_clip=video, split=split)


class TFEID(ImageFolder):
    """TFEID (Taiwanese Facial Expression Image Database), folder per emotion; see ImageFolder for the rules."""

    name = "tfeid"
    default_region = "taiwanese"


class TFED(ImageFolder):
    """TFED (Chinese facial expression database), folder per emotion; labels outside the map (e.g. a
    `content`/`contempt` folder) are rejected. See ImageFolder for the rules."""

    name = "tfed"
    default_region = "chinese"


class SFEW(ImageFolder):
    """SFEW 2.0: ROOT/{Train,Val}/<Angry|Disgust|Fear|Happy|Neutral|Sad|Surprise>/<movie>_<time>.png.

    The subject is unknown; the movie name (stem up to the first `_`) stands in for it."""

    name = "sfew"
    default_region = "wild"


class AFEW(ImageFolder):
    """AFEW: ROOT/{Train,Val}/<Emotion>/<clip>.avi; every video is one clip sample (evenly sampled frames).

    The subject is unknown; each clip is its own subject."""

    name = "afew"
    default_region = "wild"
    defaults = {"label_map": None, "subject_regex": r"^(?P<subject>.+)$"}
