"""How an item is made from a clip's frames, for every dataset of the VoxCeleb layout (folders,
shards, evaluation pairs, CelebA): which frames (training pairs, validation pairs, test clips),
their tensors (float B×3×H×W in [0, 1], resized), their annotations, and the item dict
(``pair_item``; the batch keys are the contract of ``data/batch.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fadm_lightning.data.batch import FrameAnnotation, PairItem
from fadm_lightning.data.skipped import SKIPPED_KEY, encode_skipped
from fadm_lightning.data.transforms import FrameAugmentation
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.synthetic.annotations import PER_FRAME_KEYS, clip_annotation


# -- shared item building -------------------------------------------------------------------
def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def to_float_frames(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 T×H×W×3 → float32 T×3×h×w in [0, 1], resized (bilinear, antialias) to ``size``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    return x.contiguous()


def check_aspect(
    frames: np.ndarray, size: tuple[int, int], path: str | os.PathLike, tolerance: float = 0.02
) -> None:
    """Raise ``VideoReadError`` when T×H×W×3 ``frames`` do not have the aspect ratio of ``size``.

    Only the scale may differ (a 224×224 VoxCeleb2 crop for 256×256 frames); resizing a frame of
    another shape would distort the face.
    """
    h, w = frames.shape[1:3]
    th, tw = size
    if abs(h * tw - w * th) > tolerance * max(h * tw, w * th):
        raise VideoReadError(
            f"{path}: frames are {w}×{h} (W×H), not of the {tw}×{th} aspect ratio of this "
            "dataset; expected square face crops such as 256×256 or 224×224"
        )


def _split_pair(annotation: dict[str, torch.Tensor], i: int) -> FrameAnnotation:
    """Frame ``i`` of a stacked (T×…) annotation, as ``frame_annotation`` returns it."""
    out = {k: annotation[k][i].contiguous() for k in PER_FRAME_KEYS}
    out["identity"] = annotation["identity"]
    return out


# The rules every clip source shares (the folders here, the LitData shards of ``shards.py``):
# which frames an item takes, how frames become tensors, how an annotation is cut and how the
# item dict is built.
def frames_to_tensor(
    frames: np.ndarray, size: tuple[int, int], where: str | os.PathLike
) -> torch.Tensor:
    """uint8 T×H×W×3 frames of a clip → float32 T×3×H×W in [0, 1] at ``size``; a clip of another
    aspect ratio is a ``VideoReadError`` naming ``where`` (``check_aspect``)."""
    check_aspect(frames, size, where)
    return to_float_frames(frames, size)


def train_pair_indices(num_frames: int, rng: np.random.Generator) -> list[int]:
    """Two frame indices of a training item: drawn with replacement, sorted (source ≤ driving)."""
    return np.sort(rng.choice(num_frames, size=2, replace=True)).tolist()


def val_pair_indices(k: int, num_frames: int) -> tuple[int, int]:
    """(source, driving) frame indices of validation pair ``k`` in a clip of ``num_frames``."""
    return 0, (k * 7919 + num_frames // 2) % num_frames


def clip_frame_indices(num_frames: int, frame_stride: int, max_frames: int | None) -> list[int]:
    """Frames 0, s, 2s, … of a test clip, at most ``max_frames`` of them."""
    return list(range(0, num_frames, frame_stride))[:max_frames]


def select_annotation(
    data: dict[str, np.ndarray], num_frames: int, indices: Sequence[int], where: str | os.PathLike
) -> dict[str, torch.Tensor]:
    """Stacked annotation (T×…) of frames ``indices`` of a clip of ``num_frames`` frames from its
    loaded npz ``data``; ``ValueError`` naming ``where`` when the frame counts differ."""
    if len(data["pose"]) != num_frames:
        raise ValueError(
            f"{where}: annotation has {len(data['pose'])} frames, clip has {num_frames}"
        )
    return clip_annotation(data, list(indices))


def pair_item(
    frames: torch.Tensor,
    name: str,
    annotation: dict[str, torch.Tensor] | None = None,
    augmentation: FrameAugmentation | None = None,
    rng: np.random.Generator | None = None,
    skipped: Sequence[tuple[str, str]] | None = None,
) -> PairItem:
    """The item of a (source, driving) pair: ``frames`` 2×3×H×W, ``annotation`` stacked (2×…).

    With ``augmentation`` the frames (and the annotation, flipped with them) are augmented with
    ``rng``; ``skipped`` (training items only) adds the ``"skipped"`` string. Keys: ``source``,
    ``driving``, ``name`` [, ``skipped``] [, ``source_annotation``, ``driving_annotation``].
    """
    if augmentation is not None:
        frames, annotation = augmentation(frames, rng, annotation)
    item: PairItem = {"source": frames[0], "driving": frames[1], "name": name}
    if skipped is not None:
        item[SKIPPED_KEY] = encode_skipped(skipped)
    if annotation is not None:
        item["source_annotation"] = _split_pair(annotation, 0)
        item["driving_annotation"] = _split_pair(annotation, 1)
    return item
