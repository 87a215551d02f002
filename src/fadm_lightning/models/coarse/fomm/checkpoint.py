"""Read and write FOMM checkpoints in the official format.

The official ``Logger.save_cpk`` writes one ``torch.save`` dict::

    {"generator": state_dict, "kp_detector": state_dict, "discriminator": state_dict,
     "optimizer_generator": …, "optimizer_kp_detector": …, "optimizer_discriminator": …,
     "epoch": int}

``vox-cpk.pth.tar``, ``vox-adv-cpk.pth.tar`` and FADM's ``modules/FOMM/ckpt/FOMM.pth`` all
follow it. Only ``generator`` and ``kp_detector`` are required (and loaded strictly);
everything else is optional.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fadm_lightning.models.errors import StateDictDiff, WeightsError, compare_state_dicts
from fadm_lightning.models.torch_file import load_torch_file

REQUIRED_ENTRIES = ("kp_detector", "generator")
MAX_LISTED_KEYS = 40  # per category and network in error messages

EXPECTED_CHECKPOINT = (
    "a FOMM vox-256 checkpoint: the official `vox-cpk.pth.tar` or `vox-adv-cpk.pth.tar` "
    "(github.com/AliaksandrSiarohin/first-order-model) or FADM's `modules/FOMM/ckpt/FOMM.pth`, "
    "i.e. a torch.save dict with the state dicts 'generator' and 'kp_detector'"
)


class FOMMCheckpointError(WeightsError):
    """A FOMM checkpoint file cannot be read or does not fit the networks."""


def missing_checkpoint_message(path: str | os.PathLike[str] | None) -> str:
    """The error text for an unset or absent FOMM checkpoint (names the path and the fix)."""
    where = "no path was given (checkpoint=None)" if path is None else f"'{path}' does not exist"
    return (
        f"FOMM checkpoint not found: {where}. Expected {EXPECTED_CHECKPOINT}. "
        "Download it and set `coarse.checkpoint=PATH` on the command line "
        "(or `paths.pretrained_dir` so that PATH is <pretrained_dir>/fomm/vox-cpk.pth.tar)."
    )


def describe_mismatches(name: str, diff: StateDictDiff) -> str:
    """One indented block for a network: its missing / unexpected / mis-shaped keys."""
    return "\n".join([f"  [{name}]", *diff.listing(indent="    ", max_listed=MAX_LISTED_KEYS)])


def read_part_safetensors(
    path: Path, networks: tuple[str, ...], error: type[Exception]
) -> dict[str, dict[str, torch.Tensor]]:
    """A ``.safetensors`` file holding a coarse generator's own ``state_dict()`` (keys
    ``<network>.<key>``, as a pretrained folder stores it: ``coarse/model.safetensors``), split
    into one state dict per network; a key of no network in ``networks`` is an ``error``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise error(f"{path}: not a readable safetensors file ({err})") from None
    split: dict[str, dict[str, torch.Tensor]] = {name: {} for name in networks}
    stray = []
    for key, value in state.items():
        network, _, rest = key.partition(".")
        if network in split and rest:
            split[network][rest] = value
        else:
            stray.append(key)
    if stray:
        raise error(
            f"{path}: {len(stray)} unexpected key(s), of no network of {', '.join(networks)}: "
            + ", ".join(stray[:MAX_LISTED_KEYS])
        )
    return split


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` and clear errors.

    A ``.safetensors`` file is read as the coarse generator's own ``state_dict()``
    (:func:`read_part_safetensors`: a pretrained folder's ``coarse/model.safetensors``).

    Raises:
        FileNotFoundError: the file does not exist.
        FOMMCheckpointError: the file is not a (complete) torch checkpoint, or not a dict; a file
            that is something else (an image, a config, a pickle of Python objects …) gets one
            line saying what it is (:func:`~fadm_lightning.models.torch_file.load_torch_file`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_checkpoint_message(path))
    if path.suffix == ".safetensors":
        return read_part_safetensors(path, REQUIRED_ENTRIES, FOMMCheckpointError)
    checkpoint = load_torch_file(
        path, what="FOMM checkpoint", expected=EXPECTED_CHECKPOINT, error=FOMMCheckpointError
    )
    if not isinstance(checkpoint, Mapping):
        raise FOMMCheckpointError(
            f"FOMM checkpoint '{path}' holds a {type(checkpoint).__name__}, expected a dict with "
            f"{', '.join(repr(e) for e in REQUIRED_ENTRIES)}."
        )
    return dict(checkpoint)


def load_fomm_checkpoint(
    path: str | os.PathLike[str],
    kp_detector: nn.Module,
    generator: nn.Module,
    discriminator: nn.Module | None = None,
) -> dict[str, Any]:
    """Load an official-format FOMM checkpoint into the networks.

    ``kp_detector`` and ``generator`` are loaded strictly: every key must be present with the
    right shape, and no extra key is allowed; all problems of both networks are reported
    together. ``discriminator`` (if given) is loaded only when the checkpoint has a matching
    ``discriminator`` entry, otherwise it keeps its weights and a warning is issued (as the
    official loader tolerates).

    Args:
        path: checkpoint file.
        kp_detector: a :class:`KPDetector` of the checkpoint's configuration.
        generator: an :class:`OcclusionAwareGenerator` of the checkpoint's configuration.
        discriminator: optional :class:`MultiScaleDiscriminator`.

    Returns:
        The whole checkpoint dict (state dicts, optimizer states, ``epoch``), on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FOMMCheckpointError: unreadable file, not a dict, missing ``generator`` /
            ``kp_detector`` entries, or missing / unexpected / mis-shaped keys.
    """
    checkpoint = read_checkpoint(path)

    # 1. required entries
    absent = [entry for entry in REQUIRED_ENTRIES if entry not in checkpoint]
    if absent:
        raise FOMMCheckpointError(
            f"FOMM checkpoint '{path}' lacks the entries {absent}; it has {sorted(checkpoint)}. "
            f"Expected {EXPECTED_CHECKPOINT}."
        )
    not_dicts = [entry for entry in REQUIRED_ENTRIES if not isinstance(checkpoint[entry], Mapping)]
    if not_dicts:
        raise FOMMCheckpointError(
            f"FOMM checkpoint '{path}': the entries {not_dicts} are not state dicts "
            f"({', '.join(type(checkpoint[e]).__name__ for e in not_dicts)})."
        )

    # 2. strict key / shape check of both networks, reported together
    modules = {"kp_detector": kp_detector, "generator": generator}
    problems = []
    for name, module in modules.items():
        diff = compare_state_dicts(module.state_dict(), checkpoint[name])
        if diff:
            problems.append(describe_mismatches(name, diff))
    if problems:
        raise FOMMCheckpointError(
            f"FOMM checkpoint '{path}' does not match the networks (check num_kp, block_expansion, "
            "max_features, num_blocks, … against the checkpoint's config):\n" + "\n".join(problems)
        )
    for name, module in modules.items():
        module.load_state_dict(checkpoint[name], strict=True)

    # 3. optional discriminator
    if discriminator is not None:
        state = checkpoint.get("discriminator")
        if not isinstance(state, Mapping):
            warnings.warn(
                f"FOMM checkpoint '{path}' has no discriminator; it keeps its initial weights.",
                stacklevel=2,
            )
        else:
            diff = compare_state_dicts(discriminator.state_dict(), state)
            if diff:
                warnings.warn(
                    f"FOMM checkpoint '{path}': the discriminator does not match and is not "
                    "loaded:\n" + describe_mismatches("discriminator", diff),
                    stacklevel=2,
                )
            else:
                discriminator.load_state_dict(state, strict=True)
    return checkpoint


def _cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def save_fomm_checkpoint(
    path: str | os.PathLike[str],
    kp_detector: nn.Module,
    generator: nn.Module,
    discriminator: nn.Module | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    epoch: int = 0,
) -> Path:
    """Write an official-format FOMM checkpoint, atomically (temporary file + rename).

    Args:
        path: destination file (parent folders are created).
        kp_detector: keypoint detector → entry ``kp_detector``.
        generator: generator → entry ``generator``.
        discriminator: optional → entry ``discriminator`` (omitted when None).
        optimizers: ``{"generator": opt, "kp_detector": opt, "discriminator": opt}`` (any
            subset) → entries ``optimizer_<name>``.
        epoch: → entry ``epoch``.

    Returns:
        The written path.
    """
    path = Path(path)
    checkpoint: dict[str, Any] = {
        "generator": _cpu_state_dict(generator),
        "kp_detector": _cpu_state_dict(kp_detector),
    }
    if discriminator is not None:
        checkpoint["discriminator"] = _cpu_state_dict(discriminator)
    for name, optimizer in (optimizers or {}).items():
        checkpoint[f"optimizer_{name}"] = optimizer.state_dict()
    checkpoint["epoch"] = int(epoch)

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(checkpoint, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
