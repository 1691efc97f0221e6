"""JAFFE: the Japanese Female Facial Expression database."""
from __future__ import annotations

import re
from typing import Iterator

from mcam.datasets.base import BAD_NAME, Adapter, Record, Reject, image_files, relative

# KA.HA1.29.tiff: subject KA, emotion HA, repetition 1, image id 29
JAFFE_NAME = re.compile(r"^(?P<subject>[A-Z]{2})\.(?P<code>[A-Z]{2})(?P<rep>\d+)\.(?P<id>\d+)\.tiff?$", re.IGNORECASE)


class JAFFE(Adapter):
    """JAFFE as distributed: one folder (ROOT, or ROOT/jaffe) of 256x256 gray TIFFs named `KA.HA1.29.tiff`.

    Name = subject (2 letters) . emotion code (AN DI FE HA NE SA SU) + repetition . image id. The emotion code is
    the posed expression (not the semantic ratings file, which is not used). A file whose name does not match is
    rejected as `bad_name`. Faces are found by the detector like any photo.
    """

    name = "jaffe"
    default_region = "japanese"
    label_map = "jaffe"
    defaults = {"label_map": None}

    def scan(self) -> Iterator[Record | Reject]:
        folder = self.root / "jaffe" if (self.root / "jaffe").is_dir() else self.root
        for path in image_files(folder):
            source = relative(path, self.root)
            match = JAFFE_NAME.match(path.name)
            if match is None:
                yield Reject(source, BAD_NAME, "expected SUBJECT.CODEn.ID.tiff, e.g. KA.HA1.29.tiff")
                continue
            label = self.label(match["code"].upper(), source)
            if isinstance(label, Reject):
                yield label
                continue
            subject = match["subject"].upper()
            sample_id = f"jaffe-{subject}-{match['code'].upper()}{match['rep']}-{match['id']}"
            yield Record(sample_id, label, subject, str(path))
