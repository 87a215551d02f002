"""Evaluation metrics (REFERENCE_SPEC §6), each named after the network behind it.

* :mod:`~fadm_lightning.metrics.image` — L1, PSNR, SSIM per frame (torchmetrics, no network);
* :mod:`~fadm_lightning.metrics.lpips_fid` — ``LPIPS[alex]`` and ``FID[inception-2015-12-05]``;
* :mod:`~fadm_lightning.metrics.perceptual` — ``ST-LPIPS[alex]`` (its network ships in the
  ``stlpips-pytorch`` wheel: offline);
* :mod:`~fadm_lightning.metrics.temporal` — ``tdiff`` and ``flicker``, per clip (no network);
* :mod:`~fadm_lightning.metrics.face` — ``AKD[dlib-68]``, ``AED[dlib-resnet]``,
  ``CSIM[dlib-resnet]`` (the defaults, offline);
* :mod:`~fadm_lightning.metrics.face_protocol` — the paper's protocol networks from user files:
  ``AKD[fan-2d]``, ``AED[openface-nn4.small2]``, ``CSIM[arcface-r100]``;
* :mod:`~fadm_lightning.metrics.registry` — :class:`Metric`, the protocol of a metric, and
  the registry (the ``metrics`` config group, ``conf/metrics/default.yaml``);
* :mod:`~fadm_lightning.metrics.builtin`, :mod:`~fadm_lightning.metrics.face_metrics` — the
  registered metrics;
* :mod:`~fadm_lightning.metrics.suite` — :class:`MetricSuite`, the metrics of one run with
  their availability (a missing network makes a metric unavailable, never random).
"""

from fadm_lightning.metrics.registry import Metric, MetricContext
from fadm_lightning.metrics.suite import MetricSuite

__all__ = ["Metric", "MetricContext", "MetricSuite"]
