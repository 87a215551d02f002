"""face-vid2vid's occlusion-aware generator with a 3-D appearance feature (non-SPADE, as FADM uses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fomm.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from .blocks import LeakySameBlock2d, ResBlock3d
from .dense_motion import DenseMotionNetwork
from .keypoint_detector import Keypoints


class OcclusionAwareGenerator(nn.Module):
    """2-D encoder → 3-D feature → warp by the dense motion → 2-D decoder with occlusion.

    Defaults are FADM's vox-256 values; for a 256×256 source: ``first`` + 2 down blocks →
    ``B×256×64×64`` → ``second`` (1×1) → ``B×512×64×64`` viewed as the 3-D feature
    ``B×32×16×64×64`` → 6 :class:`ResBlock3d` → :class:`DenseMotionNetwork` → 3-D
    ``grid_sample`` → view ``B×512×64×64`` → ``third`` (LeakyReLU) → ``fourth`` (1×1) →
    × occlusion map → 6 ``ResBlock2d`` → 2 up blocks → ``final`` 7×7 → sigmoid.

    FADM's copy hard-codes the dense-motion hyper-parameters (32, 1024, 5, depth 16, compress 4,
    the yaml values); they are arguments here with those defaults.

    Args:
        image_channel: image channels (3).
        num_kp: number of keypoints K (15).
        block_expansion: encoder base width (64).
        max_features: width of ``second``'s output; must equal ``reshape_channel·reshape_depth`` (512).
        num_down_blocks: encoder down blocks (2: 256 → 64).
        reshape_channel: channels ``C`` of the 3-D feature (32; FADM's ``feature_channel``).
        reshape_depth: depth ``D`` of the 3-D feature (16).
        num_resblocks: 3-D and 2-D residual blocks (6 each).
        estimate_occlusion_map: predict and apply the occlusion map (True).
        dense_motion_block_expansion, dense_motion_max_features, dense_motion_num_blocks,
        dense_motion_compress: dense motion network (32, 1024, 5, 4).
        kp_variance: variance of the keypoint Gaussians (0.01).
        align_corners: of every ``grid_sample`` / linear ``interpolate`` (False: torch ≥ 1.3
            default, as in FADM's runs).
    """

    def __init__(
        self,
        image_channel: int = 3,
        num_kp: int = 15,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
        estimate_occlusion_map: bool = True,
        dense_motion_block_expansion: int = 32,
        dense_motion_max_features: int = 1024,
        dense_motion_num_blocks: int = 5,
        dense_motion_compress: int = 4,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if max_features != reshape_channel * reshape_depth:
            raise ValueError(
                f"OcclusionAwareGenerator: max_features={max_features} must equal reshape_channel"
                f"·reshape_depth = {reshape_channel}·{reshape_depth} (the 2-D ↔ 3-D views)"
            )
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.align_corners = align_corners

        # registration order = official state-dict order
        self.dense_motion_network = DenseMotionNetwork(
            block_expansion=dense_motion_block_expansion,
            num_blocks=dense_motion_num_blocks,
            max_features=dense_motion_max_features,
            num_kp=num_kp,
            feature_channel=reshape_channel,
            reshape_depth=reshape_depth,
            compress=dense_motion_compress,
            estimate_occlusion_map=estimate_occlusion_map,
            kp_variance=kp_variance,
            align_corners=align_corners,
        )
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=7, padding=3)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

        decoder_width = block_expansion * 2**num_down_blocks  # 256
        self.third = LeakySameBlock2d(max_features, decoder_width, kernel_size=3, padding=1)
        self.fourth = nn.Conv2d(decoder_width, decoder_width, kernel_size=1)
        self.resblocks_2d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_2d.add_module(f"2dr{i}", ResBlock2d(decoder_width))
        self.up_blocks = nn.ModuleList(
            UpBlock2d(
                max(block_expansion, block_expansion * 2 ** (num_down_blocks - i)),
                max(block_expansion, block_expansion * 2 ** (num_down_blocks - i - 1)),
            )
            for i in range(num_down_blocks)
        )
        self.final = nn.Conv2d(block_expansion, image_channel, kernel_size=7, padding=3)

    def deform_input(self, volume: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Backward-warp ``volume`` (``B×C×D×H×W``) with ``deformation`` (``B×d×h×w×3``).

        The deformation is resized trilinearly to ``D×H×W`` first when the sizes differ.
        """
        if deformation.shape[1:4] != volume.shape[2:]:
            deformation = F.interpolate(
                deformation.permute(0, 4, 1, 2, 3),  # B×3×d×h×w
                size=volume.shape[2:],
                mode="trilinear",
                align_corners=self.align_corners,
            ).permute(0, 2, 3, 4, 1)  # B×D×H×W×3
        return F.grid_sample(volume, deformation, align_corners=self.align_corners)

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        """Animate ``source_image`` from ``kp_source`` to ``kp_driving``.

        Args:
            source_image: ``B×C×H×W`` in [0, 1].
            kp_driving: ``{"value": B×K×3}`` target keypoints.
            kp_source: ``{"value": B×K×3}`` keypoints of ``source_image``.

        Returns:
            For a 256 input (vox-256): ``mask`` B×16×16×64×64, ``deformation`` B×16×64×64×3,
            ``occlusion_map`` B×1×64×64 (if estimated), ``prediction`` B×3×256×256 in (0, 1).
        """
        # 1. encode the source and lift it to 3-D: B×512×64×64 → B×32×16×64×64
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        batch, _, height, width = out.shape
        feature_3d = out.view(batch, self.reshape_channel, self.reshape_depth, height, width)
        feature_3d = self.resblocks_3d(feature_3d)

        # 2. dense motion, warp the 3-D feature
        motion = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        output = {"mask": motion["mask"], "deformation": motion["deformation"]}
        out = self.deform_input(feature_3d, motion["deformation"])  # B×32×16×64×64

        # 3. back to 2-D, mask the occluded parts
        out = out.reshape(batch, -1, height, width)  # B×512×64×64
        out = self.fourth(self.third(out))  # B×256×64×64
        occlusion_map = motion.get("occlusion_map")
        if occlusion_map is not None:
            output["occlusion_map"] = occlusion_map  # B×1×64×64
            if occlusion_map.shape[2:] != out.shape[2:]:
                occlusion_map = F.interpolate(
                    occlusion_map,
                    size=out.shape[2:],
                    mode="bilinear",
                    align_corners=self.align_corners,
                )
            out = out * occlusion_map

        # 4. decode: B×256×64×64 → B×3×256×256
        out = self.resblocks_2d(out)
        for block in self.up_blocks:
            out = block(out)
        output["prediction"] = torch.sigmoid(self.final(out))  # B×3×256×256 in (0, 1)
        return output
