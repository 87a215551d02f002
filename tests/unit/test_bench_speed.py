"""The speed benchmarks (``benchmarks.speed``, ``benchmarks.gpu``) in their tiny configurations,
and the CPU engineering of :class:`~fadm_lightning.inference.model.FrameRefiner`
(channels_last, bf16 autocast, the fallbacks)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers import UNet2DModel

from fadm_lightning.inference.model import FrameRefiner, SamplerSettings
from fadm_lightning.models.agcn import AGCN
from fadm_lightning.pipeline import FADMPipeline, official_scheduler

STUDENT = {"steps": 1, "eta": 0.0, "strength": 1.0, "clip_sample": True, "start_noise": False}
TWO_STEPS = {"steps": 2, "eta": 1.0, "strength": 1.0, "clip_sample": False, "start_noise": True}


def student_pipeline(seed: int = 0) -> FADMPipeline:
    """A tiny pipeline with the student's network choices (residual target, g as input, x_0)."""
    torch.manual_seed(seed)
    agcn = AGCN(attr_dim=4, feature_channels=4, hidden_channels=8, time_embed_dim=8, norm_groups=2)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=9,  # cat(x_t, c, g)
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )
    scheduler = official_scheduler(100, prediction_type="sample")
    return FADMPipeline(agcn.eval(), unet.eval(), scheduler, target="residual", coarse_input=True)


def frames(batch: int = 2):
    g = torch.Generator().manual_seed(3)
    return torch.rand(batch, 3, 32, 32, generator=g), torch.randn(batch, 4, generator=g)


# channels_last runs other convolution algorithms (oneDNN's NHWC kernels, whose blockings depend
# on the CPU's ISA and cache sizes): the same frames up to reordered float32 sums. Measured max |Δ|
# (Xeon Sapphire Rapids; kernels limited to AVX-512, AVX2 and SSE4.1 with ONEDNN_MAX_CPU_ISA,
# MKL_ENABLE_INSTRUCTIONS and ATEN_CPU_CAPABILITY; 1 and 2 threads): 3.2e-6–4.8e-6, about 40 ε
# (ε = 2^-23), i.e. half of the former tolerance (1e-5). LAYOUT_TOL = 2^-14 ≈ 6.1e-5 = 512 ε: 12×
# the worst measured floor; a layout mix-up (NCHW memory read as NHWC) changes frames by 0.34 on
# average (max 1.0).
LAYOUT_TOL = 2.0**-14


@pytest.mark.parametrize("sampler", [STUDENT, TWO_STEPS], ids=["student", "two_steps_eta1"])
def test_channels_last_gives_the_fp32_output(sampler):
    pipe = student_pipeline()
    coarse, attr = frames()
    reference = FrameRefiner(pipe, SamplerSettings(**sampler))(coarse, attr)
    refine = FrameRefiner(pipe, SamplerSettings(**sampler, channels_last=True))
    unet = pipe.unet
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    hook = unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    out = refine(coarse, attr)
    hook.remove()
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference, rtol=0, atol=LAYOUT_TOL)
    # a second refiner does not stack hooks; undoing restores the contiguous format
    FrameRefiner(pipe, SamplerSettings(**sampler, channels_last=True))
    assert len(unet._forward_pre_hooks) == 1
    from fadm_lightning.inference.model import use_contiguous_format

    use_contiguous_format(unet)
    assert not unet._forward_pre_hooks
    assert unet.conv_in.weight.is_contiguous()


def test_bf16_on_the_cpu_is_close_to_fp32():
    from fadm_lightning.inference.model import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 (avx512_bf16 / amx_bf16) in oneDNN")
    pipe = student_pipeline()
    coarse, attr = frames()
    reference = FrameRefiner(pipe, SamplerSettings(**STUDENT))(coarse, attr)
    messages = []
    refine = FrameRefiner(pipe, SamplerSettings(**STUDENT, precision="bf16"), messages.append)
    assert not messages  # not ignored
    out = refine(coarse, attr)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert not torch.equal(out, reference)  # bf16 did run
    assert (out - reference).abs().mean() < 0.01
    torch.testing.assert_close(out, reference, rtol=0, atol=0.08)
    # with channels_last as well
    both = FrameRefiner(pipe, SamplerSettings(**STUDENT, precision="bf16", channels_last=True))
    torch.testing.assert_close(both(coarse, attr), reference, rtol=0, atol=0.08)


