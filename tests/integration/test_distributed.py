"""Work split over several processes gives what one process gives (docs/scaling.md):

* ``evaluate -m ckpt=a,b`` through Hydra's submitit launcher (``submitit_local``: one process per
  checkpoint, started by submitit as on SLURM) and sequentially: the same numbers;
* ``rectify`` / ``animate`` ``batch=…`` as two tasks (``num_tasks=2 task_index=I``, in this process
  and as two concurrent processes) and as one: the same files, byte for byte, and the same summary;
* ``preprocess`` as three submitit jobs and as one process: the same clips, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ..conftest import FIXTURES, TEST_THREADS, TINY_OVERRIDES

pytest.importorskip("submitit", reason="the submitit launcher tests need submitit")
pytest.importorskip("dlib", reason="face crops need dlib")

# Hydra's launcher config of this repository takes its GPUs from the trainer (train.yaml); the
# other commands have no trainer, so the tests give the count
LOCAL_LAUNCHER = ["hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node=0"]


def _cli(
    module: str, args: list[str], cwd: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    flags = [a for a in args if a in ("-m", "--multirun")]
    env = {
        **os.environ,
        "FADM_ROOT": str(cwd),
        "FADM_CACHE_DIR": str(cwd / "cache"),
        "OMP_NUM_THREADS": str(TEST_THREADS),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *flags, *[a for a in args if a not in flags]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _files(folder: Path, hidden: bool = False) -> dict[str, bytes]:
    """Relative path → bytes of every file (hidden folders such as the task records left out)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and (hidden or not any(s.startswith(".") for s in p.relative_to(folder).parts))
    }


# ------------------------------------------------------------------------------ evaluate
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> list[Path]:
    """Two 1-step checkpoints of the tiny synthetic model (seeds 1 and 2)."""
    from fadm_lightning.train import train

    from .test_evaluate import TWO_PEOPLE, _compose

    root = tmp_path_factory.mktemp("two_ckpts")
    torch.set_num_threads(1)
    ckpts = []
    for seed in (1, 2):
        cfg = _compose(
            "train",
            [
                *TINY_OVERRIDES,
                TWO_PEOPLE,
                f"seed={seed}",
                "++trainer.max_steps=1",
                "++trainer.limit_val_batches=0",
                "test=false",
            ],
        )
        with open_dict(cfg):
            cfg.paths.root_dir = str(root)
            cfg.paths.cache_dir = str(root / "cache")
            cfg.paths.output_dir = str(root / f"run{seed}")
            cfg.hydra.runtime.output_dir = str(root / f"run{seed}")
        HydraConfig().set_config(cfg)
        ckpts.append(Path(train(cfg)["last_checkpoint"]))
        GlobalHydra.instance().clear()
    return ckpts


