"""The sampler: one structured config (:class:`SamplerConfig`), one rule for defaults (the model's
own sampler unless overridden) in validation, ``evaluate`` and ``animate``, old spellings still
loading, and the student trained through the pipeline's own DDIM loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fadm_lightning.config import compose_config
from fadm_lightning.sampler import (
    OFFICIAL,
    OFFICIAL_SAMPLER,
    PRESETS,
    SamplerConfig,
    denoiser_calls,
    from_legacy,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TINY_OVERRIDES  # noqa: E402

#: the student's network (benchmarks.speed.SAME_NETWORK) on the trailing grid
STUDENT_NETWORK = [
    "model.target=residual",
    "model.coarse_input=true",
    "model.scheduler.prediction_type=sample",
    "model.scheduler.timestep_spacing=trailing",
]


# ---------------------------------------------------------------------------- the dataclass
def test_parse_spec_and_presets_round_trip():
    s = SamplerConfig.parse("4:0:1:clip")
    assert s == SamplerConfig(steps=4, eta=0.0, strength=1.0, clip_sample=True, start_noise=True)
    assert s.spec() == "4:0:1:clip" and s.calls == 4
    student = SamplerConfig.parse("1:0:1:clip:nonoise")
    assert student == PRESETS["one_call"] and student.spec() == "1:0:1:clip:nonoise"
    assert SamplerConfig.parse("official") is OFFICIAL and OFFICIAL.spec() == "100:1:1"
    assert OFFICIAL.as_dict() == OFFICIAL_SAMPLER and OFFICIAL.calls == 100
    assert SamplerConfig.parse("20:0:0.1").calls == denoiser_calls(20, 0.1) == 2
    assert "no noise" in student.describe()
    for name, preset in PRESETS.items():
        assert preset.complete and SamplerConfig.parse(preset.spec()) == preset, name
    for bad in ("4:0", "4:0:1:fast", "fast", "0:0:1", "4:2:1", "4:0:0"):
        with pytest.raises(ValueError):
            SamplerConfig.parse(bad)


def test_unset_knobs_take_the_defaults_and_nothing_else():
    mine = SamplerConfig(steps=5, seed=3)
    assert not mine.complete
    with pytest.raises(ValueError, match="unset"):
        mine.spec()
    full = mine.over(OFFICIAL)
    assert full == SamplerConfig(5, 1.0, 1.0, False, True, seed=3)  # the seed stays mine
    assert mine.over({"eta": 0, "steps": 9}).eta == 0.0  # a mapping of defaults works too
    assert full.with_(eta=None, strength=0.5) == SamplerConfig(5, 1.0, 0.5, False, True, seed=3)
    with pytest.raises(ValueError, match="unknown sampler settings"):
        SamplerConfig.from_mapping({"num_inference_steps": 4})
    # plain types whatever a config hands over
    typed = SamplerConfig.from_mapping({"steps": "4", "eta": 0, "clip_sample": 1})
    assert (typed.steps, typed.eta, typed.clip_sample) == (4, 0.0, True)
    assert isinstance(typed.eta, float) and isinstance(typed.steps, int)


def test_old_spellings_map_to_the_knobs():
    old = {"val_num_inference_steps": 20, "val_eta": 0.0, "val_strength": 0.1,
           "val_clip_sample": True, "val_start_noise": False, "lr": 1}  # fmt: skip
    assert from_legacy(old) == {
        "steps": 20, "eta": 0.0, "strength": 0.1, "clip_sample": True, "start_noise": False,
    }  # fmt: skip
    assert from_legacy({"num_inference_steps": 3, "seed": 2}) == {"steps": 3, "seed": 2}


# ---------------------------------------------------------------------------- the defaults rule
def _tiny_model(*overrides: str):
    cfg = compose_config("train", [*TINY_OVERRIDES, *overrides])
    model = instantiate(
        cfg.model, coarse=instantiate(cfg.coarse), attributes=instantiate(cfg.attributes)
    )
    return model, cfg


def test_validation_evaluate_and_animate_resolve_the_sampler_alike():
    from fadm_lightning.checkpoints import validation_sampler
    from fadm_lightning.inference.cli import sampler_from_config

    model, _ = _tiny_model("model.sampler.steps=3", "model.sample_seed=0")
    pipe = model.pipeline
    own = SamplerConfig(steps=3, eta=0.0, strength=0.1, clip_sample=True, start_noise=True)
    assert model.sampler == own and pipe.sampler == own  # validation: the model's own
    assert validation_sampler(model.hparams) == own  # what a loader gives the pipeline
    for overrides, expected in (
        ([], own),
        (["sampler.steps=7"], own.with_(steps=7)),
        (["sampler=official"], OFFICIAL),
        (["sampler=official", "sampler.eta=0"], OFFICIAL.with_(eta=0.0)),
        (["sampler=one_call", "sampler.seed=4"], PRESETS["one_call"].with_(seed=4)),
    ):
        animate = sampler_from_config(compose_config("animate", overrides))
        evaluate = compose_config("evaluate", overrides).sampler
        from_animate = animate.resolved(pipe.sampler).config
        from_evaluate = pipe.resolve_sampler(OmegaConf.to_container(evaluate))
        assert from_animate == from_evaluate == expected, overrides
    # a pipeline without a sampler of its own samples with the official one (the release)
    assert type(pipe)(pipe.agcn, pipe.unet, pipe.scheduler).sampler == OFFICIAL


def test_a_checkpoint_with_the_old_sampler_names_still_loads(tmp_path):
    from fadm_lightning.checkpoints import load_pipeline, validation_sampler
    from fadm_lightning.loading.training import CONFIG_KEY, config_for_checkpoint

    model, cfg = _tiny_model()
    stored = config_for_checkpoint(cfg)
    sampler = stored["model"].pop("sampler")
    old = {"num_inference_steps": 4, "eta": 1.0, "strength": 1.0, "clip_sample": False}
    stored["model"].update({f"val_{k}": v for k, v in old.items()})  # the old spelling
    stored["model"]["val_start_noise"] = sampler["start_noise"]
    own = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("coarse.", "attributes."))
    }
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": own, CONFIG_KEY: stored, "global_step": 1}, path)
    pipe, loaded = load_pipeline(path)
    assert pipe.sampler == SamplerConfig(4, 1.0, 1.0, False, True)
    assert "val_eta" not in loaded.model and loaded.model.sampler.steps == 4
    assert validation_sampler(stored["model"]) == pipe.sampler  # from the val_* alone
    # an old-style override of the model's sampler still applies
    pipe, _ = load_pipeline(path, ["model.val_num_inference_steps=6"])
    assert pipe.sampler.steps == 6


def test_a_folder_index_with_the_old_sampler_key_reads():
    from fadm_lightning.loading.folder import stored_sampler
    from fadm_lightning.pipeline import model_sampler

    old = {"default_sampler": {"steps": 2, "eta": 0.0, "strength": 0.1, "clip_sample": True}}
    assert model_sampler(stored_sampler(old)) == SamplerConfig(2, 0.0, 0.1, True, True)
    assert model_sampler(stored_sampler({})) == OFFICIAL
    new = {"sampler": PRESETS["one_call"].as_dict()}
    assert model_sampler(stored_sampler(new)) == PRESETS["one_call"]


# ---------------------------------------------------------------------------- the student's loop
def _old_student_x0(pipe, coarse, attr_diff, steps):
    """The student's rollout as systems/distill.py ran it beside the pipeline's loop."""
    from fadm_lightning.pipeline import _alpha_bar, x0_and_epsilon

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=coarse.device)
    timesteps = scheduler.timesteps
    offset = coarse if pipe.target == "residual" else torch.zeros_like(coarse)
    x = _alpha_bar(scheduler, timesteps[0], coarse).sqrt() * pipe.clean_sample(coarse, coarse)
    features = pipe.agcn.encode(coarse)
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        with torch.set_grad_enabled(last and torch.is_grad_enabled()):
            output = pipe.denoise(x, t, features, attr_diff, coarse)
            if last:
                abar = _alpha_bar(scheduler, t, x)
                return x0_and_epsilon(pipe.prediction_type, output, x, abar)[0]
            output = pipe.clip_output(scheduler, output, x, t, offset)
            x = scheduler.step(output, t, x, eta=0.0).prev_sample
    raise AssertionError("unreachable")


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_students_loss_through_the_pipeline_loop_equals_the_old_loop(steps):
    from fadm_lightning.systems.distill import FADMDistillLitModule

    cfg = compose_config("train", [*TINY_OVERRIDES, *STUDENT_NETWORK])
    model_cfg = {
        **OmegaConf.to_container(cfg.model, resolve=True),
        "_target_": "fadm_lightning.systems.distill.FADMDistillLitModule",
        "teacher_ckpt": "-",  # loaded only when fitting starts
    }
    student = instantiate(
        model_cfg, coarse=instantiate(cfg.coarse), attributes=instantiate(cfg.attributes)
    )
    assert isinstance(student, FADMDistillLitModule)
    torch.manual_seed(0)
    for p in student.unet.conv_out.parameters():  # the residual model starts at zero output
        torch.nn.init.normal_(p, std=0.1)
    coarse = torch.rand(2, 3, 32, 32)
    attr = torch.randn(2, student.attributes.dim)
    target = torch.rand(2, 3, 32, 32)

    def loss_and_grads(x0_fn):
        student.zero_grad()
        loss = torch.nn.functional.mse_loss(x0_fn(), target)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in student.trainable_parameters()]

    new_loss, new_grads = loss_and_grads(lambda: student.student_x0(coarse, attr, steps))
    old_loss, old_grads = loss_and_grads(
        lambda: _old_student_x0(student.pipeline, coarse, attr, steps)
    )
    assert torch.equal(new_loss, old_loss)
    for new, old in zip(new_grads, old_grads, strict=True):
        assert torch.equal(new, old)
    # and the no-grad sampler ends where the rollout's x̂_0 says (clamped to the frame)
    with torch.no_grad():
        x0 = student.student_x0(coarse, attr, steps)
    sampled = student.pipeline.sample(coarse, attr, PRESETS["one_call"].with_(steps=steps))
    torch.testing.assert_close(sampled, (coarse + x0.clamp(-coarse, 1 - coarse)).clamp(0, 1))
