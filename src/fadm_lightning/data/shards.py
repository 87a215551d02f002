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

Writing: :func:`write_shards` (the command ``python -m fadm_lightning.shard``) indexes the input
with :class:`~fadm_lightning.data.voxceleb.VoxCelebIndex` (clips that cannot be opened are left out
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
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fadm_lightning.data.datamodule import _accelerator_available
from fadm_lightning.data.transforms import FrameAugmentation
from fadm_lightning.data.voxceleb import (
    SPLITS,
    Clip,
    VoxCelebIndex,
    _size,
    clip_frame_indices,
    frames_to_tensor,
    pair_item,
    select_annotation,
    train_pair_indices,
    val_pair_indices,
)
from fadm_lightning.media.errors import ImageReadError, VideoReadError
from fadm_lightning.media.image import to_rgb8
from fadm_lightning.media.video import PNG_NAME
from fadm_lightning.synthetic.annotations import annotation_path

log = logging.getLogger(__name__)

# LitData logs two INFO lines each time a process opens a dataset (its cache budget, its mmap
# mode): once per DataLoader worker and split. Quiet unless someone configured these loggers.
for _name in ("litdata.streaming.dataset", "litdata.utilities.format"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

SUMMARY_FILE = "shard_summary.json"
INDEX_FILE = "index.json"  # LitData's index of a split's chunks
DONE_DIR = ".shard/done"  # a record per split finished by a run that has not finished yet
SHARD_FORMAT_VERSION = 1
DEFAULT_CHUNK_BYTES = "64MB"
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


# -- writing ----------------------------------------------------------------------------------
def _png_files(folder: Path) -> list[Path]:
    # the frames media.video reads from a folder clip: its .png files in name order
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def clip_record(root: Path, split: str, clip: Clip, with_annotation: bool) -> dict[str, Any]:
    """The record of one clip of the folder layout (the table of the module docstring)."""
    if clip.path.is_dir():
        files = _png_files(clip.path)
        if len(files) != clip.num_frames:
            raise ValueError(
                f"{clip.path}: {len(files)} PNG frames, the index says {clip.num_frames}"
            )
        parts = [f.read_bytes() for f in files]
        video = b"".join(parts)
        frame_ends = np.cumsum([len(p) for p in parts], dtype="<u8").tobytes()
        fmt = "png"
    else:
        video, frame_ends, fmt = clip.path.read_bytes(), b"", "mp4"
    annotation = annotation_path(root, split, clip.name).read_bytes() if with_annotation else b""
    return {
        "name": clip.name,
        "split": split,
        "num_frames": int(clip.num_frames),
        "format": fmt,
        "video": video,
        "frame_ends": frame_ends,
        "annotation": annotation,
    }


class _RecordWriter:
    """The ``fn`` of ``litdata.optimize`` (picklable, for its worker processes): clip → record."""

    def __init__(self, root: Path, split: str, with_annotation: bool) -> None:
        self.root, self.split, self.with_annotation = root, split, with_annotation

    def __call__(self, entry: tuple[str, int]) -> dict[str, Any]:
        name, num_frames = entry
        path = self.root / self.split / name
        return clip_record(
            self.root, self.split, Clip(name, path, "", num_frames), self.with_annotation
        )


def _splits_to_write(index: VoxCelebIndex, splits: Sequence[str] | str | None) -> list[str]:
    if splits is None:
        return list(index.splits)
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    missing = [s for s in splits if not index.has_split(s)]
    if missing:
        raise FileNotFoundError(
            f"{index.root} has no split folder {', '.join(missing)} (it has {', '.join(index.splits)})"
        )
    return list(dict.fromkeys(splits))


def write_shards(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    splits: Sequence[str] | str | None = None,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    num_workers: int = 1,
    overwrite: bool = False,
    index_cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write the clips of a VoxCeleb-layout root as LitData shards, one dataset per split.

    Args:
        input_dir: a root in the VoxCeleb layout (``voxceleb.py``): ``train/``, ``test/`` (and
            ``val/``), mp4 files or PNG-frame folders, optional ``annotations/<split>/``.
        output_dir: a local folder; ``output_dir/<split>/`` receives the split's shards.
        splits: the splits to write (a list or "train,test"); None: every split of the root.
        chunk_bytes: LitData chunk size (bytes or "64MB"); a clip larger than this gets a chunk
            of its own.
        num_workers: processes of ``litdata.optimize`` (the record order does not depend on it).
        overwrite: replace the shards of a split that already has some (otherwise an error).
        index_cache_dir: where the clip index of ``input_dir`` is cached.
        progress: LitData's progress output.
        start_method: how LitData starts its workers ("spawn", "fork"; None: LitData's choice,
            spawn outside notebooks). "fork" starts faster (tests).

    Returns:
        The summary, also written to ``output_dir/shard_summary.json``: per split the clips
        written, their bytes, whether they carry annotations and the clips left out with the
        reason; the settings.

    Raises:
        FileNotFoundError: ``input_dir`` is not a VoxCeleb-layout root, a requested split is
            missing, or ``annotations/<split>/`` exists without a file for every clip.
        FileExistsError: a split of ``output_dir`` already holds shards and ``overwrite`` is off.
        ValueError: a split has no readable clip, or ``output_dir`` is a URL.
    """
    from litdata import optimize

    if is_url(output_dir):
        raise ValueError(
            f"output_dir must be a local folder, got {output_dir}; write locally, then copy the "
            "folder to the bucket as it is (docs/scaling.md, 'Sharded streaming data')"
        )
    root = Path(input_dir).expanduser().resolve()
    out = Path(output_dir).expanduser().resolve()
    if num_workers < 1:
        raise ValueError(f"num_workers must be ≥ 1, got {num_workers}")
    index = VoxCelebIndex(root, index_cache_dir)  # warns once about clips it cannot open
    chosen = _splits_to_write(index, splits)
    # a run that was killed (no summary yet) is resumed: the splits it finished, with the same
    # settings, are kept (their records: .shard/done/<split>.json, written after the rename)
    resumable = {} if overwrite or (out / SUMMARY_FILE).exists() else _finished_splits(out)
    for split in chosen:
        if (out / split / INDEX_FILE).exists() and not overwrite and split not in resumable:
            raise FileExistsError(
                f"{out / split} already holds shards ({INDEX_FILE}); set overwrite=true to "
                "replace them, or choose another output_dir"
            )
    summary: dict[str, Any] = {
        "version": SHARD_FORMAT_VERSION,
        "input_dir": str(root),
        "output_dir": str(out),
        "splits": {},
        "settings": {"chunk_bytes": chunk_bytes, "num_workers": num_workers, "splits": chosen},
    }
    for split in chosen:
        clips = index.require_split(split)
        if not clips:
            raise ValueError(f"{root / split} holds no readable clips")
        with_annotation = index.has_annotations(split)
        key = _split_key(root, split, clips, with_annotation, chunk_bytes)
        done = resumable.get(split)
        if done is not None and done.get("key") == key and (out / split / INDEX_FILE).exists():
            log.info("%s: finished by an earlier run with the same settings, kept", out / split)
            summary["splits"][split] = done["entry"]
            continue
        if done is not None and not overwrite and (out / split / INDEX_FILE).exists():
            raise FileExistsError(
                f"{out / split} holds shards of other settings; set overwrite=true to replace "
                "them, or choose another output_dir"
            )
        if with_annotation:
            missing = [c.name for c in clips if not annotation_path(root, split, c.name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{root / 'annotations' / split} exists but {len(missing)} clip(s) have no "
                    f"annotation file, e.g. {annotation_path(root, split, missing[0])}"
                )
        start = time.perf_counter()
        log.info("sharding %d clips of %s into %s", len(clips), root / split, out / split)
        # into a hidden sibling, renamed into place when LitData has written its index: a killed
        # run leaves no chunks that look finished (a rerun removes the hidden folder)
        work = out / f".{split}.partial"
        _check_replaceable(out / split)
        shutil.rmtree(work, ignore_errors=True)
        optimize(
            fn=_RecordWriter(root, split, with_annotation),
            inputs=[(c.name, c.num_frames) for c in clips],
            output_dir=str(work),
            chunk_bytes=chunk_bytes,
            num_workers=num_workers,
            keep_data_ordered=True,  # record i = clip i by name, whatever num_workers
            reorder_files=False,
            verbose=progress,
            start_method=start_method,
        )
        written = sum(p.stat().st_size for p in work.glob("*.bin"))
        _publish_split(work, out / split)
        summary["splits"][split] = {
            "clips": len(clips),
            "bytes": written,
            "annotations": with_annotation,
            "left_out": dict(index.skipped.get(split, {})),
            "seconds": round(time.perf_counter() - start, 1),
        }
        _write_json(
            out / DONE_DIR / f"{split}.json", {"key": key, "entry": summary["splits"][split]}
        )
    _write_json(out / SUMMARY_FILE, summary)  # last: the run is finished
    shutil.rmtree(out / DONE_DIR, ignore_errors=True)
    return summary


def _split_key(root: Path, split: str, clips: Sequence, annotations: bool, chunk_bytes) -> str:
    """What makes a split's shards what they are: the clips (names, frames), the settings."""
    content = [SHARD_FORMAT_VERSION, str(root), split, annotations, str(chunk_bytes)]
    content += [(c.name, c.num_frames) for c in clips]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def _finished_splits(out: Path) -> dict[str, dict[str, Any]]:
    """The records of the splits that an unfinished run wrote into ``out``."""
    found = {}
    for path in sorted((out / DONE_DIR).glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return found


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)


def _check_replaceable(final: Path) -> None:
    """``final`` may be replaced by new shards: it holds nothing else."""
    if not final.is_dir():
        return
    other = [
        p.name
        for p in final.iterdir()
        if not (p.name.endswith(".bin") or p.name.endswith(INDEX_FILE) or p.name == ".checkpoints")
    ]
    if other:
        raise FileExistsError(f"{final} holds other files than shards ({other[:3]}); move them")


def _publish_split(work: Path, final: Path) -> None:
    """Rename the written split ``work`` to ``final``; an existing ``final`` (shards being
    replaced with ``overwrite``, or the chunks of a run killed before this change) is removed,
    unless it holds other files than shards."""
    if final.exists():
        _check_replaceable(final)
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, final)


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: per split the clips, size, annotations and left-out clips."""
    lines = [f"shards of {summary['input_dir']} in {summary['output_dir']}:"]
    for split, entry in summary["splits"].items():
        left_out = entry["left_out"]
        lines.append(
            f"  {split}: {entry['clips']} clips, {entry['bytes'] / 1e6:.1f} MB"
            f"{', with annotations' if entry['annotations'] else ''}"
            f", {len(left_out)} left out ({entry['seconds']} s)"
        )
        for name, why in list(left_out.items())[:20]:
            lines.append(f"    left out {name}: {why}")
        if len(left_out) > 20:
            lines.append(f"    … and {len(left_out) - 20} more ({SUMMARY_FILE})")
    return "\n".join(lines)


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

    def __next__(self) -> dict[str, Any]:
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

    def __getitem__(self, k: int) -> dict[str, Any]:
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

    def __getitem__(self, idx: int) -> dict[str, Any]:
        clip = self.records[idx]
        indices = clip_frame_indices(clip.num_frames, self.frame_stride, self.max_frames)
        item: dict[str, Any] = {
            "video": frames_to_tensor(clip.read_frames(indices), self.size, clip.where),
            "name": clip.name,
        }
        annotation = clip.select_annotation(indices)
        if annotation is not None:
            item["annotation"] = annotation
        return item


class VoxCelebShardsDataModule(L.LightningDataModule):
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
        augment (`bool`, defaults to True), brightness, contrast, saturation, hue: FOMM
            augmentations, as the folder module.
        batch_size, val_batch_size, num_workers, pin_memory, persistent_workers: loaders.
        num_val_pairs (`int`, defaults to 8), val_split (`str`, defaults to "test"),
            test_max_frames, test_frame_stride: as the folder module.
        shuffle (`bool`, defaults to True), seed (`int`, defaults to 0): the training stream.
        max_read_retries (`int`, defaults to 10): undecodable clips replaced in a row.
        cache_dir (`str`, *optional*): LitData's chunk cache for remote shards.
        max_cache_size (`str` or `int`, *optional*): its budget (e.g. "100GB"); None: LitData's.
        storage_options (`dict`, *optional*): cloud options passed to LitData.
    """

    required_paths: dict[str, str] = {}  # root may be a URL; setup() names a missing folder

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | None = 256,
        augment: bool = True,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.1,
        batch_size: int = 5,
        val_batch_size: int = 4,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        num_val_pairs: int = 8,
        val_split: str = "test",
        test_max_frames: int | None = None,
        test_frame_stride: int = 1,
        shuffle: bool = True,
        seed: int | None = 0,
        max_read_retries: int = 10,
        cache_dir: str | os.PathLike | None = None,
        max_cache_size: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # plain strings in the checkpoint's hyper-parameters (a Path fails weights_only loading)
        root = str(root)
        cache_dir = None if cache_dir is None else str(cache_dir)
        self.save_hyperparameters(logger=False)
        if not isinstance(val_split, str) or not val_split or "/" in val_split:
            raise ValueError(
                f"val_split must be a split folder name such as 'val', got {val_split!r}"
            )
        self.root = str(root)
        self.image_size = image_size
        self.augmentation = (
            FrameAugmentation(
                brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
            )
            if augment
            else None
        )
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.num_val_pairs = num_val_pairs
        self.val_split = val_split
        self.test_max_frames = test_max_frames
        self.test_frame_stride = test_frame_stride
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self.max_read_retries = max_read_retries
        self.stream_options = {
            "cache_dir": None if cache_dir is None else str(cache_dir),
            "max_cache_size": max_cache_size,
            "storage_options": dict(storage_options) if storage_options else None,
        }
        self._records: dict[str, ShardRecords] = {}
        self.train_set: ShardTrainStream | None = None
        self.val_set: ShardPairsDataset | None = None
        self.test_set: ShardClipDataset | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this module reads: train, the validation split, test (no duplicates)."""
        return tuple(dict.fromkeys(("train", self.val_split, "test")))

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

    def _pin(self) -> bool:
        return self.pin_memory and _accelerator_available()

    def train_dataloader(self) -> StreamingDataLoader:
        if self.train_set is None:
            raise RuntimeError("VoxCelebShardsDataModule: train set not built; call setup() first")
        return StreamingDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self._pin(),
            persistent_workers=self.persistent_workers,
        )

    def _loader(self, dataset: Dataset | None, name: str, batch_size: int) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"VoxCelebShardsDataModule: {name} set not built; call setup() first"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self._pin(),
            persistent_workers=self.persistent_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "validation", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", 1)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
