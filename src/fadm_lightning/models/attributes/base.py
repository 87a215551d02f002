"""The attribute-extractor interface (the frozen 3-D face encoder of eq. 9).

Every extractor (synthetic, DECA, landmarks) is an ``nn.Module`` with an integer attribute
``dim`` and is called as::

    attr = extractor(images)            # images B×3×H×W in [0, 1] -> B×dim

The motion condition uses ``attr(source) − attr(driving)`` (REFERENCE_SPEC §3). Extractors that
need ground truth (only the synthetic one) also accept ``annotation``: a dict of per-frame tensors
as written by the synthetic data generator; real extractors ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class AttributeExtractor(nn.Module):
    """Base class of frozen pose/expression extractors; subclasses set ``dim``."""

    dim: int
    needs_annotations: bool = False

    def forward(
        self, images: torch.Tensor, annotation: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        raise NotImplementedError
