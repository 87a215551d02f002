"""Evaluation pairs for cross-identity reenactment: (source image, driving video of another person).

A pair list is a CSV with the columns ``source,driving`` (the shape of the community's
``vox256.csv``, REFERENCE_SPEC §5.3; other columns are ignored when reading):

* ``driving``: a test clip name, ``<person id>#<video id>#<start>#<end>.mp4`` (the ``.mp4``
  suffix may be left out);
* ``source``: either a test clip name (its first frame is the source image, as FOMM's
  ``animate.py``) or an image file name of a source-image set such as CelebA (``000123.jpg``):
  any name that does not end in ``.mp4`` is an image.

``read_pairs_csv`` keeps the rows whose clips are in the test split (dropping the others with a
count, as FOMM's ``PairedDataset``); ``make_random_pairs`` draws pairs in the paper's shape
(10 sources × 14 driving videos of other identities) from a seed, and ``write_pairs_csv`` saves
them so an evaluation can be repeated exactly. ``CrossIdentityPairsDataset`` reads them.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fadm_lightning.data.batch import CrossPairItem
from fadm_lightning.data.items import _size, check_aspect, to_float_frames
from fadm_lightning.data.voxceleb import CLIP_SUFFIX, Clip, VoxCelebIndex, person_id
from fadm_lightning.media.video import read_frames

log = logging.getLogger(__name__)

PAPER_NUM_SOURCES = 10
PAPER_NUM_DRIVING = 14


@dataclass(frozen=True)
class Pair:
    """One evaluation pair: ``source`` (a clip name or an image name) and ``driving`` (a clip)."""

    source: str
    driving: str

    @property
    def source_is_clip(self) -> bool:
        return is_clip_name(self.source)


def is_clip_name(name: str) -> bool:
    return name.endswith(CLIP_SUFFIX)


def _clip_name(name: str, clips: Collection[str]) -> str:
    """``name`` as it appears in ``clips`` (adding the ``.mp4`` suffix when that matches)."""
    name = name.strip()
    if name not in clips and not name.endswith(CLIP_SUFFIX) and name + CLIP_SUFFIX in clips:
        return name + CLIP_SUFFIX
    return name


def read_pairs_csv(
    path: str | os.PathLike,
    test_clips: Collection[str],
    source_images: Collection[str] | None = None,
    num_pairs: int | None = None,
) -> tuple[list[Pair], int]:
    """Pairs of a CSV with ``source`` and ``driving`` columns; returns ``(pairs, dropped)``.

    A row is dropped (and counted) when its driving clip is not in ``test_clips``, or when its
    source is a clip not in ``test_clips``, or an image not in ``source_images`` (when given).
    The first ``num_pairs`` kept rows are returned (all when None), in file order.
    """
    path = Path(path)
    clips = set(test_clips)
    images = None if source_images is None else set(source_images)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if "source" not in fields or "driving" not in fields:
                raise ValueError(
                    f"{path}: a pairs CSV needs the columns 'source' and 'driving', got {fields}"
                )
            rows = [{k.strip(): (v or "") for k, v in row.items() if k} for row in reader]
    except OSError as err:
        raise FileNotFoundError(f"cannot read the pairs CSV {path} ({err})") from err

    pairs, dropped, examples = [], 0, []
    for row in rows:
        driving = _clip_name(row["driving"], clips)
        source = row["source"].strip()
        if is_clip_name(source) or source + CLIP_SUFFIX in clips:
            source = _clip_name(source, clips)
            source_ok = source in clips
        else:
            source_ok = images is None or source in images
        if driving in clips and source_ok:
            pairs.append(Pair(source, driving))
        else:
            dropped += 1
            if len(examples) < 3:
                examples.append(f"{row['source']} → {row['driving']}")
    if dropped:
        log.warning(
            "%s: %d of %d pairs dropped (clip or image not in the test set), e.g. %s",
            path,
            dropped,
            len(rows),
            "; ".join(examples),
        )
    if num_pairs is not None:
        pairs = pairs[:num_pairs]
    return pairs, dropped


def write_pairs_csv(pairs: Iterable[Pair], path: str | os.PathLike) -> Path:
    """Save pairs as a ``source,driving`` CSV (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["source", "driving"])
        for pair in pairs:
            writer.writerow([pair.source, pair.driving])
    os.replace(tmp, path)
    return path


