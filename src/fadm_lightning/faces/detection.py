"""Face detection for crops: dlib's detector on frames scaled down for speed.

:class:`FaceFinder` runs :class:`~fadm_lightning.faces.dlib_face.DlibFace` (HOG, optionally the
CNN detector as a fallback) on a copy of the frame whose longest side is at most ``max_side``
pixels and scales boxes and landmarks back to the frame's pixels. Preprocessing, ``animate`` and
``rectify`` find their faces with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fadm_lightning.faces.dlib_face import DlibFace

#: the smallest side of an image the detectors look at (HOG finds faces of about 80 px)
MIN_SIDE = 32


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
        """Face boxes N×4, largest first (``thorough``: CNN fallback when HOG finds none).

        An image under ``MIN_SIDE`` pixels on a side (once scaled to ``max_side``) holds no face
        dlib could find (its CNN detector fails on such an image): none, without a detector."""
        if min(image.shape[:2]) < MIN_SIDE:
            return np.empty((0, 4), np.float64)
        small, scale = self._scaled(image)
        if min(small.shape[:2]) < MIN_SIDE:
            return np.empty((0, 4), np.float64)
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
