"""Where the face is: one crop for a portrait or a whole video, from detected boxes.

* a **video** gets one square crop for all its frames: per-frame boxes are linked into tubes
  (:func:`~fadm_lightning.faces.tubes.link_tubes`), the longest tube's union box is pushed out
  by ``increase`` (0.1) of its size on each side and widened to a square;
* a **portrait** gets the square around its largest face box pushed out by ``increase``
  (0.36: one box has no motion to widen it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fadm_lightning.faces.crop import FaceCrop, square_crop_box
from fadm_lightning.faces.detection import FaceFinder
from fadm_lightning.faces.tubes import link_tubes


class NoFaceFoundError(ValueError):
    """No face was detected where one is needed; the message names the file."""


def image_crop(
    image: np.ndarray, finder: FaceFinder, increase: float = 0.36, name: str = "the image"
) -> tuple[FaceCrop, np.ndarray]:
    """The crop of a portrait around its largest face, and that face's box.

    Raises:
        NoFaceFoundError: no face detected (the message names ``name``).
    """
    boxes = finder.detect(image, thorough=True)
    if len(boxes) == 0:
        h, w = image.shape[:2]
        raise NoFaceFoundError(
            f"{name}: no face found in the {w}×{h} image (dlib HOG + CNN detectors). Use a "
            "portrait with a visible, roughly frontal face, or crop=none if the image is "
            "already a face crop"
        )
    crop = square_crop_box(boxes[0], increase)
    return FaceCrop(crop, (image.shape[1], image.shape[0])), boxes[0]


def video_crop(
    detections: Sequence[np.ndarray],
    frame_size: tuple[int, int],
    increase: float = 0.1,
    name: str = "the video",
) -> FaceCrop:
    """One crop for a whole video from its per-frame boxes (``detections[t]``: N×4).

    The boxes are linked into tubes (IoU ≥ 0.25 with a tube's first box, gaps allowed); the
    tube seen in most frames (ties: the larger face) gives the union box.

    Raises:
        NoFaceFoundError: no face in any frame.
    """
    tubes = link_tubes(detections, iou_threshold=0.25, max_gap=len(detections), max_frames=10**9)
    if not tubes:
        raise NoFaceFoundError(
            f"{name}: no face found in any of its {len(detections)} frame(s) (dlib HOG "
            "detector). Use crop=none if the video is already a face crop"
        )

    def area(box: np.ndarray) -> float:
        return float((box[2] - box[0]) * (box[3] - box[1]))

    tube = max(tubes, key=lambda t: (len(t.boxes), area(t.union_box())))
    return FaceCrop(square_crop_box(tube.union_box(), increase), frame_size)


@dataclass
class VideoScan:
    """Per-frame faces of a video (:func:`scan_video`)."""

    frame_size: tuple[int, int]  # (width, height)
    boxes: list[np.ndarray]  # N_t×4 per frame, largest first
    landmarks: list[
        np.ndarray | None
    ]  # 68×2 of the largest face, None without a face (or not asked)

    @property
    def num_frames(self) -> int:
        return len(self.boxes)


def scan_video(
    path,
    finder: FaceFinder,
    landmarks: bool = False,
    max_frames: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> VideoScan:
    """Decode a video once and detect the faces of every frame (and the largest face's
    landmarks when ``landmarks``)."""
    from tqdm.auto import tqdm

    from fadm_lightning.media.video import iter_frames

    boxes: list[np.ndarray] = []
    points: list[np.ndarray | None] = []
    size = (0, 0)
    frames = iter_frames(path, max_frames)
    for frame in tqdm(
        frames, total=total, desc="finding the face", unit="frame", disable=not progress
    ):
        size = (frame.shape[1], frame.shape[0])
        found = finder.detect(frame)
        boxes.append(found)
        points.append(finder.landmarks(frame, found[0]) if landmarks and len(found) else None)
    return VideoScan(size, boxes, points)
