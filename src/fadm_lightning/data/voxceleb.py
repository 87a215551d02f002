"""Datasets over a root in the VoxCeleb layout (REFERENCE_SPEC §5.1–5.2).

```
root/train/<person id>#<video id>#<start>#<end>.mp4          an mp4 file, or a folder of that
root/test/…                                                  name holding 0000000.png, …
root/val/…                                                   optional (FOMM's VoxCeleb has none)
root/annotations/<split>/<clip name>.npz                     optional, see annotations.py
```

* ``VoxCelebIndex``: clips, frame counts and person ids of every split present, cached as JSON.
* ``VoxCelebTrainDataset``: FOMM ``FramesDataset`` training items (two frames of one clip) with
  identity sampling, ``DatasetRepeater``-style repeats and the FOMM augmentations.
* ``VoxCelebPairsDataset``: deterministic (source, driving) frame pairs of one split's clips
  (validation: ``val/`` where the root has it, e.g. the synthetic world; FOMM's layout only has
  ``test/``).
* ``VoxCelebClipDataset``: whole test clips (reconstruction evaluation, §5.4).

Frames are float32 in [0, 1], 3×H×W (or T×3×H×W), resized on load when their size differs from
``image_size`` (bilinear, antialiased; VoxCeleb2 crops are 224×224). A clip whose aspect ratio
differs from ``image_size``'s (a raw video dropped into the tree, not a face crop) is a read error.

Broken data: clips that cannot be opened are left out of the index (one warning). A read error
while training (a truncated mp4, an unreadable PNG frame, a clip of the wrong shape) does not stop
the epoch: ``VoxCelebTrainDataset`` draws another clip and lists what it skipped in the item's
``"skipped"`` string (``video.encode_skipped``), which the ``DataErrorsCallback`` counts and
reports once per epoch. Evaluation datasets raise the error, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fadm_lightning.data.batch import ClipItem, PairItem
from fadm_lightning.data.items import (
    _size,
    clip_frame_indices,
    frames_to_tensor,
    pair_item,
    select_annotation,
    train_pair_indices,
    val_pair_indices,
)
from fadm_lightning.data.transforms import FrameAugmentation
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.video import count_frames, read_frames
from fadm_lightning.synthetic.annotations import (
    ANNOTATION_DIR,
    annotation_path,
    load_annotation,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "test")  # required in every root
OPTIONAL_SPLITS = ("val",)  # indexed when the folder exists (the synthetic world writes one)
CLIP_SUFFIX = ".mp4"
INDEX_VERSION = 1
LAYOUT_HELP = (
    "expected the VoxCeleb layout: <root>/train/ and <root>/test/, each holding clips named "
    "'<person id>#<video id>#<start>#<end>.mp4', either mp4 files or folders of that name with "
    "7-digit PNG frames (0000000.png, …); an optional <root>/val/ of the same form holds "
    "validation identities"
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fadm_lightning" / "voxceleb_index"


def carve_persons(person_ids: Sequence[str], amount: int | float) -> list[str]:
    """Validation persons carved from ``person_ids`` (a split's persons): ``amount`` persons (an
    int ≥ 1) or that fraction of them (a float in (0, 1), at least one), always the same ones
    (ordered by the SHA-1 of the id), and never all of them."""
    ids = sorted(set(person_ids))
    if isinstance(amount, bool) or not (
        (isinstance(amount, int) and amount >= 1) or (isinstance(amount, float) and 0 < amount < 1)
    ):
        raise ValueError(f"val_persons must be an int ≥ 1 or a fraction in (0, 1), got {amount!r}")
    count = amount if isinstance(amount, int) else max(1, round(amount * len(ids)))
    if count >= len(ids):
        raise ValueError(
            f"val_persons={amount} would carve {count} of the {len(ids)} training persons: "
            "none would be left to train on"
        )
    ranked = sorted(ids, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    return sorted(ranked[:count])


def person_id(clip_name: str) -> str:
    """Person id of a clip: its name before the first ``#`` (the whole stem when there is none)."""
    if "#" in clip_name:
        return clip_name.split("#", 1)[0]
    return clip_name.removesuffix(CLIP_SUFFIX)


