"""The base data modules: the loader settings every data module shares, declared once.

:class:`BaseDataModule` owns what any module hands its ``DataLoader`` (frame size, batch size,
workers, pinned memory, persistent workers) and saves every constructor argument of the whole
class chain as hyper-parameters (``save_hyperparameters`` collects the subclasses' arguments
too). :class:`PairDataModule` adds what the modules of (source, driving) pairs share: the FOMM
augmentations, the validation pairs and split, the test clips and the read retries. A subclass
declares only its own arguments and passes the rest on with ``**kwargs``, so a Hydra config
(``conf/data/*.yaml``) names the same keys as before::

    class MyDataModule(PairDataModule):
        def __init__(self, root: str, my_option: int = 3, **kwargs) -> None:
            super().__init__(**kwargs)
            self.root, self.my_option = root, my_option

Batches follow :mod:`fadm_lightning.data.batch`; ``docs/data.md`` ("Add a dataset") walks
through a new module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from fadm_lightning.data.transforms import FrameAugmentation


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available()


class BaseDataModule(L.LightningDataModule):
    """Loader settings of every data module (keyword-only; subclasses pass them on).

    Args:
        image_size (`int` or `(H, W)`, defaults to 256): frame size of the batches; what None
            means is the subclass's (the shards: the stored size).
        batch_size (`int`, defaults to 5): training batch size (and every split's where the
            module has no ``val_batch_size``).
        num_workers (`int`, defaults to 4): DataLoader workers.
        pin_memory (`bool`, defaults to True): pinned host memory, only used when an accelerator
            is present (:attr:`pin`).
        persistent_workers (`bool`, defaults to True): forced False when ``num_workers`` is 0.
    """

    #: constructor arguments that must name existing paths (checked before a run starts):
    #: ``{argument: what it should hold}``; empty when the module writes or streams its data
    required_paths: dict[str, str] = {}

    def __init__(
        self,
        *,
        image_size: int | Sequence[int] | None = 256,
        batch_size: int = 5,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # every __init__ of the chain, kwargs included
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0

    @property
    def pin(self) -> bool:
        """``pin_memory``, when an accelerator is present."""
        return self.pin_memory and _accelerator_available()

    def make_loader(self, dataset: Dataset, batch_size: int, **options: Any) -> DataLoader:
        """A ``DataLoader`` of ``dataset`` with this module's workers and memory settings;
        ``options`` (``sampler``, ``shuffle``, ``drop_last``, ``generator`` …) as DataLoader's.

        Pass a ``generator`` for a loader whose iteration must not draw from the global torch
        RNG (a training loader of a resumable run: see ``VoxCelebDataModule``)."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin,
            persistent_workers=self.persistent_workers,
            **options,
        )


class PairDataModule(BaseDataModule):
    """:class:`BaseDataModule` plus the settings of the modules of (source, driving) pairs:
    training pairs (:class:`~fadm_lightning.data.batch.PairBatch`), validation pairs and whole test
    clips (:class:`~fadm_lightning.data.batch.ClipBatch`).

    Args:
        augment (`bool`, defaults to True): FOMM flips + colour jitter on training items
            (:attr:`augmentation`; None when False).
        brightness, contrast, saturation, hue (`float`, default 0.1): jitter strengths.
        val_batch_size (`int`, defaults to 4): validation batch size (test batches hold one clip).
        num_val_pairs (`int`, defaults to 8): validation pairs.
        val_split (`str`, defaults to "test"): the split (folder) the validation pairs come from.
        test_max_frames (`int`, *optional*), test_frame_stride (`int`, defaults to 1): test clips.
        max_read_retries (`int`, defaults to 10): an unreadable training clip is replaced by
            another up to this many times in a row (listed in the batch's ``"skipped"``).
        **kwargs: :class:`BaseDataModule`.
    """

    def __init__(
        self,
        *,
        augment: bool = True,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.1,
        val_batch_size: int = 4,
        num_val_pairs: int = 8,
        val_split: str = "test",
        test_max_frames: int | None = None,
        test_frame_stride: int = 1,
        max_read_retries: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(val_split, str) or not val_split or "/" in val_split:
            raise ValueError(
                f"val_split must be a split folder name such as 'val', got {val_split!r}"
            )
        self.augmentation = (
            FrameAugmentation(
                brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
            )
            if augment
            else None
        )
        self.val_batch_size = val_batch_size
        self.num_val_pairs = num_val_pairs
        self.val_split = val_split
        self.test_max_frames = test_max_frames
        self.test_frame_stride = test_frame_stride
        self.max_read_retries = max_read_retries

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this module reads: train, the validation split, test (no duplicates)."""
        return tuple(dict.fromkeys(("train", self.val_split, "test")))
