"""FOMM keypoint detector: K keypoints and their local 2×2 affine jacobians.

Keypoints are returned as a dict (the FOMM convention, also used by :mod:`.animation`)::

    {"value": B×K×2 in [-1, 1] (x, y), "jacobian": B×K×2×2}   # "jacobian" iff estimate_jacobian
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasInterpolation2d, Hourglass
from .geometry import make_coordinate_grid

Keypoints = dict[str, torch.Tensor]


class KPDetector(nn.Module):
    """Unsupervised keypoint detector (hourglass → K heatmaps → soft-argmax).

    Defaults are the vox-256 values. For a 256×256 image: anti-aliased ×0.25 → 64×64 →
    hourglass (``block_expansion + num_channels`` = 35 channels) → 7×7 ``kp`` conv with
    ``pad=0`` → K heatmaps of 58×58 → softmax of ``logits / temperature`` over the 58·58
    positions → expected ``(x, y)`` of a 58×58 ``[-1, 1]`` grid.

    Args:
        block_expansion: hourglass base width (32).
        num_kp: number of keypoints K (10).
        num_channels: image channels (3).
        max_features: hourglass width cap (1024).
        num_blocks: hourglass depth (5); the downscaled input must be divisible by ``2^num_blocks``.
        temperature: softmax temperature of the heatmaps (0.1).
        estimate_jacobian: also predict a 2×2 jacobian per keypoint (True).
        scale_factor: input downscaling before the hourglass (0.25).
        single_jacobian_map: share one jacobian map between all keypoints (False).
        pad: padding of the 7×7 ``kp``/``jacobian`` convs (0: the official 58×58 heatmaps).
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_kp: int = 10,
        num_channels: int = 3,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        estimate_jacobian: bool = True,
        scale_factor: float = 0.25,
        single_jacobian_map: bool = False,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.pad = pad

        self.predictor = Hourglass(
            block_expansion,
            in_features=num_channels,
            num_blocks=num_blocks,
            max_features=max_features,
        )
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)

        self.num_jacobian_maps = 0
        self.jacobian: nn.Conv2d | None = None
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters,
                4 * self.num_jacobian_maps,
                kernel_size=(7, 7),
                padding=pad,
            )
            # start from identity jacobians: zero weights, bias = flattened 2×2 identity
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(
                    torch.tensor([1.0, 0.0, 0.0, 1.0] * self.num_jacobian_maps)
                )

        # registered only when used, as in the official state dict (key "down.weight")
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def heatmap_size(self, image_size: int) -> int:
        """Side of the keypoint heatmaps for a square ``image_size`` input (58 for 256)."""
        return int(image_size * self.scale_factor) - 6 + 2 * self.pad

    def forward(self, image: torch.Tensor) -> Keypoints:
        """Detect keypoints.

        Args:
            image: ``B×C×H×W`` in [0, 1].

        Returns:
            ``{"value": B×K×2, "jacobian": B×K×2×2}`` (jacobian only if estimated).
        """
        if self.scale_factor != 1:
            image = self.down(image)  # B×3×64×64 for a 256 input

        # 1. heatmaps: softmax over all positions of each keypoint channel
        feature_map = self.predictor(image)  # B×35×64×64
        logits = self.kp(feature_map)  # B×K×58×58
        batch, num_kp, height, width = logits.shape
        heatmap = F.softmax(logits.view(batch, num_kp, -1) / self.temperature, dim=2)
        heatmap = heatmap.view(batch, num_kp, height, width)  # B×K×58×58, sums to 1

        # 2. keypoint = expected grid coordinate under the heatmap
        grid = make_coordinate_grid(height, width, heatmap.dtype, heatmap.device)  # 58×58×2
        value = torch.einsum("bkhw,hwc->bkc", heatmap, grid)  # B×K×2
        out: Keypoints = {"value": value}

        # 3. jacobian = heatmap-weighted average of the 4-channel jacobian map
        if self.jacobian is not None:
            jacobian_map = self.jacobian(feature_map)  # B×4M×58×58
            jacobian_map = jacobian_map.view(batch, self.num_jacobian_maps, 4, height, width)
            jacobian = (heatmap.unsqueeze(2) * jacobian_map).sum(dim=(3, 4))  # B×K×4
            out["jacobian"] = jacobian.view(batch, num_kp, 2, 2)  # B×K×2×2, row-major
        return out
