"""The side-by-side sample videos of an evaluation (``videos/*.mp4`` in the run dir:
[source |] driving | coarse | refined …), written as H.264 yuv420p so that browsers and W&B play
them."""

from __future__ import annotations

from pathlib import Path

import torch

from fadm_lightning.media.pictures import side_by_side, to_uint8, write_mp4


def write_video(path: Path, source: torch.Tensor, frames: dict[str, torch.Tensor], order, fps):
    """Panels side by side (left to right in ``order``); a 1-frame panel is repeated.

    H.264 yuv420p (the profile browsers play, so that W&B shows a playable video), with the
    uint8 conversion of the training run's sample grids and test videos."""
    panels = [source if name == "source" else frames[name] for name in order]
    write_mp4(path, to_uint8(side_by_side(panels)), fps=fps)  # T×H×(k·W)×3
