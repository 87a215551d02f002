"""CelebA portraits as source images, cropped to the framing of the VoxCeleb clips.

Layout (the "Align&Cropped Images" release of CelebA):

```
root/img_align_celeba/000001.jpg … 202599.jpg   178×218 (W×H), eyes aligned by CelebA
root/list_eval_partition.txt                    one "<file> <0|1|2>" line per image:
                                                0 = train, 1 = val, 2 = test
```

Crop convention (a fixed crop, no detector): every aligned image is cut to the square
``DEFAULT_CROP_BOX`` = (left 18, top 49, right 158, bottom 189), 140×140 px, then resized
(bilinear, antialiased) to ``image_size``. CelebA's alignment puts the eyes at about
(69, 111) and (108, 111), so the inter-ocular distance is ≈ 39 px ≈ 0.28 of the crop side and the
eye line sits at ≈ 0.44 of its height, horizontally centred: the framing measured with dlib on
the real VoxCeleb test frames of ``shared/fixtures/voxceleb_sample`` (inter-ocular distance
0.28 ± 0.03 of the side, eyes at 0.44 ± 0.05 of the height). It is the FOMM-like loose crop: the
whole head, hair and a little background, the face box about 0.6 of the side. A looser or tighter
crop is ``crop_box=[l, t, r, b]`` (boxes reaching outside the image are padded by replicating the
border). Images of another size but the same 178:218 aspect have the box scaled; any other shape
is a read error naming the file.

``CelebAIndex`` lists the images of each split once and caches the list as JSON (rebuilt when the
image folder or the partition file changes); images named in the partition file but absent are
dropped with one warning giving their count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fadm_lightning.data.base import BaseDataModule
from fadm_lightning.data.batch import PairItem
from fadm_lightning.data.items import _size, to_float_frames
from fadm_lightning.data.skipped import SKIPPED_KEY, encode_skipped
from fadm_lightning.faces.crop import crop_square
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.image import read_image

log = logging.getLogger(__name__)

IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
PARTITIONS = {"train": 0, "val": 1, "test": 2}
SPLITS = (*PARTITIONS, "all")
ALIGNED_SIZE = (178, 218)  # W×H of img_align_celeba
DEFAULT_CROP_BOX = (18, 49, 158, 189)  # left, top, right, bottom in the 178×218 aligned image
INDEX_VERSION = 1
LAYOUT_HELP = (
    "expected the aligned CelebA layout: <root>/img_align_celeba/ holding the 178×218 images "
    "(000001.jpg, …) and <root>/list_eval_partition.txt with one '<file> <0|1|2>' line per "
    "image (0 = train, 1 = val, 2 = test)"
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fadm_lightning" / "celeba_index"


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """``{file name: partition}`` from ``list_eval_partition.txt`` (0 train, 1 val, 2 test)."""
    path = Path(path)
    out: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(
                f"{path}:{number}: expected '<file> <0|1|2>', got {line.strip()!r}; {LAYOUT_HELP}"
            )
        out[fields[0]] = int(fields[1])
    return out


class CelebAIndex:
    """Image names of each CelebA split, cached as JSON.

    Args:
        root (`str` or `os.PathLike`): the CelebA root (see the module docstring).
        cache_dir (`str` or `os.PathLike`, *optional*): where the JSON index is cached
            (default ``~/.cache/fadm_lightning/celeba_index``).
    """

    def __init__(self, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"CelebA root {self.root} does not exist; {LAYOUT_HELP}")
        self.image_dir = self.root / IMAGE_DIR
        self.partition_file = self.root / PARTITION_FILE
        for path in (self.image_dir, self.partition_file):
            if not path.exists():
                raise FileNotFoundError(
                    f"CelebA root {self.root} has no {path.name} ({path} missing); {LAYOUT_HELP}"
                )
        self.cache_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        )
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:16]
        self.cache_file = self.cache_dir / f"{self.root.name}-{digest}.json"

        fingerprint = self._fingerprint()
        cached = self._read_cache(fingerprint)
        self.from_cache = cached is not None
        if cached is None:
            cached = self._scan()
            self._write_cache(fingerprint, cached)
        self.names: dict[str, list[str]] = {s: list(cached["names"][s]) for s in PARTITIONS}
        self.names["all"] = sorted(n for s in PARTITIONS for n in self.names[s])
        self.missing: list[str] = list(cached["missing"])
        if self.missing:
            warnings.warn(
                f"{self.partition_file}: {len(self.missing)} listed image(s) are absent from "
                f"{self.image_dir} and left out (e.g. {self.missing[0]})",
                stacklevel=2,
            )

    def split(self, split: str) -> list[str]:
        if split not in self.names:
            raise KeyError(f"unknown CelebA split {split!r}; choose one of {list(SPLITS)}")
        return self.names[split]

    def _fingerprint(self) -> dict[str, int]:
        stat = self.partition_file.stat()
        return {
            "images_mtime_ns": self.image_dir.stat().st_mtime_ns,
            "partition_mtime_ns": stat.st_mtime_ns,
            "partition_size": stat.st_size,
        }

    def _scan(self) -> dict[str, Any]:
        log.info("indexing CelebA images in %s", self.image_dir)
        partition = read_partition(self.partition_file)
        present = {e.name for e in os.scandir(self.image_dir) if not e.name.startswith(".")}
        names: dict[str, list[str]] = {s: [] for s in PARTITIONS}
        by_number = {v: k for k, v in PARTITIONS.items()}
        missing = []
        for name in sorted(partition):
            if name in present:
                names[by_number[partition[name]]].append(name)
            else:
                missing.append(name)
        return {"names": names, "missing": missing}

    def _read_cache(self, fingerprint: dict[str, int]) -> dict[str, Any] | None:
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return None
        if (
            data.get("version") != INDEX_VERSION
            or data.get("root") != str(self.root)
            or data.get("fingerprint") != fingerprint
        ):
            return None
        return data

    def _write_cache(self, fingerprint: dict[str, int], scanned: dict[str, Any]) -> None:
        data = {"version": INDEX_VERSION, "root": str(self.root), "fingerprint": fingerprint}
        data.update(scanned)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.cache_file)
        except OSError as err:
            warnings.warn(
                f"cannot write the CelebA index cache {self.cache_file} ({err})", stacklevel=3
            )


class CelebASourceDataset(Dataset):
    """Cropped CelebA portraits: ``{"source": 3×H×W float32 in [0, 1], "name": file name}``.

    Args:
        root (`str` or `os.PathLike`): CelebA root (ignored when ``index`` is given).
        split (`str`, defaults to "test"): "train", "val", "test" or "all".
        image_size (`int` or `(H, W)`, defaults to 256): output size.
        crop_box (`(l, t, r, b)`, defaults to ``DEFAULT_CROP_BOX``): crop in the 178×218 image.
        max_images (`int`, *optional*): keep the first n images of the split (name order).
        on_error (`str`, defaults to "raise"): "raise" a read error naming the file, or "skip":
            take the next readable image instead and list the failures in ``"skipped"``
            (``video.decode_skipped``; the item then always has that key).
        max_read_retries (`int`, defaults to 10): images tried after a failure with "skip".
        cache_dir, index: where the index is cached, or a ready ``CelebAIndex``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        image_size: int | Sequence[int] = 256,
        crop_box: Sequence[float] = DEFAULT_CROP_BOX,
        max_images: int | None = None,
        on_error: str = "raise",
        max_read_retries: int = 10,
        cache_dir: str | os.PathLike | None = None,
        index: CelebAIndex | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if len(crop_box) != 4 or crop_box[2] <= crop_box[0] or crop_box[3] <= crop_box[1]:
            raise ValueError(f"crop_box must be (left, top, right, bottom), got {crop_box}")
        self.index = index if index is not None else CelebAIndex(root, cache_dir)
        self.split = split
        self.size = _size(image_size)
        self.crop_box = tuple(float(v) for v in crop_box)
        self.on_error = on_error
        self.max_read_retries = max_read_retries
        names = self.index.split(split)
        self.names = names if max_images is None else names[:max_images]
        if not self.names:
            raise ValueError(
                f"CelebA split {split!r} of {self.index.root} holds no images; {LAYOUT_HELP}"
            )

    def __len__(self) -> int:
        return len(self.names)

    def path(self, name: str) -> Path:
        return self.index.image_dir / name

    def crop(self, image: np.ndarray, path: str | os.PathLike = "image") -> np.ndarray:
        """The crop box (scaled to the image when it is a resized aligned image) of ``image``."""
        h, w = image.shape[:2]
        aw, ah = ALIGNED_SIZE
        if abs(w * ah - h * aw) > 0.02 * w * ah:
            raise VideoReadError(
                f"{path}: image is {w}×{h}, not an aligned CelebA image ({aw}×{ah} or the same "
                "aspect ratio)"
            )
        scale = w / aw
        return crop_square(image, [v * scale for v in self.crop_box])

    def load(self, name: str) -> torch.Tensor:
        """Image ``name`` cropped and resized: 3×H×W float32 in [0, 1] (errors name the file)."""
        path = self.path(name)
        return to_float_frames(self.crop(read_image(path), path)[None], self.size)[0]

    def __getitem__(self, idx: int) -> PairItem:
        if not 0 <= idx < len(self.names):
            raise IndexError(f"image {idx} out of range [0, {len(self.names)})")
        skipped: list[tuple[str, str]] = []
        for attempt in range(self.max_read_retries + 1 if self.on_error == "skip" else 1):
            name = self.names[(idx + attempt) % len(self.names)]
            try:
                source = self.load(name)
            except VideoReadError as err:
                if self.on_error == "raise":
                    raise
                skipped.append((name, str(err)))
                continue
            item: PairItem = {"source": source, "name": name}
            if self.on_error == "skip":
                item[SKIPPED_KEY] = encode_skipped(skipped)
            return item
        listing = "; ".join(f"{n}: {why}" for n, why in skipped)
        raise VideoReadError(f"{len(skipped)} CelebA images in a row could not be read: {listing}")


