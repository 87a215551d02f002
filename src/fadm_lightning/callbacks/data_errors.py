"""Counts and reports, once per epoch, the training items replaced because their data was unreadable.

A training dataset that cannot read a clip draws another one and lists the failure in the item's
``"skipped"`` string (``fadm_lightning.data.skipped.encode_skipped``). The list travels inside the
batch, so it reaches the main process whatever the number of DataLoader workers (a dataset copy
in a worker process cannot report by itself). This callback decodes it for every training batch
and, at the end of the epoch, logs ``data/skipped_reads`` (summed over DDP ranks) and prints the
count with the names of the clips concerned. Clips left out of the index because they could not
be opened at all are reported once, when training starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import lightning as L

from fadm_lightning.data.skipped import SKIPPED_KEY, decode_skipped

log = logging.getLogger(__name__)


class DataErrorsCallback(L.Callback):
    """Per-epoch report of unreadable training data.

    Args:
        key (`str`, defaults to "skipped"): batch entry holding the encoded failures.
        max_listed (`int`, defaults to 20): clip names printed per report (all are counted).
        log_metric (`bool`, defaults to True): log ``data/skipped_reads`` every epoch.

    Attributes:
        history (`list[dict]`): one ``{"epoch", "count", "clips": {name: (times, reason)}}`` per
            finished training epoch of this process (rank).
        index_skipped (`dict[str, str]`): clips the data module's index left out, with reasons.
    """

    def __init__(
        self, key: str = SKIPPED_KEY, max_listed: int = 20, log_metric: bool = True
    ) -> None:
        self.key = key
        self.max_listed = max_listed
        self.log_metric = log_metric
        self.history: list[dict[str, Any]] = []
        self.index_skipped: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._reasons: dict[str, str] = {}

    # -- collecting ------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        index = getattr(trainer.datamodule, "index", None) if trainer.datamodule else None
        skipped = getattr(index, "skipped", None)
        if not isinstance(skipped, Mapping):
            return
        self.index_skipped = {
            f"{split}/{name}": why
            for split, entries in skipped.items()
            for name, why in dict(entries).items()
        }
        if self.index_skipped and trainer.is_global_zero:
            log.warning(
                "%d clip(s) could not be opened and were left out of the dataset index: %s",
                len(self.index_skipped),
                self._listing({k: (1, v) for k, v in self.index_skipped.items()}),
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._counts.clear()
        self._reasons.clear()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.count_batch(batch)

    def count_batch(self, batch: Any) -> int:
        """Add the failures listed in ``batch[key]`` (a string or a list of strings); returns them."""
        if not isinstance(batch, Mapping) or self.key not in batch:
            return 0
        value = batch[self.key]
        strings = [value] if isinstance(value, str) else list(value)
        found = 0
        for entry in strings:
            for name, reason in decode_skipped(str(entry)):
                self._counts[name] += 1
                self._reasons[name] = reason
                found += 1
        return found

    # -- reporting -------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = sum(self._counts.values())
        clips = {n: (c, self._reasons[n]) for n, c in sorted(self._counts.items())}
        self.history.append({"epoch": trainer.current_epoch, "count": total, "clips": clips})
        if self.log_metric:
            pl_module.log(
                "data/skipped_reads", float(total), reduce_fx="sum", sync_dist=True, on_epoch=True
            )
        if total:
            rank = f" (rank {trainer.global_rank})" if trainer.world_size > 1 else ""
            log.warning(
                "epoch %d%s: %d training read(s) failed and were replaced by other clips, "
                "from %d clip(s): %s",
                trainer.current_epoch,
                rank,
                total,
                len(clips),
                self._listing(clips),
            )

    def _listing(self, clips: Mapping[str, tuple[int, str]]) -> str:
        items = list(clips.items())
        shown = "; ".join(
            f"{name} ×{times} ({reason})" if times > 1 else f"{name} ({reason})"
            for name, (times, reason) in items[: self.max_listed]
        )
        more = len(items) - self.max_listed
        return shown + (f"; … and {more} more" if more > 0 else "")
