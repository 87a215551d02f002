"""Per-frame image metrics on B×3×H×W frames in [0, 1] (REFERENCE_SPEC §6.2).

| metric | computation                                                                 |
|--------|-----------------------------------------------------------------------------|
| L1     | mean |pred − gt| on [0, 1] RGB                                              |
| PSNR   | on the uint8 frames (both quantised to 1/255 steps), data range 255         |
| SSIM   | on the uint8 frames, 7×7 uniform window (skimage's default), data range 255 |

Each function returns one value per frame (B); callers average over frames.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"expected two B×C×H×W tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float → the float values of its uint8 frame (×255, clipped, truncated), in [0, 255]."""
    return (x.float().clamp(0, 1) * 255).floor()


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    _check(pred, target)
    return (pred.float() - target.float()).abs().flatten(1).mean(1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    _check(pred, target)
    return peak_signal_noise_ratio(
        quantize(pred), quantize(target), data_range=255.0, reduction="none", dim=(1, 2, 3)
    )


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    _check(pred, target)
    return structural_similarity_index_measure(
        quantize(pred),
        quantize(target),
        gaussian_kernel=False,
        kernel_size=7,
        data_range=255.0,
        reduction="none",
    )


def frame_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"l1", "psnr", "ssim"}``, each a B tensor."""
    return {"l1": l1(pred, target), "psnr": psnr(pred, target), "ssim": ssim(pred, target)}
