"""What the test stage leaves in the run: side-by-side test videos, and the results table in W&B.

* :class:`ReconstructionVideosCallback` writes the first test clip(s) as ``<dirpath>/test_<clip>.mp4``
  (ground truth | coarse | refined, H.264 yuv420p) and logs them to W&B as playable
  ``wandb.Video``s (``test/videos``), from those mp4 files.
* :class:`WandbTestTableCallback` logs the coarse-vs-refined table printed at the end of
  ``python -m fadm_lightning.train`` (:func:`~fadm_lightning.evaluation.tables.results_table`) as a
  ``wandb.Table`` (``test/table``): rows ``coarse`` and ``refined``, a column per metric logged
  as ``test/<metric>_coarse`` / ``test/<metric>_refined``. Without a ``WandbLogger`` it does
  nothing. (The test metrics themselves reach W&B through ``self.log`` of the LightningModule.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from fadm_lightning.callbacks.loggers import wandb_loggers
from fadm_lightning.evaluation.tables import results_table
from fadm_lightning.media.pictures import safe_name, side_by_side, to_uint8, write_mp4

VIDEO_PANELS = ("video", "coarse", "refined")  # test_step outputs: ground truth, coarse, refined
VIDEO_CAPTION = "ground truth | coarse | refined"


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value) if value.numel() == 1 else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ReconstructionVideosCallback(L.Callback):
    """Writes the first ``num_videos`` test clips side by side (ground truth | coarse | refined)
    as ``<dirpath>/test_<clip name>.mp4`` and, at the end of the test stage, logs them to every
    ``WandbLogger`` as ``test/videos`` (``wandb.Video`` of the mp4 file, format mp4).

    Reads the outputs of ``test_step``: ``{"video": T×3×H×W, "coarse": …, "refined": …}`` in
    [0, 1]; other outputs (e.g. the FOMM pretraining module's) are skipped.

    Args:
        dirpath: folder of the mp4s (default: ``<trainer.default_root_dir>/videos``).
        num_videos: how many test clips (the first ones; 0: none).
        fps: frame rate of the mp4s.
        key: the W&B key.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        num_videos: int = 1,
        fps: float = 25.0,
        key: str = "test/videos",
    ) -> None:
        self.dirpath = dirpath
        self.num_videos = int(num_videos)
        self.fps = float(fps)
        self.key = key
        self.video_paths: list[Path] = []

    def on_test_start(self, trainer, pl_module) -> None:
        self.video_paths = []

    @rank_zero_only
    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if dataloader_idx != 0 or batch_idx >= self.num_videos or not isinstance(outputs, dict):
            return
        if not all(isinstance(outputs.get(k), torch.Tensor) for k in VIDEO_PANELS):
            return
        names = batch.get("name") if isinstance(batch, dict) else None
        name = names[0] if isinstance(names, list | tuple) and names else f"{batch_idx:03d}"
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "videos")
        path = folder / f"test_{safe_name(name)}.mp4"
        if path in self.video_paths:  # two clips of one name
            path = folder / f"test_{safe_name(name)}_{batch_idx:03d}.mp4"
        frames = to_uint8(side_by_side([outputs[k] for k in VIDEO_PANELS]))  # T×H×3W×3
        self.video_paths.append(write_mp4(path, frames, fps=self.fps))

    @rank_zero_only
    def on_test_end(self, trainer, pl_module) -> None:
        if not self.video_paths:
            return
        for logger in wandb_loggers(trainer):
            logger.log_video(
                self.key,
                [str(p) for p in self.video_paths],
                step=trainer.global_step,
                caption=[f"{p.stem[len('test_') :]}: {VIDEO_CAPTION}" for p in self.video_paths],
                format=["mp4"] * len(self.video_paths),
            )


class WandbTestTableCallback(L.Callback):
    """At the end of the test stage, logs the results table (the one printed by
    ``fadm_lightning.train``, from ``trainer.callback_metrics``) to every ``WandbLogger`` as a
    ``wandb.Table`` under ``key``: column ``frames`` (the row: ``coarse``, ``refined``) and one
    column per metric (``L1``, ``PSNR``, ``SSIM``, … whatever is logged as
    ``test/<metric>_coarse`` / ``test/<metric>_refined``). Does nothing without a W&B logger.
    """

    def __init__(self, key: str = "test/table", stage: str = "test") -> None:
        self.key = key
        self.stage = stage

    @rank_zero_only
    def on_test_end(self, trainer, pl_module) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            if (number := _scalar(value)) is not None:
                metrics[key] = number
        columns, rows = results_table(metrics, self.stage)
        if not rows:
            return
        header = ["frames", *(c.label for c in columns)]
        data = [[label, *values] for label, values in rows]
        for logger in loggers:
            logger.log_table(self.key, columns=header, data=data, step=trainer.global_step)
