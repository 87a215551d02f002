"""Face crops for inference, cut the way the training clips were cut, and pasting results back.

The training data follow FOMM's VoxCeleb cropping (``fadm_lightning.preprocess``,
``fadm_lightning.data.face_tubes``; ``docs/data.md``):

* a **video** gets one square crop for all its frames: per-frame dlib boxes are linked into
  tubes, the longest tube's union box is pushed out by ``increase`` (0.1) of its size on each
  side and widened to a square;
* a **portrait** gets the square around its largest face box pushed out by ``image_increase``
  (0.36: one box has no motion to widen it);
* a square leaving the frame is padded by replicating the border pixels (preprocessing's
  default ``out_of_frame=pad`` keeps and pads such tubes the same way).

The crop is cut and resized to the model's resolution (Lanczos) by
:func:`~fadm_lightning.data.face_tubes.cut_square`, the function preprocessing writes the
training clips with. :meth:`FaceCrop.paste` puts a result
back into a full frame through a soft mask (:func:`soft_mask`: 1 inside, a smooth ramp over
the outer ``feather`` of the square), so that the seam does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from fadm_lightning.data.face_tubes import cut_square, link_tubes, square_crop_box


class NoFaceFoundError(ValueError):
    """No face was detected where one is needed; the message names the file."""


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """uint8 H×W×3 → ``size`` (an int for a square, or (width, height)), Lanczos, antialiased."""
    width, height = (size, size) if isinstance(size, int) else size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def soft_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """float32 size×size mask: 1 in the middle, a raised-cosine ramp to 0 over the outer
    ``feather`` fraction of the side (0 = a hard square)."""
    if not 0 <= feather <= 0.5:
        raise ValueError(f"feather must lie in [0, 0.5], got {feather}")
    if feather == 0:
        return np.ones((size, size), np.float32)
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5  # to the nearest edge
    ramp = np.clip(distance / (feather * size), 0.0, 1.0)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass
class FaceCrop:
    """A square crop box ``(left, top, right, bottom)`` (whole pixels, may leave the frame) in a
    frame of ``frame_size = (width, height)``."""

    box: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    _masks: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]

    def cut(self, frame: np.ndarray, size: int) -> np.ndarray:
        """The crop of ``frame`` (uint8 H×W×3) resized to size×size (padded where the box
        leaves the frame; :func:`~fadm_lightning.data.face_tubes.cut_square`)."""
        return cut_square(frame, self.box, size)

    def paste(self, frame: np.ndarray, face: np.ndarray, feather: float = 0.1) -> np.ndarray:
        """``frame`` with ``face`` (uint8 S×S×3, any S) resized into the box, soft-blended."""
        side = self.side
        left, top = self.box[:2]
        height, width = frame.shape[:2]
        # the part of the box inside the frame
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + side, width), min(top + side, height)
        if x1 <= x0 or y1 <= y0:
            return frame
        key = (side, feather)
        if key not in self._masks:
            self._masks[key] = soft_mask(side, feather)[..., None]
        mask = self._masks[key][y0 - top : y1 - top, x0 - left : x1 - left]
        face = resize(face, side)[y0 - top : y1 - top, x0 - left : x1 - left].astype(np.float32)
        out = frame.copy()
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.round(region + mask * (face - region)).astype(np.uint8)
        return out


def center_crop(frame_size: tuple[int, int]) -> FaceCrop:
    """The largest centred square of a frame (``crop=none``: the input is a face crop already)."""
    width, height = frame_size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return FaceCrop((left, top, left + side, top + side), (width, height))


class FaceFinder:
    """dlib face boxes and 68 landmarks on frames scaled down to at most ``max_side`` pixels
    (results are scaled back to the frame's pixels).

    Args:
        max_side: longest side the detector sees (640; 0 = full size).
        upsample: HOG detector upsampling (0 finds faces of about 80 px and more).
        cnn_fallback: try dlib's CNN detector where HOG finds nothing (slower; images only
            by default, see :meth:`detect`).
    """

    def __init__(self, max_side: int = 640, upsample: int = 0, cnn_fallback: bool = True) -> None:
        from fadm_lightning.models.face import DlibFace

        self.max_side = max_side
        self.upsample = upsample
        self.cnn_fallback = cnn_fallback
        self._hog = DlibFace(upsample=upsample, cnn_fallback=False)
        self._cnn = None  # built on first use (loads another model file)

    def _scaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        return image, scale

    def detect(self, image: np.ndarray, thorough: bool = False) -> np.ndarray:
        """Face boxes N×4, largest first (``thorough``: CNN fallback when HOG finds none)."""
        from fadm_lightning.models.face import DlibFace

        small, scale = self._scaled(image)
        finder = self._hog
        if thorough and self.cnn_fallback:
            if self._cnn is None:
                self._cnn = DlibFace(upsample=self.upsample, cnn_fallback=True)
            finder = self._cnn
        return finder.detect(small) / scale

    def landmarks(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """68×2 landmarks (pixels of ``image``) of the face in ``box`` (pixels of ``image``)."""
        small, scale = self._scaled(image)
        return self._hog.landmarks68(small, np.asarray(box, dtype=np.float64) * scale) / scale


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

    from fadm_lightning.inference.media import iter_frames

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
