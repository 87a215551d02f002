"""The work of ``python -m fadm_lightning.rectify`` (its usage is that command's docstring):
refine a talking-head video made by any animator (FOMM, face-vid2vid, LivePortrait, …) with FADM.
"""

from __future__ import annotations

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
from fadm_lightning.media.image import read_image
from fadm_lightning.media.video import VideoWriter, iter_batches, probe_video, read_frame
from fadm_lightning.models.attributes.landmarks import NoFaceError

NAME = "rectify"


@dataclass
class RectifyOptions:
    """Everything but the model and the sampler (``conf/rectify.yaml`` documents each)."""

    source_frame: int = 0
    source: str | os.PathLike | None = None  # the animator's source image instead of a frame
    video_crop: str = "auto"  # auto | none
    source_crop: str = "auto"  # auto | none (for ``source``)
    increase: float = 0.1
    image_increase: float = 0.36
    detector_max_side: int = 640
    paste_back: bool = False
    feather: float = 0.1
    side_by_side: str | os.PathLike | bool | None = None
    audio: bool = True
    crf: int = 18
    max_frames: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("video_crop", "source_crop"):
            if getattr(self, key) not in ("auto", "none"):
                raise InferenceError(f"crop.{key.split('_')[0]} must be auto or none")
        if self.source_frame < 0:
            raise InferenceError(f"source_frame must be ≥ 0, got {self.source_frame}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InferenceError(f"max_frames must be ≥ 1, got {self.max_frames}")


def rectify_video(
    refiner: Refiner,
    video: str | os.PathLike,
    output: str | os.PathLike,
    sampler: SamplerSettings | None = None,
    options: RectifyOptions | None = None,
    finder: FaceFinder | None = None,
    log: Callable[[str], None] = print,
    on_frames: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Refine every frame of ``video`` and write ``output`` (mp4).

    Returns a report: ``output``, ``frames``, ``fps``, ``audio``, ``side_by_side``,
    ``frames_without_face``, ``seconds``.

    ``on_frames(done, total)``, when given, is called after each batch of frames is written
    (``total``: the expected frame count, None when the header does not say; the web app's
    progress bar).
    """
    began = time.perf_counter()
    sampler = sampler or SamplerSettings()
    options = options or RectifyOptions()
    video, output = Path(video), Path(output)
    cli.check_output(output, video)
    pipe, size, device = refiner.pipe, refiner.image_size, refiner.device

    # 1. the crop (one pass over the faces) and the source frame
    info = probe_video(video)
    if options.video_crop == "auto":
        finder = finder or FaceFinder(max_side=options.detector_max_side)
        total = min(filter(None, (info.num_frames, options.max_frames)), default=None)
        scan = scan_video(video, finder, False, options.max_frames, options.progress, total)
        crop = video_crop(scan.boxes, scan.frame_size, options.increase, str(video))
        frames_total = scan.num_frames
    else:
        first = read_frame(video, 0)
        crop = center_crop((first.shape[1], first.shape[0]))
        frames_total = min(filter(None, (info.num_frames, options.max_frames)), default=None)
    if options.source is not None:  # the animator's source portrait
        image = read_image(options.source)
        if options.source_crop == "auto":
            finder = finder or FaceFinder(max_side=options.detector_max_side)
            source_crop = image_crop(image, finder, options.image_increase, str(options.source))[0]
        else:
            source_crop = center_crop((image.shape[1], image.shape[0]))
        source_face, source_name = source_crop.cut(image, size), str(options.source)
    else:
        if options.max_frames is not None and options.source_frame >= options.max_frames:
            raise InferenceError(
                f"source_frame={options.source_frame} is not among the first max_frames="
                f"{options.max_frames} frames"
            )
        source_face = crop.cut(read_frame(video, options.source_frame), size)
        source_name = f"{video}: frame {options.source_frame}"
    try:
        source_t = to_tensor([source_face], device)  # 1×3×S×S
        attr_source = pipe.attributes(source_t)  # 1×D
    except NoFaceError as err:
        raise NoFaceFoundError(
            f"{source_name}: no face in the source of the attribute difference ({err}); "
            "choose another source_frame or source image"
        ) from err
    attributes = AttributeStream(pipe.attributes, attr_source)
    refine = FrameRefiner(pipe, sampler, log, refiner.sampler)

    # 2. refine batch by batch, streaming into the outputs
    side_path = cli.side_by_side_path(options.side_by_side, output)
    audio_from = video if options.audio else None
    writer = VideoWriter(output, info.fps, audio_from, options.crf)
    side = VideoWriter(side_path, info.fps, audio_from, options.crf) if side_path else None
    bar = tqdm(total=frames_total, desc=NAME, unit="frame", disable=not options.progress)
    try:
        with torch.no_grad():
            for frames in iter_batches(video, sampler.batch_size, options.max_frames):
                faces = [crop.cut(frame, size) for frame in frames]
                coarse = to_tensor(faces, device)  # g = the video's frames, B×3×S×S
                # a model with guide_inputs also sees the source animated to each frame by its
                # own coarse generator (None for the others)
                guide = pipe.guide(source_t, driving=coarse) if pipe.guide_inputs else None
                refined = to_uint8(refine(coarse, attr_source - attributes(coarse), guide))
                for frame, face, result in zip(frames, faces, refined, strict=True):
                    if options.paste_back:
                        writer.write(crop.paste(frame, result, options.feather))
                    else:
                        writer.write(result)
                    if side:
                        side.write(np.concatenate([face, result], axis=1))
                bar.update(len(frames))
                if on_frames is not None:
                    on_frames(writer.num_frames, frames_total)
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
        "side_by_side": str(side_path) if side_path else None,
        "frames_without_face": attributes.missing,
        "seconds": round(time.perf_counter() - began, 2),
    }


def options_from_config(cfg: DictConfig) -> RectifyOptions:
    return RectifyOptions(
        source_frame=int(cfg.source_frame),
        source=cfg.get("source"),
        video_crop=str(cfg.crop.video),
        source_crop=str(cfg.crop.source),
        increase=float(cfg.crop.increase),
        image_increase=float(cfg.crop.image_increase),
        detector_max_side=int(cfg.crop.detector_max_side),
        paste_back=bool(cfg.paste_back),
        feather=float(cfg.feather),
        side_by_side=cfg.side_by_side,
        audio=bool(cfg.audio),
        crf=int(cfg.crf),
        max_frames=cfg.max_frames,
        progress=bool(cfg.progress),
    )


def run(cfg: DictConfig) -> int:
    """The command (also callable with a composed config); returns the exit status."""
    log = cli.log_to_stderr(NAME)
    options = options_from_config(cfg)
    sampler = cli.sampler_from_config(cfg)
    if cfg.batch is None:
        if cfg.get("video") is None:
            raise InferenceError(
                "set video=…, e.g. python -m fadm_lightning.rectify video=animated.mp4 ckpt=… "
                "(or batch=FOLDER_OR_CSV output_dir=…)"
            )
        video = Path(cfg.video)
        if not video.exists():  # before loading a model
            raise FileNotFoundError(f"{video}: no such file")
        output = Path(cfg.output) if cfg.output else Path(f"{video.stem}_rectified.mp4")
        refiner = cli.refiner_from_config(cfg, need_coarse=False)
        report = rectify_video(refiner, video, output, sampler, options, log=log)
        line = (
            f"wrote {report['output']}: {report['frames']} frames at {report['fps']:g} fps, "
            f"audio: {report['audio']}, {report['seconds']} s ({report['sampler']})"
        )
        if report["frames_without_face"]:
            line += f", {report['frames_without_face']} frame(s) without a detectable face"
        if report["side_by_side"]:
            line += f"; side by side: {report['side_by_side']}"
        print(line)
        return 0

    if cfg.output_dir is None:
        raise InferenceError("batch mode writes into output_dir=…; set it")
    jobs = batch_mode.rectify_jobs(cfg.batch, cfg.output_dir)
    refiner = cli.refiner_from_config(cfg, need_coarse=False)
    finder = FaceFinder(max_side=options.detector_max_side)
    job_options = RectifyOptions(**{**options.__dict__, "progress": False})
    job_options.side_by_side = True if options.side_by_side else None

    def one(job: batch_mode.Job) -> dict[str, Any]:
        return rectify_video(
            refiner, job.inputs["video"], job.output, sampler, job_options, finder, log
        )

    summary = batch_mode.run_jobs(
        jobs, one, cfg.output_dir, cli.batch_settings(cfg), options.progress, log
    )
    print(
        f"batch: {summary['done']} done, {summary['already_done']} already done, "
        f"{summary['failed']} failed of {summary['jobs']} → {cfg.output_dir}"
    )
    return 1 if summary["failed"] else 0
