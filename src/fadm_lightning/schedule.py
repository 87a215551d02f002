"""The DDIM schedule and the denoiser's parameterizations (ε, x_0 or v), for
:class:`fadm_lightning.pipeline.FADMPipeline` (which re-exports these names) and training."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def official_scheduler(
    num_train_timesteps: int = 100,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "leading",
) -> DDIMScheduler:
    """DDIMScheduler with the official linear schedule (REFERENCE_SPEC §4.5).

    β = linspace(scale·1e-4, scale·0.02, T) with scale = 1000/T, i.e. 0.001 → 0.2 for T = 100;
    ᾱ_{−1} = 1 (``set_alpha_to_one``), no clipping of x0 (images live in [0, 1]).

    Args:
        num_train_timesteps: T (100).
        prediction_type: what the denoiser predicts: "epsilon" (paper, eq. 11), "sample" (x_0)
            or "v_prediction" (v = √ᾱ·ε − √(1−ᾱ)·x_0).
        timestep_spacing: "leading" (official: 20 steps are t = 95, 90, …, 0) or "trailing"
            (t = 99, 94, …, 4; one step is t = 99, the only spacing whose first step sees the
            noisiest timestep when steps are few).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    scale = 1000 / num_train_timesteps
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=scale * 1e-4,
        beta_end=scale * 0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type=prediction_type,
        timestep_spacing=timestep_spacing,
    )


def _alpha_bar(scheduler: DDIMScheduler, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t as a B×1×1×1 (or scalar) tensor of ``like``'s device and dtype."""
    abar = scheduler.alphas_cumprod.to(like.device)[t.long()].to(like.dtype)
    return abar.view(-1, *([1] * (like.ndim - 1))) if abar.ndim else abar


def training_target(
    prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """What the denoiser learns to output for x_t = √ᾱ·x_0 + √(1−ᾱ)·ε."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0  # v


def x0_and_epsilon(
    prediction_type: str, output: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from the denoiser's output, whatever it predicts."""
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * output) / a, output
    if prediction_type == "sample":
        return output, (x_t - a * output) / s
    return a * x_t - s * output, a * output + s * x_t  # v


def output_from_x0(
    prediction_type: str, x0: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """The denoiser output that means x̂_0 = ``x0`` at x_t (the inverse of :func:`x0_and_epsilon`)."""
    if prediction_type == "sample":
        return x0
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - a * x0) / s
    return (a * x_t - x0) / s  # v = √ᾱ·ε − √(1−ᾱ)·x_0 with ε = (x_t − √ᾱ·x_0)/√(1−ᾱ)


def min_snr_weight(prediction_type: str, abar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weight (Hang et al., ICCV 2023) for the target of ``prediction_type``:
    min(SNR, γ) on x_0, divided by SNR for ε and by SNR + 1 for v (SNR = ᾱ/(1−ᾱ))."""
    snr = abar / (1 - abar)
    weight = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return weight / snr
    if prediction_type == "v_prediction":
        return weight / (snr + 1)
    return weight
