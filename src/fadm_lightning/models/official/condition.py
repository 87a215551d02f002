"""The official FADM condition network (``condition_deal.condition_net``, REFERENCE_SPEC §4.3–4.4).

It is the official code's version of the paper's AGCN (Fig. 2, eq. 7–10); the paper's symbols:

| paper        | here (official attribute names, kept for the checkpoint) |
|--------------|-----------------------------------------------------------|
| P_conv       | ``pre_conv_color`` (shared by the coarse and the appearance image) |
| P_motion     | ``deal_cond`` (one module shared by the three levels)     |
| f_θ (eq. 9)  | ``motion_cond``: a 16-d vector, one weight per channel    |
| w_i (eq. 10) | :func:`fadm_lightning.models.agcn.level_weights`, K = 2, α = 0.3 |
| P_cond       | ``resnet``                                                |

Differences from the paper that the weights depend on (docs/paper_vs_code.md): f_θ adds
``0.4·adaptive_max_pool1d(attr, 16)``; P_motion adds ``0.4·a``; P_cond sees
``cat(m, G + 0.2·A)``; L_color is an L1 mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fadm_lightning.models.agcn import level_weights

from .blocks import Block, ResnetBlock

ALPHA = 0.3  # α of eq. 10, hard-coded in the official code
APPEARANCE_RESIDUAL = 0.4  # P_motion(g_i, a) = block2(block1(up(g_i))) + 0.4·a
ATTRIBUTE_RESIDUAL = 0.4  # w = MLP(attr, t) + 0.4·adaptive_max_pool1d(attr, 16)
FUSION_RESIDUAL = 0.2  # P_cond input: cat(m, G + 0.2·A)
LEVEL_FACTORS = (8, 4, 2)  # g_i = P at H/8, H/4, H/2 (32, 64, 128 px for 256)
APPEARANCE_FACTOR = 8  # ↓: 256 → 32 → 256


def _nearest(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="nearest")


def condition_inputs(
    coarse: torch.Tensor, driving: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The official condition inputs (REFERENCE_SPEC §4.4), all with nearest resampling.

    For ``H = 256`` these are exactly the official sizes: ``g_i`` at 32, 64, 128 px, and the
    colour images ``up256(down32(·))``; other sizes scale with ``H``.

    Args:
        coarse: P, the coarse prediction, ``B×3×H×W`` in [0, 1].
        driving: the real driving frame (training only), ``B×3×H×W``; None at inference,
            where the appearance image is made from ``coarse`` (the official demo).

    Returns:
        ``(levels, generated, appearance)``: ``levels`` = [g_0, g_1, g_2], ``B×3×H/8``,
        ``H/4``, ``H/2`` (official key ``warping``); ``generated`` = up(down(P)), ``B×3×H×W``;
        ``appearance`` = up(down(d or P)), ``B×3×H×W`` (official key ``driving``).
    """
    height, width = coarse.shape[-2:]
    levels = [_nearest(coarse, (height // f, width // f)) for f in LEVEL_FACTORS]
    low = (height // APPEARANCE_FACTOR, width // APPEARANCE_FACTOR)
    generated = _nearest(_nearest(coarse, low), (height, width))
    appearance = generated if driving is None else _nearest(_nearest(driving, low), (height, width))
    return levels, generated, appearance


class MotionBlock(nn.Module):
    """P_motion (official ``ResnetBlockCondition``): features of one coarse level plus ``0.4·a``.

    ``block2(block1(up(g_i))) + 0.4·res_conv(a)``: ``up`` is bilinear to the size of ``a``
    (align_corners=False), ``block1`` a Conv3×3, ``block2`` a GN/Swish/Conv block;
    ``res_conv`` is the identity when ``a`` already has ``dim_out`` channels.
    """

    def __init__(self, dim: int, pre_dim: int, dim_out: int, norm_groups: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.block2 = Block(dim_out, dim_out, groups=norm_groups)
        self.res_conv = nn.Conv2d(pre_dim, dim_out, 1) if pre_dim != dim_out else nn.Identity()

    def forward(self, appearance: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """``appearance`` a: ``B×F×H×W``; ``level`` g_i: ``B×3×h×w`` → ``B×F×H×W``."""
        if level.shape[-2:] != appearance.shape[-2:]:
            level = F.interpolate(
                level, size=appearance.shape[-2:], mode="bilinear", align_corners=False
            )
        return self.block2(self.block1(level)) + APPEARANCE_RESIDUAL * self.res_conv(appearance)


class MotionMLP(nn.Module):
    """f_θ (eq. 9, official ``MLPCondition``): a per-channel motion weight ``w``, ``B×inner_dim``.

    ``w = sigmoid(L2(relu(L1(swish(cat(attr, L_t(swish(t_emb)))))))) + 0.4·max_pool(attr, inner_dim)``
    (the pooled term is not in the paper; it makes ``w`` unbounded).
    """

    def __init__(self, time_dim: int, condition_dim: int, inner_dim: int) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, inner_dim))
        self.condition = nn.Sequential(
            nn.SiLU(),
            nn.Linear(condition_dim + inner_dim, inner_dim),
            nn.ReLU(),
            nn.Linear(inner_dim, inner_dim),
            nn.Sigmoid(),
        )
        self.inner_dim = inner_dim

    def forward(self, time_emb: torch.Tensor, attribute: torch.Tensor) -> torch.Tensor:
        """``time_emb``: ``B×time_dim``; ``attribute``: attr_s − attr_d, ``B×condition_dim``."""
        t = self.time_mlp(time_emb)  # B×16
        w = self.condition(torch.cat([attribute, t], dim=1))  # B×16 in (0, 1)
        pooled = F.adaptive_max_pool1d(attribute.unsqueeze(1), self.inner_dim).squeeze(1)
        return w + ATTRIBUTE_RESIDUAL * pooled


@dataclass
class ConditionFeatures:
    """The t-independent part of the condition for a batch of frames (:meth:`ConditionNet.encode`)."""

    coarse_code: torch.Tensor  # G = P_conv(generated), B×F×H×W
    appearance: torch.Tensor  # A = P_conv(appearance image), B×F×H×W
    motion: list[torch.Tensor]  # P_motion(A, g_i) for the 3 levels, each B×F×H×W
    color_loss: torch.Tensor | None  # mean |G − A| (training with a driving frame only)


class ConditionNet(nn.Module):
    """The official condition network: ``c = P_cond(cat(Σ_i w_i·P_motion(A, g_i), G + 0.2·A))``.

    Defaults are the released model (77,635 parameters). GroupNorm uses one group per channel
    everywhere, as the official code (GN16 on 16 channels, GN32 on 32).

    Args:
        time_dim: size of the UNet's time embedding (64).
        attr_dim: attribute size (56: DECA exp + pose).
        in_channel: image channels (3).
        inner_channel: width of P_cond; P_conv and P_motion use half of it (32 → 16).
        out_channel: channels of the condition image ``c`` (3).
    """

    def __init__(
        self,
        time_dim: int = 64,
        attr_dim: int = 56,
        in_channel: int = 3,
        inner_channel: int = 32,
        out_channel: int = 3,
    ) -> None:
        super().__init__()
        half = inner_channel // 2
        self.attr_dim = attr_dim
        self.out_channel = out_channel
        # registration order = official state-dict order
        self.pre_conv_color = nn.Sequential(  # P_conv (eq. 7)
            nn.Conv2d(in_channel, half, 7, padding=3),
            nn.ReLU(),
            ResnetBlock(half, half, norm_groups=half),
            nn.ReLU(),
            ResnetBlock(half, half, norm_groups=half),
            nn.SiLU(),
        )
        self.deal_cond = MotionBlock(in_channel, half, half, norm_groups=half)  # P_motion
        self.motion_cond = MotionMLP(time_dim, attr_dim, inner_dim=half)  # f_θ (eq. 9)
        self.resnet = nn.Sequential(  # P_cond
            ResnetBlock(inner_channel, inner_channel, norm_groups=inner_channel),
            nn.ReLU(),
            ResnetBlock(inner_channel, inner_channel, norm_groups=inner_channel),
            nn.ReLU(),
            ResnetBlock(inner_channel, inner_channel, norm_groups=inner_channel),
            nn.ReLU(),
            nn.Conv2d(inner_channel, out_channel, 7, padding=3),
            nn.Sigmoid(),
        )

    def encode(
        self, levels: list[torch.Tensor], generated: torch.Tensor, appearance: torch.Tensor | None
    ) -> ConditionFeatures:
        """The t-independent part: P_conv codes, L_color and ``P_motion(A, g_i)`` per level.

        Args:
            levels: [g_0, g_1, g_2] from :func:`condition_inputs`.
            generated: up(down(P)), ``B×3×H×W``.
            appearance: up(down(d)) in training; None at inference (then A = G, no L_color).
        """
        coarse_code = self.pre_conv_color(generated)  # G: B×16×H×W
        if appearance is None:
            code, color_loss = coarse_code, None
        else:
            code = self.pre_conv_color(appearance)  # A: B×16×H×W
            color_loss = (coarse_code - code).abs().mean()  # L_color: L1 mean (paper: MSE)
        motion = [self.deal_cond(code, level) for level in levels]
        return ConditionFeatures(coarse_code, code, motion, color_loss)

    def condition(
        self, features: ConditionFeatures, attribute: torch.Tensor, time_emb: torch.Tensor
    ) -> torch.Tensor:
        """The t-dependent part: w (eq. 9), w_i (eq. 10), m, P_cond → ``c``, ``B×3×H×W`` in (0, 1).

        Args:
            features: from :meth:`encode`.
            attribute: attr_s − attr_d, ``B×attr_dim``.
            time_emb: the UNet's time embedding, ``B×time_dim``.
        """
        if attribute.shape[-1] != self.attr_dim:
            raise ValueError(
                f"attribute difference has {attribute.shape[-1]} values, the official condition "
                f"network expects {self.attr_dim} (DECA exp + pose)"
            )
        w = self.motion_cond(time_emb, attribute)  # eq. 9, B×16
        # eq. 10 with K = len(levels) − 1 = 2 and the hard-coded α = 0.3
        weights = level_weights(w, num_levels=len(features.motion), alpha=ALPHA)
        m = features.motion[0] * weights[0][:, :, None, None]
        for motion_i, w_i in zip(features.motion[1:], weights[1:], strict=True):
            m = m + motion_i * w_i[:, :, None, None]  # B×16×H×W
        fused = torch.cat([m, features.coarse_code + FUSION_RESIDUAL * features.appearance], dim=1)
        return self.resnet(fused)  # B×3×H×W in (0, 1)

    def forward(
        self,
        levels: list[torch.Tensor],
        generated: torch.Tensor,
        appearance: torch.Tensor | None,
        attribute: torch.Tensor,
        time_emb: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both parts at once: ``(c, L_color or None)``."""
        features = self.encode(levels, generated, appearance)
        return self.condition(features, attribute, time_emb), features.color_loss
