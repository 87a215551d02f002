"""The work of ``python -m fadm_lightning.animate`` (its usage is that command's docstring):
animate a portrait with a driving video, then refine every frame with FADM.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from fadm_lightning.faces.crop import center_crop
from fadm_lightning.faces.detection import FaceFinder
from fadm_lightning.faces.scan import NoFaceFoundError, image_crop, scan_video, video_crop
from fadm_lightning.inference import batch as batch_mode
from fadm_lightning.inference import cli
from fadm_lightning.inference.model import (
    AttributeStream,
    FrameRefiner,
    InferenceError,
    Refiner,
    SamplerSettings,
    to_tensor,
    to_uint8,
)
from fadm_lightning.inference.stages import StageClock
from fadm_lightning.media.image import read_image
from fadm_lightning.media.video import VideoWriter, iter_batches, probe_video, read_frame
from fadm_lightning.models.attributes.landmarks import NoFaceError
from fadm_lightning.models.coarse.base import coarse_capabilities

NAME = "animate"


@dataclass
class AnimateOptions:
    """Everything but the model and the sampler (``conf/animate.yaml`` documents each)."""

    mode: str = "relative"  # relative | absolute
    adapt_scale: bool = True  # relative: scale the motion by the face-size ratio
    best_frame: int | str | None = "auto"  # relative: "auto", a frame index, or None (= 0)
    attributes_from: str | None = None  # None: as trained; "driving" | "coarse"
    source_crop: str = "auto"  # auto | none
    driving_crop: str = "auto"  # auto | none
    increase: float = 0.1
    image_increase: float = 0.36
    detector_max_side: int = 640
    paste_back: bool = False
    feather: float = 0.1
    side_by_side: str | os.PathLike | None = None
    audio: bool = True
    crf: int = 18
    max_frames: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("relative", "absolute"):
            raise InferenceError(f"mode must be relative or absolute, got {self.mode!r}")
        for key in ("source_crop", "driving_crop"):
            if getattr(self, key) not in ("auto", "none"):
                raise InferenceError(f"crop.{key.split('_')[0]} must be auto or none")
        if self.best_frame not in (None, "auto") and not (
            isinstance(self.best_frame, int) and self.best_frame >= 0
        ):
            raise InferenceError(
                f"best_frame must be auto, null or a frame index, got {self.best_frame!r}"
            )
        if self.attributes_from not in (None, "driving", "coarse"):
            raise InferenceError(
                f"attributes_from must be null, driving or coarse, got {self.attributes_from!r}"
            )
        if self.max_frames is not None and self.max_frames < 1:
            raise InferenceError(f"max_frames must be ≥ 1, got {self.max_frames}")


@contextlib.contextmanager
def motion_mode(
    coarse: torch.nn.Module, mode: str, adapt_scale: bool, initial: torch.Tensor | None
):
    """Switch a coarse generator to ``mode`` (relative: with the reference frame ``initial``,
    1×3×S×S) for the duration of the block, then restore it."""
    has_modes = coarse_capabilities(coarse).relative_motion  # mode, adapt_movement_scale, …
    if mode == "relative" and not has_modes:
        raise InferenceError(
            f"the coarse generator {type(coarse).__name__} has no relative mode; use mode=absolute"
        )
    if not has_modes:
        yield
        return
    saved = coarse.mode, coarse.adapt_movement_scale
    coarse.mode = mode
    coarse.adapt_movement_scale = adapt_scale
    coarse.set_driving_initial(initial if mode == "relative" else None)
    try:
        yield
    finally:
        coarse.mode, coarse.adapt_movement_scale = saved
        coarse.set_driving_initial(None)


def best_matching_frame(
    source_points: np.ndarray | None, frame_points: list[np.ndarray | None]
) -> int | None:
    """The frame whose 68-landmark layout best matches the portrait's (FOMM demo's
    ``find_best_frame``); None when the portrait or every frame lacks landmarks."""
    from fadm_lightning.models.coarse.fomm import find_best_frame

    valid = [i for i, points in enumerate(frame_points) if points is not None]
    if source_points is None or not valid:
        return None
    layouts = torch.from_numpy(np.stack([frame_points[i] for i in valid]))
    try:
        return valid[find_best_frame(torch.from_numpy(source_points), layouts)]
    except ValueError:  # a degenerate source layout
        return None


def animate_video(
    refiner: Refiner,
    source: str | os.PathLike,
    driving: str | os.PathLike,
    output: str | os.PathLike,
    sampler: SamplerSettings | None = None,
    options: AnimateOptions | None = None,
    finder: FaceFinder | None = None,
    log: Callable[[str], None] = print,
    on_frames: Callable[[int, int | None], None] | None = None,
    clock: StageClock | None = None,
) -> dict[str, Any]:
    """Animate ``source`` (an image) with ``driving`` (a video), refine, write ``output`` (mp4).

    Returns a report: ``output``, ``frames``, ``fps``, ``audio``, ``best_frame``,
    ``side_by_side``, ``frames_without_face``, ``seconds``; with a ``clock``, the seconds per
    frame of each stage (``stage_s_per_frame``, :mod:`~fadm_lightning.inference.stages`).

    ``on_frames(done, total)``, when given, is called after each batch of frames is written
    (``total``: the expected frame count, None when the header does not say; the web app's
    progress bar).
    """
    began = time.perf_counter()
    clock = clock or StageClock(enabled=False)
    sampler = sampler or SamplerSettings()
    options = options or AnimateOptions()
    source, driving, output = Path(source), Path(driving), Path(output)
    cli.check_output(output, source, driving)
    pipe, size, device = refiner.pipe, refiner.image_size, refiner.device
    if pipe.coarse is None:
        raise InferenceError(f"{refiner.name}: the pipeline has no coarse generator")
    relative = options.mode == "relative"
    want_best = relative and options.best_frame == "auto"
    if finder is None and (
        options.source_crop == "auto" or options.driving_crop == "auto" or want_best
    ):
        finder = FaceFinder(max_side=options.detector_max_side)

    # 1. inputs, read once up front so that a bad file fails before any work
    info = probe_video(driving)
    source_image = read_image(source)  # any mode → RGB; ImageReadError names the file
    source_box = None
    if options.source_crop == "auto":
        source_crop, source_box = image_crop(
            source_image, finder, options.image_increase, str(source)
        )
    else:
        source_crop = center_crop((source_image.shape[1], source_image.shape[0]))
    source_face = source_crop.cut(source_image, size)  # S×S×3

    scan = None
    if options.driving_crop == "auto" or want_best:
        total = min(filter(None, (info.num_frames, options.max_frames)), default=None)
        scan = scan_video(driving, finder, want_best, options.max_frames, options.progress, total)
    if options.driving_crop == "auto":
        crop = video_crop(scan.boxes, scan.frame_size, options.increase, str(driving))
    else:
        first = read_frame(driving, 0)
        crop = center_crop((first.shape[1], first.shape[0]))
    best = options.best_frame if isinstance(options.best_frame, int) else 0
    if want_best:
        if source_box is None:
            found = finder.detect(source_image, thorough=True)
            source_box = found[0] if len(found) else None
        source_points = (
            finder.landmarks(source_image, source_box) if source_box is not None else None
        )
        choice = best_matching_frame(source_points, scan.landmarks)
        if choice is None:
            log("best_frame=auto: no landmarks to compare; using frame 0 as the reference")
        best = choice or 0
    if scan is not None and best >= scan.num_frames:
        raise InferenceError(
            f"best_frame={best} is past the end of {driving} ({scan.num_frames} frames)"
        )

    # 2. the portrait's attributes and the reference frame
    attributes_from = options.attributes_from or pipe.attributes_from
    source_t = to_tensor([source_face], device)  # 1×3×S×S
    try:
        attr_source = pipe.attributes(source_t)  # 1×D
    except NoFaceError as err:
        raise NoFaceFoundError(f"{source}: no face in the cropped portrait ({err})") from err
    attributes = AttributeStream(pipe.attributes, attr_source)
    initial = to_tensor([crop.cut(read_frame(driving, best), size)], device) if relative else None
    refine = FrameRefiner(pipe, sampler, log, refiner.sampler)

    # 3. animate and refine batch by batch, streaming into the outputs
    side_path = cli.side_by_side_path(options.side_by_side, output)
    audio_from = driving if options.audio else None
    writer = VideoWriter(output, info.fps, audio_from, options.crf)
    side = VideoWriter(side_path, info.fps, audio_from, options.crf) if side_path else None
    frames_total = scan.num_frames if scan is not None else info.num_frames
    if options.max_frames and frames_total:
        frames_total = min(frames_total, options.max_frames)
    bar = tqdm(total=frames_total, desc=NAME, unit="frame", disable=not options.progress)
    clock.since("setup", began)  # inputs, face scan, the portrait's attributes, reference
    stage = clock.stage
    try:
        with motion_mode(pipe.coarse, options.mode, options.adapt_scale, initial), torch.no_grad():
            batches = iter_batches(driving, sampler.batch_size, options.max_frames)
            for frames in clock.iterate("decode", batches):
                with stage("crop"):
                    faces = [crop.cut(frame, size) for frame in frames]
                    driving_t = to_tensor(faces, device)  # B×3×S×S
                with stage("coarse"):
                    source_b = source_t.expand(len(faces), -1, -1, -1)
                    coarse_output = pipe.coarse(source_b, driving_t)
                    coarse = coarse_output["prediction"].clamp(0, 1)  # g
                    guide = pipe.guide(source_t, coarse_output, driving_t)  # None: none asked
                with stage("attributes"):
                    attr_d = attributes(driving_t if attributes_from == "driving" else coarse)
                with stage("denoiser"):
                    refined = to_uint8(refine(coarse, attr_source - attr_d, guide))
                    coarse_u8 = to_uint8(coarse) if side else None
                for i, face in enumerate(refined):
                    if options.paste_back:
                        with stage("paste_back"):
                            face_out = source_crop.paste(source_image, face, options.feather)
                    else:
                        face_out = face
                    with stage("encode"):
                        writer.write(face_out)
                        if side:
                            side.write(
                                np.concatenate([source_face, faces[i], coarse_u8[i], face], axis=1)
                            )
                bar.update(len(faces))
                if on_frames is not None:
                    on_frames(writer.num_frames, frames_total)
        with stage("encode"):
            writer.close()
            if side:
                side.close()
    except BaseException:
        writer.abort()
        if side:
            side.abort()
        raise
    finally:
        bar.close()
    return {
        "output": str(output),
        "frames": writer.num_frames,
        "fps": float(info.fps),
        "audio": writer.audio_note or "none",
        "sampler": refine.settings.describe(),
        "best_frame": best if relative else None,
        "side_by_side": str(side_path) if side_path else None,
        "frames_without_face": attributes.missing,
        "seconds": round(time.perf_counter() - began, 2),
        **({"stage_s_per_frame": clock.per_frame(writer.num_frames)} if clock.enabled else {}),
    }


def options_from_config(cfg: DictConfig) -> AnimateOptions:
    crop = cfg.crop
    return AnimateOptions(
        mode=str(cfg.mode),
        adapt_scale=bool(cfg.adapt_scale),
        best_frame=cfg.best_frame,
        attributes_from=cfg.get("attributes_from"),
        source_crop=str(crop.source),
        driving_crop=str(crop.driving),
        increase=float(crop.increase),
        image_increase=float(crop.image_increase),
        detector_max_side=int(crop.detector_max_side),
        paste_back=bool(cfg.paste_back),
        feather=float(cfg.feather),
        side_by_side=cfg.side_by_side,
        audio=bool(cfg.audio),
        crf=int(cfg.crf),
        max_frames=cfg.max_frames,
        progress=bool(cfg.progress),
    )


def _describe(report: dict[str, Any]) -> str:
    line = (
        f"wrote {report['output']}: {report['frames']} frames at {report['fps']:g} fps, "
        f"audio: {report['audio']}, {report['seconds']} s ({report['sampler']})"
    )
    if report.get("best_frame") is not None:
        line += f", reference frame {report['best_frame']}"
    if report.get("frames_without_face"):
        line += f", {report['frames_without_face']} frame(s) without a detectable face"
    if report.get("side_by_side"):
        line += f"; side by side: {report['side_by_side']}"
    return line


def run(cfg: DictConfig) -> int:
    """The command (also callable with a composed config); returns the exit status."""
    log = cli.log_to_stderr(NAME)
    options = options_from_config(cfg)
    sampler = cli.sampler_from_config(cfg)
    if cfg.batch is None:
        missing = [k for k in ("source", "driving") if cfg.get(k) is None]
        if missing:
            raise InferenceError(
                f"set {' and '.join(missing)}, e.g. python -m fadm_lightning.animate "
                "source=portrait.png driving=video.mp4 ckpt=… (or batch=pairs.csv output_dir=…)"
            )
        source, driving = Path(cfg.source), Path(cfg.driving)
        output = Path(cfg.output) if cfg.output else Path(f"{source.stem}__{driving.stem}.mp4")
        for path in (source, driving):  # before loading a model
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file")
        refiner = cli.refiner_from_config(cfg, need_coarse=True)
        print(_describe(animate_video(refiner, source, driving, output, sampler, options, log=log)))
        return 0

    if cfg.output_dir is None:
        raise InferenceError("batch mode writes into output_dir=…; set it")
    jobs = batch_mode.animate_jobs(cfg.batch, cfg.output_dir)
    refiner = cli.refiner_from_config(cfg, need_coarse=True)
    finder = FaceFinder(max_side=options.detector_max_side)
    job_options = AnimateOptions(**{**options.__dict__, "progress": False})
    job_options.side_by_side = True if options.side_by_side else None  # one per job, beside it

    def one(job: batch_mode.Job) -> dict[str, Any]:
        return animate_video(
            refiner,
            job.inputs["source"],
            job.inputs["driving"],
            job.output,
            sampler,
            job_options,
            finder,
            log,
        )

    summary = batch_mode.run_jobs(
        jobs, one, cfg.output_dir, cli.batch_settings(cfg), options.progress, log
    )
    print(
        f"batch: {summary['done']} done, {summary['already_done']} already done, "
        f"{summary['failed']} failed of {summary['jobs']} → {cfg.output_dir}"
    )
    return 1 if summary["failed"] else 0
