"""FOMM dense motion network: from K sparse local affine motions to one dense deformation.

Index 0 of every per-motion axis is the background (identity motion); indices 1…K are the
keypoints. Equation numbers refer to the FOMM paper (Siarohin et al., NeurIPS 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasInterpolation2d, Hourglass
from .geometry import kp2gaussian, make_coordinate_grid
from .keypoint_detector import Keypoints


class DenseMotionNetwork(nn.Module):
    """Predict the dense backward deformation ``T̂_{S←D}`` and the occlusion map.

    Runs on the source image downscaled by ``scale_factor`` (64×64 for a 256 input).

    Args:
        block_expansion: hourglass base width (64).
        num_blocks: hourglass depth (5).
        max_features: hourglass width cap (1024).
        num_kp: number of keypoints K (10).
        num_channels: image channels (3).
        estimate_occlusion_map: also predict the occlusion map (True).
        scale_factor: source downscaling (0.25).
        kp_variance: variance of the keypoint Gaussians (0.01).
        align_corners: passed to ``F.grid_sample`` (False: torch ≥ 1.3 default, as in FADM).
    """

    def __init__(
        self,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 10,
        num_channels: int = 3,
        estimate_occlusion_map: bool = True,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.align_corners = align_corners

        # input per motion m: [heatmap difference, deformed R, G, B] → (K+1)·(C+1) channels
        self.hourglass = Hourglass(
            block_expansion,
            in_features=(num_kp + 1) * (num_channels + 1),
            num_blocks=num_blocks,
            max_features=max_features,
        )
        self.mask = nn.Conv2d(
            self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3)
        )
        self.occlusion: nn.Conv2d | None = None
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(
                self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3)
            )
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def create_heatmap_representations(
        self, height: int, width: int, kp_driving: Keypoints, kp_source: Keypoints
    ) -> torch.Tensor:
        """Eq. 6: ``H_k(z) = G(z; kp_d,k) − G(z; kp_s,k)``, plus a zero background map.

        Returns:
            ``B×(K+1)×1×H×W``.
        """
        gaussian_driving = kp2gaussian(kp_driving["value"], height, width, self.kp_variance)
        gaussian_source = kp2gaussian(kp_source["value"], height, width, self.kp_variance)
        heatmap = gaussian_driving - gaussian_source  # B×K×H×W
        background = torch.zeros_like(heatmap[:, :1])  # B×1×H×W
        return torch.cat([background, heatmap], dim=1).unsqueeze(2)  # B×(K+1)×1×H×W

    def create_sparse_motions(
        self, height: int, width: int, kp_driving: Keypoints, kp_source: Keypoints
    ) -> torch.Tensor:
        """Eq. 4: ``T_k(z) = J_k·(z − kp_d,k) + kp_s,k`` with ``J_k = J_s,k·J_d,k⁻¹``.

        Without jacobians ``J_k = I`` (pure translation). The background motion is the identity.

        Returns:
            ``B×(K+1)×H×W×2`` sampling grids (x, y) in [-1, 1].
        """
        value_driving = kp_driving["value"]  # B×K×2
        batch = value_driving.shape[0]
        identity = make_coordinate_grid(height, width, value_driving.dtype, value_driving.device)
        relative = identity - value_driving[:, :, None, None, :]  # B×K×H×W×2: z − kp_d
        if "jacobian" in kp_driving:
            jacobian = kp_source["jacobian"] @ torch.linalg.inv(kp_driving["jacobian"])  # B×K×2×2
            relative = torch.einsum("bkij,bkhwj->bkhwi", jacobian, relative)
        driving_to_source = relative + kp_source["value"][:, :, None, None, :]  # B×K×H×W×2
        background = identity.expand(batch, 1, height, width, 2)
        return torch.cat([background, driving_to_source], dim=1)  # B×(K+1)×H×W×2

    def create_deformed_source_image(
        self, source_image: torch.Tensor, sparse_motions: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 7 input: warp the (downscaled) source with each of the K+1 sparse motions.

        Args:
            source_image: ``B×C×H×W``.
            sparse_motions: ``B×(K+1)×H×W×2``.

        Returns:
            ``B×(K+1)×C×H×W``.
        """
        batch, channels, height, width = source_image.shape
        num_motions = sparse_motions.shape[1]
        source_repeat = source_image.unsqueeze(1).expand(-1, num_motions, -1, -1, -1)
        source_repeat = source_repeat.reshape(batch * num_motions, channels, height, width)
        grids = sparse_motions.reshape(batch * num_motions, height, width, 2)
        deformed = F.grid_sample(source_repeat, grids, align_corners=self.align_corners)
        return deformed.view(batch, num_motions, channels, height, width)

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        """Compute the dense motion.

        Args:
            source_image: ``B×C×H×W`` in [0, 1] (full resolution; downscaled here).
            kp_driving: keypoints of the driving frame (``value`` B×K×2, ``jacobian`` B×K×2×2).
            kp_source: keypoints of the source frame.

        Returns:
            ``sparse_deformed`` B×(K+1)×C×h×w, ``mask`` B×(K+1)×h×w (softmax over motions),
            ``deformation`` B×h×w×2, ``occlusion_map`` B×1×h×w in (0, 1) (if estimated),
            with ``h×w`` the downscaled size (64×64 for a 256 input).
        """
        if self.scale_factor != 1:
            source_image = self.down(source_image)  # B×3×64×64
        batch, _, height, width = source_image.shape

        # 1. per-motion inputs: heatmap differences and the source warped by each motion
        heatmap = self.create_heatmap_representations(height, width, kp_driving, kp_source)
        sparse_motions = self.create_sparse_motions(height, width, kp_driving, kp_source)
        sparse_deformed = self.create_deformed_source_image(source_image, sparse_motions)
        out = {"sparse_deformed": sparse_deformed}  # B×(K+1)×3×64×64

        # 2. hourglass over [H_m, R_m, G_m, B_m] for m = 0…K (interleaved per motion)
        hourglass_input = torch.cat([heatmap, sparse_deformed], dim=2).view(
            batch, -1, height, width
        )
        prediction = self.hourglass(hourglass_input)  # B×108×64×64

        # 3. eq. 8: dense motion = mask-weighted sum of the sparse motions
        mask = F.softmax(self.mask(prediction), dim=1)  # B×(K+1)×64×64
        out["mask"] = mask
        out["deformation"] = torch.einsum("bkhw,bkhwc->bhwc", mask, sparse_motions)  # B×64×64×2

        # 4. sec. 3.2: occlusion map
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))  # B×1×64×64
        return out
