"""Speed and fidelity of the inference commands for several sampler settings.

    python -m fadm_lightning.benchmarks.inference [steps=[5,10,25,50,100]] [frames=4]
        [batch_size=4] [device=auto] [threads=N] [precisions=[fp32,bf16]] [compile=true]
        [ckpt=CKPT samplers=[25:0:1,10:0:1,25:0:0.5,…]] [speed=false] [markdown=FILE]

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/inference.yaml``.

**Speed** — frames per second (wall clock), CPU seconds per frame of this process (a fairer
figure on a shared machine; on a GPU it is the host's share), the 1-minute load average at the
start, and peak memory of ``animate`` and ``rectify`` end to end
(decoding, face crop, coarse generator, attributes, DDIM refinement, encoding; the model loading
and a warm-up call excluded) at 256×256 for each step count. The model is built from the paper's
256×256 configuration (``model=fadm``: the UNet of the official capacity, 144 M parameters; a
FOMM vox-256 coarse generator; the dlib landmark attributes) with RANDOM weights: the time of a
forward pass does not depend on the weights, the output does (it is discarded). Peak memory is
the process's peak resident set during the call on the CPU (``/proc/self/clear_refs``), the
peak of ``torch.cuda.max_memory_allocated`` on a GPU. Frames are the real clip of
``../shared/fixtures/voxceleb_sample`` when present, else rendered synthetic faces.

**Fidelity** (``ckpt=CKPT``, a trained checkpoint) — how far each faster setting
(``steps:eta:strength``) lands from the full official sampler (100 steps, η = 1) of the same
model on the same frames with the same seed: L1 (on [0, 1]) and PSNR (uint8, dB) against that
100-step output. Frames: rectify-style on ``video=`` for a checkpoint with a real attribute
extractor, or the first test clip of the checkpoint's own data (source = its first frame) for
one trained on the synthetic data.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import DictConfig

from fadm_lightning.config import hydra_main
from fadm_lightning.sampler import SamplerConfig

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO.parent / "shared" / "fixtures" / "voxceleb_sample"
RANDOM_WEIGHTS_NOTE = (
    "TIMING MODEL: the paper's 256×256 configuration with RANDOM weights. The time of a forward "
    "pass does not depend on the weights; its output does, so no output of this model is kept."
)
PAPER_OVERRIDES = [
    "model=fadm",
    "data.image_size=256",
    "coarse=fomm",
    "coarse.allow_random_weights_for_tests=true",
    "attributes=landmarks",
    "~logger",
]


# ------------------------------------------------------------------------------------ memory
def _rss_peak_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """``{"mib": …}`` after the block: the peak during it (None where it cannot be measured)."""
    result: dict = {"mib": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    try:  # Linux: reset the peak resident set size to the current one
        Path("/proc/self/clear_refs").write_text("5")
        resettable = True
    except OSError:
        resettable = False
    yield result
    peak = _rss_peak_kib()
    if resettable and peak is not None:
        result["mib"] = peak / 1024


# ------------------------------------------------------------------------------------ inputs
def benchmark_inputs(folder: Path, frames: int) -> tuple[Path, Path]:
    """A portrait and a clip of ``frames`` 256×256 frames (the real clip when present)."""
    from fadm_lightning.media.video import VideoWriter, iter_frames

    folder.mkdir(parents=True, exist_ok=True)
    source, video = folder / "source.png", folder / "driving.mp4"
    if FIXTURES.is_dir():
        images = list(iter_frames(FIXTURES / "driving.mp4", max_frames=frames))
        from PIL import Image

        Image.open(FIXTURES / "source.png").convert("RGB").save(source)
    else:
        from PIL import Image

        from fadm_lightning import synthetic

        rng = np.random.default_rng(0)
        identities = [synthetic.sample_identity(rng) for _ in range(2)]
        pose, expression = synthetic.sample_motion(rng, frames + 1)
        pose[:, :3] *= 0.3
        images = list(synthetic.render_clip(identities[0], pose[1:], expression[1:], 256)[0])
        portrait = synthetic.render_clip(identities[1], pose[:1], expression[:1], 256)[0][0]
        Image.fromarray(portrait).save(source)
    with VideoWriter(video, 25, crf=12) as writer:
        for image in images:
            writer.write(image)
    return source, video


def timing_model(device: torch.device):
    """The paper's 256×256 FADM with random weights, as a ``Refiner``."""
    from hydra.utils import instantiate

    from fadm_lightning.config import compose_config
    from fadm_lightning.inference.model import Refiner

    cfg = compose_config("train", overrides=PAPER_OVERRIDES)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        coarse = instantiate(cfg.coarse)
    model = instantiate(cfg.model, coarse=coarse, attributes=instantiate(cfg.attributes))
    model.eval().to(device)
    return Refiner(model.pipeline, 256, "the paper's 256 config, RANDOM weights", device)


