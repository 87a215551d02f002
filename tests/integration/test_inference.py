"""The inference commands (animate, rectify) on small models, synthetic clips and the real clip.

The model is the framework's FADM at 256×256 (dlib needs faces of about 80 px to find them) with
a tiny UNet, the landmark attribute extractor and a tiny FOMM with random weights, saved in the
training-checkpoint format without training: these tests check the mechanics (frames, frame
rate, audio, crops, errors, determinism), not the quality of the output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from fadm_lightning import synthetic
from fadm_lightning.checkpoints import CONFIG_KEY, config_for_checkpoint
from fadm_lightning.inference.cli import run_command
from fadm_lightning.media.video import iter_frames, probe_video

from ..conftest import CONFIG_DIR, FIXTURES, REPO, TEST_THREADS

pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
pytestmark = pytest.mark.filterwarnings("ignore:FOMMCoarseGenerator. RANDOM WEIGHTS")

TINY_256 = [
    "data.image_size=256",
    "model.unet.block_out_channels=[4,8,8,8]",
    "model.unet.norm_num_groups=4",
    "model.unet.attention_head_dim=8",
    "model.agcn.feature_channels=4",
    "model.agcn.hidden_channels=8",
    "model.agcn.norm_groups=2",
    "coarse=fomm_small",
    "coarse.allow_random_weights_for_tests=true",
    "coarse.block_expansion=8",
    "coarse.max_features=16",
    "coarse.num_down_blocks=1",
    "coarse.num_bottleneck_blocks=1",
    "coarse.kp_block_expansion=8",
    "coarse.kp_max_features=16",
    "coarse.kp_scale_factor=0.25",
    "coarse.dense_motion_block_expansion=8",
    "coarse.dense_motion_max_features=16",
    "coarse.dense_motion_scale_factor=0.25",
    "attributes=landmarks",
    "~logger",
]
# one DDIM step from pure noise (the tiny checkpoint would otherwise use its validation sampler)
FAST = [
    "sampler.steps=1",
    "sampler.eta=1",
    "sampler.strength=1",
    "sampler.batch_size=3",
    "progress=false",
    "device=cpu",
]


# ------------------------------------------------------------------------------ helpers
def _compose(config: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def save_checkpoint(path: Path, overrides: list[str]) -> Path:
    """A checkpoint in the format of ``python -m fadm_lightning.train`` (untrained weights)."""
    cfg = _compose("train", [*overrides, f"paths.root_dir={path.parent}"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")  # the tiny FOMM
        coarse = instantiate(cfg.coarse)
    model = instantiate(cfg.model, coarse=coarse, attributes=instantiate(cfg.attributes))
    # fadm_small's residual refiner starts as the identity (zero output layer): these tests need
    # one whose output depends on its input and noise, as a trained one does
    model.unet.conv_out.reset_parameters()
    state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("coarse.", "attributes."))
    }
    torch.save({"state_dict": state, CONFIG_KEY: config_for_checkpoint(cfg)}, path)
    return path


def render_faces(num_frames: int, seed: int = 0, size: int = 256) -> np.ndarray:
    """uint8 T×S×S×3 procedural talking-head frames (dlib finds these faces)."""
    rng = np.random.default_rng(seed)
    identity = synthetic.sample_identity(rng)
    pose, expression = synthetic.sample_motion(rng, num_frames)
    pose[:, :3] *= 0.3  # gentle head motion: the face stays detectable in every frame
    frames, _ = synthetic.render_clip(identity, pose, expression, size)
    return frames


def on_canvas(frames: np.ndarray, width: int, height: int, left: int, top: int) -> np.ndarray:
    """Frames placed on a grey canvas of another (odd) size."""
    canvas = np.full((len(frames), height, width, 3), 90, np.uint8)
    h, w = frames.shape[1:3]
    canvas[:, top : top + h, left : left + w] = frames
    return canvas


def write_video(
    path: Path, frames: np.ndarray, fps: Fraction | int = 25, audio: str | None = None
) -> Path:
    """Frames (and a 440 Hz tone as ``audio`` = "aac" / "pcm_s16le" / "mp3") via PyAV."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = (
            frames.shape[1] + frames.shape[1] % 2,
            frames.shape[2] + frames.shape[2] % 2,
        )
        video.pix_fmt = "yuv420p"
        sound = None
        if audio is not None:
            sound = out.add_stream(audio, rate=16000)
        for i, frame in enumerate(frames):
            frame = np.pad(
                frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge"
            )
            packet_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            packet_frame.pts = i
            for packet in video.encode(packet_frame):
                out.mux(packet)
        if sound is not None:  # mono float samples; PyAV converts them to the codec's format
            samples = int(16000 * len(frames) / float(fps))
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)
            chunk = av.AudioFrame.from_ndarray(
                tone[None].astype(np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 16000, 0
            for packet in [*sound.encode(chunk), *sound.encode(None)]:
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def frames_of(path: Path) -> np.ndarray:
    return np.stack(list(iter_frames(path)))


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files the commands may have left."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name)


def run_app(app: str, overrides: list[str]) -> int:
    """The command in-process (composed config, expected errors reported): its exit status."""
    import importlib

    module = importlib.import_module(f"fadm_lightning.{app}")
    cfg = _compose(app, overrides)
    return run_command(app, lambda: module.run(cfg))


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inference")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    return save_checkpoint(workdir / "tiny.ckpt", TINY_256)


@pytest.fixture(scope="module")
def portrait(workdir) -> Path:
    """An RGBA portrait of odd size: a rendered face on a transparent canvas."""
    face = render_faces(1, seed=7)[0]
    rgba = np.zeros((301, 333, 4), np.uint8)
    rgba[20:276, 40:296, :3] = face
    rgba[20:276, 40:296, 3] = 255
    path = workdir / "portrait_rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def clip_aac(workdir) -> Path:
    """5 frames in a 301×283 canvas at 30000/1001 fps with an AAC track."""
    frames = on_canvas(render_faces(5, seed=3), 301, 283, 23, 11)
    return write_video(workdir / "clip_aac.mp4", frames, Fraction(30000, 1001), audio="aac")


@pytest.fixture(scope="module")
def clip_pcm(workdir) -> Path:
    """4 frames of 256×256 at 24 fps in Matroska with PCM audio (mp4 cannot hold PCM)."""
    return write_video(workdir / "clip_pcm.mkv", render_faces(4, seed=4), 24, audio="pcm_s16le")


# ------------------------------------------------------------------------------ tests
def test_animate_keeps_frames_fps_and_audio_of_an_odd_sized_clip(ckpt, portrait, clip_aac, workdir):
    out = workdir / "animated.mp4"
    status = run_app(
        "animate",
        [
            f"source={portrait}",
            f"driving={clip_aac}",
            f"ckpt={ckpt}",
            f"output={out}",
            "side_by_side=true",
            *FAST,
        ],
    )
    assert status == 0
    info, source = probe_video(out), probe_video(clip_aac)
    assert info.num_frames == len(frames_of(out)) == 5
    assert info.fps == source.fps == Fraction(30000, 1001)
    assert info.audio_codec == "aac"
    assert (info.width, info.height) == (256, 256)  # the model's crop
    side = probe_video(workdir / "animated_side_by_side.mp4")
    assert (side.width, side.height, side.num_frames) == (1024, 256, 5)
    assert leftovers(workdir) == []


def test_rectify_pastes_back_into_the_frame_and_reencodes_pcm_audio(ckpt, clip_pcm, workdir):
    out = workdir / "rectified.mp4"
    status = run_app(
        "rectify", [f"video={clip_pcm}", f"ckpt={ckpt}", f"output={out}", "paste_back=true", *FAST]
    )
    assert status == 0
    info = probe_video(out)
    assert (info.width, info.height, info.fps, info.audio_codec) == (256, 256, 24, "aac")
    frames, original = frames_of(out), frames_of(clip_pcm)
    assert len(frames) == len(original) == 4
    # outside the face crop the original frame is kept
    assert np.abs(frames[:, :4].astype(int) - original[:, :4]).mean() < 8


def test_paste_back_into_an_rgba_portrait_keeps_its_size(ckpt, portrait, clip_aac, workdir):
    out = workdir / "pasted.mp4"
    status = run_app(
        "animate",
        [
            f"source={portrait}",
            f"driving={clip_aac}",
            f"ckpt={ckpt}",
            f"output={out}",
            "paste_back=true",
            "mode=absolute",
            "audio=false",
            "max_frames=2",
            *FAST,
        ],
    )
    assert status == 0
    info = probe_video(out)
    assert (info.width, info.height) == (334, 302)  # 333×301 padded to even for yuv420p
    assert info.num_frames == 2 and not info.has_audio
    first = frames_of(out)[0]
    assert first[5, 5].min() > 200  # the transparent corner, composited over white, is kept


def test_grayscale_portrait_and_strength(ckpt, clip_pcm, workdir):
    gray = workdir / "gray.jpg"
    Image.fromarray(render_faces(1, seed=9)[0]).convert("L").save(gray)
    out = workdir / "gray.mp4"
    status = run_app(
        "animate",
        [
            f"source={gray}",
            f"driving={clip_pcm}",
            f"ckpt={ckpt}",
            f"output={out}",
            "sampler.strength=0.5",
            "sampler.steps=2",
            *FAST[4:],
        ],
    )
    assert status == 0 and probe_video(out).num_frames == 4


# Batch invariance is checked on the float frames the refiner hands to the video writer, not on
# the decoded mp4: x264 turns a float rounding difference that flips one 8-bit value into other
# macroblock decisions, i.e. whole grey levels (measured here: up to 14 with AVX2 kernels, 9 with
# AVX-512 on 2 threads, 0 on 1), so a grey-level bound on decoded frames depends on the CPU.
#
# The float floor: one batch of 4 and batches of 3 + 1 run the same arithmetic with other
# blockings (MKL / oneDNN pick kernels and reduction orders by batch size and thread count), so
# the refined frames differ by reordered float32 sums. Measured max |Δ| (Xeon Sapphire Rapids;
# kernels limited to AVX-512, AVX2 and SSE4.1 with ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS and
# ATEN_CPU_CAPABILITY): 4.6e-6–5.5e-6 on 1 thread, 3.9e-5 on 2 threads, i.e. at most about
# 330 ε (ε = 2^-23 ≈ 1.19e-7, the float32 machine epsilon; frames lie in [0, 1]).
# BATCH_TOL = 2^-11 ≈ 4.9e-4 = 4096 ε: 12× the worst measured floor (headroom for other CPUs'
# kernels) and 1/8 of a grey level, so the 8-bit frames written differ by at most one rounding
# step. Batching that really changed the results moves frames by far more: another seed (or, as
# measured, noise drawn per chunk) changes them by 0.19 on average, about 400× BATCH_TOL.
BATCH_TOL = 2.0**-11
# the encoded outputs: rounding flips through x264 gave 47.7–∞ dB (batch 4 or 1 vs 3 + 1) on the
# kernels above, another seed 14.7 dB
MIN_PSNR_DB = 40.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two uint8 videos of the same shape; inf when identical."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_same_seed_same_video_whatever_the_batches(ckpt, clip_pcm, workdir, monkeypatch):
    from fadm_lightning.inference.model import FrameRefiner

    batches: list[torch.Tensor] = []  # the float frames of a run, batch by batch
    refine_batch = FrameRefiner.__call__

    def capture(self, *args, **kwargs):
        refined = refine_batch(self, *args, **kwargs)
        batches.append(refined.detach().cpu().clone())
        return refined

    monkeypatch.setattr(FrameRefiner, "__call__", capture)

    def refine(name: str, *extra: str) -> tuple[torch.Tensor, list[int], np.ndarray]:
        batches.clear()
        out = workdir / name
        common = [f"video={clip_pcm}", f"ckpt={ckpt}", f"output={out}", "audio=false", *FAST]
        assert run_app("rectify", [*common, *extra]) == 0
        return torch.cat(batches), [len(b) for b in batches], frames_of(out)

    a, sizes_a, video_a = refine("seed_a.mp4", "sampler.seed=3")
    b, _, video_b = refine("seed_b.mp4", "sampler.seed=3")
    c, sizes_c, video_c = refine("seed_c.mp4", "sampler.seed=3", "sampler.batch_size=4")
    d, _, video_d = refine("seed_d.mp4", "sampler.seed=4")
    assert (sizes_a, sizes_c) == ([3, 1], [4])
    # same seed, same batches: the same kernels on the same shapes in one process, bit for bit;
    # the same 8-bit frames then give the same stream (x264 is deterministic unless told not to)
    assert torch.equal(a, b) and np.array_equal(video_a, video_b)
    # one batch of 4 vs batches of 3 + 1: the same frames up to float rounding
    torch.testing.assert_close(c, a, rtol=0, atol=BATCH_TOL)
    assert psnr(video_a, video_c) >= MIN_PSNR_DB
    # the check can fail: another noise draw is far beyond the tolerance
    assert (a - d).abs().mean() > 100 * BATCH_TOL
    assert psnr(video_a, video_d) < MIN_PSNR_DB - 10


def test_bf16_and_compile_are_ignored_on_cpu_with_a_message(
    ckpt, clip_pcm, portrait, workdir, capsys, monkeypatch
):
    """On a CPU without native bf16 and without a C++ compiler for inductor, both settings are
    ignored with a message (where they are supported they run: tests/unit/test_bench_speed.py)."""
    from fadm_lightning.inference import model as inference_model

    monkeypatch.setattr(inference_model, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(inference_model, "cpp_compiler_available", lambda: False)
    out = workdir / "bf16.mp4"
    # (and attr_s from the animator's source portrait instead of the first frame)
    extra = ["sampler.precision=bf16", "sampler.compile=true", "max_frames=1", f"source={portrait}"]
    assert (
        run_app("rectify", [f"video={clip_pcm}", f"ckpt={ckpt}", f"output={out}", *FAST, *extra])
        == 0
    )
    err = capsys.readouterr().err
    assert "precision=bf16 ignored on cpu" in err and "compile=true ignored on cpu" in err


def test_bad_inputs_give_clear_errors_and_leave_no_output(
    ckpt, portrait, clip_aac, workdir, capsys
):
    bad = workdir / "bad"
    bad.mkdir()
    garbage = bad / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")
    audio_only = bad / "audio_only.m4a"
    import av

    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    faceless = bad / "faceless.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)).save(
        faceless
    )
    faceless_clip = write_video(bad / "faceless.mp4", np.full((3, 128, 128, 3), 40, np.uint8))
    misfit = bad / "misfit.ckpt"  # weights of another model under the tiny model's config
    other = torch.load(
        save_checkpoint(misfit, [*TINY_256, "model.unet.block_out_channels=[8,8,8,8]"])
    )
    other[CONFIG_KEY] = torch.load(ckpt)[CONFIG_KEY]
    torch.save(other, misfit)
    synthetic_ckpt = save_checkpoint(bad / "synthetic.ckpt", ["data.image_size=32", "~logger"])
    out = bad / "out.mp4"
    animate = [f"output={out}", *FAST]
    cases = [
        ("animate", [f"source={garbage}", f"driving={clip_aac}", f"ckpt={ckpt}"], str(garbage)),
        (
            "animate",
            [f"source={portrait}", f"driving={audio_only}", f"ckpt={ckpt}"],
            str(audio_only),
        ),
        (
            "animate",
            [f"source={faceless}", f"driving={clip_aac}", f"ckpt={ckpt}"],
            f"{faceless}: no face",
        ),
        ("rectify", [f"video={faceless_clip}", f"ckpt={ckpt}"], f"{faceless_clip}: no face"),
        (
            "rectify",
            [f"video={clip_aac}", f"ckpt={bad / 'absent.ckpt'}"],
            "absent.ckpt: no such checkpoint",
        ),
        (
            "rectify",
            [f"video={clip_aac}", f"ckpt={garbage}"],
            f"{garbage}: not a readable checkpoint",
        ),
        ("rectify", [f"video={clip_aac}", f"ckpt={misfit}"], "does not fit"),
        ("rectify", [f"video={clip_aac}", f"ckpt={synthetic_ckpt}"], "ground-truth annotations"),
        ("rectify", [f"video={clip_aac}"], "no trained model given"),
        (
            "animate",
            [
                f"source={portrait}",
                f"driving={clip_aac}",
                f"ckpt={ckpt}",
                "coarse=fomm",
                "coarse.checkpoint=/absent/vox-cpk.pth.tar",
            ],
            "/absent/vox-cpk.pth.tar",
        ),
        (
            "animate",
            [f"source={portrait}", f"driving={clip_aac}", "model=fadm_official_release"],
            "diffusion.pth",
        ),
    ]
    for app, overrides, message in cases:
        status = run_app(app, [*overrides, *animate])
        err = capsys.readouterr().err
        assert status == 1, (overrides, err)
        assert message in err, (overrides, err)
        assert not out.exists() and leftovers(bad) == [], overrides


def test_a_failure_midway_removes_the_partial_output(ckpt, clip_aac, workdir, monkeypatch):
    from fadm_lightning.inference.model import FrameRefiner, SamplerSettings, load_refiner
    from fadm_lightning.inference.rectify import RectifyOptions, rectify_video

    calls = []

    def failing(self, coarse, attr_diff, guide=None):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("out of memory (simulated)")
        return coarse

    monkeypatch.setattr(FrameRefiner, "__call__", failing)
    folder = workdir / "midway"
    folder.mkdir()
    out = folder / "out.mp4"
    refiner = load_refiner(ckpt, need_coarse=False)
    options = RectifyOptions(progress=False, side_by_side=True)
    with pytest.raises(RuntimeError, match="simulated"):
        rectify_video(refiner, clip_aac, out, SamplerSettings(batch_size=2), options, log=print)
    assert len(calls) == 2 and list(folder.iterdir()) == []


def test_batch_mode_is_resumable_and_reports_failures(ckpt, portrait, clip_aac, clip_pcm, workdir):
    folder = workdir / "batch_in"
    folder.mkdir()
    os.symlink(portrait, folder / "alice.png")
    os.symlink(clip_pcm, folder / "talk.mkv")
    (folder / "broken.mp4").write_bytes(b"not a video")
    out_dir = workdir / "batch_out"
    overrides = [
        f"batch={folder}",
        f"output_dir={out_dir}",
        f"ckpt={ckpt}",
        "mode=absolute",
        "max_frames=2",
        *FAST,
    ]
    assert run_app("animate", overrides) == 1  # one of the two pairs fails
    assert (out_dir / "alice__talk.mp4").is_file() and not (out_dir / "alice__broken.mp4").exists()
    (folder / "broken.mp4").unlink()
    mtime = (out_dir / "alice__talk.mp4").stat().st_mtime_ns
    assert run_app("animate", overrides) == 0  # done already: skipped
    assert (out_dir / "alice__talk.mp4").stat().st_mtime_ns == mtime
    import json

    summary = json.loads((out_dir / "inference_summary.json").read_text())
    assert (summary["jobs"], summary["already_done"], summary["done"]) == (1, 1, 0)
    # other settings: redone
    assert run_app("animate", [*overrides, "sampler.seed=5"]) == 0
    assert (out_dir / "alice__talk.mp4").stat().st_mtime_ns != mtime

    csv_file = workdir / "videos.csv"
    csv_file.write_text(f"video,output\n{clip_pcm.name},one.mp4\n")
    assert (
        run_app("rectify", [f"batch={csv_file}", f"output_dir={out_dir}", f"ckpt={ckpt}", *FAST])
        == 0
    )
    assert probe_video(out_dir / "one.mp4").num_frames == 4


def test_cli_exit_status_and_message(ckpt, clip_pcm, workdir):
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    out = workdir / "cli.mp4"
    base = [
        sys.executable,
        "-m",
        "fadm_lightning.rectify",
        f"video={clip_pcm}",
        f"output={out}",
        *FAST,
    ]
    proc = subprocess.run(base, capture_output=True, text=True, cwd=workdir, env=env, timeout=300)
    assert proc.returncode == 1 and "no trained model given" in proc.stderr and not out.exists()
    proc = subprocess.run(
        [*base, f"ckpt={ckpt}", "max_frames=2"],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 frames at 24 fps" in proc.stdout and probe_video(out).num_frames == 2
    assert not (workdir / ".hydra").exists()  # no run folder for an inference command


# ------------------------------------------------------------------------------ the real clip
@pytest.fixture(scope="module")
def real_clip(workdir) -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    frames = np.stack(list(iter_frames(FIXTURES / "driving.mp4", max_frames=6)))
    return write_video(workdir / "real6.mp4", frames, 25, audio="aac")


def test_animate_real_portrait_relative_motion_from_the_best_frame(ckpt, real_clip, workdir):
    from fadm_lightning.inference.animate import AnimateOptions, animate_video
    from fadm_lightning.inference.model import SamplerSettings, load_refiner

    refiner = load_refiner(ckpt, device="cpu")
    report = animate_video(
        refiner,
        FIXTURES / "source.png",
        real_clip,
        workdir / "real_animated.mp4",
        SamplerSettings(steps=1, batch_size=3),
        AnimateOptions(progress=False, paste_back=True),
        log=lambda m: None,
    )
    assert report["frames"] == 6 and report["fps"] == 25 and 0 <= report["best_frame"] < 6
    assert "aac audio copied" in report["audio"]
    info = probe_video(workdir / "real_animated.mp4")
    assert (info.width, info.height, info.num_frames) == (256, 256, 6)  # pasted into the portrait


@pytest.mark.slow
def test_rectify_the_whole_real_clip_keeps_its_227_frames(ckpt, workdir):
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    out = workdir / "real_rectified.mp4"
    status = run_app(
        "rectify",
        [
            f"video={FIXTURES / 'driving.mp4'}",
            f"ckpt={ckpt}",
            f"output={out}",
            "sampler.steps=1",
            "sampler.batch_size=16",
            "progress=false",
            "device=cpu",
        ],
    )
    assert status == 0
    info = probe_video(out)
    assert (info.num_frames, info.fps) == (227, 25) and len(frames_of(out)) == 227


def test_docs_describe_every_option():
    text = (REPO / "docs" / "inference.md").read_text()
    for app in ("animate", "rectify"):
        cfg = _compose(app, [])
        for key in cfg:
            if key not in ("paths", "task_name"):
                assert f"`{key}" in text, f"docs/inference.md does not mention {app} option {key}"


def test_official_release_animates_with_face_vid2vid_in_relative_mode(workdir, monkeypatch):
    """The release path (model=fadm_official_release) with tiny stand-ins of its files."""
    from fadm_lightning.inference.animate import AnimateOptions, animate_video
    from fadm_lightning.inference.model import SamplerSettings, load_refiner
    from fadm_lightning.models.attributes import deca
    from fadm_lightning.models.coarse.facevid import FacevidCoarseGenerator
    from fadm_lightning.models.coarse.facevid.checkpoint import save_facevid_checkpoint
    from fadm_lightning.models.official import OfficialFADMDenoiser, save_diffusion_checkpoint

    class PixelDECA(torch.nn.Module):  # DECA's interface without its 100 MB ResNet-50
        dim, needs_annotations = 56, False

        def __init__(self, checkpoint):
            super().__init__()

        def forward(self, images, annotation=None):
            return images.mean(dim=(2, 3)).repeat(1, 19)[:, :56]

    folder = workdir / "release"
    folder.mkdir()
    facevid_options = dict(
        num_kp=5, kp_block_expansion=4, kp_max_features=16, kp_reshape_channel=64, kp_reshape_depth=4,
        kp_num_blocks=2, he_block_expansion=8, he_max_features=64, block_expansion=8, max_features=32,
        reshape_channel=8, reshape_depth=4, num_resblocks=1, dense_motion_block_expansion=8,
        dense_motion_max_features=32, dense_motion_num_blocks=2, dense_motion_compress=2,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        facevid = FacevidCoarseGenerator(
            None, allow_random_weights_for_tests=True, **facevid_options
        )
    save_facevid_checkpoint(
        folder / "Facevid.pth", facevid.kp_detector, facevid.he_estimator, facevid.generator
    )
    denoiser_options = dict(
        image_size=64,
        inner_channel=8,
        channel_mults=(1, 2),
        attn_res=(32,),
        res_blocks=1,
        norm_groups=4,
    )
    save_diffusion_checkpoint(folder / "diffusion.pth", OfficialFADMDenoiser(**denoiser_options))
    (folder / "deca_model.tar").write_bytes(b"")
    monkeypatch.setattr(deca, "DECAAttributes", PixelDECA)
    cfg = _compose(
        "animate",
        [
            "model=fadm_official_release",
            f"model.diffusion={folder / 'diffusion.pth'}",
            f"model.deca={folder / 'deca_model.tar'}",
            f"model.facevid={folder / 'Facevid.pth'}",
        ],
    )
    model = OmegaConf.to_container(cfg.model, resolve=True)  # + the tiny sizes
    model["facevid_options"].update(facevid_options)
    model["denoiser_options"] = denoiser_options
    refiner = load_refiner(release=model, device="cpu")
    assert refiner.image_size == 64 and refiner.pipe.attributes_from == "coarse"
    clip = write_video(folder / "clip.mp4", render_faces(3, seed=5, size=64), 25)
    still = folder / "still.png"
    Image.fromarray(render_faces(1, seed=6, size=64)[0]).save(still)
    options = AnimateOptions(
        progress=False, best_frame=1, source_crop="none", driving_crop="none", side_by_side=True
    )
    report = animate_video(
        refiner,
        still,
        clip,
        folder / "out.mp4",
        SamplerSettings(steps=2, batch_size=2),
        options,
        log=print,
    )
    assert report["frames"] == 3 and report["best_frame"] == 1
    assert refiner.pipe.coarse.mode == "absolute"  # restored after the relative run
    assert probe_video(folder / "out_side_by_side.mp4").width == 4 * 64


def test_unset_sampler_settings_come_from_the_checkpoint(ckpt):
    from fadm_lightning.inference.model import SamplerSettings, load_refiner
    from fadm_lightning.sampler import OFFICIAL

    refiner = load_refiner(ckpt, need_coarse=False)
    # the tiny model is fadm_small: it validates on a 20-step DDIM grid, η 0, from t = 0.1·T,
    # x̂_0 clipped
    assert refiner.sampler.as_dict() == {
        "steps": 20,
        "eta": 0.0,
        "strength": 0.1,
        "clip_sample": True,
        "start_noise": True,
    }
    settings = SamplerSettings(steps=5, seed=2).resolved(refiner.sampler)
    assert (settings.steps, settings.eta, settings.strength, settings.clip_sample) == (
        5,
        0.0,
        0.1,
        True,
    )
    assert (
        SamplerSettings().resolved(OFFICIAL).describe() == "100 DDIM steps, η=1, strength 1, seed 0"
    )
