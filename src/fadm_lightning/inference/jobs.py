"""The jobs of the web app (``python -m fadm_lightning.app``), without the page: its settings and
limits, its temporary folder, the queue in front of the model and the time estimate of a job.

* **One job at a time on the model**; at most ``max_queue`` jobs wait behind it. A job that would
  be further back is answered at once with ``busy, position N …`` and an estimate of the wait, so
  the number of jobs in the app, and the time each waits, are bounded.
* **Estimate before work.** The cost of one denoiser call per frame is measured on this device
  (the UNet at the sampler's batch size, once, when the first job is estimated); the rest of a
  frame's cost (decode, crop, coarse animator, attributes, encode) is learned from the jobs that
  finished. A job is ``frames × (calls per frame × call cost + rest)``; one over ``max_seconds``
  is refused before it starts, with its estimate and the faster preset to choose, and a running
  job is stopped at twice ``max_seconds``.
* **Files** stay in one temporary folder (:class:`Workspace`); output names are made of the
  inputs' names with every character but (Unicode) letters, digits, ``.``, ``-``, ``_`` replaced, so no
  name leaves its job folder.
"""

from __future__ import annotations

import contextvars
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fadm_lightning.inference import cli
from fadm_lightning.inference.animate import AnimateOptions, animate_video
from fadm_lightning.inference.model import InferenceError, Refiner, SamplerSettings
from fadm_lightning.inference.rectify import RectifyOptions, rectify_video
from fadm_lightning.inference.workspace import Workspace, safe_stem
from fadm_lightning.media.image import read_image
from fadm_lightning.media.video import probe_video
from fadm_lightning.sampler import OFFICIAL, SamplerConfig

#: the sampler presets of the page, set over the config's ``sampler.*`` (None: that alone, i.e.
#: the model's own); "balanced" leaves ``clip_sample`` to the config / the model
PRESETS: dict[str, SamplerConfig | None] = {
    "fast": None,
    "balanced": SamplerConfig(steps=25, eta=0.0, strength=1.0, start_noise=True),
    "quality": OFFICIAL,
}
PRESET_ORIGINS = {
    "fast": "the model's own sampler",
    "balanced": "25 DDIM steps, η=0",
    "quality": "the official sampler, 100 steps, η=1",
}


@dataclass
class AppSettings:
    """The page's defaults and limits (``conf/app.yaml``)."""

    preset: str = "fast"
    preview_frames: int = 64  # 0 = every frame
    max_seconds: float = 300.0  # a job estimated longer is refused; one running 2× longer stops
    max_video_seconds: float = 60.0  # longer videos are refused
    max_frames_upload: int = 1800
    max_queue: int = 4  # jobs waiting behind the running one; more are answered "busy"
    keep_results_minutes: float = 60.0
    examples: Path | None = None  # a folder with source.png and driving.mp4

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InferenceError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.preview_frames < 0:
            raise InferenceError(f"preview_frames must be ≥ 0, got {self.preview_frames}")
        if self.max_seconds <= 0:
            raise InferenceError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.max_queue < 0:
            raise InferenceError(f"max_queue must be ≥ 0, got {self.max_queue}")


class JobError(Exception):
    """An expected problem of one job, its message fit for the page."""


def _display(message: str, names: dict[str, str]) -> str:
    """The message with the temporary paths of uploads replaced by the names people gave them."""
    for path, name in sorted(names.items(), key=lambda item: -len(item[0])):
        message = message.replace(path, name)
    return message


# ------------------------------------------------------------------------------ time estimates
def _frames(count: int) -> str:
    return f"{count} frame{'s' if count != 1 else ''}"


@dataclass
class CostModel:
    """Seconds per frame of a job: ``calls × call_s + frame_s``.

    ``call_s``: one denoiser call for one frame, measured on this device; ``frame_s``: the rest of
    a frame (decode, crop, coarse animator, attributes, encode), learned from finished jobs (0
    until the first one)."""

    call_s: float
    frame_s: float = 0.0
    jobs_seen: int = 0

    def seconds(self, frames: int, calls: int) -> float:
        return frames * (calls * self.call_s + self.frame_s)

    def observe(self, frames: int, calls: int, seconds: float) -> None:
        """Learn the per-frame rest from a finished job (a running mean)."""
        if frames <= 0:
            return
        rest = max(seconds / frames - calls * self.call_s, 0.0)
        self.jobs_seen += 1
        self.frame_s += (rest - self.frame_s) / self.jobs_seen


