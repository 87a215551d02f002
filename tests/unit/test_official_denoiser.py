"""The official FADM denoiser: diffusion.pth layout, condition net (§4.3–4.4), official sampler (§4.6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fadm_lightning.models.attributes import deca as deca_module
from fadm_lightning.models.coarse.facevid import FacevidCoarseGenerator, save_facevid_checkpoint
from fadm_lightning.models.official import (
    SCHEDULE_BUFFERS,
    ConditionNet,
    DiffusionCheckpointError,
    OfficialFADMDenoiser,
    OfficialReleaseMissingError,
    condition_inputs,
    load_diffusion_checkpoint,
    save_diffusion_checkpoint,
)
from fadm_lightning.models.official.blocks import SelfAttention, TimeEmbedding
from fadm_lightning.pipeline import FADMPipeline, official_scheduler
from fadm_lightning.sampler import SamplerConfig

ROOT = Path(__file__).resolve().parents[2]
KEYS_FILE = ROOT / "tests" / "data" / "reference" / "fadm_denoiser_keys.txt"
RELEASE_CONFIG = ROOT / "conf" / "model" / "fadm_official_release.yaml"

SIZE = 16  # tiny frames: levels g_i at 2, 4, 8 px, appearance ↓ to 2×2
TINY = dict(
    image_size=SIZE,
    inner_channel=8,
    channel_mults=(1, 2),
    attn_res=(8,),
    res_blocks=1,
    norm_groups=4,
)


def tiny_denoiser(seed: int = 0, **overrides) -> OfficialFADMDenoiser:
    """A tiny denoiser with every parameter randomised (incl. GroupNorm affine terms)."""
    torch.manual_seed(seed)
    denoiser = OfficialFADMDenoiser(**{**TINY, **overrides}).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in denoiser.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return denoiser


def frames(batch: int, seed: int, size: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def official_update(x, eps, abar_t, abar_prev, c1, z):
    """REFERENCE_SPEC §4.6: x0 = (x − √(1−ᾱ_t)·ε̂)/√ᾱ_t; x' = √ᾱ_{t−1}·x0 + c1·z + c2·ε̂."""
    x0 = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    c2 = (1 - abar_prev - c1**2).sqrt()
    return abar_prev.sqrt() * x0 + c1 * z + c2 * eps


# ----------------------------------------------------------------------------- layout


def test_state_dict_matches_the_official_keys_shapes_and_counts():
    lines = KEYS_FILE.read_text().splitlines()
    header = next(line for line in lines if line.startswith("## "))
    reference = [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]
    with torch.device("meta"):  # shapes only: no 141 M parameters in memory
        denoiser = OfficialFADMDenoiser()
    ours = [
        (key, str(tuple(value.shape)), str(value.dtype).removeprefix("torch."))
        for key, value in denoiser.state_dict().items()
    ]
    assert ours == reference  # key for key, in order
    assert len(ours) == 634
    assert [key for key, *_ in ours[:13]] == [f"diffusion.{name}" for name in SCHEDULE_BUFFERS]
    params = sum(p.numel() for p in denoiser.parameters())
    condition_params = sum(p.numel() for p in denoiser.unet.condition_conv.parameters())
    assert params == 141_334_662 and f"params={params}" in header
    assert condition_params == 77_635 and f"condition_net params={condition_params}" in header


