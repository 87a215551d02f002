"""Shared fixtures: Hydra configs composed for tiny CPU runs, and the location of ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(REPO / "conf")
FIXTURES = REPO.parent / "shared" / "fixtures" / "voxceleb_sample"

# a tiny synthetic world and model: every integration test shares one generated dataset
TINY_OVERRIDES = [
    "data.image_size=32",
    "data.generator.num_train_ids=3",
    "data.generator.clips_per_id=1",
    "data.generator.num_test_ids=1",
    "data.generator.test_clips_per_id=1",
    "data.generator.num_val_ids=1",
    "data.generator.val_clips_per_id=1",
    "data.generator.num_frames=8",
    "data.num_repeats=2",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "data.num_val_pairs=2",
    "data.num_workers=0",
    "data.test_max_frames=4",
    "model.unet.block_out_channels=[8,16,16,16]",
    "model.unet.norm_num_groups=4",
    "model.unet.attention_head_dim=8",
    "model.agcn.feature_channels=4",
    "model.agcn.hidden_channels=8",
    "model.agcn.norm_groups=2",
    "model.sampler.steps=2",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "++trainer.enable_model_summary=false",
    "~logger",
]


#: torch's intra-op threads in the tests: 1 by default (tiny networks run faster on one thread,
#: and the machine has two cores); ``.ci/run`` runs the suite a second time with 2, so that a
#: result that depends on the thread count (a BLAS kernel's reduction order) fails there
TEST_THREADS = int(os.environ.get("FADM_TEST_THREADS", "1"))


@pytest.fixture(autouse=True)
def _test_threads():
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_train(tmp_path, shared_cache):
    """compose_train(*overrides) -> the train config of a tiny CPU run writing under tmp_path."""

    def _compose(*overrides: str, tiny: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                config_name="train",
                return_hydra_config=True,
                overrides=[*(TINY_OVERRIDES if tiny else []), *overrides],
            )
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.cache_dir = str(shared_cache)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


def plugin_env(code: os.PathLike, shared_cache: os.PathLike, root: os.PathLike) -> dict[str, str]:
    """The environment of a command run with a part kept outside the package (docs/extending.md):
    ``code`` first on PYTHONPATH, the shared data cache, ``root`` as FADM_ROOT, offline W&B."""
    path = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PYTHONPATH": path,
        "FADM_CACHE_DIR": str(shared_cache),
        "FADM_ROOT": str(root),
        "WANDB_MODE": "offline",
    }