def test_cpu_fallbacks_say_so(monkeypatch):
    from fadm_lightning.inference import model

    monkeypatch.setattr(model, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(model, "cpp_compiler_available", lambda: False)
    pipe = student_pipeline()
    unet = pipe.unet
    messages = []
    refine = FrameRefiner(
        pipe, SamplerSettings(**STUDENT, precision="bf16", compile=True), messages.append
    )
    text = "\n".join(messages)
    assert "precision=bf16 ignored on cpu" in text and "running in fp32" in text
    assert "compile=true ignored on cpu" in text
    assert pipe.unet is unet  # not compiled
    coarse, attr = frames()
    torch.testing.assert_close(
        refine(coarse, attr), FrameRefiner(pipe, SamplerSettings(**STUDENT))(coarse, attr)
    )


def test_channels_last_setting_is_in_the_configs():
    from omegaconf import OmegaConf

    from fadm_lightning.config import compose_config

    for app in ("animate", "rectify"):
        sampler = compose_config(app).sampler  # the knobs come from conf/sampler/model.yaml
        assert sampler.channels_last is False and "start_noise" in sampler
        SamplerSettings(**OmegaConf.to_container(sampler))  # every key is a setting


# ------------------------------------------------------------------------------ the benchmarks
def test_speed_benchmark_tiny_end_to_end(tmp_path, capsys):
    pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
    from fadm_lightning.benchmarks import speed
    from fadm_lightning.inference.stages import STAGES

    result = speed.main(
        [
            "tiny=true",
            "device=cpu",
            "rows=[student,channels_last,fastest]",
            f"json={tmp_path / 'speed.json'}",
            f"markdown={tmp_path / 'speed.md'}",
        ]
    )
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"speedup_vs_official=(\S+)", last)
    assert match, f"last line: {last!r}"
    assert float(match.group(1)) > 0
    assert "machine:" in out and "torch thread" in out
    assert "extrapolated from 2- and 6-step runs" in out
    saved = json.loads((tmp_path / "speed.json").read_text())
    rows = {(r["row"], r["batch"]): r for r in saved["rows"]}
    assert {("official", 1), ("official", 2), ("student", 1), ("fastest", 2)} <= set(rows)
    assert rows[("official", 1)]["denoiser_calls_per_frame"] == 100
    assert rows[("student", 1)]["denoiser_calls_per_frame"] == 1
    assert all(not r.get("skipped") for r in saved["rows"]), saved["rows"]
    assert result["speedup_vs_official"] == pytest.approx(float(match.group(1)), rel=1e-3)
    assert "| official |" in (tmp_path / "speed.md").read_text()
    # where a frame's time goes: every stage of the command ran, and the parts add up
    breakdown = saved["breakdown"]
    stages = breakdown["stages"]
    assert list(stages) == [*STAGES, "other"]
    assert all(seconds > 0 for name, seconds in stages.items() if name != "other"), stages
    assert sum(stages.values()) == pytest.approx(breakdown["s_per_frame"], rel=1e-6)
    assert "### Where a frame's time goes" in (tmp_path / "speed.md").read_text()
    from ..conftest import TEST_THREADS

    assert torch.get_num_threads() == TEST_THREADS  # the conftest's thread count is restored


def test_gpu_benchmark_on_the_cpu_writes_its_table(tmp_path, capsys):
    pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
    from fadm_lightning.benchmarks import gpu

    out = tmp_path / "bench_gpu"
    # generous time guards: a busy machine must not skip rows here
    args = ["device=cpu", "tiny=true", f"out={out}", "precisions=[fp32]"]
    assert gpu.main([*args, "budget_s=3000", "row_limit_s=1000"]) == 0
    table = (out / "table.md").read_text()
    result = json.loads((out / "results.json").read_text())
    assert "| student | fp32 | 1 |" in table and "| official | fp32 | 1 |" in table
    assert {(r["sampler"], r["batch"]) for r in result["rows"]} == {
        ("student", 1),
        ("student", 2),
        ("official", 1),
        ("official", 2),
    }
    assert all(r["error"] is None and r["fps"] > 0 for r in result["rows"]), result["rows"]
    assert "total elapsed" in capsys.readouterr().out


def test_gpu_benchmark_without_cuda_exits_with_a_message(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    from fadm_lightning.benchmarks import gpu

    assert gpu.main([f"out={tmp_path / 'none'}"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
