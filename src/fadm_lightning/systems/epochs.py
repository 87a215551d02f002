"""Telling the training data which epoch it is (both systems call it at each epoch's start)."""

from __future__ import annotations

import lightning as L


def set_dataset_epoch(trainer: L.Trainer) -> None:
    """``set_epoch(trainer.current_epoch)`` on the training dataset when it has one (the folder
    dataset's items draw from ``(seed, epoch, index)``: independent of the workers, and a resumed
    run draws what an uninterrupted one draws). Lightning itself only tells the sampler."""
    loaders = trainer.train_dataloader
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        set_epoch = getattr(getattr(loader, "dataset", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(trainer.current_epoch)
