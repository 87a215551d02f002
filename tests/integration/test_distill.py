"""The few-step student (experiment=fadm_distill): distillation runs, and the student is a normal
FADM checkpoint that samples through the same pipeline, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from fadm_lightning.checkpoints import load_pipeline
from fadm_lightning.sampler import PRESETS
from fadm_lightning.systems.distill import FADMDistillLitModule, plain_model_config
from fadm_lightning.train import train


def _run(cfg):
    HydraConfig().set_config(cfg)
    return train(cfg)


@pytest.fixture
def teacher(compose_train, tmp_path) -> Path:
    """A tiny residual FADM (the CPU preset) trained for 2 steps."""
    cfg = compose_train("++trainer.max_steps=2", "test=false")
    cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(tmp_path / "teacher")
    return Path(_run(cfg)["last_checkpoint"])


def _student_cfg(compose_train, tmp_path, teacher, *overrides):
    cfg = compose_train(
        "experiment=fadm_distill",
        f"teacher={teacher}",
        "++trainer.max_steps=2",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "model.sampler.steps=1",  # TINY_OVERRIDES set 2; model.* applies after distill.*
        *overrides,
    )
    cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(tmp_path / "student")
    return cfg


def test_student_sampler_is_the_pipeline_sampler(compose_train, tmp_path, teacher):
    """The rollout trained on (last call with gradient) is exactly what the pipeline samples."""
    from hydra.utils import instantiate

    from fadm_lightning.train import with_teacher

    cfg = _student_cfg(compose_train, tmp_path, teacher)
    HydraConfig().set_config(cfg)
    cfg = with_teacher(cfg)
    model = instantiate(
        cfg.model, coarse=instantiate(cfg.coarse), attributes=instantiate(cfg.attributes)
    )
    assert isinstance(model, FADMDistillLitModule)
    model.setup("fit")  # loads the teacher and copies its weights
    teacher_pipe, _ = load_pipeline(teacher)
    for mine, theirs in zip(model.unet.parameters(), teacher_pipe.unet.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    torch.manual_seed(0)
    g = torch.rand(2, 3, 32, 32)
    attr = torch.randn(2, model.attributes.dim)
    for k in (1, 2, 4):
        x0 = model.student_x0(g, attr, k)
        expected = (g + x0.clamp(-g, 1 - g)).clamp(0, 1)
        sampled = model.pipeline.sample(g, attr, PRESETS["one_call"].with_(steps=k, seed=k))
        torch.testing.assert_close(sampled, expected, atol=1e-6, rtol=0)
    # no noise anywhere: another seed gives the same frames
    again = model.pipeline.sample(g, attr, PRESETS["one_call"].with_(steps=2, seed=123))
    torch.testing.assert_close(
        again, model.pipeline.sample(g, attr, PRESETS["one_call"].with_(steps=2, seed=7))
    )


def test_distillation_trains_and_saves_a_plain_checkpoint(compose_train, tmp_path, teacher):
    result = _run(_student_cfg(compose_train, tmp_path, teacher))
    metrics = result["metrics"]
    for key in ("train/loss_distill", "train/loss_gt", "test/psnr_refined"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    ckpt_path = result["last_checkpoint"] or result["best_checkpoint"]
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    stored = ckpt["fadm_config"]["model"]
    assert stored["_target_"] == "fadm_lightning.systems.fadm.FADMLitModule"
    assert "teacher_ckpt" not in stored and stored["sampler"]["start_noise"] is False
    # the student loads like any checkpoint and differs from its teacher after training
    student, _ = load_pipeline(ckpt_path)
    teacher_pipe, _ = load_pipeline(teacher)
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(student.unet.parameters(), teacher_pipe.unet.parameters(), strict=True)
    )
    assert changed
    from fadm_lightning.inference.model import FrameRefiner, SamplerSettings

    refine = FrameRefiner(
        student,
        SamplerSettings(seed=1),
        defaults=PRESETS["one_call"],
    )
    g, attr = torch.rand(3, 3, 32, 32), torch.randn(3, student.agcn.attr_dim)
    out = refine(g, attr)
    assert out.shape == g.shape and 0 <= out.min() and out.max() <= 1

    # the quality table of student vs teacher (a run directory picks its best checkpoint)
    from fadm_lightning.benchmarks.distill import compare, markdown

    table = compare(str(teacher), str(tmp_path / "student"), ["2:0:1"], ["2:0:1:clip:nonoise"])
    models = [(r["model"], r.get("own", False)) for r in table["rows"]]
    assert models[:2] == [("coarse", False), ("copy source", False)]
    assert ("teacher", True) in models and ("student", True) in models
    assert len(models) == 6  # coarse, copy source, 2 + own each
    student_own = next(r for r in table["rows"] if r["model"] == "student" and r["own"])
    assert student_own["calls"] == 1 and student_own["tdiff"] is not None
    assert set(table["summary"]["targets"]) == {
        "within_0.3_db",
        "within_5_percent_l1",
        "beats_coarse",
        "flicker_not_higher",
    }
    assert "targets:" in markdown(table)


def test_a_teacher_of_another_architecture_is_refused(compose_train, tmp_path, teacher):
    from hydra.utils import instantiate

    from fadm_lightning.train import with_teacher

    cfg = _student_cfg(compose_train, tmp_path, teacher, "++distill.unet.layers_per_block=2")
    HydraConfig().set_config(cfg)
    cfg = with_teacher(cfg)
    model = instantiate(
        cfg.model, coarse=instantiate(cfg.coarse), attributes=instantiate(cfg.attributes)
    )
    with pytest.raises(ValueError, match="does not fit the student"):
        model.setup("fit")


def test_plain_model_config_drops_the_distillation_arguments():
    model = {"_target_": "x.Student", "teacher_ckpt": "t.ckpt", "gt_weight": 1.0, "lr": 3}
    assert plain_model_config(model) == {
        "_target_": "fadm_lightning.systems.fadm.FADMLitModule",
        "lr": 3,
    }


STUDENT_SAMPLER = [  # what experiment=fadm_distill stores with the student
    "model.sampler.steps=1",
    "model.sampler.eta=0",
    "model.sampler.strength=1",
    "model.sampler.clip_sample=true",
    "model.sampler.start_noise=false",
]


@pytest.mark.filterwarnings("ignore:FOMMCoarseGenerator. RANDOM WEIGHTS")
def test_rectify_and_animate_take_a_student_checkpoint(tmp_path):
    """A checkpoint in the student's format (a plain FADM with the student's sampler) drives the
    commands with its own sampler: one call per frame, no noise, so the seed changes nothing."""
    pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
    import numpy as np

    from .test_inference import (
        TINY_256,
        frames_of,
        render_faces,
        run_app,
        save_checkpoint,
        write_video,
    )

    ckpt = save_checkpoint(tmp_path / "student.ckpt", [*TINY_256, *STUDENT_SAMPLER])
    clip = write_video(tmp_path / "clip.mp4", render_faces(3, seed=5), 25)
    common = [f"video={clip}", f"ckpt={ckpt}", "progress=false", "device=cpu"]
    outputs = []
    for seed in (0, 9):
        out = tmp_path / f"rectified_{seed}.mp4"
        assert run_app("rectify", [*common, f"output={out}", f"sampler.seed={seed}"]) == 0
        outputs.append(frames_of(out))
    assert outputs[0].shape[0] == 3 and np.array_equal(outputs[0], outputs[1])
    portrait = tmp_path / "portrait.png"
    from PIL import Image

    Image.fromarray(render_faces(1, seed=6)[0]).save(portrait)
    out = tmp_path / "animated.mp4"
    status = run_app(
        "animate",
        [f"source={portrait}", f"driving={clip}", f"ckpt={ckpt}", f"output={out}",
         "progress=false", "device=cpu"],
    )  # fmt: skip
    assert status == 0 and frames_of(out).shape[0] == 3
