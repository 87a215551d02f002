"""The sampler: one structured config, one name per knob, the same defaults everywhere.

Every command that refines frames (training validation and test, ``evaluate``, ``animate``,
``rectify``, the web app, every benchmark) describes its DDIM sampler with :class:`SamplerConfig`
and hands it whole to :meth:`fadm_lightning.pipeline.FADMPipeline.sample`.

The knobs (``sampler.*`` on every command line; ``model.sampler.*`` in a model config):

========================= ==================================================================
``steps``                 DDIM steps (100 = every training timestep)
``eta``                   DDIM η (1 = the official ancestral sampler, 0 = deterministic)
``strength``              1 starts from pure noise; s < 1 from the coarse frame noised to the
                          timestep at fraction s of the schedule, running only those steps
``clip_sample``           clamp each step's x̂_0 to the frame range (the official sampler does not)
``start_noise``           False starts from the coarse frame without noise (a distilled student)
``seed``                  seed of the one noise draw shared by every frame of a video
========================= ==================================================================

**One rule for defaults.** A knob left at ``None`` takes the model's own validated sampler (a
training checkpoint's ``model.sampler``, which its validation chose; the official sampler for
the official release); :data:`PRESETS` names whole samplers, ``official`` among them
(``sampler=official`` on any command). No module of the package is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

#: the five knobs that define the chain (``seed`` only picks its noise)
KNOBS = ("steps", "eta", "strength", "clip_sample", "start_noise")
#: the spelling of a sampler in tables and on benchmark command lines:
#: ``steps:eta:strength[:clip][:nonoise]``
SPEC_FLAGS = ("clip", "nonoise")


@dataclass(frozen=True)
class SamplerConfig:
    """A DDIM sampler (see the module docstring for each knob). ``None`` = the model's own."""

    steps: int | None = None
    eta: float | None = None
    strength: float | None = None
    clip_sample: bool | None = None
    start_noise: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is not None and int(self.steps) < 1:
            raise ValueError(f"sampler.steps must be ≥ 1, got {self.steps}")
        if self.eta is not None and not 0 <= float(self.eta) <= 1:
            raise ValueError(f"sampler.eta must lie in [0, 1], got {self.eta}")
        if self.strength is not None and not 0 < float(self.strength) <= 1:
            raise ValueError(f"sampler.strength must lie in (0, 1], got {self.strength}")
        # plain Python types (a config may hand over strings of numbers, or numpy scalars)
        for name, kind in (("steps", int), ("eta", float), ("strength", float)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, kind(value))
        for name in ("clip_sample", "start_noise"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, bool(value))
        object.__setattr__(self, "seed", int(self.seed))

    # ------------------------------------------------------------------ building
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SamplerConfig:
        """From a dict or DictConfig with these names (unknown keys are an error)."""
        if values is None:
            return cls()
        if isinstance(values, SamplerConfig):
            return values
        values = dict(values)
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown sampler settings {unknown}; the sampler's knobs are "
                f"{[f.name for f in fields(cls)]}"
            )
        return cls(**values)

    @classmethod
    def parse(cls, text: str) -> SamplerConfig:
        """A preset's name (:data:`PRESETS`) or ``steps:eta:strength[:clip][:nonoise]``."""
        text = str(text).strip()
        if text in PRESETS:
            return PRESETS[text]
        try:
            parts = text.split(":")
            flags = set(parts[3:])
            if len(parts) < 3 or not flags <= set(SPEC_FLAGS):
                raise ValueError(f"unknown flags {sorted(flags - set(SPEC_FLAGS))}")
            return cls(
                steps=int(parts[0]),
                eta=float(parts[1]),
                strength=float(parts[2]),
                clip_sample="clip" in flags,
                start_noise="nonoise" not in flags,
            )
        except (ValueError, IndexError) as err:
            raise ValueError(
                f"sampler {text!r} is neither a preset ({', '.join(PRESETS)}) nor "
                f"steps:eta:strength[:clip][:nonoise] ({err})"
            ) from err

    # ------------------------------------------------------------------ using
    @property
    def complete(self) -> bool:
        """Every knob set (no ``None`` left for a model's defaults to fill)."""
        return all(getattr(self, k) is not None for k in KNOBS)

    def over(self, defaults: SamplerConfig | Mapping[str, Any] | None) -> SamplerConfig:
        """These settings with every ``None`` taken from ``defaults`` (the model's sampler)."""
        base = SamplerConfig.from_mapping(defaults) if defaults is not None else SamplerConfig()
        return replace(self, **{k: getattr(base, k) for k in KNOBS if getattr(self, k) is None})

    def with_(self, **changes: Any) -> SamplerConfig:
        """A copy with ``changes`` (``None`` values are ignored: they change nothing)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def calls(self) -> int:
        """Denoiser calls per frame (:func:`denoiser_calls`)."""
        self._require_complete()
        return denoiser_calls(self.steps, self.strength)

    def spec(self) -> str:
        """``steps:eta:strength[:clip][:nonoise]`` (the inverse of :meth:`parse`)."""
        self._require_complete()
        text = f"{self.steps}:{self.eta:g}:{self.strength:g}"
        return (
            text
            + (":clip" if self.clip_sample else "")
            + (":nonoise" if not self.start_noise else "")
        )

    def describe(self) -> str:
        """One line for logs and tables."""
        self._require_complete()
        return (
            f"{self.steps} DDIM steps, η={self.eta:g}, strength {self.strength:g}"
            + (", x̂_0 clipped" if self.clip_sample else "")
            + (", no noise (from the coarse frame)" if not self.start_noise else "")
        )

    def as_dict(self, seed: bool = False) -> dict[str, Any]:
        """The knobs as a plain dict (what checkpoints, cards and JSON records store)."""
        out = {k: getattr(self, k) for k in KNOBS}
        if seed:
            out["seed"] = self.seed
        return out

    def _require_complete(self) -> None:
        if not self.complete:
            missing = [k for k in KNOBS if getattr(self, k) is None]
            raise ValueError(
                f"sampler settings {missing} are unset: resolve them with .over(<the model's "
                "sampler>) first"
            )


def denoiser_calls(steps: int, strength: float = 1.0) -> int:
    """Denoiser calls per frame of a DDIM sampler: the steps it actually runs (``strength`` < 1
    runs only the last ``round(steps·strength)`` of them, at least one)."""
    return int(steps) if strength >= 1 else max(int(round(steps * strength)), 1)


#: the official sampler (REFERENCE_SPEC §4.6): every training timestep, DDIM η = 1, from pure
#: noise, x̂_0 not clipped (the default sampler of the official release)
OFFICIAL = SamplerConfig(steps=100, eta=1.0, strength=1.0, clip_sample=False, start_noise=True)

#: named samplers: ``sampler=<name>`` on a command line (``conf/sampler/<name>.yaml``), or a
#: benchmark's list of samplers
PRESETS: dict[str, SamplerConfig] = {
    "official": OFFICIAL,
    # 25 deterministic DDIM steps from noise (the web app's "balanced" preset sets these knobs
    # but clip_sample, which it leaves to the model)
    "ddim25": SamplerConfig(steps=25, eta=0.0, strength=1.0, clip_sample=False, start_noise=True),
    # one deterministic call from the coarse frame without noise: a distilled student's sampler
    "one_call": SamplerConfig(steps=1, eta=0.0, strength=1.0, clip_sample=True, start_noise=False),
}

#: the official sampler as a plain dict (older callers; ``OFFICIAL.as_dict()``)
OFFICIAL_SAMPLER: dict[str, Any] = OFFICIAL.as_dict()

#: the knob names of the earlier, per-command spellings → this config's (old checkpoints,
#: pretrained folders and configs keep loading)
LEGACY_NAMES = {
    "num_inference_steps": "steps",
    "val_num_inference_steps": "steps",
    "val_eta": "eta",
    "val_strength": "strength",
    "val_clip_sample": "clip_sample",
    "val_start_noise": "start_noise",
}


def from_legacy(values: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler knobs of ``values`` spelled with :data:`LEGACY_NAMES` or the new names."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = LEGACY_NAMES.get(key, key)
        if name in KNOBS or name == "seed":
            out[name] = value
    return out


__all__ = [
    "KNOBS",
    "LEGACY_NAMES",
    "OFFICIAL",
    "OFFICIAL_SAMPLER",
    "PRESETS",
    "SamplerConfig",
    "denoiser_calls",
    "from_legacy",
]