@torch.no_grad()
def measure_call_seconds(refiner: Refiner, batch_size: int, repeats: int = 1) -> float:
    """Seconds of one denoiser call per frame: the refiner's UNet at ``batch_size`` frames of its
    image size, timed after one warm-up call."""
    unet = refiner.pipe.unet
    config = unet.config
    size = refiner.image_size
    parameter = next(unet.parameters())
    x = torch.randn(
        batch_size, config.in_channels, size, size, device=parameter.device, dtype=parameter.dtype
    )
    t = torch.full((batch_size,), 50, device=parameter.device, dtype=torch.long)
    unet(x, t)
    if parameter.device.type == "cuda":
        torch.cuda.synchronize(parameter.device)
    began = time.perf_counter()
    for _ in range(repeats):
        unet(x, t)
    if parameter.device.type == "cuda":
        torch.cuda.synchronize(parameter.device)
    return (time.perf_counter() - began) / (repeats * batch_size)


@dataclass
class Estimate:
    frames: int
    calls: int  # denoiser calls per frame
    seconds: float
    preset: str

    def describe(self, costs: CostModel) -> str:
        rest = f" + {costs.frame_s:.2f} s" if costs.jobs_seen else ""
        text = (
            f"about {self.seconds:.0f} s ({self.frames} frames × ({self.calls} denoiser "
            f"call{'s' if self.calls != 1 else ''} × {costs.call_s:.3f} s{rest}))"
        )
        if not costs.jobs_seen:  # the rest of a frame is learned from finished jobs
            text += ", the denoiser alone until a first job has finished"
        return text


# ------------------------------------------------------------------------------ the queue
class Busy(JobError):
    """The queue is full: the job would be at ``position`` (1 = running)."""


class JobQueue:
    """One job runs, at most ``max_waiting`` wait in line (first come, first served); a job that
    would be further back raises :class:`Busy` at once. ``remaining()`` is the estimated time
    until the line is empty."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._line: list[tuple[object, float]] = []  # (ticket, estimated seconds), [0] runs
        self._started = 0.0

    def __len__(self) -> int:
        with self._cond:
            return len(self._line)

    def remaining(self) -> float:
        with self._cond:
            return self._remaining()

    def _remaining(self) -> float:
        if not self._line:
            return 0.0
        running = max(self._line[0][1] - (time.perf_counter() - self._started), 0.0)
        return running + sum(seconds for _, seconds in self._line[1:])

    @contextmanager
    def turn(self, estimate_s: float) -> Iterator[None]:
        """Wait for this job's turn (or raise :class:`Busy`), run it, leave the line."""
        ticket = object()
        with self._cond:
            position = len(self._line) + 1
            if position > self.max_waiting + 1:
                wait = self._remaining()
                raise Busy(
                    f"busy, position {position}: {len(self._line) - 1} job(s) are waiting behind "
                    f"the running one and this app keeps at most {self.max_waiting} in line "
                    f"(max_queue); try again in about {wait:.0f} s"
                )
            self._line.append((ticket, estimate_s))
            while self._line[0][0] is not ticket:
                self._cond.wait()
            self._started = time.perf_counter()
        try:
            yield
        finally:
            with self._cond:
                self._line = [entry for entry in self._line if entry[0] is not ticket]
                self._started = time.perf_counter()
                self._cond.notify_all()


