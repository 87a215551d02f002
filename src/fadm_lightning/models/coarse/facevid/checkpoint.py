"""Read and write face-vid2vid checkpoints in the official format (FADM's ``Facevid.pth``).

zhanglonghao's ``train.py`` saves one ``torch.save`` dict::

    {"generator": state_dict, "kp_detector": state_dict, "he_estimator": state_dict,
     "discriminator": …, "optimizer_generator": …, …, "epoch": int}

FADM (``modules/Facevid/ckpt/Facevid.pth``) reads only ``kp_detector``, ``he_estimator`` and
``generator``, strictly; so does :func:`load_facevid_checkpoint`, with ``weights_only=True``.
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

from ..fomm.checkpoint import describe_mismatches, read_part_safetensors

REQUIRED_ENTRIES = ("kp_detector", "he_estimator", "generator")
MAX_LISTED_KEYS = 40  # per category and network in error messages

EXPECTED_CHECKPOINT = (
    "FADM's face-vid2vid checkpoint `Facevid.pth` (shipped with the official FADM release as "
    "modules/Facevid/ckpt/Facevid.pth), i.e. a torch.save dict with the state dicts "
    "'kp_detector', 'he_estimator' and 'generator' of the non-SPADE OcclusionAwareGenerator "
    "(zhanglonghao's public 'Vox-256-New' SPADE checkpoint does not fit)"
)


class FacevidCheckpointError(WeightsError):
    """A face-vid2vid checkpoint file cannot be read or does not fit the networks."""


def missing_checkpoint_message(path: str | os.PathLike[str] | None) -> str:
    """The error text for an unset or absent face-vid2vid checkpoint (names the path and the fix)."""
    where = "no path was given (checkpoint=None)" if path is None else f"'{path}' does not exist"
    return (
        f"face-vid2vid checkpoint not found: {where}. Expected {EXPECTED_CHECKPOINT}. "
        "Put it there and set `coarse.checkpoint=PATH` on the command line "
        "(or `paths.pretrained_dir` so that PATH is <pretrained_dir>/facevid/Facevid.pth)."
    )


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        FileNotFoundError: the file does not exist (the message names the expected file).
        FacevidCheckpointError: the file is not a (complete, weights-only) torch file, or not a
            dict; one line says what the file is instead (an image, a config, a pickle …).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_checkpoint_message(path))
    if path.suffix == ".safetensors":  # the generator's own state_dict (a pretrained folder)
        return read_part_safetensors(path, REQUIRED_ENTRIES, FacevidCheckpointError)
    checkpoint = load_torch_file(
        path,
        what="face-vid2vid checkpoint",
        expected=EXPECTED_CHECKPOINT,
        error=FacevidCheckpointError,
    )
    if not isinstance(checkpoint, Mapping):
        raise FacevidCheckpointError(
            f"face-vid2vid checkpoint '{path}' holds a {type(checkpoint).__name__}, expected a "
            f"dict with {', '.join(repr(e) for e in REQUIRED_ENTRIES)}."
        )
    return dict(checkpoint)


def load_facevid_checkpoint(
    path: str | os.PathLike[str],
    kp_detector: nn.Module,
    he_estimator: nn.Module,
    generator: nn.Module,
) -> dict[str, Any]:
    """Load an official-format face-vid2vid checkpoint into the three networks, strictly.

    Every key must be present with the right shape and no extra key is allowed; all problems of
    the three networks are reported together, and nothing is loaded unless all fit.

    Args:
        path: checkpoint file (``Facevid.pth``).
        kp_detector: a :class:`~.keypoint_detector.KPDetector` of the checkpoint's configuration.
        he_estimator: a :class:`~.keypoint_detector.HEEstimator`.
        generator: an :class:`~.generator.OcclusionAwareGenerator`.

    Returns:
        The whole checkpoint dict (on the CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FacevidCheckpointError: unreadable file, not a dict, missing entries, or missing /
            unexpected / mis-shaped keys (listed per network).
    """
    checkpoint = read_checkpoint(path)

    # 1. required entries
    absent = [entry for entry in REQUIRED_ENTRIES if entry not in checkpoint]
    if absent:
        raise FacevidCheckpointError(
            f"face-vid2vid checkpoint '{path}' lacks the entries {absent}; it has "
            f"{sorted(checkpoint)}. Expected {EXPECTED_CHECKPOINT}."
        )
    not_dicts = [entry for entry in REQUIRED_ENTRIES if not isinstance(checkpoint[entry], Mapping)]
    if not_dicts:
        raise FacevidCheckpointError(
            f"face-vid2vid checkpoint '{path}': the entries {not_dicts} are not state dicts."
        )

    # 2. strict key / shape check of the three networks, reported together
    modules = {"kp_detector": kp_detector, "he_estimator": he_estimator, "generator": generator}
    problems = []
    for name, module in modules.items():
        diff = compare_state_dicts(module.state_dict(), checkpoint[name])
        if diff:
            problems.append(describe_mismatches(name, diff))
    if problems:
        raise FacevidCheckpointError(
            f"face-vid2vid checkpoint '{path}' does not match the networks (check num_kp, "
            "block_expansion, max_features, reshape_*, … against the checkpoint's config; "
            "a SPADE-generator checkpoint does not fit):\n" + "\n".join(problems)
        )
    for name, module in modules.items():
        module.load_state_dict(checkpoint[name], strict=True)
    return checkpoint


def save_facevid_checkpoint(
    path: str | os.PathLike[str],
    kp_detector: nn.Module,
    he_estimator: nn.Module,
    generator: nn.Module,
    epoch: int = 0,
) -> Path:
    """Write an official-format face-vid2vid checkpoint, atomically (temporary file + rename).

    Args:
        path: destination file (parent folders are created).
        kp_detector: → entry ``kp_detector``.
        he_estimator: → entry ``he_estimator``.
        generator: → entry ``generator``.
        epoch: → entry ``epoch``.

    Returns:
        The written path.
    """
    path = Path(path)
    checkpoint: dict[str, Any] = {
        name: {key: value.detach().cpu() for key, value in module.state_dict().items()}
        for name, module in (
            ("kp_detector", kp_detector),
            ("he_estimator", he_estimator),
            ("generator", generator),
        )
    }
    checkpoint["epoch"] = int(epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(checkpoint, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
