"""Seconds per training step of a train config, for planning a run (docs/scaling.md).

``python -m fadm_lightning.benchmarks.train_step [--steps 3] [--warmup 1] [--device cpu|cuda]
[--precision fp32|bf16] [--threads N] [OVERRIDE …]``

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

import argparse
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import torch

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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="train config overrides (after the defaults)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
