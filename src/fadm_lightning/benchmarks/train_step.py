"""Seconds per training step of a train config, for planning a run (docs/scaling.md).

``python -m fadm_lightning.benchmarks.train_step [steps=3] [warmup=1] [device=cpu|cuda]
[precision=fp32|bf16] [threads=N] ["overrides=['OVERRIDE',…]"]``

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/train_step.yaml``;
``overrides`` are the train config's (``"overrides=['model/unet=small','data.batch_size=2']"``).

Composes the config of ``python -m fadm_lightning.train`` with the overrides (default: the
paper's model, ``model=fadm`` with the 144 M-parameter UNet, 256×256, batch 5 as the official
config, the FOMM coarse generator and DECA attributes), builds the FADM system and times
``model_step`` (the frozen coarse generator and attribute extractor under ``no_grad``, the AGCN
and the UNet, eq. 11) + ``backward`` + the optimizer step on one fixed batch of random frames.

For timing only: the frozen parts are built with RANDOM weights when their files are absent
(``allow_random_weights_for_tests``: the same networks, the same compute), and the data loader is
left out (``python -m fadm_lightning.benchmarks.data`` measures it). Prints one line per step and
the mean and best seconds per step, wall clock and process CPU time, and the peak memory.
"""

from __future__ import annotations

import resource
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig

from fadm_lightning.config import hydra_main

PAPER = [
    "model=fadm",
    "coarse=fomm",
    "attributes=deca",
    "data.image_size=256",
    "data.batch_size=5",
    "++coarse.allow_random_weights_for_tests=true",
    "++attributes.allow_random_weights_for_tests=true",
    "~logger",
]


def build(overrides: list[str], device: torch.device):
    """The FADM system of the train config with ``overrides`` (the frozen parts' weights from
    their files, or random when absent), on ``device``, and its optimizer."""
    from hydra.utils import instantiate

    from fadm_lightning.config import compose_config

    cfg = compose_config("train", [*PAPER, *overrides])
    for part in ("coarse", "attributes"):
        checkpoint = cfg[part].get("checkpoint")
        if checkpoint is not None and not Path(str(checkpoint)).exists():
            print(f"{part}: {checkpoint} absent: RANDOM weights (the same compute)", flush=True)
            cfg[part].checkpoint = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        warnings.filterwarnings("ignore", message=".*RANDOM weights")
        coarse = instantiate(cfg.coarse)
        attributes = instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes).to(device)
    model.train()
    optimizer = model.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    return model, optimizer, cfg


def time_steps(
    model, optimizer, batch: dict[str, torch.Tensor], steps: int, warmup: int, precision: str
) -> list[dict[str, float]]:
    """Wall and CPU seconds of each step after ``warmup`` untimed ones."""
    device = batch["driving"].device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    rows = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast:
            loss = model.model_step(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        row = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        print(
            f"{'warm-up' if i < warmup else 'step'} {i - warmup if i >= warmup else i}: "
            f"{row['wall_s']:.2f} s wall, {row['cpu_s']:.2f} s CPU, loss {loss.item():.4f}",
            flush=True,
        )
        if i >= warmup:
            rows.append(row)
    return rows


@hydra_main("benchmark/train_step", threads="threads")
def main(cfg: DictConfig) -> dict[str, Any]:
    if cfg.precision not in ("fp32", "bf16"):
        raise SystemExit(f"benchmarks.train_step: precision={cfg.precision}: fp32 or bf16")
    args = SimpleNamespace(
        overrides=[str(o) for o in cfg.overrides],
        steps=int(cfg.steps),
        warmup=int(cfg.warmup),
        device=str(cfg.device),
        precision=str(cfg.precision),
    )
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, optimizer, cfg = build(args.overrides, device)
    size, batch_size = int(cfg.data.image_size), int(cfg.data.batch_size)
    # B×3×H×W in [0, 1]: a source and a driving frame per pair
    batch = {k: torch.rand(batch_size, 3, size, size, device=device) for k in ("source", "driving")}
    counts = model.parameter_counts()
    print(
        f"trainable {counts['params/trainable']:,} "
        f"parameters (UNet {counts['params/unet']:,}), frozen {counts['params/frozen']:,}; "
        f"{size}×{size}, batch {batch_size}, {args.device}, {args.precision}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    rows = time_steps(model, optimizer, batch, args.steps, args.warmup, args.precision)
    wall = [r["wall_s"] for r in rows]
    cpu = [r["cpu_s"] for r in rows]
    result = {
        "wall_s_mean": sum(wall) / len(wall),
        "wall_s_best": min(wall),
        "cpu_s_mean": sum(cpu) / len(cpu),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(
        f"seconds per training step: {result['wall_s_mean']:.2f} wall (best "
        f"{result['wall_s_best']:.2f}), {result['cpu_s_mean']:.2f} CPU; peak RSS "
        f"{result['peak_rss_mib']:.0f} MiB"
        + (f", peak CUDA {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else "")
    )
    return result


if __name__ == "__main__":
    main()
