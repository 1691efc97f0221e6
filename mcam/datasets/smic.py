"""SMIC: the spontaneous micro-expression corpus (HS, VIS and NIR cameras)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mcam.datasets.base import BAD_NAME, MISSING_FILE, MISSING_FRAME, Adapter, Record, Reject, image_files, relative

CAMERAS: tuple[str, ...] = ("HS", "VIS", "NIR")


class SMIC(Adapter):
    """SMIC as distributed: ROOT/<HS|VIS|NIR>/<subject>/micro/<negative|positive|surprise>/<clip>/<frames>.

    Each clip folder is one `kind=clip` sample whose path is the (cropped) frame folder; `micro_label` keeps
    SMIC's own class (positive/negative/surprise), which is the ground truth for the micro heads.
    Canonical `label` policy: SMIC's `negative` has no single canonical emotion. The default map
    `smic_micro` writes the stand-in `sad` for it (positive -> happy, surprise -> surprise) only so the row
    validates; train/evaluate micro heads on `micro_label` and keep SMIC out of macro-label evaluation.
    Option `label_map: smic` instead rejects negative clips as out of scope.
    Only `micro/` is read (`non_micro/` clips carry no emotion); a subject folder without `micro/` is rejected
    (missing_file), and so is a file, not a clip folder, inside a class folder (bad_name; hidden files are
    skipped). The subject folder name (s1, s2 ...) is the subject in every camera, so the same person stays on
    one side of a subject-disjoint split; the camera is kept in the `camera` column.
    """

    name = "smic"
    default_region = "smic"
    label_map = "smic_micro"
    defaults = {"label_map": None, "cameras": list(CAMERAS)}

    def scan(self) -> Iterator[Record | Reject]:
        cameras = [c for c in self.options["cameras"] if (self.root / c).is_dir()]
        if not cameras:
            raise FileNotFoundError(f"smic: none of {self.options['cameras']} under {self.root}")
        for camera in cameras:
            for subject_dir in sorted(p for p in (self.root / camera).iterdir() if p.is_dir()):
                micro = subject_dir / "micro"
                if not micro.is_dir():
                    yield Reject(relative(subject_dir, self.root), MISSING_FILE,
                                 "subject folder has no micro/ folder (expected <subject>/micro/<class>/<clip>/)")
                    continue
                for class_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
                    for entry in sorted(class_dir.iterdir()):
                        if entry.is_dir():
                            yield from self._clip(camera, subject_dir.name, class_dir.name.lower(), entry)
                        elif not entry.name.startswith("."):  # hidden files (.DS_Store ...) are not inputs
                            yield Reject(relative(entry, self.root), BAD_NAME,
                                         "stray file in a class folder (expected one folder of frames per clip)")

    def _clip(self, camera: str, subject: str, micro_label: str, clip_dir: Path) -> Iterator[Record | Reject]:
        source = relative(clip_dir, self.root)
        label = self.label(micro_label, source)
        if isinstance(label, Reject):
            yield label
            return
        frames = image_files(clip_dir)
        if not frames:
            yield Reject(source, MISSING_FRAME, "clip folder has no frames")
            return
        extra = {"micro_label": micro_label, "camera": camera}
        yield Record(f"smic-{camera}-{subject}-{clip_dir.name}", label, subject, str(clip_dir), kind="clip",
                     frames=frames, extra=extra)