def test_schedule_buffers_are_the_official_linear_schedule():
    denoiser = tiny_denoiser()
    diffusion = denoiser.diffusion
    betas = np.linspace(1e-3, 0.2, 100, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(diffusion.betas.numpy(), betas.astype(np.float32))
    np.testing.assert_allclose(diffusion.alphas_cumprod.numpy(), abar.astype(np.float32), rtol=1e-6)
    assert diffusion.alphas_cumprod_prev[0].item() == 1.0
    assert diffusion.alphas_cumprod[-1].item() == pytest.approx(2.04e-5, rel=0.01)
    # c1 = sqrt of the posterior variance (the official code's comment, §4.6)
    c1_squared = diffusion.ddim_c1.double() ** 2
    assert (c1_squared - diffusion.posterior_variance.double()).abs().max() < 1e-7
    # the diffusers scheduler driving the model has the same ᾱ_t (float32 rounding)
    for scheduler in (denoiser.make_scheduler(), official_scheduler(100)):
        torch.testing.assert_close(
            scheduler.alphas_cumprod, diffusion.alphas_cumprod, rtol=1e-6, atol=0
        )


def test_time_embedding_is_sin_then_cos_of_the_integer_timestep():
    embedding = TimeEmbedding(64)
    frequencies = np.exp(-np.log(1e4) * np.arange(0, 64, 2) / 64)
    np.testing.assert_allclose(embedding.inv_freq.numpy(), frequencies, rtol=1e-6)
    t = torch.tensor([0, 7, 99])
    expected = np.concatenate(
        [np.sin(t.numpy()[:, None] * frequencies), np.cos(t.numpy()[:, None] * frequencies)], 1
    )
    np.testing.assert_allclose(embedding(t).numpy(), expected, atol=1e-5)


def test_self_attention_is_single_head_softmax_over_pixels():
    torch.manual_seed(0)
    attention = SelfAttention(8, norm_groups=4).eval()
    x = torch.randn(2, 8, 3, 4)
    h = attention.norm(x).flatten(2)  # B×C×N
    q, k, v = attention.qkv.weight[:, :, 0, 0].split(8)  # each C×C
    weights = torch.softmax((q @ h).transpose(1, 2) @ (k @ h) / math.sqrt(8), dim=-1)  # B×N×N
    out = (v @ h) @ weights.transpose(1, 2)  # B×C×N
    expected = attention.out(out.view(2, 8, 3, 4)) + x
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-6)


def test_the_condition_image_comes_first_in_the_unet_input():
    denoiser = tiny_denoiser()
    with torch.no_grad():
        denoiser.unet.downs[0].weight[:, 3:] = 0  # the x_t part of cat(c, x_t)
    condition = frames(1, 0)
    eps = [
        denoiser(torch.cat([frames(1, seed), condition], dim=1), torch.tensor(5)).sample
        for seed in (1, 2)
    ]
    torch.testing.assert_close(eps[0], eps[1])  # x_t no longer matters: c is channels 0–2


# ----------------------------------------------------------------------------- condition net


def test_condition_inputs_are_the_official_nearest_resizes_at_256():
    coarse, driving = frames(1, 0, size=256), frames(1, 1, size=256)
    levels, generated, appearance = condition_inputs(coarse, driving)
    assert [level.shape[-1] for level in levels] == [32, 64, 128]
    for level, size in zip(levels, (32, 64, 128), strict=True):
        torch.testing.assert_close(level, F.interpolate(coarse, size=(size, size)))
    up_down = lambda image: F.interpolate(F.interpolate(image, size=(32, 32)), size=(256, 256))  # noqa: E731
    torch.testing.assert_close(generated, up_down(coarse))
    torch.testing.assert_close(appearance, up_down(driving))
    # inference (official demo): the appearance image is made from the coarse frame
    _, generated, appearance = condition_inputs(coarse)
    torch.testing.assert_close(appearance, generated)


def test_motion_weights_are_the_official_mlp_plus_pooled_attributes():
    torch.manual_seed(0)
    net = ConditionNet().eval()
    attribute, time_emb = torch.randn(2, 56), torch.randn(2, 64)
    mlp = net.motion_cond
    t = mlp.time_mlp[1](F.silu(time_emb))
    hidden = F.relu(mlp.condition[1](F.silu(torch.cat([attribute, t], 1))))
    pooled = F.adaptive_max_pool1d(attribute[:, None], 16)[:, 0]  # max over blocks of 3–4 values
    expected = torch.sigmoid(mlp.condition[3](hidden)) + 0.4 * pooled
    torch.testing.assert_close(mlp(time_emb, attribute), expected)
    assert expected.shape == (2, 16)


