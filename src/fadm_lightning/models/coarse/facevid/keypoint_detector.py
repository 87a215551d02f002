"""face-vid2vid's canonical 3-D keypoint detector and head-pose / expression estimator.

Keypoints are dicts, as in FOMM: ``{"value": B×K×3}`` with ``(x, y, z)`` in ``[-1, 1]``.
No jacobians: FADM's face-vid2vid runs with ``estimate_jacobian: False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fomm.blocks import AntiAliasInterpolation2d
from .blocks import KPHourglass, ResBottleneck
from .geometry import make_coordinate_grid_3d

Keypoints = dict[str, torch.Tensor]
HeadPose = dict[str, torch.Tensor]


class KPDetector(nn.Module):
    """Canonical 3-D keypoints ``x_c`` of the source identity (softmax volume → expectation).

    Defaults are FADM's vox-256 values. For a 256×256 image: anti-aliased ×0.25 → 64×64 →
    :class:`KPHourglass` → ``B×32×16×64×64`` → ``kp`` Conv3d 3³ (padding 1) → K logit volumes
    ``B×K×16×64×64`` → softmax of ``logits / temperature`` over the 16·64·64 voxels → expected
    ``(x, y, z)`` of a ``[-1, 1]³`` grid.

    Args:
        block_expansion: hourglass base width (32).
        num_kp: number of keypoints K (15).
        image_channel: image channels (3).
        max_features: hourglass width cap (1024).
        reshape_channel: channels of the 2-D bottleneck conv before the lift to 3-D (16384).
        reshape_depth: depth of the keypoint volume (16).
        num_blocks: hourglass depth (5).
        temperature: softmax temperature (0.1).
        scale_factor: input downscaling before the hourglass (0.25).
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_kp: int = 15,
        image_channel: int = 3,
        max_features: int = 1024,
        reshape_channel: int = 16384,
        reshape_depth: int = 16,
        num_blocks: int = 5,
        temperature: float = 0.1,
        scale_factor: float = 0.25,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.predictor = KPHourglass(
            block_expansion,
            in_features=image_channel,
            reshape_features=reshape_channel,
            reshape_depth=reshape_depth,
            num_blocks=num_blocks,
            max_features=max_features,
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        # registered only when used, as in the official state dict (key "down.weight")
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(image_channel, scale_factor)

    def forward(self, image: torch.Tensor) -> Keypoints:
        """Detect the canonical keypoints.

        Args:
            image: ``B×C×H×W`` in [0, 1].

        Returns:
            ``{"value": B×K×3}`` in ``[-1, 1]`` (x, y, z).
        """
        if self.scale_factor != 1:
            image = self.down(image)  # B×3×64×64 for a 256 input

        # 1. K logit volumes, softmax over all voxels of each
        logits = self.kp(self.predictor(image))  # B×K×16×64×64
        batch, num_kp, depth, height, width = logits.shape
        heatmap = F.softmax(logits.view(batch, num_kp, -1) / self.temperature, dim=2)
        heatmap = heatmap.view(batch, num_kp, depth, height, width)  # sums to 1 per keypoint

        # 2. keypoint = expected grid coordinate under the heatmap. A product and a sum, as the
        # official code: torch.sum reduces pairwise, whereas einsum (one matmul over the
        # 16·64·64 voxels) accumulates ~100× more float32 error on spread-out heatmaps.
        grid = make_coordinate_grid_3d(depth, height, width, heatmap.dtype, heatmap.device)
        value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))  # B×K×3
        return {"value": value}


