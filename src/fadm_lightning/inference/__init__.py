"""Inference on people's images and videos: the parts shared by ``python -m
fadm_lightning.animate`` and ``python -m fadm_lightning.rectify`` (``docs/inference.md``).

* :mod:`.model` — :func:`load_refiner` (a training checkpoint or the official release, never
  random weights), :class:`SamplerSettings`, :class:`FrameRefiner` (batches, shared noise,
  bf16 / ``torch.compile`` on CUDA);
* :mod:`.faces` — face crops the way the training data were cut, and soft paste-back;
* :mod:`.media` — decoding any video upright, and mp4 output with the input's frame rate and
  audio, written atomically;
* :mod:`.batch` — many inputs with one model, resumable.
"""

from fadm_lightning.inference.faces import FaceCrop, FaceFinder, NoFaceFoundError, soft_mask
from fadm_lightning.inference.media import VideoInfo, VideoWriter, iter_frames, probe_video
from fadm_lightning.inference.model import (
    FrameRefiner,
    InferenceError,
    Refiner,
    SamplerSettings,
    load_refiner,
)

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
