"""Face ids across a video's frames: each found face joins the track whose last box it overlaps most."""
from __future__ import annotations

from dataclasses import dataclass, field

from mcam.faces import Box

MIN_IOU = 0.3  # a face overlapping a track's last box less than this starts a new track
PATIENCE = 30  # frames a track survives without a face (a turned head, a hand before the face)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Tracker:
    """Greedy IoU tracking of one video: `assign` gives each frame's boxes their track ids (0, 1, ...)."""

    min_iou: float = MIN_IOU
    patience: int = PATIENCE
    tracks: dict[int, tuple[Box, int]] = field(default_factory=dict)  # id -> (last box, last frame seen)
    next_id: int = 0

    def assign(self, boxes: list[Box], frame: int) -> list[int]:
        """Track ids for `boxes` found on `frame`: the best-overlapping free track first, else a new id."""
        self.tracks = {t: v for t, v in self.tracks.items() if frame - v[1] <= self.patience}
        pairs = sorted(((iou(box, last), i, t) for i, box in enumerate(boxes) for t, (last, _) in self.tracks.items()),
                       reverse=True)
        ids: dict[int, int] = {}
        taken: set[int] = set()
        for overlap, i, t in pairs:
            if overlap < self.min_iou:
                break
            if i not in ids and t not in taken:
                ids[i], _ = t, taken.add(t)
        for i in range(len(boxes)):
            if i not in ids:
                ids[i], self.next_id = self.next_id, self.next_id + 1
        for i, box in enumerate(boxes):
            self.tracks[ids[i]] = (box, frame)
        return [ids[i] for i in range(len(boxes))]

    def current(self, frame: int) -> list[tuple[int, Box]]:
        """The live tracks' ids and last boxes (where to look for their faces on a frame without face finding)."""
        return [(t, box) for t, (box, seen) in sorted(self.tracks.items()) if frame - seen <= self.patience]
