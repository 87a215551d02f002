"""experiment=fomm_pretrain: train a FOMM on the tiny synthetic world, then use it in FADM (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from fadm_lightning.evaluation.tables import format_table
from fadm_lightning.systems.fomm import EVAL_METRICS
from fadm_lightning.train import MissingPathsError, train

from ..conftest import TINY_OVERRIDES

# the tiny synthetic world (32×32) of the FADM tests, without their FADM model sizes
TINY_DATA = [o for o in TINY_OVERRIDES if not o.startswith("model.")]
# tiny FOMM sizes for 32×32 frames, as model.* (training) and coarse.* (FOMMCoarseGenerator) keys
TINY_SIZES = {
    ("kp_detector.block_expansion", "kp_block_expansion"): 8,
    ("kp_detector.max_features", "kp_max_features"): 32,
    ("kp_detector.num_blocks", "kp_num_blocks"): 3,
    ("generator.block_expansion", "block_expansion"): 8,
    ("generator.max_features", "max_features"): 32,
    ("generator.num_bottleneck_blocks", "num_bottleneck_blocks"): 1,
    ("generator.dense_motion_block_expansion", "dense_motion_block_expansion"): 8,
    ("generator.dense_motion_max_features", "dense_motion_max_features"): 32,
    ("generator.dense_motion_num_blocks", "dense_motion_num_blocks"): 3,
}
TINY_FOMM = [f"model.{model}={value}" for (model, _), value in TINY_SIZES.items()]
TINY_COARSE = [f"coarse.{coarse}={value}" for (_, coarse), value in TINY_SIZES.items()]


def run(cfg):
    HydraConfig().set_config(cfg)
    return train(cfg)


def test_fomm_small_coarse_config_matches_the_pretrain_preset(compose_train):
    """coarse=fomm_small must build the networks that experiment=fomm_pretrain trains."""
    model = compose_train("experiment=fomm_pretrain", tiny=False).model
    coarse = compose_train("coarse=fomm_small", "coarse.checkpoint=x", tiny=False).coarse
    pairs = {"num_kp": model.kp_detector.num_kp, "align_corners": model.generator.align_corners}
    for name in ("block_expansion", "max_features", "num_blocks", "scale_factor", "temperature"):
        pairs[f"kp_{name}"] = model.kp_detector[name]
    for name in ("block_expansion", "max_features", "num_down_blocks", "num_bottleneck_blocks",
                 "dense_motion_block_expansion", "dense_motion_max_features",
                 "dense_motion_num_blocks", "dense_motion_scale_factor", "kp_variance"):  # fmt: skip
        pairs[name] = model.generator[name]
    assert {key: coarse[key] for key in pairs} == pairs


def test_fomm_pretrain_then_fadm_with_the_trained_coarse_generator(compose_train, tmp_path):
    # 1. train FOMM for one batch: the official-format checkpoint is written at the end
    cfg = compose_train(*TINY_DATA, *TINY_FOMM, "experiment=fomm_pretrain",
                        "++trainer.fast_dev_run=true", tiny=False)  # fmt: skip
    metrics = run(cfg)["metrics"]
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    for key in (f"{stage}/{name}" for stage in ("val", "test") for name in EVAL_METRICS):
        assert key in metrics, key
    table = format_table(metrics, "test")  # the summary printed at the end of the run
    for name, label in EVAL_METRICS.items():
        assert f"| {label} | {metrics[f'test/{name}']:.4f} |" in table
    exported = Path(cfg.paths.output_dir) / "fomm_checkpoint.pth.tar"
    checkpoint = torch.load(exported, map_location="cpu", weights_only=True)
    assert {
        "kp_detector",
        "generator",
        "optimizer_generator",
        "optimizer_kp_detector",
        "epoch",
    } <= set(checkpoint)

    # 2. FADM with that FOMM as its frozen coarse generator, on the same data
    fadm = compose_train("coarse=fomm_small", f"coarse.checkpoint={exported}", *TINY_COARSE,
                         "++trainer.fast_dev_run=true")  # fmt: skip
    fadm.paths.output_dir = str(tmp_path / "fadm")
    fadm.hydra.runtime.output_dir = str(tmp_path / "fadm")
    metrics = run(fadm)["metrics"]
    for key in ("test/l1_coarse", "test/l1_refined"):
        assert key in metrics, key


def test_fomm_pretrain_with_discriminator(compose_train):
    cfg = compose_train(*TINY_DATA, *TINY_FOMM, "experiment=fomm_pretrain",
                        "model/discriminator=multiscale", "model.discriminator.num_blocks=3",
                        "model.feature_matching_weights=[10,10,10]", "++trainer.fast_dev_run=true",
                        "test=false", tiny=False)  # fmt: skip
    metrics = run(cfg)["metrics"]
    for key in ("train/generator_gan", "train/feature_matching", "train/discriminator_gan"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    checkpoint = torch.load(
        Path(cfg.paths.output_dir) / "fomm_checkpoint.pth.tar", weights_only=True
    )
    assert {"discriminator", "optimizer_discriminator"} <= set(checkpoint)


def test_vgg_perceptual_without_the_file_stops_naming_it(compose_train):
    cfg = compose_train(
        *TINY_DATA, "experiment=fomm_pretrain", "model/perceptual=vgg19", tiny=False
    )
    expected = (
        Path(cfg.paths.root_dir) / "checkpoints" / "pretrained" / "vgg19" / "vgg19-dcbb9e9d.pth"
    )
    with pytest.raises(InstantiationException) as error:
        run(cfg)
    assert str(expected) in str(error.value) and "pyramid_l1" in str(error.value)
    assert not (Path(cfg.paths.output_dir) / "fomm_checkpoint.pth.tar").exists()


def test_vox_experiment_has_the_vox256_networks(compose_train):
    cfg = compose_train("experiment=fomm_pretrain_vox", tiny=False)
    assert cfg.model.perceptual.weights_path.endswith("vgg19/vgg19-dcbb9e9d.pth")
    generator = instantiate(cfg.model.generator)
    kp_detector = instantiate(cfg.model.kp_detector)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert (
        count(kp_detector) == 14_215_368 and count(generator) == 45_575_391
    )  # REFERENCE_SPEC §1.2


def test_fomm_small_without_checkpoint_stops_before_building(compose_train):
    cfg = compose_train("coarse=fomm_small")
    with pytest.raises(MissingPathsError, match="coarse.checkpoint"):
        run(cfg)