@dataclass(frozen=True)
class Clip:
    """One clip of a split: ``path`` is an mp4 file or a PNG-frame folder."""

    name: str
    path: Path
    person_id: str
    num_frames: int


def _candidate_names(split_dir: Path) -> list[str]:
    return sorted(
        e.name
        for e in os.scandir(split_dir)
        if e.name.endswith(CLIP_SUFFIX) and not e.name.startswith(".")
    )


class VoxCelebIndex:
    """Clips and person ids of ``root/train``, ``root/test`` and, when present, ``root/val``,
    cached as JSON.

    ``train/`` and ``test/`` must exist; ``val/`` is optional (the FOMM VoxCeleb layout has
    none). ``splits`` lists the splits found; asking a dataset for a split that is absent raises
    ``FileNotFoundError`` naming the folder (``require_split``).

    The cache file lives in ``cache_dir`` (default ``~/.cache/fadm_lightning/voxceleb_index``),
    keyed by the resolved root path, and is rebuilt when a split folder's mtime or its list of
    clip names changes. Clips that cannot be opened are left out, with one warning listing them.

    Args:
        root (`str` or `os.PathLike`): the dataset root.
        cache_dir (`str` or `os.PathLike`, *optional*): where the JSON index is cached.
    """

    def __init__(self, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"VoxCeleb root {self.root} does not exist; {LAYOUT_HELP}")
        for split in SPLITS:
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"VoxCeleb root {self.root} has no '{split}' folder "
                    f"({self.root / split} missing); {LAYOUT_HELP}"
                )
        self.cache_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        )
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:16]
        self.cache_file = self.cache_dir / f"{self.root.name}-{digest}.json"
        #: the splits of this root: train, test, then the optional ones whose folder exists
        self.splits: tuple[str, ...] = SPLITS + tuple(
            s for s in OPTIONAL_SPLITS if (self.root / s).is_dir()
        )

        fingerprint = {s: self._fingerprint(s) for s in self.splits}
        cached = self._read_cache(fingerprint)
        self.from_cache = cached is not None
        if cached is None:
            cached = {s: self._scan(s, fingerprint[s]["names"]) for s in self.splits}
            self._write_cache(fingerprint, cached)
        self.clips: dict[str, list[Clip]] = {}
        self.skipped: dict[str, dict[str, str]] = {}
        for split in self.splits:
            self.clips[split] = [
                Clip(name, self.root / split / name, person_id(name), int(n))
                for name, n in cached[split]["clips"]
            ]
            self.skipped[split] = dict(cached[split]["skipped"])
            if self.skipped[split]:
                listing = "; ".join(f"{n} ({why})" for n, why in self.skipped[split].items())
                warnings.warn(
                    f"{self.root / split}: {len(self.skipped[split])} clip(s) could not be opened "
                    f"and are left out: {listing}",
                    stacklevel=2,
                )

    # -- queries ---------------------------------------------------------------------------
    def person_ids(self, split: str) -> list[str]:
        """Sorted person ids of a split."""
        return sorted({c.person_id for c in self._split(split)})

    def clips_by_person(self, split: str) -> dict[str, list[Clip]]:
        out: dict[str, list[Clip]] = {}
        for clip in self._split(split):
            out.setdefault(clip.person_id, []).append(clip)
        return out

    def has_split(self, split: str) -> bool:
        """Whether the root has the split (its folder existed when the index was built)."""
        return split in self.clips

    def require_split(self, split: str) -> list[Clip]:
        """The clips of ``split``; ``FileNotFoundError`` naming ``root/<split>`` when absent."""
        if split not in self.clips:
            raise FileNotFoundError(
                f"VoxCeleb root {self.root} has no '{split}' split ({self.root / split} missing; "
                f"this root has {', '.join(self.splits)}). The FOMM VoxCeleb layout has only "
                "train/ and test/: validate on 'test' there (val_split=test), or generate the "
                "synthetic world with validation identities (generator.num_val_ids > 0)"
            )
        return self.clips[split]

    def has_annotations(self, split: str) -> bool:
        """Whether ``root/annotations/<split>/`` exists (then every clip must have its npz)."""
        return (self.root / ANNOTATION_DIR / split).is_dir()

    def annotation_path(self, split: str, clip: Clip) -> Path:
        return annotation_path(self.root, split, clip.name)

    def _split(self, split: str) -> list[Clip]:
        return self.require_split(split)

    # -- building and caching ----------------------------------------------------------------
    def _fingerprint(self, split: str) -> dict[str, Any]:
        split_dir = self.root / split
        return {"mtime_ns": split_dir.stat().st_mtime_ns, "names": _candidate_names(split_dir)}

    def _scan(self, split: str, names: list[str]) -> dict[str, Any]:
        log.info("indexing %d clips in %s", len(names), self.root / split)
        clips, skipped = [], {}
        for name in names:
            try:
                n = count_frames(self.root / split / name)
            except (VideoReadError, OSError) as err:
                skipped[name] = str(err)
                continue
            if n == 0:
                skipped[name] = "no frames"
            else:
                clips.append([name, n])
        return {"clips": clips, "skipped": skipped}

    def _read_cache(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return None
        if data.get("version") != INDEX_VERSION or data.get("root") != str(self.root):
            return None
        splits = data.get("splits", {})
        if set(splits) != set(fingerprint):  # a split folder appeared or went away
            return None
        for split in fingerprint:
            entry = splits.get(split)
            if entry is None or entry.get("mtime_ns") != fingerprint[split]["mtime_ns"]:
                return None
            known = [n for n, _ in entry["clips"]] + list(entry["skipped"])
            if sorted(known) != fingerprint[split]["names"]:
                return None
        return splits

    def _write_cache(self, fingerprint: dict[str, Any], scanned: dict[str, Any]) -> None:
        data = {
            "version": INDEX_VERSION,
            "root": str(self.root),
            "splits": {
                s: {"mtime_ns": fingerprint[s]["mtime_ns"], **scanned[s]} for s in fingerprint
            },
        }
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.cache_file)  # atomic: DDP ranks may write at the same time
        except OSError as err:
            warnings.warn(
                f"cannot write the VoxCeleb index cache {self.cache_file} ({err})", stacklevel=3
            )


