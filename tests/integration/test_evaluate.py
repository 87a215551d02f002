"""The evaluation command on a tiny trained synthetic checkpoint (CPU): tables, per-clip CSV,
videos, resuming, both protocols, and the Table-3 multirun chain (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fadm_lightning.evaluation import EvaluationError, evaluate
from fadm_lightning.media.video import read_frames
from fadm_lightning.train import train

from ..conftest import CONFIG_DIR, TINY_OVERRIDES

# two test people so that cross-identity pairs exist
TWO_PEOPLE = "data.generator.num_test_ids=2"
FAST = [
    "sampler=official",  # the official sampler at 2 steps
    "sampler.steps=2",
    "metrics.face.cnn_fallback=false",
    "batch_size=3",
]


def _compose(name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, return_hydra_config=True, overrides=overrides)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 1-step checkpoint of the tiny synthetic model (shared by this module's tests)."""
    root = tmp_path_factory.mktemp("tiny_train")
    torch.set_num_threads(1)
    cfg = _compose(
        "train",
        [
            *TINY_OVERRIDES,
            TWO_PEOPLE,
            "++trainer.max_steps=1",
            "++trainer.limit_val_batches=0",
            "test=false",
        ],
    )
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.cache_dir = str(root / "cache")
        cfg.paths.output_dir = str(root / "run")
        cfg.hydra.runtime.output_dir = str(root / "run")
    HydraConfig().set_config(cfg)
    result = train(cfg)
    GlobalHydra.instance().clear()
    return Path(result["last_checkpoint"])


@pytest.fixture
def compose_evaluate(tmp_path):
    def _compose_eval(*overrides: str, out: Path | None = None) -> DictConfig:
        cfg = _compose("evaluate", [*FAST, *overrides])
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.output_dir = str(out or tmp_path / "eval")
            cfg.hydra.runtime.output_dir = cfg.paths.output_dir
        return cfg

    yield _compose_eval
    GlobalHydra.instance().clear()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_reconstruction_writes_tables_per_clip_csv_and_videos_and_resumes(
    tiny_checkpoint, compose_evaluate, tmp_path
):
    # first only one of the two test clips (as if interrupted), then all: the first is skipped
    first = evaluate(compose_evaluate(f"ckpt={tiny_checkpoint}", "max_items=1"))
    assert first["evaluated_now"] == 1 and first["skipped"] == 0
    result = evaluate(compose_evaluate(f"ckpt={tiny_checkpoint}"))
    assert result["evaluated_now"] == 1 and result["skipped"] == 1
    out = Path(result["output_dir"])

    table = (out / "table.md").read_text()
    assert "Same-identity reconstruction (paper Table 1)" in table
    for label in (
        "L1 ↓",
        "LPIPS[alex] ↓",
        "PSNR ↑",
        "SSIM ↑",
        "AKD[dlib-68] ↓",
        "AED[dlib-resnet] ↓",
    ):
        assert label in table, label
    assert "| coarse |" in table and "| refined |" in table
    # no AlexNet weights here: LPIPS is unavailable, with the reason, never a number
    assert "| unavailable |" in table and "metrics.lpips_alexnet" in table
    csv_table = _rows(out / "table.csv")
    assert [r["method"] for r in csv_table] == ["coarse", "refined"]
    assert all(r["LPIPS[alex]"] == "unavailable" for r in csv_table)
    assert 0 <= float(csv_table[0]["L1"]) <= 1 and float(csv_table[0]["PSNR"]) > 0

    per_clip = _rows(out / "per_clip.csv")
    assert len(per_clip) == 4 and {r["system"] for r in per_clip} == {"coarse", "refined"}
    assert len({r["item"] for r in per_clip}) == 2
    assert all(int(r["frames"]) == 4 and r["n_l1"] == "4" for r in per_clip)

    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == 2
    frames = read_frames(videos[0])
    assert frames.shape == (4, 32, 3 * 32, 3)  # driving | coarse | refined

    results = json.loads((out / "results.json").read_text())
    assert results["columns"][1] == {
        "key": "lpips",
        "label": "LPIPS[alex]",
        "higher_is_better": False,
        "available": False,
        "reason": results["columns"][1]["reason"],
    }
    # a third run skips everything and gives the same table
    again = evaluate(compose_evaluate(f"ckpt={tiny_checkpoint}"))
    assert again["evaluated_now"] == 0 and again["skipped"] == 2
    assert (out / "table.md").read_text() == table
    # resuming with other settings is refused
    with pytest.raises(EvaluationError, match="sampler"):
        evaluate(compose_evaluate(f"ckpt={tiny_checkpoint}", "sampler.steps=3"))


