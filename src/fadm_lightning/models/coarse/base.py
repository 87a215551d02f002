"""The coarse-generator interface (the frozen animator that gives the coarse frame g).

Every coarse generator (synthetic, FOMM, face-vid2vid) is an ``nn.Module`` called as::

    out = coarse(source, driving)                       # B×3×H×W in [0, 1] each
    g = out["prediction"]                               # B×3×H×W in [0, 1]

Absolute motion unless the implementation is configured otherwise. Generators that need
ground truth (only the synthetic one) also accept ``source_annotation`` / ``driving_annotation``:
dicts of per-frame tensors as written by the synthetic data generator (see
``fadm_lightning.synthetic.annotations``); real generators ignore them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

Annotation = Mapping[str, torch.Tensor]


class CoarseGenerator(nn.Module):
    """Base class of frozen coarse generators; subclasses implement :meth:`forward`."""

    #: True when the generator needs the synthetic ground-truth annotations.
    needs_annotations: bool = False

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        source_annotation: Annotation | None = None,
        driving_annotation: Annotation | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
