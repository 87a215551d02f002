"""Per-frame ground-truth annotations of synthetic clips.

Stored beside the VoxCeleb layout as ``<root>/annotations/<split>/<clip name>.npz`` (the clip
name includes its ``.mp4`` suffix, e.g. ``id00003#clip01.mp4.npz``), with arrays:

| key          | shape   | meaning                                                        |
|--------------|---------|----------------------------------------------------------------|
| `pose`       | T×6     | yaw, pitch, roll (radians), tx, ty (image units, [-1, 1] grid), scale |
| `expression` | T×E     | E = 5: mouth_open, smile, blink_left, blink_right, brow_raise  |
| `landmarks`  | T×L×2   | 2-D landmarks, x then y, in the [-1, 1] grid convention        |
| `identity`   | P       | the identity parameters of the clip (renderer-specific)        |

A dataset item carries, per frame, a dict ``{"pose": 6, "expression": E, "landmarks": L×2,
"identity": P}`` of float32 tensors (``default_collate`` batches it to B×…).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

PER_FRAME_KEYS = ("pose", "expression", "landmarks")
ANNOTATION_DIR = "annotations"


def annotation_path(root: str | os.PathLike, split: str, clip_name: str) -> Path:
    return Path(root) / ANNOTATION_DIR / split / f"{clip_name}.npz"


def save_annotation(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    missing = [k for k in (*PER_FRAME_KEYS, "identity") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: annotation lacks {missing}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")  # per process (see VideoWriter)
    np.savez(tmp, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    os.replace(tmp, path)


def load_annotation(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise RuntimeError(f"{path}: unreadable annotation file ({err})") from err


def frame_annotation(annotation: dict[str, np.ndarray], index: int) -> dict[str, torch.Tensor]:
    """The annotation of one frame as float32 tensors (identity is per clip)."""
    out = {
        k: torch.from_numpy(np.asarray(annotation[k][index], dtype=np.float32))
        for k in PER_FRAME_KEYS
    }
    out["identity"] = torch.from_numpy(np.asarray(annotation["identity"], dtype=np.float32))
    return out


def clip_annotation(annotation: dict[str, np.ndarray], indices=None) -> dict[str, torch.Tensor]:
    """Annotation of several frames (T×…; identity stays P)."""
    sel = slice(None) if indices is None else np.asarray(indices)
    out = {
        k: torch.from_numpy(np.asarray(annotation[k][sel], dtype=np.float32))
        for k in PER_FRAME_KEYS
    }
    out["identity"] = torch.from_numpy(np.asarray(annotation["identity"], dtype=np.float32))
    return out