def test_cross_identity_pairs_fid_csim_and_an_extra_checkpoint_row(
    tiny_checkpoint, compose_evaluate
):
    result = evaluate(
        compose_evaluate(
            f"ckpt={tiny_checkpoint}",
            "protocol=cross_identity",
            "pairs.num_sources=2",
            "pairs.num_driving=1",
            f"extra_ckpts={{same_weights:'{tiny_checkpoint}'}}",
            "videos.count=1",
            "ckpt_overrides=['data.test_max_frames=2']",
        )
    )
    out = Path(result["output_dir"])
    pairs = _rows(out / "pairs.csv")
    assert len(pairs) == 2 and all(
        p["source"].split("#")[0] != p["driving"].split("#")[0] for p in pairs
    )
    table = (out / "table.md").read_text()
    assert "Cross-identity reenactment (paper Table 2)" in table
    assert "FID[inception-2015-12-05] ↓" in table and "CSIM[dlib-resnet] ↑" in table
    rows = {r["method"]: r for r in _rows(out / "table.csv")}
    assert list(rows) == ["coarse", "refined", "refined[same_weights]"]
    # the extra row is the same checkpoint: the same frames, the same numbers
    assert (
        rows["refined"]["FID[inception-2015-12-05]"]
        == rows["refined[same_weights]"]["FID[inception-2015-12-05]"]
    )
    frames = read_frames(next((out / "videos").glob("*.mp4")))
    assert frames.shape[2] == 5 * 32  # source | driving | coarse | refined | extra


def test_protocol_face_networks_without_their_files_are_reported_unavailable(
    tiny_checkpoint, compose_evaluate, capsys
):
    # FAN / OpenFace / ArcFace chosen, their files absent (paths.pretrained_dir is empty here)
    result = evaluate(
        compose_evaluate(
            f"ckpt={tiny_checkpoint}",
            "metrics.reconstruction=[l1,akd,aed,csim]",
            "metrics.landmarks=fan",
            "metrics.identity_aed=openface",
            "metrics.identity_csim=arcface",
            "max_items=1",
            "videos.count=0",
        )
    )
    printed = capsys.readouterr().out
    out = Path(result["output_dir"])
    table = (out / "table.md").read_text()
    assert table in printed
    for label in ("AKD[fan-2d] ↓", "AED[openface-nn4.small2] ↓", "CSIM[arcface-r100] ↑"):
        assert label in table, label
    assert "- AED[openface-nn4.small2]: unavailable — needs" in table
    assert str(out.parent / "checkpoints" / "pretrained" / "openface" / "openface.pth") in table
    assert "arcface/backbone.pth" in table
    rows = _rows(out / "table.csv")
    for row in rows:
        assert row["AKD[fan-2d]"] == row["AED[openface-nn4.small2]"] == "unavailable"
        assert row["CSIM[arcface-r100]"] == "unavailable" and 0 <= float(row["L1"]) <= 1
    columns = {c["key"]: c for c in json.loads((out / "results.json").read_text())["columns"]}
    assert not columns["csim"]["available"] and "backbone.pth" in columns["csim"]["reason"]
    with pytest.raises(EvaluationError, match="metrics.landmarks='hrnet'"):
        evaluate(compose_evaluate(f"ckpt={tiny_checkpoint}", "metrics.landmarks=hrnet"))


