"""Media conversion shared by files and W&B, the test-video and W&B-table callbacks, and the
results table they share with the summary printed by ``fadm_lightning.train``."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import av
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from torchvision.utils import save_image

from fadm_lightning.callbacks.wandb_report import (
    ReconstructionVideosCallback,
    WandbTestTableCallback,
)
from fadm_lightning.evaluation.tables import format_table, results_table
from fadm_lightning.media.pictures import save_png, side_by_side, to_uint8

METRICS = {
    "test/l1_coarse": 0.04217,
    "test/psnr_coarse": 26.016,
    "test/ssim_coarse": 0.93762,
    "test/l1_refined": 0.05207,
    "test/psnr_refined": 23.972,
    "test/ssim_refined": 0.83542,
    "val/psnr_refined": 24.0,
    "train/loss_step": 1.1,
}


def test_to_uint8_is_the_picture_save_image_writes(tmp_path):
    grid = torch.rand(3, 10, 14)
    grid[0, 0, 0], grid[1, 0, 0] = 1.0, 0.0
    save_image(grid, tmp_path / "tv.png")
    image = to_uint8(grid)
    assert image.dtype == np.uint8 and image.shape == (10, 14, 3)
    assert np.array_equal(image, np.asarray(Image.open(tmp_path / "tv.png")))
    assert np.array_equal(np.asarray(Image.open(save_png(image, tmp_path / "a" / "b.png"))), image)
    # a clip: T×3×H×W → T×H×W×3; out-of-range and NaN values clamped
    clip = torch.stack([grid, grid * 2 - 0.5, torch.full_like(grid, float("nan"))])
    frames = to_uint8(clip)
    assert frames.shape == (3, 10, 14, 3) and np.array_equal(frames[0], image)
    assert frames[2].max() == 0
    with pytest.raises(ValueError, match="3×H×W"):
        to_uint8(torch.rand(4, 10, 14))


def test_side_by_side_repeats_a_one_frame_panel():
    a, b = torch.rand(1, 3, 4, 5), torch.rand(3, 3, 4, 6)
    joined = side_by_side([a, b])
    assert joined.shape == (3, 3, 4, 11)
    assert torch.equal(joined[2, :, :, :5], a[0]) and torch.equal(joined[1, :, :, 5:], b[1])


def test_results_table_prints_as_before_and_takes_any_metric_logged_that_way():
    assert format_table(METRICS) == (
        "| frames | L1 ↓ | PSNR ↑ | SSIM ↑ |\n"
        "|---|---|---|---|\n"
        "| coarse | 0.0422 | 26.02 | 0.9376 |\n"
        "| refined | 0.0521 | 23.97 | 0.8354 |"
    )
    more = {**METRICS, "test/newmetric_x_refined": 0.5, "test/newmetric_x_coarse": 0.25}
    columns, rows = results_table(more)
    assert [c.key for c in columns][:3] == ["l1", "psnr", "ssim"]
    assert columns[-1].key == "newmetric_x" and columns[-1].label == "NEWMETRIC_X"
    assert [label for label, _ in rows] == ["coarse", "refined"]
    assert rows[1][1][-1] == 0.5 and rows[0][1][:3] == [0.04217, 26.016, 0.93762]
    assert "| NEWMETRIC_X |" in format_table(more) and "| 0.2500 |" in format_table(more)
    # a row with no value at all is left out; a missing cell is shown as –
    columns, rows = results_table({"test/l1_refined": 0.1, "test/psnr_coarse": 20.0})
    assert [label for label, _ in rows] == ["coarse", "refined"]
    assert "| refined | 0.1000 | – |" in format_table(
        {"test/l1_refined": 0.1, "test/psnr_coarse": 20.0}
    )


def _trainer(tmp_path, loggers, metrics=None):
    return SimpleNamespace(
        loggers=loggers,
        callback_metrics={k: torch.tensor(v) for k, v in (metrics or {}).items()},
        global_step=7,
        default_root_dir=str(tmp_path),
    )


def test_wandb_table_callback_logs_the_table_and_does_nothing_without_wandb(tmp_path):
    callback = WandbTestTableCallback()
    csv = MagicMock(spec=CSVLogger)
    callback.on_test_end(_trainer(tmp_path, [csv], METRICS), None)  # no W&B: nothing
    assert csv.method_calls == []

    wandb = MagicMock(spec=WandbLogger)
    callback.on_test_end(_trainer(tmp_path, [csv, wandb], METRICS), None)
    wandb.log_table.assert_called_once()
    args, kwargs = wandb.log_table.call_args
    assert args == ("test/table",) and kwargs["step"] == 7
    assert kwargs["columns"] == ["frames", "L1", "PSNR", "SSIM"]
    assert [row[0] for row in kwargs["data"]] == ["coarse", "refined"]
    assert kwargs["data"][1][2] == pytest.approx(23.972)
    assert csv.method_calls == []


def test_test_videos_callback_writes_playable_side_by_side_mp4s_and_logs_them(tmp_path):
    callback = ReconstructionVideosCallback(dirpath=str(tmp_path / "videos"), num_videos=1, fps=10)
    wandb = MagicMock(spec=WandbLogger)
    trainer = _trainer(tmp_path, [wandb])
    ramp = torch.linspace(0, 1, 18).expand(5, 3, 16, 18)  # smooth pictures: little coding loss
    shades = {"video": 0.0, "coarse": 0.3, "refined": 0.6}
    clip = {k: (ramp * 0.4 + v).clamp(0, 1) for k, v in shades.items()}
    callback.on_test_start(trainer, None)
    callback.on_test_batch_end(trainer, None, {"l1": torch.tensor(0.1)}, {}, 0)  # not FADM's
    assert callback.video_paths == []
    callback.on_test_batch_end(trainer, None, clip, {"name": ["id01#clip 2.mp4"]}, 0)
    callback.on_test_batch_end(trainer, None, clip, {"name": ["other"]}, 1)  # only the first
    (path,) = callback.video_paths
    assert path == tmp_path / "videos" / "test_id01_clip_2.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert len(frames) == 5 and frames[0].shape == (16, 3 * 18, 3)
    expected = to_uint8(side_by_side([clip[k] for k in ("video", "coarse", "refined")]))
    assert np.abs(frames[0].astype(int) - expected[0]).mean() < 3  # H.264: close, not exact
    callback.on_test_end(trainer, None)
    args, kwargs = wandb.log_video.call_args
    assert args == ("test/videos", [str(path)]) and kwargs["format"] == ["mp4"]
    assert kwargs["caption"] == ["id01_clip_2: ground truth | coarse | refined"]
