"""End-to-end speed: the official sampler against this project's fastest preset.

    python -m fadm_lightning.benchmarks.speed [frames=8] [batch_sizes=[1,8]] [device=auto]
        [threads=N] [official_timing=full|extrapolated] [official_frames=N]
        [rows=[ROW,…]] [fastest=[OPTION,…]] [onnx=true | onnx_only=true] [markdown=FILE]
        [json=FILE] [tiny=true]

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/speed.yaml``.

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
  (:data:`~fadm_lightning.sampler.OFFICIAL_SAMPLER`): 100 denoiser calls per frame.
  ``official_timing=extrapolated`` (the default on the CPU, where the full sampler takes about
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

After the rows, **where a frame's time goes**: the fastest preset at the first batch size, with
paste-back, timed per stage (setup, decode, crop, coarse, attributes, denoiser, paste-back, encode;
:mod:`~fadm_lightning.inference.stages`).

``onnx=true`` adds a table of the denoiser forward alone (AGCN condition + UNet) in eager PyTorch
and in ONNX Runtime (skipped with the reason when onnxruntime or onnx is not installed; ONNX
Runtime is not a dependency: it was not ≥ 1.5× faster than eager PyTorch on the CPU it was
measured on, docs/inference.md); ``onnx_only=true`` runs that table alone.
``tiny=true`` is a configuration for the tests (64×64, ``model/unet=small``, a tiny random FOMM,
2 frames, no compilation): it checks the mechanics in seconds, its figures mean nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fadm_lightning.benchmarks import cpu_name
from fadm_lightning.benchmarks.engineering import (
    EAGER,
    FASTEST_ENGINEERING,
    Engineering,
    engineering_applied,
    engineering_rows,
    fastest_engineering,
    parse_fastest,
)
from fadm_lightning.benchmarks.inference import (
    PAPER_OVERRIDES,
    RANDOM_WEIGHTS_NOTE,
    benchmark_inputs,
    peak_memory,
)
from fadm_lightning.benchmarks.onnx_forward import onnx_rows
from fadm_lightning.benchmarks.speed_report import (
    EXTRAPOLATION_STEPS,
    breakdown_markdown,
    describe_machine,
    markdown,
    report_markdown,
    speedups,
)
from fadm_lightning.config import hydra_main
from fadm_lightning.sampler import OFFICIAL_SAMPLER, PRESETS, denoiser_calls

#: the distilled student's sampler (the ``one_call`` preset): one denoiser call per frame, no
#: noise at all
STUDENT_SAMPLER = PRESETS["one_call"].as_dict()
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
OFFICIAL_STEPS = 100


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

    def animate(
        self,
        settings,
        max_frames: int | None = None,
        inference_mode: bool = False,
        paste_back: bool = False,
        clock=None,
    ):
        from fadm_lightning.inference.animate import AnimateOptions, animate_video

        self.calls += 1
        out = self.folder / f"out_{self.calls}.mp4"
        options = AnimateOptions(
            progress=False, audio=False, max_frames=max_frames, paste_back=paste_back
        )
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
                clock=clock,
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
    official = dict(OFFICIAL_SAMPLER)
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


def stage_breakdown(
    clip: Clip, engineering: Engineering, batch: int, frames: int, device: torch.device
) -> dict[str, Any]:
    """Where a frame's seconds go (``inference.stages``), for ``engineering`` at ``batch`` with
    paste-back into the full portrait (so that every stage of the command runs)."""
    from fadm_lightning.inference.stages import StageClock

    settings = engineering.settings(STUDENT_SAMPLER, batch)
    mode = engineering.inference_mode
    clip.animate(settings, max_frames=batch, inference_mode=mode, paste_back=True)  # warm-up
    clock = StageClock(device=device)
    began = time.perf_counter()
    report = clip.animate(
        settings, max_frames=frames, inference_mode=mode, paste_back=True, clock=clock
    )
    total = (time.perf_counter() - began) / report["frames"]
    stages = report["stage_s_per_frame"]
    stages["other"] = max(total - sum(stages.values()), 0.0)  # model-free glue, temp files
    return {
        "engineering": engineering.label,
        "batch": batch,
        "frames": report["frames"],
        "paste_back": True,
        "s_per_frame": total,
        "stages": stages,
    }


# ------------------------------------------------------------------------------------ report


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
            log("tiny: the fastest preset runs without torch.compile (compilation takes minutes)")
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
        breakdown: dict[str, Any] | None = None
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
            if options.end_to_end:
                engineering = fastest_engineering(device, fastest)
                batch = options.batch_sizes[0]
                log(f"end-to-end breakdown per stage ({engineering.label}, batch {batch}) …")
                try:
                    with engineering_applied(refiner, engineering):
                        breakdown = stage_breakdown(
                            clip, engineering, batch, options.frames, device
                        )
                    log(breakdown_markdown(breakdown))
                except Exception as err:  # reported, never stops the table
                    breakdown = {"skipped": f"error: {err!r}"}
                    log(f"breakdown skipped: {err!r}")
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
            "breakdown": breakdown,
            "speedups": ratios,
            "speedup_vs_official": ratios.get(f"batch{options.batch_sizes[0]}_wall"),
            "elapsed_s": time.perf_counter() - began,
        }
    finally:
        torch.set_num_threads(threads_before)


def options_from_config(cfg: DictConfig) -> Options:
    """The :class:`Options` of ``conf/benchmark/speed.yaml`` (its ``null`` defaults filled in)."""
    tiny = bool(cfg.tiny)
    if cfg.official_timing not in (None, "full", "extrapolated"):
        raise SystemExit(f"official_timing={cfg.official_timing}: full or extrapolated")
    rows = None if cfg.rows is None else [str(r) for r in _as_list(cfg.rows)]
    unknown = sorted(set(rows or ()) - set(ROWS))
    if unknown:
        raise SystemExit(f"rows: unknown {unknown}; choose from {ROWS}")
    fastest = cfg.fastest
    if fastest is not None:  # [bf16,channels_last,threads:2] (or one string)
        fastest = ",".join(str(x).replace("threads:", "threads=") for x in _as_list(fastest))
    return Options(
        frames=cfg.frames or (2 if tiny else 8),
        official_frames=cfg.official_frames,
        batch_sizes=[int(b) for b in _as_list(cfg.batch_sizes)] or ([1, 2] if tiny else [1, 8]),
        device=str(cfg.device),
        threads=cfg.threads,
        official_timing=cfg.official_timing,
        rows=rows,
        onnx=bool(cfg.onnx or cfg.onnx_only),
        end_to_end=not cfg.onnx_only,
        tiny=tiny,
        fastest=parse_fastest(fastest),
    )


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str | int | float) else list(value)


@hydra_main("benchmark/speed", threads=None)  # run() sets (and restores) the thread count
def main(cfg: DictConfig) -> dict[str, Any]:
    result = run(options_from_config(cfg), log=lambda m: print(m, flush=True))
    text = report_markdown(result)
    print(text)
    if cfg.markdown:
        path = Path(str(cfg.markdown))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    if cfg.json:
        path = Path(str(cfg.json))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    speedup = result["speedup_vs_official"]
    print(f"speedup_vs_official={float('nan') if speedup is None else speedup:.4g}", flush=True)
    return result


if __name__ == "__main__":
    main()
