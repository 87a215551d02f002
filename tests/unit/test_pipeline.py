import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from fadm_lightning.models.agcn import AGCN
from fadm_lightning.pipeline import (
    FADMPipeline,
    min_snr_weight,
    official_scheduler,
    output_from_x0,
    training_target,
    x0_and_epsilon,
)
from fadm_lightning.sampler import SamplerConfig


def test_betas_equal_the_official_linear_schedule():
    sched = official_scheduler(100)
    scale = 1000 / 100
    official = np.linspace(scale * 1e-4, scale * 0.02, 100, dtype=np.float64)  # REFERENCE_SPEC §4.5
    np.testing.assert_allclose(sched.betas.numpy(), official.astype(np.float32), rtol=0, atol=1e-7)
    assert sched.betas[0].item() == pytest.approx(0.001) and sched.betas[
        -1
    ].item() == pytest.approx(0.2)
    alphas_cumprod = np.cumprod(1 - official)
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), alphas_cumprod, rtol=1e-5)
    assert alphas_cumprod[-1] == pytest.approx(2.04e-5, rel=0.01)


@pytest.mark.parametrize("t", [99, 50, 1, 0])
def test_ddim_step_eta1_is_the_posterior_variance_ancestral_step(t):
    sched = official_scheduler(100)
    sched.set_timesteps(100)
    assert sched.timesteps.tolist() == list(range(99, -1, -1))
    g = torch.Generator().manual_seed(t)
    x, eps, z = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = sched.step(eps.float(), t, x.float(), eta=1.0, variance_noise=z.float()).prev_sample

    betas = np.linspace(1e-3, 0.2, 100, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    abar_t, abar_prev = abar[t], (abar[t - 1] if t > 0 else 1.0)
    x0 = (x - np.sqrt(1 - abar_t) * eps) / np.sqrt(abar_t)
    posterior_variance = betas[t] * (1 - abar_prev) / (1 - abar_t)
    c1 = np.sqrt(posterior_variance)
    c2 = np.sqrt(max(1 - abar_prev - c1**2, 0.0))
    expected = np.sqrt(abar_prev) * x0 + c1 * z + c2 * eps
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def tiny_pipeline(seed=0, scheduler=None, **pipeline_kwargs) -> FADMPipeline:
    torch.manual_seed(seed)
    agcn = AGCN(attr_dim=4, feature_channels=4, hidden_channels=8, time_embed_dim=8, norm_groups=2)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=9 if pipeline_kwargs.get("coarse_input") else 6,  # cat(x_t, c[, g])
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    scheduler = scheduler or official_scheduler(100)
    return FADMPipeline(agcn.eval(), unet.eval(), scheduler, **pipeline_kwargs)


# Frames that should be equal up to float rounding: two copies of one frame in a batch, or a video
# sampled as one batch of 4 vs two batches of 2. MKL / oneDNN / ATen pick kernels, blockings and
# reduction orders by CPU and by shape (a row's place in a GEMM tile, the batch size), so such
# frames differ by reordered float32 sums, amplified by the unclipped ε-prediction chain (x̂_0 =
# (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t). Measured max |Δ| on this sampler (Xeon Sapphire Rapids; kernels
# limited with ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY; 1 and 2 threads):
# 0 with AVX-512 kernels, up to 1.5e-5 with AVX2 and 2.3e-5 with MKL's SSE4.2 path (the path MKL
# may take on non-Intel CPUs), where the default assert_close tolerance (1e-5) failed.
# SAMPLE_TOL = 2^-11 ≈ 4.9e-4 = 4096 float32 ε (2^-23): 21× the worst measured floor and 1/8 of
# a grey level; another noise draw moves the frames by 0.48 on average, ~1000× SAMPLE_TOL.
SAMPLE_TOL = 2.0**-11


def test_same_seed_same_samples_and_shared_noise():
    pipe = tiny_pipeline()
    coarse = torch.rand(1, 3, 16, 16).expand(3, -1, -1, -1).contiguous()
    attr = torch.zeros(3, 4)
    a = pipe.sample(coarse, attr, SamplerConfig(steps=5, eta=1.0, seed=7))
    b = pipe.sample(coarse, attr, SamplerConfig(steps=5, eta=1.0, seed=7))
    c = pipe.sample(coarse, attr, SamplerConfig(steps=5, eta=1.0, seed=8))
    assert torch.equal(a, b)  # the same kernels on the same shapes, in one process
    assert (a - c).abs().mean() > 100 * SAMPLE_TOL  # another seed: far beyond the tolerance
    # one noise draw for all frames: identical inputs give the same frames (up to float rounding:
    # the kernels need not treat every row of a batch alike)
    torch.testing.assert_close(a[0], a[1], rtol=0, atol=SAMPLE_TOL)
    torch.testing.assert_close(a[0], a[2], rtol=0, atol=SAMPLE_TOL)
    # chunks of a video see the same noise as the whole batch
    whole = pipe.sample(
        torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)),
        torch.zeros(4, 4),
        SamplerConfig(steps=3, seed=3),
    )
    frames = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    parts = torch.cat(
        [
            pipe.sample(frames[:2], torch.zeros(2, 4), SamplerConfig(steps=3, seed=3)),
            pipe.sample(frames[2:], torch.zeros(2, 4), SamplerConfig(steps=3, seed=3)),
        ]
    )
    torch.testing.assert_close(whole, parts, rtol=0, atol=SAMPLE_TOL)
    assert a.min() >= 0 and a.max() <= 1


