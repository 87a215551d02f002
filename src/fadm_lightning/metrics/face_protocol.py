"""The paper's protocol face networks for AKD, AED and CSIM, from files the user supplies.

| label                      | network and file                                               |
|----------------------------|----------------------------------------------------------------|
| ``AKD[fan-2d]``            | face-alignment's FAN (2DFAN-4) with its S3FD detector, first   |
|                            | face (``2DFAN4-11f355bf06.pth.tar``, ``s3fd-619a316812.pth``)  |
| ``AED[openface-nn4.small2]``| OpenFace nn4.small2, OpenFacePytorch's ``openface.pth``: the   |
|                            | whole frame, RGB→BGR, resized to 96×96 in [0, 1], 128-d unit   |
|                            | length; AED = squared L2                                       |
| ``CSIM[arcface-<arch>]``   | insightface arcface_torch IResNet (``backbone.pth``): the face |
|                            | aligned to 112×112 (5-point similarity from the 68 landmarks   |
|                            | of the landmark backend), ``(x − 0.5)/0.5``, 512-d; cosine      |

Each backend is *unavailable* (``reason`` says which file is missing and where it goes) until
its files are there; a file that is not the network's weights is an error listing the
differing keys. No network is ever built with random weights for a reported value.

Frames are analysed as uint8 at ``image_size`` (256, the FOMM protocol's frame size), like dlib's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fadm_lightning.faces.alignment import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE_112,
    five_points,
    similarity_transform,
    warp_affine,
)
from fadm_lightning.metrics.face import FaceObservation, analysis_frames, to_uint8_images
from fadm_lightning.metrics.lpips_fid import file_digest
from fadm_lightning.models.face.fan import (
    FANLandmarks,
    FANUnavailableError,
    package_version,
)
from fadm_lightning.models.face.iresnet import ARCHITECTURES, iresnet
from fadm_lightning.models.face.openface import INPUT_SIZE as OPENFACE_SIZE
from fadm_lightning.models.face.openface import OpenFaceNN4Small2
from fadm_lightning.models.face.weights import load_weights

PathLike = str | os.PathLike
OPENFACE_FILE = "openface.pth"
ARCFACE_FILE = "backbone.pth"


def _user_file(
    path: PathLike | None, file_name: str, option: str, what: str
) -> tuple[Path | None, str | None]:
    """(path, None) when the file exists, else (None, the reason)."""
    if path is None:
        return (
            None,
            f"needs {what} ({file_name}), which cannot be downloaded here: set {option}=PATH",
        )
    path = Path(path).expanduser()
    if not path.is_file():
        return None, (
            f"needs {what} ({file_name}), which cannot be downloaded here: put it at {path} "
            f"or set {option}=PATH"
        )
    return path, None


def _short_digest(path: Path) -> str:
    return f"sha256 {file_digest(path)[:8]}"


class FANLandmarkBackend:
    """``AKD[fan-2d]`` landmarks: first S3FD face, FAN 68×2 (pixels at ``image_size``).

    Args:
        fan_weights, s3fd_weights (paths): see :mod:`~fadm_lightning.models.face.fan`.
        image_size (int, default 256), device: where frames are analysed / the networks run.
    """

    name = "fan-2d"

    def __init__(
        self,
        fan_weights: PathLike | None,
        s3fd_weights: PathLike | None,
        image_size: int | None = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        self.image_size = image_size
        self.reason: str | None = None
        self.weights = ""
        self.fan: FANLandmarks | None = None
        try:
            self.fan = FANLandmarks(fan_weights, s3fd_weights, device)
        except FANUnavailableError as err:
            self.reason = str(err)
            return
        version = ".".join(map(str, package_version() or ()))
        self.weights = (
            f"face-alignment {version} FAN 2DFAN-4 {self.fan.fan_path.name} "
            f"({_short_digest(self.fan.fan_path)}), S3FD {self.fan.s3fd_path.name} "
            f"({_short_digest(self.fan.s3fd_path)}), flip_input=False, first detected face"
        )

    @property
    def available(self) -> bool:
        return self.fan is not None

    def landmarks(self, frames: torch.Tensor) -> list[np.ndarray | None]:
        """68×2 landmarks (or None: no face) per frame of B×3×H×W frames in [0, 1]."""
        if self.fan is None:
            raise RuntimeError(f"AKD[{self.name}] is unavailable: {self.reason}")
        return [self.fan.landmarks(image) for image in to_uint8_images(frames, self.image_size)]


class OpenFaceEmbedder:
    """``AED[openface-nn4.small2]``: one 128-d embedding per whole frame (no face detection).

    pose-evaluation's ``extract.py``: the uint8 frame, RGB → BGR, ``skimage.transform.resize``
    to 96×96 (float [0, 1]; bilinear, and — scikit-image 0.14, which it pins — without
    anti-aliasing), ``net(x)[0]``.

    Args:
        weights (path or None): OpenFacePytorch's ``openface.pth``.
        image_size (int, default 256): the frame size the protocol resizes from.
        antialias (bool, default False): smooth before downsampling (scikit-image ≥ 0.15's
            default) instead of the pinned 0.14 behaviour.
        device: where the network runs.
    """

    name = "openface-nn4.small2"

    def __init__(
        self,
        weights: PathLike | None,
        image_size: int | None = 256,
        antialias: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        self.image_size, self.antialias = image_size, antialias
        self.device = torch.device(device)
        self.net: OpenFaceNN4Small2 | None = None
        self.weights = ""
        path, self.reason = _user_file(
            weights,
            OPENFACE_FILE,
            "metrics.weights.openface",
            "the OpenFace nn4.small2 weights of the OpenFacePytorch port",
        )
        if path is None:
            return
        self.net = load_weights(
            OpenFaceNN4Small2(), path, f"OpenFace nn4.small2 (OpenFacePytorch {OPENFACE_FILE})"
        ).to(self.device)
        self.weights = (
            f"OpenFace nn4.small2 {path.name} ({_short_digest(path)}); whole frame, BGR, "
            f"96×96{' antialiased' if antialias else ''}"
        )

    @property
    def available(self) -> bool:
        return self.net is not None

    def inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """B×3×96×96 BGR network inputs in [0, 1] of B×3×H×W RGB frames in [0, 1]."""
        x = analysis_frames(frames, self.image_size).flip(1)  # RGB → BGR
        return F.interpolate(
            x,
            size=(OPENFACE_SIZE, OPENFACE_SIZE),
            mode="bilinear",
            align_corners=False,
            antialias=self.antialias,
        )

    @torch.no_grad()
    def observe(self, frames: torch.Tensor) -> list[FaceObservation]:
        if self.net is None:
            raise RuntimeError(f"AED[{self.name}] is unavailable: {self.reason}")
        embeddings = self.net(self.inputs(frames).to(self.device)).double().cpu().numpy()
        return [FaceObservation(embedding=e) for e in embeddings]


class ArcFaceEmbedder:
    """``CSIM[arcface-<arch>]``: 512-d unit-length embeddings of faces aligned to 112×112.

    Args:
        weights (path or None): insightface arcface_torch's ``backbone.pth`` for ``arch``.
        arch (str, default "r100"): ``r18``, ``r34``, ``r50`` or ``r100``.
        image_size (int, default 256): frames (and landmarks) are at this size.
        device: where the network runs.
    """

    def __init__(
        self,
        weights: PathLike | None,
        arch: str = "r100",
        image_size: int | None = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"metrics.arcface_arch={arch!r}: choose among {list(ARCHITECTURES)} (insightface "
                "arcface_torch IResNets)"
            )
        self.arch, self.image_size = arch, image_size
        self.device = torch.device(device)
        self.net: torch.nn.Module | None = None
        self.weights = ""
        path, self.reason = _user_file(
            weights,
            ARCFACE_FILE,
            "metrics.weights.arcface",
            f"the insightface arcface_torch IResNet-{arch[1:]} weights",
        )
        if path is None:
            return
        self.net = load_weights(
            iresnet(arch), path, f"ArcFace iresnet{arch[1:]} (arcface_torch {ARCFACE_FILE})"
        ).to(self.device)
        self.weights = (
            f"ArcFace IResNet-{arch[1:]} {path.name} ({_short_digest(path)}); faces aligned to "
            "112×112 (5-point similarity transform onto insightface's template)"
        )

    @property
    def name(self) -> str:
        return f"arcface-{self.arch}"

    @property
    def available(self) -> bool:
        return self.net is not None

    @torch.no_grad()
    def observe(
        self, frames: torch.Tensor, landmarks: list[np.ndarray | None]
    ) -> list[FaceObservation]:
        """One observation per frame: its landmarks and embedding, or nothing (no face)."""
        if self.net is None:
            raise RuntimeError(f"CSIM[{self.name}] is unavailable: {self.reason}")
        if len(landmarks) != frames.shape[0]:
            raise ValueError(f"{len(landmarks)} landmark sets for {frames.shape[0]} frames")
        out = [FaceObservation() for _ in landmarks]
        found = [i for i, points in enumerate(landmarks) if points is not None]
        if not found:
            return out
        images = analysis_frames(frames[found], self.image_size)
        matrices = np.stack(
            [similarity_transform(five_points(landmarks[i]), ARCFACE_TEMPLATE_112) for i in found]
        )
        crops = warp_affine(images, matrices, ARCFACE_SIZE)  # B×3×112×112 RGB in [0, 1]
        embeddings = F.normalize(self.net(((crops - 0.5) / 0.5).to(self.device)).double(), dim=1)
        for i, e in zip(found, embeddings.cpu().numpy(), strict=True):
            out[i] = FaceObservation(np.asarray(landmarks[i], dtype=np.float64), e)
        return out
