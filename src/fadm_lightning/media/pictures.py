"""Pictures and videos of float frames: one conversion for files and W&B.

W&B does not scale float pixels: ``wandb.Image`` of a float tensor or array casts it to uint8 as
it is (``_convert_to_uint8`` is ``data.astype(np.uint8)`` in wandb 0.31), so frames in [0, 1]
become 0 (black) and only an exact 1.0 (the grid's padding) becomes 1. Everything here therefore converts once, with :func:`to_uint8` (the rounding of
torchvision's ``save_image``), and hands the same uint8 pixels to the PNG/mp4 file and to W&B.

Videos are H.264 yuv420p mp4s (:class:`fadm_lightning.media.video.VideoWriter`), the profile
browsers play, so that W&B shows them as playable videos. (``media.video.write_mp4`` writes
yuv444p "High 4:4:4", which keeps dataset clips exact but which browsers do not play.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fadm_lightning.media.video import VideoWriter


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Float frames in [0, 1], ``3×H×W`` or ``T×3×H×W`` → uint8 ``H×W×3`` or ``T×H×W×3``.

    ``round(255·x)`` after clamping to [0, 1] (NaN → 0), exactly as torchvision's ``save_image``.
    """
    x = torch.nan_to_num(frames.detach().float().cpu(), nan=0.0).clamp(0.0, 1.0)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected 3×H×W or T×3×H×W RGB frames, got {tuple(frames.shape)}")
    return x.mul(255.0).add(0.5).floor().to(torch.uint8).movedim(-3, -1).contiguous().numpy()


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``H×W×3`` picture as a PNG (lossless: reading it back gives ``image``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def side_by_side(panels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Clips ``T×3×H×W`` (a ``1×3×H×W`` panel is repeated) joined left to right: ``T×3×H×(k·W)``."""
    count = max(p.shape[0] for p in panels)
    joined = []
    for panel in panels:
        panel = panel.detach().float().cpu()
        joined.append(panel.expand(count, *panel.shape[1:]) if panel.shape[0] == 1 else panel)
    return torch.cat(joined, dim=-1)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write uint8 ``T×H×W×3`` frames as a browser-playable H.264 (yuv420p) mp4, atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"{path}: expected uint8 T×H×W×3 frames (T ≥ 1), got {frames.shape}")
    with VideoWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def safe_name(name: str) -> str:
    """A file-name-safe version of a clip name (``id#clip.mp4`` → ``id_clip``)."""
    stem = re.sub(r"\.(mp4|png|avi|mov)$", "", str(name))
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", stem).strip("_.")[:100] or "clip"