class _SplitDataset(Dataset):
    """Clips of one split, with their annotations when the root has them."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        image_size: int | Sequence[int],
        cache_dir: str | os.PathLike | None,
        index: VoxCelebIndex | None,
        persons: Sequence[str] | None = None,
        exclude_persons: Sequence[str] | None = None,
    ) -> None:
        self.index = index if index is not None else VoxCelebIndex(root, cache_dir)
        self.split = split
        self.size = _size(image_size)
        self.clips = self.index.require_split(split)
        if persons is not None:  # only these persons (validation persons carved from train)
            self.clips = [c for c in self.clips if c.person_id in set(persons)]
        if exclude_persons:  # every person but these (training without the carved ones)
            self.clips = [c for c in self.clips if c.person_id not in set(exclude_persons)]
        if not self.clips:
            raise ValueError(f"{self.index.root / split} holds no readable clips; {LAYOUT_HELP}")
        self.has_annotations = self.index.has_annotations(split)
        if self.has_annotations:
            missing = [
                self.index.annotation_path(split, c)
                for c in self.clips
                if not self.index.annotation_path(split, c).is_file()
            ]
            if missing:
                raise FileNotFoundError(
                    f"{self.index.root / ANNOTATION_DIR / split} exists but {len(missing)} clip(s) "
                    f"have no annotation file, e.g. {missing[0]}"
                )

    def _annotation(self, clip: Clip, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Stacked annotation (T×…) of frames ``indices`` of ``clip``."""
        path = self.index.annotation_path(self.split, clip)
        return select_annotation(
            load_annotation(path), clip.num_frames, indices, f"{path} (clip {clip.path})"
        )

    def _read(self, clip: Clip, indices: Sequence[int]) -> torch.Tensor:
        return frames_to_tensor(read_frames(clip.path, indices), self.size, clip.path)  # T×3×H×W


