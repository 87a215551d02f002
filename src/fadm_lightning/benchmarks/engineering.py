"""Ways of running the denoiser that the speed benchmarks compare (a row each): threads,
channels_last, ``torch.inference_mode``, bf16 autocast, ``torch.compile``, and the fastest
preset, ``FASTEST_ENGINEERING`` less what this machine cannot do."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

#: the CPU engineering of the fastest preset (docs/inference.md, "Speed: official sampler vs
#: the distilled student", has the measurements that chose it)
FASTEST_ENGINEERING = {"precision": "fp32", "channels_last": True, "compile": False}


@dataclass(frozen=True)
class Engineering:
    """One way of running the denoiser (a row of the table)."""

    key: str
    label: str
    threads: int | None = None  # None: the run's threads
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    inference_mode: bool = False

    def settings(self, sampler: dict[str, Any], batch_size: int):
        from fadm_lightning.inference.model import SamplerSettings

        return SamplerSettings(
            **sampler,
            batch_size=batch_size,
            precision=self.precision,
            compile=self.compile,
            channels_last=self.channels_last,
        )


EAGER = Engineering("student", "eager fp32, no_grad (baseline)")


def engineering_rows(
    keys: list[str], device: torch.device, threads: int, fastest: dict[str, Any]
) -> list[Engineering | tuple[str, str]]:
    """The requested rows, or ``(key, reason)`` for a row this machine cannot run."""
    from fadm_lightning.inference.model import cpp_compiler_available, cpu_supports_bf16

    rows: list[Engineering | tuple[str, str]] = []
    for key in keys:
        if key == "student":
            rows.append(EAGER)
        elif key == "threads":
            if device.type != "cpu":
                rows.append((key, "threads: CPU only"))
                continue
            other = 1 if threads > 1 else max(os.cpu_count() or 1, 1)
            if other == threads:
                rows.append((key, f"threads: only {threads} core(s), nothing to compare"))
                continue
            rows.append(Engineering(key, f"eager fp32, {other} thread(s)", threads=other))
        elif key == "channels_last":
            rows.append(Engineering(key, "channels_last", channels_last=True))
        elif key == "inference_mode":
            rows.append(Engineering(key, "torch.inference_mode", inference_mode=True))
        elif key == "bf16":
            if device.type == "cpu" and not cpu_supports_bf16():
                rows.append(
                    (key, "bf16: this CPU has no native bf16 (avx512_bf16 / amx) in oneDNN")
                )
            elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
                rows.append((key, "bf16: this GPU does not support bf16"))
            else:
                rows.append(Engineering(key, "bf16 autocast", precision="bf16"))
        elif key == "compile":
            if device.type == "cpu" and not cpp_compiler_available():
                rows.append((key, "compile: no C++ compiler for inductor"))
            else:
                rows.append(Engineering(key, "torch.compile (inductor)", compile=True))
        elif key == "fastest":
            rows.append(fastest_engineering(device, fastest))
        else:
            raise ValueError(f"unknown row {key!r}")
    return rows


def fastest_engineering(device: torch.device, wanted: dict[str, Any]) -> Engineering:
    """The fastest preset on this machine: ``wanted`` less what it cannot do."""
    from fadm_lightning.inference.model import cpp_compiler_available, cpu_supports_bf16

    options = dict(wanted)
    if options.get("precision") == "bf16" and (
        (device.type == "cpu" and not cpu_supports_bf16())
        or (device.type == "cuda" and not torch.cuda.is_bf16_supported())
    ):
        options["precision"] = "fp32"
    if options.get("compile") and device.type == "cpu" and not cpp_compiler_available():
        options["compile"] = False
    parts = [options.get("precision", "fp32")]
    parts += [name for name in ("channels_last", "compile", "inference_mode") if options.get(name)]
    if options.get("threads"):
        parts.append(f"{options['threads']} thread(s)")
    return Engineering("fastest", "FASTEST PRESET: " + " + ".join(parts), **options)


@contextlib.contextmanager
def engineering_applied(refiner, engineering: Engineering) -> Iterator[None]:
    """Threads for the block; afterwards the denoiser as it was (FrameRefiner changes it in place:
    channels_last, compile)."""
    from fadm_lightning.inference.model import use_contiguous_format

    pipe = refiner.pipe
    unet, threads = pipe.unet, torch.get_num_threads()
    if engineering.threads:
        torch.set_num_threads(engineering.threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        pipe.unet = unet
        use_contiguous_format(unet)


def describe_fastest(options: dict[str, Any]) -> str:
    parts = [options.get("precision", "fp32")]
    parts += [k for k in ("channels_last", "compile", "inference_mode") if options.get(k)]
    if options.get("threads"):
        parts.append(f"threads={options['threads']}")
    return ",".join(parts)


def parse_fastest(text: str | None) -> dict[str, Any]:
    if text is None:
        return dict(FASTEST_ENGINEERING)
    options: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part in ("fp32", "bf16"):
            options["precision"] = part
        elif part in ("channels_last", "compile", "inference_mode"):
            options[part] = True
        elif part.startswith("threads="):
            options["threads"] = int(part.split("=", 1)[1])
        else:
            raise SystemExit(f"fastest: unknown option {part!r}")
    return options
