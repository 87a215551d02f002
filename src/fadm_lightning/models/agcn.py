"""The Attribute-Guided Conditioning Network (AGCN, Fig. 2 and eq. 7–10 of the FADM paper).

Symbols of the paper and where they live here:

| paper                | here                                   |
|----------------------|----------------------------------------|
| ↓d, ↓g               | :meth:`AGCN.downsample`                |
| P_conv (eq. 7)       | ``AGCN.appearance_encoder``            |
| L_color (eq. 8)      | :meth:`AGCN.encode` (training only)    |
| f_θ (eq. 9)          | ``AGCN.motion_mlp``                    |
| w_i (eq. 10)         | :func:`level_weights`                  |
| P_motion, m          | ``AGCN.motion_encoder``, :meth:`AGCN.condition` |
| P_cond               | ``AGCN.condition_fuser``               |

The t-independent part (P_conv codes, P_motion features of the K coarse levels, L_color) is
computed once per frame by :meth:`AGCN.encode`; the t-dependent part (w, eq. 10, P_cond) runs
at every denoising step in :meth:`AGCN.condition`. ``forward`` does both.

Where the paper and the official code disagree, the constructor defaults follow the paper and
the official choices are switches (``docs/paper_vs_code.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn


def level_weights(w: torch.Tensor, num_levels: int = 3, alpha: float = 0.3) -> list[torch.Tensor]:
    """Eq. 10: w_i = (K−i)/K · exp(w − α) + i/K · exp(−w + α) for i = 0 … num_levels − 1.

    K = num_levels − 1, so the coarsest level (i = 0) gets exp(w − α) and the finest level
    (i = K) gets exp(−w + α): a large motion weight w favours the coarse levels, a small one the
    fine levels. (The official code uses the same K = 2 for its 3 levels.)

    Args:
        w: B×D motion weights (D = 1 for a scalar weight, or one weight per feature channel).
        num_levels: number of coarse-frame resolutions (the paper's 3).
        alpha: α of eq. 10 (0.3 in the paper).
    Returns:
        ``num_levels`` tensors of shape B×D.
    """
    if num_levels < 2:
        raise ValueError(f"eq. 10 needs at least 2 levels, got num_levels={num_levels}")
    k = num_levels - 1
    up, down = torch.exp(w - alpha), torch.exp(-w + alpha)
    return [(k - i) / k * up + i / k * down for i in range(num_levels)]


class ResBlock(nn.Module):
    """GroupNorm → SiLU → Conv3×3, twice, with a residual; optional additive time embedding."""

    def __init__(self, channels: int, groups: int, time_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, channels) if time_dim else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_proj is not None and t_emb is not None:
            h = h + self.time_proj(F.silu(t_emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class AppearanceEncoder(nn.Module):
    """P_conv (eq. 7): Conv7×7 → ReLU → ResBlock → ReLU → ResBlock → SiLU."""

    def __init__(self, in_channels: int, channels: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 7, padding=3)
        self.block1 = ResBlock(channels, groups)
        self.block2 = ResBlock(channels, groups)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.block1(F.relu(self.conv_in(image)))
        return F.silu(self.block2(F.relu(h)))


class MotionEncoder(nn.Module):
    """P_motion: features of one coarse level g_i (brought to full size), plus β·a."""

    def __init__(self, in_channels: int, channels: int, groups: int, appearance_residual: float):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(groups, channels)
        self.conv_out = nn.Conv2d(channels, channels, 3, padding=1)
        self.appearance_residual = appearance_residual

    def forward(self, level: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        h = self.conv_out(F.silu(self.norm(self.conv_in(level))))
        return h + self.appearance_residual * appearance


class MotionMLP(nn.Module):
    """f_θ (eq. 9): w = f_θ(attr_s − attr_d, t), a sigmoid MLP on the attribute difference and t."""

    def __init__(
        self, attr_dim: int, time_dim: int, hidden: int, weight_dim: int, attr_residual: float
    ) -> None:
        super().__init__()
        self.time_proj = nn.Linear(time_dim, hidden)
        self.fc1 = nn.Linear(attr_dim + hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc_out = nn.Linear(hidden, weight_dim)
        self.weight_dim = weight_dim
        self.attr_residual = attr_residual

    def forward(self, attr_diff: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        t = self.time_proj(F.silu(t_emb))  # B×hidden
        h = F.relu(self.fc1(F.silu(torch.cat([attr_diff, t], dim=1))))
        w = torch.sigmoid(self.fc_out(F.relu(self.fc2(h))))  # B×D in (0, 1)
        if self.attr_residual:
            # official code only: + 0.4 · adaptive_max_pool1d(attr, D) (REFERENCE_SPEC §4.3)
            pooled = F.adaptive_max_pool1d(attr_diff[:, None, :], self.weight_dim)[:, 0]
            w = w + self.attr_residual * pooled
        return w


class ConditionFuser(nn.Module):
    """P_cond: fuses the appearance code a, the motion code m and the timestep t."""

    def __init__(
        self, channels: int, out_channels: int, groups: int, time_dim: int | None, num_blocks: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, groups, time_dim) for _ in range(num_blocks))
        self.conv_out = nn.Conv2d(channels, out_channels, 7, padding=3)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = F.relu(block(x, t_emb))
        return torch.sigmoid(self.conv_out(x))


@dataclass
class AGCNFeatures:
    """The t-independent part of the AGCN for a batch of frames (see :meth:`AGCN.encode`)."""

    appearance: torch.Tensor  # a: B×F×H×W
    coarse_code: torch.Tensor  # P_conv(↓g): B×F×H×W
    motion: list[torch.Tensor]  # P_motion(g_i, a) for the K levels, each B×F×H×W
    color_loss: torch.Tensor | None  # L_color (training with a driving frame only)


class AGCN(nn.Module):
    """Attribute-Guided Conditioning Network.

    Args:
        attr_dim: size of an attribute vector (56 for DECA's cat(exp, pose); follows the extractor).
        in_channels: image channels (3).
        feature_channels: width F of the appearance and motion codes (16 in the official code).
        hidden_channels: width of P_cond's blocks (32 in the official code; must equal 2F here).
        cond_channels: channels of the condition given to the denoiser (3 in the official code).
        time_embed_dim: width of the AGCN's own sinusoidal timestep embedding (64).
        num_levels: K, the number of coarse-frame resolutions (3: H/8, H/4, H/2).
        alpha: α of eq. 10 (0.3).
        appearance_downsample: factor of ↓ (8: 256 → 32, as the official code).
        weight_dim: size of w: 1 = one scalar per frame (paper), F = one per channel (official).
        attr_residual: the official extra term 0.4 · max_pool(attr) added to w (paper: 0).
        motion_residual: β in P_motion(g_i, a) = conv(g_i) + β·a (0.4 in the official code).
        use_appearance: False is the paper's "w/o color condition" ablation: the coarse frame is
            the appearance input in training and inference, and there is no L_color.
        use_motion_weighting: False is the "w/o motion condition" ablation: m = Σ_i P_motion(g_i, a)
            without attribute-driven weights (f_θ is not used).
        official_fusion: True feeds P_cond with cat(m, P_conv(↓g) + 0.2·a) as the official code
            (whose a is the real driving frame's code in training); False feeds cat(m, a) (paper).
        time_in_condition: P_cond sees t (paper: "P_cond fuses a, m and t"); the official code
            uses t only through w.
        color_loss: "mse" (paper, eq. 8) or "l1" (official code).
        interpolation: resampling mode for ↓ and the levels ("nearest" as the official code).
        num_fuser_blocks: ResBlocks in P_cond (3 in the official code).
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        attr_dim: int,
        in_channels: int = 3,
        feature_channels: int = 16,
        hidden_channels: int = 32,
        cond_channels: int = 3,
        time_embed_dim: int = 64,
        num_levels: int = 3,
        alpha: float = 0.3,
        appearance_downsample: int = 8,
        weight_dim: int = 1,
        attr_residual: float = 0.0,
        motion_residual: float = 0.4,
        use_appearance: bool = True,
        use_motion_weighting: bool = True,
        official_fusion: bool = False,
        time_in_condition: bool = True,
        color_loss: str = "mse",
        interpolation: str = "nearest",
        num_fuser_blocks: int = 3,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if hidden_channels != 2 * feature_channels:
            raise ValueError(
                f"hidden_channels must be 2·feature_channels (cat of m and a), got "
                f"{hidden_channels} and {feature_channels}"
            )
        if weight_dim not in (1, feature_channels):
            raise ValueError(
                f"weight_dim must be 1 or feature_channels={feature_channels}, got {weight_dim}"
            )
        if color_loss not in ("mse", "l1"):
            raise ValueError(f"color_loss must be 'mse' or 'l1', got {color_loss!r}")
        self.attr_dim = attr_dim
        self.cond_channels = cond_channels
        self.num_levels = num_levels
        self.alpha = alpha
        self.appearance_downsample = appearance_downsample
        self.use_appearance = use_appearance
        self.use_motion_weighting = use_motion_weighting
        self.official_fusion = official_fusion
        self.color_loss = color_loss
        self.interpolation = interpolation

        # 0. timestep embedding (shared by f_θ and P_cond)
        self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=False, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(
            time_embed_dim, 4 * time_embed_dim, out_dim=time_embed_dim
        )
        self.appearance_encoder = AppearanceEncoder(
            in_channels, feature_channels, norm_groups
        )  # P_conv
        self.motion_encoder = MotionEncoder(  # P_motion, shared by the K levels
            in_channels, feature_channels, norm_groups, motion_residual
        )
        self.motion_mlp = (  # f_θ
            MotionMLP(attr_dim, time_embed_dim, feature_channels, weight_dim, attr_residual)
            if use_motion_weighting
            else None
        )
        self.condition_fuser = ConditionFuser(  # P_cond
            hidden_channels,
            cond_channels,
            norm_groups,
            time_embed_dim if time_in_condition else None,
            num_fuser_blocks,
        )

    def _resize(self, image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        if self.interpolation == "nearest":
            return F.interpolate(image, size=size, mode="nearest")
        return F.interpolate(image, size=size, mode=self.interpolation, align_corners=False)

    def downsample(self, image: torch.Tensor) -> torch.Tensor:
        """↓x: down by ``appearance_downsample`` and back up to full size. B×3×H×W → B×3×H×W."""
        h, w = image.shape[-2:]
        f = self.appearance_downsample
        return self._resize(self._resize(image, (max(h // f, 1), max(w // f, 1))), (h, w))

    def levels(self, coarse: torch.Tensor) -> list[torch.Tensor]:
        """g_i: the coarse frame at H/8, H/4, H/2 (for 3 levels), each brought back to H×W."""
        h, w = coarse.shape[-2:]
        out = []
        for i in range(self.num_levels):
            f = 2 ** (self.num_levels - i)  # 8, 4, 2 for 3 levels
            out.append(self._resize(self._resize(coarse, (max(h // f, 1), max(w // f, 1))), (h, w)))
        return out

    def encode(self, coarse: torch.Tensor, driving: torch.Tensor | None = None) -> AGCNFeatures:
        """The t-independent part for a batch of frames.

        Args:
            coarse: g, B×3×H×W in [0, 1].
            driving: d, the real driving frame (training only), B×3×H×W in [0, 1].
        """
        # 1. appearance (eq. 7): a = P_conv(↓d) in training, P_conv(↓g) otherwise
        coarse_code = self.appearance_encoder(self.downsample(coarse))
        color_loss = None
        appearance = coarse_code
        if self.use_appearance and driving is not None:
            appearance = self.appearance_encoder(self.downsample(driving))
            # 2. L_color (eq. 8), training only
            if self.color_loss == "mse":
                color_loss = F.mse_loss(coarse_code, appearance)
            else:
                color_loss = F.l1_loss(coarse_code, appearance)
        # 3. P_motion(g_i, a) for the K levels of the coarse frame
        motion = [self.motion_encoder(level, appearance) for level in self.levels(coarse)]
        return AGCNFeatures(appearance, coarse_code, motion, color_loss)

    def embed_timesteps(
        self, timesteps: torch.Tensor, batch_size: int, dtype: torch.dtype
    ) -> torch.Tensor:
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch_size)
        return self.time_embedding(self.time_proj(timesteps).to(dtype))

    def condition(
        self, features: AGCNFeatures, attr_diff: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The t-dependent part: w (eq. 9), w_i (eq. 10), m = Σ w_i·P_motion(g_i, a), P_cond.

        Args:
            features: from :meth:`encode`.
            attr_diff: attr_s − attr_d, B×attr_dim.
            timesteps: t, a scalar or B integer timesteps.
        Returns:
            the condition c, B×cond_channels×H×W in (0, 1).
        """
        a = features.appearance
        t_emb = self.embed_timesteps(timesteps.to(a.device), a.shape[0], a.dtype)
        # 4. motion weights and the motion code m
        if self.motion_mlp is not None:
            if attr_diff.shape[-1] != self.attr_dim:
                raise ValueError(
                    f"attribute difference has {attr_diff.shape[-1]} values, the AGCN expects {self.attr_dim}"
                )
            w = self.motion_mlp(attr_diff.to(a.dtype), t_emb)  # eq. 9, B×D
            weights = level_weights(w, self.num_levels, self.alpha)  # eq. 10
            m = sum(
                w_i[:, :, None, None] * m_i
                for w_i, m_i in zip(weights, features.motion, strict=True)
            )
        else:
            m = sum(features.motion)
        # 5. P_cond
        if self.official_fusion:
            fused = torch.cat([m, features.coarse_code + 0.2 * a], dim=1)
        else:
            fused = torch.cat([m, a], dim=1)
        return self.condition_fuser(fused, t_emb)

    def forward(
        self,
        coarse: torch.Tensor,
        attr_diff: torch.Tensor,
        timesteps: torch.Tensor,
        driving: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Condition and L_color for one batch: ``(c, L_color or None)``."""
        features = self.encode(coarse, driving)
        return self.condition(features, attr_diff, timesteps), features.color_loss
