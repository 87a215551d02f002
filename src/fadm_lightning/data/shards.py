"""LitData shards of a VoxCeleb-layout root: writing them, and training from them by streaming.

```
SHARDS/train/index.json, chunk-<worker>-<n>.bin, …    one LitData dataset per split (litdata.optimize)
SHARDS/test/…
SHARDS/val/…                                          when the input root has val/
SHARDS/shard_summary.json                             what was written, what was left out and why
```

One item (a *record*) per clip, in clip-name order, holding the clip as it was stored, never
decoded pixels (a real VoxCeleb clip decodes to ~200× the size of its mp4 file):

| key          | type  | content                                                                |
|--------------|-------|------------------------------------------------------------------------|
| `name`       | str   | the clip name, e.g. ``id10001#7w0IBEWc9Qw#000993#001143.mp4``           |
| `split`      | str   | ``train``, ``test`` or ``val``                                          |
| `num_frames` | int   | frames of the clip                                                      |
| `format`     | str   | ``mp4`` (the file's bytes) or ``png`` (the frames' PNG files, one after the other) |
| `video`      | bytes | the mp4 file, or the concatenated PNG files                             |
| `frame_ends` | bytes | ``png``: little-endian uint64 end offset of each PNG in ``video``; ``mp4``: empty |
| `annotation` | bytes | the clip's annotation npz as it was stored (``annotations.py``); empty when none |

Writing: :func:`fadm_lightning.data.shard_writer.write_shards` (the command
``python -m fadm_lightning.shard``) indexes the input with
:class:`~fadm_lightning.data.voxceleb.VoxCelebIndex` (clips that cannot be opened are left out
with one warning, as for training from the folders, and listed in the summary), then runs
``litdata.optimize`` once per split with ``keep_data_ordered=True``, so record ``i`` is the ``i``-th
clip by name whatever ``num_workers``.

Reading: :class:`VoxCelebShardsDataModule` gives the items of
:class:`~fadm_lightning.data.datamodule.VoxCelebDataModule` (the same frame sampling, tensors,
augmentations, annotation dicts, validation pairs and test clips; the functions of
``voxceleb.py`` build them for both). Training streams the records with a ``litdata``
``StreamingDataset`` (:class:`ShardTrainStream`) and ``StreamingDataLoader``, whose ``state_dict``
Lightning stores in every checkpoint and restores on resume, so a run resumed mid-epoch continues
the stream where it stopped. What differs from the folders (``docs/scaling.md, "Sharded streaming data"``): an epoch
is one pass over the training clips in LitData's shuffled order (no ``id_sampling`` or
``num_repeats``: both need random access to any clip at any time, which streaming avoids), and
each item's frames and augmentation are drawn from its own random stream
``(seed, epoch, clip name)``, so a resumed run yields the very items an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fadm_lightning.data.base import PairDataModule
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
from fadm_lightning.data.voxceleb import SPLITS
from fadm_lightning.media.errors import ImageReadError, VideoReadError
from fadm_lightning.media.image import to_rgb8
from fadm_lightning.media.video import PNG_NAME

log = logging.getLogger(__name__)

# LitData logs two INFO lines each time a process opens a dataset (its cache budget, its mmap
# mode): once per DataLoader worker and split. Quiet unless someone configured these loggers.
for _name in ("litdata.streaming.dataset", "litdata.utilities.format"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

SUMMARY_FILE = "shard_summary.json"
INDEX_FILE = "index.json"  # LitData's index of a split's chunks
SHARD_HELP = (
    "expected LitData shards written by `python -m fadm_lightning.shard input_dir=VOX "
    "output_dir=SHARDS`: SHARDS/<split>/index.json and its chunk-*.bin files for train, test "
    "(and val when the input had it)"
)


def is_url(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a URL (``s3://…``, ``gs://…``) rather than a local folder."""
    return "://" in str(root)


def split_dir(root: str | os.PathLike, split: str) -> str:
    """The folder (or URL) of a split's shards: ``root/<split>``."""
    if is_url(root):
        return f"{str(root).rstrip('/')}/{split}"
    return str(Path(root).expanduser().resolve() / split)


