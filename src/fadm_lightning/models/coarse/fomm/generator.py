"""FOMM occlusion-aware generator: warp the source features with the dense motion, decode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from .dense_motion import DenseMotionNetwork
from .keypoint_detector import Keypoints


class OcclusionAwareGenerator(nn.Module):
    """Encoder → warp by ``T̂_{S←D}`` → × occlusion map → residual bottleneck → decoder.

    Defaults are the vox-256 values. The submodule ``dense_motion_network`` is a
    :class:`DenseMotionNetwork` built from the ``dense_motion_*`` arguments.

    Args:
        num_channels: image channels (3).
        num_kp: number of keypoints K (10).
        block_expansion: encoder base width (64).
        max_features: encoder width cap (512).
        num_down_blocks: encoder down blocks (2: 256 → 64).
        num_bottleneck_blocks: residual blocks at the lowest resolution (6).
        estimate_occlusion_map: predict and apply the occlusion map (True).
        dense_motion_block_expansion: dense-motion hourglass base width (64).
        dense_motion_num_blocks: dense-motion hourglass depth (5).
        dense_motion_max_features: dense-motion hourglass width cap (1024).
        dense_motion_scale_factor: dense-motion input downscaling (0.25).
        kp_variance: variance of the keypoint Gaussians (0.01).
        align_corners: passed to every ``F.grid_sample`` / bilinear ``F.interpolate`` (False:
            torch ≥ 1.3 default, as in FADM; FOMM itself was trained with torch 1.0 ≡ True).
    """

    def __init__(
        self,
        num_channels: int = 3,
        num_kp: int = 10,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        estimate_occlusion_map: bool = True,
        dense_motion_block_expansion: int = 64,
        dense_motion_num_blocks: int = 5,
        dense_motion_max_features: int = 1024,
        dense_motion_scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners

        def width(level: int) -> int:
            return min(max_features, block_expansion * 2**level)

        # registration order = official state-dict order
        self.dense_motion_network = DenseMotionNetwork(
            block_expansion=dense_motion_block_expansion,
            num_blocks=dense_motion_num_blocks,
            max_features=dense_motion_max_features,
            num_kp=num_kp,
            num_channels=num_channels,
            estimate_occlusion_map=estimate_occlusion_map,
            scale_factor=dense_motion_scale_factor,
            kp_variance=kp_variance,
            align_corners=align_corners,
        )
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(width(i), width(i + 1)) for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1))
            for i in range(num_down_blocks)
        )
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(width(num_down_blocks)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))

    def deform_input(self, image: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Backward-warp ``image`` (``B×C×H×W``) with ``deformation`` (``B×h×w×2``).

        The deformation is resized bilinearly to ``H×W`` first when the sizes differ.
        """
        height, width = image.shape[2:]
        if deformation.shape[1:3] != (height, width):
            deformation = F.interpolate(
                deformation.permute(0, 3, 1, 2),  # B×2×h×w
                size=(height, width),
                mode="bilinear",
                align_corners=self.align_corners,
            ).permute(0, 2, 3, 1)  # B×H×W×2
        return F.grid_sample(image, deformation, align_corners=self.align_corners)

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        """Animate ``source_image`` from ``kp_source`` to ``kp_driving``.

        Args:
            source_image: ``B×C×H×W`` in [0, 1].
            kp_driving: target keypoints (``value`` B×K×2, ``jacobian`` B×K×2×2).
            kp_source: keypoints of ``source_image``.

        Returns:
            For a 256 input (vox-256): ``mask`` B×11×64×64, ``sparse_deformed``
            B×11×3×64×64, ``occlusion_map`` B×1×64×64 (if estimated), ``deformed``
            B×3×256×256 (the source warped by the upsampled deformation), ``prediction``
            B×3×256×256 in (0, 1).
        """
        # 1. encode the source: B×64×256×256 → B×256×64×64
        features = self.first(source_image)
        for block in self.down_blocks:
            features = block(features)

        # 2. dense motion and occlusion
        motion = self.dense_motion_network(source_image, kp_driving=kp_driving, kp_source=kp_source)
        out = {"mask": motion["mask"], "sparse_deformed": motion["sparse_deformed"]}

        # 3. warp the features, mask the occluded parts
        features = self.deform_input(features, motion["deformation"])  # B×256×64×64
        occlusion_map = motion.get("occlusion_map")
        if occlusion_map is not None:
            out["occlusion_map"] = occlusion_map  # B×1×64×64
            if occlusion_map.shape[2:] != features.shape[2:]:
                occlusion_map = F.interpolate(
                    occlusion_map,
                    size=features.shape[2:],
                    mode="bilinear",
                    align_corners=self.align_corners,
                )
            features = features * occlusion_map
        out["deformed"] = self.deform_input(source_image, motion["deformation"])  # B×3×256×256

        # 4. decode: B×256×64×64 → B×3×256×256
        features = self.bottleneck(features)
        for block in self.up_blocks:
            features = block(features)
        out["prediction"] = torch.sigmoid(self.final(features))  # B×3×256×256 in (0, 1)
        return out
