"""A built wheel runs every command from any folder: the configs ship inside the package.

The wheel (``pip wheel --no-deps``, built from a copy of the checkout so that no ``build/`` is left
in it) is put first on ``PYTHONPATH`` and imported as a zip, by a fresh virtual environment whose
only other entry is this interpreter's site-packages, added by a ``.pth`` file: the ``.pth`` files
in that folder (the editable install of this checkout among them) are not processed, so the
checkout's ``src/`` is not importable and only the wheel provides ``fadm_lightning``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from ..conftest import REPO, TEST_THREADS, TINY_OVERRIDES

# the packaging check: a wheel first on PYTHONPATH, from a folder outside the checkout
COMMAND = ["-m", "fadm_lightning.train", "++trainer.fast_dev_run=true", "logger=null"]
SMALL = [o for o in TINY_OVERRIDES if o != "~logger"] + ["num_threads=1"]


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(REPO / "pyproject.toml", source)
    shutil.copy2(REPO / "README.md", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    # a machine-local override must not be shipped
    (source / "src/fadm_lightning/conf/local/default.yaml").write_text("seed: 7\n")
    out = tmp_path_factory.mktemp("wheelhouse")
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("fadm_lightning-*.whl")
    return path


@pytest.fixture(scope="module")
def outside_env(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A python without the checkout's editable install, and its environment (wheel first)."""
    venv = tmp_path_factory.mktemp("venv")
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv, dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run([str(python), "-c", ask], venv, {}).stdout.strip())
    paths = sysconfig.get_paths()
    deps = dict.fromkeys([paths["purelib"], paths["platlib"], *site.getsitepackages()])
    (purelib / "deps_only.pth").write_text("".join(f"{p}\n" for p in deps if Path(p).is_dir()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FADM_", "PYTHON", "WANDB_"))}
    env.update(OMP_NUM_THREADS=str(TEST_THREADS), PYTHONNOUSERSITE="1")
    ask = "import importlib.util as u; print(u.find_spec('fadm_lightning'))"
    alone = _run([str(python), "-c", ask], venv, env)
    assert alone.stdout.strip() == "None", "the checkout's fadm_lightning is still importable"
    return python, {**env, "PYTHONPATH": str(wheel)}


def test_the_wheel_ships_every_config_and_no_local_override(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = REPO / "conf"
    expected = {
        f"fadm_lightning/conf/{p.relative_to(conf).as_posix()}"
        for p in conf.rglob("*.yaml")
        if p.relative_to(conf).parts[0] != "local"
    }
    assert len(expected) > 40 and expected <= names, sorted(expected - names)
    assert "fadm_lightning/conf/__init__.py" in names
    assert not [n for n in names if n.startswith("fadm_lightning/conf/local/")]


def test_the_wheel_trains_from_a_folder_outside_the_checkout(outside_env, wheel, tmp_path):
    python, env = outside_env
    where = _run(
        [str(python), "-c", "import fadm_lightning; print(fadm_lightning.__file__)"], tmp_path, env
    )
    assert where.stdout.startswith(f"{wheel}{os.sep}"), (
        where.stdout + where.stderr
    )  # the zip itself
    proc = _run([str(python), *COMMAND, *SMALL], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "fadm_lightning.conf" in (run / ".hydra" / "hydra.yaml").read_text()
    assert (tmp_path / ".cache" / "synthetic").is_dir()  # generated data: under the folder too


@pytest.mark.parametrize(
    "command",
    ["evaluate", "animate", "rectify", "preprocess", "export", "convert_release", "shard"],
)
def test_every_other_command_composes_its_config_from_the_wheel(outside_env, tmp_path, command):
    python, env = outside_env
    proc = _run([str(python), "-m", f"fadm_lightning.{command}", "--cfg", "job"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(key in proc.stdout for key in ("sampler:", "input_dir:", "output: null"))
    assert not list(tmp_path.iterdir())  # printing the config writes nothing
