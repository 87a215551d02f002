"""face-vid2vid's dense motion network: a 3-D warping field and an occlusion map.

It works on the generator's 3-D appearance feature (``B×C×D×H×W``, 32×16×64×64 for vox-256),
not on the image. Index 0 of every per-motion axis is the background (identity motion);
indices 1…K are the keypoints. Only translations are used (no jacobians).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass3d
from .geometry import kp2gaussian_3d, make_coordinate_grid_3d
from .keypoint_detector import Keypoints


class DenseMotionNetwork(nn.Module):
    """Predict the dense backward deformation (``B×D×H×W×3``) and the occlusion map (``B×1×H×W``).

    Args:
        block_expansion: hourglass base width (32).
        num_blocks: hourglass depth (5).
        max_features: hourglass width cap (1024).
        num_kp: number of keypoints K (15).
        feature_channel: channels ``C`` of the 3-D feature (32).
        reshape_depth: depth ``D`` of the 3-D feature (16); sizes the occlusion conv.
        compress: channels the feature is compressed to before warping (4).
        estimate_occlusion_map: also predict the occlusion map (True).
        kp_variance: variance of the keypoint Gaussians (0.01).
        align_corners: passed to ``F.grid_sample`` (False: torch ≥ 1.3 default, as in FADM).
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 15,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.align_corners = align_corners

        # registration order = official state-dict order (hourglass, mask, compress, norm, occlusion)
        # input per motion m: [heatmap difference, compress deformed channels] → (K+1)·(compress+1)
        self.hourglass = Hourglass3d(
            block_expansion,
            in_features=(num_kp + 1) * (compress + 1),
            num_blocks=num_blocks,
            max_features=max_features,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion: nn.Conv2d | None = None
        if estimate_occlusion_map:
            # the hourglass output with its depth folded into channels: 112·16 = 1792 for vox-256
            self.occlusion = nn.Conv2d(
                self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3
            )

    def create_sparse_motions(
        self, depth: int, height: int, width: int, kp_driving: Keypoints, kp_source: Keypoints
    ) -> torch.Tensor:
        """Per-keypoint translations ``T_k(z) = z − kp_d,k + kp_s,k`` plus the identity.

        Returns:
            ``B×(K+1)×D×H×W×3`` sampling grids (x, y, z) in [-1, 1].
        """
        value_driving = kp_driving["value"]  # B×K×3
        batch = value_driving.shape[0]
        identity = make_coordinate_grid_3d(
            depth, height, width, value_driving.dtype, value_driving.device
        )  # D×H×W×3
        relative = identity - value_driving[:, :, None, None, None, :]  # B×K×D×H×W×3: z − kp_d
        driving_to_source = relative + kp_source["value"][:, :, None, None, None, :]
        background = identity.expand(batch, 1, depth, height, width, 3)
        return torch.cat([background, driving_to_source], dim=1)  # B×(K+1)×D×H×W×3

    def create_deformed_feature(
        self, feature: torch.Tensor, sparse_motions: torch.Tensor
    ) -> torch.Tensor:
        """Warp the compressed feature ``B×c×D×H×W`` with each of the K+1 motions.

        Returns:
            ``B×(K+1)×c×D×H×W``.
        """
        batch, channels, depth, height, width = feature.shape
        num_motions = sparse_motions.shape[1]
        repeated = feature.unsqueeze(1).expand(-1, num_motions, -1, -1, -1, -1)
        repeated = repeated.reshape(batch * num_motions, channels, depth, height, width)
        grids = sparse_motions.reshape(batch * num_motions, depth, height, width, 3)
        deformed = F.grid_sample(repeated, grids, align_corners=self.align_corners)
        return deformed.view(batch, num_motions, channels, depth, height, width)

    def create_heatmap_representations(
        self, depth: int, height: int, width: int, kp_driving: Keypoints, kp_source: Keypoints
    ) -> torch.Tensor:
        """``G(z; kp_d,k) − G(z; kp_s,k)`` for every keypoint, plus a zero background volume.

        Returns:
            ``B×(K+1)×1×D×H×W``.
        """
        gaussian_driving = kp2gaussian_3d(
            kp_driving["value"], depth, height, width, self.kp_variance
        )
        gaussian_source = kp2gaussian_3d(kp_source["value"], depth, height, width, self.kp_variance)
        heatmap = gaussian_driving - gaussian_source  # B×K×D×H×W
        background = torch.zeros_like(heatmap[:, :1])
        return torch.cat([background, heatmap], dim=1).unsqueeze(2)  # B×(K+1)×1×D×H×W

    def forward(
        self, feature: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        """Compute the dense motion.

        Args:
            feature: the 3-D appearance feature ``B×C×D×H×W`` (32×16×64×64 for vox-256).
            kp_driving: ``{"value": B×K×3}`` target keypoints.
            kp_source: ``{"value": B×K×3}`` keypoints of the source.

        Returns:
            ``mask`` B×(K+1)×D×H×W (softmax over motions), ``deformation`` B×D×H×W×3 and,
            if estimated, ``occlusion_map`` B×1×H×W in (0, 1).
        """
        batch, _, depth, height, width = feature.shape

        # 1. compress the feature, warp it with every sparse motion
        feature = F.relu(self.norm(self.compress(feature)))  # B×4×16×64×64
        sparse_motions = self.create_sparse_motions(depth, height, width, kp_driving, kp_source)
        deformed = self.create_deformed_feature(feature, sparse_motions)  # B×16×4×16×64×64
        heatmap = self.create_heatmap_representations(depth, height, width, kp_driving, kp_source)

        # 2. hourglass over [H_m, f_m] for m = 0…K (interleaved per motion)
        hourglass_input = torch.cat([heatmap, deformed], dim=2).view(
            batch, -1, depth, height, width
        )  # B×80×16×64×64
        prediction = self.hourglass(hourglass_input)  # B×112×16×64×64

        # 3. dense motion = mask-weighted sum of the sparse motions
        mask = F.softmax(self.mask(prediction), dim=1)  # B×(K+1)×16×64×64
        out = {"mask": mask}
        out["deformation"] = torch.einsum("bkdhw,bkdhwc->bdhwc", mask, sparse_motions)

        # 4. occlusion map from the hourglass output with its depth folded into channels
        if self.occlusion is not None:
            folded = prediction.reshape(batch, -1, height, width)  # B×1792×64×64
            out["occlusion_map"] = torch.sigmoid(self.occlusion(folded))  # B×1×64×64
        return out
