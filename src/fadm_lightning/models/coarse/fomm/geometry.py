"""Coordinate grids and keypoint Gaussians in FOMM's ``[-1, 1]`` convention.

FOMM places the grid values on pixel *centres*: column ``j`` of a ``W``-wide map has
``x = 2·j/(W−1) − 1``, so the first and last columns sit exactly at −1 and +1 (the
``align_corners=True`` reading of ``F.grid_sample``). Keypoints, sparse motions and the dense
deformation all live in this convention, whatever ``align_corners`` the resampling calls use.
"""

from __future__ import annotations

import torch


def make_coordinate_grid(
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build the ``H×W×2`` grid of ``(x, y)`` coordinates in ``[-1, 1]``.

    Args:
        height: number of rows ``H``.
        width: number of columns ``W``.
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        ``H×W×2`` tensor; ``grid[i, j] = (2·j/(W−1) − 1, 2·i/(H−1) − 1)``.
    """
    x = torch.arange(width, dtype=dtype, device=device)
    y = torch.arange(height, dtype=dtype, device=device)
    x = 2 * (x / (width - 1)) - 1  # W in [-1, 1]
    y = 2 * (y / (height - 1)) - 1  # H in [-1, 1]
    xx = x.view(1, width).expand(height, width)
    yy = y.view(height, 1).expand(height, width)
    return torch.stack([xx, yy], dim=-1)  # H×W×2, x first


def kp2gaussian(
    kp_value: torch.Tensor, height: int, width: int, kp_variance: float
) -> torch.Tensor:
    """Render each keypoint as an isotropic Gaussian ``exp(−0.5·‖z − kp‖² / σ²)``.

    Args:
        kp_value: ``…×K×2`` keypoint coordinates in ``[-1, 1]``.
        height: map height.
        width: map width.
        kp_variance: ``σ²`` (0.01 in FOMM).

    Returns:
        ``…×K×H×W`` Gaussian maps (peak value 1, not normalised).
    """
    grid = make_coordinate_grid(height, width, kp_value.dtype, kp_value.device)  # H×W×2
    mean = kp_value[..., None, None, :]  # …×K×1×1×2
    squared_distance = ((grid - mean) ** 2).sum(dim=-1)  # …×K×H×W
    return torch.exp(-0.5 * squared_distance / kp_variance)