# ------------------------------------------------------------------------------------ speed
def speed(
    steps: list[int],
    frames: int = 4,
    batch_size: int = 4,
    device: str = "auto",
    precisions: tuple[str, ...] = ("fp32",),
    compile_model: bool = False,
    commands: tuple[str, ...] = ("animate", "rectify"),
    workdir: Path | None = None,
    log=print,
) -> list[dict]:
    """One row per (command, precision, steps): frames/s and peak memory."""
    import tempfile

    from fadm_lightning.faces.detection import FaceFinder
    from fadm_lightning.inference.animate import AnimateOptions, animate_video
    from fadm_lightning.inference.model import SamplerSettings, resolve_device
    from fadm_lightning.inference.rectify import RectifyOptions, rectify_video

    device = resolve_device(device)
    refiner = timing_model(device)
    finder = FaceFinder()
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        source, video = benchmark_inputs(tmp, frames)
        animate_options = AnimateOptions(progress=False, audio=False)
        rectify_options = RectifyOptions(progress=False, audio=False)
        runners = {
            "animate": lambda s, out, o=animate_options: animate_video(
                refiner, source, video, out, s, o, finder, log=lambda m: None
            ),
            "rectify": lambda s, out, o=rectify_options: rectify_video(
                refiner, video, out, s, o, finder, log=lambda m: None
            ),
        }
        for name in commands:
            command = runners[name]
            for precision in precisions:
                if precision != "fp32" and device.type != "cuda":
                    log(f"{name}: precision {precision} skipped on {device.type} (CUDA only)")
                    continue
                # the official sampler (η = 1 from pure noise) at each step count
                official = SamplerSettings(
                    steps=1,
                    eta=1.0,
                    strength=1.0,
                    clip_sample=False,
                    batch_size=batch_size,
                    precision=precision,
                    compile=compile_model,
                )
                command(official, tmp / "warmup.mp4")  # dlib models, lazy inits, compilation
                for count in steps:
                    settings = replace(official, steps=count)
                    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                    with peak_memory(device) as memory:
                        began, cpu_began = time.perf_counter(), time.process_time()
                        report = command(settings, tmp / f"{name}_{count}.mp4")
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        seconds = time.perf_counter() - began
                        cpu_seconds = time.process_time() - cpu_began
                    row = {
                        "command": name,
                        "device": _device_name(device),
                        "precision": precision
                        + (" + compile" if compile_model and device.type == "cuda" else ""),
                        "steps": count,
                        "frames": report["frames"],
                        "fps": report["frames"] / seconds,
                        "s_per_frame": seconds / report["frames"],
                        "cpu_s_per_frame": cpu_seconds / report["frames"],
                        "load": load,
                        "peak_mib": memory["mib"],
                    }
                    log(speed_markdown([row], header=False))
                    rows.append(row)
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"


