"""The denoiser forward alone (AGCN condition + UNet) in eager PyTorch and in ONNX Runtime: the
``onnx=true`` table of ``python -m fadm_lightning.benchmarks.speed``. ONNX Runtime and onnx are not
dependencies: without them the rows are skipped with the reason."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


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
