"""The tables of ``python -m fadm_lightning.benchmarks.speed``: the machine line, the rows (official
and student samplers, each engineering), where a frame's time goes, the ONNX table and the
speed-ups of the fastest preset over the official sampler."""

from __future__ import annotations

from typing import Any

from fadm_lightning.benchmarks.engineering import describe_fastest
from fadm_lightning.benchmarks.onnx_forward import onnx_markdown

#: the step counts of the extrapolated official timing
EXTRAPOLATION_STEPS = (2, 6)


def describe_machine(info: dict[str, Any]) -> str:
    text = f"machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
    text += f"{info['torch_threads']} torch thread(s)"
    if info.get("gpu"):
        text += f", GPU {info['gpu']}"
    if info.get("load_avg_1min") is not None:
        text += f", 1-min load average {info['load_avg_1min']:.2f} at the start"
    return text


def breakdown_markdown(breakdown: dict[str, Any]) -> str:
    total = breakdown["s_per_frame"]
    lines = [
        f"End to end per frame: {breakdown['engineering']}, batch {breakdown['batch']}, "
        f"{breakdown['frames']} frames, paste-back on: {total:.3f} s / frame",
        "",
        "| stage | s / frame | share |",
        "|---|---|---|",
    ]
    for stage, seconds in breakdown["stages"].items():
        lines.append(f"| {stage} | {seconds:.4f} | {100 * seconds / total:.1f} % |")
    return "\n".join(lines)


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
    breakdown = result.get("breakdown")
    if breakdown and not breakdown.get("skipped"):
        out += ["### Where a frame's time goes", "", breakdown_markdown(breakdown), ""]
    elif breakdown:
        out += [f"Breakdown per stage skipped: {breakdown['skipped']}", ""]
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
