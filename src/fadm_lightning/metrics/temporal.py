"""Temporal consistency of a generated clip against its ground truth (no network).

A per-frame metric (L1, PSNR, SSIM, LPIPS) cannot tell a video whose error is the same in every
frame from one whose error changes from frame to frame: both have the same per-frame values, but
only the second flickers. Refining every frame independently with a diffusion sampler can add
exactly that kind of error. The figures here compare the prediction's *changes over time* with
the ground truth's.

For a clip of T frames, prediction ŷ_t and ground truth y_t (C×H×W in [0, 1], the values L1
sees; t = 0 … T−1), with Δx_t = x_{t+1} − x_t and Δ²x_t = x_{t+2} − 2x_{t+1} + x_t:

``tdiff`` (↓, needs T ≥ 2)
    mean over t and pixels of |Δŷ_t − Δy_t|: how far the frame-to-frame change of the prediction
    is from that of the truth. 0 when the prediction moves exactly like the truth — also when
    it is off by an error that stays put (a constant colour offset or a fixed pattern); any
    error that changes between frames (flicker, jitter, drift) raises it. For a per-frame
    error e_t it is the mean |e_{t+1} − e_t|, in the units of L1.

``flicker`` (signed, needs T ≥ 3)
    mean |Δ²ŷ| − mean |Δ²y|: how much more frame-to-frame jerk (second temporal difference)
    the prediction has than the truth. > 0: it jitters more than the truth (flicker); 0: as
    much; < 0: smoother than the truth (e.g. motion that is frozen or over-smoothed). A steady
    motion or a constant drift has no second difference, so it adds nothing.

Both are computed per clip (one value per clip); callers average over clips.
"""

from __future__ import annotations

import torch

TDIFF_LABEL = "tdiff"
FLICKER_LABEL = "flicker"


def _check(pred: torch.Tensor, target: torch.Tensor, min_frames: int) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"expected two T×C×H×W clips of one shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.shape[0] < min_frames:
        raise ValueError(f"needs at least {min_frames} frames, got {pred.shape[0]}")


def tdiff(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |(ŷ_{t+1} − ŷ_t) − (y_{t+1} − y_t)| over the T−1 frame pairs and all pixels of a
    T×C×H×W clip (a 0-d tensor; lower is better, 0 for identical changes)."""
    _check(pred, target, 2)
    pred, target = pred.float(), target.float()
    return ((pred[1:] - pred[:-1]) - (target[1:] - target[:-1])).abs().mean()


def _second_difference(x: torch.Tensor) -> torch.Tensor:
    return x[2:] - 2 * x[1:-1] + x[:-2]


def flicker(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |Δ²ŷ| − mean |Δ²y| of a T×C×H×W clip (a 0-d tensor): the prediction's excess
    frame-to-frame jerk over the truth's (> 0 flickers more, < 0 smoother)."""
    _check(pred, target, 3)
    pred, target = pred.float(), target.float()
    return _second_difference(pred).abs().mean() - _second_difference(target).abs().mean()


def temporal_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"tdiff", "flicker"}`` of one clip, each a 0-d tensor; a figure the clip is too short
    for (tdiff: T < 2, flicker: T < 3) is left out."""
    out = {}
    if pred.shape[0] >= 2:
        out["tdiff"] = tdiff(pred, target)
    if pred.shape[0] >= 3:
        out["flicker"] = flicker(pred, target)
    return out


class TemporalAccumulator:
    """:func:`temporal_metrics` of a clip fed in consecutive chunks (T_i×C×H×W each), keeping
    only the last two frames between chunks: the same values as on the whole clip at once."""

    def __init__(self) -> None:
        self._pred: torch.Tensor | None = None  # the last ≤ 2 frames seen
        self._target: torch.Tensor | None = None
        self._tdiff = torch.zeros((), dtype=torch.float64)
        self._jerk_pred = torch.zeros((), dtype=torch.float64)
        self._jerk_target = torch.zeros((), dtype=torch.float64)
        self._pairs = 0  # frame pairs × pixels summed in _tdiff
        self._triples = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                f"expected two T×C×H×W chunks of one shape, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        pred, target = pred.detach().float().cpu(), target.detach().float().cpu()
        if self._pred is not None:
            pred = torch.cat([self._pred, pred])
            target = torch.cat([self._target, target])
        carried = 0 if self._pred is None else self._pred.shape[0]
        # new pairs: those ending in a new frame; new triples likewise
        if pred.shape[0] >= 2:
            first = max(carried - 1, 0)
            d = (pred[first + 1 :] - pred[first:-1]) - (target[first + 1 :] - target[first:-1])
            self._tdiff += d.abs().double().sum()
            self._pairs += d.numel()
        if pred.shape[0] >= 3:
            first = max(carried - 2, 0)
            p, t = pred[first:], target[first:]
            self._jerk_pred += _second_difference(p).abs().double().sum()
            self._jerk_target += _second_difference(t).abs().double().sum()
            self._triples += _second_difference(p).numel()
        self._pred, self._target = pred[-2:], target[-2:]

    def compute(self) -> dict[str, float]:
        """``{"tdiff", "flicker"}`` of the frames seen (a figure the clip is too short for is
        left out)."""
        out = {}
        if self._pairs:
            out["tdiff"] = float(self._tdiff / self._pairs)
        if self._triples:
            out["flicker"] = float((self._jerk_pred - self._jerk_target) / self._triples)
        return out
