"""Face tubes: per-frame face boxes linked over time, and the square crop cut for each tube.

The rules follow FOMM's VoxCeleb cropping (``crop_vox.py``, REFERENCE_SPEC §5.1), with dlib
boxes in place of the S3FD ones:

1. **Linking** (``link_tubes``): frame by frame, each detection (largest first) joins the open tube
   whose *first* box it overlaps most, if that IoU is at least ``iou_threshold`` (0.25);
   otherwise it starts a new tube. A tube ends when no detection joined it for more than
   ``max_gap`` frames (dlib's HOG detector misses the odd frame; 0 = end at the first miss), or
   when it reaches ``max_frames`` (1024; the next detection starts a new tube).
2. **Crop** (:func:`~fadm_lightning.faces.crop.square_crop_box`): the union of the tube's boxes, each side pushed out by
   ``increase`` (0.1) of the box's width or height (so the aspect ratio is kept), then widened to
   a square about its centre (the longer side), in whole pixels.
3. **Filter** (``select_tubes``): a tube is dropped when it spans fewer than ``min_frames`` (64)
   frames (``too_short``) or when its square is smaller than ``min_size`` (256) pixels, i.e. the
   crop would have to be upsampled (``too_small``). A square that leaves the frame (a close-up,
   as VoxCeleb's own clips are) is kept and padded (``out_of_frame="pad"``, the default, marked
   ``padded``), or the tube is dropped (``out_of_frame="drop"``: ``leaves_frame``, what
   ``crop_vox.py`` does).

Boxes are float ``(left, top, right, bottom)`` pixel coordinates, ``right``/``bottom`` exclusive.
The squares are cut by :mod:`fadm_lightning.faces.crop` (one crop policy for preprocessing,
inference and metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fadm_lightning.faces.crop import square_crop_box

DROP_REASONS = ("too_short", "too_small", "leaves_frame")
OUT_OF_FRAME = ("pad", "drop")  # what happens to a crop square that leaves the frame


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes (0 when disjoint)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Tube:
    """The boxes of one face over consecutive frames ``start … end - 1`` (gaps ≤ ``max_gap``)."""

    start: int
    first_box: np.ndarray
    boxes: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return max(self.boxes)

    @property
    def end(self) -> int:
        return self.last + 1

    @property
    def num_frames(self) -> int:
        return self.end - self.start

    def union_box(self) -> np.ndarray:
        stacked = np.stack(list(self.boxes.values()))
        return np.array(
            [stacked[:, 0].min(), stacked[:, 1].min(), stacked[:, 2].max(), stacked[:, 3].max()]
        )


def link_tubes(
    detections: Sequence[np.ndarray],
    iou_threshold: float = 0.25,
    max_gap: int = 0,
    max_frames: int = 1024,
) -> list[Tube]:
    """Link per-frame detections (``detections[t]``: N×4 boxes of frame t) into tubes.

    Returns every tube (short ones included), ordered by start frame then first box.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    if max_gap < 0 or max_frames < 1:
        raise ValueError(f"need max_gap ≥ 0 and max_frames ≥ 1, got {max_gap}, {max_frames}")
    open_tubes: list[Tube] = []
    closed: list[Tube] = []
    for t, boxes in enumerate(detections):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        # tubes that missed too many frames, or are full, are closed before matching
        still_open = []
        for tube in open_tubes:
            if t - tube.last > max_gap + 1 or t - tube.start >= max_frames:
                closed.append(tube)
            else:
                still_open.append(tube)
        open_tubes = still_open
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        taken: set[int] = set()
        for box in boxes[np.argsort(-area, kind="stable")]:
            best, best_iou = None, iou_threshold
            for i, tube in enumerate(open_tubes):
                if i in taken:
                    continue
                iou = box_iou(box, tube.first_box)
                if iou >= best_iou:
                    best, best_iou = i, iou
            if best is None:
                open_tubes.append(Tube(start=t, first_box=box.copy(), boxes={t: box.copy()}))
                taken.add(len(open_tubes) - 1)
            else:
                open_tubes[best].boxes[t] = box.copy()
                taken.add(best)
    closed += open_tubes
    return sorted(closed, key=lambda tube: (tube.start, *tube.first_box.tolist()))


def inside(box: Sequence[int], width: int, height: int) -> bool:
    left, top, right, bottom = box
    return left >= 0 and top >= 0 and right <= width and bottom <= height


def check_out_of_frame(out_of_frame: str) -> str:
    """``out_of_frame`` if it is ``"pad"`` or ``"drop"``; otherwise a ``ValueError``."""
    if out_of_frame not in OUT_OF_FRAME:
        raise ValueError(f"out_of_frame must be 'pad' or 'drop', got {out_of_frame!r}")
    return out_of_frame


@dataclass
class TubeDecision:
    """A tube, its square crop, and whether it is kept (``reason`` says why not); ``padded``:
    kept although the square leaves the frame (the crop is padded)."""

    tube: Tube
    crop: tuple[int, int, int, int]
    reason: str | None = None
    padded: bool = False

    @property
    def kept(self) -> bool:
        return self.reason is None


def select_tubes(
    tubes: Sequence[Tube],
    frame_size: tuple[int, int],
    increase: float = 0.1,
    min_frames: int = 64,
    min_size: int = 256,
    out_of_frame: str = "pad",
) -> list[TubeDecision]:
    """Crop box and keep/drop decision of every tube; ``frame_size`` is ``(width, height)``.

    The first failing rule gives the reason: ``too_short``, then ``too_small``, then
    ``leaves_frame`` (only with ``out_of_frame="drop"``; with ``"pad"`` such a tube is kept with
    ``padded=True``).
    """
    check_out_of_frame(out_of_frame)
    width, height = frame_size
    decisions = []
    for tube in tubes:
        crop = square_crop_box(tube.union_box(), increase)
        reason = None
        leaves = not inside(crop, width, height)
        if tube.num_frames < min_frames:
            reason = "too_short"
        elif crop[2] - crop[0] < min_size:
            reason = "too_small"
        elif leaves and out_of_frame == "drop":
            reason = "leaves_frame"
        decisions.append(TubeDecision(tube, crop, reason, padded=reason is None and leaves))
    return decisions
