"""FAN 68-point landmarks with the ``face-alignment`` package, from local files only.

The AKD extractor of the FOMM / pose-evaluation protocol (REFERENCE_SPEC §6.1):
``face_alignment.FaceAlignment(LandmarksType 2D, flip_input=False)`` with its default S3FD face
detector, on the uint8 RGB frame; the first detected face's 68×2 landmarks (pixels).

The package (``pip install 'fadm-lightning[protocol]'``, face-alignment ≥ 1.5) downloads its two
networks on first use; here they are files the user supplies, checked before anything is built:

| network | file (face-alignment 1.5) | what it is |
|---|---|---|
| 2DFAN-4 | ``2DFAN4-11f355bf06.pth.tar`` | state dict of ``face_alignment.models.FAN(4)`` |
| S3FD | ``s3fd-619a316812.pth`` | state dict of ``face_alignment.detection.sfd.net_s3fd.s3fd`` |

(the names of the package's download URLs, which it keeps in torch hub's ``checkpoints/``
folder: copy them from ``~/.cache/torch/hub/checkpoints/`` of a machine that has them). Both
are loaded with ``weights_only=True`` and checked key by key; FAN is handed to the package's
``FaceAlignment`` already loaded and S3FD by path, so the package never reaches its URLs.
``torch.compile`` is off (the package's default compiles at start-up).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from fadm_lightning.models.face.weights import load_weights

PACKAGE = "face-alignment"
MIN_VERSION = (1, 5)  # loads 2DFAN4-11f355bf06.pth.tar as a state dict (1.4 used TorchScript)
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
S3FD_FILE = "s3fd-619a316812.pth"
INSTALL_HINT = "pip install 'fadm-lightning[protocol]' (or pip install 'face-alignment>=1.5')"


class FANUnavailableError(RuntimeError):
    """The package or a weights file is missing; the message says which and where it goes."""


def package_version() -> tuple[int, ...] | None:
    """The installed face-alignment version, or None (not imported: it pulls numba)."""
    if importlib.util.find_spec("face_alignment") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        raw = version(PACKAGE)
    except PackageNotFoundError:
        return None
    return tuple(int(p) for p in raw.split(".")[:2] if p.isdigit())


def check_fan_files(fan_weights: str | os.PathLike | None, s3fd_weights: str | os.PathLike | None):
    """(FAN path, S3FD path), or :class:`FANUnavailableError` naming what is missing."""
    found = package_version()
    if found is None:
        raise FANUnavailableError(f"the Python package {PACKAGE} is not installed: {INSTALL_HINT}")
    if found < MIN_VERSION:
        raise FANUnavailableError(
            f"{PACKAGE} {'.'.join(map(str, found))} is installed; the protocol's state-dict files "
            f"need ≥ {'.'.join(map(str, MIN_VERSION))}: {INSTALL_HINT}"
        )
    missing = []
    paths = []
    for given, name, option in (
        (fan_weights, FAN_FILE, "metrics.weights.fan"),
        (s3fd_weights, S3FD_FILE, "metrics.weights.s3fd"),
    ):
        path = Path(given).expanduser() if given else None
        if path is None:
            missing.append(f"{name}: set {option}=PATH")
        elif not path.is_file():
            missing.append(f"{name}: put it at {path} or set {option}=PATH")
        paths.append(path)
    if missing:
        raise FANUnavailableError(
            "needs face-alignment's FAN and S3FD files (those it downloads into torch hub's "
            "checkpoints/ folder), which cannot be downloaded here: " + "; ".join(missing)
        )
    return paths[0], paths[1]


class FANLandmarks:
    """68×2 FAN landmarks (pixels) of the first face S3FD detects in an image.

    Args:
        fan_weights (path): ``2DFAN4-11f355bf06.pth.tar``.
        s3fd_weights (path): ``s3fd-619a316812.pth``.
        device: where both networks run.

    Raises:
        FANUnavailableError: the package or a file is missing.
        WeightsFileError: a file is not the network's state dict (differences listed).
    """

    def __init__(
        self,
        fan_weights: str | os.PathLike,
        s3fd_weights: str | os.PathLike,
        device: str | torch.device = "cpu",
    ) -> None:
        fan_path, s3fd_path = check_fan_files(fan_weights, s3fd_weights)
        import face_alignment
        from face_alignment.detection.sfd.net_s3fd import s3fd
        from face_alignment.models import FAN

        device = str(torch.device(device))
        fan = load_weights(FAN(4), fan_path, f"face-alignment's 2DFAN-4 ({FAN_FILE})").to(device)
        load_weights(s3fd(), s3fd_path, f"face-alignment's S3FD detector ({S3FD_FILE})")

        class _LocalFaceAlignment(face_alignment.FaceAlignment):
            def _load_native(self, *args, **kwargs):  # the FAN loaded above, not the URL's
                return fan

        self.fan_path, self.s3fd_path = fan_path, s3fd_path
        self.aligner = _LocalFaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            flip_input=False,
            face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(s3fd_path)},
            compile=False,
        )

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """68×2 float64 (x, y) pixels of the first detected face of a uint8 H×W×3 RGB image."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
            raise ValueError(
                f"expected a uint8 H×W×3 RGB image, got {getattr(image, 'shape', image)}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected."
            found = self.aligner.get_landmarks_from_image(np.ascontiguousarray(image))
        if not found:
            return None
        return np.asarray(found[0], dtype=np.float64)[:, :2]
