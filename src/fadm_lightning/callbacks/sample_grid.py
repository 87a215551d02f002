"""Writes picture grids (source | driving | coarse | refined) of validation samples and logs them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from fadm_lightning.callbacks.loggers import wandb_loggers
from fadm_lightning.media.pictures import save_png, to_uint8

COLUMNS = ("source", "driving", "coarse", "refined")


def sample_grid(outputs: dict[str, torch.Tensor], max_rows: int = 8) -> torch.Tensor:
    """One row per pair, columns source | driving | coarse | refined. Returns 3×H'×W' in [0, 1]."""
    rows = min(max_rows, outputs["driving"].shape[0])
    tiles = torch.stack([outputs[c][:rows].float().cpu() for c in COLUMNS], dim=1)  # R×4×3×H×W
    return make_grid(tiles.flatten(0, 1), nrow=len(COLUMNS), padding=2, pad_value=1.0)


class SampleGridCallback(L.Callback):
    """Saves ``<dirpath>/step_XXXXXXX.png`` for the first validation batch and logs it to W&B
    (``val/samples``): the same uint8 pixels in both (W&B does not scale float tensors).

    Args:
        dirpath: folder for the PNGs (default: ``<trainer.default_root_dir>/samples``).
        max_rows: pairs per grid.
    """

    def __init__(self, dirpath: str | None = None, max_rows: int = 8) -> None:
        self.dirpath = dirpath
        self.max_rows = max_rows
        self.last_path: Path | None = None

    @rank_zero_only
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if batch_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict):
            return
        image = to_uint8(sample_grid(outputs, self.max_rows))  # H×W×3, for the file and W&B
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "samples")
        self.last_path = save_png(image, folder / f"step_{trainer.global_step:07d}.png")
        for logger in wandb_loggers(trainer):
            logger.log_image(
                "val/samples", [image], step=trainer.global_step, caption=[" | ".join(COLUMNS)]
            )