def speed_markdown(rows: list[dict], header: bool = True) -> str:
    lines = (
        [
            "| command | device | precision | DDIM steps | frames | frames / s | s / frame (wall) "
            "| CPU s / frame | load avg | peak memory (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        if header
        else []
    )
    for r in rows:
        memory = "—" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        load = "—" if r.get("load") is None else f"{r['load']:.1f}"
        lines.append(
            f"| {r['command']} | {r['device']} | {r['precision']} | {r['steps']} | {r['frames']} | "
            f"{r['fps']:.3f} | {r['s_per_frame']:.2f} | {r['cpu_s_per_frame']:.2f} | {load} | "
            f"{memory} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ fidelity
def _frames_for_fidelity(ckpt: str, video: Path | None, frames: int, device: torch.device):
    """(pipe, coarse B×3×S×S, attr_diff B×D, description, validation sampler) for a checkpoint."""
    from fadm_lightning.checkpoints import validation_sampler
    from fadm_lightning.inference.model import InferenceError, load_refiner, to_tensor

    try:
        refiner = load_refiner(ckpt, need_coarse=False, device=device)
    except InferenceError:  # trained on the synthetic data: its own test clip, with annotations
        from hydra.utils import instantiate

        from fadm_lightning.checkpoints import load_pipeline
        from fadm_lightning.data.batch import clip_frames

        pipe, cfg = load_pipeline(ckpt, device=device)
        datamodule = instantiate(cfg.data, num_workers=0, persistent_workers=False)
        datamodule.prepare_data()
        datamodule.setup("test")
        batch = next(iter(datamodule.test_dataloader()))
        clip, annotation = clip_frames(batch, slice(0, frames + 1))
        clip = clip.to(device)
        annotation = {k: v.to(device) for k, v in annotation.items()}
        first = {k: v[:1] for k, v in annotation.items()}
        rest = {k: v[1:] for k, v in annotation.items()}
        coarse, attr_diff = pipe.prepare(clip[:1], clip[1:], first, rest)
        size = cfg.data.image_size
        description = f"frames 1–{frames} of its first test clip ({size}×{size}, synthetic)"
        return pipe, coarse, attr_diff, description, validation_sampler(cfg.model)
    from fadm_lightning.faces.detection import FaceFinder
    from fadm_lightning.faces.scan import scan_video, video_crop
    from fadm_lightning.media.video import iter_frames

    video = video or FIXTURES / "driving.mp4"
    scan = scan_video(video, FaceFinder(), max_frames=frames)
    crop = video_crop(scan.boxes, scan.frame_size, 0.1, str(video))
    faces = [crop.cut(f, refiner.image_size) for f in iter_frames(video, frames)]
    coarse = to_tensor(faces, device)
    pipe = refiner.pipe
    attr = pipe.attributes(coarse)
    description = f"{frames} frames of {video} (rectify: source = frame 0)"
    return pipe, coarse, attr[:1] - attr, description, refiner.sampler


def fidelity(
    ckpt: str,
    settings: list[SamplerConfig],
    frames: int = 8,
    video: Path | None = None,
    seed: int = 0,
    device: str = "auto",
    clip_sample: bool | None = None,
) -> tuple[list[dict], str]:
    """Rows of L1 / PSNR of each setting (and of the coarse input and the model's validation
    sampler) against the 100-step η = 1 output of the same model on the same frames and seed.

    Each setting's steps, η and strength are compared (its ``clip_sample`` and ``start_noise``
    are not: ``clip_sample``, None for the model's validation setting, applies to every run,
    the reference included, and every run starts from noise). Returns ``(rows, description)``.
    """
    from fadm_lightning.inference.model import resolve_device
    from fadm_lightning.metrics.suite import MetricSuite

    device = resolve_device(device)
    pipe, coarse, attr_diff, description, validated = _frames_for_fidelity(
        ckpt, video, frames, device
    )
    clip = validated.clip_sample if clip_sample is None else clip_sample
    description += f"; x̂_0 {'clipped' if clip else 'not clipped'} in every run"

    def run(steps: int, eta: float, strength: float) -> tuple[torch.Tensor, float]:
        # speed from CPU time (process_time; robust to other load) or, on a GPU, wall time
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        began = clock()
        sampler = SamplerConfig(steps, eta, strength, clip_sample=clip, start_noise=True, seed=seed)
        out = pipe.sample(coarse, attr_diff, sampler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, (clock() - began) / coarse.shape[0]

    reference, reference_seconds = run(100, 1.0, 1.0)
    own = (validated.steps, validated.eta, validated.strength)
    given = [(s.steps, s.eta, s.strength) for s in settings]
    candidates = [("coarse input", None)]
    candidates += [(f"{s}:{e:g}:{st:g}", (s, e, st)) for s, e, st in given if (s, e, st) != own]
    candidates += [(f"{own[0]}:{own[1]:g}:{own[2]:g} (its validation sampler)", own)]
    rows = []
    suite = MetricSuite(["l1", "psnr"])  # the metrics registry's (conf/metrics)
    for name, setting in candidates:
        output, seconds = (coarse, None) if setting is None else run(*setting)
        output, target = output.float().cpu(), reference.float().cpu()
        rows.append(
            {
                "setting": name,
                "l1": suite["l1"].frames(output, target).mean().item(),
                "psnr": suite["psnr"].frames(output, target).mean().item(),
                "speedup": None if seconds is None else reference_seconds / seconds,
            }
        )
    return rows, description


def fidelity_markdown(rows: list[dict]) -> str:
    lines = [
        "| setting (steps:η:strength) | L1 vs 100-step η=1 ↓ | PSNR vs 100-step η=1 (dB) ↑ "
        "| speed-up (sampling) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        speedup = "—" if r["speedup"] is None else f"{r['speedup']:.1f}×"
        lines.append(f"| {r['setting']} | {r['l1']:.4f} | {r['psnr']:.2f} | {speedup} |")
    return "\n".join(lines)


@hydra_main("benchmark/inference", threads="threads")
def main(cfg: DictConfig) -> str:
    for key, allowed in (("precisions", ("fp32", "bf16")), ("commands", ("animate", "rectify"))):
        unknown = sorted(set(map(str, cfg[key])) - set(allowed))
        if unknown:
            raise SystemExit(
                f"benchmarks.inference: {key}: unknown {unknown}; choose from {allowed}"
            )
    samplers = [SamplerConfig.parse(str(text)) for text in cfg.samplers]
    args = SimpleNamespace(
        steps=[int(s) for s in cfg.steps],
        frames=int(cfg.frames),
        batch_size=int(cfg.batch_size),
        device=str(cfg.device),
        precisions=[str(p) for p in cfg.precisions],
        compile=bool(cfg.compile),
        commands=tuple(str(c) for c in cfg.commands),
        no_speed=not cfg.speed,
        ckpt=cfg.ckpt and str(cfg.ckpt),
        fidelity=samplers,
        fidelity_frames=int(cfg.fidelity_frames),
        clip_sample=cfg.clip_sample,  # None: as the checkpoint validates
        video=cfg.video and Path(str(cfg.video)),
        markdown=cfg.markdown and Path(str(cfg.markdown)),
    )
    out = []
    if not args.no_speed:
        print(RANDOM_WEIGHTS_NOTE)
        rows = speed(
            args.steps,
            args.frames,
            args.batch_size,
            args.device,
            tuple(args.precisions),
            args.compile,
            commands=args.commands,
        )
        out += ["## Speed (256×256, random weights: timing only)", "", speed_markdown(rows), ""]
    if args.ckpt:
        rows, description = fidelity(
            args.ckpt,
            args.fidelity,
            args.fidelity_frames,
            args.video,
            device=args.device,
            clip_sample=args.clip_sample,
        )
        out += [f"## Fidelity of {args.ckpt}: {description}", "", fidelity_markdown(rows), ""]
    else:
        out += [
            "Fidelity: give a trained checkpoint with ckpt=CKPT (random weights make it meaningless)."
        ]
    text = "\n".join(out)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