class CelebASourcesDataModule(BaseDataModule):
    """Batches of cropped CelebA portraits ``{"source": B×3×H×W, "name": list[str]}``.

    Train batches (split "train", shuffled) skip unreadable images and carry ``"skipped"``;
    val/test/predict batches (splits "val", "test", "test") raise on them, naming the file.

    Args:
        root (`str` or `os.PathLike`): CelebA root (module docstring).
        crop_box (`(l, t, r, b)`, defaults to ``DEFAULT_CROP_BOX``): crop of the aligned image.
        batch_size (`int`, defaults to 16): every split's batch size.
        max_images (`int`, *optional*): first n images of each split.
        cache_dir (`str`, *optional*): where the index is cached.
        **kwargs: the loader settings of :class:`~fadm_lightning.data.base.BaseDataModule`
            (``image_size`` H = W, default 256; ``num_workers``, ``pin_memory``,
            ``persistent_workers``).
    """

    required_paths = {"root": LAYOUT_HELP.removeprefix("expected ")}

    def __init__(
        self,
        root: str | os.PathLike,
        crop_box: Sequence[float] = DEFAULT_CROP_BOX,
        batch_size: int = 16,
        max_images: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)  # saves the hyper-parameters
        self.root = root
        self.crop_box = tuple(crop_box)
        self.max_images = max_images
        self.cache_dir = cache_dir
        self._index: CelebAIndex | None = None
        self.datasets: dict[str, CelebASourceDataset] = {}

    @property
    def index(self) -> CelebAIndex:
        if self._index is None:
            self._index = CelebAIndex(self.root, self.cache_dir)
        return self._index

    def dataset(self, split: str) -> CelebASourceDataset:
        """The (cached) dataset of a split; train skips unreadable images, the others raise."""
        if split not in self.datasets:
            self.datasets[split] = CelebASourceDataset(
                self.root,
                split=split,
                image_size=self.image_size,
                crop_box=self.crop_box,
                max_images=self.max_images,
                on_error="skip" if split == "train" else "raise",
                index=self.index,
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")
        if stage == "validate":
            self.dataset("val")
        if stage in (None, "test", "predict"):
            self.dataset("test")

    def _loader(self, split: str, train: bool) -> DataLoader:
        return self.make_loader(
            self.dataset(split), self.batch_size, shuffle=train, drop_last=train
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
