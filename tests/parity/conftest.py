"""Opt-in parity tests against the official FADM code (``make test-parity``).

They run only when ``FADM_OFFICIAL_REPO`` points to a checkout of the official repository
(github.com/zengbohan0217/FADM); otherwise every test of this folder is skipped at collection,
so ``make test`` never imports anything from outside the repository. The official code is a test
oracle only: it is imported from that path, never copied here.

The checkout is used exactly as it ships: its own ``sync_batchnorm`` package and its own
``modules/FOMM/util.py``. Only a file that is *absent* from the checkout gets a stand-in, and the
test output says so (report header and the summary table):

* ``sync_batchnorm/`` incomplete (e.g. no ``comm.py``): ``nn.BatchNorm1d/2d/3d``. In ``eval()``
  (the only mode used here) a ``SynchronizedBatchNorm`` is ``F.batch_norm`` with the running
  statistics, i.e. ``nn.BatchNormNd``, with the same state-dict entries.
* no ``modules/FOMM/util.py``: the ``modules/util.py`` of a first-order-model checkout named by
  ``FOMM_UPSTREAM_REPO`` (FADM's FOMM modules are renamed copies of FOMM's); without one, the
  FOMM tests are skipped with that reason.

Tolerances come from a measured noise floor (:func:`noise_floor`, fixture ``check``): the
official network's own output change when every floating input, or every floating weight, moves
by one float32 ulp (``x·(1 ± 2⁻²³)``, random signs). A check passes when
``max |ours − official| ≤ max(RTOL·max(1, max |official|), FLOOR_FACTOR·floor)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

ENV = "FADM_OFFICIAL_REPO"
FOMM_ENV = "FOMM_UPSTREAM_REPO"
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
# files of the official repository that get a stand-in when (and only when) they are absent
SYNC_BATCHNORM_FILES = (
    "sync_batchnorm/__init__.py",
    "sync_batchnorm/batchnorm.py",
    "sync_batchnorm/comm.py",
    "sync_batchnorm/replicate.py",
)
FOMM_UTIL = "modules/FOMM/util.py"
OFFICIAL_MODULES = {
    "kp": "modules.Facevid.keypoint_detector",
    "transform": "modules.Facevid.keypoint_transform",
    "generator": "modules.Facevid.generator_facevid",
    "diffusion": "modules.diffusion.diffusion",
    "generator_diffusion": "modules.diffusion.diffusion_generator",
    "core_net": "modules.diffusion.core_net",
}
FOMM_MODULES = {
    "fomm_util": "modules.FOMM.util",
    "fomm_kp": "modules.FOMM.keypoint_detector",
    "fomm_generator": "modules.FOMM.generator",
}

RTOL = 1e-5  # float32: relative to the output's scale, the tolerance when the floor is lower
ULP = 2.0**-23  # one float32 ulp relative to the value (1.19e-7): the size of the perturbation
FLOOR_FACTOR = 10.0  # tolerance = max(RTOL·max(1, scale), FLOOR_FACTOR·floor)

_DIFFS = pytest.StashKey[list]()


# --- the checkout --------------------------------------------------------------------------
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


def fomm_util_stand_in() -> Path | None:
    """``modules/util.py`` of the first-order-model checkout in ``$FOMM_UPSTREAM_REPO``."""
    value = os.environ.get(FOMM_ENV)
    path = Path(value).expanduser() / "modules" / "util.py" if value else None
    return path if path is not None and path.is_file() else None


def stand_ins(root: Path) -> dict[str, str]:
    """Official file absent from ``root`` → what replaces it (empty: the checkout as shipped)."""
    found: dict[str, str] = {}
    missing = [name for name in SYNC_BATCHNORM_FILES if not (root / name).is_file()]
    if missing:
        found["sync_batchnorm"] = f"nn.BatchNorm1d/2d/3d (no {missing[0]})"
    if not (root / FOMM_UTIL).is_file():
        upstream = fomm_util_stand_in()
        found[FOMM_UTIL] = (
            f"{upstream} (first-order-model, ${FOMM_ENV})"
            if upstream is not None
            else f"nothing: the FOMM tests are skipped ({FOMM_ENV} names no first-order-model "
            "checkout, whose modules/util.py would stand in)"
        )
    return found


def _git_commit(root: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return result.stdout.strip() if result.returncode == 0 else "not a git checkout"


def _describe_checkout(root: Path) -> list[str]:
    lines = [f"official FADM code: {root} (commit {_git_commit(root)})"]
    found = stand_ins(root)
    if not found:
        lines.append(
            "  used as shipped: its own sync_batchnorm and modules/FOMM/util.py, no stand-ins"
        )
    for name, replacement in found.items():
        lines.append(f"  STAND-IN: {name} is absent from the checkout → {replacement}")
    return lines


# --- pytest hooks --------------------------------------------------------------------------
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


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    root, _ = official_repo()
    return _describe_checkout(root) if root is not None else None


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_DIFFS, [])
    if not rows:
        return
    terminalreporter.section("parity with the official FADM code (float32, CPU)")
    root, _ = official_repo()
    if root is not None:
        for line in _describe_checkout(root):
            terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"floor: max |official(x·(1 ± 2⁻²³)) − official(x)| over all floating inputs, then over "
        f"all floating weights; tolerance = max({RTOL:.0e}·max(1, max |official|), "
        f"{FLOOR_FACTOR:g}·floor), bound: which of the two"
    )
    width = max(len(row[0]) for row in rows)
    terminalreporter.write_line(
        f"{'output':<{width}}  {'max |ours − official|':>22}  {'max |official|':>14}  "
        f"{'floor':>9}  {'tolerance':>9}  bound"
    )
    for name, diff, scale, floor, tol in rows:
        floor_text = "—" if floor is None else f"{floor:.1e}"
        bound = "exact" if tol == 0 else ("floor" if _floor_bound(floor, tol) else "rtol")
        terminalreporter.write_line(
            f"{name:<{width}}  {diff:>22.3e}  {scale:>14.3e}  {floor_text:>9}  {tol:>9.1e}  {bound}"
        )


def _floor_bound(floor: float | None, tol: float) -> bool:
    return floor is not None and FLOOR_FACTOR * floor >= tol > 0


# --- the noise floor -----------------------------------------------------------------------
def _map_tensors(tree: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor of a nest of dicts, lists and tuples; other leaves stay."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {key: _map_tensors(value, fn) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map_tensors(value, fn) for value in tree)
    return tree


def _zip_max(trees: Sequence[Any], base: Any) -> Any:
    """Leafwise ``max_i max |trees[i] − base|`` (None for non-tensor leaves)."""
    if isinstance(base, torch.Tensor):
        if not base.is_floating_point():
            return 0.0
        return max((t.double() - base.double()).abs().max().item() for t in trees)
    if isinstance(base, dict):
        return {key: _zip_max([t[key] for t in trees], value) for key, value in base.items()}
    if isinstance(base, list | tuple):
        return type(base)(_zip_max([t[i] for t in trees], v) for i, v in enumerate(base))
    return None


def _signs(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).float().mul_(2).sub_(1)


def perturb(tree: Any, seed: int = 0, eps: float = ULP) -> Any:
    """A copy of ``tree`` with every floating tensor ``x`` → ``x·(1 ± eps)`` (random signs)."""
    generator = torch.Generator().manual_seed(seed)

    def move(x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        return x * (1 + eps * _signs(x.shape, generator).to(x.dtype))

    return _map_tensors(tree, move)


@contextmanager
def weights_perturbed(modules: Iterable[nn.Module], seed: int = 1, eps: float = ULP) -> Iterator:
    """Every floating parameter and buffer of ``modules`` × (1 ± eps) inside the block."""
    generator = torch.Generator().manual_seed(seed)
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for module in modules:
            for tensor in (*module.parameters(), *module.buffers()):
                if tensor.is_floating_point() and id(tensor) not in saved:
                    saved[id(tensor)] = (tensor, tensor.clone())
                    tensor.mul_(1 + eps * _signs(tensor.shape, generator).to(tensor.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, original in saved.values():
                tensor.copy_(original)


def noise_floor(
    run: Callable[..., Any], *inputs: Any, modules: Sequence[nn.Module] = (), seed: int = 0
) -> tuple[Any, Any]:
    """Run the official computation and measure its float32 noise floor.

    ``run(*inputs)`` is evaluated three times (without gradients): as given, with every floating
    tensor of ``inputs`` moved by one ulp (``x·(1 ± 2⁻²³)``, random signs), and with every
    floating parameter and buffer of ``modules`` moved likewise. Returns ``(output, floor)``:
    the unperturbed output and, for each of its tensors, ``max |perturbed − output|`` over the
    two perturbations (same nesting, floats). A float-order difference of the same computation
    (another summation order, another kernel) is a rounding of this size somewhere inside, so
    its effect on the output is of the order of the floor: the network's own amplification
    (sharp softmax heads, ``grid_sample`` of a noisy image, …) is measured, not guessed.
    """
    with torch.no_grad():
        output = run(*inputs)
        moved = [run(*perturb(inputs, seed=seed))]
        if modules:
            with weights_perturbed(modules, seed=seed + 1):
                moved.append(run(*inputs))
    return output, _zip_max(moved, output)


# --- fixtures ------------------------------------------------------------------------------
Check = Callable[..., None]


@pytest.fixture
def record_diff(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record_diff(name, max_abs_diff, max_abs_reference, floor, tolerance) → the summary."""

    def _record(name: str, diff: float, scale: float, floor: float | None, tol: float) -> None:
        request.config.stash[_DIFFS].append((name, diff, scale, floor, tol))

    return _record


