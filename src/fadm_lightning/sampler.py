"""Sampler settings shared by every layer (no imports of the package)."""

from __future__ import annotations

#: the official sampler (REFERENCE_SPEC §4.6): every training timestep, DDIM η = 1, from pure
#: noise, x̂_0 not clipped (the default sampler of the official release)
OFFICIAL_SAMPLER = {
    "steps": 100,
    "eta": 1.0,
    "strength": 1.0,
    "clip_sample": False,
    "start_noise": True,
}


def denoiser_calls(steps: int, strength: float = 1.0) -> int:
    """Denoiser calls per frame of a DDIM sampler: the steps it actually runs (``strength`` < 1
    runs only the last ``round(steps·strength)`` of them, at least one)."""
    return int(steps) if strength >= 1 else max(int(round(steps * strength)), 1)