class VoxCelebTrainDataset(_SplitDataset):
    """Training items: two frames of one clip (FOMM ``FramesDataset`` + ``DatasetRepeater``).

    With ``id_sampling`` an item is a person id: a random clip of that person, then two frame
    indices drawn with replacement and sorted (source ≤ driving before augmentation). Without it
    an item is a clip. Length = ``num_repeats`` × number of ids (or clips).

    Item: ``{"source": 3×H×W, "driving": 3×H×W, "name": clip name, "skipped": str}`` float32 in
    [0, 1], plus ``"source_annotation"`` / ``"driving_annotation"`` (see ``frame_annotation``) when
    the root has annotations; they are flipped together with the frames. When the chosen clip
    cannot be read, a random other clip (one that has not failed in this process) is drawn
    instead, up to ``max_read_retries`` times, and ``"skipped"`` lists the failed reads
    (``video.decode_skipped``; "" when none).

    Args:
        root (`str` or `os.PathLike`): dataset root (ignored when ``index`` is given).
        image_size (`int` or `(H, W)`, defaults to 256): output frame size.
        id_sampling (`bool`, defaults to True): sample person ids rather than clips.
        num_repeats (`int`, defaults to 1): how many times the id (clip) list is repeated.
        augmentation (`FrameAugmentation`, *optional*): FOMM augmentations; None = none.
        split (`str`, defaults to "train"): the split read.
        cache_dir, index: where the index is cached, or a ready index.
        max_read_retries (`int`, defaults to 10): other clips tried after a read error before
            the error is raised; 0 raises at once.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] = 256,
        id_sampling: bool = True,
        num_repeats: int = 1,
        augmentation: FrameAugmentation | None = None,
        split: str = "train",
        cache_dir: str | os.PathLike | None = None,
        index: VoxCelebIndex | None = None,
        max_read_retries: int = 10,
        exclude_persons: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root, split, image_size, cache_dir, index, None, exclude_persons)
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be ≥ 1, got {num_repeats}")
        if max_read_retries < 0:
            raise ValueError(f"max_read_retries must be ≥ 0, got {max_read_retries}")
        self.max_read_retries = max_read_retries
        self.id_sampling = id_sampling
        self.num_repeats = num_repeats
        self.augmentation = augmentation
        by_person = {
            person: clips
            for person, clips in self.index.clips_by_person(split).items()
            if person not in set(exclude_persons or ())
        }
        self.person_ids = sorted(by_person)
        self._clips_of = by_person
        # each item's random stream is a function of (run seed, epoch, index): the items do not
        # depend on the DataLoader workers (their number, or persistence), and a training resumed
        # from a checkpoint draws the frames of an uninterrupted one. The epoch lives in shared
        # memory so that persistent workers see set_epoch; the seed is the run's
        # (seed_everything's, the main process's torch seed when the dataset is made).
        self.seed = torch.initial_seed()
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        # clips that failed in this process: never drawn as replacements (but still tried, and
        # reported, when an item asks for them, so every epoch's report lists them)
        self._unreadable: set[str] = set()

    def __len__(self) -> int:
        items = len(self.person_ids) if self.id_sampling else len(self.clips)
        return self.num_repeats * items

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next items (called by the systems at each training epoch's start)."""
        self._epoch.fill_(int(epoch))

    def item_rng(self, idx: int) -> np.random.Generator:
        """The random stream of item ``idx`` this epoch: clip, frame indices, augmentation."""
        return np.random.default_rng(
            np.random.SeedSequence([int(self.seed), int(self._epoch), int(idx)])
        )

    def __getitem__(self, idx: int) -> PairItem:
        rng = self.item_rng(idx)
        if self.id_sampling:
            candidates = self._clips_of[self.person_ids[idx % len(self.person_ids)]]
            clip = candidates[rng.integers(len(candidates))]
        else:
            clip = self.clips[idx % len(self.clips)]
        skipped: list[tuple[str, str]] = []
        while True:
            indices = train_pair_indices(clip.num_frames, rng)
            try:
                frames = self._read(clip, indices)  # 2×3×H×W
                break
            except VideoReadError as err:
                skipped.append((clip.name, str(err)))
                self._unreadable.add(clip.name)
                candidates = [c for c in self.clips if c.name not in self._unreadable]
                if len(skipped) > self.max_read_retries or not candidates:
                    listing = "; ".join(f"{n}: {why}" for n, why in skipped)
                    raise VideoReadError(
                        f"{len(skipped)} clips in a row could not be read "
                        f"(max_read_retries={self.max_read_retries}): {listing}"
                    ) from err
                log.debug("skipping unreadable clip %s: %s", clip.name, err)
                clip = candidates[rng.integers(len(candidates))]
        annotation = self._annotation(clip, indices) if self.has_annotations else None
        return pair_item(frames, clip.name, annotation, self.augmentation, rng, skipped)


