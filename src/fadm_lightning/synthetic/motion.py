"""Motion of the synthetic world: smooth pose and expression trajectories of a clip.

:func:`sample_motion` turns a random generator into the per-frame pose (``yaw, pitch, roll, tx,
ty, scale``) and expression (``mouth_open, smile, blink_left, blink_right, brow_raise``) of one
talking-head clip, the inputs of :func:`fadm_lightning.synthetic.world.render`: bounded sums of
slow sinusoids move the head, the mouth opens at syllable rate under a slow speech envelope and
the eyes blink every few seconds. Pure numpy, deterministic for a given generator.
"""

from __future__ import annotations

import math

import numpy as np


def _smooth_signal(
    rng: np.random.Generator, t: np.ndarray, fmin: float, fmax: float, n: int = 3
) -> np.ndarray:
    """A sum of ``n`` sinusoids (frequencies in Hz) with random phases, normalised to [−1, 1]."""
    freqs = rng.uniform(fmin, fmax, size=n)
    phases = rng.uniform(0.0, 2 * math.pi, size=n)
    weights = rng.uniform(0.5, 1.0, size=n)
    waves = np.sin(2 * math.pi * freqs[:, None] * t[None] + phases[:, None])
    return (weights[:, None] * waves).sum(0) / weights.sum()


def _bounded(rng: np.random.Generator, t: np.ndarray, limit: float, offset: float) -> np.ndarray:
    """A smooth trajectory ``o + a·signal`` with ``|o| + a ≤ limit`` (so it stays in ±limit)."""
    off = rng.uniform(-offset, offset)
    amp = rng.uniform(0.3, 1.0) * (limit - abs(off))
    return off + amp * _smooth_signal(rng, t, 0.15, 0.7)


def _blinks(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """Blink pulses (T×2, left and right) every 2–4 s; both eyes together but for rare winks."""
    out = np.zeros((num_frames, 2))
    frames = np.arange(num_frames, dtype=np.float64)
    centre = rng.uniform(0.0, 3.0) * fps - 0.5 * fps
    while centre < num_frames + 3:
        width = rng.uniform(1.0, 1.5)  # Gaussian sigma in frames (a blink lasts ~4–6 frames)
        delay = rng.uniform(-0.4, 0.4)  # the right eye may lag the left by a fraction of a frame
        amp = rng.uniform(0.9, 1.0, size=2)
        if rng.uniform() < 0.1:  # a wink
            amp[rng.integers(2)] = 0.0
        for eye, shift in ((0, 0.0), (1, delay)):
            out[:, eye] += amp[eye] * np.exp(-0.5 * ((frames - centre - shift) / width) ** 2)
        centre += rng.uniform(2.0, 4.0) * fps
    return np.clip(out, 0.0, 1.0)


def sample_motion(
    rng: np.random.Generator, num_frames: int, fps: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth talking-head motion: ``(pose T×6, expression T×5)`` float32 arrays.

    Pose: yaw ±0.5, pitch ±0.3, roll ±0.2 (radians), tx/ty ±0.1, scale 0.9–1.1. Expression:
    mouth_open (syllables at 3–5 Hz under a slow speech envelope), smile (slow), blinks (short
    pulses every 2–4 s, both eyes mostly together), brow_raise (slow), all in [0, 1].
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    t = np.arange(num_frames) / fps
    yaw = _bounded(rng, t, 0.5, 0.15)
    pitch = _bounded(rng, t, 0.3, 0.1)
    roll = _bounded(rng, t, 0.2, 0.07)
    tx = _bounded(rng, t, 0.1, 0.04)
    ty = _bounded(rng, t, 0.1, 0.04)
    scale = 1.0 + _bounded(rng, t, 0.1, 0.04)
    pose = np.stack([yaw, pitch, roll, tx, ty, scale], axis=1)

    speech = np.clip(0.55 + 0.8 * _smooth_signal(rng, t, 0.2, 0.5), 0.0, 1.0)
    syllable_rate = rng.uniform(3.0, 5.0)
    wobble = 0.6 * np.sin(2 * math.pi * 1.3 * t + rng.uniform(0, 2 * math.pi))
    phase = 2 * math.pi * syllable_rate * t + rng.uniform(0, 2 * math.pi) + wobble
    syllables = (0.5 + 0.5 * np.sin(phase)) ** 1.5
    mouth = rng.uniform(0.6, 1.0) * speech * syllables
    smile = np.clip(rng.uniform(0.0, 0.6) + 0.4 * _smooth_signal(rng, t, 0.05, 0.3), 0.0, 1.0)
    blink = _blinks(rng, num_frames, fps)
    brow_base = rng.uniform(0.0, 0.4) + 0.35 * _smooth_signal(rng, t, 0.1, 0.5)
    brow = np.clip(brow_base + 0.2 * speech, 0.0, 1.0)
    expression = np.stack([mouth, smile, blink[:, 0], blink[:, 1], brow], axis=1)
    return pose.astype(np.float32), np.clip(expression, 0.0, 1.0).astype(np.float32)
