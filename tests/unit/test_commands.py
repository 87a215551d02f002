"""Every command is a Hydra app made by the one entry helper, ``config.hydra_main``: the
commands of the package (``python -m fadm_lightning.<command>``) and the benchmarks
(``python -m fadm_lightning.benchmarks.<name>``) take ``key=value`` overrides alike."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from fadm_lightning.config import compose_config, quote

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "fadm_lightning"
COMMANDS = [
    "train", "evaluate", "animate", "rectify", "app", "export", "convert_release",
    "preprocess", "shard", "report", "recipe",
]  # fmt: skip
BENCHMARKS = ["data", "distill", "gpu", "inference", "sampling", "speed", "train_step"]
MODULES = [*COMMANDS, *(f"benchmarks.{name}" for name in BENCHMARKS)]
#: what only the entry helper does: an entry module doing it re-implements the helper
HELPER_ONLY = {
    "argparse": re.compile(r"^\s*(import argparse|from argparse )|ArgumentParser\(", re.M),
    "hydra.main": re.compile(r"\bhydra\.main\(|^from hydra import main", re.M),
    "sys.argv": re.compile(r"\bsys\.argv\b"),
    "run_command": re.compile(r"\brun_command\("),
    "exit status": re.compile(r"SystemExit\(status\)|sys\.exit\((code|status)\)"),
}
#: … and in ``main`` itself (a library function such as ``train.train`` may set its threads)
MAIN_HELPER_ONLY = {"threads": re.compile(r"set_num_threads\(")}


def _source(module: str) -> str:
    return (PACKAGE / f"{module.replace('.', '/')}.py").read_text()


def test_the_list_of_commands_is_complete():
    """Every module that runs as ``python -m`` is in the lists above."""
    found = {
        str(path.relative_to(PACKAGE).with_suffix("")).replace(os.sep, ".")
        for path in PACKAGE.rglob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    }
    assert found == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_every_command_is_made_by_the_entry_helper(module):
    source = _source(module)
    tree = ast.parse(source)
    decorated = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and node.name == "main"
        and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", None) == "hydra_main"
            for d in node.decorator_list
        )
    ]
    assert decorated, f"{module}: main is not decorated with @hydra_main(...)"
    assert source.rstrip().endswith('if __name__ == "__main__":\n    main()'), module
    for what, pattern in HELPER_ONLY.items():
        assert not pattern.search(source), f"{module} re-implements the entry helper: {what}"
    body = ast.get_source_segment(source, decorated[0])
    for what, pattern in MAIN_HELPER_ONLY.items():
        assert not pattern.search(body), f"{module}: main re-implements the entry helper: {what}"


@pytest.mark.parametrize("module", MODULES)
def test_every_command_config_composes(module):
    main = importlib.import_module(f"fadm_lightning.{module}").main
    name = main.config_name
    expected = f"benchmark/{module.split('.')[1]}" if module.startswith("benchmarks.") else module
    assert name == expected
    cfg = compose_config(name, return_hydra_config=True)
    assert isinstance(cfg, DictConfig) and set(cfg) - {"hydra"}
    if module.startswith("benchmarks."):  # nothing in outputs/ of the current folder
        assert cfg.hydra.output_subdir is None and cfg.hydra.run.dir == "."
        assert cfg.hydra.job_logging.handlers.keys() == {"console"}


def test_benchmark_lists_take_hydra_overrides():
    cfg = compose_config(
        "benchmark/sampling",
        [
            f"ckpt={quote('logs/run/checkpoints/epoch=3-step=9.ckpt')}",
            "samplers=[official,1:0:1:clip,4:0:1:clip]",
            f"overrides=[{quote('data.generator.num_val_ids=4')}]",
        ],
    )
    assert cfg.ckpt == "logs/run/checkpoints/epoch=3-step=9.ckpt"
    assert list(cfg.samplers) == ["official", "1:0:1:clip", "4:0:1:clip"]
    assert list(cfg.overrides) == ["data.generator.num_val_ids=4"]
    speed = compose_config("benchmark/speed", ["rows=[fastest]", "batch_sizes=[1]", "frames=8"])
    assert list(speed.rows) == ["fastest"] and list(speed.batch_sizes) == [1]


def test_the_speed_options_keep_their_defaults():
    from fadm_lightning.benchmarks import speed
    from fadm_lightning.benchmarks.engineering import FASTEST_ENGINEERING

    options = speed.options_from_config(compose_config("benchmark/speed"))
    assert (options.frames, options.batch_sizes, options.device) == (8, [1, 8], "auto")
    assert options.fastest == FASTEST_ENGINEERING and options.rows is None
    tiny = speed.options_from_config(compose_config("benchmark/speed", ["tiny=true"]))
    assert (tiny.frames, tiny.batch_sizes) == (2, [1, 2])
    fastest = compose_config("benchmark/speed", ["fastest=[bf16,channels_last,threads:2]"])
    assert speed.options_from_config(fastest).fastest == {
        "precision": "bf16",
        "channels_last": True,
        "compile": False,
        "threads": 2,
    }


@pytest.mark.parametrize("module", ["benchmarks.speed", "animate"])
def test_a_command_line_is_parsed_by_hydra(module, tmp_path):
    """Two real command lines (one benchmark, one command): ``--cfg job`` prints the config and
    writes nothing in the current folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"fadm_lightning.{module}", "--cfg", "job", "device=cpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "device: cpu" in proc.stdout
    assert list(tmp_path.iterdir()) == []
