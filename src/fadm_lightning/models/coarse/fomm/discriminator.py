"""FOMM multi-scale patch discriminator (Pix2Pix-like, optional spectral norm).

Kept so that full official checkpoints (``vox-adv-cpk.pth.tar``) round-trip; FADM itself
never uses it. Spectral norm uses ``nn.utils.spectral_norm`` (not the parametrization API),
whose state-dict entries ``weight_orig`` / ``weight_u`` / ``weight_v`` are the official ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import kp2gaussian
from .keypoint_detector import Keypoints


def scale_key(scale: float) -> str:
    """Module key of a pyramid scale, as FOMM spells it: ``1`` → ``"1"``, ``0.5`` → ``"0-5"``."""
    return f"{scale:g}".replace(".", "-")


class DiscriminatorDownBlock2d(nn.Module):
    """Conv 4×4 (no padding) → [InstanceNorm] → LeakyReLU(0.2) → [2×2 average pooling]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        norm: bool = False,
        kernel_size: int = 4,
        pool: bool = False,
        sn: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        if self.pool:
            out = F.avg_pool2d(out, (2, 2))
        return out


class Discriminator(nn.Module):
    """Single-scale patch discriminator.

    Args:
        num_channels: image channels (3).
        block_expansion: base width (32 in vox-256: widths 64, 128, 256, 512).
        num_blocks: down blocks (4).
        max_features: width cap (512).
        sn: spectral normalisation on every conv (True).
        use_kp: concatenate the keypoint Gaussians to the input (False).
        num_kp: number of keypoints (used only with ``use_kp``).
        kp_variance: variance of the keypoint Gaussians (0.01).
    """

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 32,
        num_blocks: int = 4,
        max_features: int = 512,
        sn: bool = True,
        use_kp: bool = False,
        num_kp: int = 10,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.use_kp = use_kp
        self.kp_variance = kp_variance

        def width(level: int) -> int:
            return min(max_features, block_expansion * 2**level)

        in_features = num_channels + (num_kp if use_kp else 0)
        self.down_blocks = nn.ModuleList(
            DiscriminatorDownBlock2d(
                in_features if i == 0 else width(i),
                width(i + 1),
                norm=i != 0,
                pool=i != num_blocks - 1,
                sn=sn,
            )
            for i in range(num_blocks)
        )
        self.conv = nn.Conv2d(width(num_blocks), 1, kernel_size=1)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)

    def forward(
        self, image: torch.Tensor, kp: Keypoints | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return the feature maps of every block and the patch prediction map."""
        out = image
        if self.use_kp:
            if kp is None:
                raise ValueError("Discriminator(use_kp=True) needs the keypoints `kp`")
            heatmap = kp2gaussian(kp["value"], image.shape[2], image.shape[3], self.kp_variance)
            out = torch.cat([out, heatmap], dim=1)
        feature_maps = []
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    """One :class:`Discriminator` per pyramid scale, stored under ``discs.<scale_key>``.

    Args:
        scales: pyramid scales to judge (vox-256: ``(1,)`` → key prefix ``discs.1``).
        num_channels, block_expansion, num_blocks, max_features, sn, use_kp, num_kp,
        kp_variance: forwarded to every :class:`Discriminator`.
    """

    def __init__(
        self,
        scales: Sequence[float] = (1,),
        num_channels: int = 3,
        block_expansion: int = 32,
        num_blocks: int = 4,
        max_features: int = 512,
        sn: bool = True,
        use_kp: bool = False,
        num_kp: int = 10,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.discs = nn.ModuleDict(
            {
                scale_key(scale): Discriminator(
                    num_channels=num_channels,
                    block_expansion=block_expansion,
                    num_blocks=num_blocks,
                    max_features=max_features,
                    sn=sn,
                    use_kp=use_kp,
                    num_kp=num_kp,
                    kp_variance=kp_variance,
                )
                for scale in self.scales
            }
        )

    def forward(
        self, pyramid: Mapping[str, torch.Tensor], kp: Keypoints | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Judge every scale of an image pyramid.

        Args:
            pyramid: ``{"prediction_<s>": B×C×H_s×W_s}`` for every scale ``s`` (FOMM's
                ``ImagePyramide`` naming, e.g. ``"prediction_1"``, ``"prediction_0.5"``).
            kp: keypoints, only with ``use_kp``.

        Returns:
            ``feature_maps_<s>`` (list of maps) and ``prediction_map_<s>`` for every scale.
        """
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        for scale in self.scales:
            name = f"{scale:g}"
            feature_maps, prediction_map = self.discs[scale_key(scale)](
                pyramid[f"prediction_{name}"], kp
            )
            out[f"feature_maps_{name}"] = feature_maps
            out[f"prediction_map_{name}"] = prediction_map
        return out