class VoxCelebPairsDataset(_SplitDataset):
    """Deterministic validation pairs: pair k takes clip k (cycling), source = frame 0, driving =
    frame ``(k · 7919 + n // 2) mod n`` of its n frames. Same item dict as training, no augmentation.

    The split defaults to "test" (FOMM's layout has no other held-out split); the data module
    passes its ``val_split`` ("val" for the synthetic world).

    Args:
        root (`str` or `os.PathLike`): dataset root (ignored when ``index`` is given).
        image_size (`int` or `(H, W)`, defaults to 256): output frame size.
        num_pairs (`int`, defaults to 8): number of items.
        split (`str`, defaults to "test"): the split read.
        cache_dir, index: where the index is cached, or a ready index.
        persons: only the clips of these persons (validation persons carved from ``train``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] = 256,
        num_pairs: int = 8,
        split: str = "test",
        cache_dir: str | os.PathLike | None = None,
        index: VoxCelebIndex | None = None,
        persons: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root, split, image_size, cache_dir, index, persons)
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be ≥ 1, got {num_pairs}")
        self.num_pairs = num_pairs

    def __len__(self) -> int:
        return self.num_pairs

    def pair(self, k: int) -> tuple[Clip, int, int]:
        """(clip, source index, driving index) of pair ``k``."""
        clip = self.clips[k % len(self.clips)]
        return clip, *val_pair_indices(k, clip.num_frames)

    def __getitem__(self, k: int) -> PairItem:
        if not 0 <= k < self.num_pairs:
            raise IndexError(f"pair {k} out of range [0, {self.num_pairs})")
        clip, src, drv = self.pair(k)
        frames = self._read(clip, [src, drv])
        annotation = self._annotation(clip, [src, drv]) if self.has_annotations else None
        return pair_item(frames, clip.name, annotation)


class VoxCelebClipDataset(_SplitDataset):
    """Whole clips (reconstruction evaluation, REFERENCE_SPEC §5.4), one per item, in name order.

    Item: ``{"video": T×3×H×W float32 in [0, 1], "name": clip name}`` plus ``"annotation"``
    (``clip_annotation``: per-frame entries T×…) when the root has annotations. Frames
    0, s, 2s, … (``frame_stride`` s), at most ``max_frames`` of them.

    Args:
        root (`str` or `os.PathLike`): dataset root (ignored when ``index`` is given).
        image_size (`int` or `(H, W)`, defaults to 256): output frame size.
        max_frames (`int`, *optional*): cap on T; None = the whole clip.
        frame_stride (`int`, defaults to 1): step between the frames read.
        split (`str`, defaults to "test"): the split read.
        cache_dir, index: where the index is cached, or a ready index.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] = 256,
        max_frames: int | None = None,
        frame_stride: int = 1,
        split: str = "test",
        cache_dir: str | os.PathLike | None = None,
        index: VoxCelebIndex | None = None,
    ) -> None:
        super().__init__(root, split, image_size, cache_dir, index)
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be ≥ 1, got {frame_stride}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be ≥ 1 or None, got {max_frames}")
        self.max_frames = max_frames
        self.frame_stride = frame_stride

    def __len__(self) -> int:
        return len(self.clips)

    def frame_indices(self, clip: Clip) -> list[int]:
        return clip_frame_indices(clip.num_frames, self.frame_stride, self.max_frames)

    def __getitem__(self, idx: int) -> ClipItem:
        clip = self.clips[idx]
        indices = self.frame_indices(clip)
        item: ClipItem = {"video": self._read(clip, indices), "name": clip.name}
        if self.has_annotations:
            item["annotation"] = self._annotation(clip, indices)
        return item