# ------------------------------------------------------------------------------ the jobs
class WebApp:
    """The jobs of the page over one refiner (``coarse`` needed for Animate)."""

    def __init__(
        self,
        refiner: Refiner,
        sampler: SamplerSettings,
        animate_options: AnimateOptions,
        rectify_options: RectifyOptions,
        settings: AppSettings,
        workspace: Workspace,
        log: Callable[[str], None] = print,
    ) -> None:
        self.refiner = refiner
        self.sampler = sampler
        self.animate_options = replace(animate_options, progress=False, side_by_side=True)
        self.rectify_options = replace(rectify_options, progress=False, side_by_side=True)
        self.settings = settings
        self.workspace = workspace
        self.log = log
        self.queue = JobQueue(settings.max_queue)
        self._costs: CostModel | None = None
        self._costs_lock = threading.Lock()
        # the model runs on one thread of its own: each new calling thread would get its own
        # OpenMP pool and malloc arena (measured: +320 MiB per 20 clients when the jobs ran on
        # the server's request threads)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fadm-model")

    def on_model_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the model's thread (with this thread's context: Gradio's progress)."""
        context = contextvars.copy_context()
        return self._worker.submit(context.run, fn, *args).result()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ samplers and costs
    def sampler_for(self, preset: str | None) -> SamplerSettings:
        preset = preset or self.settings.preset
        if preset not in PRESETS:
            raise JobError(f"unknown sampler preset {preset!r} (one of {', '.join(PRESETS)})")
        changes = PRESETS[preset]
        return self.sampler.with_(**changes.as_dict()) if changes else self.sampler

    def calls_per_frame(self, preset: str | None) -> int:
        """Denoiser calls per frame of a preset with this model (its own sampler filled in)."""
        return self.sampler_for(preset).resolved(self.refiner.sampler).calls

    @property
    def costs(self) -> CostModel:
        """The cost model, measured on the first use (one warm-up and one timed UNet call)."""
        with self._costs_lock:
            if self._costs is None:
                call_s = self.on_model_thread(
                    measure_call_seconds, self.refiner, self.sampler.batch_size
                )
                self._costs = CostModel(call_s)
                self.log(
                    f"measured: one denoiser call takes {call_s:.3f} s per frame on "
                    f"{self.refiner.device} (batch {self.sampler.batch_size})"
                )
            return self._costs

    def preset_label(self, preset: str) -> str:
        """What a preset really is with the loaded model: its calls per frame and their cost."""
        calls = self.calls_per_frame(preset)
        sampler = self.sampler_for(preset).resolved(self.refiner.sampler)
        origin = PRESET_ORIGINS[preset]
        if PRESETS[preset] is None:
            origin += f" ({sampler.steps} step{'s' if sampler.steps != 1 else ''}"
            origin += f", η={sampler.eta:g})" if sampler.start_noise else ", from the coarse frame)"
        per_frame = self.costs.seconds(1, calls)
        return (
            f"{preset} — {origin}: {calls} denoiser call{'s' if calls != 1 else ''} per frame, "
            f"about {per_frame:.2f} s per frame here"
        )

    def fastest_preset(self) -> str:
        return min(PRESETS, key=self.calls_per_frame)

    def estimate(self, frames: int, preset: str | None) -> Estimate:
        preset = preset or self.settings.preset
        calls = self.calls_per_frame(preset)
        return Estimate(frames, calls, self.costs.seconds(frames, calls), preset)

    def check_estimate(self, estimate: Estimate) -> None:
        """Refuse a job estimated over ``max_seconds``, naming the faster choices."""
        limit = self.settings.max_seconds
        if estimate.seconds <= limit:
            return
        costs = self.costs

        def fitting(calls: int) -> int:  # frames that fit in the limit
            per_frame = costs.seconds(1, calls)
            return int(limit // per_frame) if per_frame > 0 else estimate.frames

        advice = []
        fastest = self.fastest_preset()
        if fastest != estimate.preset:
            quick = self.estimate(estimate.frames, fastest)
            plural = "s" if quick.calls != 1 else ""
            if quick.seconds <= limit:
                advice.append(
                    f"choose the {fastest} preset ({quick.calls} call{plural} per frame: about "
                    f"{quick.seconds:.0f} s)"
                )
            elif fitting(quick.calls) >= 1:
                advice.append(
                    f"choose the {fastest} preset ({quick.calls} call{plural} per frame) with at "
                    f"most {_frames(fitting(quick.calls))} (maximum frames)"
                )
        if fitting(estimate.calls) >= 1:
            advice.append(f"at most {_frames(fitting(estimate.calls))} with this preset")
        raise JobError(
            f"this job would take {estimate.describe(costs)} on {self.refiner.device}, over the "
            f"limit of {limit:g} s (max_seconds): "
            + ("; or ".join(advice) or "cut the video or raise max_seconds")
        )

    def check_video(self, path: Path, role: str) -> int | None:
        """A readable video within the limits (``max_video_seconds``, ``max_frames_upload``);
        returns its frame count (None when the container does not say)."""
        info = probe_video(path)  # VideoReadError: not a video
        frames = info.num_frames
        seconds = frames / float(info.fps) if frames and info.fps else None
        if seconds is not None and seconds > self.settings.max_video_seconds:
            raise JobError(
                f"{path}: the {role} is {seconds:.1f} s long; this app takes videos of up to "
                f"{self.settings.max_video_seconds:g} s (max_video_seconds). Cut it first."
            )
        if frames is not None and frames > self.settings.max_frames_upload:
            raise JobError(
                f"{path}: the {role} has {frames} frames; this app takes up to "
                f"{self.settings.max_frames_upload} (max_frames_upload). Cut it first."
            )
        return frames

    @staticmethod
    def _max_frames(value: Any) -> int | None:
        if value is None or value == "":
            return None
        value = int(value)
        return value if value > 0 else None

    def _frames(self, video_frames: int | None, max_frames: int | None) -> int:
        known = video_frames if video_frames is not None else self.settings.max_frames_upload
        return min(known, max_frames) if max_frames else known

    # ------------------------------------------------------------------ running a job
    def _run(
        self,
        prepare: Callable[[], tuple[Estimate, Callable[[Path, Callable], dict[str, Any]]]],
        uploads: dict[str, str | None],
        forget_uploads: bool,
        on_estimate: Callable[[Estimate, str], None] | None = None,
        on_frames: Callable[[int, int | None], None] | None = None,
    ) -> dict[str, Any]:
        """Check the inputs and estimate (``prepare``), queue, then run ``work(job folder,
        on_frames)``. On any error remove the job folder (and, for the API, the uploads) and
        raise :class:`JobError` with a one-line message naming the files as uploaded."""
        names = {str(Path(p)): Path(p).name for p in uploads.values() if p}
        names.update({str(Path(p).resolve()): Path(p).name for p in uploads.values() if p})
        missing = [role for role, path in uploads.items() if not path]
        job = None
        if forget_uploads:
            for path in uploads.values():
                self.workspace.hold_upload(path)
        try:
            if missing:
                raise JobError(f"give the {' and the '.join(missing)}")
            estimate, work = prepare()
            self.check_estimate(estimate)
            if on_estimate is not None:
                on_estimate(estimate, estimate.describe(self.costs))
            with self.queue.turn(estimate.seconds):
                self.workspace.prune(self.settings.keep_results_minutes * 60)
                job = self.workspace.new_job()
                began = time.perf_counter()
                stop_at = began + 2 * self.settings.max_seconds

                def frames_done(done: int, total: int | None) -> None:
                    if time.perf_counter() > stop_at:
                        raise JobError(
                            f"stopped after {time.perf_counter() - began:.0f} s, twice the "
                            f"limit of {self.settings.max_seconds:g} s (max_seconds); "
                            f"{estimate.describe(self.costs)} was estimated"
                        )
                    if on_frames is not None:
                        on_frames(done, total)

                report = self.on_model_thread(work, job, frames_done)
                self.costs.observe(report["frames"], estimate.calls, time.perf_counter() - began)
            report["estimate_s"] = round(estimate.seconds, 1)
            return report
        except BaseException as err:
            if job is not None:
                shutil.rmtree(job, ignore_errors=True)
            if isinstance(err, JobError):
                raise type(err)(_display(str(err), names)) from err
            inner = cli.unwrap(err)
            if isinstance(inner, JobError):
                raise type(inner)(_display(str(inner), names)) from err
            if isinstance(inner, cli.EXPECTED_ERRORS):
                raise JobError(_display(str(inner), names)) from err
            if isinstance(err, Exception):
                self.log("".join(traceback.format_exception(err)))
                raise JobError(
                    _display(f"the job failed: {type(err).__name__}: {err}", names)
                ) from err
            raise
        finally:
            if forget_uploads:  # the API's inputs are not shown anywhere: done with them
                for path in uploads.values():
                    self.workspace.forget_upload(path)

    def animate(
        self,
        portrait: str | None,
        driving: str | None,
        preset: str | None = None,
        mode: str = "relative",
        paste_back: bool = False,
        audio: bool = True,
        max_frames: int | None = None,
        on_frames: Callable[[int, int | None], None] | None = None,
        forget_uploads: bool = False,
        on_estimate: Callable[[Estimate, str], None] | None = None,
    ) -> dict[str, Any]:
        """Animate ``portrait`` with ``driving``: the report of
        :func:`~fadm_lightning.inference.animate.animate_video` (``output``, ``side_by_side``),
        with ``estimate_s``."""

        def prepare():
            source, video = Path(portrait), Path(driving)
            if mode not in ("relative", "absolute"):
                raise JobError(f"motion must be relative or absolute, got {mode!r}")
            read_image(source)  # ImageReadError naming the file: not an image
            frames = self.check_video(video, "driving video")
            limit = self._max_frames(max_frames)
            options = replace(
                self.animate_options,
                mode=mode,
                paste_back=bool(paste_back),
                audio=bool(audio),
                max_frames=limit,
            )
            sampler = self.sampler_for(preset)

            def work(job: Path, frames_done) -> dict[str, Any]:
                output = job / f"{safe_stem(source)}__{safe_stem(video)}.mp4"
                return animate_video(
                    self.refiner, source, video, output, sampler, options, log=self.log,
                    on_frames=frames_done,
                )  # fmt: skip

            return self.estimate(self._frames(frames, limit), preset), work

        uploads = {"portrait": portrait, "driving video": driving}
        return self._run(prepare, uploads, forget_uploads, on_estimate, on_frames)

    def rectify(
        self,
        video: str | None,
        preset: str | None = None,
        paste_back: bool = False,
        audio: bool = True,
        max_frames: int | None = None,
        on_frames: Callable[[int, int | None], None] | None = None,
        forget_uploads: bool = False,
        on_estimate: Callable[[Estimate, str], None] | None = None,
    ) -> dict[str, Any]:
        """Refine every frame of ``video``: the report of
        :func:`~fadm_lightning.inference.rectify.rectify_video`, with ``estimate_s``."""

        def prepare():
            path = Path(video)
            frames = self.check_video(path, "video")
            limit = self._max_frames(max_frames)
            options = replace(
                self.rectify_options, paste_back=bool(paste_back), audio=bool(audio),
                max_frames=limit,
            )  # fmt: skip
            sampler = self.sampler_for(preset)

            def work(job: Path, frames_done) -> dict[str, Any]:
                output = job / f"{safe_stem(path)}_rectified.mp4"
                return rectify_video(
                    self.refiner, path, output, sampler, options, log=self.log,
                    on_frames=frames_done,
                )  # fmt: skip

            return self.estimate(self._frames(frames, limit), preset), work

        return self._run(prepare, {"video": video}, forget_uploads, on_estimate, on_frames)


def summary(report: dict[str, Any]) -> str:
    line = (
        f"{report['frames']} frames at {report['fps']:g} fps in {report['seconds']} s "
        f"({report['sampler']}); audio: {report['audio']}"
    )
    if report.get("estimate_s") is not None:
        line += f"; estimated {report['estimate_s']:g} s"
    if report.get("best_frame") is not None:
        line += f"; reference driving frame {report['best_frame']}"
    if report.get("frames_without_face"):
        line += f"; {report['frames_without_face']} frame(s) without a detectable face"
    return line


__all__ = [
    "AppSettings",
    "Busy",
    "CostModel",
    "Estimate",
    "JobError",
    "JobQueue",
    "PRESETS",
    "WebApp",
    "Workspace",
    "measure_call_seconds",
    "safe_stem",
    "summary",
]
