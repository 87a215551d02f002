"""Inference speed on one GPU: ``rectify`` end to end, the official sampler against the student.

    python -m fadm_lightning.benchmarks.gpu [out=logs/bench_gpu] [budget_s=285]
        [max_batch=128] [frames=16] [official_frames=4] [device=cuda|cpu] [tiny=true]

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/gpu.yaml``.

Times :func:`~fadm_lightning.inference.rectify.rectify_video` (decode, face crop, attributes, refinement,
encode; model building and a warm-up batch excluded) at 256×256 with the paper-size network
(random weights, the student's network overrides, as ``benchmarks.speed``) for

* the official sampler (100 DDIM steps, η = 1, from pure noise) and the student sampler (1 step,
  η = 0, from the coarse frame without noise, x̂_0 clipped),
* in fp32, bf16 (autocast) and bf16 + ``torch.compile`` (``mode="reduce-overhead"``, CUDA
  graphs; if that fails, the default mode, with a note),
* at batch 1 and at the largest batch that fits: doubling 8, 16, 32, … up to ``max_batch``
  (128) until CUDA runs out of memory (probed with the denoiser forward in each precision).

The official rows use few frames (``official_frames``, 4 at batch 1; one batch at the largest
batch) and every row is skipped when a time guard (from its warm-up batch) says it would not fit
in the per-row limit or in what is left of ``budget_s`` (the whole run stays under 5 minutes); compiled rows start
only while ``compile_s`` (60 s) of the budget is left for the compilation.
A failing row is recorded with its error in ``results.json`` and the run goes on.

Writes ``table.md`` and ``results.json`` into ``out`` and prints the table, the GPU's name and
the total elapsed time. Without CUDA it exits with status 2 unless ``device=cpu`` is given
(``device=cpu tiny=true``: a 64×64 configuration with the small UNet, for the tests).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fadm_lightning.benchmarks.inference import RANDOM_WEIGHTS_NOTE, benchmark_inputs, peak_memory
from fadm_lightning.benchmarks.speed import (
    STUDENT_SAMPLER,
    build_refiner,
    cpu_name,
    sampler_calls,
    unet_parameters,
)
from fadm_lightning.config import hydra_main
from fadm_lightning.sampler import OFFICIAL_SAMPLER

PRECISIONS = ("fp32", "bf16", "bf16+compile")


def batch_candidates(cap: int) -> list[int]:
    """8, 16, 32, … up to ``cap`` (``[cap]`` when it is below 8)."""
    if cap < 8:
        return [cap]
    out, n = [], 8
    while n <= cap:
        out.append(n)
        n *= 2
    return out


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def probe_largest_batch(
    refiner, precision: str, cap: int, log: Callable[[str], None]
) -> tuple[int, list[dict]]:
    """The largest batch of :func:`batch_candidates` whose denoiser forward fits in memory."""
    from fadm_lightning.benchmarks.onnx_forward import Denoiser

    pipe, device, size = refiner.pipe, refiner.device, refiner.image_size
    model = Denoiser(pipe).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "fp32")
    best, tried = 0, []
    for batch in batch_candidates(cap):
        try:
            x = torch.randn(batch, 3, size, size, device=device)
            coarse = torch.rand(batch, 3, size, size, device=device)
            attr = torch.zeros(batch, int(pipe.agcn.attr_dim), device=device)
            t = torch.tensor(99, device=device)
            with torch.no_grad(), autocast:
                model(x, coarse, attr, t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = batch
            tried.append({"batch": batch, "fits": True})
        except Exception as err:
            if not _is_oom(err):
                raise
            tried.append({"batch": batch, "fits": False})
            log(f"  batch {batch}: out of memory")
            break
        finally:
            x = coarse = attr = None  # noqa: F841
            _free(device)
    log(f"  {precision}: largest batch that fits = {best} (tried {[r['batch'] for r in tried]})")
    return best, tried


class Rows:
    """Rows of the table with a global deadline and a per-row time guard."""

    def __init__(self, budget_s: float, row_limit_s: float, log: Callable[[str], None]) -> None:
        self.began = time.perf_counter()
        self.deadline = self.began + budget_s
        self.row_limit_s = row_limit_s
        self.rows: list[dict] = []
        self.log = log

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allowance(self) -> float:
        return min(self.row_limit_s, self.left())


def run_rectify(refiner, video: Path, folder: Path, settings, max_frames: int) -> dict[str, Any]:
    from fadm_lightning.inference.rectify import RectifyOptions, rectify_video

    out = folder / f"out_{time.monotonic_ns()}.mp4"
    options = RectifyOptions(progress=False, audio=False, max_frames=max_frames)
    report = rectify_video(refiner, video, out, settings, options, log=_note)
    out.unlink(missing_ok=True)
    return report


_NOTES: list[str] = []


def _note(message: str) -> None:
    if "ignored" in message:
        _NOTES.append(message)
        print(f"  note: {message}", flush=True)


def time_row(
    refiner,
    video: Path,
    folder: Path,
    sampler_name: str,
    precision: str,
    batch: int,
    frames: int,
    rows: Rows,
    compile_mode: str | None,
    fresh_shape: bool = False,
) -> dict[str, Any]:
    """One row: a warm-up batch with the student sampler (the same shapes; twice for a shape
    not compiled yet), a time guard from it and the denoiser's forward time, the timed run."""
    from fadm_lightning.inference.model import SamplerSettings

    device = refiner.device
    sampler = STUDENT_SAMPLER if sampler_name == "student" else dict(OFFICIAL_SAMPLER)
    calls = sampler_calls(sampler)
    amp = "bf16" if precision.startswith("bf16") else "fp32"
    row: dict[str, Any] = {
        "sampler": sampler_name,
        "precision": precision,
        "compile_mode": compile_mode,
        "batch": batch,
        "denoiser_calls_per_frame": calls,
        "frames": None,
        "seconds": None,
        "fps": None,
        "ms_per_frame": None,
        "peak_mib": None,
        "error": None,
        "note": "",
    }
    if rows.left() <= 0:
        row["error"] = "skipped: time budget used up"
        return row
    warm = SamplerSettings(**STUDENT_SAMPLER, batch_size=batch, precision=amp)
    for _ in range(2 if fresh_shape else 1):  # a fresh compiled shape: once more, compiled
        began = time.perf_counter()
        run_rectify(refiner, video, folder, warm, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        warm_s = time.perf_counter() - began  # one batch: its fixed cost + one denoiser call
    call_s = forward_seconds(refiner, batch, amp)
    per_batch = warm_s + (calls - 1) * call_s
    batches = math.ceil(frames / batch)
    allowance = rows.allowance()
    if batches * per_batch > allowance and batches > 1:  # fewer frames: whole batches that fit
        batches = max(int(allowance / per_batch), 1)
        frames = batches * batch
        row["note"] = f"frames cut to {frames} by the time guard"
    row["estimate_s"] = batches * per_batch
    if row["estimate_s"] > allowance:
        row["error"] = (
            f"skipped by the time guard: about {row['estimate_s']:.0f} s estimated (a batch "
            f"{warm_s:.2f} s + {calls - 1} × {call_s:.3f} s), {allowance:.0f} s allowed"
        )
        return row
    settings = SamplerSettings(**sampler, batch_size=batch, precision=amp)
    with peak_memory(device) as memory:
        began = time.perf_counter()
        report = run_rectify(refiner, video, folder, settings, frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - began
    n = report["frames"]
    row.update(
        frames=n,
        seconds=seconds,
        fps=n / seconds,
        ms_per_frame=1000 * seconds / n,
        peak_mib=memory["mib"],
    )
    return row


def forward_seconds(refiner, batch: int, precision: str) -> float:
    """Seconds of one denoiser forward (AGCN condition + UNet) at ``batch`` (the second of two)."""
    from fadm_lightning.benchmarks.onnx_forward import Denoiser

    pipe, device, size = refiner.pipe, refiner.device, refiner.image_size
    model = Denoiser(pipe).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    coarse = torch.rand(batch, 3, size, size, device=device)
    attr = torch.zeros(batch, int(pipe.agcn.attr_dim), device=device)
    t = torch.tensor(99, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "fp32")
    seconds = 0.0
    for _ in range(2):
        began = time.perf_counter()
        with torch.no_grad(), autocast:
            model(x, coarse, attr, t)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - began
    return seconds


def markdown(rows: list[dict]) -> str:
    lines = [
        "| sampler | precision | batch | denoiser calls / frame | frames | frames / s "
        "| ms / frame | peak memory (MiB) | note / error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        precision = r["precision"]
        if r.get("compile_mode"):
            precision += f" ({r['compile_mode']})"
        note = "; ".join(filter(None, (r.get("note"), r.get("error"))))
        if r.get("fps") is None:
            lines.append(
                f"| {r['sampler']} | {precision} | {r['batch']} | {r['denoiser_calls_per_frame']} "
                f"| — | — | — | — | {note} |"
            )
            continue
        memory = "—" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(
            f"| {r['sampler']} | {precision} | {r['batch']} | {r['denoiser_calls_per_frame']} | "
            f"{r['frames']} | {r['fps']:.2f} | {r['ms_per_frame']:.1f} | {memory} | {note} |"
        )
    return "\n".join(lines)


def compile_unet(refiner, mode: str | None) -> None:
    pipe = refiner.pipe
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    kwargs = {"mode": mode} if mode else {}
    pipe.unet = torch.compile(unet, dynamic=False, **kwargs)


def uncompile_unet(refiner) -> None:
    pipe = refiner.pipe
    pipe.unet = getattr(pipe.unet, "_orig_mod", pipe.unet)


def frames_for(batch: int, wanted: int, available: int) -> int:
    """Whole batches (a partial last batch would recompile), at least one."""
    frames = min(max(wanted, batch), available)
    return max(frames // batch, 1) * batch


def benchmark(args: SimpleNamespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    from fadm_lightning.media.video import probe_video

    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    rows = Rows(args.budget_s, args.row_limit_s, log)
    result: dict[str, Any] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "budget_s": args.budget_s,
        "rows": rows.rows,
        "probes": {},
        "errors": [],
    }
    log(f"device: {result['gpu'] or 'CPU ' + result['cpu']}; torch {torch.__version__}")
    log(RANDOM_WEIGHTS_NOTE)
    refiner = build_refiner(device, args.tiny)
    result["model"] = {"name": refiner.name, "unet_parameters": unet_parameters(refiner)}
    log(f"model: {refiner.name}, UNet {result['model']['unet_parameters'] / 1e6:.1f} M parameters")
    precisions = args.precisions
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log("this GPU does not support bf16: fp32 only")
        precisions = [p for p in precisions if p == "fp32"]

    largest: dict[str, int] = {}
    for precision in dict.fromkeys("bf16" if p.startswith("bf16") else p for p in precisions):
        try:
            largest[precision], tried = probe_largest_batch(refiner, precision, args.max_batch, log)
            result["probes"][precision] = tried
        except Exception as err:
            result["errors"].append(f"probe {precision}: {err!r}")
            log(f"  probe {precision} failed: {err!r}")
            _free(device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        most = max([1, *largest.values()])
        _, video = benchmark_inputs(folder, max(most, args.frames, args.official_frames))
        available = probe_video(video).num_frames or args.frames
        log(f"clip: {available} frames of 256×256 (cropped to {refiner.image_size})")
        plan = []  # (precision, batch): batch 1 first, the compiled rows last
        for precision in precisions:
            batches = [1]
            big = largest.get("bf16" if precision.startswith("bf16") else precision, 0)
            if big > 1:
                batches.append(big)
            plan += [(precision, b) for b in batches]
        plan.sort(key=lambda pb: (pb[0] == "bf16+compile", pb[1] != 1))
        compiled_mode: str | None = None
        compiled_shapes: set[int] = set()
        for precision, batch in plan:
            wants_compile = precision.endswith("+compile")
            if wants_compile and batch not in compiled_shapes and rows.left() < args.compile_s:
                reason = (
                    f"skipped: {rows.left():.0f} s of the budget left, less than the "
                    f"{args.compile_s:.0f} s kept for a compilation (compile_s)"
                )
                log(f"{precision} batch {batch}: {reason}")
                for sampler_name in ("student", "official"):
                    row = _error_row(sampler_name, precision, batch, None)
                    row["error"] = reason
                    rows.rows.append(row)
                continue
            if wants_compile and compiled_mode is None:
                compiled_mode = args.compile_mode
                compile_unet(refiner, compiled_mode)
            for sampler_name in ("student", "official"):
                wanted = args.frames if sampler_name == "student" else args.official_frames
                if batch > 1:
                    wanted = batch  # one batch at the largest batch
                frames = frames_for(batch, wanted, available)
                label = f"{sampler_name} {precision} batch {batch}"
                log(f"{label} ({frames} frames) … [{rows.left():.0f} s of the budget left]")
                mode = compiled_mode if wants_compile else None
                fresh = wants_compile and batch not in compiled_shapes
                compiled_shapes.update([batch] if wants_compile else [])

                def timed(
                    mode,
                    fresh,
                    batch=batch,
                    frames=frames,
                    precision=precision,
                    sampler_name=sampler_name,
                ):
                    return time_row(
                        refiner,
                        video,
                        folder,
                        sampler_name,
                        precision,
                        batch,
                        frames,
                        rows,
                        mode,
                        fresh,
                    )

                try:
                    row = timed(mode, fresh)
                except Exception as err:
                    if wants_compile and mode == "reduce-overhead":  # retry in the default mode
                        log(f"  reduce-overhead failed ({err!r}); default mode instead")
                        compiled_mode = "default"
                        compile_unet(refiner, None)
                        compiled_shapes = {batch}
                        try:
                            row = timed("default", True)
                            row["note"] = (row["note"] + "; " if row["note"] else "") + (
                                f"reduce-overhead failed: {type(err).__name__}"
                            )
                        except Exception as again:
                            row = _error_row(sampler_name, precision, batch, again)
                    else:
                        row = _error_row(sampler_name, precision, batch, err)
                    _free(device)
                rows.rows.append(row)
                log(markdown([row]).splitlines()[-1])
        uncompile_unet(refiner)
    result["notes"] = sorted(set(_NOTES))
    result["elapsed_s"] = time.perf_counter() - rows.began
    return result


def _error_row(
    sampler: str, precision: str, batch: int, err: BaseException | None
) -> dict[str, Any]:
    tail = "" if err is None else traceback.format_exception_only(type(err), err)[-1].strip()
    return {
        "sampler": sampler,
        "precision": precision,
        "compile_mode": None,
        "batch": batch,
        "denoiser_calls_per_frame": sampler_calls(
            STUDENT_SAMPLER if sampler == "student" else dict(OFFICIAL_SAMPLER)
        ),
        "frames": None,
        "seconds": None,
        "fps": None,
        "ms_per_frame": None,
        "peak_mib": None,
        "error": None
        if err is None
        else ("out of memory: " if _is_oom(err) else "error: ") + tail[:500],
        "note": "",
    }


def report_markdown(result: dict[str, Any]) -> str:
    where = result["gpu"] or f"CPU {result['cpu']}"
    lines = [
        f"## rectify end to end on {where}",
        "",
        f"torch {result['torch']}, CUDA {result['cuda']}; model: {result['model']['name']} "
        f"(UNet {result['model']['unet_parameters'] / 1e6:.1f} M parameters). "
        "official = 100 DDIM steps η=1 from pure noise; student = 1 step η=0 from the coarse "
        "frame (no noise), x̂_0 clipped. Peak memory: "
        + ("torch.cuda.max_memory_allocated." if result["gpu"] else "resident set."),
        "",
        markdown(result["rows"]),
        "",
        f"total elapsed: {result['elapsed_s']:.0f} s",
    ]
    return "\n".join(lines)


def options_from_config(cfg: DictConfig) -> SimpleNamespace:
    """The options of ``conf/benchmark/gpu.yaml`` with their ``null`` defaults filled in."""
    args = SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True))
    args.out = Path(str(args.out))
    args.device = str(args.device)
    tiny = bool(args.tiny)
    defaults = {
        "budget_s": 120.0 if tiny else 285.0,
        "row_limit_s": 30.0 if tiny else 45.0,
        "max_batch": 2 if tiny else 128,
        "frames": 2 if tiny else 16,
        "official_frames": 1 if tiny else 4,
        "precisions": ["fp32", "bf16"] if tiny else list(PRECISIONS),
        "compile_s": 0.0 if tiny else 60.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if isinstance(args.precisions, str):
        args.precisions = [args.precisions]
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        raise SystemExit(f"benchmarks.gpu: precisions: unknown {unknown}; choose from {PRECISIONS}")
    return args


@hydra_main("benchmark/gpu", threads=None)  # benchmark() sets the threads of a CPU run
def main(cfg: DictConfig) -> int:
    args = options_from_config(cfg)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "error: no CUDA device here. benchmarks.gpu times a GPU; run it on a machine with "
            "one, or give device=cpu (with tiny=true for a quick check of the mechanics).",
            file=sys.stderr,
        )
        return 2
    if args.device not in ("cpu",) and not args.device.startswith("cuda"):
        print(f"error: device={args.device}: use cuda or cpu", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        result = benchmark(args, log=lambda m: print(m, flush=True))
    except Exception as err:  # the model or the inputs could not be built: still write why
        result = {
            "device": args.device,
            "rows": [],
            "errors": [f"{type(err).__name__}: {err}"],
            "traceback": traceback.format_exc(),
            "elapsed_s": time.perf_counter() - began,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"error: {err!r} (see {args.out / 'results.json'})", file=sys.stderr)
        return 1
    text = report_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(text)
    print(
        f"wrote {args.out / 'table.md'} and {args.out / 'results.json'} "
        f"({time.perf_counter() - began:.0f} s in all)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    main()