def tolerance(scale: float, floor: float | None, rtol: float = RTOL) -> float:
    """``max(rtol·max(1, scale), FLOOR_FACTOR·floor)`` (no floor: the first term alone)."""
    tol = rtol * max(1.0, scale)
    return tol if floor is None else max(tol, FLOOR_FACTOR * floor)


@pytest.fixture
def check(record_diff) -> Check:
    """check(name, ours, official, floor=None, rtol=RTOL, scale=None): assert and record.

    Asserts ``max |ours − official| ≤ tolerance(scale, floor, rtol)`` with ``scale`` =
    max |official| unless given and ``floor`` from :func:`noise_floor`. ``floor=None`` and
    ``rtol=0`` asks for bit equality."""

    def _check(
        name: str,
        ours: torch.Tensor,
        reference: torch.Tensor,
        floor: float | None = None,
        rtol: float = RTOL,
        scale: float | None = None,
    ) -> None:
        assert ours.shape == reference.shape, (
            f"{name}: {tuple(ours.shape)} vs {tuple(reference.shape)}"
        )
        diff = (ours.double() - reference.double()).abs().max().item()
        scale = reference.abs().max().item() if scale is None else scale
        tol = tolerance(scale, floor, rtol)
        record_diff(name, diff, scale, floor, tol)
        floor_text = "none" if floor is None else f"{floor:.2e}"
        torch.testing.assert_close(
            ours, reference, rtol=0.0, atol=tol,
            msg=lambda m: f"{name}: {m}\nnoise floor {floor_text}, tolerance {tol:.2e} = "
            f"max({rtol:g}·max(1, {scale:.3g}), {FLOOR_FACTOR:g}·floor)",
        )  # fmt: skip

    return _check


