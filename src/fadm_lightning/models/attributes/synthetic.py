"""The synthetic attribute extractor: ground-truth expression and pose of synthetic frames.

Plays the role of DECA's ``cat(exp, pose)`` (REFERENCE_SPEC §3) for data made by
:mod:`fadm_lightning.synthetic`: it reads the annotation instead of looking at the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fadm_lightning.models.attributes.base import AttributeCapabilities, AttributeExtractor


class SyntheticAttributes(AttributeExtractor):
    """``cat(expression, pose)`` from the annotation: B×11 = [mouth_open, smile, blink_left,
    blink_right, brow_raise | yaw, pitch, roll, tx, ty, scale]."""

    dim = 11
    capabilities = AttributeCapabilities(needs_annotations=True)

    def forward(
        self, images: torch.Tensor, annotation: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Attributes B×11 of ``images`` (B×3×H×W, used for batch size, device and dtype)."""
        if annotation is None:
            raise ValueError(
                "SyntheticAttributes needs the frame annotation (a dict with 'expression' B×5 "
                "and 'pose' B×6), got None; it only works on synthetic data"
            )
        missing = [k for k in ("expression", "pose") if k not in annotation]
        if missing:
            raise ValueError(
                f"SyntheticAttributes: annotation lacks {missing} (has {list(annotation)})"
            )
        attr = torch.cat([annotation["expression"], annotation["pose"]], dim=-1)
        if attr.shape != (images.shape[0], self.dim):
            raise ValueError(
                f"SyntheticAttributes: expected expression B×5 and pose B×6 for B={images.shape[0]} "
                f"images, got {tuple(annotation['expression'].shape)} and "
                f"{tuple(annotation['pose'].shape)}"
            )
        return attr.to(device=images.device, dtype=images.dtype)
