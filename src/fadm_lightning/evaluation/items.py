"""The items each protocol evaluates, from the test data (:func:`build_datamodule`: ``data=…``
or the checkpoint's own data config): :class:`ClipItems` for ``reconstruction`` (a test clip,
source = its first frame) and :class:`PairItems` for ``cross_identity`` (a source portrait and a
driving clip of another person, from ``pairs.csv``); each item is a dict with ``key``, the source
and driving frames and their annotations (:func:`build_items`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset

from fadm_lightning.data.pairs import CrossIdentityPairsDataset, load_or_make_pairs
from fadm_lightning.evaluation.protocols import EvaluationError
from fadm_lightning.evaluation.systems import System
from fadm_lightning.synthetic.annotations import annotation_path, clip_annotation, load_annotation


def build_datamodule(cfg: DictConfig, main: System):
    """The test data: ``data=…`` when given, else the checkpoint's own data config."""
    if cfg.get("data"):
        data_cfg = cfg.data
    elif main.config is not None and "data" in main.config:
        data_cfg = main.config.data
    else:
        raise EvaluationError(
            "no data config: the official release carries none; add data=voxceleb "
            "paths.data_dir=<folder holding vox-png> (or another data config)"
        )
    expected = None if main.config is None else main.config.get("data", {}).get("image_size")
    if expected is not None and data_cfg.get("image_size") != expected:
        raise EvaluationError(
            f"data.image_size={data_cfg.get('image_size')} but the checkpoint was trained at "
            f"{expected}; set data.image_size={expected}"
        )
    datamodule = instantiate(data_cfg, num_workers=0, persistent_workers=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule, data_cfg


def _per_frame(annotation: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """A clip annotation (per-frame T×…, ``identity`` P) with ``identity`` repeated per frame."""
    if annotation is None:
        return None
    count = next(v.shape[0] for k, v in annotation.items() if k != "identity")
    return {
        k: (v[None].expand(count, *v.shape) if k == "identity" else v)
        for k, v in annotation.items()
    }


class ClipItems(Dataset):
    """Reconstruction items: a test clip, source = its first frame."""

    def __init__(self, clips: Dataset) -> None:
        self.clips = clips
        self.keys = [clip.name for clip in clips.clips]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.clips[i]
        annotation = _per_frame(item.get("annotation"))
        return {
            "key": item["name"],
            "source_name": item["name"],
            "driving_name": item["name"],
            "source": item["video"][:1],
            "video": item["video"],
            "source_annotation": None
            if annotation is None
            else {k: v[:1] for k, v in annotation.items()},
            "annotation": annotation,
        }


class PairItems(Dataset):
    """Cross-identity items: a source portrait and a driving clip of another person."""

    def __init__(self, pairs: CrossIdentityPairsDataset) -> None:
        self.pairs = pairs
        self.keys = [f"{p.source}→{p.driving}" for p in pairs.pairs]
        self.annotated = pairs.index.has_annotations("test")

    def __len__(self) -> int:
        return len(self.keys)

    def _annotation(self, name: str, indices: list[int]) -> dict[str, torch.Tensor]:
        raw = load_annotation(annotation_path(self.pairs.index.root, "test", name))
        return _per_frame(clip_annotation(raw, indices))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.pairs[i]
        pair = self.pairs.pairs[i]
        out = {
            "key": self.keys[i],
            "source_name": pair.source,
            "driving_name": pair.driving,
            "source": item["source"][None],
            "video": item["video"],
            "source_annotation": None,
            "annotation": None,
        }
        if self.annotated and pair.source_is_clip:
            clip = self.pairs.clips[pair.driving]
            indices = list(range(0, clip.num_frames, self.pairs.frame_stride))
            indices = indices[: self.pairs.max_frames]
            source_clip = self.pairs.clips[pair.source]
            source_frame = min(self.pairs.source_frame, source_clip.num_frames - 1)
            out["source_annotation"] = self._annotation(pair.source, [source_frame])
            out["annotation"] = self._annotation(pair.driving, indices)
        return out


def build_items(cfg: DictConfig, datamodule, out_dir: Path) -> Dataset:
    if cfg.protocol == "reconstruction":
        return ClipItems(datamodule.test_set)
    saved = out_dir / "pairs.csv"
    pairs = load_or_make_pairs(
        datamodule.index,
        pairs_csv=saved if saved.is_file() else cfg.pairs.get("csv"),
        save_to=saved,
        num_sources=cfg.pairs.num_sources,
        num_driving=cfg.pairs.num_driving,
        seed=cfg.pairs.seed,
        num_pairs=cfg.pairs.get("num_pairs"),
    )
    dataset = CrossIdentityPairsDataset(
        pairs,
        datamodule.index,
        image_size=datamodule.image_size,
        max_frames=datamodule.test_max_frames,
        frame_stride=datamodule.test_frame_stride,
    )
    return PairItems(dataset)
