"""Lightning data module for a root in the VoxCeleb layout (see ``voxceleb.py``)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from fadm_lightning.data.base import PairDataModule
from fadm_lightning.data.voxceleb import (
    VoxCelebClipDataset,
    VoxCelebIndex,
    VoxCelebPairsDataset,
    VoxCelebTrainDataset,
    carve_persons,
)


class EpochShuffle(RandomSampler):
    """The training order: a permutation drawn from ``(seed, epoch)`` alone, as
    ``DistributedSampler`` draws it. A ``RandomSampler`` draws its permutation from the global
    torch RNG when the loader is iterated, so a run resumed from a checkpoint, or one whose
    workers are persistent, saw another order than an uninterrupted one.

    The epoch is ``epoch_of()`` (the trainer's current epoch) when the loader is iterated, else
    the last ``set_epoch``: a resumed run iterates its loader before Lightning calls
    ``set_epoch``. It is handed to the dataset too (``set_epoch``, shared with the workers) before
    any index goes out, so the items the workers prefetch draw from the right epoch.
    """

    def __init__(
        self, data_source: Dataset, seed: int = 0, epoch_of: Callable[[], int | None] | None = None
    ) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0
        self.epoch_of = epoch_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = self.epoch_of() if self.epoch_of is not None else None
        epoch = self.epoch if epoch is None else int(epoch)
        set_dataset_epoch = getattr(self.data_source, "set_epoch", None)
        if callable(set_dataset_epoch):  # the items' random streams (VoxCelebTrainDataset)
            set_dataset_epoch(epoch)
        generator = torch.Generator().manual_seed((self.seed + epoch) % 2**63)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())


class VoxCelebDataModule(PairDataModule):
    """Train on two-frame items of ``root/train``, validate on fixed pairs of ``root/<val_split>``
    and test on whole clips of ``root/test``.

    Validation (and so checkpoint selection) reads ``val_split``. It defaults to "test" because
    FOMM's VoxCeleb layout has only ``train/`` and ``test/`` (backwards compatible: model
    selection then sees the test identities, as in FOMM/FADM); a root with a ``val/`` folder of
    held-out identities, such as the synthetic world (:class:`SyntheticDataModule`, default
    "val"), should validate on it so that the test split is only used for the final numbers.

    ``root`` is only read in ``setup()`` (or when ``index`` / ``has_annotations`` is first asked
    for), so a subclass may write the data in ``prepare_data()``. The training order is
    :class:`EpochShuffle`, a function of (seed, epoch); under DDP Lightning swaps in a
    ``DistributedSampler`` (the same rule) by itself, and calls ``set_epoch`` on either.

    Batches: :class:`~fadm_lightning.data.batch.PairBatch` for train (with ``"skipped"``, see
    ``VoxCelebTrainDataset``) and validation, :class:`~fadm_lightning.data.batch.ClipBatch` for
    test (batch size 1); the annotation keys when the root is annotated (``has_annotations``).

    Args:
        root (`str` or `os.PathLike`): dataset root with ``train/`` and ``test/``.
        id_sampling (`bool`, defaults to True): training items are person ids (FOMM).
        num_repeats (`int`, defaults to 75): training list repeats per epoch.
        val_persons (`int` or `float`, *optional*): with ``val_split="train"``, how many training
            persons (or which fraction) to carve out for validation (``carved_persons``).
        cache_dir (`str`, *optional*): where the clip index is cached.
        **kwargs: the loader and pair settings of :class:`~fadm_lightning.data.base.PairDataModule`
            (``image_size`` H = W, ``augment`` and the jitter strengths, ``batch_size``,
            ``val_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``num_val_pairs``, ``val_split``, ``test_max_frames``, ``test_frame_stride``,
            ``max_read_retries``). ``val_split`` (default "test") is "val" where the root has
            held-out validation identities, "test" for the FOMM VoxCeleb layout (backwards
            compatible); ``setup`` raises ``FileNotFoundError`` naming ``root/<val_split>`` when
            it does not exist. ``max_read_retries``: the batch's ``"skipped"`` strings list the
            failures (counted by ``fadm_lightning.callbacks.data_errors``).
    """

    required_paths = {
        "root": "a dataset root in the VoxCeleb layout of FOMM's preprocessing: root/train/ and "
        "root/test/ holding one <person id>#<video id>#<start>#<end>.mp4 per clip (an mp4 file or "
        "a folder of 7-digit numbered PNG frames), e.g. data/vox-png/{train,test} (an optional "
        "root/val/ of validation identities is read when val_split=val)"
    }

    def __init__(
        self,
        root: str | os.PathLike,
        id_sampling: bool = True,
        num_repeats: int = 75,
        val_persons: int | float | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # loader, augmentation, validation and test settings
        val_split = self.val_split
        if val_persons is not None and val_split != "train":
            raise ValueError(
                f"val_persons={val_persons} carves validation persons from train/: set "
                f"val_split=train (got val_split={val_split!r})"
            )
        if val_split == "train" and val_persons is None:
            raise ValueError(
                "val_split=train would validate on the training persons: set val_persons (how "
                "many training persons, or which fraction, to carve out for validation)"
            )
        self.root = root
        self.id_sampling = id_sampling
        self.num_repeats = num_repeats
        self.val_persons = val_persons
        self.cache_dir = cache_dir
        self._index: VoxCelebIndex | None = None
        self.train_set: VoxCelebTrainDataset | None = None
        self.val_set: VoxCelebPairsDataset | None = None
        self.test_set: VoxCelebClipDataset | None = None

    @property
    def index(self) -> VoxCelebIndex:
        """The clip index of ``root`` (built on first use)."""
        if self._index is None:
            self._index = VoxCelebIndex(self.root, self.cache_dir)
        return self._index

    @property
    def has_annotations(self) -> bool:
        """Whether every split read (train, ``val_split``, test) carries ground-truth annotations
        (``root/annotations/<split>``); False when ``root/<val_split>`` does not exist."""
        return all(self.index.has_split(s) and self.index.has_annotations(s) for s in self.splits)

    @property
    def carved_persons(self) -> list[str]:
        """The validation persons carved from ``train/`` (``val_persons``; [] when not carving):
        they give the validation pairs and are left out of training."""
        if self.val_persons is None:
            return []
        return carve_persons(self.index.person_ids("train"), self.val_persons)

    def setup(self, stage: str | None = None) -> None:
        carved = self.carved_persons
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = VoxCelebTrainDataset(
                self.root,
                image_size=self.image_size,
                id_sampling=self.id_sampling,
                num_repeats=self.num_repeats,
                augmentation=self.augmentation,
                index=self.index,
                max_read_retries=self.max_read_retries,
                exclude_persons=carved,
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.index.require_split(self.val_split)  # names root/<val_split> when it is missing
            self.val_set = VoxCelebPairsDataset(
                self.root,
                image_size=self.image_size,
                num_pairs=self.num_val_pairs,
                split=self.val_split,
                index=self.index,
                persons=carved or None,
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = VoxCelebClipDataset(
                self.root,
                image_size=self.image_size,
                max_frames=self.test_max_frames,
                frame_stride=self.test_frame_stride,
                index=self.index,
            )

    def _loader(
        self, dataset: Dataset | None, name: str, batch_size: int, train: bool
    ) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"VoxCelebDataModule: {name} dataset not built; call setup() first")
        seed = getattr(dataset, "seed", 0)
        return self.make_loader(
            dataset,
            batch_size,
            sampler=EpochShuffle(dataset, seed, self._epoch) if train else None,
            # the loader's own generator for its workers' base seed: drawn from the global torch
            # RNG it would advance the model's noise stream once per iterator, i.e. once per
            # epoch without persistent workers, once per run with them, so a run resumed from a
            # checkpoint (which restores that RNG) would draw other noise than an uninterrupted one
            generator=torch.Generator().manual_seed(seed % 2**63),
            drop_last=train,
        )

    def _epoch(self) -> int | None:
        """The epoch the training loader is iterated for: the epochs the fit loop has processed
        (what Lightning hands ``set_epoch``; ``current_epoch`` lags by one when a run resumes
        from a checkpoint saved at an epoch's end)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        return trainer.fit_loop.epoch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "validation", self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", 1, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class SyntheticDataModule(VoxCelebDataModule):
    """The embedded default: procedural talking heads (``fadm_lightning.synthetic``) written
    in the VoxCeleb layout, with ground-truth annotations, on first use.

    The data goes to ``<root>/<hash of the generator settings>`` so that different settings never
    mix; generation happens once, in ``prepare_data`` (rank zero under DDP).

    The world has three disjoint sets of identities: ``train/``, ``test/`` and, with
    ``generator.num_val_ids > 0``, ``val/``. Validation reads ``val/`` by default, so checkpoint
    and sampler selection never see the test identities; ``setup("fit")`` raises
    ``FileNotFoundError`` when the generator settings write no ``val/`` (set
    ``generator.num_val_ids`` or ``val_split="test"``). Testing reads ``test/`` as always.

    Args:
        root: parent folder of generated datasets.
        generator: keyword arguments of :func:`fadm_lightning.synthetic.generate_dataset`.
        val_split (`str`, defaults to "val"): as :class:`VoxCelebDataModule`.
        **kwargs: as :class:`VoxCelebDataModule`.
    """

    required_paths: dict[str, str] = {}

    def __init__(
        self,
        root: str | os.PathLike,
        generator: dict[str, Any] | None = None,
        val_split: str = "val",
        **kwargs,
    ) -> None:
        self.generator_kwargs = dict(generator or {})
        digest = hashlib.sha1(
            json.dumps(self.generator_kwargs, sort_keys=True).encode()
        ).hexdigest()[:10]
        super().__init__(root=Path(root) / f"synthetic-{digest}", val_split=val_split, **kwargs)

    def prepare_data(self) -> None:
        from fadm_lightning.synthetic import generate_dataset

        generate_dataset(self.root, **self.generator_kwargs)
