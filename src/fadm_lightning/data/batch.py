"""The batch contract: what every dataset hands the systems, written down once.

A dataset item is a dict of the keys below; ``default_collate`` stacks it into a batch, every
tensor gaining a leading batch dimension B and every string becoming a list of B strings. The
systems (``systems/fadm.py``, ``systems/fomm.py``, ``systems/distill.py``), the evaluation and the
benchmarks read only these keys, and never read annotation files or know which dataset a batch
came from: what a frame's annotation means is the dataset's business (it reads the files,
cuts them to the item's frames, flips them with the frames), and :func:`clip_frames` is the one
way to cut a test clip's frames and their annotations.

Pairs (:class:`PairBatch`: training items, validation pairs; CelebA sources carry ``source`` and
``name`` only):

| key                  | item           | batch            | dtype / range         | present                     |
|----------------------|----------------|------------------|-----------------------|-----------------------------|
| `source`             | 3×H×W          | B×3×H×W          | float32 in [0, 1]     | always                      |
| `driving`            | 3×H×W          | B×3×H×W          | float32 in [0, 1]     | pairs (not CelebA sources)  |
| `name`               | str            | list[str]        | clip (or image) name  | always                      |
| `skipped`            | str            | list[str]        | ``data/skipped.py``   | training items              |
| `source_annotation`  | FrameAnnotation| B×… each         | float32               | annotated roots             |
| `driving_annotation` | FrameAnnotation| B×… each         | float32               | annotated roots             |

Clips (:class:`ClipBatch`: test and predict, batch size 1):

| key          | item           | batch          | dtype / range     | present           |
|--------------|----------------|----------------|-------------------|-------------------|
| `video`      | T×3×H×W        | 1×T×3×H×W      | float32 in [0, 1] | always            |
| `name`       | str            | [str]          | clip name         | always            |
| `annotation` | ClipAnnotation | 1×T×… (identity 1×P) | float32     | annotated roots   |

Cross-identity pairs of ``data/pairs.py`` (:class:`CrossPairItem`, read by the evaluation):
``source`` 3×H×W, ``video`` T×3×H×W (float32 in [0, 1]), ``source_name``, ``driving_name``.

Annotations (:class:`FrameAnnotation`, the ground truth of the synthetic world; a real dataset
has none and leaves the keys out): ``pose`` 6 (yaw, pitch, roll in radians, tx, ty, scale),
``expression`` E, ``landmarks`` L×2 in the [-1, 1] grid, ``identity`` P (per clip). In a clip
annotation the per-frame keys have a leading T; ``identity`` stays P.

:func:`check_item` (and :func:`check_batch`) verify a dict against this table; the tests run
them on every dataset's items and batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import torch

__all__ = [
    "ANNOTATION_KEYS",
    "IMAGE_KEYS",
    "STRING_KEYS",
    "ClipAnnotation",
    "ClipBatch",
    "ClipItem",
    "CrossPairItem",
    "FrameAnnotation",
    "PairBatch",
    "PairItem",
    "check_batch",
    "check_item",
    "clip_frames",
]


class FrameAnnotation(TypedDict):
    """The annotation of one frame (item) or of B frames (batch: a leading B on each)."""

    pose: torch.Tensor  #: 6: yaw, pitch, roll (radians), tx, ty ([-1, 1] grid), scale
    expression: torch.Tensor  #: E = 5: mouth_open, smile, blink_left, blink_right, brow_raise
    landmarks: torch.Tensor  #: L×2: x then y in the [-1, 1] grid
    identity: torch.Tensor  #: P: the clip's identity parameters


#: the annotation of T frames of a clip: pose T×6, expression T×E, landmarks T×L×2, identity P
ClipAnnotation = FrameAnnotation


class PairBatch(TypedDict, total=False):
    """A (source, driving) pair (item) or B of them (batch); see the module's table."""

    source: torch.Tensor
    driving: torch.Tensor
    name: str | list[str]
    skipped: str | list[str]
    source_annotation: FrameAnnotation
    driving_annotation: FrameAnnotation


class ClipBatch(TypedDict, total=False):
    """A whole test clip (item) or a batch of one; see the module's table."""

    video: torch.Tensor
    name: str | list[str]
    annotation: ClipAnnotation


class CrossPairItem(TypedDict):
    """A cross-identity evaluation pair (``data/pairs.py``): a source image, a driving clip."""

    source: torch.Tensor
    video: torch.Tensor
    source_name: str
    driving_name: str


PairItem = PairBatch  #: an item is a batch without its leading B (the same keys)
ClipItem = ClipBatch