def _spread_over_people(
    rng: np.random.Generator, clips: Sequence[str], count: int, exclude_person: str | None = None
) -> list[str]:
    """``count`` distinct clips drawn so that people repeat only when there are too few of them.

    Round robin over the people (in random order), each time a random unused clip of that person.
    """
    by_person: dict[str, list[str]] = {}
    for name in sorted(clips):
        if person_id(name) != exclude_person:
            by_person.setdefault(person_id(name), []).append(name)
    for names in by_person.values():
        rng.shuffle(names)
    people = sorted(by_person)
    rng.shuffle(people)
    chosen: list[str] = []
    while len(chosen) < count and any(by_person.values()):
        for person in people:
            if by_person[person] and len(chosen) < count:
                chosen.append(by_person[person].pop())
    return chosen


def make_random_pairs(
    test_clips: Sequence[str],
    num_sources: int = PAPER_NUM_SOURCES,
    num_driving: int = PAPER_NUM_DRIVING,
    seed: int = 0,
    source_images: Sequence[str] | None = None,
) -> list[Pair]:
    """Reproducible cross-identity pairs in the paper's shape (``num_sources`` × ``num_driving``).

    * Sources are test clips (first frames) of ``num_sources`` different people when
      ``source_images`` is None; for each of them ``num_driving`` driving clips are drawn among the
      *other* people's test clips (spread over as many people as possible), so no pair shares an
      identity. Needs at least two people.
    * With ``source_images`` (e.g. CelebA test image names), sources are ``num_sources`` of them
      and all sources share one set of ``num_driving`` driving clips (different people from
      VoxCeleb by construction).

    The draw depends only on ``seed`` and the sorted names, not on their order. Rows are ordered
    source by source. Fewer pairs come back (with a warning) when there are not enough clips.
    """
    if num_sources < 1 or num_driving < 1:
        raise ValueError(f"need num_sources, num_driving ≥ 1, got {num_sources}, {num_driving}")
    clips = sorted(set(test_clips))
    if not clips:
        raise ValueError("no test clips to make pairs from")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    pairs: list[Pair] = []
    if source_images is not None:
        images = sorted(set(source_images))
        if not images:
            raise ValueError("source_images is empty")
        take = min(num_sources, len(images))
        sources = [images[i] for i in sorted(rng.choice(len(images), size=take, replace=False))]
        driving = _spread_over_people(rng, clips, num_driving)
        pairs = [Pair(s, d) for s in sources for d in driving]
    else:
        people = sorted({person_id(c) for c in clips})
        if len(people) < 2:
            raise ValueError(
                f"cross-identity pairs need test clips of at least two people, got {people}"
            )
        sources = _spread_over_people(rng, clips, num_sources)
        for source in sources:
            driving = _spread_over_people(rng, clips, num_driving, exclude_person=person_id(source))
            pairs += [Pair(source, d) for d in driving]
    expected = num_sources * num_driving
    if len(pairs) < expected:
        log.warning(
            "made %d cross-identity pairs instead of %d (%d sources × %d driving): too few test "
            "clips or source images",
            len(pairs),
            expected,
            num_sources,
            num_driving,
        )
    return pairs


