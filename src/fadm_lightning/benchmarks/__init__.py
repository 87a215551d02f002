"""Benchmarks: ``python -m fadm_lightning.benchmarks.<name> [key=value …]`` (see each module's
docstring), Hydra commands like every other (``config.hydra_main``) with their options in
``conf/benchmark/<name>.yaml``."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s "model name"; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
