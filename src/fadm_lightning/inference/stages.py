"""Where the seconds of a command go: wall time per stage of the frame loop (decode, crop, coarse,
attributes, denoiser, paste-back, encode, and the setup before the loop), for the speed
benchmark's end-to-end breakdown. ``StageClock(enabled=False)`` (the commands' default) costs
nothing; an enabled clock on a GPU synchronizes the device at each stage's end, so a stage is
charged with its own kernels rather than the next stage's wait."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

import torch

#: the stages of animate / rectify, in the order of the frame loop
STAGES = ("setup", "decode", "crop", "coarse", "attributes", "denoiser", "paste_back", "encode")


class StageClock:
    """Accumulates wall seconds per stage name."""

    def __init__(self, enabled: bool = True, device: torch.device | str | None = None) -> None:
        self.enabled = enabled
        self.cuda = enabled and device is not None and torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def since(self, stage: str, began: float) -> None:
        """Charge ``stage`` with the wall time since ``began`` (``time.perf_counter()``)."""
        if self.enabled:
            if self.cuda:
                torch.cuda.synchronize()
            self.add(stage, time.perf_counter() - began)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        began = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.add(name, time.perf_counter() - began)

    def iterate(self, name: str, items: Iterable) -> Iterator:
        """``items`` with the time spent producing each charged to ``name`` (a decoder)."""
        if not self.enabled:
            yield from items
            return
        iterator = iter(items)
        while True:
            began = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.add(name, time.perf_counter() - began)
                return
            self.add(name, time.perf_counter() - began)
            yield item

    def per_frame(self, frames: int) -> dict[str, float]:
        """Seconds per frame of each stage met (in :data:`STAGES` order, others after)."""
        order = [s for s in STAGES if s in self.seconds]
        order += [s for s in self.seconds if s not in STAGES]
        return {s: self.seconds[s] / max(frames, 1) for s in order}
