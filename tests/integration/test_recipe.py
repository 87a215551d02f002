"""The real-face recipe end to end (``preset=tiny``) on three real talking-head videos of
``../shared/real_faces``: one command from raw videos to the report and a pretrained folder; a
rerun does no work twice; a killed stage resumes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import TEST_THREADS

REPO = Path(__file__).resolve().parents[2]
RAW = REPO.parent / "shared" / "real_faces" / "raw"
# one short video per person: train, validation and test
SPLIT = {"train": ["lp_d20"], "val": ["lp_d0"], "test": ["vr_3"]}


def _recipe(raw: Path, work: Path, split: Path, *extra: str, **popen) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fadm_lightning.recipe",
        f"raw_dir={raw}",
        f"work_dir={work}",
        f"split={split}",
        "preset=tiny",
        "wandb=false",
        *extra,
    ]


def _run(command: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(TEST_THREADS)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    if not all((RAW / f"{p}.mp4").is_file() for persons in SPLIT.values() for p in persons):
        pytest.skip(f"the real talking-head videos are not at {RAW}")
    base = tmp_path_factory.mktemp("recipe_inputs")
    raw = base / "raw"
    raw.mkdir()
    for persons in SPLIT.values():
        for person in persons:
            (raw / f"{person}.mp4").symlink_to(RAW / f"{person}.mp4")
    split = base / "split.json"
    split.write_text(json.dumps(SPLIT))
    return raw, split


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory):
    raw, split = inputs
    work = tmp_path_factory.mktemp("recipe") / "work"
    began = time.perf_counter()
    result = _run(_recipe(raw, work, split))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result, time.perf_counter() - began


def test_raw_videos_to_report_and_pretrained_folder(finished):
    work, result, _ = finished
    # the printed Table 1: rows copy source, coarse, refined; first columns L1, PSNR, SSIM
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[1].startswith("L1") and header[2].startswith("PSNR")
    assert header[3].startswith("SSIM")
    rows = {line.strip("|").split("|")[0].strip(): line for line in lines[2:]}
    assert {"copy source", "coarse", "refined"} <= set(rows)
    for name in ("copy source", "coarse", "refined"):
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        l1, psnr, ssim = (float(c) for c in cells[1:4])
        assert 0 < l1 < 1 and 5 < psnr < 60 and 0 < ssim <= 1
    report = (work / "report.md").read_text()
    assert "Table 1" in report and "Time of each stage" in report
    assert "cross-identity" in report.lower()
    # the folder loads, and the model card carries the chosen sampler
    index = json.loads((work / "pretrained" / "model_index.json").read_text())
    assert index["guide_inputs"] == ["deformed"]
    assert index["sampler"]["steps"] == 1
    # the choices were made on the validation person only
    selection = json.loads((work / "select" / "selection.json").read_text())
    assert selection["chosen"]["variant"] == "warped_source"
    # beside the refined rows, the trivial baselines of the validation table (FOMM has a warp)
    settings = {r["setting"] for r in selection["rows"]}
    assert {"coarse", "copy source", "warped source"} <= settings
    split = json.loads((work / "data" / "split.json").read_text())
    assert split["persons"] == {k: sorted(v) for k, v in SPLIT.items()}
    assert all(name.startswith("vr_3#") for name in split["clips"]["test"])
    # pictures a person would look at: the grid is not black, and the curves exist
    grid = np.asarray(Image.open(work / "pictures" / "sample_grid.png").convert("RGB"))
    assert grid.shape[0] >= 64 * 3 and grid.shape[1] == 64 * 3  # truth | coarse | refined
    assert grid.mean() > 30 and grid.std() > 10
    assert (work / "pictures" / "learning_curves.png").stat().st_size > 10_000
    assert list((work / "eval" / "reconstruction" / "videos").glob("*.mp4"))


def test_rerun_does_no_work_twice(finished, inputs):
    work, _, first_seconds = finished
    raw, split = inputs
    watched = [
        work / "runs" / "coarse" / "fomm_checkpoint.pth.tar",
        *sorted((work / "runs").rglob("*.ckpt")),
        work / "eval" / "reconstruction" / "results.json",
        work / "pretrained" / "model_index.json",
    ]
    before = {p: p.stat().st_mtime_ns for p in watched}
    result = _run(_recipe(raw, work, split))
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("preprocess", "split", "coarse", "refiner", "select", "evaluate", "export"):
        assert f"[recipe] {stage}: done before" in result.stdout
    assert "-m fadm_lightning.train" not in result.stdout  # nothing trained again
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def _copy_until(work: Path, destination: Path, stage: str) -> Path:
    """A copy of the finished work folder as it was before ``stage`` ran."""
    shutil.copytree(work, destination, symlinks=True)
    order = ["preprocess", "split", "coarse", "refiner", "select", "evaluate", "export"]
    for later in order[order.index(stage) :]:
        (destination / "stages" / f"{later}.json").unlink(missing_ok=True)
    (destination / "stages" / "refiner_partial.json").unlink(missing_ok=True)
    return destination


def test_an_interrupted_training_resumes_from_its_last_checkpoint(finished, inputs, tmp_path):
    work, _, _ = finished
    raw, split = inputs
    copy = _copy_until(work, tmp_path / "work", "coarse")
    (copy / "runs" / "coarse" / "fomm_checkpoint.pth.tar").unlink()
    result = _run(_recipe(raw, copy, split, "stages=[coarse]"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[recipe] coarse: resuming from" in result.stdout
    assert "ckpt_path=" in result.stdout
    assert (copy / "runs" / "coarse" / "fomm_checkpoint.pth.tar").is_file()
    assert json.loads((copy / "stages" / "coarse.json").read_text())["resumed"] is True


@pytest.mark.slow  # keeps the default suite under 15 min on 2 cores (make test-slow runs it)
def test_a_killed_stage_completes_on_the_rerun(finished, inputs, tmp_path):
    """SIGKILL the recipe and its training at a random moment of the refiner stage (seeded),
    then rerun: the stage completes and nothing of it is recorded as finished before."""
    work, _, _ = finished
    raw, split = inputs
    copy = _copy_until(work, tmp_path / "work", "refiner")
    shutil.rmtree(copy / "runs" / "refiner_warped_source")
    process = subprocess.Popen(
        _recipe(raw, copy, split, "stages=[refiner]"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    started = copy / "runs" / "refiner_warped_source"
    while not started.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(random.Random(7).uniform(0.5, 8.0))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (copy / "stages" / "refiner.json").exists()
    result = _run(_recipe(raw, copy, split, "stages=[refiner]"))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((copy / "stages" / "refiner.json").read_text())
    best = Path(record["variants"]["warped_source"]["best_checkpoint"])
    assert best.is_file()


def test_bad_inputs_are_one_line_errors(tmp_path):
    missing = tmp_path / "nothing"
    result = _run(
        [
            sys.executable,
            "-m",
            "fadm_lightning.recipe",
            f"raw_dir={missing}",
            f"work_dir={tmp_path / 'w'}",
            "preset=tiny",
        ],
        timeout=120,
    )
    assert result.returncode == 1
    assert f"raw_dir={missing}: no such folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_rectify_of_a_warped_source_model_builds_its_coarse_generator(finished):
    """rectify asks for no coarse generator, but a denoiser that sees the warped source needs
    one: the loader builds it (the training checkpoint and the exported folder alike)."""
    from fadm_lightning.checkpoints import load_pipeline
    from fadm_lightning.models.coarse.fomm import FOMMCoarseGenerator

    work, _, _ = finished
    selection = json.loads((work / "select" / "selection.json").read_text())
    for path in (selection["chosen"]["checkpoint"], work / "pretrained"):
        pipe, _ = load_pipeline(path, need_coarse=False)
        assert isinstance(pipe.coarse, FOMMCoarseGenerator), path