def test_strength_runs_fewer_steps_and_validates():
    pipe = tiny_pipeline()
    calls = []
    original = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    pipe.sample(torch.rand(1, 3, 16, 16), torch.zeros(1, 4), SamplerConfig(steps=10, strength=0.3))
    assert len(calls) == 3
    with pytest.raises(ValueError, match="strength"):
        pipe.sample(torch.rand(1, 3, 16, 16), torch.zeros(1, 4), SamplerConfig(strength=0))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_training_target_and_its_inverse_agree(prediction_type):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    abar = official_scheduler(100).alphas_cumprod[torch.tensor([3, 80])].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    output = training_target(prediction_type, x0, noise, abar)
    x0_hat, eps_hat = x0_and_epsilon(prediction_type, output, x_t, abar)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, noise, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        output_from_x0(prediction_type, x0, x_t, abar), output, atol=1e-4, rtol=1e-4
    )


def test_min_snr_weight_clips_low_noise_timesteps():
    abar = official_scheduler(100).alphas_cumprod
    snr = abar / (1 - abar)
    w_eps = min_snr_weight("epsilon", abar, 5.0)
    assert torch.all(w_eps <= 1 + 1e-6)
    torch.testing.assert_close(w_eps[snr < 5], torch.ones_like(w_eps[snr < 5]))
    assert w_eps[0] == pytest.approx(5.0 / snr[0].item(), rel=1e-5)  # t = 0: SNR ≈ 999
    torch.testing.assert_close(min_snr_weight("sample", abar, 5.0), snr.clamp(max=5.0))
    torch.testing.assert_close(
        min_snr_weight("v_prediction", abar, 5.0), snr.clamp(max=5.0) / (snr + 1)
    )


def test_trailing_spacing_starts_few_steps_at_the_noisiest_timestep():
    sched = official_scheduler(100, timestep_spacing="trailing")
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [99]
    sched.set_timesteps(4)
    assert sched.timesteps.tolist()[0] == 99
    with pytest.raises(ValueError, match="prediction_type"):
        official_scheduler(100, prediction_type="x0")


def residual_pipeline(prediction_type="sample") -> FADMPipeline:
    scheduler = official_scheduler(100, prediction_type, "trailing")
    return tiny_pipeline(scheduler=scheduler, target="residual", coarse_input=True)


@pytest.mark.parametrize("steps,strength,eta", [(1, 1.0, 0.0), (4, 1.0, 1.0), (10, 0.3, 0.0)])
def test_residual_refiner_with_zero_output_returns_the_coarse_frame(steps, strength, eta):
    pipe = residual_pipeline("sample")
    torch.nn.init.zeros_(pipe.unet.conv_out.weight)
    torch.nn.init.zeros_(pipe.unet.conv_out.bias)
    coarse = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out = pipe.sample(
        coarse, torch.zeros(2, 4), SamplerConfig(steps=steps, strength=strength, eta=eta)
    )
    torch.testing.assert_close(out, coarse, atol=1e-5, rtol=0)


def test_residual_x0_refiner_returns_its_prediction_in_one_step_clipped_to_the_frame_range():
    pipe = residual_pipeline("sample")
    coarse = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    residual = torch.full_like(coarse, 0.25)
    seen = []

    class Oracle(torch.nn.Module):  # predicts r̂_0 = 0.25 whatever its input
        def forward(self, x, t):
            seen.append((x.shape[1], int(t)))
            return type("Out", (), {"sample": residual})()

    pipe.unet = Oracle()
    out = pipe.sample(coarse, torch.zeros(1, 4), SamplerConfig(steps=1, clip_sample=True))
    torch.testing.assert_close(out, (coarse + 0.25).clamp(0, 1))
    assert seen == [(3 + 3 + 3, 99)]  # cat(x_t, c, g), the noisiest timestep
