"""Strict loading of user-supplied weight files into our own networks.

A file is read with ``torch.load(..., weights_only=True)`` (tensors only: no code runs), taken
out of the usual containers (``{"state_dict": …}``; the ``module.`` prefix that DataParallel
leaves on every key) and compared with the network key by key. Any missing, unexpected or
mis-shaped tensor is an error that names the file and lists the differences: a network is never
partly loaded and partly random.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fadm_lightning.models.errors import WeightsError, compare_state_dicts
from fadm_lightning.models.torch_file import load_torch_file

# BatchNorm's batch counter: absent from files saved before torch 0.4.1, unused in eval mode
OPTIONAL_SUFFIXES = (".num_batches_tracked",)
_SHOWN = 8  # keys listed per kind of difference


class WeightsFileError(WeightsError, ValueError):
    """A weights file that does not fit the network; the message names the file and lists the
    missing, unexpected and mis-shaped keys."""


def read_state_dict(path: str | os.PathLike, network: str | None = None) -> dict[str, torch.Tensor]:
    """The name → tensor mapping stored in ``path`` (CPU tensors).

    Args:
        path: the weights file.
        network: what the file should be, for the error message (e.g. ``"ArcFace iresnet100"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsFileError: the file is not a readable PyTorch file (truncated, another format, one
            holding objects other than tensors: one line saying what it is) or holds no state
            dict.
    """
    path = Path(path)
    expected = "a torch.save'd state dict (tensor names → tensors)"
    if network:
        expected = f"{network} weights, {expected}"
    state = load_torch_file(
        path, what="PyTorch weights file", expected=expected, error=WeightsFileError
    )
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise WeightsFileError(
            f"{path}: expected a state dict (tensor names → tensors), got {type(state).__name__}"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsFileError(f"{path}: entries that are not tensors: {_listed(not_tensors)}")
    if all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    return {str(k): v for k, v in state.items()}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", … ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def state_dict_differences(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """``missing``, ``unexpected`` and ``mis-shaped`` keys of ``found`` against ``expected``
    (:func:`~fadm_lightning.models.errors.compare_state_dicts`)."""
    diff = compare_state_dicts(expected, found, optional=OPTIONAL_SUFFIXES)
    misshaped = [f"{k} {got} (expected {want})" for k, got, want in diff.mis_shaped]
    return {
        "missing": list(diff.missing),
        "unexpected": list(diff.unexpected),
        "mis-shaped": misshaped,
    }


def load_weights(module: nn.Module, path: str | os.PathLike, network: str) -> nn.Module:
    """Load ``path`` into ``module`` (every tensor, checked by name and shape); returns it frozen
    in eval mode.

    Args:
        module: the network, built for the configuration the file was trained with.
        path: the weights file.
        network: what the file should be, for the error message (e.g. ``"ArcFace iresnet100"``).

    Raises:
        WeightsFileError: see :func:`read_state_dict`, or the keys differ (all differences listed).
    """
    path = Path(path)
    state = read_state_dict(path, network)
    own = module.state_dict()
    differences = state_dict_differences(own, state)
    if any(differences.values()):
        details = "; ".join(
            f"{kind} ({len(keys)}): {_listed(keys)}" for kind, keys in differences.items() if keys
        )
        raise WeightsFileError(
            f"{path}: not {network} weights ({len(state)} tensors in the file, {len(own)} in the "
            f"network); {details}"
        )
    complete = {k: (state[k] if k in state else own[k]).to(own[k].dtype) for k in own}
    module.load_state_dict(complete, strict=True)
    return module.eval().requires_grad_(False)
