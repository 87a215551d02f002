"""Read and write the released FADM denoiser (``diffusion.pth``) in the official format.

The official ``train.py`` saves ``DiffusionGenerator.state_dict()`` as a flat dict
(``diffusion_generator.pth``, renamed ``diffusion.pth`` in the release): 634 tensors with the
prefix ``diffusion.``, the 13 schedule buffers included. It is loaded here with
``torch.load(weights_only=True)`` and strictly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fadm_lightning.models.errors import WeightsError, compare_state_dicts
from fadm_lightning.models.torch_file import load_torch_file

MAX_LISTED_KEYS = 40  # per category in error messages

EXPECTED_CHECKPOINT = (
    "the released FADM denoiser `diffusion.pth` (official FADM release, "
    "modules/diffusion/ckpt/diffusion.pth, or a `diffusion_generator.pth` written by the official "
    "train.py), i.e. a torch.save'd flat state dict of DiffusionGenerator(img_size=256, "
    "timesteps=100) with 634 'diffusion.*' entries"
)


class DiffusionCheckpointError(WeightsError):
    """A denoiser checkpoint file cannot be read or does not fit the network."""


def missing_checkpoint_message(path: str | os.PathLike[str] | None) -> str:
    """The error text for an unset or absent ``diffusion.pth`` (names the path and the file)."""
    where = "no path was given" if path is None else f"'{path}' does not exist"
    return f"FADM denoiser checkpoint not found: {where}. Expected {EXPECTED_CHECKPOINT}."


def load_diffusion_checkpoint(path: str | os.PathLike[str], denoiser: nn.Module) -> dict[str, Any]:
    """Load ``diffusion.pth`` into an :class:`~.denoiser.OfficialFADMDenoiser`, strictly.

    Args:
        path: the checkpoint file.
        denoiser: the module to fill (its configuration must be the checkpoint's).

    Returns:
        The state dict as read (CPU tensors).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DiffusionCheckpointError: unreadable file, not a state dict, or missing / unexpected /
            mis-shaped keys (all listed; nothing is loaded then).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_checkpoint_message(path))
    state = load_torch_file(
        path,
        what="FADM denoiser checkpoint",
        expected=EXPECTED_CHECKPOINT,
        error=DiffusionCheckpointError,
    )
    if not isinstance(state, Mapping):
        raise DiffusionCheckpointError(
            f"FADM denoiser checkpoint '{path}' holds a {type(state).__name__}, expected "
            f"{EXPECTED_CHECKPOINT}."
        )
    diff = compare_state_dicts(denoiser.state_dict(), state)
    if diff:
        hint = ""
        if diff.unexpected and not any(str(key).startswith("diffusion.") for key in state):
            hint = f" Its top-level keys are {sorted(map(str, state))[:10]}: not a flat state dict?"
        lines = [
            f"FADM denoiser checkpoint '{path}' does not match the network (check image_size, "
            f"num_timesteps, inner_channel, channel_mults, … against the checkpoint).{hint}",
            *diff.listing(indent="  ", max_listed=MAX_LISTED_KEYS),
        ]
        raise DiffusionCheckpointError("\n".join(lines))
    denoiser.load_state_dict(state, strict=True)
    return dict(state)


def save_diffusion_checkpoint(path: str | os.PathLike[str], denoiser: nn.Module) -> Path:
    """Write the denoiser as the official flat state dict, atomically (temporary file + rename)."""
    path = Path(path)
    state = {key: value.detach().cpu() for key, value in denoiser.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
