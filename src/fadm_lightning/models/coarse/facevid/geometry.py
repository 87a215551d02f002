"""3-D coordinate grids and keypoint Gaussians for face-vid2vid's feature volumes.

Same ``[-1, 1]`` convention as FOMM (:mod:`..fomm.geometry`): the first and last voxel of each
axis sit at −1 and +1, and coordinates are ordered ``(x, y, z)`` as ``F.grid_sample`` expects for
a ``B×C×D×H×W`` volume (x along W, y along H, z along the depth D).
"""

from __future__ import annotations

import torch

from ..fomm.geometry import make_coordinate_grid


def make_coordinate_grid_3d(
    depth: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build the ``D×H×W×3`` grid of ``(x, y, z)`` coordinates in ``[-1, 1]``.

    Args:
        depth: number of depth slices ``D``.
        height: number of rows ``H``.
        width: number of columns ``W``.
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        ``D×H×W×3``; ``grid[k, i, j] = (2·j/(W−1) − 1, 2·i/(H−1) − 1, 2·k/(D−1) − 1)``.
    """
    xy = make_coordinate_grid(height, width, dtype, device)  # H×W×2
    z = 2 * (torch.arange(depth, dtype=dtype, device=device) / (depth - 1)) - 1  # D
    xy = xy.expand(depth, height, width, 2)  # D×H×W×2
    zz = z.view(depth, 1, 1, 1).expand(depth, height, width, 1)  # D×H×W×1
    return torch.cat([xy, zz], dim=-1)  # D×H×W×3


def kp2gaussian_3d(
    kp_value: torch.Tensor, depth: int, height: int, width: int, kp_variance: float
) -> torch.Tensor:
    """Render each 3-D keypoint as an isotropic Gaussian ``exp(−0.5·‖z − kp‖² / σ²)``.

    Args:
        kp_value: ``B×K×3`` keypoints in ``[-1, 1]`` (x, y, z).
        depth: volume depth ``D``.
        height: volume height ``H``.
        width: volume width ``W``.
        kp_variance: ``σ²`` (0.01 in face-vid2vid).

    Returns:
        ``B×K×D×H×W`` Gaussian volumes (peak value 1, not normalised).
    """
    grid = make_coordinate_grid_3d(depth, height, width, kp_value.dtype, kp_value.device)
    mean = kp_value[:, :, None, None, None, :]  # B×K×1×1×1×3
    squared_distance = ((grid - mean) ** 2).sum(dim=-1)  # B×K×D×H×W
    return torch.exp(-0.5 * squared_distance / kp_variance)