def load_or_make_pairs(
    index: VoxCelebIndex,
    pairs_csv: str | os.PathLike | None = None,
    save_to: str | os.PathLike | None = None,
    source_images: Sequence[str] | None = None,
    num_sources: int = PAPER_NUM_SOURCES,
    num_driving: int = PAPER_NUM_DRIVING,
    seed: int = 0,
    num_pairs: int | None = None,
    split: str = "test",
) -> list[Pair]:
    """Pairs from ``pairs_csv`` when given, else random ones from ``seed``; saved to ``save_to``."""
    clips = [c.name for c in index.clips[split]]
    if pairs_csv is not None:
        pairs, _ = read_pairs_csv(pairs_csv, clips, source_images, num_pairs)
    else:
        pairs = make_random_pairs(clips, num_sources, num_driving, seed, source_images)
        if num_pairs is not None:
            pairs = pairs[:num_pairs]
    if not pairs:
        raise ValueError(f"no usable evaluation pairs ({pairs_csv or 'random'}) in {index.root}")
    if save_to is not None:
        write_pairs_csv(pairs, save_to)
    return pairs


class CrossIdentityPairsDataset(Dataset):
    """Items of cross-identity pairs: the source image and the whole driving video.

    Item: ``{"source": 3×H×W, "video": T×3×H×W, "source_name": str, "driving_name": str}``
    float32 in [0, 1]. A clip source gives its frame ``source_frame`` (0: FOMM's first frame); an
    image source is loaded by ``source_images.load(name)`` (e.g. a ``CelebASourceDataset``,
    which applies its crop). Read errors are raised, naming the file.

    Args:
        pairs (`Sequence[Pair]`): the pairs (``read_pairs_csv`` / ``make_random_pairs``).
        index (`VoxCelebIndex`): the clips (driving, and clip sources).
        image_size (`int` or `(H, W)`, defaults to 256): output frame size.
        source_images (*optional*): an object with ``load(name) -> 3×H×W`` for image sources.
        max_frames (`int`, *optional*), frame_stride (`int`, defaults to 1): driving frames
            0, s, 2s, … at most ``max_frames`` of them.
        source_frame (`int`, defaults to 0): frame of a clip source used as the source image.
        split (`str`, defaults to "test"): the index split holding the clips.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        index: VoxCelebIndex,
        image_size: int | Sequence[int] = 256,
        source_images: Any | None = None,
        max_frames: int | None = None,
        frame_stride: int = 1,
        source_frame: int = 0,
        split: str = "test",
    ) -> None:
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be ≥ 1, got {frame_stride}")
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("no pairs given")
        self.index = index
        self.size = _size(image_size)
        self.source_images = source_images
        self.max_frames = max_frames
        self.frame_stride = frame_stride
        self.source_frame = source_frame
        self.clips: dict[str, Clip] = {c.name: c for c in index.clips[split]}
        missing = sorted(
            {p.driving for p in self.pairs if p.driving not in self.clips}
            | {p.source for p in self.pairs if p.source_is_clip and p.source not in self.clips}
        )
        if missing:
            raise ValueError(
                f"{len(missing)} clip(s) of the pairs are not in {index.root / split}, "
                f"e.g. {missing[0]}; read the CSV with read_pairs_csv to drop such rows"
            )
        if source_images is None and any(not p.source_is_clip for p in self.pairs):
            example = next(p.source for p in self.pairs if not p.source_is_clip)
            raise ValueError(
                f"pair source {example!r} is an image name but no source_images set was given"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def _frames(self, clip: Clip, indices: list[int]) -> torch.Tensor:
        frames = read_frames(clip.path, indices)
        check_aspect(frames, self.size, clip.path)
        return to_float_frames(frames, self.size)

    def __getitem__(self, k: int) -> CrossPairItem:
        pair = self.pairs[k]
        if pair.source_is_clip:
            clip = self.clips[pair.source]
            source = self._frames(clip, [min(self.source_frame, clip.num_frames - 1)])[0]
        else:
            source = self.source_images.load(pair.source)
            if tuple(source.shape[-2:]) != self.size:
                source = F.interpolate(
                    source[None], self.size, mode="bilinear", align_corners=False, antialias=True
                )[0].clamp_(0.0, 1.0)
        driving = self.clips[pair.driving]
        indices = list(range(0, driving.num_frames, self.frame_stride))[: self.max_frames]
        return {
            "source": source,
            "video": self._frames(driving, indices),
            "source_name": pair.source,
            "driving_name": pair.driving,
        }
