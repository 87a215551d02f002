"""What the default (offline) W&B run of a training, and of an evaluation, contains: the sample
grid as the same picture as ``samples/step_*.png`` (not black), the test metrics, the
coarse-vs-refined table, and playable mp4 videos. Read back from the offline run directory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from ..conftest import TEST_THREADS, TINY_OVERRIDES

# the tiny CPU run of the other integration tests, with the default logger (W&B, offline)
WANDB_TINY = [o for o in TINY_OVERRIDES if o != "~logger"] + [
    "logger=wandb",
    "++data.test_frame_stride=1",
    "num_threads=1",
]
TEST_FRAMES = 4  # data.test_max_frames of TINY_OVERRIDES (8-frame clips, stride 1)
SIZE = 32  # data.image_size


def _run(module: str, args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FADM_CACHE_DIR": str(cache),
        "FADM_ROOT": str(cwd),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": str(TEST_THREADS),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _offline_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _wandb_records(run: Path):
    """The records of an offline run's ``run-*.wandb`` file (a LevelDB-style log of protobuf
    ``Record``s: 7-byte file header, 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:  # zero padding
            continue
        if kind in (1, 4):  # full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload if kind == 4 else payload)
            pending = b""
            yield record
        else:  # first or middle piece
            pending = payload if kind == 2 else pending + payload


def _history_and_summary(run: Path) -> tuple[dict[str, list], dict[str, object]]:
    """Every history value of each top-level key (in order), and the final summary; media values
    (``{"_type": …, …}``) as nested dicts."""
    history: dict[str, list] = {}
    summary: dict[str, object] = {}
    for record in _wandb_records(run):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, object] = {}
            for item in record.history.item:
                _put(row, [item.key] if item.key else list(item.nested_key), item.value_json)
            for key, value in row.items():
                history.setdefault(key, []).append(value)
        elif kind == "summary":
            for item in record.summary.update:
                _put(summary, [item.key] if item.key else list(item.nested_key), item.value_json)
    return history, summary


def _put(target: dict, path: list[str], value_json: str) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = json.loads(value_json)


def _decode(path: Path) -> tuple[list[np.ndarray], object]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context


def _assert_playable(codec) -> None:
    # H.264 yuv420p: what browsers (and so the W&B page) play; "High 4:4:4" is not played
    assert codec.name == "h264" and codec.pix_fmt == "yuv420p", (codec.name, codec.pix_fmt)
    assert "4:4:4" not in str(codec.profile)


@pytest.fixture(scope="module")
def wandb_training(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny training run (2 steps, validation, test) with the default offline W&B logger."""
    root = tmp_path_factory.mktemp("wandb_train")
    run_dir = root / "run"
    proc = _run(
        "fadm_lightning.train",
        [*WANDB_TINY, "++trainer.max_steps=2", f"hydra.run.dir={run_dir}"],
        root,
        root / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_logged_sample_grid_is_the_png_picture_not_black(wandb_training):
    run_dir, _ = wandb_training
    (png,) = sorted((run_dir / "samples").glob("step_*.png"))
    media = sorted((_offline_run(run_dir) / "files" / "media" / "images").rglob("*.png"))
    assert len(media) == 1, media
    expected = np.asarray(Image.open(png).convert("RGB")).astype(int)
    logged = np.asarray(Image.open(media[0]).convert("RGB")).astype(int)
    assert logged.shape == expected.shape
    assert np.abs(logged - expected).max() <= 1  # the same picture (≤ 1 level of rounding)
    assert logged.mean() > 20 and logged.std() > 10  # faces, not a black (0/1-valued) picture


def test_test_metrics_table_and_video_are_in_the_wandb_run(wandb_training):
    run_dir, proc = wandb_training
    run = _offline_run(run_dir)
    history, summary = _history_and_summary(run)

    # the test metrics logged by the LightningModule: in the history and the summary
    test_metrics = {
        k: v
        for k, v in summary.items()
        if k.startswith("test/") and k.endswith(("_coarse", "_refined"))
    }
    for key in ("l1", "psnr", "ssim"):
        for kind in ("coarse", "refined"):
            assert f"test/{key}_{kind}" in test_metrics, (key, kind)
            assert history[f"test/{key}_{kind}"] == [summary[f"test/{key}_{kind}"]]

    # the coarse-vs-refined table: rows coarse, refined; a column per test/<metric>_<row>
    tables = sorted((run / "files" / "media" / "table").rglob("*.table.json"))
    assert len(tables) == 1, tables
    table = json.loads(tables[0].read_text())
    assert table["columns"][:4] == ["frames", "L1", "PSNR", "SSIM"]
    metric_names = {k[len("test/") :].rsplit("_", 1)[0] for k in test_metrics}
    assert len(table["columns"]) == 1 + len(metric_names)
    rows = {row[0]: dict(zip(table["columns"][1:], row[1:], strict=True)) for row in table["data"]}
    assert list(rows) == ["copy source", "coarse", "refined"]  # the trivial baseline first
    for row_name, row in rows.items():
        kind = {"copy source": "copy"}.get(row_name, row_name)
        for name, label in (("l1", "L1"), ("psnr", "PSNR"), ("ssim", "SSIM")):
            assert row[label] == pytest.approx(summary[f"test/{name}_{kind}"], rel=1e-6)
    assert summary["test/table"]["_type"] == "table-file"
    # ... and the same numbers as the table printed at the end of the run
    assert f"| coarse | {rows['coarse']['L1']:.4f} | {rows['coarse']['PSNR']:.2f} |" in proc.stdout

    # the first test clip side by side (truth | coarse | refined): the run dir's mp4 and W&B's
    (local,) = sorted((run_dir / "videos").glob("test_*.mp4"))
    videos = sorted((run / "files" / "media" / "videos").rglob("*.mp4"))
    assert len(videos) == 1, videos
    assert videos[0].read_bytes() == local.read_bytes()
    frames, codec = _decode(videos[0])
    assert len(frames) == TEST_FRAMES
    assert frames[0].shape == (SIZE, 3 * SIZE, 3)
    _assert_playable(codec)
    truth = frames[0][:, :SIZE].astype(float)
    assert truth.mean() > 20 and truth.std() > 10  # a face, not a black frame
    assert summary["test/videos"]["_type"] == "videos"


def test_evaluation_logs_playable_videos(wandb_training):
    run_dir, _ = wandb_training
    eval_dir = run_dir.parent / "eval"
    proc = _run(
        "fadm_lightning.evaluate",
        [
            f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
            "sampler=official",
            "sampler.steps=2",
            "metrics.reconstruction=[l1,psnr,ssim]",
            "batch_size=4",
            "num_threads=1",
            "max_items=1",
            "videos.count=1",
            "logger=wandb",
            f"hydra.run.dir={eval_dir}",
        ],
        run_dir.parent,
        run_dir.parent / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    media = _offline_run(eval_dir) / "files" / "media"
    videos = sorted(media.glob("videos/reconstruction/samples_*.mp4"))
    assert len(videos) == 1, videos
    frames, codec = _decode(videos[0])
    assert len(frames) == TEST_FRAMES and frames[0].shape == (SIZE, 3 * SIZE, 3)
    _assert_playable(codec)
    _, summary = _history_and_summary(_offline_run(eval_dir))
    (logged,) = summary["reconstruction/samples"]["videos"]
    assert logged["_type"] == "video-file" and logged["path"].endswith(".mp4")
