"""Building blocks shared by the FOMM networks (keypoint detector, dense motion, generator).

Attribute names (``conv``, ``norm``, ``conv1``/``norm1``, ``encoder.down_blocks``,
``decoder.up_blocks``, ``weight`` of the anti-alias filter) are the official ones, so the
state dicts load the released checkpoints unchanged. FOMM used synchronised BatchNorm; plain
``nn.BatchNorm2d`` has the same state-dict entries.

Nearest-neighbour ``F.interpolate`` calls pass ``align_corners=None``: the option is undefined
for ``mode="nearest"`` (torch refuses any other value), and nearest resampling gives the same
result in every torch version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur followed by nearest-neighbour subsampling (band-limited downscaling).

    ``sigma = (1/scale − 1)/2`` and the kernel is ``2·round(4·sigma) + 1`` wide (13×13 for
    ``scale = 0.25``). The kernel is a *persistent* buffer ``weight`` (``C×1×k×k``): it is part
    of every official checkpoint (``…down.weight``).

    Args:
        channels: number of image channels ``C`` (filtered depthwise).
        scale: output/input size ratio, e.g. ``0.25``; ``1`` is the identity.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if not 0 < scale <= 1:
            raise ValueError(f"AntiAliasInterpolation2d downscales only: scale={scale!r}")
        self.scale = scale
        self.groups = channels

        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.pad_before = kernel_size // 2
        self.pad_after = self.pad_before - 1 if kernel_size % 2 == 0 else self.pad_before

        # separable Gaussian: outer product of two 1-D Gaussians, normalised to sum 1
        positions = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        if sigma > 0:
            gaussian_1d = torch.exp(-(positions**2) / (2 * sigma**2))
        else:  # scale 1: a 1×1 identity kernel (never used by forward)
            gaussian_1d = torch.ones(1)
        kernel = gaussian_1d[:, None] * gaussian_1d[None, :]  # k×k
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, -1, -1).clone())  # C×1×k×k

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` → ``B×C×⌊H·scale⌋×⌊W·scale⌋``."""
        if self.scale == 1.0:
            return image
        pad = (self.pad_before, self.pad_after, self.pad_before, self.pad_after)
        blurred = F.conv2d(F.pad(image, pad), weight=self.weight, groups=self.groups)
        # nearest with scale 1/4 picks every 4th pixel (source index = 4·i)
        return F.interpolate(
            blurred, scale_factor=(self.scale, self.scale), mode="nearest", align_corners=None
        )


class SameBlock2d(nn.Module):
    """Conv → BatchNorm → ReLU at constant resolution."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv → BatchNorm → ReLU → 2×2 average pooling (halves H and W)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock2d(nn.Module):
    """Nearest ×2 upsampling → Conv → BatchNorm → ReLU (doubles H and W)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest", align_corners=None)
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``."""

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(features, features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.norm2 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _level_width(block_expansion: int, max_features: int, level: int) -> int:
    """Channel width at hourglass depth ``level``: ``min(max_features, block_expansion·2^level)``."""
    return min(max_features, block_expansion * 2**level)


class HourglassEncoder(nn.Module):
    """``num_blocks`` down blocks; returns the input and every intermediate map (for skips)."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else _level_width(block_expansion, max_features, i),
                _level_width(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]  # [input, 1/2, 1/4, …, 1/2^num_blocks]
        for block in self.down_blocks:
            features.append(block(features[-1]))
        return features


class HourglassDecoder(nn.Module):
    """``num_blocks`` up blocks; after each, the output is concatenated *before* its skip map.

    The last concatenation is with the hourglass input, so the output has
    ``block_expansion + in_features`` channels (:attr:`out_filters`).
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        up_blocks = []
        for i in reversed(range(num_blocks)):
            # the deepest block sees only the bottleneck, the others [up output, skip]
            multiplier = 1 if i == num_blocks - 1 else 2
            in_filters = multiplier * _level_width(block_expansion, max_features, i + 1)
            out_filters = _level_width(block_expansion, max_features, i)
            up_blocks.append(UpBlock2d(in_filters, out_filters))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = list(features)
        out = skips.pop()  # bottleneck
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style hourglass; ``B×in_features×H×W`` → ``B×(block_expansion+in_features)×H×W``.

    ``H`` and ``W`` must be divisible by ``2^num_blocks``.
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
