"""Writes which training items each process (DDP rank) saw, batch by batch.

A check of how an epoch is split between ranks and nodes (tests/integration/test_multinode.py):
every rank appends one JSON line per training batch to ``<dirpath>/rank<global rank>.jsonl``,
``{"rank", "world_size", "epoch", "step", "items": [...]}``, where ``items`` is the batch's ``key``
entry (the clip names, ``"name"``). Not in the default callbacks; add it for one run with
``+callbacks.seen_items._target_=fadm_lightning.callbacks.seen_items.SeenItemsCallback
+callbacks.seen_items.dirpath=<folder>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L


class SeenItemsCallback(L.Callback):
    """One JSON line per training batch and rank: the identifiers of the batch's items.

    Args:
        dirpath (`str` or `os.PathLike`): folder of the ``rank<k>.jsonl`` files (created).
        key (`str`, defaults to "name"): batch entry holding one identifier per item.
    """

    def __init__(self, dirpath: str | Path, key: str = "name") -> None:
        self.dirpath = Path(dirpath)
        self.key = key

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, Mapping) or self.key not in batch:
            raise KeyError(f"SeenItemsCallback: the training batch has no {self.key!r} entry")
        items = batch[self.key]
        items = items.tolist() if hasattr(items, "tolist") else list(items)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "items": items,
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
