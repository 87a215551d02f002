"""docs/extending.md, "Add a coarse generator", done exactly as written: one folder (a Python
package outside this repository, on PYTHONPATH), one YAML (``coarse/toy.yaml`` on Hydra's search
path), no edit of fadm_lightning; then one batch of FADM trained over it from the command line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ..conftest import TINY_OVERRIDES, plugin_env

TOY_MODULE = '''
"""A toy coarse generator: a 1×1 convolution of the source and the driving frame."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fadm_lightning.models.coarse.base import CoarseCapabilities, CoarseGenerator
from fadm_lightning.models.errors import WeightsError, check_state_dict
from fadm_lightning.models.torch_file import load_torch_file

EXPECTED_CHECKPOINT = "a torch.save'd state dict of ToyCoarseGenerator (key 'mix.weight', …)"


class ToyCheckpointError(WeightsError):
    """A toy checkpoint that cannot be read or does not fit the network."""


class ToyCoarseGenerator(CoarseGenerator):
    capabilities = CoarseCapabilities(warped_source=True)

    def __init__(self, checkpoint: str | None = None, marker: str | None = None) -> None:
        super().__init__()
        self.mix = nn.Conv2d(6, 3, kernel_size=1)
        with torch.no_grad():  # start as "the driving frame"
            self.mix.weight.zero_()
            self.mix.bias.zero_()
            for channel in range(3):
                self.mix.weight[channel, 3 + channel] = 1.0
        if checkpoint is not None:
            state = load_torch_file(
                checkpoint,
                what="toy coarse checkpoint",
                expected=EXPECTED_CHECKPOINT,
                error=ToyCheckpointError,
            )
            check_state_dict(
                self.state_dict(),
                state,
                path=checkpoint,
                what="toy coarse checkpoint",
                error=ToyCheckpointError,
            )
            self.load_state_dict(state)
        self.marker = marker
        self.requires_grad_(False).eval()

    def forward(self, source, driving, source_annotation=None, driving_annotation=None):
        if self.marker:  # the test's proof that this part ran
            Path(self.marker).write_text(f"{tuple(driving.shape)}\\n")
        prediction = self.mix(torch.cat([source, driving], dim=1)).clamp(0, 1)
        return {"prediction": prediction, "deformed": source}
'''

TOY_YAML = """\
# A toy coarse generator (tests/integration/test_extending_coarse.py)
_target_: toy_coarse.ToyCoarseGenerator
checkpoint: null
marker: null
"""


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, Path]:
    """(the folder put on PYTHONPATH, the folder put on Hydra's search path)."""
    package = tmp_path / "ext" / "toy_coarse"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(TOY_MODULE).lstrip())
    conf = tmp_path / "conf"
    (conf / "coarse").mkdir(parents=True)
    (conf / "coarse" / "toy.yaml").write_text(TOY_YAML)
    return package.parent, conf


def _import_toy(folder: Path):
    spec = importlib.util.spec_from_file_location(
        "toy_coarse", folder / "toy_coarse" / "__init__.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_coarse_generator_added_by_config_alone_trains_one_batch(tmp_path, shared_cache, toy):
    ext, conf = toy
    run_dir, marker = tmp_path / "run", tmp_path / "toy_ran.txt"
    env = plugin_env(ext, shared_cache, tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fadm_lightning.train",
            *TINY_OVERRIDES,
            "coarse=toy",
            f"hydra.searchpath=[file://{conf}]",
            f"coarse.marker={marker}",
            "++trainer.fast_dev_run=true",
            "test=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.coarse._target_ == "toy_coarse.ToyCoarseGenerator"
    assert marker.is_file()  # the toy gave the coarse frames of the batch
    assert marker.read_text().startswith("(2, 3, 32, 32)")


def test_the_toy_declares_its_capabilities_and_its_weights_error(tmp_path, toy):
    from fadm_lightning.inference.cli import run_command
    from fadm_lightning.models.coarse.base import coarse_capabilities

    module = _import_toy(toy[0])
    generator = module.ToyCoarseGenerator()
    capabilities = coarse_capabilities(generator)
    assert capabilities.warped_source and not capabilities.relative_motion
    assert not generator.needs_annotations
    frames = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.equal(generator(*frames)["prediction"], frames[1])

    # its weights: a file that does not fit names the file and the keys, one class for the CLI
    path = tmp_path / "toy.pth"
    torch.save({"mix.weight": torch.zeros(3, 5, 1, 1), "extra": torch.zeros(1)}, path)
    with pytest.raises(module.ToyCheckpointError) as caught:
        module.ToyCoarseGenerator(checkpoint=str(path))
    message = str(caught.value)
    assert str(path) in message and "mix.bias" in message and "extra" in message
    assert "mix.weight: checkpoint (3, 5, 1, 1) vs model (3, 6, 1, 1)" in message
    assert run_command("animate", lambda: module.ToyCoarseGenerator(checkpoint=str(path))) == 1