def test_condition_uses_eq10_weights_with_k2_and_alpha_0_3():
    denoiser = tiny_denoiser()
    net = denoiser.unet.condition_conv
    coarse, driving, attribute = frames(2, 0), frames(2, 1), torch.randn(2, 56)
    t = torch.tensor(37)
    features = denoiser.encode(coarse, driving)
    condition = denoiser.condition(features, attribute, t)

    # by hand, from the official formulas (§4.3)
    levels, generated, appearance = condition_inputs(coarse, driving)
    G, A = net.pre_conv_color(generated), net.pre_conv_color(appearance)
    time_emb = denoiser.unet.time_mlp(t.expand(2))
    w = net.motion_cond(time_emb, attribute)[:, :, None, None]  # B×16×1×1
    weights = [  # K = 2, α = 0.3
        torch.exp(w - 0.3),
        0.5 * torch.exp(w - 0.3) + 0.5 * torch.exp(-w + 0.3),
        torch.exp(-w + 0.3),
    ]
    m = 0
    for w_i, g_i in zip(weights, levels, strict=True):
        up = F.interpolate(g_i, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        m = m + w_i * (net.deal_cond.block2(net.deal_cond.block1(up)) + 0.4 * A)
    expected = net.resnet(torch.cat([m, G + 0.2 * A], dim=1))
    torch.testing.assert_close(condition, expected, rtol=1e-5, atol=1e-6)
    assert condition.shape == (2, 3, SIZE, SIZE) and 0 <= condition.min() and condition.max() <= 1
    torch.testing.assert_close(features.color_loss, (G - A).abs().mean())  # L1 mean
    # inference: A = G and no colour loss
    assert denoiser.encode(coarse).color_loss is None
    with pytest.raises(ValueError, match="56"):
        denoiser.condition(features, torch.randn(2, 50), t)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    original = tiny_denoiser(seed=1)
    path = save_diffusion_checkpoint(tmp_path / "diffusion.pth", original)
    stored = torch.load(path, weights_only=True)
    assert all(key.startswith("diffusion.") for key in stored)
    loaded = tiny_denoiser(seed=2)
    load_diffusion_checkpoint(path, loaded)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x_t, coarse, attribute = frames(2, 0), frames(2, 1), torch.randn(2, 56)
    outputs = [
        model.predict_noise(x_t, torch.tensor([3, 90]), coarse, attribute)[0]
        for model in (original, loaded)
    ]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_wrong_checkpoints_name_the_file_and_list_the_differences(tmp_path):
    denoiser = tiny_denoiser()
    absent = tmp_path / "fadm" / "diffusion.pth"
    with pytest.raises(FileNotFoundError) as error:
        load_diffusion_checkpoint(absent, denoiser)
    assert str(absent) in str(error.value) and "diffusion.pth" in str(error.value)

    # another configuration: missing, unexpected and mis-shaped keys, nothing loaded
    other = save_diffusion_checkpoint(tmp_path / "other.pth", tiny_denoiser(inner_channel=16))
    before = {key: value.clone() for key, value in denoiser.state_dict().items()}
    with pytest.raises(DiffusionCheckpointError) as error:
        load_diffusion_checkpoint(other, denoiser)
    message = str(error.value)
    assert str(other) in message and "mis-shaped keys" in message
    assert (
        "diffusion.denoise_fn.downs.0.weight: checkpoint (16, 6, 3, 3) vs model (8, 6, 3, 3)"
        in message
    )
    for key, value in denoiser.state_dict().items():
        assert torch.equal(value, before[key]), key

    state = dict(denoiser.state_dict())
    del state["diffusion.ddim_c1"]
    torch.save({"model": state}, tmp_path / "nested.pth")
    with pytest.raises(DiffusionCheckpointError, match="not a flat state dict") as error:
        load_diffusion_checkpoint(tmp_path / "nested.pth", denoiser)
    assert "missing keys (" in str(error.value) and "diffusion.ddim_c1" in str(error.value)

    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(DiffusionCheckpointError, match="garbage.pth"):
        load_diffusion_checkpoint(tmp_path / "garbage.pth", denoiser)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(DiffusionCheckpointError, match="holds a list"):
        load_diffusion_checkpoint(tmp_path / "list.pth", denoiser)


# ----------------------------------------------------------------------------- official sampler


@pytest.mark.parametrize("t", [99, 50, 1, 0])
def test_one_scheduler_step_is_the_official_update(t):
    denoiser = tiny_denoiser()
    scheduler = denoiser.make_scheduler()
    scheduler.set_timesteps(100)
    assert scheduler.timesteps.tolist() == list(range(99, -1, -1))
    x, z = (
        frames(1, 10) * 2 - 1,
        torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(t)),
    )
    coarse, attribute = frames(1, 11), torch.randn(1, 56)
    eps, _ = denoiser.predict_noise(x, torch.tensor(t), coarse, attribute)
    ours = scheduler.step(eps, t, x, eta=1.0, variance_noise=z).prev_sample

    buffers = denoiser.diffusion  # ᾱ_t, ᾱ_{t−1} and c1 = ddim_c1[t] from the checkpoint buffers
    expected = official_update(
        x, eps, buffers.alphas_cumprod[t], buffers.alphas_cumprod_prev[t], buffers.ddim_c1[t], z
    )
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def official_sample(denoiser, coarse, attribute, x_T, noise_list):
    """The official ``generalized_steps`` loop, written from the equations of §4.6."""
    buffers = denoiser.diffusion
    x = x_T
    for i in reversed(range(denoiser.num_timesteps)):
        eps, _ = denoiser.predict_noise(x, torch.full((x.shape[0],), i), coarse, attribute)
        x = official_update(
            x,
            eps,
            buffers.alphas_cumprod[i],
            buffers.alphas_cumprod_prev[i],
            buffers.ddim_c1[i],
            noise_list[i],
        )
    return x


