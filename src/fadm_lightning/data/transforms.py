"""FOMM training augmentations (REFERENCE_SPEC §5.2) for the frames of one item and their annotation.

``RandomFlip`` then ``ColorJitter`` as in FOMM's ``AllAugmentationTransform``:

* flip: with probability ``time_flip_p`` (0.5) reverse the time order *and stop*; otherwise with
  probability ``hflip_p`` (0.5) mirror horizontally, so P(mirror) = 0.25. With the two frames of a
  training item, a time flip swaps source and driving.
* colour jitter: brightness, contrast, saturation factors in [1 − s, 1 + s] (s = 0.1) and a hue
  shift in [−0.1, 0.1], drawn once per item (the same for every frame), applied in random order.

A horizontal mirror also mirrors the annotation (layout in ``annotations.py``): landmark x is
negated (the [-1, 1] grid convention makes a mirror exactly x → −x), yaw, roll and tx are negated,
blink_left and blink_right are swapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

Frames = np.ndarray | torch.Tensor
Annotation = Mapping[str, Any]

POSE_NEGATED_BY_MIRROR = (0, 2, 3)  # yaw, roll, tx of (yaw, pitch, roll, tx, ty, scale)
EXPRESSION_SWAPPED_BY_MIRROR = (2, 3)  # blink_left ↔ blink_right of (mouth, smile, bl, br, brow)
PER_FRAME_KEYS = ("pose", "expression", "landmarks")


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else np.array(value, copy=True)


def reverse_time(annotation: Annotation) -> dict[str, Any]:
    """Annotation with its per-frame entries (leading T axis) in reverse order."""
    out = dict(annotation)
    for key in PER_FRAME_KEYS:
        if key in out:
            value = out[key]
            out[key] = value.flip(0) if isinstance(value, torch.Tensor) else value[::-1].copy()
    return out


def mirror_annotation(
    annotation: Annotation, landmark_flip_index: Sequence[int] | None = None
) -> dict[str, Any]:
    """Annotation of the horizontally mirrored frames (numpy arrays or tensors, any leading dims).

    ``landmark_flip_index`` optionally reorders the landmarks after negating x (for a landmark
    scheme whose indices have a left/right meaning, e.g. the 68-point one).
    """
    out = dict(annotation)
    if "landmarks" in out:  # …×L×2, x first
        landmarks = _copy(out["landmarks"])
        landmarks[..., 0] = -landmarks[..., 0]
        if landmark_flip_index is not None:
            landmarks = landmarks[..., list(landmark_flip_index), :]
        out["landmarks"] = landmarks
    if "pose" in out:  # …×6
        pose = _copy(out["pose"])
        for i in POSE_NEGATED_BY_MIRROR:
            pose[..., i] = -pose[..., i]
        out["pose"] = pose
    if "expression" in out:  # …×E
        expression = _copy(out["expression"])
        a, b = EXPRESSION_SWAPPED_BY_MIRROR
        expression[..., [a, b]] = expression[..., [b, a]]
        out["expression"] = expression
    return out


class FrameAugmentation:
    """Random flip then colour jitter, one random draw per item, from an explicit generator.

    Frames are a stack of one item's frames: a tensor T×3×H×W or a numpy array T×H×W×3, uint8 in
    [0, 255] or float in [0, 1]; they come back in the same layout and dtype.

    Args:
        time_flip_p (`float`, defaults to 0.5): probability of reversing the time order.
        hflip_p (`float`, defaults to 0.5): probability of a horizontal mirror when time was
            not reversed.
        brightness, contrast, saturation (`float`, default 0.1): factor drawn in [1 − s, 1 + s].
        hue (`float`, defaults to 0.1): hue shift drawn in [−hue, hue] (at most 0.5).
        landmark_flip_index (`Sequence[int]`, *optional*): landmark reordering applied on a mirror.
    """

    def __init__(
        self,
        time_flip_p: float = 0.5,
        hflip_p: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.1,
        landmark_flip_index: Sequence[int] | None = None,
    ) -> None:
        for name, p in (("time_flip_p", time_flip_p), ("hflip_p", hflip_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        for name, s in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= s < 1.0:
                raise ValueError(f"{name} strength must lie in [0, 1), got {s}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue strength must lie in [0, 0.5], got {hue}")
        self.time_flip_p = time_flip_p
        self.hflip_p = hflip_p
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.landmark_flip_index = (
            None if landmark_flip_index is None else list(landmark_flip_index)
        )

    def __call__(
        self, frames: Frames, rng: np.random.Generator, annotation: Annotation | None = None
    ) -> tuple[Frames, dict[str, Any] | None]:
        """Augment ``frames`` (and ``annotation`` with per-frame entries T×…) of one item."""
        frames, annotation = self.random_flip(frames, rng, annotation)
        return self.color_jitter(frames, rng), annotation

    def random_flip(
        self, frames: Frames, rng: np.random.Generator, annotation: Annotation | None = None
    ) -> tuple[Frames, dict[str, Any] | None]:
        """Time reversal (p = time_flip_p), else horizontal mirror (p = hflip_p)."""
        annotation = None if annotation is None else dict(annotation)
        time_flip = rng.random() < self.time_flip_p
        mirror = rng.random() < self.hflip_p
        if time_flip:
            frames = frames.flip(0) if isinstance(frames, torch.Tensor) else frames[::-1].copy()
            return frames, None if annotation is None else reverse_time(annotation)
        if mirror:
            # width axis: last of T×3×H×W tensors, third of T×H×W×3 arrays
            frames = (
                frames.flip(-1) if isinstance(frames, torch.Tensor) else frames[:, :, ::-1].copy()
            )
            if annotation is not None:
                annotation = mirror_annotation(annotation, self.landmark_flip_index)
        return frames, annotation

    def color_jitter(self, frames: Frames, rng: np.random.Generator) -> Frames:
        """Same brightness/contrast/saturation/hue change for all frames, ops in random order."""
        factors = [
            rng.uniform(1.0 - self.brightness, 1.0 + self.brightness),
            rng.uniform(1.0 - self.contrast, 1.0 + self.contrast),
            rng.uniform(1.0 - self.saturation, 1.0 + self.saturation),
            rng.uniform(-self.hue, self.hue),
        ]
        order = rng.permutation(4)
        identity = (1.0, 1.0, 1.0, 0.0)
        if all(factors[i] == identity[i] for i in range(4)):
            return frames
        is_numpy = isinstance(frames, np.ndarray)
        # T×3×H×W tensor view of the stack
        x = (
            torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            if is_numpy
            else frames
        )
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for i in order:
            if factors[i] != identity[i]:
                x = ops[i](x, float(factors[i]))
        return x.permute(0, 2, 3, 1).numpy() if is_numpy else x
