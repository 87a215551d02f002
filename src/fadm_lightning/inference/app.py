"""The work of ``python -m fadm_lightning.app`` (its usage is that command's docstring): a Gradio
page with two tabs, Animate (a portrait and a driving video) and Rectify (a video), over one
refiner loaded at start, and two API endpoints, ``/animate`` and ``/rectify``, that return the
path of the mp4 they made.

Uploads and results live in one temporary folder (``Workspace``): Gradio's own file cache
(``GRADIO_TEMP_DIR``) and one folder per job. A job that fails removes its folder and, for the
API endpoints, the uploaded inputs; results older than ``keep_results_minutes`` are pruned, and
the whole folder is removed when the app exits. Nothing is fetched from the internet: no
analytics, no share link, no web fonts (the page uses the system's fonts), the frontend comes
from the Gradio wheel.
"""

from __future__ import annotations

import atexit
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fadm_lightning.inference import animate, cli, rectify
from fadm_lightning.inference.animate import AnimateOptions
from fadm_lightning.inference.jobs import (
    PRESETS,
    AppSettings,
    Estimate,
    JobError,
    WebApp,
    Workspace,
    summary,
)
from fadm_lightning.inference.model import InferenceError, Refiner
from fadm_lightning.inference.rectify import RectifyOptions

NAME = "app"
REPO = Path(__file__).resolve().parents[3]
#: the examples of ``examples=auto``: the shared fixture clip beside the repository
FIXTURES = REPO.parent / "shared" / "fixtures" / "voxceleb_sample"


# ---------------------------------------------------------------------------------- the page
def _path_only(component: Any) -> Any:
    """``component`` (a ``gr.File``) passing the uploaded file's path and nothing else: its own
    preprocessing leaves an empty temporary file in the cache for every upload. Replaced on the
    instance: a subclass of a Gradio component makes Gradio write a ``.pyi`` beside this module."""

    def preprocess(payload: Any) -> str | None:
        return None if payload is None else str(payload.path)

    component.preprocess = preprocess
    return component


