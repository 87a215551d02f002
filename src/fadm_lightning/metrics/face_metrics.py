"""The face metrics AKD, AED, CSIM (:class:`~fadm_lightning.metrics.registry.Metric` objects,
registered in ``conf/metrics/default.yaml``), each on the network its option names: dlib's
offline models (the default) or the paper's protocol networks from user files
(:mod:`~fadm_lightning.metrics.face_protocol`). The networks are shared by the face metrics of a
run (:class:`FaceNetworks`), and one analysis of a batch of frames serves all of them
(:meth:`FaceMetric.observe` with a per-batch ``cache``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fadm_lightning.metrics.face import DlibFaceAnalyzer, FaceObservation, aed, akd, csim
from fadm_lightning.metrics.face_protocol import (
    ArcFaceEmbedder,
    FANLandmarkBackend,
    OpenFaceEmbedder,
)
from fadm_lightning.metrics.registry import Metric, MetricContext

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


class FaceNetworks:
    """The face networks of one run, each built the first time a metric asks for it."""

    def __init__(self, context: MetricContext) -> None:
        self.face = context.face
        self.files = context.weights
        self.size = self.face.get("image_size", 256)
        self.device = context.device
        self.built: dict[str, Any] = {}
        #: a metric reads dlib's identity embeddings (else dlib computes landmarks only)
        self.dlib_embeddings = False

    def get(self, name: str, arcface_arch: str = "r100"):
        if name not in self.built:
            files, size, device = self.files, self.size, self.device
            if name == "dlib":  # runs on the CPU
                self.built[name] = DlibFaceAnalyzer(**self.face)
            elif name == "fan":
                self.built[name] = FANLandmarkBackend(
                    files.get("fan"), files.get("s3fd"), size, device
                )
            elif name == "openface":
                self.built[name] = OpenFaceEmbedder(files.get("openface"), size, device=device)
            elif name == "arcface":
                self.built[name] = ArcFaceEmbedder(files.get("arcface"), arcface_arch, size, device)
            else:
                raise KeyError(name)
        return self.built[name]

    def dlib_observations(self, frames: torch.Tensor, cache: dict) -> list[FaceObservation]:
        if "dlib" not in cache:
            cache["dlib"] = self.built["dlib"].observe(frames, embeddings=self.dlib_embeddings)
        return cache["dlib"]

    def landmarks(self, choice: str, frames: torch.Tensor, cache: dict) -> list:
        """Landmarks of B frames with ``choice`` (dlib or fan), once per batch."""
        if choice == "fan":
            if "fan" not in cache:
                cache["fan"] = self.built["fan"].landmarks(frames)
            return cache["fan"]
        return [o.landmarks for o in self.dlib_observations(frames, cache)]


def _landmarks_name(choice: str) -> str:
    return FANLandmarkBackend.name if choice == "fan" else DlibFaceAnalyzer.landmarks_name


class FaceMetric(Metric):
    """A per-frame metric on what a face network sees: ``observe(frames, cache)`` → one
    :class:`FaceObservation` per frame, ``compare(generated, reference)`` → B values."""

    detects_faces = True
    option = ""  # the config option choosing its network
    function = staticmethod(akd)

    def __init__(self, choice: str = "dlib") -> None:
        check_face_backends({self.option: choice})
        self.choice = choice
        self.networks: FaceNetworks | None = None
        self.backend = None

    def setup(self, context: MetricContext) -> None:
        if self.networks is None:
            self.networks = context.shared("face_networks", lambda: FaceNetworks(context))
            self.backend = self.networks.get(self.choice)

    @property
    def reason(self) -> str | None:
        if self.backend is None:
            raise RuntimeError(f"metric {self.key!r} is not set up (Metric.setup)")
        return self.backend.reason

    @property
    def weights(self) -> str:
        return self.backend.weights

    def backend_name(self) -> str:
        return DlibFaceAnalyzer.embedding_name

    @property
    def label(self) -> str:
        return f"{self.name}[{self.backend_name()}]"

    def observe(self, frames: torch.Tensor, cache: dict) -> list[FaceObservation]:
        return self.networks.dlib_observations(frames, cache)

    def compare(self, generated: list, reference: list) -> np.ndarray:
        if len(reference) == 1 and len(generated) > 1:
            reference = reference * len(generated)
        return type(self).function(generated, reference)

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
        return self.compare(self.observe(pred, {}), self.observe(reference, {}))


class AKD(FaceMetric):
    """``AKD[dlib-68]`` (``landmarks: dlib``) or ``AKD[fan-2d]`` (``fan``, the protocol's)."""

    name, higher_is_better, option = "AKD", False, "landmarks"
    description = "mean absolute landmark coordinate error, pixels (FOMM protocol)"
    function = staticmethod(akd)

    def __init__(self, landmarks: str = "dlib") -> None:
        super().__init__(landmarks)

    def backend_name(self) -> str:
        return _landmarks_name(self.choice)

    def observe(self, frames: torch.Tensor, cache: dict) -> list[FaceObservation]:
        points = self.networks.landmarks(self.choice, frames, cache)
        return [FaceObservation(landmarks=p) for p in points]


class AED(FaceMetric):
    """``AED[dlib-resnet]`` (``identity: dlib``) or ``AED[openface-nn4.small2]``
    (``openface``, the protocol's, on the whole frame: no face detection)."""

    name, higher_is_better, option = "AED", False, "identity_aed"
    description = "squared L2 of unit-length identity embeddings"
    function = staticmethod(aed)

    def __init__(self, identity: str = "dlib") -> None:
        super().__init__(identity)
        self.detects_faces = identity != "openface"

    def setup(self, context: MetricContext) -> None:
        super().setup(context)
        if self.choice == "dlib":
            self.networks.dlib_embeddings = True

    def backend_name(self) -> str:
        return OpenFaceEmbedder.name if self.choice == "openface" else super().backend_name()

    def observe(self, frames: torch.Tensor, cache: dict) -> list[FaceObservation]:
        if self.choice == "openface":
            return self.backend.observe(frames)
        return super().observe(frames, cache)


class CSIM(FaceMetric):
    """``CSIM[dlib-resnet]`` (``identity: dlib``) or ``CSIM[arcface-<arcface_arch>]``
    (``arcface``: faces aligned with the ``landmarks`` backend's points)."""

    name, higher_is_better, needs_ground_truth = "CSIM", True, False
    option = "identity_csim"
    description = "cosine similarity of identity embeddings"
    function = staticmethod(csim)

    def __init__(
        self, identity: str = "dlib", landmarks: str = "dlib", arcface_arch: str = "r100"
    ) -> None:
        super().__init__(identity)
        check_face_backends({"landmarks": landmarks})
        self.landmarks, self.arcface_arch = landmarks, arcface_arch
        self.landmarker = None

    def setup(self, context: MetricContext) -> None:
        if self.networks is not None:
            return
        self.networks = context.shared("face_networks", lambda: FaceNetworks(context))
        if self.choice == "arcface":
            self.backend = self.networks.get("arcface", self.arcface_arch)
            self.landmarker = self.networks.get(self.landmarks)
        else:
            self.backend = self.networks.get("dlib")
            self.networks.dlib_embeddings = True

    def backend_name(self) -> str:
        if self.choice == "arcface":
            return self.backend.name if self.backend is not None else "arcface"
        return super().backend_name()

    @property
    def reason(self) -> str | None:
        reason = super().reason
        if reason is None and self.landmarker is not None and self.landmarker.reason is not None:
            # the crops are aligned with these landmarks
            return (
                f"ArcFace's face alignment needs the {_landmarks_name(self.landmarks)} "
                f"landmarks: {self.landmarker.reason}"
            )
        return reason

    @property
    def weights(self) -> str:
        if self.choice == "arcface":
            aligned = f", aligned with the {_landmarks_name(self.landmarks)} landmarks"
            return self.backend.weights + aligned
        return super().weights

    def observe(self, frames: torch.Tensor, cache: dict) -> list[FaceObservation]:
        if self.choice == "arcface":
            points = self.networks.landmarks(self.landmarks, frames, cache)
            return self.backend.observe(frames, points)
        return super().observe(frames, cache)
