"""End-to-end training runs on the tiny synthetic world (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fadm_lightning.sampler import SamplerConfig
from fadm_lightning.train import MissingPathsError, train

from ..conftest import CONFIG_DIR, TINY_OVERRIDES

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
# presets of the FADM training module (inference-only and FOMM presets are tested elsewhere)
MODELS = sorted(
    p.stem
    for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")
    if OmegaConf.load(p)
    .get("_target_", "fadm_lightning.systems.fadm.FADMLitModule")
    .endswith("FADMLitModule")
    and "official_release" not in p.stem
)
RUNNABLE_ON_SYNTHETIC = ["synthetic_quality"]


def run(cfg):
    HydraConfig().set_config(cfg)
    return train(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}", tiny=False)
    for group in ("data", "model", "coarse", "attributes", "trainer"):
        assert "_target_" in cfg[group], group
        OmegaConf.to_container(cfg[group], resolve=True)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_preset_composes_and_builds(compose_train, model):
    cfg = compose_train(f"model={model}", tiny=False)
    agcn = instantiate(cfg.model.agcn)(attr_dim=56)
    unet = instantiate(cfg.model.unet)(in_channels=3 + agcn.cond_channels)
    assert unet.config.in_channels == 6 and unet.config.sample_size == cfg.data.image_size


def test_paper_unet_preset_mirrors_the_official_capacity(compose_train):
    cfg = compose_train("experiment=fomm_recon", tiny=False)
    unet = instantiate(cfg.model.unet)(in_channels=6)
    assert tuple(unet.config.block_out_channels) == (64, 128, 256, 256, 512, 512)
    assert unet.config.layers_per_block == 3 and unet.config.sample_size == 256
    n_params = sum(p.numel() for p in unet.parameters())
    assert 1.0e8 < n_params < 2.0e8  # the official SR3-style denoiser has 141 M


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=fadm_official", "model/unet=small"],
        *[[f"experiment={e}"] for e in RUNNABLE_ON_SYNTHETIC],
    ],
    ids=["default", "fadm_official", *RUNNABLE_ON_SYNTHETIC],
)
def test_fast_dev_run(compose_train, overrides):
    cfg = compose_train(*overrides, "++trainer.fast_dev_run=true")
    result = run(cfg)
    metrics = result["metrics"]
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    for key in ("test/l1_coarse", "test/l1_refined", "test/psnr_refined", "test/ssim_refined"):
        assert key in metrics


def test_fomm_recon_stops_at_once_naming_each_missing_path(compose_train):
    cfg = compose_train("experiment=fomm_recon", tiny=False)
    with pytest.raises(MissingPathsError) as err:
        run(cfg)
    message = str(err.value)
    for needle in (
        "data.root",
        "vox-png",
        "coarse.checkpoint",
        "attributes.checkpoint",
        "no random weights",
    ):
        assert needle in message, needle
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_frozen_parts_have_no_gradients_and_stay_out_of_optimizer_and_checkpoint(compose_train):
    cfg = compose_train("++trainer.max_steps=1", "++trainer.limit_val_batches=0", "test=false")
    result = run(cfg)
    ckpt = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=True)
    assert not any(k.startswith(("coarse.", "attributes.")) for k in ckpt["state_dict"])
    assert any(k.startswith("agcn.") for k in ckpt["state_dict"])
    assert any(k.startswith("unet.") for k in ckpt["state_dict"])

    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes)
    optimizer = model.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    frozen = list(model.coarse.parameters()) + list(model.attributes.parameters())
    assert not any(id(p) in in_optimizer for p in frozen)
    assert all(not p.requires_grad for p in frozen)
    assert len(in_optimizer) == len(list(model.trainable_parameters()))
    model.train()
    assert not model.coarse.training and not model.attributes.training and model.unet.training


@pytest.mark.parametrize("max_t, min_t", [(None, 0), (7, 0), (None, 95)])
def test_training_timesteps_cover_the_schedule_or_stay_below_max_train_timestep(
    compose_train, max_t, min_t, monkeypatch
):
    cfg = compose_train(
        f"model.max_train_timestep={'null' if max_t is None else max_t}",
        f"model.min_train_timestep={min_t}",
    )
    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes)
    seen = []
    add_noise = model.scheduler.add_noise
    monkeypatch.setattr(
        model.scheduler, "add_noise", lambda x, n, t: seen.append(t.clone()) or add_noise(x, n, t)
    )
    # the frozen parts are not under test: g = d and attr_s − attr_d = 0
    monkeypatch.setattr(
        model.pipeline,
        "prepare",
        lambda s, d, *a, **k: (d, torch.zeros(d.shape[0], attributes.dim), None),
    )
    frames = torch.rand(200, 3, 32, 32)
    torch.manual_seed(0)
    with torch.no_grad():
        model.model_step({"source": frames, "driving": frames})
    t = torch.cat(seen)
    if min_t:  # t ≥ min_train_timestep only, all of them seen
        assert set(t.tolist()) == set(range(min_t, cfg.model.scheduler.num_train_timesteps))
    elif max_t is None:  # the whole schedule (200 draws: P(max < 90) ≈ 1e-9)
        assert 90 <= int(t.max()) < cfg.model.scheduler.num_train_timesteps
    else:
        assert set(t.tolist()) == set(range(max_t))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.max_train_timestep=101"], "max_train_timestep must be in"),
        (["model.max_train_timestep=10", "model.min_train_timestep=10"], "min_train_timestep"),
        (["model.coarse_blur=-1"], "coarse_blur must be"),
    ],
)
def test_training_timestep_range_and_coarse_blur_out_of_range_are_rejected(
    compose_train, overrides, message
):
    cfg = compose_train(*overrides)
    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    with pytest.raises(Exception, match=message):  # hydra wraps it
        instantiate(cfg.model, coarse=coarse, attributes=attributes)


def test_coarse_blur_blurs_g_in_training_only(compose_train, monkeypatch):
    """model.coarse_blur: the residual target d − g is taken against a blurred g in training
    (a sharp frame loses detail), and sampling sees g as it is."""
    from fadm_lightning.systems.fadm import random_blur

    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    blurred = random_blur(images, 1.5)
    changed = (blurred - images).abs().flatten(1).mean(1)
    assert changed.max() > 0.05  # noise loses most of its detail under σ ≥ 0.1 px
    assert blurred.std() < images.std()
    cfg = compose_train("model.coarse_blur=1.5")
    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes)
    seen = []
    clean = model.pipeline.clean_sample
    monkeypatch.setattr(
        model.pipeline, "clean_sample", lambda d, g: seen.append(g.clone()) or clean(d, g)
    )
    frames = torch.rand(4, 3, 32, 32)
    monkeypatch.setattr(
        model.pipeline,
        "prepare",
        lambda s, d, *a, **k: (d, torch.zeros(d.shape[0], attributes.dim), None),
    )
    model.train()
    with torch.no_grad():
        model.model_step({"source": frames, "driving": frames})
    assert (seen[-1] - frames).abs().max() > 0.05
    model.eval()
    with torch.no_grad():
        model.model_step({"source": frames, "driving": frames})
    assert torch.equal(seen[-1], frames)


def test_resume_continues_at_the_saved_step(compose_train, tmp_path):
    first = compose_train("++trainer.max_steps=2", "test=false")
    result = run(first)
    last = result["last_checkpoint"]
    assert Path(last).is_file()
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 and "rng_states" in saved and "ema" in saved

    second = compose_train(
        "++trainer.max_steps=4", "trainer.max_epochs=5", f"ckpt_path={last}", "test=false"
    )
    second.paths.output_dir = str(tmp_path / "resumed")
    second.hydra.runtime.output_dir = str(tmp_path / "resumed")
    result2 = run(second)
    resumed = torch.load(result2["last_checkpoint"], map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 4


def test_same_seed_same_training(compose_train):
    losses = []
    for _ in range(2):
        cfg = compose_train("++trainer.fast_dev_run=true", "test=false")
        losses.append(run(cfg)["metrics"]["train/loss_step"])
    assert losses[0] == losses[1]


def _cli(
    args: list[str], cwd: Path, cache: Path, timeout: int = 600, tiny: bool = True
) -> subprocess.CompletedProcess:
    flags = [a for a in args if a in ("-m", "--multirun")]
    overrides = [a for a in args if a not in flags]
    env = {
        **os.environ,
        "FADM_CACHE_DIR": str(cache),
        "FADM_ROOT": str(cwd),
        "WANDB_MODE": "offline",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fadm_lightning.train",
            *flags,
            *(TINY_OVERRIDES if tiny else []),
            *overrides,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_writes_checkpoints_samples_and_logs_under_the_run_dir(tmp_path, shared_cache):
    run_dir = tmp_path / "run"
    proc = _cli(["++trainer.max_steps=2", f"hydra.run.dir={run_dir}"], tmp_path, shared_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "samples").glob("step_*.png"))
    assert (run_dir / "train.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert "| refined |" in proc.stdout


def test_cli_missing_paths_exit_non_zero(tmp_path, shared_cache):
    proc = _cli(
        ["experiment=fomm_recon", f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
        shared_cache,
        timeout=120,
        tiny=False,
    )
    assert proc.returncode != 0
    assert "coarse.checkpoint" in proc.stderr + proc.stdout


def test_multirun_sweep_runs_jobs_in_separate_folders(tmp_path, shared_cache):
    sweep = tmp_path / "sweep"
    proc = _cli(
        [
            "-m",
            "model.agcn.use_appearance=true,false",
            "++trainer.fast_dev_run=true",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        shared_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    overrides = [OmegaConf.load(sweep / str(i) / ".hydra" / "overrides.yaml") for i in (0, 1)]
    assert "model.agcn.use_appearance=True" in overrides[0]
    assert "model.agcn.use_appearance=False" in overrides[1]


@pytest.mark.slow
def test_two_process_cpu_ddp_run_completes(tmp_path, shared_cache):
    run_dir = tmp_path / "ddp"
    proc = _cli(
        [
            "trainer=ddp_cpu",
            "++trainer.max_steps=2",
            "trainer.max_epochs=4",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        shared_cache,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2


def test_checkpoint_is_self_contained_for_inference(compose_train):
    from fadm_lightning.checkpoints import CheckpointError, load_pipeline

    cfg = compose_train("++trainer.max_steps=1", "++trainer.limit_val_batches=0", "test=false")
    result = run(cfg)
    pipe, stored = load_pipeline(result["last_checkpoint"])
    assert stored.data.image_size == 32
    frames = torch.rand(2, 3, 32, 32)
    refined = pipe.sample(frames, torch.zeros(2, 11), SamplerConfig(steps=2, eta=0.0))
    assert refined.shape == frames.shape
    # a checkpoint that does not fit its model lists the differing keys
    ckpt = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=True)
    ckpt["state_dict"].pop(next(k for k in ckpt["state_dict"] if k.startswith("unet.")))
    ckpt["state_dict"]["agcn.extra.weight"] = torch.zeros(1)
    bad = Path(cfg.paths.output_dir) / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=r"(?s)missing.*unet.*unexpected.*agcn.extra.weight"):
        load_pipeline(bad)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_pipeline(bad.with_name("absent.ckpt"))

    # the sampler benchmark reads the checkpoint's own data config
    from fadm_lightning.benchmarks.sampling import evaluate, markdown

    settings = [SamplerConfig.parse("2:0:1"), SamplerConfig.parse("2:0:0.5")]
    rows = evaluate(result["last_checkpoint"], settings, max_clips=1)
    # the synthetic coarse generator has no warped source: coarse, copy source, the 2 settings
    assert [r["frames"] for r in rows][:2] == ["coarse", "copy source"] and len(rows) == 4
    assert all(0 <= r["l1"] <= 1 and r["psnr"] > 0 for r in rows)
    assert rows[1]["calls"] is None and rows[2]["calls"] == 2
    assert "| coarse |" in markdown(rows)


def test_untrained_cpu_preset_returns_the_coarse_frame_and_learns_the_residual(compose_train):
    """fadm_small diffuses d − g with x₀-prediction and a zero output layer: before training the
    refined frame is g itself, and its training target is the residual d − g."""
    cfg = compose_train()
    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes)
    assert model.pipeline.target == "residual" and model.pipeline.prediction_type == "sample"
    size = cfg.data.image_size
    assert model.unet.config.in_channels == 3 + model.agcn.cond_channels + 3  # x_t, c, g
    g = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    attr = torch.zeros(2, attributes.dim)
    torch.testing.assert_close(model.refine(g, attr), g, atol=1e-5, rtol=0)
    d = (g + 0.1).clamp(0, 1)
    torch.testing.assert_close(model.pipeline.clean_sample(d, g), d - g)