# The 100-step ancestral chain against the update written from the equations: the same network
# calls, but the update's arithmetic differs, and the unclipped ε chain amplifies each rounding
# difference (by 1/√ᾱ_t ≈ 220 at t = 99) through 100 steps, differently with every CPU's kernels.
# Measured max |Δ| (Xeon Sapphire Rapids; kernels limited with ONEDNN_MAX_CPU_ISA,
# MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY): 1.0e-4 with AVX-512, 1.9e-5–6.9e-5 with AVX2,
# 2.2e-5–5.2e-5 with SSE4.x kernels: one or two chaotic pixels (the mean |Δ| is ≤ 6.5e-8), already
# half of the former tolerance (1e-4 + 1e-4·|x|). FULL_CHAIN_TOL = 2^-10 ≈ 9.8e-4 = 8192 float32 ε:
# ~10× the worst measured floor, 1/4 of a grey level; a sampler that is really different is far
# beyond it (η = 0.99: max |Δ| 1.0; the noise list off by one step: max 1.0, mean 0.12).
FULL_CHAIN_TOL = 2.0**-10


def test_full_100_step_sample_is_the_official_sampler():
    denoiser = tiny_denoiser()
    pipe = FADMPipeline(agcn=denoiser, unet=denoiser, scheduler=denoiser.make_scheduler())
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 3, SIZE, SIZE, generator=generator)
    noise_list = [torch.randn(1, 3, SIZE, SIZE, generator=generator) for _ in range(100)]
    # one noise draw per video shared by its frames: x_T, then the noise of t = 99, 98, …, 0
    noise = [x_T, *(noise_list[t] for t in range(99, -1, -1))]
    coarse, attribute = frames(2, 1), torch.randn(2, 56)
    with torch.no_grad():
        ours = pipe.sample(coarse, attribute, SamplerConfig(steps=100, eta=1.0), noise=noise)
        expected = official_sample(
            denoiser, coarse, attribute, x_T.expand(2, -1, -1, -1), noise_list
        )
    torch.testing.assert_close(ours, expected.clamp(0, 1), rtol=0, atol=FULL_CHAIN_TOL)
    assert 0.01 < ours.std()  # not a degenerate all-clamped image


