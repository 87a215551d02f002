"""The released FADM denoiser as one module, usable by :class:`~fadm_lightning.pipeline.FADMPipeline`.

``OfficialFADMDenoiser.state_dict()`` is the official ``diffusion.pth`` layout (634 entries:
``diffusion.<13 schedule buffers>`` and ``diffusion.denoise_fn.*``,
``tests/data/reference/fadm_denoiser_keys.txt``). The module plays both roles the pipeline
expects, so no change to the pipeline is needed::

    denoiser = OfficialFADMDenoiser()            # then load_diffusion_checkpoint(path, denoiser)
    pipe = FADMPipeline(agcn=denoiser, unet=denoiser, scheduler=denoiser.make_scheduler(), …)

* as the AGCN: :meth:`~OfficialFADMDenoiser.encode` (``coarse``, optional real ``driving``) and
  :meth:`~OfficialFADMDenoiser.condition` (features, attr_s − attr_d, t) → ``c``;
* as the UNet: ``denoiser(cat(x_t, c), t).sample`` = ε̂ (the pipeline's channel order; the
  official trunk itself sees ``cat(c, x_t)``).

Sampling with :meth:`~OfficialFADMDenoiser.make_scheduler`, ``steps=100`` and ``eta=1``
(:data:`fadm_lightning.sampler.OFFICIAL`) is the official sampler (REFERENCE_SPEC §4.6): DDIM η = 1 over every timestep, with
``c1 = ddim_c1[t]`` (the posterior standard deviation). Fewer steps use the same scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from .condition import ConditionFeatures, condition_inputs
from .unet import SR3UNet

SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "ddim_c1",
)


def linear_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """β = linspace(s·1e-4, s·0.02, T) in float64 with s = 1000/T (0.001 → 0.2 for T = 100)."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


class GaussianDiffusion(nn.Module):
    """The noise schedule (13 float32 buffers, saved in ``diffusion.pth``) and the denoiser.

    Computed in float64 and stored in float32, as the official ``GaussianDiffusion``; the
    released file carries the same values, and loading it overwrites them.

    Args:
        denoise_fn: the :class:`~.unet.SR3UNet`.
        num_timesteps: T (100).
    """

    def __init__(self, denoise_fn: SR3UNet, num_timesteps: int = 100) -> None:
        super().__init__()
        self.num_timesteps = num_timesteps
        betas = linear_beta_schedule(num_timesteps)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)  # ᾱ_t
        alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)  # ᾱ_{t−1}, ᾱ_{−1} = 1
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)  # β̃_t
        values = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
            "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            "posterior_mean_coef2": (1 - alphas_cumprod_prev)
            * alphas.sqrt()
            / (1 - alphas_cumprod),
            # c1 of the official DDIM step = sqrt((1 − ᾱ_t/ᾱ_{t−1})(1 − ᾱ_{t−1})/(1 − ᾱ_t)) = sqrt(β̃_t)
            "ddim_c1": (
                (1 - alphas_cumprod / alphas_cumprod_prev)
                * (1 - alphas_cumprod_prev)
                / (1 - alphas_cumprod)
            ).sqrt(),
        }
        for name in SCHEDULE_BUFFERS:  # buffers first: official state-dict order
            self.register_buffer(name, values[name].to(torch.float32))
        self.denoise_fn = denoise_fn


@dataclass
class DenoiserOutput:
    """What the pipeline reads from a UNet call: ``.sample`` = ε̂, ``B×3×H×W``."""

    sample: torch.Tensor


