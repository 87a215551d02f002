"""Building blocks of face-vid2vid: 3-D (volume) blocks, the keypoint hourglass, ResBottleneck.

The 2-D blocks that are identical to FOMM's (``DownBlock2d``, ``UpBlock2d``, ``ResBlock2d``,
``SameBlock2d``, ``AntiAliasInterpolation2d``) are imported from :mod:`..fomm.blocks`. Attribute
names (``conv``, ``norm``, ``conv1``…``norm4``, ``skip``, ``encoder.down_blocks``,
``decoder.up_blocks``, ``down0``/``up0`` …) are the official ones, so the state dicts load the
released checkpoints unchanged. The official code used synchronised BatchNorm; plain
``nn.BatchNorm{2,3}d`` have the same state-dict entries.

Volumes are ``B×C×D×H×W``; every 3-D block keeps the depth ``D`` and changes only ``H×W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fomm.blocks import DownBlock2d, SameBlock2d


def _level_width(block_expansion: int, max_features: int, level: int) -> int:
    """Channel width at hourglass depth ``level``: ``min(max_features, block_expansion·2^level)``."""
    return min(max_features, block_expansion * 2**level)


class LeakySameBlock2d(SameBlock2d):
    """Conv → BatchNorm → LeakyReLU(0.01) at constant resolution (the generator's ``third``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), negative_slope=0.01)


class DownBlock3d(nn.Module):
    """Conv3d 3³ → BatchNorm3d → ReLU → average pooling ``(1, 2, 2)`` (halves H and W)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest upsampling ``(1, 2, 2)`` → Conv3d 3³ → BatchNorm3d → ReLU (doubles H and W)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``, 3³ convs."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class HourglassEncoder3d(nn.Module):
    """``num_blocks`` 3-D down blocks; returns the input and every intermediate volume."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_features if i == 0 else _level_width(block_expansion, max_features, i),
                _level_width(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]  # [input, 1/2, 1/4, …] in H and W
        for block in self.down_blocks:
            features.append(block(features[-1]))
        return features


class HourglassDecoder3d(nn.Module):
    """3-D up blocks with skip concatenation, then a final Conv3d 3³ → BatchNorm3d → ReLU.

    Unlike FOMM's 2-D decoder, face-vid2vid's ends with a ``conv``/``norm`` pair on the
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
            up_blocks.append(UpBlock3d(in_filters, out_filters))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = list(features)
        out = skips.pop()  # bottleneck
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """U-Net style 3-D hourglass: ``B×in×D×H×W`` → ``B×(block_expansion+in)×D×H×W``.

    ``H`` and ``W`` must be divisible by ``2^num_blocks``; ``D`` is never resampled.
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        self.encoder = HourglassEncoder3d(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder3d(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class KPHourglass(nn.Module):
    """The canonical-keypoint predictor: a 2-D encoder lifted to a 3-D decoder.

    ``B×C×H×W`` → ``num_blocks`` 2-D down blocks (``down0``…) → 1×1 conv to
    ``reshape_features`` channels → view as ``B×(reshape_features/reshape_depth)×reshape_depth×h×w``
    → ``num_blocks`` 3-D up blocks (``up0``…) → ``B×block_expansion×reshape_depth×H×W``.
    vox-256: 64×64 → 2×2 → (1024, 16, 2, 2) → (32, 16, 64, 64).

    Args:
        block_expansion: base width (32); also the output channels (:attr:`out_filters`).
        in_features: image channels (3).
        reshape_features: channels of the 1×1 conv before the reshape (16384).
        reshape_depth: depth ``D`` of the lifted volume (16).
        num_blocks: number of down and of up blocks (5).
        max_features: width cap (1024).
    """

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        reshape_features: int,
        reshape_depth: int,
        num_blocks: int = 3,
        max_features: int = 256,
    ) -> None:
        super().__init__()
        bottleneck = _level_width(block_expansion, max_features, num_blocks)
        if reshape_features % reshape_depth or reshape_features // reshape_depth != bottleneck:
            raise ValueError(
                f"KPHourglass: reshape_features={reshape_features} must be reshape_depth="
                f"{reshape_depth} × the bottleneck width {bottleneck} (the 3-D decoder's input)"
            )
        self.reshape_depth = reshape_depth
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(
                f"down{i}",
                DownBlock2d(
                    in_features if i == 0 else _level_width(block_expansion, max_features, i),
                    _level_width(block_expansion, max_features, i + 1),
                ),
            )
        self.conv = nn.Conv2d(bottleneck, reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(
                f"up{i}",
                UpBlock3d(
                    _level_width(block_expansion, max_features, num_blocks - i),
                    _level_width(block_expansion, max_features, num_blocks - i - 1),
                ),
            )
        self.out_filters = _level_width(block_expansion, max_features, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))  # B×reshape_features×h×w
        batch, channels, height, width = out.shape
        depth = self.reshape_depth
        out = out.view(batch, channels // depth, depth, height, width)  # B×C'×D×h×w
        return self.up_blocks(out)  # B×block_expansion×D×H×W


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1×1 reduce ×¼ → 3×3 with the stride → 1×1 expand), BatchNorm after each.

    With ``stride ≠ 1`` the shortcut is a strided 1×1 conv ``skip`` + ``norm4``; the width is
    kept (``in_features`` in and out).
    """

    def __init__(self, in_features: int, stride: int) -> None:
        super().__init__()
        inner = in_features // 4
        # registration order = official state-dict order (conv1..3, norm1..3, skip, norm4)
        self.conv1 = nn.Conv2d(in_features, inner, kernel_size=1)
        self.conv2 = nn.Conv2d(inner, inner, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(inner, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(inner, affine=True)
        self.norm2 = nn.BatchNorm2d(inner, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)