# -- one clip as stored -----------------------------------------------------------------------
@dataclass(frozen=True)
class ShardClip:
    """A record of the shards (table in the module docstring); ``video``, ``frame_ends`` and
    ``annotation`` are bytes-like (LitData hands out memoryviews into its chunks)."""

    name: str
    split: str
    num_frames: int
    format: str
    video: Any
    frame_ends: Any
    annotation: Any

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ShardClip:
        return cls(
            name=str(record["name"]),
            split=str(record["split"]),
            num_frames=int(record["num_frames"]),
            format=str(record["format"]),
            video=record["video"],
            frame_ends=record["frame_ends"],
            annotation=record["annotation"],
        )

    @property
    def where(self) -> str:
        """How error messages name the clip: ``<split>/<name> (shards)``."""
        return f"{self.split}/{self.name} (shards)"

    @property
    def has_annotation(self) -> bool:
        return len(self.annotation) > 0

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` as uint8 T×H×W×3 RGB, decoded as ``media.video.read_frames``
        decodes the clip's file or folder; every problem is a ``VideoReadError`` naming the clip."""
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not -self.num_frames <= i < self.num_frames]
        if bad:
            raise VideoReadError(
                f"{self.where}: frame indices {bad[:5]} out of range [0, {self.num_frames})"
            )
        if self.format == "png":
            return self._read_png(idx)
        if self.format == "mp4":
            return self._read_mp4(idx)
        raise VideoReadError(f"{self.where}: unknown clip format {self.format!r}")

    def _read_mp4(self, idx: list[int]) -> np.ndarray:
        import decord

        try:
            reader = decord.VideoReader(io.BytesIO(self.video), ctx=decord.cpu(0), num_threads=1)
        except Exception as err:  # decord raises its own DECORDError (a RuntimeError)
            raise VideoReadError(f"{self.where}: cannot decode video ({err})") from err
        if len(reader) != self.num_frames:
            raise VideoReadError(
                f"{self.where}: video has {len(reader)} frames, the shard says {self.num_frames}"
            )
        try:
            return reader.get_batch(idx).asnumpy()
        except Exception as err:
            raise VideoReadError(f"{self.where}: cannot decode frames {idx[:5]} ({err})") from err

    def _read_png(self, idx: list[int]) -> np.ndarray:
        ends = np.frombuffer(self.frame_ends, dtype="<u8")
        if len(ends) != self.num_frames:
            raise VideoReadError(
                f"{self.where}: {len(ends)} PNG frames stored, the shard says {self.num_frames}"
            )
        video = memoryview(self.video)
        frames = []
        for i in idx:
            i = i % self.num_frames
            start = int(ends[i - 1]) if i > 0 else 0
            frame_name = f"{self.split}/{self.name}/{PNG_NAME.format(i)} (shards)"
            try:
                with Image.open(io.BytesIO(video[start : int(ends[i])])) as image:
                    image.load()
                    frame = to_rgb8(image)[0]
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise ImageReadError(
                    f"{frame_name}: unreadable image ({type(err).__name__}: {err})"
                ) from err
            if frames and frame.shape != frames[0].shape:
                h, w = frame.shape[:2]
                h0, w0 = frames[0].shape[:2]
                raise VideoReadError(
                    f"{frame_name}: frame is {w}×{h} but frame {idx[0]} of the same clip is {w0}×{h0}"
                )
            frames.append(frame)
        return np.stack(frames)

    def annotation_data(self) -> dict[str, np.ndarray]:
        """The stored annotation npz as arrays (``load_annotation`` of the folder's file)."""
        try:
            with np.load(io.BytesIO(self.annotation)) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise RuntimeError(f"{self.where}: unreadable annotation ({err})") from err

    def select_annotation(self, indices: Sequence[int]) -> dict[str, torch.Tensor] | None:
        """Stacked annotation (T×…) of frames ``indices``; None when the clip has none."""
        if not self.has_annotation:
            return None
        return select_annotation(self.annotation_data(), self.num_frames, indices, self.where)


# -- reading ----------------------------------------------------------------------------------
def item_rng(seed: int, epoch: int, name: str) -> np.random.Generator:
    """The random stream of a training item: frame indices, then the augmentation."""
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), key]))


class ShardTrainStream(StreamingDataset):
    """Training items of :class:`~fadm_lightning.data.voxceleb.VoxCelebTrainDataset` (two frames of
    a clip, sorted; FOMM augmentations; annotations) streamed from a split's shards.

    One pass visits every clip once, in LitData's order (shuffled chunks, shuffled within a
    chunk, another order each epoch when ``shuffle``). Item ``{"source", "driving", "name",
    "skipped"}`` (+ ``"source_annotation"``, ``"driving_annotation"``), as the folder dataset.
    Its frame indices and augmentation come from :func:`item_rng` ``(seed, epoch, name)``, so the
    items do not depend on the number of workers and a resumed stream repeats none and skips none.
    A clip that cannot be decoded is replaced by the next one of the stream (at most
    ``max_read_retries`` in a row) and listed in ``"skipped"``, which ``DataErrorsCallback``
    reports.

    Args:
        input_dir (`str`): the split's shards, a folder or a URL (``s3://…``, ``gs://…``).
        image_size (`int` or `(H, W)`, defaults to 256): output frame size.
        augmentation (`FrameAugmentation`, *optional*): FOMM augmentations; None = none.
        shuffle (`bool`, defaults to True), seed (`int`, defaults to 0): LitData's order, and
            the items' random streams.
        max_read_retries (`int`, defaults to 10): as for the folder dataset.
        cache_dir, max_cache_size, storage_options: LitData's chunk cache (remote shards) and
            cloud options.
    """

    def __init__(
        self,
        input_dir: str,
        image_size: int | Sequence[int] = 256,
        augmentation: FrameAugmentation | None = None,
        shuffle: bool = True,
        seed: int = 0,
        max_read_retries: int = 10,
        cache_dir: str | None = None,
        max_cache_size: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if max_read_retries < 0:
            raise ValueError(f"max_read_retries must be ≥ 0, got {max_read_retries}")
        super().__init__(
            input_dir,
            cache_dir=cache_dir,
            shuffle=shuffle,
            seed=seed,
            max_cache_size=max_cache_size,
            storage_options=storage_options,
        )
        self.size = _size(image_size)
        self.augmentation = augmentation
        self.max_read_retries = max_read_retries

    def __next__(self) -> PairItem:
        skipped: list[tuple[str, str]] = []
        while True:
            epoch = self.current_epoch
            clip = ShardClip.from_record(super().__next__())
            rng = item_rng(self.seed, epoch, clip.name)
            indices = train_pair_indices(clip.num_frames, rng)
            try:
                frames = frames_to_tensor(clip.read_frames(indices), self.size, clip.where)
                break
            except VideoReadError as err:
                skipped.append((clip.name, str(err)))
                if len(skipped) > self.max_read_retries:
                    listing = "; ".join(f"{n}: {why}" for n, why in skipped)
                    raise VideoReadError(
                        f"{len(skipped)} clips in a row could not be read "
                        f"(max_read_retries={self.max_read_retries}): {listing}"
                    ) from err
                log.debug("skipping unreadable clip %s: %s", clip.name, err)
        annotation = clip.select_annotation(indices)
        return pair_item(frames, clip.name, annotation, self.augmentation, rng, skipped)


class ShardRecords:
    """Random access to the records of a split's shards (validation and test sets).

    The ``StreamingDataset`` behind it is opened lazily in each process (DataLoader workers
    get their own).
    """

    def __init__(
        self,
        input_dir: str,
        cache_dir: str | None = None,
        max_cache_size: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.input_dir = input_dir
        self._kwargs = dict(
            cache_dir=cache_dir, max_cache_size=max_cache_size, storage_options=storage_options
        )
        self._dataset: StreamingDataset | None = None
        self._pid: int | None = None
        self._length: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None, "_pid": None}

    def _open(self) -> StreamingDataset:
        if self._dataset is None or self._pid != os.getpid():
            self._dataset = StreamingDataset(self.input_dir, shuffle=False, **self._kwargs)
            self._pid = os.getpid()
        return self._dataset

    def __len__(self) -> int:
        if self._length is None:
            dataset = self._open()
            dataset[0]  # opens the reader
            self._length = len(dataset.cache)  # every record (len(dataset) is one rank's share)
        return self._length

    def __getitem__(self, i: int) -> ShardClip:
        return ShardClip.from_record(self._open()[int(i)])


class ShardPairsDataset(Dataset):
    """Validation pairs of :class:`~fadm_lightning.data.voxceleb.VoxCelebPairsDataset` from a
    split's shards: pair k takes clip k by name (cycling), frames ``val_pair_indices``."""

    def __init__(
        self, records: ShardRecords, image_size: int | Sequence[int] = 256, num_pairs: int = 8
    ) -> None:
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be ≥ 1, got {num_pairs}")
        self.records = records
        self.size = _size(image_size)
        self.num_pairs = num_pairs

    def __len__(self) -> int:
        return self.num_pairs

    def __getitem__(self, k: int) -> PairItem:
        if not 0 <= k < self.num_pairs:
            raise IndexError(f"pair {k} out of range [0, {self.num_pairs})")
        clip = self.records[k % len(self.records)]
        indices = list(val_pair_indices(k, clip.num_frames))
        frames = frames_to_tensor(clip.read_frames(indices), self.size, clip.where)
        return pair_item(frames, clip.name, clip.select_annotation(indices))


class ShardClipDataset(Dataset):
    """Whole test clips of :class:`~fadm_lightning.data.voxceleb.VoxCelebClipDataset` from a
    split's shards, in name order: ``{"video": T×3×H×W, "name"}`` (+ ``"annotation"``)."""

    def __init__(
        self,
        records: ShardRecords,
        image_size: int | Sequence[int] = 256,
        max_frames: int | None = None,
        frame_stride: int = 1,
    ) -> None:
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be ≥ 1, got {frame_stride}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be ≥ 1 or None, got {max_frames}")
        self.records = records
        self.size = _size(image_size)
        self.max_frames = max_frames
        self.frame_stride = frame_stride

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> ClipItem:
        clip = self.records[idx]
        indices = clip_frame_indices(clip.num_frames, self.frame_stride, self.max_frames)
        item: ClipItem = {
            "video": frames_to_tensor(clip.read_frames(indices), self.size, clip.where),
            "name": clip.name,
        }
        annotation = clip.select_annotation(indices)
        if annotation is not None:
            item["annotation"] = annotation
        return item


class VoxCelebShardsDataModule(PairDataModule):
    """:class:`~fadm_lightning.data.datamodule.VoxCelebDataModule` read from LitData shards
    (``python -m fadm_lightning.shard``): train streams ``root/train``, validation takes fixed
    pairs of ``root/<val_split>``, test reads whole clips of ``root/test``; same batches.

    ``root`` is a local folder or a URL that LitData reads (``s3://bucket/shards``,
    ``gs://…``; credentials from the environment or ``storage_options``); remote chunks are
    cached under ``cache_dir``. The training loader is a ``litdata.StreamingDataLoader``:
    Lightning saves its ``state_dict`` in checkpoints and restores it on resume (mid-epoch
    resume continues the stream). Under DDP LitData splits the chunks between ranks itself.

    Differences from the folder module (``docs/scaling.md, "Sharded streaming data"``): an epoch is one pass over the
    training clips (no ``id_sampling``, no ``num_repeats``); the last batch of a pass may be
    smaller (one per worker); items draw from their own random streams (:func:`item_rng`).

    Args:
        root (`str`): the shards' folder or URL, holding ``train/``, ``test/`` (and ``val/``).
        image_size (`int`, defaults to 256): frame size H = W (frames of another size are resized
            on load); None: the size of the stored frames, read in ``setup``.
        shuffle (`bool`, defaults to True), seed (`int`, defaults to 0): the training stream.
        cache_dir (`str`, *optional*): LitData's chunk cache for remote shards.
        max_cache_size (`str` or `int`, *optional*): its budget (e.g. "100GB"); None: LitData's.
        storage_options (`dict`, *optional*): cloud options passed to LitData.
        **kwargs: the loader and pair settings of :class:`~fadm_lightning.data.base.PairDataModule`,
            as the folder module (``augment`` and the jitter strengths, ``batch_size``,
            ``val_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``num_val_pairs``, ``val_split``, ``test_max_frames``, ``test_frame_stride``,
            ``max_read_retries``: undecodable clips replaced in a row).
    """

    required_paths: dict[str, str] = {}  # root may be a URL; setup() names a missing folder

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | None = 256,
        shuffle: bool = True,
        seed: int | None = 0,
        cache_dir: str | os.PathLike | None = None,
        max_cache_size: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # plain strings in the checkpoint's hyper-parameters (a Path fails weights_only loading)
        root = str(root)
        cache_dir = None if cache_dir is None else str(cache_dir)
        super().__init__(image_size=image_size, **kwargs)  # saves the hyper-parameters
        self.root = str(root)
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self.stream_options = {
            "cache_dir": None if cache_dir is None else str(cache_dir),
            "max_cache_size": max_cache_size,
            "storage_options": dict(storage_options) if storage_options else None,
        }
        self._records: dict[str, ShardRecords] = {}
        self.train_set: ShardTrainStream | None = None
        self.val_set: ShardPairsDataset | None = None
        self.test_set: ShardClipDataset | None = None

    def split_dir(self, split: str) -> str:
        """``root/<split>``; for a local root, ``FileNotFoundError`` naming it when it holds no
        shards."""
        where = split_dir(self.root, split)
        if not is_url(where) and not (Path(where) / INDEX_FILE).is_file():
            hint = ""
            if split == self.val_split and split not in SPLITS:
                hint = f" (validate on 'test' with val_split=test if the input had no {split}/)"
            raise FileNotFoundError(
                f"{where} holds no shards ({INDEX_FILE} missing){hint}; {SHARD_HELP}"
            )
        return where

    def records(self, split: str) -> ShardRecords:
        """Random access to the records of ``split`` (opened once)."""
        if split not in self._records:
            self._records[split] = ShardRecords(self.split_dir(split), **self.stream_options)
        return self._records[split]

    @property
    def has_annotations(self) -> bool:
        """Whether every split read (train, ``val_split``, test) carries annotations (its first
        record has one; the shard command stores them for every clip of a split or none)."""
        try:
            return all(self.records(s)[0].has_annotation for s in self.splits)
        except FileNotFoundError:
            return False

    def _resolve_image_size(self, split: str) -> None:
        """``image_size=None``: the size of the stored frames (frame 0 of the split's first clip)."""
        if self.image_size is None:
            h, w = self.records(split)[0].read_frames([0]).shape[1:3]
            self.image_size = int(h) if h == w else (int(h), int(w))

    def setup(self, stage: str | None = None) -> None:
        self._resolve_image_size(
            {None: "train", "fit": "train", "validate": self.val_split}.get(stage, "test")
        )
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ShardTrainStream(
                self.split_dir("train"),
                image_size=self.image_size,
                augmentation=self.augmentation,
                shuffle=self.shuffle,
                seed=self.seed,
                max_read_retries=self.max_read_retries,
                **self.stream_options,
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = ShardPairsDataset(
                self.records(self.val_split), self.image_size, self.num_val_pairs
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = ShardClipDataset(
                self.records("test"),
                self.image_size,
                max_frames=self.test_max_frames,
                frame_stride=self.test_frame_stride,
            )

    def train_dataloader(self) -> StreamingDataLoader:
        if self.train_set is None:
            raise RuntimeError("VoxCelebShardsDataModule: train set not built; call setup() first")
        return StreamingDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin,
            persistent_workers=self.persistent_workers,
        )

    def _loader(self, dataset: Dataset | None, name: str, batch_size: int) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"VoxCelebShardsDataModule: {name} set not built; call setup() first"
            )
        return self.make_loader(dataset, batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "validation", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", 1)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
