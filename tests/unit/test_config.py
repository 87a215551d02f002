"""The configs ship inside the package (``fadm_lightning/conf``); ``conf/`` is a link to them."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

import fadm_lightning
from fadm_lightning.config import (
    CONFIG_MODULE,
    compose_config,
    is_config_group,
    null_groups_to_deletions,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGE_CONF = REPO / "src" / "fadm_lightning" / "conf"


def test_top_level_conf_is_a_relative_link_to_the_package_conf():
    link = REPO / "conf"
    assert link.is_symlink(), "conf/ must be a link to src/fadm_lightning/conf, not a copy"
    assert not os.path.isabs(os.readlink(link)), "a relative link survives moving the checkout"
    assert link.resolve() == PACKAGE_CONF.resolve()
    assert (PACKAGE_CONF / "__init__.py").is_file()  # Hydra's pkg:// source needs a package


def test_the_imported_package_reads_the_repository_configs():
    if not Path(fadm_lightning.__file__).resolve().is_relative_to(REPO / "src"):
        pytest.skip(f"fadm_lightning is imported from {fadm_lightning.__file__}, not this checkout")
    conf = resources.files(CONFIG_MODULE)
    assert Path(str(conf)).resolve() == (REPO / "conf").resolve()


@pytest.mark.parametrize("name", ["train", "evaluate", "animate", "rectify", "preprocess"])
def test_every_command_config_composes_from_the_package(name):
    cfg = compose_config(name)
    assert ("input_dir" if name == "preprocess" else "task_name") in cfg.keys()


def test_logger_null_drops_the_logger():
    assert "logger" in compose_config("train")
    assert "logger" not in compose_config("train", ["logger=null"])
    assert "logger" not in compose_config("evaluate", ["logger=null"])  # its default is null


def test_only_group_choices_of_null_become_deletions():
    args = [
        "logger=null", "model/unet=NULL", "experiment=null", "seed=null",
        "trainer.max_steps=null", "logger=csv", "logger=null,csv", "+x=null", "--cfg", "job",
        "hydra.run.dir=null", "nonexistent=null",
    ]  # fmt: skip
    assert null_groups_to_deletions(args) == [
        "~logger", "~model/unet", "~experiment", "seed=null",
        "trainer.max_steps=null", "logger=csv", "logger=null,csv", "+x=null", "--cfg", "job",
        "hydra.run.dir=null", "nonexistent=null",
    ]  # fmt: skip
    assert is_config_group("model/perceptual") and not is_config_group("../conf")