#: image keys → dimensions of an item's tensor (a batch has one more)
IMAGE_KEYS = {"source": 3, "driving": 3, "video": 4}
#: annotation keys → whether they hold a whole clip (leading T) rather than one frame
ANNOTATION_KEYS = {"source_annotation": False, "driving_annotation": False, "annotation": True}
STRING_KEYS = ("name", "skipped", "source_name", "driving_name")
#: dimensions of one frame's annotation tensors (identity is per clip: never a T)
_ANNOTATION_DIMS = {"pose": 1, "expression": 1, "landmarks": 2, "identity": 1}


def check_item(item: Mapping[str, Any], batched: bool = False) -> None:
    """Raise ``ValueError`` listing how ``item`` (or, ``batched``, a collated batch) breaks the
    contract: an unknown key, a tensor of the wrong rank, dtype or range, frames of differing
    sizes, an annotation with missing keys or of another frame count than its frames."""
    lead = 1 if batched else 0
    problems: list[str] = []
    sizes = {}
    for key, value in item.items():
        if key in IMAGE_KEYS:
            rank = IMAGE_KEYS[key] + lead
            if not isinstance(value, torch.Tensor) or value.dim() != rank:
                problems.append(f"{key}: expected a {rank}-d tensor, got {_describe(value)}")
                continue
            if value.dtype != torch.float32 or value.shape[-3] != 3:
                problems.append(f"{key}: expected float32 …×3×H×W, got {_describe(value)}")
            elif value.numel() and (value.min() < 0 or value.max() > 1):
                problems.append(f"{key}: values outside [0, 1]")
            sizes[key] = tuple(value.shape[-2:])
        elif key in ANNOTATION_KEYS:
            frames = _frames(item, key, lead)
            problems += _check_annotation(key, value, lead, ANNOTATION_KEYS[key], frames)
        elif key in STRING_KEYS:
            ok = isinstance(value, str) if not batched else _strings(value)
            if not ok:
                problems.append(f"{key}: expected {'a list of ' if batched else 'a '}str")
        else:
            problems.append(f"{key}: not a key of the batch contract (data/batch.py)")
    if len(set(sizes.values())) > 1:
        problems.append(f"frames of different sizes: {sizes}")
    if problems:
        raise ValueError("; ".join(problems))


def check_batch(batch: Mapping[str, Any]) -> None:
    """:func:`check_item` on a collated batch."""
    check_item(batch, batched=True)


def clip_frames(batch: ClipBatch, frames: slice) -> tuple[torch.Tensor, FrameAnnotation | None]:
    """Frames ``frames`` of the clip of a test batch (batch size 1) and their annotations:
    ``video`` 1×T×3×H×W → n×3×H×W and ``annotation`` ``{"pose": 1×T×6, …, "identity": 1×P}`` →
    the :class:`FrameAnnotation` of n frames ``{"pose": n×6, …, "identity": n×P}`` (None when
    the batch has none): a batch of n (source or driving) frames as the systems take them."""
    video = batch["video"][0][frames]
    annotation = batch.get("annotation")
    if annotation is None:
        return video, None
    out = {k: v[0, frames] for k, v in annotation.items() if k != "identity"}
    count = next(iter(out.values())).shape[0]
    out["identity"] = annotation["identity"][0][None].expand(count, -1)
    return video, out  # type: ignore[return-value]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _strings(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _frames(item: Mapping[str, Any], key: str, lead: int) -> int | None:
    """The frame count an annotation must match: the clip's T (``video``), else None."""
    video = item.get("video")
    if key == "annotation" and isinstance(video, torch.Tensor) and video.dim() == 4 + lead:
        return int(video.shape[lead])
    return None


def _check_annotation(
    key: str, value: Any, lead: int, per_clip: bool, frames: int | None
) -> list[str]:
    if not isinstance(value, Mapping) or set(value) != set(_ANNOTATION_DIMS):
        got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
        return [f"{key}: expected a dict of {sorted(_ANNOTATION_DIMS)}, got {got}"]
    problems = []
    for name, dims in _ANNOTATION_DIMS.items():
        tensor = value[name]
        rank = dims + lead + (per_clip and name != "identity")
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != rank:
            problems.append(f"{key}.{name}: expected a {rank}-d tensor, got {_describe(tensor)}")
        elif tensor.dtype != torch.float32:
            problems.append(f"{key}.{name}: expected float32, got {tensor.dtype}")
        elif per_clip and name != "identity" and frames is not None:
            if tensor.shape[lead] != frames:
                problems.append(f"{key}.{name}: {tensor.shape[lead]} frames, the clip {frames}")
    pose = value["pose"]
    if isinstance(pose, torch.Tensor) and pose.dim() and pose.shape[-1] != 6:
        problems.append(f"{key}.pose: expected 6 values per frame, got {pose.shape[-1]}")
    return problems
