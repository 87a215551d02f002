"""Opt-in parity tests against the official FADM code (``make test-parity``).

They run only when ``FADM_OFFICIAL_REPO`` points to a checkout of the official repository
(github.com/zengbohan0217/FADM); otherwise every test of this folder is skipped at collection,
so ``make test`` never imports anything from outside the repository. The official code is a test
oracle only: it is imported from that path, never copied here.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from torch import nn

ENV = "FADM_OFFICIAL_REPO"
HERE = Path(__file__).resolve().parent
# files of the official repository that the tests import (relative to its root)
REQUIRED = (
    "modules/Facevid/keypoint_detector.py",
    "modules/Facevid/keypoint_transform.py",
    "modules/Facevid/generator_facevid.py",
    "modules/diffusion/diffusion.py",
    "modules/diffusion/core_net.py",
    "modules/FOMM/keypoint_detector.py",
    "modules/FOMM/generator.py",
    "config/vox-256.yaml",
)
OFFICIAL_MODULES = {
    "kp": "modules.Facevid.keypoint_detector",
    "transform": "modules.Facevid.keypoint_transform",
    "generator": "modules.Facevid.generator_facevid",
    "diffusion": "modules.diffusion.diffusion",
    "generator_diffusion": "modules.diffusion.diffusion_generator",
    "core_net": "modules.diffusion.core_net",
    "fomm_kp": "modules.FOMM.keypoint_detector",
    "fomm_generator": "modules.FOMM.generator",
}
_DIFFS = pytest.StashKey[list]()


def official_repo() -> tuple[Path | None, str]:
    """``(path, "")`` of the official checkout, or ``(None, reason to skip)``."""
    value = os.environ.get(ENV)
    if not value:
        return None, f"{ENV} is not set (FADM_OFFICIAL_REPO=/path/to/FADM make test-parity)"
    root = Path(value).expanduser()
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        return None, f"{ENV}={value!r} is not a checkout of the official FADM code: no {missing[0]}"
    return root, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root, reason = official_repo()
    if root is not None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_DIFFS] = []


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_DIFFS, [])
    if not rows:
        return
    terminalreporter.section("parity with the official FADM code (float32, CPU)")
    width = max(len(row[0]) for row in rows)
    terminalreporter.write_line(
        f"{'output':<{width}}  {'max |ours − official|':>22}  {'max |official|':>14}  {'tolerance':>9}"
    )
    for name, diff, scale, tol in rows:
        terminalreporter.write_line(f"{name:<{width}}  {diff:>22.3e}  {scale:>14.3e}  {tol:>9.1e}")


@pytest.fixture
def record_diff(request: pytest.FixtureRequest) -> Callable[[str, float, float, float], None]:
    """record_diff(name, max_abs_diff, max_abs_reference, tolerance) → the terminal summary."""

    def _record(name: str, diff: float, scale: float, tol: float) -> None:
        request.config.stash[_DIFFS].append((name, diff, scale, tol))

    return _record


def _stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _missing_import_stubs() -> dict[str, types.ModuleType]:
    """Stubs for the official code's module-level imports that this environment lacks.

    * ``sync_batchnorm``: the official copy needs ``comm.py``/``replicate.py`` and CUDA
      replication. In ``eval()`` (the only mode used here) its ``forward`` is exactly
      ``F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)``, i.e.
      ``nn.BatchNormNd``, with the same state-dict entries.
    * ``imp`` (removed in Python 3.12) and ``turtle`` (needs Tk): imported but unused.
    """
    stubs = {}
    try:
        importlib.import_module("sync_batchnorm")
    except Exception:  # noqa: BLE001 - any failure of the official package means: use the stub
        sys.modules.pop("sync_batchnorm", None)
        stubs["sync_batchnorm"] = _stub(
            "sync_batchnorm",
            SynchronizedBatchNorm1d=nn.BatchNorm1d,
            SynchronizedBatchNorm2d=nn.BatchNorm2d,
            SynchronizedBatchNorm3d=nn.BatchNorm3d,
            DataParallelWithCallback=nn.DataParallel,
        )
    for name, attributes in (("imp", {}), ("turtle", {"forward": None})):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001
            stubs[name] = _stub(name, **attributes)
    return stubs


@pytest.fixture(scope="session")
def official() -> Iterator[types.SimpleNamespace]:
    """The official modules, imported from ``$FADM_OFFICIAL_REPO`` (CPU, float32).

    ``official.kp.KPDetector``, ``official.transform.keypoint_transformation``,
    ``official.diffusion.GaussianDiffusion``, ``official.core_net.UNet``, … (see
    ``OFFICIAL_MODULES``). The path and the imported modules are removed again afterwards.
    """
    root, reason = official_repo()
    if root is None:
        pytest.skip(reason)
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        sys.modules.update(_missing_import_stubs())
        namespace = types.SimpleNamespace(
            root=root,
            **{key: importlib.import_module(name) for key, name in OFFICIAL_MODULES.items()},
        )
    finally:
        sys.path.remove(str(root))
    yield namespace
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("modules", "sync_batchnorm", "imp", "turtle"):
            del sys.modules[name]
