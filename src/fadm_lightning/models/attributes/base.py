"""The attribute-extractor interface (the frozen 3-D face encoder of eq. 9).

Every extractor (synthetic, DECA, landmarks) is an ``nn.Module`` with an integer attribute
``dim`` and is called as::

    attr = extractor(images)            # images B×3×H×W in [0, 1] -> B×dim

The motion condition uses ``attr(source) − attr(driving)`` (REFERENCE_SPEC §3). Extractors that
need ground truth (only the synthetic one) also accept ``annotation``: a dict of per-frame tensors
as written by the synthetic data generator; real extractors ignore it.

What an extractor can do beyond that is **declared** in its class's ``capabilities``
(:class:`AttributeCapabilities`) and read through :func:`attribute_capabilities`, never probed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class AttributeCapabilities:
    """What an attribute extractor offers beyond ``extractor(images)`` → B×``dim``.

    Attributes:
        needs_annotations: it reads the synthetic ground truth (``annotation``), so it cannot
            run on real images nor on coarse frames (``attributes_from="coarse"``).
        reports_missing: after each call it sets ``last_missing`` (a B bool tensor: frames
            without a face, which took a neighbour's attributes).
    """

    needs_annotations: bool = False
    reports_missing: bool = False


def attribute_capabilities(module: nn.Module | None) -> AttributeCapabilities:
    """The declared capabilities of an attribute extractor; a module that does not subclass
    :class:`AttributeExtractor` (a test double, None) declares none: the defaults."""
    if isinstance(module, AttributeExtractor):
        return module.capabilities
    return AttributeCapabilities()


class AttributeExtractor(nn.Module):
    """Base class of frozen pose/expression extractors; subclasses set ``dim`` and declare
    :attr:`capabilities`."""

    dim: int
    #: what the extractor can do (see :class:`AttributeCapabilities`); subclasses override it
    capabilities: ClassVar[AttributeCapabilities] = AttributeCapabilities()

    @property
    def needs_annotations(self) -> bool:
        """True when the extractor reads the synthetic ground-truth annotations."""
        return self.capabilities.needs_annotations

    def forward(
        self, images: torch.Tensor, annotation: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        raise NotImplementedError
