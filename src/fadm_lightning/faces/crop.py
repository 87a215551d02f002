"""Square face crops, one policy for training clips, inference and metrics, and pasting back.

The training data follow FOMM's VoxCeleb cropping (``fadm_lightning.preprocess``,
``fadm_lightning.faces.tubes``; ``docs/data.md``):

* a **video** gets one square crop for all its frames: per-frame dlib boxes are linked into
  tubes, the longest tube's union box is pushed out by ``increase`` (0.1) of its size on each
  side and widened to a square;
* a **portrait** gets the square around its largest face box pushed out by ``image_increase``
  (0.36: one box has no motion to widen it);
* a square leaving the frame is padded by replicating the border pixels (preprocessing's
  default ``out_of_frame=pad`` keeps and pads such tubes the same way).

The crop is cut and resized to the model's resolution (Lanczos) by
:func:`cut_square`, the function preprocessing writes the training clips with. :meth:`FaceCrop.paste` puts a result
back into a full frame through a soft mask (:func:`soft_mask`: 1 inside, a smooth ramp over
the outer ``feather`` of the square), so that the seam does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


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
        leaves the frame; :func:`cut_square`)."""
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


def square_crop_box(box: Sequence[float], increase: float = 0.1) -> tuple[int, int, int, int]:
    """The square crop of a box: each side pushed out by ``increase`` of the box's extent along
    that axis, then the shorter side widened about the centre to a square; whole pixels."""
    if increase < 0:
        raise ValueError(f"increase must be ≥ 0, got {increase}")
    left, top, right, bottom = (float(v) for v in box)
    width, height = right - left, bottom - top
    side = int(round(max(width, height) * (1.0 + 2.0 * increase)))
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    return x0, y0, x0 + side, y0 + side


def crop_square(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Cut ``box`` = (left, top, right, bottom) out of uint8 H×W×3 ``image``.

    Coordinates are rounded to whole pixels; parts of the box outside the image are filled by
    replicating the nearest border pixel.
    """
    left, top, right, bottom = (int(round(float(v))) for v in box)
    if right <= left or bottom <= top:
        raise ValueError(f"empty crop box {tuple(box)}")
    h, w = image.shape[:2]
    pad = (max(0, -top), max(0, bottom - h), max(0, -left), max(0, right - w))
    if any(pad):
        image = np.pad(image, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)), mode="edge")
        left, right, top, bottom = left + pad[2], right + pad[2], top + pad[0], bottom + pad[0]
    return np.ascontiguousarray(image[top:bottom, left:right])


def cut_square(image: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """``box`` cut out of uint8 H×W×3 ``image`` (:func:`crop_square`: parts outside the image are
    border-replicated) and resized to size×size (Lanczos, antialiased; unchanged when it is
    that size already).

    The one way faces are cut: preprocessing writes its clips and portraits with it and
    inference (``FaceCrop.cut``) cuts its inputs with it.
    """
    crop = crop_square(image, box)
    if crop.shape[0] == crop.shape[1] == size:
        return crop
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