def test_fewer_steps_are_ddim_eta1_on_the_same_schedule():
    denoiser = tiny_denoiser()
    pipe = FADMPipeline(agcn=denoiser, unet=denoiser, scheduler=denoiser.make_scheduler())
    coarse, attribute = frames(1, 1), torch.randn(1, 56)
    draws = [
        torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(s)) for s in range(5)
    ]
    with torch.no_grad():
        ours = pipe.sample(coarse, attribute, SamplerConfig(steps=4, eta=1.0), noise=draws)
        abar = denoiser.diffusion.alphas_cumprod
        x = draws[0]
        for step, t in enumerate((75, 50, 25, 0)):
            eps, _ = denoiser.predict_noise(x, torch.tensor(t), coarse, attribute)
            abar_prev = abar[t - 25] if t >= 25 else torch.tensor(1.0)
            c1 = ((1 - abar_prev) / (1 - abar[t]) * (1 - abar[t] / abar_prev)).sqrt()
            x = official_update(x, eps, abar[t], abar_prev, c1, draws[step + 1])
    torch.testing.assert_close(ours, x.clamp(0, 1), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- the release


class FakeDECA(torch.nn.Module):
    """Stands in for DECAAttributes (its ResNet-50 is not needed to test the assembly)."""

    dim = 56
    needs_annotations = False

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint = checkpoint

    def forward(self, images, annotation=None):
        return images.mean(dim=(2, 3)).repeat(1, 19)[:, :56]  # B×56


def test_release_lists_every_missing_file(tmp_path):
    (tmp_path / "diffusion.pth").write_bytes(b"")
    with pytest.raises(OfficialReleaseMissingError) as error:
        FADMPipeline.from_official_release(
            diffusion=tmp_path / "diffusion.pth",
            deca=tmp_path / "deca" / "deca_model.tar",
            facevid=None,
            fomm=tmp_path / "unused_FOMM.pth",
        )
    message = str(error.value)
    assert "2 required file(s) missing" in message
    assert (
        "deca_model.tar" in message and "facevid: not set" in message and "Facevid.pth" in message
    )
    assert "diffusion:" not in message and "unused_FOMM" not in message  # present / not needed
    with pytest.raises(OfficialReleaseMissingError, match="fomm: not set"):
        FADMPipeline.from_official_release(
            tmp_path / "diffusion.pth", tmp_path / "x.tar", coarse="fomm"
        )


def test_release_config_resolves_under_pretrained_dir_and_checks_files(compose_train):
    raw = OmegaConf.to_container(OmegaConf.load(RELEASE_CONFIG), resolve=False)
    for name, file in (
        ("diffusion", "fadm/diffusion.pth"),
        ("deca", "deca/deca_model.tar"),
        ("facevid", "facevid/Facevid.pth"),
        ("fomm", "fomm/FOMM.pth"),
    ):
        assert raw[name] == "${paths.pretrained_dir}/" + file
    cfg = compose_train("model=fadm_official_release", tiny=False)
    with pytest.raises(InstantiationException, match="3 required file") as error:
        instantiate(cfg.model)
    assert isinstance(error.value.__cause__, OfficialReleaseMissingError)


def test_release_assembles_a_ready_pipeline(tmp_path, monkeypatch):
    size = 64  # the tiny face-vid2vid needs 64×64 frames
    facevid_options = dict(
        num_kp=5,
        kp_block_expansion=4,
        kp_max_features=16,
        kp_reshape_channel=64,
        kp_reshape_depth=4,
        kp_num_blocks=2,
        he_block_expansion=8,
        he_max_features=64,
        block_expansion=8,
        max_features=32,
        reshape_channel=8,
        reshape_depth=4,
        num_resblocks=1,
        dense_motion_block_expansion=8,
        dense_motion_max_features=32,
        dense_motion_num_blocks=2,
        dense_motion_compress=2,
    )
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        facevid = FacevidCoarseGenerator(
            None, allow_random_weights_for_tests=True, **facevid_options
        )
    facevid_path = save_facevid_checkpoint(
        tmp_path / "Facevid.pth", facevid.kp_detector, facevid.he_estimator, facevid.generator
    )
    denoiser = tiny_denoiser(image_size=size, attn_res=(32,))
    diffusion_path = save_diffusion_checkpoint(tmp_path / "diffusion.pth", denoiser)
    deca_path = tmp_path / "deca_model.tar"
    deca_path.write_bytes(b"")
    monkeypatch.setattr(deca_module, "DECAAttributes", FakeDECA)

    pipe = FADMPipeline.from_official_release(
        diffusion=diffusion_path,
        deca=deca_path,
        facevid=facevid_path,
        facevid_options=facevid_options,
        denoiser_options={**TINY, "image_size": size, "attn_res": (32,)},
    )
    assert isinstance(pipe, FADMPipeline)
    assert pipe.agcn is pipe.unet and isinstance(pipe.unet, OfficialFADMDenoiser)
    assert pipe.attributes_from == "coarse" and isinstance(pipe.coarse, FacevidCoarseGenerator)
    assert not pipe.unet.training and not any(p.requires_grad for p in pipe.unet.parameters())
    out = pipe(frames(1, 0, size), frames(2, 1, size), sampler=SamplerConfig(steps=3, seed=0))
    assert out.refined.shape == out.coarse.shape == (2, 3, size, size)
    assert out.attr_diff.shape == (2, 56)
    assert 0 <= out.refined.min() and out.refined.max() <= 1


@pytest.mark.slow
def test_full_size_denoiser_at_256():
    """The released configuration end to end (about 10 s on one CPU core)."""
    torch.manual_seed(0)
    denoiser = OfficialFADMDenoiser().eval()
    with torch.no_grad():
        eps, color_loss = denoiser.predict_noise(
            torch.randn(1, 3, 256, 256), torch.tensor(50), frames(1, 0, 256), torch.randn(1, 56)
        )
    assert eps.shape == (1, 3, 256, 256) and torch.isfinite(eps).all() and color_loss is None
