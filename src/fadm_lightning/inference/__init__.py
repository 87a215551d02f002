"""Inference on people's images and videos: the parts shared by ``python -m
fadm_lightning.animate`` and ``python -m fadm_lightning.rectify`` (``docs/inference.md``).

* :mod:`.model` — :func:`load_refiner` (a training checkpoint or the official release, never
  random weights), :class:`SamplerSettings`, :class:`FrameRefiner` (batches, shared noise,
  bf16 / ``torch.compile`` on CUDA);
* :mod:`.animate`, :mod:`.rectify` — the work of each command (options, one video, ``run``);
* :mod:`.batch` — many inputs with one model, resumable; :mod:`.cli` — errors and settings
  shared by the commands.

Faces are found, cut and pasted back by :mod:`fadm_lightning.faces`; videos are read and written
by :mod:`fadm_lightning.media`. The names below are re-exported for notebooks.
"""

from fadm_lightning.faces.crop import FaceCrop, soft_mask
from fadm_lightning.faces.detection import FaceFinder
from fadm_lightning.faces.scan import NoFaceFoundError
from fadm_lightning.inference.model import (
    FrameRefiner,
    InferenceError,
    Refiner,
    SamplerSettings,
    load_refiner,
)
from fadm_lightning.media.video import VideoInfo, VideoWriter, iter_frames, probe_video

__all__ = [
    "FaceCrop",
    "FaceFinder",
    "FrameRefiner",
    "InferenceError",
    "NoFaceFoundError",
    "Refiner",
    "SamplerSettings",
    "VideoInfo",
    "VideoWriter",
    "iter_frames",
    "load_refiner",
    "probe_video",
    "soft_mask",
]