class HEEstimator(nn.Module):
    """Head pose (binned yaw / pitch / roll logits), translation ``t`` and expression ``δ``.

    A ResNet-style trunk on the full image (7×7 stride-2 conv, max pool, four stages of
    :class:`ResBottleneck` at widths ``max_features·(1/8, 1/4, 1/2, 1)`` = 256, 512, 1024, 2048
    with 3, 1+3, 1+5, 1+2 blocks), global average pooling and five linear heads.

    Output naming quirk, kept for checkpoint compatibility (REFERENCE_SPEC §2.4): the official
    module returns ``fc_roll``'s logits as ``"yaw"`` and ``fc_yaw``'s as ``"roll"``; the weights
    were trained with that assignment, so the layer names and the output keys stay crossed here.

    Args:
        block_expansion: width of the first conv (64).
        num_kp: number of keypoints K; the expression head has 3·K outputs (15 → 45).
        image_channel: image channels (3).
        max_features: width of the last stage (2048); the stages are ``max_features/8 … /1``.
        num_bins: angle bins per head-pose angle (66 bins of 3°).
    """

    def __init__(
        self,
        block_expansion: int = 64,
        num_kp: int = 15,
        image_channel: int = 3,
        max_features: int = 2048,
        num_bins: int = 66,
    ) -> None:
        super().__init__()
        if max_features % 32:
            raise ValueError(
                f"HEEstimator: max_features must be a multiple of 32, got {max_features}"
            )
        widths = [max_features // 8, max_features // 4, max_features // 2, max_features]
        self.num_bins = num_bins

        # registration order = official state-dict order
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion, affine=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.conv2 = nn.Conv2d(block_expansion, widths[0], kernel_size=1)
        self.norm2 = nn.BatchNorm2d(widths[0], affine=True)
        self.block1 = self._stage("b1", widths[0], 3)

        self.conv3 = nn.Conv2d(widths[0], widths[1], kernel_size=1)
        self.norm3 = nn.BatchNorm2d(widths[1], affine=True)
        self.block2 = ResBottleneck(widths[1], stride=2)
        self.block3 = self._stage("b3", widths[1], 3)

        self.conv4 = nn.Conv2d(widths[1], widths[2], kernel_size=1)
        self.norm4 = nn.BatchNorm2d(widths[2], affine=True)
        self.block4 = ResBottleneck(widths[2], stride=2)
        self.block5 = self._stage("b5", widths[2], 5)

        self.conv5 = nn.Conv2d(widths[2], widths[3], kernel_size=1)
        self.norm5 = nn.BatchNorm2d(widths[3], affine=True)
        self.block6 = ResBottleneck(widths[3], stride=2)
        self.block7 = self._stage("b7", widths[3], 2)

        self.fc_roll = nn.Linear(widths[3], num_bins)
        self.fc_pitch = nn.Linear(widths[3], num_bins)
        self.fc_yaw = nn.Linear(widths[3], num_bins)
        self.fc_t = nn.Linear(widths[3], 3)
        self.fc_exp = nn.Linear(widths[3], 3 * num_kp)

    @staticmethod
    def _stage(prefix: str, features: int, num_blocks: int) -> nn.Sequential:
        stage = nn.Sequential()
        for i in range(num_blocks):
            stage.add_module(f"{prefix}_{i}", ResBottleneck(features, stride=1))
        return stage

    def forward(self, image: torch.Tensor) -> HeadPose:
        """Estimate head pose and expression.

        Args:
            image: ``B×C×H×W`` in [0, 1] (256×256 for the official weights).

        Returns:
            ``yaw``, ``pitch``, ``roll``: ``B×num_bins`` logits (decode with
            :func:`~.keypoint_transform.headpose_pred_to_degree`); ``t``: ``B×3``;
            ``exp``: ``B×3K`` expression offsets.
        """
        out = self.maxpool(F.relu(self.norm1(self.conv1(image))))  # B×64×H/4×W/4
        out = self.block1(F.relu(self.norm2(self.conv2(out))))  # B×256×H/4×W/4
        out = self.block2(F.relu(self.norm3(self.conv3(out))))  # B×512×H/8×W/8
        out = self.block3(out)
        out = self.block4(F.relu(self.norm4(self.conv4(out))))  # B×1024×H/16×W/16
        out = self.block5(out)
        out = self.block6(F.relu(self.norm5(self.conv5(out))))  # B×2048×H/32×W/32
        out = self.block7(out)
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)  # B×2048
        return {
            "yaw": self.fc_roll(features),  # quirk: 'yaw' comes from fc_roll (see class doc)
            "pitch": self.fc_pitch(features),
            "roll": self.fc_yaw(features),  # quirk: 'roll' comes from fc_yaw
            "t": self.fc_t(features),
            "exp": self.fc_exp(features),
        }
