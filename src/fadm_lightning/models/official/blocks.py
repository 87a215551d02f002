"""Building blocks of the official FADM denoiser (SR3-style, REFERENCE_SPEC §4.2–4.3).

Attribute names and ``nn.Sequential`` indices are the official ones (``time_mlp.1``,
``block1.block.3``, ``res_block.mlp.1``, ``attn.qkv`` …) so that ``diffusion.pth`` loads
unchanged. Swish is ``nn.SiLU`` (the same function, ``x·sigmoid(x)``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the integer timestep: ``[sin(t·f_k), cos(t·f_k)]``.

    ``f_k = exp(−ln(10⁴)·2k/dim)`` for ``k = 0 … dim/2 − 1``, stored as the persistent buffer
    ``inv_freq`` (it is in the checkpoint). Sines first, then cosines.

    Args:
        dim: embedding size (64).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        inv_freq = torch.exp(
            torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000) / dim)
        )
        self.register_buffer("inv_freq", inv_freq)  # dim/2

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``B`` timesteps (any dtype) → ``B×dim``."""
        angles = timesteps.reshape(-1).float()[:, None] * self.inv_freq[None, :]  # B×dim/2
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Block(nn.Module):
    """GroupNorm → Swish → [Dropout] → Conv3×3 (``block.0`` … ``block.3``)."""

    def __init__(self, dim: int, dim_out: int, groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, dim),
            nn.SiLU(),
            nn.Dropout(dropout) if dropout != 0 else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    """``block2(block1(x) + mlp(t_emb)) + res_conv(x)``; the time term only with ``time_emb_dim``.

    Also the time-free residual block of the condition network (``time_emb_dim=None``, no
    ``mlp`` entry in the state dict).

    Args:
        dim: input channels.
        dim_out: output channels (``res_conv`` is a 1×1 conv when they differ).
        time_emb_dim: size of the time embedding, or None.
        dropout: dropout of ``block2``.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        time_emb_dim: int | None = None,
        dropout: float = 0.0,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        self.mlp = (
            nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out))
            if time_emb_dim is not None
            else None
        )
        self.block1 = Block(dim, dim_out, groups=norm_groups)
        self.block2 = Block(dim_out, dim_out, groups=norm_groups, dropout=dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)
        if self.mlp is not None:
            h = h + self.mlp(time_emb)[:, :, None, None]  # + Linear(Swish(t_emb)), B×C×1×1
        return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels: GN → 1×1 qkv (no bias) → softmax → 1×1 out → + x.

    The logits are scaled by ``1/sqrt(C)`` with ``C`` the full channel count (as the official
    code, also for several heads).
    """

    def __init__(self, in_channel: int, n_head: int = 1, norm_groups: int = 32) -> None:
        super().__init__()
        self.n_head = n_head
        self.norm = nn.GroupNorm(norm_groups, in_channel)
        self.qkv = nn.Conv2d(in_channel, in_channel * 3, 1, bias=False)
        self.out = nn.Conv2d(in_channel, in_channel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        head_dim = channels // self.n_head
        qkv = self.qkv(self.norm(x)).view(batch, self.n_head, 3 * head_dim, height * width)
        query, key, value = qkv.chunk(3, dim=2)  # each B×n×d×N, N = H·W
        logits = torch.einsum("bndi,bndj->bnij", query, key) / math.sqrt(channels)  # B×n×N×N
        attention = torch.softmax(logits, dim=-1)
        out = torch.einsum("bnij,bndj->bndi", attention, value)  # B×n×d×N
        return self.out(out.reshape(batch, channels, height, width)) + x


class ResnetBlocWithAttn(nn.Module):
    """A :class:`ResnetBlock` with the time embedding, optionally followed by :class:`SelfAttention`."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        *,
        time_emb_dim: int | None = None,
        norm_groups: int = 32,
        dropout: float = 0.0,
        with_attn: bool = False,
    ) -> None:
        super().__init__()
        self.res_block = ResnetBlock(dim, dim_out, time_emb_dim, dropout, norm_groups)
        self.attn = SelfAttention(dim_out, norm_groups=norm_groups) if with_attn else None

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, time_emb)
        return self.attn(x) if self.attn is not None else x


class Downsample(nn.Module):
    """Conv3×3 with stride 2 (halves H and W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 upsampling → Conv3×3."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
