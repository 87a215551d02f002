"""What a metric is (:class:`Metric`) and where the metrics of a run come from (the registry).

A metric is an object with a ``key`` (its column and log key, ``psnr``), a ``label`` (its table
heading naming the network behind it, ``ST-LPIPS[alex]``), a direction (``higher_is_better``:
True, False, or None for a signed figure), whether it ``needs_ground_truth``, and its
availability: ``reason`` is None when it can be computed, or says why not (a missing network
or file; a metric is then reported as unavailable, never computed with other weights). Its
``scope`` says how it is computed:

``frame``
    ``frames(pred, reference)`` → one value per frame (a B tensor or array; NaN: frame skipped).
``clip``
    ``clip(pred, target)`` → one value for a whole T×C×H×W clip (None: too short); a clip fed in
    chunks goes through ``accumulator()`` (``update(pred, target)`` per chunk, ``compute()`` → a
    dict with the metric's key). Metrics whose ``accumulator`` is the same callable share one.
``set``
    ``features(frames)`` per batch, then ``compute(real_features, fake_features)`` over a whole
    set of frames (FID).

Networks are built by ``setup(context)`` (the device and the face-analysis options of the run,
and a cache of networks shared between metrics), never in ``__init__``: a metric can be listed,
checked and labelled before anything is loaded.

The registry is the ``registry`` node of the ``metrics`` config group
(``conf/metrics/default.yaml``): metric key → Hydra ``_target_`` and options. A run lists the
keys it computes (``metrics.reconstruction``, ``metrics.validation``, …).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

SCOPES = ("frame", "clip", "set")
#: the metrics config group's default (the registry of every built-in metric)
#: (read through importlib.resources: the package may be imported from a zipped wheel)
DEFAULT_CONFIG = resources.files("fadm_lightning") / "conf" / "metrics" / "default.yaml"


class MetricContext:
    """What ``Metric.setup`` gets: the device, the face networks' options (``face``: the dlib
    analyser's, ``image_size`` holding for every face network; ``weights``: the protocol
    networks' files) and :meth:`shared`, one object per key for the metrics of one run."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        face: Mapping[str, Any] | None = None,
        weights: Mapping[str, str | os.PathLike | None] | None = None,
    ) -> None:
        self.device = device
        self.face = dict(face or {})
        self.weights = dict(weights or {})
        self._shared: dict[Any, Any] = {}

    def shared(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` the first time ``key`` is asked for, the same object afterwards."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]


class Metric:
    """Base class of the metrics (subclass it, or provide the same attributes). The defaults are
    those of a per-frame metric without a network that compares with the ground truth."""

    key: str = ""
    name: str = ""  # the label without a network (default: the key)
    higher_is_better: bool | None = False
    needs_ground_truth: bool = True
    scope: str = "frame"
    description: str = ""
    #: a frame without a detected face is skipped (the face metrics)
    detects_faces: bool = False
    #: clip scope: the fewest frames a clip needs
    min_frames: int = 1
    #: clip scope: a callable making a streaming accumulator (None: the clip is kept whole)
    accumulator: Callable[[], Any] | None = None

    def setup(self, context: MetricContext) -> None:
        """Build the networks (once; the metric is unavailable, with the reason, without them)."""

    @property
    def label(self) -> str:
        return self.name or self.key

    @property
    def reason(self) -> str | None:
        """Why the metric is unavailable (None: it is available)."""
        return None

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def weights(self) -> str:
        """The network and weights used (``""``: none)."""
        return ""

    @property
    def arrow(self) -> str:
        if self.higher_is_better is None:
            return ""
        return "↑" if self.higher_is_better else "↓"

    def skip_reason(self, frame_size: tuple[int, ...]) -> str | None:
        """Why it cannot run on frames of ``frame_size`` (H, W) (None: it can)."""
        return None

    # frame scope
    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor | np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no per-frame values")

    # clip scope
    def clip(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError(f"{type(self).__name__} has no per-clip value")


def default_config() -> DictConfig:
    """The ``metrics`` group's default config (``conf/metrics/default.yaml``)."""
    return OmegaConf.create(DEFAULT_CONFIG.read_text(encoding="utf-8"))


def registry_keys(config: DictConfig | Mapping) -> list[str]:
    return list(config["registry"])


def check_keys(config: DictConfig | Mapping, names: Iterable[str]) -> list[str]:
    """``names`` in order, without repeats; ValueError naming those not in the registry."""
    names = list(dict.fromkeys(names))
    known = registry_keys(config)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose among {known}")
    return names


def build_metric(config: DictConfig, key: str) -> Metric:
    """The metric ``key`` of ``config.registry``, instantiated (no network built yet)."""
    from hydra.utils import instantiate

    check_keys(config, [key])
    metric = instantiate(config.registry[key], _convert_="all")
    if getattr(metric, "scope", None) not in SCOPES:
        raise ValueError(f"metric {key!r}: scope must be one of {SCOPES}")
    metric.key = key  # the registry entry names it
    return metric


def build_metrics(config: DictConfig, names: Iterable[str]) -> list[Metric]:
    return [build_metric(config, key) for key in check_keys(config, names)]
