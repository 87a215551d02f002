"""The training test stage reports ST-LPIPS[alex], tdiff and flicker for coarse and refined
frames, never saves the metric network, and skips ST-LPIPS (saying so once) when it cannot run."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from fadm_lightning.evaluation.tables import KNOWN_COLUMNS, format_table
from fadm_lightning.metrics import perceptual as perceptual_module
from fadm_lightning.metrics.perceptual import STLPIPS
from fadm_lightning.train import train

NEW_KEYS = [
    f"test/{name}_{kind}"
    for name in ("stlpips", "tdiff", "flicker")
    for kind in ("coarse", "refined")
]


def test_test_stage_reports_stlpips_and_temporal_consistency(compose_train, capsys):
    # one training step, a checkpoint, then the test stage on the held-out clip (4 frames)
    cfg = compose_train("++trainer.max_steps=1", "++trainer.limit_val_batches=0")
    HydraConfig().set_config(cfg)
    result = train(cfg)
    metrics = result["metrics"]
    for key in NEW_KEYS + ["test/l1_coarse", "test/l1_refined"]:
        assert key in metrics, key
        assert torch.isfinite(torch.tensor(metrics[key])), key
    for kind in ("coarse", "refined"):
        assert 0 < metrics[f"test/stlpips_{kind}"] < 1
        assert metrics[f"test/tdiff_{kind}"] > 0
    # validation never builds the metric network (none ran here); the checkpoint holds only
    # the trainable parts, never the perceptual network
    ckpt = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=True)
    assert not any(
        "perceptual" in k or "stlpips" in k or k.startswith(("lin0", "net.slice", "scaling_layer"))
        for k in ckpt["state_dict"]
    )
    assert {k.split(".")[0] for k in ckpt["state_dict"]} <= {"agcn", "unet"}

    out = capsys.readouterr().out
    table = out[out.index("| frames |") :]
    header = table.splitlines()[0]
    assert header.startswith("| frames | L1 ↓ | PSNR ↑ | SSIM ↑ | ST-LPIPS[alex] ↓ | tdiff ↓")
    assert "| coarse |" in table and "| refined |" in table
    assert f"{metrics['test/tdiff_refined']:.4f}" in table


def test_table_labels_are_the_metrics_own():
    assert KNOWN_COLUMNS["stlpips"].label == STLPIPS.label == "ST-LPIPS[alex]"
    table = format_table(
        {
            "test/l1_coarse": 0.05,
            "test/psnr_coarse": 25.0,
            "test/ssim_coarse": 0.9,
            "test/stlpips_coarse": 0.12,
            "test/tdiff_coarse": 0.011,
            "test/l1_refined": 0.04,
            "test/psnr_refined": 26.0,
            "test/ssim_refined": 0.92,
            "test/stlpips_refined": 0.1,
            "test/tdiff_refined": 0.013,
        }
    )
    lines = table.splitlines()
    assert lines[0] == "| frames | L1 ↓ | PSNR ↑ | SSIM ↑ | ST-LPIPS[alex] ↓ | tdiff ↓ |"
    assert lines[2] == "| coarse | 0.0500 | 25.00 | 0.9000 | 0.1200 | 0.0110 |"
    assert lines[3] == "| refined | 0.0400 | 26.00 | 0.9200 | 0.1000 | 0.0130 |"
    # without the new metrics: the old table, unchanged
    old = format_table({"test/l1_coarse": 0.05, "test/psnr_coarse": 25.0, "test/ssim_coarse": 0.9})
    assert old.splitlines()[0] == "| frames | L1 ↓ | PSNR ↑ | SSIM ↑ |"


@pytest.fixture
def module(compose_train):
    cfg = compose_train()
    coarse, attributes = instantiate(cfg.coarse), instantiate(cfg.attributes)
    return instantiate(cfg.model, coarse=coarse, attributes=attributes)


@pytest.fixture
def lightning_log(caplog):
    # lightning's logger stops propagating to the root logger when it was imported first
    logger = logging.getLogger("lightning.pytorch")
    attach = not logger.propagate
    if attach:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    if attach:
        logger.removeHandler(caplog.handler)


def _clip(frames: int = 4, size: int = 32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    video = torch.rand(frames, 3, size, size)
    return video, {"coarse": video.roll(1, -1), "refined": (video + 0.05).clamp(0, 1)}


def test_metric_network_is_built_once_frozen_and_outside_the_state_dict(module, lightning_log):
    keys = set(module.state_dict())
    video, pred = _clip()
    module._update_clip_metrics(pred, video)
    net = module._perceptual.net
    module._update_clip_metrics(pred, video)
    assert module._perceptual.net is net  # built once
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert set(module.state_dict()) == keys
    assert not any(p is q for p in net.parameters() for q in module.parameters())
    assert module.eval_metrics["test_stlpips_refined"].update_called
    assert not module.eval_metrics["val_l1_refined"].update_called
    messages = [r.getMessage() for r in lightning_log.records if "ST-LPIPS" in r.getMessage()]
    assert len(messages) == 1 and "stlpips-pytorch" in messages[0]


def test_unavailable_stlpips_is_skipped_and_said_once(module, lightning_log, monkeypatch):
    monkeypatch.setattr(perceptual_module, "stlpips_weights_file", lambda: None)
    video, pred = _clip()
    for _ in range(3):
        module._update_clip_metrics(pred, video)
    assert not module.eval_metrics["test_stlpips_coarse"].update_called
    assert module.eval_metrics["test_tdiff_coarse"].update_called
    messages = [r.getMessage() for r in lightning_log.records if "ST-LPIPS" in r.getMessage()]
    assert len(messages) == 1
    assert "skipped" in messages[0] and "pip install stlpips-pytorch" in messages[0]


def test_frames_below_the_networks_minimum_skip_stlpips_once(module, lightning_log):
    video, pred = _clip(size=16)
    module._update_clip_metrics(pred, video)
    module._update_clip_metrics(pred, video)
    assert not module.eval_metrics["test_stlpips_refined"].update_called
    assert module.eval_metrics["test_tdiff_refined"].update_called
    skipped = [r.getMessage() for r in lightning_log.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "minimum" in skipped[0]


def test_evaluate_offers_stlpips(compose_train, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from fadm_lightning.evaluation import evaluate

    from ..conftest import CONFIG_DIR

    cfg = compose_train("++trainer.max_steps=1", "++trainer.limit_val_batches=0", "test=false")
    HydraConfig().set_config(cfg)
    ckpt = train(cfg)["last_checkpoint"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        eval_cfg = compose(
            config_name="evaluate",
            return_hydra_config=True,
            overrides=[
                f"ckpt={ckpt}",
                "sampler=official",
                "sampler.steps=2",
                "max_items=1",
                "metrics.reconstruction=[l1,stlpips]",
            ],
        )
    with open_dict(eval_cfg):
        eval_cfg.paths.root_dir = str(tmp_path)
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
        eval_cfg.hydra.runtime.output_dir = eval_cfg.paths.output_dir
    result = evaluate(eval_cfg)
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "ST-LPIPS[alex] ↓" in table and "unavailable" not in table
    assert "ST-LPIPS[alex]: shift-tolerant LPIPS" in table  # the note names the network
    assert result["evaluated_now"] == 1