class OfficialFADMDenoiser(nn.Module):
    """The released FADM denoiser (condition network + SR3 UNet + schedule), pipeline-ready.

    Defaults build the released model (141,334,662 parameters); smaller widths give tiny test
    models with the same code.

    Args:
        image_size: frame size H = W (256); places the attention levels.
        num_timesteps: T of the schedule (100).
        attr_dim: attribute size (56: DECA exp + pose).
        inner_channel: UNet base width and time-embedding size (64).
        channel_mults: UNet width multipliers per level ((1, 2, 4, 4, 8, 8)).
        attn_res: resolutions with self-attention ((16,)).
        res_blocks: ResBlocks per level going down (3).
        norm_groups: UNet GroupNorm groups (32).
        dropout: UNet dropout (0).
        condition_inner_channel: width of the condition network (32).
    """

    def __init__(
        self,
        image_size: int = 256,
        num_timesteps: int = 100,
        attr_dim: int = 56,
        inner_channel: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4, 4, 8, 8),
        attn_res: Sequence[int] = (16,),
        res_blocks: int = 3,
        norm_groups: int = 32,
        dropout: float = 0.0,
        condition_inner_channel: int = 32,
    ) -> None:
        super().__init__()
        self.attr_dim = attr_dim
        self.image_size = image_size
        unet = SR3UNet(
            in_channel=6,
            out_channel=3,
            inner_channel=inner_channel,
            norm_groups=norm_groups,
            channel_mults=tuple(channel_mults),
            attn_res=tuple(attn_res),
            res_blocks=res_blocks,
            dropout=dropout,
            image_size=image_size,
            attr_dim=attr_dim,
            condition_inner_channel=condition_inner_channel,
        )
        self.diffusion = GaussianDiffusion(unet, num_timesteps)

    @property
    def unet(self) -> SR3UNet:
        return self.diffusion.denoise_fn

    @property
    def num_timesteps(self) -> int:
        return self.diffusion.num_timesteps

    def make_scheduler(self) -> DDIMScheduler:
        """A DDIMScheduler on this model's schedule (its ``betas`` buffer, i.e. the checkpoint's).

        ``set_alpha_to_one`` (ᾱ_{−1} = 1), no clipping (images live in [0, 1]), ε-prediction,
        "leading" spacing: 100 inference steps visit 99, 98, …, 0 and, with ``eta=1``, each
        step is the official update (``c1 = ddim_c1[t]``).
        """
        return DDIMScheduler(
            num_train_timesteps=self.num_timesteps,
            trained_betas=self.diffusion.betas.detach().cpu().tolist(),
            clip_sample=False,
            set_alpha_to_one=True,
            steps_offset=0,
            prediction_type="epsilon",
            timestep_spacing="leading",
        )

    # --- AGCN role -------------------------------------------------------------------------
    def encode(
        self, coarse: torch.Tensor, driving: torch.Tensor | None = None
    ) -> ConditionFeatures:
        """The t-independent part of the condition for a batch of frames.

        Args:
            coarse: P, ``B×3×H×W`` in [0, 1].
            driving: the real driving frame (training only); None at inference (official demo:
                the appearance image is made from P).
        """
        levels, generated, appearance = condition_inputs(coarse, driving)
        return self.unet.condition_conv.encode(
            levels, generated, None if driving is None else appearance
        )

    def condition(
        self, features: ConditionFeatures, attr_diff: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The condition image ``c`` at timestep ``t`` (scalar or ``B``): ``B×3×H×W`` in (0, 1)."""
        code = features.coarse_code
        time_emb = self.unet.embed_time(torch.as_tensor(timesteps, device=code.device), len(code))
        return self.unet.condition_conv.condition(features, attr_diff.to(code.dtype), time_emb)

    # --- UNet role -------------------------------------------------------------------------
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> DenoiserOutput:
        """ε̂ for the pipeline's input ``cat(x_t, c)`` (``B×6×H×W``) at timestep ``t``."""
        image_channels = self.unet.image_channels
        x_t, condition = sample[:, :image_channels], sample[:, image_channels:]
        time_emb = self.unet.embed_time(
            torch.as_tensor(timestep, device=sample.device), len(sample)
        )
        return DenoiserOutput(sample=self.unet(x_t, time_emb, condition))

    def predict_noise(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        coarse: torch.Tensor,
        attr_diff: torch.Tensor,
        driving: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The official ``denoise_fn(x_t, t, condition)`` in one call: ``(ε̂, L_color or None)``.

        Args:
            x_t: ``B×3×H×W``.
            timesteps: integer t, scalar or ``B``.
            coarse: P, ``B×3×H×W`` in [0, 1].
            attr_diff: attr_s − attr_d, ``B×attr_dim``.
            driving: the real driving frame (training), or None.
        """
        features = self.encode(coarse, driving)
        condition = self.condition(features, attr_diff, timesteps)
        return self(torch.cat([x_t, condition], dim=1), timesteps).sample, features.color_loss