@pytest.mark.slow  # keeps the default suite under 15 min on 2 cores (make test-slow runs it)
def test_evaluate_multirun_on_the_submitit_launcher_gives_the_sequential_numbers(
    two_checkpoints, tmp_path
):
    shutil.copytree(two_checkpoints[0].parents[2] / "cache", tmp_path / "cache")  # the data
    common = [
        "-m",
        f"ckpt={','.join(map(str, two_checkpoints))}",
        "sampler=official",
        "sampler.steps=2",
        "metrics.face.cnn_fallback=false",
        "batch_size=3",
        "num_threads=1",
        "metrics.reconstruction=[l1,psnr,ssim]",
        "videos.count=0",
    ]
    sequential = _cli(
        "fadm_lightning.evaluate", [*common, f"hydra.sweep.dir={tmp_path / 'seq'}"], tmp_path
    )
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    launched = _cli(
        "fadm_lightning.evaluate",
        [*common, *LOCAL_LAUNCHER, f"hydra.sweep.dir={tmp_path / 'sub'}"],
        tmp_path,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert list((tmp_path / "sub" / ".submitit").iterdir())  # the jobs went through submitit

    for job in ("0", "1"):
        seq = json.loads((tmp_path / "seq" / job / "results.json").read_text())
        sub = json.loads((tmp_path / "sub" / job / "results.json").read_text())
        assert [r["method"] for r in sub["rows"]] == ["coarse", "refined"]
        for a, b in zip(seq["rows"], sub["rows"], strict=True):  # all but the timing
            assert (a["method"], a["frames"], a["values"], a["counts"]) == (
                b["method"], b["frames"], b["values"], b["counts"]
            )  # fmt: skip
        assert seq["settings"] == sub["settings"]
    seq_rows = json.loads((tmp_path / "seq" / "0" / "results.json").read_text())["rows"]
    other = json.loads((tmp_path / "seq" / "1" / "results.json").read_text())["rows"]
    assert seq_rows[1]["values"] != other[1]["values"]  # two different checkpoints
    assert (tmp_path / "seq" / "report.csv").read_text() == (
        tmp_path / "sub" / "report.csv"
    ).read_text()


# ------------------------------------------------------------------------------ batch inference
@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 256×256 checkpoint (as the inference tests) and a folder of a portrait and three
    short talking-head videos."""
    import numpy as np
    from PIL import Image

    from .test_inference import TINY_256, render_faces, save_checkpoint, write_video

    root = tmp_path_factory.mktemp("batch")
    ckpt = save_checkpoint(root / "tiny.ckpt", TINY_256)
    folder = root / "inputs"
    folder.mkdir()
    for k in range(3):
        write_video(folder / f"talk{k}.mp4", render_faces(3, seed=10 + k), 25)
    Image.fromarray(np.asarray(render_faces(1, seed=7)[0])).save(folder / "alice.png")
    return ckpt, folder


BATCH_FAST = [
    "sampler.steps=1",
    "sampler.eta=1",
    "sampler.strength=1",
    "sampler.batch_size=3",
    "progress=false",
    "device=cpu",
]


def _summary_without_paths(folder: Path) -> dict:
    summary = json.loads((folder / "inference_summary.json").read_text())
    for result in summary["results"]:
        result["output"] = Path(result["output"]).name
    return summary


def test_rectify_and_animate_batches_split_over_two_tasks_give_the_files_of_one(
    batch_inputs, tmp_path
):
    from .test_inference import run_app

    ckpt, folder = batch_inputs
    for app, extra in (("rectify", []), ("animate", ["mode=absolute", "max_frames=2"])):
        common = [f"batch={folder}", f"ckpt={ckpt}", *extra, *BATCH_FAST]
        one, two = tmp_path / app / "one", tmp_path / app / "two"
        # the tiny FOMM of animate is built with random weights at each load: the same ones
        torch.manual_seed(0)
        assert run_app(app, [*common, f"output_dir={one}"]) == 0
        for index in (1, 0):  # any order; the last to finish writes the summary
            assert not (two / "inference_summary.json").exists()
            torch.manual_seed(0)
            status = run_app(
                app, [*common, f"output_dir={two}", "num_tasks=2", f"task_index={index}"]
            )
            assert status == 0
        outputs = _files(one)
        assert len(outputs) == 1 + 3  # three videos (or pairs) and the summary
        assert _files(two).keys() == outputs.keys()
        for name, content in outputs.items():
            if name.endswith(".mp4"):
                assert _files(two)[name] == content, f"{app}: {name} differs"
        assert _summary_without_paths(two) == _summary_without_paths(one)
        parts = sorted((two / ".fadm_inference" / "tasks").glob("task-*-of-00002.json"))
        jobs = [r["output"] for p in parts for r in json.loads(p.read_text())["results"]]
        assert len(jobs) == len(set(jobs)) == 3  # each job ran once
        # a rerun of one task skips its finished jobs and leaves the summary complete
        assert run_app(app, [*common, f"output_dir={two}", "num_tasks=2", "task_index=0"]) == 0
        summary = json.loads((two / "inference_summary.json").read_text())
        assert summary["jobs"] == 3 and summary["done"] + summary["already_done"] == 3


def test_two_concurrent_rectify_processes_write_the_bytes_of_one(batch_inputs, tmp_path):
    """Separate processes at the same time (the case of SLURM array tasks on one node)."""
    from .test_inference import run_app

    ckpt, folder = batch_inputs
    common = [f"batch={folder}", f"ckpt={ckpt}", *BATCH_FAST]
    assert run_app("rectify", [*common, f"output_dir={tmp_path / 'one'}"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fadm_lightning.rectify",
                *common,
                f"output_dir={tmp_path / 'two'}",
                "num_tasks=2",
            ],
            env={**env, "SLURM_ARRAY_TASK_ID": str(index)},  # as sbatch --array=0-1 sets it
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for index in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    assert _files(tmp_path / "two") == {
        **_files(tmp_path / "one"),
        "inference_summary.json": (tmp_path / "two" / "inference_summary.json").read_bytes(),
    }
    assert _summary_without_paths(tmp_path / "two") == _summary_without_paths(tmp_path / "one")


# ------------------------------------------------------------------------------ preprocess
def test_preprocess_on_the_submitit_launcher_gives_the_clips_of_one_process(tmp_path):
    if not (FIXTURES / "driving.mp4").is_file():
        pytest.skip(f"shared fixture clip not found at {FIXTURES / 'driving.mp4'}")
    from fadm_lightning.data.preprocessing import CropSettings, preprocess

    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "driving.mp4", raw / "a" / "driving.mp4")
    shutil.copyfile(FIXTURES / "source.png", raw / "a" / "source.png")
    (raw / "broken.mp4").write_bytes(b"not a video")
    settings = {"min_frames": 32, "min_size": 200}
    one = preprocess(raw, tmp_path / "one", progress=False, settings=CropSettings(**settings))
    assert one["tubes"]["kept"] == 1 and len(one["broken"]) == 1

    proc = _cli(
        "fadm_lightning.preprocess",
        [
            "-m",
            *LOCAL_LAUNCHER,
            f"input_dir={raw}",
            f"output_dir={tmp_path / 'three'}",
            "progress=false",
            "num_tasks=3",
            "task_index=range(0,3)",
            *(f"{k}={v}" for k, v in settings.items()),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    three = tmp_path / "three"
    logs = "".join(p.read_text() for p in three.glob(".preprocess/multirun/*/.submitit/*/*.out"))
    assert logs.count("Task summary:") == 3 and "All 3 tasks done" in logs
    clips = _files(tmp_path / "one")
    assert _files(three).keys() == clips.keys()
    for name, content in clips.items():
        if name != "preprocess_summary.json":
            assert _files(three)[name] == content, name
    merged = json.loads((three / "preprocess_summary.json").read_text())
    expected = json.loads((tmp_path / "one" / "preprocess_summary.json").read_text())
    assert {**merged, "output_dir": None} == {**expected, "output_dir": None}
    assert [b["file"] for b in merged["broken"]] == ["broken.mp4"]