def _load_file_as(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def official() -> Iterator[types.SimpleNamespace]:
    """The official modules, imported from ``$FADM_OFFICIAL_REPO`` (CPU, float32).

    ``official.kp.KPDetector``, ``official.transform.keypoint_transformation``,
    ``official.diffusion.GaussianDiffusion``, ``official.core_net.UNet``, … (see
    ``OFFICIAL_MODULES``, ``FOMM_MODULES``); ``official.stand_ins`` lists the absent files that
    were replaced, ``official.fomm_skip`` is the reason to skip the FOMM tests, or ``""``. The
    path and the imported modules are removed again afterwards.
    """
    root, reason = official_repo()
    if root is None:
        pytest.skip(reason)
    replaced = stand_ins(root)
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        if "sync_batchnorm" in replaced:
            sys.modules["sync_batchnorm"] = types.ModuleType("sync_batchnorm")
            sys.modules["sync_batchnorm"].__dict__.update(
                SynchronizedBatchNorm1d=nn.BatchNorm1d,
                SynchronizedBatchNorm2d=nn.BatchNorm2d,
                SynchronizedBatchNorm3d=nn.BatchNorm3d,
                DataParallelWithCallback=nn.DataParallel,
            )
        namespace = types.SimpleNamespace(
            root=root,
            stand_ins=replaced,
            fomm_skip="",
            sync_batchnorm=importlib.import_module("sync_batchnorm"),
            **{key: importlib.import_module(name) for key, name in OFFICIAL_MODULES.items()},
        )
        fomm_util = fomm_util_stand_in() if FOMM_UTIL in replaced else root / FOMM_UTIL
        if fomm_util is None:
            namespace.fomm_skip = (
                f"{FOMM_UTIL} is absent from {root} and {FOMM_ENV} names no first-order-model "
                "checkout (its modules/util.py would stand in)"
            )
            namespace.__dict__.update(dict.fromkeys(FOMM_MODULES))
        else:
            if FOMM_UTIL in replaced:
                _load_file_as(FOMM_MODULES["fomm_util"], fomm_util)
            namespace.__dict__.update(
                {key: importlib.import_module(name) for key, name in FOMM_MODULES.items()}
            )
    finally:
        sys.path.remove(str(root))
    yield namespace
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("modules", "sync_batchnorm"):
            del sys.modules[name]
