"""The coarse-generator interface (the frozen animator that gives the coarse frame g).

Every coarse generator (synthetic, FOMM, face-vid2vid) is an ``nn.Module`` called as::

    out = coarse(source, driving)                       # B×3×H×W in [0, 1] each
    g = out["prediction"]                               # B×3×H×W in [0, 1]

Absolute motion unless the implementation is configured otherwise. Generators that need
ground truth (only the synthetic one) also accept ``source_annotation`` / ``driving_annotation``:
dicts of per-frame tensors as written by the synthetic data generator (see
``fadm_lightning.synthetic.annotations``); real generators ignore them.

What a generator can do beyond that is **declared**, never probed: its class sets
``capabilities = CoarseCapabilities(...)`` and the callers (the pipeline, ``animate``,
``rectify``, the loaders) read :func:`coarse_capabilities`. A new generator is a folder under
``models/coarse/`` with a subclass of :class:`CoarseGenerator` and a ``conf/coarse/<name>.yaml``
whose ``_target_`` names it (``docs/extending.md``, "Add a coarse generator").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

Annotation = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class CoarseCapabilities:
    """What a coarse generator offers beyond ``forward(source, driving)["prediction"]``.

    Attributes:
        needs_annotations: it renders from the synthetic ground truth (``source_annotation`` /
            ``driving_annotation``), so it cannot animate real images.
        relative_motion: it has a relative mode driven by a reference driving frame (``animate
            mode=relative``, whose ``best_frame`` picks that frame): the generator has the
            attributes ``mode`` (``"absolute"`` | ``"relative"``) and ``adapt_movement_scale``
            and the method ``set_driving_initial(frame | None)``.
        warped_source: its output also holds ``"deformed"``, the source warped by its motion
            before any decoder (usable as ``guide_inputs=[deformed]``).
        release_file: the key of its weights in the official FADM release
            (``FADMPipeline.from_official_release(<key>=PATH, coarse=<yaml name>)``); None
            when the release has none.
    """

    needs_annotations: bool = False
    relative_motion: bool = False
    warped_source: bool = False
    release_file: str | None = None


def coarse_capabilities(module: nn.Module | None) -> CoarseCapabilities:
    """The declared capabilities of a coarse generator; a module that does not subclass
    :class:`CoarseGenerator` (a test double, None) declares none: the defaults."""
    if isinstance(module, CoarseGenerator):
        return module.capabilities
    return CoarseCapabilities()


class CoarseGenerator(nn.Module):
    """Base class of frozen coarse generators; subclasses implement :meth:`forward` and declare
    :attr:`capabilities`."""

    #: what the generator can do (see :class:`CoarseCapabilities`); subclasses override it
    capabilities: ClassVar[CoarseCapabilities] = CoarseCapabilities()

    @property
    def needs_annotations(self) -> bool:
        """True when the generator needs the synthetic ground-truth annotations."""
        return self.capabilities.needs_annotations

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        source_annotation: Annotation | None = None,
        driving_annotation: Annotation | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
