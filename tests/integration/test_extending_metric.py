"""docs/extending.md, "Add a metric", done as a user would: one module with a Metric class, one
YAML entry in a config of the ``metrics`` group outside the package (``hydra.searchpath``), no
edit of the project. The training command logs the metric in its validation and test stages,
and evaluate shows it as a column of its table."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from ..conftest import CONFIG_DIR, TINY_OVERRIDES, plugin_env

TOY_MODULE = '''
"""A toy metric: the mean brightness of the output minus that of the reference, per frame."""

import torch

from fadm_lightning.metrics.registry import Metric


class Brightness(Metric):
    name = "Brightness"
    higher_is_better = None  # signed: no better direction
    description = "mean output − mean reference, per frame, × scale (a toy)"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def frames(self, pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.scale * (pred.float().mean(dim=(1, 2, 3)) - reference.float().mean(dim=(1, 2, 3)))
'''

TOY_CONFIG = """
# metrics=with_toy: the default metrics and the toy one
defaults:
  - default
  - _self_

registry:
  toy: {_target_: toy_metric.Brightness, scale: 100.0}
validation: [l1, psnr, ssim, toy]
test: [l1, psnr, ssim, toy, tdiff]
reconstruction: [l1, toy]
"""


@pytest.fixture
def plugin(tmp_path: Path) -> tuple[Path, Path]:
    """(the folder to put on PYTHONPATH, the config folder for hydra.searchpath)."""
    code, conf = tmp_path / "plugin", tmp_path / "plugin_conf"
    (conf / "metrics").mkdir(parents=True)
    code.mkdir()
    (code / "toy_metric.py").write_text(textwrap.dedent(TOY_MODULE))
    (conf / "metrics" / "with_toy.yaml").write_text(TOY_CONFIG)
    return code, conf


def _logged(csv_dir: Path) -> dict[str, float]:
    """The last value of every metric of a CSVLogger run."""
    values: dict[str, float] = {}
    (path,) = csv_dir.glob("version_*/metrics.csv")
    with path.open() as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def test_a_metric_added_by_config_is_trained_tested_and_evaluated(
    plugin, tmp_path, shared_cache, monkeypatch
):
    code, conf = plugin
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY_OVERRIDES if o != "~logger"]
    env = plugin_env(code, shared_cache, tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fadm_lightning.train",
            *overrides,
            "logger=csv",
            f"hydra.searchpath=[file://{conf}]",
            "metrics=with_toy",
            "++trainer.limit_train_batches=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = _logged(run_dir / "csv")
    for key in ("val/toy_coarse", "val/toy_refined", "test/toy_copy", "test/toy_refined"):
        assert key in logged, (key, sorted(logged))
    # the usual figures are still there, under their usual names
    for key in ("val/psnr_refined", "test/l1_coarse", "test/tdiff_refined"):
        assert key in logged, key
    assert "val/toy_copy" not in logged  # validation scores coarse and refined only

    # evaluate: the same metric, a column of the table, from the same config
    monkeypatch.syspath_prepend(str(code))
    from fadm_lightning.evaluation import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            return_hydra_config=True,
            overrides=[
                f"hydra.searchpath=[file://{conf}]",
                "metrics=with_toy",
                f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
                "sampler.steps=2",
                "max_items=1",
                "videos.count=0",
            ],
        )
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.cache_dir = str(shared_cache)
        cfg.paths.output_dir = str(tmp_path / "eval")
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir
    result = evaluate(cfg)
    table = (tmp_path / "eval" / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")][2:] == ["L1 ↓", "Brightness"]
    assert "Brightness: mean output − mean reference" in table  # the note, from the class
    for row in result["table"]:  # coarse and refined: a value each
        assert row["values"]["toy"] is not None and row["counts"]["toy"] > 0, row
