"""The official FADM denoiser trunk: an SR3-style UNet (REFERENCE_SPEC §4.2).

``downs`` / ``ups`` are flat module lists whose indices are the official ones (``downs.0`` the
input conv, ``downs.4`` the first Downsample, …), so that ``diffusion.pth`` loads unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import Block, Downsample, ResnetBlocWithAttn, TimeEmbedding, Upsample
from .condition import ConditionNet


class SR3UNet(nn.Module):
    """The official ε-prediction UNet on ``cat(c, x_t)`` (condition first), with its time MLP.

    Defaults are the released model: 6 → 64 channels, widths 64·(1, 2, 4, 4, 8, 8) at
    256 … 8 px, 3 ResBlocks per level going down and 4 going up, self-attention at 16 px, a
    mid block (ResBlock + attention, ResBlock) at 8 px, GroupNorm(32), no dropout.

    The condition network (``condition_conv``) is a child only because the official state dict
    nests it here (``denoise_fn.condition_conv.*``); :meth:`forward` takes its output ``c``.

    Args:
        in_channel: ``condition channels + image channels`` (6).
        out_channel: predicted noise channels (3).
        inner_channel: base width and time-embedding size (64).
        norm_groups: GroupNorm groups (32).
        channel_mults: width multipliers per level (1, 2, 4, 4, 8, 8).
        attn_res: resolutions (px) with self-attention ((16,)).
        res_blocks: ResBlocks per level going down (3; one more going up).
        dropout: dropout in the ResBlocks (0).
        image_size: input resolution, used to place the attention levels (256).
        attr_dim: attribute size of the condition network (56: DECA exp + pose).
        condition_inner_channel: width of the condition network (32).
    """

    def __init__(
        self,
        in_channel: int = 6,
        out_channel: int = 3,
        inner_channel: int = 64,
        norm_groups: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4, 4, 8, 8),
        attn_res: Sequence[int] = (16,),
        res_blocks: int = 3,
        dropout: float = 0.0,
        image_size: int = 256,
        attr_dim: int = 56,
        condition_inner_channel: int = 32,
    ) -> None:
        super().__init__()
        time_dim = inner_channel
        # registration order = official state-dict order
        self.time_mlp = nn.Sequential(  # indices 0 … 3 as in the checkpoint
            TimeEmbedding(inner_channel),
            nn.Linear(inner_channel, inner_channel * 4),
            nn.SiLU(),
            nn.Linear(inner_channel * 4, inner_channel),
        )
        self.condition_conv = ConditionNet(
            time_dim=time_dim, attr_dim=attr_dim, inner_channel=condition_inner_channel
        )
        self.condition_channels = self.condition_conv.out_channel
        self.image_channels = in_channel - self.condition_channels

        # 1. down path: every output (conv, ResBlocks, Downsample) is kept as a skip
        num_levels = len(channel_mults)
        width = inner_channel
        skip_widths = [width]
        resolution = image_size
        downs: list[nn.Module] = [nn.Conv2d(in_channel, inner_channel, kernel_size=3, padding=1)]
        for level, mult in enumerate(channel_mults):
            use_attn = resolution in attn_res
            level_width = inner_channel * mult
            for _ in range(res_blocks):
                downs.append(
                    ResnetBlocWithAttn(
                        width,
                        level_width,
                        time_emb_dim=time_dim,
                        norm_groups=norm_groups,
                        dropout=dropout,
                        with_attn=use_attn,
                    )
                )
                skip_widths.append(level_width)
                width = level_width
            if level != num_levels - 1:
                downs.append(Downsample(width))
                skip_widths.append(width)
                resolution //= 2
        self.downs = nn.ModuleList(downs)

        # 2. middle: ResBlock + attention, ResBlock
        self.mid = nn.ModuleList(
            [
                ResnetBlocWithAttn(
                    width,
                    width,
                    time_emb_dim=time_dim,
                    norm_groups=norm_groups,
                    dropout=dropout,
                    with_attn=True,
                ),
                ResnetBlocWithAttn(
                    width,
                    width,
                    time_emb_dim=time_dim,
                    norm_groups=norm_groups,
                    dropout=dropout,
                    with_attn=False,
                ),
            ]
        )

        # 3. up path: each ResBlock takes cat(x, popped skip)
        ups: list[nn.Module] = []
        for level in reversed(range(num_levels)):
            use_attn = resolution in attn_res
            level_width = inner_channel * channel_mults[level]
            for _ in range(res_blocks + 1):
                ups.append(
                    ResnetBlocWithAttn(
                        width + skip_widths.pop(),
                        level_width,
                        time_emb_dim=time_dim,
                        norm_groups=norm_groups,
                        dropout=dropout,
                        with_attn=use_attn,
                    )
                )
                width = level_width
            if level != 0:
                ups.append(Upsample(width))
                resolution *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(width, out_channel, groups=norm_groups)

    def embed_time(self, timesteps: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``time_mlp`` of the integer timesteps (a scalar or ``B``) → ``B×inner_channel``."""
        timesteps = timesteps.reshape(-1)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(batch_size)
        return self.time_mlp(timesteps)

    def forward(
        self, x_t: torch.Tensor, time_emb: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        """Predict the noise ε̂.

        Args:
            x_t: noisy image, ``B×3×H×W``.
            time_emb: ``B×inner_channel`` from :meth:`embed_time`.
            condition: the condition image ``c`` from the condition network, ``B×3×H×W``.

        Returns:
            ε̂, ``B×out_channel×H×W``.
        """
        x = torch.cat([condition, x_t], dim=1)  # official order: c first, then x_t
        skips = []
        for layer in self.downs:
            x = layer(x, time_emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, time_emb)
        for layer in self.ups:
            if isinstance(layer, ResnetBlocWithAttn):
                x = layer(torch.cat([x, skips.pop()], dim=1), time_emb)
            else:
                x = layer(x)
        return self.final_conv(x)