def page_theme():
    """Gradio's default theme with the system's fonts: the page loads no web fonts."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )


def build_demo(web: WebApp, title: str = "FADM — animate a portrait, rectify a video"):
    """The Gradio Blocks of the page and the API (``/animate``, ``/rectify``)."""
    import gradio as gr

    settings = web.settings
    # what each preset really is with this model: calls per frame and their measured cost
    preset_choices = [(web.preset_label(k), k) for k in PRESETS]

    progress_bar = gr.Progress()  # Gradio gives each call its own, through this default

    def progress_hook(progress: Any) -> Callable[[int, int | None], None]:
        def on_frames(done: int, total: int | None) -> None:
            progress((done, total), desc="refining frames", unit="frames")

        return on_frames

    def fail(err: JobError) -> gr.Error:
        return gr.Error(str(err), print_exception=False)

    def estimate_hook(progress: Any, what: str) -> Callable[[Estimate, str], None]:
        def on_estimate(estimate: Estimate, text: str) -> None:
            position = len(web.queue) + 1
            queued = f", position {position} in the queue" if position > 1 else ""
            progress(0, desc=f"{what}: {text}{queued}")

        return on_estimate

    def ui_animate(
        portrait, driving, preset, mode, paste_back, audio, max_frames, progress=progress_bar
    ):
        progress(0, desc="finding the faces")
        try:
            report = web.animate(
                portrait,
                driving,
                preset,
                mode,
                paste_back,
                audio,
                max_frames,
                on_frames=progress_hook(progress),
                on_estimate=estimate_hook(progress, "animating"),
            )
        except JobError as err:
            raise fail(err) from None
        files = [report["output"], report["side_by_side"]]
        return report["output"], report["side_by_side"], files, summary(report)

    def ui_rectify(video, preset, paste_back, audio, max_frames, progress=progress_bar):
        progress(0, desc="finding the face")
        try:
            report = web.rectify(
                video,
                preset,
                paste_back,
                audio,
                max_frames,
                on_frames=progress_hook(progress),
                on_estimate=estimate_hook(progress, "rectifying"),
            )
        except JobError as err:
            raise fail(err) from None
        files = [report["output"], report["side_by_side"]]
        return report["output"], report["side_by_side"], files, summary(report)

    def api_animate(
        portrait,
        driving,
        preset=settings.preset,
        mode="relative",
        paste_back=False,
        audio=True,
        max_frames=settings.preview_frames,
        progress=progress_bar,
    ):
        """Animate a portrait (an image file) with a driving video (a video file); returns the
        path of the animated mp4 (the refined face crops, or the portrait with the face pasted
        back)."""
        try:
            report = web.animate(
                portrait,
                driving,
                preset,
                mode,
                paste_back,
                audio,
                max_frames,
                on_frames=progress_hook(progress),
                forget_uploads=True,
            )
        except JobError as err:
            raise fail(err) from None
        return report["output"]

    def api_rectify(
        video,
        preset=settings.preset,
        paste_back=False,
        audio=True,
        max_frames=settings.preview_frames,
        progress=progress_bar,
    ):
        """Refine every frame of a talking-head video; returns the path of the rectified mp4."""
        try:
            report = web.rectify(
                video,
                preset,
                paste_back,
                audio,
                max_frames,
                on_frames=progress_hook(progress),
                forget_uploads=True,
            )
        except JobError as err:
            raise fail(err) from None
        return report["output"]

    limits = (
        f"Videos of up to {settings.max_video_seconds:g} s and {settings.max_frames_upload} "
        "frames. A face is needed in the portrait and in the video. Jobs run one at a time "
        f"({settings.max_queue} more can wait); a job estimated over {settings.max_seconds:g} s "
        "on this machine is refused with its estimate."
    )
    max_slider = max(settings.max_frames_upload, settings.preview_frames)
    cache_minutes = max(settings.keep_results_minutes, 1.0)
    delete_cache = (int(min(cache_minutes * 60, 600)), int(cache_minutes * 60))
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=delete_cache) as demo:
        gr.Markdown(
            f"## {title}\nFADM refines the frames of a coarse animator with an attribute-guided "
            f"diffusion model ({web.refiner.name}). {limits}"
        )
        with gr.Tab("Animate", id="animate"):
            with gr.Row():
                with gr.Column():
                    portrait = gr.Image(
                        label="Portrait",
                        type="filepath",
                        image_mode=None,
                        sources=["upload"],
                        elem_id="portrait",
                    )
                    driving = gr.Video(label="Driving video", sources=["upload"], elem_id="driving")
                    with gr.Accordion("Options", open=True):
                        a_preset = gr.Radio(preset_choices, value=settings.preset, label="Sampler")
                        a_mode = gr.Radio(
                            [
                                ("relative (FOMM: the driving face's motion)", "relative"),
                                ("absolute (the driving face's keypoints)", "absolute"),
                            ],
                            value="relative",
                            label="Motion",
                        )
                        a_paste = gr.Checkbox(False, label="Paste back into the portrait")
                        a_audio = gr.Checkbox(True, label="Keep the driving video's audio")
                        a_frames = gr.Slider(
                            0,
                            max_slider,
                            value=settings.preview_frames,
                            step=1,
                            label="Maximum frames (a preview; 0 = all)",
                        )
                    a_button = gr.Button("Animate", variant="primary", elem_id="animate-button")
                with gr.Column():
                    a_video = gr.Video(label="Animated", interactive=False, elem_id="animated")
                    a_side = gr.Video(
                        label="Side by side: source | driving | coarse | refined",
                        interactive=False,
                        elem_id="animated-side",
                    )
                    a_files = gr.File(label="Download", file_count="multiple", interactive=False)
                    a_status = gr.Markdown(elem_id="animate-status")
            if settings.examples is not None:
                gr.Examples(
                    [
                        [
                            str(settings.examples / "source.png"),
                            str(settings.examples / "driving.mp4"),
                        ]
                    ],
                    inputs=[portrait, driving],
                    label="Example (a VoxCeleb clip)",
                )
        with gr.Tab("Rectify", id="rectify"):
            with gr.Row():
                with gr.Column():
                    video = gr.Video(
                        label="Video to rectify (made by any animator)",
                        sources=["upload"],
                        elem_id="rectify-input",
                    )
                    with gr.Accordion("Options", open=True):
                        r_preset = gr.Radio(preset_choices, value=settings.preset, label="Sampler")
                        r_paste = gr.Checkbox(False, label="Paste back into the frames")
                        r_audio = gr.Checkbox(True, label="Keep the audio")
                        r_frames = gr.Slider(
                            0,
                            max_slider,
                            value=settings.preview_frames,
                            step=1,
                            label="Maximum frames (a preview; 0 = all)",
                        )
                    r_button = gr.Button("Rectify", variant="primary", elem_id="rectify-button")
                with gr.Column():
                    r_video = gr.Video(label="Rectified", interactive=False, elem_id="rectified")
                    r_side = gr.Video(label="Side by side: input | refined", interactive=False)
                    r_files = gr.File(label="Download", file_count="multiple", interactive=False)
                    r_status = gr.Markdown()
            if settings.examples is not None:
                gr.Examples(
                    [[str(settings.examples / "driving.mp4")]], inputs=[video], label="Example"
                )

        # the API: files in, the path of the mp4 out (the page's buttons are not part of it)
        with gr.Row(visible=False):
            api_portrait = _path_only(gr.File(label="portrait"))
            api_driving = _path_only(gr.File(label="driving video"))
            api_video = _path_only(gr.File(label="video"))
            api_out = gr.File(label="mp4")
            api_animate_button = gr.Button("api animate")
            api_rectify_button = gr.Button("api rectify")

        a_button.click(
            ui_animate,
            [portrait, driving, a_preset, a_mode, a_paste, a_audio, a_frames],
            [a_video, a_side, a_files, a_status],
            api_visibility="private",
        )
        r_button.click(
            ui_rectify,
            [video, r_preset, r_paste, r_audio, r_frames],
            [r_video, r_side, r_files, r_status],
            api_visibility="private",
        )
        api_animate_button.click(
            api_animate,
            [api_portrait, api_driving, a_preset, a_mode, a_paste, a_audio, a_frames],
            api_out,
            api_name="animate",
        )
        api_rectify_button.click(
            api_rectify,
            [api_video, r_preset, r_paste, r_audio, r_frames],
            api_out,
            api_name="rectify",
        )
    # every call enters at once: WebApp's own queue runs one job at a time and answers "busy,
    # position N" beyond max_queue (Gradio's queue would keep them waiting without a word)
    demo.queue(default_concurrency_limit=None)
    return demo


# ---------------------------------------------------------------------------------- the command
def settings_from_config(cfg: DictConfig) -> AppSettings:
    examples = cfg.get("examples")
    if examples == "auto":
        folder = FIXTURES if (FIXTURES / "source.png").is_file() else None
    elif examples:
        folder = Path(str(examples))
        if not (folder / "source.png").is_file() or not (folder / "driving.mp4").is_file():
            raise InferenceError(f"examples={folder}: needs source.png and driving.mp4 in it")
    else:
        folder = None
    return AppSettings(
        preset=str(cfg.preset),
        preview_frames=int(cfg.preview_frames or 0),
        max_seconds=float(cfg.max_seconds),
        max_video_seconds=float(cfg.max_video_seconds),
        max_frames_upload=int(cfg.max_frames_upload),
        max_queue=int(cfg.max_queue),
        keep_results_minutes=float(cfg.keep_results_minutes),
        examples=folder.resolve() if folder else None,
    )


# what each job sets from the page (its controls), on top of the config's other options
PAGE_SET = {
    "mode": "relative",
    "paste_back": False,
    "side_by_side": True,
    "audio": True,
    "max_frames": None,
    "progress": False,
    "source_frame": 0,
    "source": None,
}


def _job_options(cfg: DictConfig) -> tuple[AnimateOptions, RectifyOptions]:
    """The commands' own options of ``cfg`` (``options_from_config`` of animate and rectify),
    with the values the page sets per job filled in."""
    job = OmegaConf.create({**OmegaConf.to_container(cfg), **PAGE_SET})
    return animate.options_from_config(job), rectify.options_from_config(job)


@dataclass
class Server:
    """A running app: the Gradio Blocks, its URL, the workspace; :meth:`close` stops it and
    removes the workspace."""

    demo: Any
    url: str
    web: WebApp
    workspace: Workspace
    _previous_temp: str | None = None

    def close(self) -> None:
        try:
            self.demo.close()
            self.web.close()
        finally:
            self.workspace.remove()
            if self._previous_temp is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = self._previous_temp


def start(
    cfg: DictConfig,
    refiner: Refiner | None = None,
    block: bool = False,
    log: Callable[[str], None] | None = None,
) -> Server:
    """Load the model (unless given), build the page and start the server. ``block``: serve
    until interrupted, then clean up (the command)."""
    log = log or cli.log_to_stderr(NAME)
    settings = settings_from_config(cfg)
    sampler = cli.sampler_from_config(cfg)
    animate_options, rectify_options = _job_options(cfg)
    if refiner is None:
        refiner = cli.refiner_from_config(cfg, need_coarse=True)
    temp_parent = cfg.get("temp_dir")
    workspace = Workspace(temp_parent)
    atexit.register(workspace.remove)
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.cache)  # uploads and served files go there
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    web = WebApp(refiner, sampler, animate_options, rectify_options, settings, workspace, log)
    try:
        demo = build_demo(web)
        allowed = [str(workspace.root)]
        if settings.examples is not None:
            allowed.append(str(settings.examples))
        max_mb = cfg.get("max_upload_mb")
        _, url, _ = demo.launch(
            server_name=str(cfg.server_name),
            server_port=int(cfg.server_port) if cfg.get("server_port") else None,
            share=False,
            inbrowser=bool(cfg.get("open_browser", False)),
            prevent_thread_lock=True,
            show_error=True,
            quiet=True,
            allowed_paths=allowed,
            max_file_size=f"{int(max_mb)}mb" if max_mb else None,
            ssr_mode=False,
            mcp_server=False,
            theme=page_theme(),
        )
    except BaseException:
        workspace.remove()
        raise
    server = Server(demo, url, web, workspace, previous)
    log(f"serving {url} ({refiner.name}); temporary folder {workspace.root}; Ctrl-C stops it")
    if block:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            log("stopping")
        finally:
            server.close()
    return server


def run(cfg: DictConfig) -> int:
    """The command: serve until Ctrl-C; returns the exit status."""
    port = cfg.get("server_port")
    if port is not None and not 0 < int(port) < 65536:
        raise InferenceError(f"server_port must be a port number, got {port}")
    # Ctrl-C and `kill` stop the server and remove the temporary folder (SIGINT too is set:
    # a process started in the background by a shell inherits it ignored)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        start(cfg, block=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


__all__ = [
    "AppSettings",
    "JobError",
    "Server",
    "WebApp",
    "Workspace",
    "build_demo",
    "run",
    "start",
    "summary",
]