def test_configuration_errors_say_what_to_change(tiny_checkpoint, compose_evaluate):
    with pytest.raises(EvaluationError, match="ground-truth"):
        evaluate(
            compose_evaluate(
                f"ckpt={tiny_checkpoint}",
                "protocol=cross_identity",
                "metrics.cross_identity=[l1,csim]",
            )
        )
    with pytest.raises(EvaluationError, match="ckpt="):
        evaluate(compose_evaluate())
    from fadm_lightning.models.official import OfficialReleaseMissingError

    with pytest.raises(OfficialReleaseMissingError, match="diffusion"):
        evaluate(compose_evaluate("model=fadm_official_release", "data=voxceleb"))


def _cli(module: str, args: list[str], cwd: Path, timeout: int = 900):
    flags = [a for a in args if a in ("-m", "--multirun")]
    env = {
        **os.environ,
        "FADM_ROOT": str(cwd),
        "FADM_CACHE_DIR": str(cwd / "cache"),
        "WANDB_MODE": "offline",
    }
    return subprocess.run(
        [sys.executable, "-m", module, *flags, *[a for a in args if a not in flags]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_evaluates_a_checkpoint_into_its_run_dir_and_wandb(tiny_checkpoint, tmp_path):
    run_dir = tmp_path / "cli"
    proc = _cli(
        "fadm_lightning.evaluate",
        [
            f"ckpt={tiny_checkpoint}",
            *FAST,
            "num_threads=1",
            "max_items=1",
            "logger=wandb",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| refined |" in proc.stdout
    for name in ("table.md", "table.csv", "per_clip.csv", "results.json", "evaluate.log"):
        assert (run_dir / name).is_file(), name
    # the table, the per-clip rows and the sample video in the offline W&B run
    media = run_dir / "wandb" / "latest-run" / "files" / "media"
    assert list(media.glob("table/reconstruction/table_*.table.json"))
    assert list(media.glob("table/reconstruction/per_clip_*.table.json"))
    assert list(media.glob("videos/reconstruction/samples_*.mp4"))


@pytest.mark.slow
def test_ablation_multirun_train_evaluate_and_report(tmp_path):
    """Table 3 on CPU: four AGCN variants trained with -m, evaluated with -m, gathered."""
    train_dir = tmp_path / "train_sweep"
    proc = _cli(
        "fadm_lightning.train",
        [
            "-m",
            *TINY_OVERRIDES,
            "++trainer.max_steps=1",
            "++trainer.limit_val_batches=0",
            "test=false",
            "model.agcn.use_appearance=true,false",
            "model.agcn.use_motion_weighting=true,false",
            f"hydra.sweep.dir={train_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = [train_dir / str(i) / "checkpoints" / "last.ckpt" for i in range(4)]
    assert all(c.is_file() for c in ckpts)

    eval_dir = tmp_path / "eval_sweep"
    proc = _cli(
        "fadm_lightning.evaluate",
        [
            "-m",
            f"ckpt={','.join(str(c) for c in ckpts)}",
            *FAST,
            "num_threads=1",
            "metrics.reconstruction=[l1,psnr,ssim]",
            "videos.count=0",
            f"hydra.sweep.dir={eval_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (eval_dir / "report.md").read_text()
    assert "Ablation (paper Table 3)" in report
    for name in (
        "full model",
        "w/o color condition",
        "w/o motion condition",
        "w/o color and motion condition",
        "coarse generator",
    ):
        assert f"| {name} |" in report, name

    # the same from the stand-alone command, to another folder
    proc = _cli(
        "fadm_lightning.report",
        [f"multirun_dir={eval_dir}", f"output={tmp_path / 'report'}"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "report" / "report.csv")
    assert len(rows) == 5 and rows[0]["variant"] == "coarse generator"
    assert {r["model.agcn.use_appearance"] for r in rows[1:]} == {"True", "False"}
