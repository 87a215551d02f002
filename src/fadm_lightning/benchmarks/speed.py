"""End-to-end speed: the official sampler against this project's fastest preset.

    python -m fadm_lightning.benchmarks.speed [--frames 8] [--batch-sizes 1 8] [--device auto]
        [--threads N] [--official-timing full|extrapolated] [--official-frames N]
        [--rows ROW …] [--fastest OPTIONS] [--onnx | --onnx-only] [--markdown FILE]
        [--json FILE] [--tiny]

Every row times the ``animate`` command path (:func:`~fadm_lightning.inference.animate.animate_video`)
END TO END on the same machine in the same run: decode the driving video, face crop, coarse
generator (FOMM), attributes (dlib landmarks), refinement, mp4 encoding; model building and a
warm-up call of one batch (lazy initialisations, compilation) are excluded. The network is the
paper's 256×256 configuration with RANDOM weights (the time of a forward pass does not depend on
the weights; no output is kept) and the overrides of the distilled student
(``model.target=residual model.coarse_input=true model.scheduler.prediction_type=sample``) in
every row, so the official and the student rows run the same denoiser (about 144 M UNet
parameters).

Rows:

* **official**: 100 DDIM steps, η = 1, strength 1, from pure noise, x̂_0 not clipped
  (:data:`~fadm_lightning.inference.model.OFFICIAL_SAMPLER`): 100 denoiser calls per frame.
  ``--official-timing extrapolated`` (the default on the CPU, where the full sampler takes about
  8 minutes per frame on one core) runs it end to end with 2 and 6 steps (the same η = 1 work per
  step) and reports t = a + b·100 from the fit t = a + b·steps; those rows are labelled
  "extrapolated from 2- and 6-step runs". ``full`` (the default on CUDA) runs the 100 steps.
* **student**: the distilled student's sampler (:data:`STUDENT_SAMPLER`: 1 step, η = 0,
  strength 1, x̂_0 clipped, from the coarse frame without noise): one denoiser call per frame,
  eager fp32 under ``torch.no_grad`` (the baseline of the engineering rows).
* engineering rows, each the student sampler with ONE change: ``threads`` (1 thread against the
  run's threads, CPU only), ``channels_last`` (denoiser and its input in NHWC),
  ``inference_mode`` (``torch.inference_mode`` instead of ``no_grad``), ``bf16`` (autocast;
  on the CPU only with native bf16 instructions, otherwise skipped with the reason),
  ``compile`` (``torch.compile``, inductor);
* **fastest**: the student sampler with :data:`FASTEST_ENGINEERING` (chosen from the
  measurements in docs/inference.md; options the machine lacks fall back with a message).
  The last line of the output is ``speedup_vs_official=<official s/frame ÷ fastest s/frame>``
  at batch 1, wall clock.

``--onnx`` adds a table of the denoiser forward alone (AGCN condition + UNet) in eager PyTorch
and in ONNX Runtime (skipped with the reason when onnxruntime or onnx is not installed; ONNX
Runtime is not a dependency: it was not ≥ 1.5× faster than eager PyTorch on the CPU it was
measured on, docs/inference.md); ``--onnx-only`` runs that table alone.
``--tiny`` is a configuration for the tests (64×64, ``model/unet=small``, a tiny random FOMM,
2 frames, no compilation): it checks the mechanics in seconds, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fadm_lightning.benchmarks import cpu_name
from fadm_lightning.benchmarks.inference import (
    PAPER_OVERRIDES,
    RANDOM_WEIGHTS_NOTE,
    benchmark_inputs,
    peak_memory,
)
from fadm_lightning.sampler import denoiser_calls

#: the distilled student's sampler: one denoiser call per frame, no noise at all
STUDENT_SAMPLER = {
    "steps": 1,
    "eta": 0.0,
    "strength": 1.0,
    "clip_sample": True,
    "start_noise": False,
}
#: the student's network choices, applied to every row so that both samplers run one network
SAME_NETWORK = [
    "model.target=residual",
    "model.coarse_input=true",
    "model.scheduler.prediction_type=sample",
]
#: the tiny configuration of the tests: 64×64, the small UNet, a tiny FOMM with random weights
TINY_OVERRIDES = [
    "model=fadm",
    "model/unet=small",
    "data.image_size=64",
    "coarse=fomm_small",
    "coarse.allow_random_weights_for_tests=true",
    "coarse.block_expansion=8",
    "coarse.max_features=16",
    "coarse.num_bottleneck_blocks=1",
    "coarse.kp_block_expansion=8",
    "coarse.kp_max_features=16",
    "coarse.dense_motion_block_expansion=8",
    "coarse.dense_motion_max_features=16",
    "attributes=landmarks",
    "attributes.upsample=1",  # dlib's HOG detector finds 64-px faces only when upsampled
    "~logger",
]
#: the step counts of the extrapolated official timing
EXTRAPOLATION_STEPS = (2, 6)
OFFICIAL_STEPS = 100
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


# ------------------------------------------------------------------------------------ machine
def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_machine(info: dict[str, Any]) -> str:
    text = f"machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
    text += f"{info['torch_threads']} torch thread(s)"
    if info.get("gpu"):
        text += f", GPU {info['gpu']}"
    if info.get("load_avg_1min") is not None:
        text += f", 1-min load average {info['load_avg_1min']:.2f} at the start"
    return text


# ------------------------------------------------------------------------------------ model
def build_refiner(device: torch.device, tiny: bool = False, extra: list[str] | tuple = ()):
    """The timing model (random weights) as a ``Refiner``: the paper's 256×256 configuration,
    or the tiny one, with :data:`SAME_NETWORK` and ``extra`` overrides."""
    from hydra.utils import instantiate

    from fadm_lightning.config import compose_config
    from fadm_lightning.inference.model import Refiner

    base = TINY_OVERRIDES if tiny else PAPER_OVERRIDES
    cfg = compose_config("train", overrides=[*base, *SAME_NETWORK, *extra])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        coarse = instantiate(cfg.coarse)
    model = instantiate(cfg.model, coarse=coarse, attributes=instantiate(cfg.attributes))
    model.eval().to(device)
    size = int(cfg.data.image_size)
    name = f"{'tiny' if tiny else 'the paper'}'s {size} config + student network, RANDOM weights"
    return Refiner(model.pipeline, size, name, device)


def unet_parameters(refiner) -> int:
    unet = getattr(refiner.pipe.unet, "_orig_mod", refiner.pipe.unet)
    return sum(p.numel() for p in unet.parameters())


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


# ------------------------------------------------------------------------------------ timing
@dataclass
class Clip:
    """The inputs and the command runner of one benchmark."""

    refiner: Any
    source: Path
    video: Path
    folder: Path
    finder: Any
    calls: int = 0

    def animate(self, settings, max_frames: int | None = None, inference_mode: bool = False):
        from fadm_lightning.inference.animate import AnimateOptions, animate_video

        self.calls += 1
        out = self.folder / f"out_{self.calls}.mp4"
        options = AnimateOptions(progress=False, audio=False, max_frames=max_frames)
        grad = torch.inference_mode if inference_mode else torch.no_grad
        with grad():
            report = animate_video(
                self.refiner,
                self.source,
                self.video,
                out,
                settings,
                options,
                self.finder,
                log=_quiet,
            )
        out.unlink(missing_ok=True)
        return report


def _quiet(message: str) -> None:
    if "ignored" in message:  # a fallback (bf16, compile) must not go unnoticed
        print(f"  note: {message}", flush=True)


def timed(run: Callable[[], dict], device: torch.device) -> dict[str, Any]:
    """Wall and process CPU seconds of ``run()`` (its report's frames), load and peak memory."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with peak_memory(device) as memory:
        began, cpu_began = time.perf_counter(), time.process_time()
        report = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return {
        "frames": report["frames"],
        "wall_s": wall,
        "cpu_s": cpu,
        "load": load,
        "peak_mib": memory["mib"],
    }


def sampler_calls(sampler: dict[str, Any]) -> int:
    return denoiser_calls(sampler["steps"], sampler["strength"])


def _row(kind: str, label: str, batch: int, calls: int, t: dict[str, Any], **extra) -> dict:
    frames = t["frames"]
    return {
        "row": kind,
        "engineering": label,
        "batch": batch,
        "denoiser_calls_per_frame": calls,
        "frames": frames,
        "s_per_frame": t["wall_s"] / frames,
        "cpu_s_per_frame": t["cpu_s"] / frames,
        "fps": frames / t["wall_s"],
        # ≈ the torch threads on a free machine; much less: other jobs took the cores
        "cpu_per_wall": t["cpu_s"] / t["wall_s"] if t["wall_s"] > 0 else None,
        "load": t["load"],
        "peak_mib": t["peak_mib"],
        "note": "",
        **extra,
    }


def time_official(
    clip: Clip,
    batch: int,
    frames: int,
    timing: str,
    device: torch.device,
    log: Callable[[str], None],
) -> dict:
    """The official sampler at ``batch``: measured (full) or fitted to 2- and 6-step runs."""
    official = {**_official_sampler()}
    warm = EAGER.settings(STUDENT_SAMPLER, batch)  # same shapes, one call per frame: cheap
    clip.animate(warm, max_frames=batch)
    if timing == "full":
        settings = EAGER.settings(official, batch)
        t = timed(lambda: clip.animate(settings, max_frames=frames), device)
        return _row("official", "eager fp32, 100 steps η=1 (measured)", batch, OFFICIAL_STEPS, t)
    runs = {}
    for steps in EXTRAPOLATION_STEPS:
        settings = EAGER.settings({**official, "steps": steps}, batch)
        runs[steps] = timed(lambda s=settings: clip.animate(s, max_frames=frames), device)
        log(
            f"  official, {steps} steps, batch {batch}: "
            f"{runs[steps]['wall_s'] / runs[steps]['frames']:.3f} s/frame (wall), "
            f"{runs[steps]['cpu_s'] / runs[steps]['frames']:.3f} CPU s/frame"
        )
    (n1, r1), (n2, r2) = sorted(runs.items())
    fitted: dict[str, Any] = {"frames": r1["frames"], "load": r1["load"]}
    fit = {}
    for key in ("wall_s", "cpu_s"):
        slope = (r2[key] - r1[key]) / (n2 - n1)
        intercept = r1[key] - slope * n1
        fitted[key] = intercept + slope * OFFICIAL_STEPS
        fit[key] = {
            "fixed_s_per_frame": intercept / r1["frames"],
            "per_step_s_per_frame": slope / r1["frames"],
        }
    peaks = [r["peak_mib"] for r in (r1, r2) if r["peak_mib"] is not None]
    fitted["peak_mib"] = max(peaks) if peaks else None
    label = f"eager fp32, 100 steps η=1, extrapolated from {n1}- and {n2}-step runs"
    row = _row("official", label, batch, OFFICIAL_STEPS, fitted)
    row["extrapolated"] = {"fit": fit, "runs": {str(k): v for k, v in runs.items()}}
    row["note"] = f"EXTRAPOLATED from {n1}- and {n2}-step runs: t = a + b·steps at 100 steps"
    return row


def _official_sampler() -> dict[str, Any]:
    from fadm_lightning.inference.model import OFFICIAL_SAMPLER

    return dict(OFFICIAL_SAMPLER)


def time_engineering(
    clip: Clip,
    engineering: Engineering,
    batch: int,
    frames: int,
    device: torch.device,
) -> dict:
    settings = engineering.settings(STUDENT_SAMPLER, batch)
    mode = engineering.inference_mode
    clip.animate(settings, max_frames=batch, inference_mode=mode)  # warm-up (and compilation)
    t = timed(lambda: clip.animate(settings, max_frames=frames, inference_mode=mode), device)
    row = _row(engineering.key, engineering.label, batch, sampler_calls(STUDENT_SAMPLER), t)
    if engineering.compile and frames % batch:
        row["note"] = "the last, smaller batch recompiles (frames not a multiple of the batch)"
    return row


# ------------------------------------------------------------------------------------ ONNX
class Denoiser(torch.nn.Module):
    """The denoiser forward of one DDIM step: AGCN condition (encode included) + UNet."""

    def __init__(self, pipe) -> None:
        super().__init__()
        self.agcn, self.unet, self.pipe = pipe.agcn, pipe.unet, pipe

    def forward(self, x, coarse, attr_diff, t):  # noqa: D102
        condition = self.agcn.condition(self.agcn.encode(coarse), attr_diff, t)
        return self.unet(self.pipe.denoiser_input(x, condition, coarse), t).sample


def _clock(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall and process CPU seconds of ``repeats`` calls after a warm-up, and the output."""
    out = fn()
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        began, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - began)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, out


def _forward_cases(pipe, model, session, inputs: tuple, repeats: int) -> dict[str, tuple]:
    from fadm_lightning.inference.model import use_channels_last, use_contiguous_format

    x, coarse, attr, t = inputs
    results = {}
    with torch.no_grad():
        results["eager fp32"] = _clock(lambda: model(x, coarse, attr, t), repeats)
        use_channels_last(pipe.unet)
        try:
            results["eager fp32 + channels_last"] = _clock(
                lambda: model(x, coarse, attr, t), repeats
            )
        finally:
            use_contiguous_format(pipe.unet)
    feed = {"x": x.numpy(), "coarse": coarse.numpy(), "attr_diff": attr.numpy(), "t": t.numpy()}
    results["ONNX Runtime fp32"] = _clock(
        lambda: torch.from_numpy(session.run(None, feed)[0]), repeats
    )
    return results


def onnx_rows(
    refiner, batch_sizes: list[int], folder: Path, log: Callable[[str], None], repeats: int = 3
) -> tuple[list[dict], str | None]:
    """Forward time of :class:`Denoiser` in eager PyTorch (fp32, contiguous and channels_last)
    and in ONNX Runtime (CPU provider, the same threads). ``(rows, reason skipped)``."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError as err:
        return [], (
            f"ONNX Runtime rows skipped: {err.name} is not installed (pip install onnxruntime onnx)"
        )
    pipe, device = refiner.pipe, refiner.device
    if device.type != "cpu":
        return [], "ONNX Runtime rows skipped: measured on the CPU only"
    size, threads = refiner.image_size, torch.get_num_threads()
    model = Denoiser(pipe).eval()
    conv_out = getattr(pipe.unet, "conv_out", None)
    if conv_out is not None and not conv_out.weight.any():
        # the residual target starts its output layer at zero: random weights make the
        # comparison of outputs mean something (the time does not depend on them)
        with torch.no_grad():
            conv_out.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    path = folder / "denoiser.onnx"
    generator = torch.Generator().manual_seed(0)
    t = torch.tensor(99)

    def inputs(batch: int) -> tuple:
        return (
            torch.randn(batch, 3, size, size, generator=generator),
            torch.rand(batch, 3, size, size, generator=generator),
            torch.randn(batch, int(pipe.agcn.attr_dim), generator=generator),
            t,
        )

    began = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs(1),
            str(path),
            input_names=["x", "coarse", "attr_diff", "t"],
            output_names=["output"],
            dynamic_axes={k: {0: "batch"} for k in ("x", "coarse", "attr_diff", "output")},
            opset_version=17,
            dynamo=False,
        )
    log(f"  exported the denoiser to ONNX in {time.perf_counter() - began:.1f} s")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rows = []
    for batch in batch_sizes:
        results = _forward_cases(pipe, model, session, inputs(batch), repeats)
        reference = results["eager fp32"]
        for name, (wall, cpu, out) in results.items():
            row = {
                "runtime": name,
                "batch": batch,
                "threads": threads,
                "s_per_frame": wall / batch,
                "cpu_s_per_frame": cpu / batch,
                "speedup_vs_eager": reference[0] / wall,
                "cpu_speedup_vs_eager": reference[1] / cpu,
                "max_abs_diff_vs_eager": float((out.float() - reference[2]).abs().max()),
                "onnxruntime": ort.__version__,
            }
            log(
                f"  denoiser forward, {name}, batch {batch}: {row['s_per_frame']:.3f} s/frame "
                f"(CPU {row['cpu_s_per_frame']:.3f}), {row['speedup_vs_eager']:.2f}× eager wall, "
                f"{row['cpu_speedup_vs_eager']:.2f}× CPU"
            )
            rows.append(row)
    return rows, None


def onnx_markdown(rows: list[dict]) -> str:
    lines = [
        "| denoiser forward (AGCN condition + UNet) | batch | threads | s / frame (wall) "
        "| CPU s / frame | vs eager fp32 (wall) | vs eager fp32 (CPU) | max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['runtime']} | {r['batch']} | {r['threads']} | {r['s_per_frame']:.3f} | "
            f"{r['cpu_s_per_frame']:.3f} | {r['speedup_vs_eager']:.2f}× | "
            f"{r['cpu_speedup_vs_eager']:.2f}× | {r['max_abs_diff_vs_eager']:.1e} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ report
def markdown(rows: list[dict]) -> str:
    lines = [
        "| row | sampler | engineering | batch | denoiser calls / frame | frames "
        "| s / frame (wall) | CPU s / frame | CPU / wall | frames / s | load avg "
        "| peak memory (MiB) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sampler = "official (100 steps, η=1)" if r["row"] == "official" else "student (1 step)"
        if r.get("skipped"):
            lines.append(
                f"| {r['row']} | {sampler} | — | {r.get('batch', '—')} | — | — | — | — | — | — "
                f"| — | — | skipped: {r['skipped']} |"
            )
            continue
        memory = "—" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        load = "—" if r.get("load") is None else f"{r['load']:.1f}"
        ratio = r.get("cpu_per_wall")
        ratio = "—" if ratio is None else f"{ratio:.2f}"
        lines.append(
            f"| {r['row']} | {sampler} | {r['engineering']} | {r['batch']} | "
            f"{r['denoiser_calls_per_frame']} | {r['frames']} | {r['s_per_frame']:.3f} | "
            f"{r['cpu_s_per_frame']:.3f} | {ratio} | {r['fps']:.3f} | {load} | {memory} | "
            f"{r['note']} |"
        )
    return "\n".join(lines)


def _find(rows: list[dict], kind: str, batch: int) -> dict | None:
    for r in rows:
        if r["row"] == kind and r.get("batch") == batch and not r.get("skipped"):
            return r
    return None


def speedups(rows: list[dict], batch_sizes: list[int]) -> dict[str, float | None]:
    """Official s/frame ÷ fastest (else the student baseline) s/frame, per batch and clock."""
    out: dict[str, float | None] = {}
    for batch in batch_sizes:
        official = _find(rows, "official", batch)
        ours = _find(rows, "fastest", batch) or _find(rows, "student", batch)
        for clock in ("s_per_frame", "cpu_s_per_frame"):
            key = f"batch{batch}_{'wall' if clock == 's_per_frame' else 'cpu'}"
            out[key] = official[clock] / ours[clock] if official and ours else None
    return out


# ------------------------------------------------------------------------------------ main
ROWS = ["student", "threads", "channels_last", "inference_mode", "bf16", "compile", "fastest"]
TINY_ROWS = ["student", "channels_last", "inference_mode", "bf16", "fastest"]


@dataclass
class Options:
    frames: int = 8
    official_frames: int | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    device: str = "auto"
    threads: int | None = None
    official_timing: str | None = None
    rows: list[str] | None = None
    onnx: bool = False
    end_to_end: bool = True  # False: only the ONNX Runtime forward table
    tiny: bool = False
    fastest: dict[str, Any] = field(default_factory=lambda: dict(FASTEST_ENGINEERING))


def run(options: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every row; a dict with ``machine``, ``rows``, ``onnx_rows``, ``speedup``…"""
    from fadm_lightning.faces.detection import FaceFinder
    from fadm_lightning.inference.model import resolve_device

    device = resolve_device(options.device)
    began = time.perf_counter()
    threads_before = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        info = machine(device)
        log(describe_machine(info))
        log(RANDOM_WEIGHTS_NOTE)
        timing = options.official_timing or ("full" if device.type == "cuda" else "extrapolated")
        keys = options.rows or (TINY_ROWS if options.tiny else ROWS)
        fastest = dict(options.fastest)
        if options.tiny and fastest.get("compile"):
            fastest["compile"] = False
            log("--tiny: the fastest preset runs without torch.compile (compilation takes minutes)")
        log("building the timing model …")
        refiner = build_refiner(device, options.tiny)
        params = unet_parameters(refiner)
        log(
            f"model: {refiner.name}; UNet {params / 1e6:.1f} M parameters, "
            f"{refiner.image_size}×{refiner.image_size}"
        )
        rows: list[dict] = []
        onnx: list[dict] = []
        onnx_note = None
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if options.end_to_end:
                source, video = benchmark_inputs(folder, options.frames)
                clip = Clip(refiner, source, video, folder, FaceFinder())
            official_frames = options.official_frames or options.frames
            for batch in options.batch_sizes if options.end_to_end else []:
                log(f"official sampler, batch {batch} ({timing}) …")
                try:
                    row = time_official(clip, batch, official_frames, timing, device, log)
                except Exception as err:  # one failing row does not stop the others
                    row = {"row": "official", "batch": batch, "skipped": f"error: {err!r}"}
                log(markdown([row]).splitlines()[-1])
                rows.append(row)
            wanted = keys if options.end_to_end else []
            for engineering in engineering_rows(wanted, device, torch.get_num_threads(), fastest):
                if isinstance(engineering, tuple):
                    key, reason = engineering
                    log(f"{key}: skipped ({reason})")
                    rows += [
                        {"row": key, "batch": b, "skipped": reason} for b in options.batch_sizes
                    ]
                    continue
                with engineering_applied(refiner, engineering):
                    for batch in options.batch_sizes:
                        log(f"{engineering.key} ({engineering.label}), batch {batch} …")
                        try:
                            row = time_engineering(clip, engineering, batch, options.frames, device)
                        except Exception as err:
                            row = {
                                "row": engineering.key,
                                "batch": batch,
                                "skipped": f"error: {err!r}",
                            }
                        log(markdown([row]).splitlines()[-1])
                        rows.append(row)
            if options.onnx:
                log("denoiser forward alone: eager PyTorch vs ONNX Runtime …")
                onnx, onnx_note = onnx_rows(refiner, options.batch_sizes, folder, log)
                if onnx_note:
                    log(onnx_note)
        ratios = speedups(rows, options.batch_sizes)
        return {
            "machine": info,
            "device": str(device),
            "model": {"name": refiner.name, "unet_parameters": params, "size": refiner.image_size},
            "official_timing": timing,
            "student_sampler": STUDENT_SAMPLER,
            "fastest_engineering": fastest,
            "frames": options.frames,
            "batch_sizes": options.batch_sizes,
            "rows": rows,
            "onnx_rows": onnx,
            "onnx_note": onnx_note,
            "speedups": ratios,
            "speedup_vs_official": ratios.get(f"batch{options.batch_sizes[0]}_wall"),
            "elapsed_s": time.perf_counter() - began,
        }
    finally:
        torch.set_num_threads(threads_before)


def report_markdown(result: dict[str, Any]) -> str:
    info = result["machine"]
    model = result["model"]
    out = [
        "## Speed: official sampler vs the distilled student (animate, end to end)",
        "",
        describe_machine(info) + ".",
        f"Model: {model['name']} (UNet {model['unet_parameters'] / 1e6:.1f} M parameters, "
        f"{model['size']}×{model['size']}).",
        "",
    ]
    if result["rows"]:
        if result["official_timing"] == "extrapolated":
            out[-2] += (
                f" Official rows: EXTRAPOLATED from {EXTRAPOLATION_STEPS[0]}- and "
                f"{EXTRAPOLATION_STEPS[1]}-step end-to-end runs (t = a + b·steps at 100 steps)."
            )
        else:
            out[-2] += " Official rows: the 100 steps measured end to end."
        out[-2] += (
            f" Fastest preset: student sampler + {describe_fastest(result['fastest_engineering'])}."
        )
        out += [markdown(result["rows"]), ""]
    if result["onnx_rows"]:
        out += ["### Denoiser forward alone: eager PyTorch vs ONNX Runtime", ""]
        out += [onnx_markdown(result["onnx_rows"]), ""]
    elif result.get("onnx_note"):
        out += [result["onnx_note"], ""]
    for key, value in result["speedups"].items():
        if value is not None:
            out.append(
                f"speed-up of the fastest preset over the official sampler, {key}: {value:.1f}×"
            )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--frames", type=int, default=None, help="frames per timed call (8; tiny 2)"
    )
    parser.add_argument(
        "--official-frames", type=int, default=None, help="frames of the official rows (--frames)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="(1 8; tiny 1 2)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--official-timing",
        choices=["full", "extrapolated"],
        default=None,
        help="full on CUDA, extrapolated from 2- and 6-step runs on the CPU (default)",
    )
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=None, help="student rows to run")
    parser.add_argument(
        "--fastest",
        default=None,
        help="engineering of the fastest preset: comma-separated fp32|bf16, channels_last, "
        f"compile, inference_mode, threads=N (default: {describe_fastest(FASTEST_ENGINEERING)}; "
        "'fp32' for none)",
    )
    parser.add_argument("--onnx", action="store_true", help="also the ONNX Runtime forward table")
    parser.add_argument(
        "--onnx-only",
        action="store_true",
        help="only the ONNX Runtime forward table (no end-to-end rows; speedup_vs_official=nan)",
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


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
            raise SystemExit(f"--fastest: unknown option {part!r}")
    return options


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    options = Options(
        frames=args.frames or (2 if args.tiny else 8),
        official_frames=args.official_frames,
        batch_sizes=args.batch_sizes or ([1, 2] if args.tiny else [1, 8]),
        device=args.device,
        threads=args.threads,
        official_timing=args.official_timing,
        rows=args.rows,
        onnx=args.onnx or args.onnx_only,
        end_to_end=not args.onnx_only,
        tiny=args.tiny,
        fastest=parse_fastest(args.fastest),
    )
    result = run(options, log=lambda m: print(m, flush=True))
    text = report_markdown(result)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    speedup = result["speedup_vs_official"]
    print(f"speedup_vs_official={float('nan') if speedup is None else speedup:.4g}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
