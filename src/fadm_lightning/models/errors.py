"""The one weights error and the one state-dict comparison of every loader.

* :class:`WeightsError` — the base class of every "these weights cannot be used" error (a file
  that is not a torch file, a checkpoint without the expected entries, a state dict whose keys or
  shapes differ). Each loader keeps its own subclass (``FOMMCheckpointError``,
  ``FacevidCheckpointError``, ``DiffusionCheckpointError``, DECA's and the loaders'
  ``CheckpointError``, ``WeightsFileError``) for its messages and for old ``except`` clauses; a
  command catches the base alone (``inference/cli.py``).
* :func:`compare_state_dicts` — missing, unexpected and mis-shaped keys of a state dict against
  the one a network expects, as a :class:`StateDictDiff`; :func:`check_state_dict` raises a
  loader's error that names the file and lists the differing keys.

Like :mod:`~fadm_lightning.models.torch_file`, a bottom module: torch and the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import torch

MAX_LISTED_KEYS = 40  # per kind of difference in :meth:`StateDictDiff.listing`


class WeightsError(RuntimeError):
    """Weights that cannot be used: the message names the file and what is wrong with it (the
    differing keys when it is a state dict that does not fit)."""


class MetricWeightsError(WeightsError, ValueError):
    """The weights file of a metric's network (LPIPS' AlexNet, FID's Inception-v3, ST-LPIPS)
    that cannot be used; also a ValueError, as these loaders raised before."""


@dataclass(frozen=True)
class StateDictDiff:
    """How a state dict differs from the one a network expects.

    ``missing``: keys the network needs and the state dict lacks (in the network's order);
    ``unexpected``: keys the state dict has and the network does not (in the file's order);
    ``mis_shaped``: ``(key, shape in the file, shape in the network)``, the file's "shape" being
    the value's type name when it is not a tensor. Falsy when nothing differs; unpacks as the
    three lists of :meth:`lists` (``missing, unexpected, mis_shaped = diff``).
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mis_shaped: tuple[tuple[str, tuple[int, ...] | str, tuple[int, ...]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mis_shaped)

    def __iter__(self):
        return iter(self.lists())

    @property
    def keys(self) -> list[str]:
        """Every differing key, sorted."""
        return sorted({*self.missing, *self.unexpected, *(key for key, _, _ in self.mis_shaped)})

    def shape_lines(self, found: str = "checkpoint", model: str = "model") -> list[str]:
        """One ``"key: <found> (…) vs <model> (…)"`` line per mis-shaped key."""
        lines = []
        for key, got, want in self.mis_shaped:
            if isinstance(got, str):
                lines.append(f"{key}: {found} holds a {got}, not a tensor")
            else:
                lines.append(f"{key}: {found} {got} vs {model} {want}")
        return lines

    def lists(
        self, found: str = "checkpoint", model: str = "model"
    ) -> tuple[list[str], list[str], list[str]]:
        """``(missing, unexpected, mis-shaped lines)``."""
        return list(self.missing), list(self.unexpected), self.shape_lines(found, model)

    def listing(
        self,
        indent: str = "  ",
        max_listed: int = MAX_LISTED_KEYS,
        found: str = "checkpoint",
        model: str = "model",
    ) -> list[str]:
        """``<indent>missing keys (n):`` then each key indented once more (at most
        ``max_listed``, then ``… and k more``); the same for unexpected and mis-shaped keys."""
        lines = []
        titles = ("missing keys", "unexpected keys", "mis-shaped keys")
        for title, keys in zip(titles, self.lists(found, model), strict=True):
            if keys:
                lines.append(f"{indent}{title} ({len(keys)}):")
                lines.extend(f"{indent}  {key}" for key in keys[:max_listed])
                if len(keys) > max_listed:
                    lines.append(f"{indent}  … and {len(keys) - max_listed} more")
        return lines


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def compare_state_dicts(
    expected: Mapping[str, Any],
    found: Mapping[str, Any],
    *,
    optional: tuple[str, ...] = (),
    ignore_unexpected: Container[str] = (),
    sort: bool = False,
) -> StateDictDiff:
    """Compare a state dict ``found`` (read from a file) with ``expected`` (a network's
    ``state_dict()``): the one comparison of every loader.

    Args:
        expected: the network's keys and tensors.
        found: the file's keys and values.
        optional: key suffixes that may be missing (``".num_batches_tracked"``: absent from old
            files, unused in eval mode).
        ignore_unexpected: keys of the file that are not unexpected although the network lacks
            them (VGG-19's classifier in a full torchvision file).
        sort: sort each list by key (else the network's order, the file's for unexpected keys).
    """
    missing = [k for k in expected if k not in found and not (optional and k.endswith(optional))]
    unexpected = [k for k in found if k not in expected and k not in ignore_unexpected]
    mis_shaped = [
        (k, _shape(found[k]), tuple(expected[k].shape))
        for k in expected
        if k in found and _shape(found[k]) != tuple(expected[k].shape)
    ]
    if sort:
        missing, unexpected, mis_shaped = sorted(missing), sorted(unexpected), sorted(mis_shaped)
    return StateDictDiff(tuple(missing), tuple(unexpected), tuple(mis_shaped))


def check_state_dict(
    expected: Mapping[str, Any],
    found: Mapping[str, Any],
    *,
    path: str | os.PathLike[str],
    what: str = "checkpoint",
    error: type[Exception] = WeightsError,
    optional: tuple[str, ...] = (),
) -> StateDictDiff:
    """:func:`compare_state_dicts`, raising ``error`` when anything differs::

        <what> '<path>' does not match the network:
          missing keys (n):
            key …
          unexpected keys (n): …
          mis-shaped keys (n):
            key: checkpoint (…) vs model (…)

    Returns the (empty) difference otherwise.
    """
    diff = compare_state_dicts(expected, found, optional=optional)
    if diff:
        headline = f"{what} '{os.fspath(path)}' does not match the network:"
        raise error("\n".join([headline, *diff.listing()]))
    return diff
