"""Face tubes and the preprocessing command (raw videos and portraits → VoxCeleb-layout crops)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fadm_lightning.data.preprocess_summary import format_summary, summarize
from fadm_lightning.data.preprocessing import CropSettings, iter_video, output_stem, preprocess
from fadm_lightning.faces.crop import FaceCrop, crop_square, cut_square, square_crop_box
from fadm_lightning.faces.tubes import box_iou, link_tubes, select_tubes
from fadm_lightning.media.video import iter_frames, read_frames, write_mp4
from tests.unit.test_data_robustness import write_png16

from ..conftest import TEST_THREADS

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "voxceleb_sample"
NUM_FRAMES = 80
CANVAS = (360, 400)  # H, W
TEST_SETTINGS = {"min_size": 100, "min_frames": 32}


# -- tube logic ------------------------------------------------------------------------------------
def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def _box(x: float, y: float = 0.0, size: float = 100.0) -> np.ndarray:
    return np.array([[x, y, x + size, y + size]])


def test_tubes_break_when_the_face_drifts_from_the_first_box():
    # a face sliding right by 5 px a frame: IoU with the first box is (100-5t)/(100+5t)
    detections = [_box(5 * t) for t in range(40)]
    tubes = link_tubes(detections, iou_threshold=0.25)
    # IoU ≥ 0.25 while 5t ≤ 60, i.e. t ≤ 12: the first tube holds frames 0…12
    assert [(t.start, t.end) for t in tubes] == [(0, 13), (13, 26), (26, 39), (39, 40)]
    assert tubes[0].union_box().tolist() == [0, 0, 160, 100]


def test_two_faces_gaps_and_long_tubes():
    empty = np.zeros((0, 4))
    detections = [np.concatenate([_box(0), _box(300)]) for _ in range(10)]
    detections += [empty, empty]  # the faces vanish for two frames
    detections += [_box(0)] * 5
    no_gap = link_tubes(detections, max_gap=0)
    assert [(t.start, t.end, t.first_box[0]) for t in no_gap] == [
        (0, 10, 0.0), (0, 10, 300.0), (12, 17, 0.0)
    ]  # fmt: skip
    with_gap = link_tubes(detections, max_gap=2)
    assert [(t.start, t.end, len(t.boxes)) for t in with_gap] == [(0, 17, 15), (0, 10, 10)]
    split = link_tubes([_box(0)] * 25, max_frames=10)
    assert [(t.start, t.end) for t in split] == [(0, 10), (10, 20), (20, 25)]


def test_square_crop_and_drop_reasons():
    # 100×80 box: sides pushed out by 10 % (120×96), squared to 120 about the centre (50, 40)
    assert square_crop_box((0, 0, 100, 80), increase=0.1) == (-10, -20, 110, 100)
    assert square_crop_box((10, 10, 30, 30), increase=0.0) == (10, 10, 30, 30)
    tubes = link_tubes([np.concatenate([_box(50, 50), _box(300, 5, 60)])] * 70 + [_box(50, 50)] * 5)
    decisions = select_tubes(tubes, (400, 300), increase=0.1, min_frames=64, min_size=100)
    assert [(d.tube.first_box[0], d.reason) for d in decisions] == [
        (50.0, None),
        (300.0, "too_small"),
    ]
    assert decisions[0].crop == (40, 40, 160, 160)
    near_edge = link_tubes([_box(5, 5, 150)] * 70)
    (d,) = select_tubes(near_edge, (400, 300), min_frames=64, min_size=100, out_of_frame="drop")
    assert d.reason == "leaves_frame" and not d.padded
    (d,) = select_tubes(near_edge, (400, 300), min_frames=64, min_size=100)  # pad: the default
    assert d.kept and d.padded
    assert not decisions[0].padded  # inside the frame
    with pytest.raises(ValueError, match="out_of_frame must be 'pad' or 'drop'"):
        select_tubes(near_edge, (400, 300), out_of_frame="border")
    (d,) = select_tubes(link_tubes([_box(50, 50)] * 10), (400, 300), min_frames=64, min_size=10)
    assert d.reason == "too_short"


def test_frame_rate_resampling(tmp_path):
    frames = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(10)])
    write_mp4(tmp_path / "v.mp4", frames, fps=30)
    state: dict = {}
    assert len(list(iter_video(tmp_path / "v.mp4", None, state))) == 10 and state["fps"] == 30
    half = [round(f.mean() / 10) * 10 for f in iter_video(tmp_path / "v.mp4", 15, {})]
    assert half == [0, 20, 40, 60, 80]
    assert len(list(iter_video(tmp_path / "v.mp4", 60, {}))) == 20
    assert output_stem(Path("a b/c#d.mp4")) == "a_b_c_d"


# -- the command on a realistic input --------------------------------------------------------------
def _place(canvas_hw: tuple[int, int], image: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = canvas_hw
    yy, xx = np.mgrid[0:h, 0:w]
    canvas = np.stack([(xx * 0.3 + 60) % 255, (yy * 0.4 + 90) % 255, np.full_like(xx, 120)], -1)
    canvas = canvas.astype(np.uint8)
    canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    """A talking-head video (the real fixture clip moving over a 400×360 canvas), portraits in
    unusual formats, and broken files."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    pytest.importorskip("dlib")
    raw = tmp_path_factory.mktemp("raw")
    face = read_frames(FIXTURES / "driving.mp4", list(range(NUM_FRAMES)))
    video = np.stack(
        [
            _place(
                CANVAS,
                face[t],
                round(60 + 40 * np.sin(2 * np.pi * t / NUM_FRAMES)),
                round(50 + 20 * np.cos(2 * np.pi * t / NUM_FRAMES)),
            )
            for t in range(NUM_FRAMES)
        ]
    )
    write_mp4(raw / "interviews" / "talk.mp4", video, fps=30)
    good = (raw / "interviews" / "talk.mp4").read_bytes()
    (raw / "cut.mp4").write_bytes(good[: len(good) // 3])  # truncated: no index at the end
    (raw / "empty.mp4").write_bytes(b"")
    portrait = np.asarray(Image.open(FIXTURES / "source.png").convert("RGB"))
    on_canvas = _place((384, 384), portrait, 64, 64)
    gray16 = np.asarray(Image.fromarray(on_canvas).convert("L")).astype(np.uint16) * 257
    write_png16(raw / "portraits" / "gray16.png", gray16)
    rgba = np.concatenate([on_canvas, np.full((384, 384, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(raw / "portraits" / "rgba.png")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(raw / "portraits" / "noface.png")
    (raw / "portraits" / "zero.png").write_bytes(b"")
    return raw


@pytest.fixture(scope="module")
def first_run(raw_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("out") / "vox"
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "fadm_lightning.preprocess", f"input_dir={raw_dir}",
            f"output_dir={out}", "num_workers=2", "progress=false",
            *(f"{k}={v}" for k, v in TEST_SETTINGS.items()),
        ],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    return out, proc


def test_preprocess_command_finds_the_face_tube_and_reports_broken_files(first_run):
    out, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "videos: 3 found, 1 processed, 0 already done, 2 broken" in proc.stdout
    summary = json.loads((out / "preprocess_summary.json").read_text())
    assert summary["tubes"]["kept"] == 1
    assert summary["clips"] == [f"train/interviews_talk#000#000000#{NUM_FRAMES:06d}.mp4"]
    assert {b["file"] for b in summary["broken"]} == {"cut.mp4", "empty.mp4", "portraits/zero.png"}
    assert any("empty image file" in b["error"] for b in summary["broken"])
    converted = {c["file"]: c["conversion"] for c in summary["converted"]}
    assert "16-bit grayscale" in converted["portraits/gray16.png"]
    assert "RGBA" in converted["portraits/rgba.png"]
    assert summary["portraits"] == {
        "kept": 2, "padded": 0, "dropped": {"no_face": 1, "too_small": 0, "leaves_frame": 0}
    }  # fmt: skip
    assert summary["tubes"]["padded"] == 0  # the moving head stays inside the canvas

    clip = read_frames(out / summary["clips"][0])
    assert clip.shape == (NUM_FRAMES, 256, 256, 3)
    from fadm_lightning.faces.dlib_face import DlibFace

    face = DlibFace(cnn_fallback=False)
    for t in (0, NUM_FRAMES // 2, NUM_FRAMES - 1):
        boxes = face.detect(clip[t])
        assert len(boxes) == 1, f"no face in frame {t} of the crop"
        left, top, right, bottom = boxes[0]
        assert right - left > 100 and 40 < (left + right) / 2 < 216  # a big face, not cut off
    for name in ("gray16.png", "rgba.png"):
        image = np.asarray(Image.open(out / "images" / f"portraits_{name}"))
        assert image.shape == (256, 256, 3) and len(face.detect(image)) == 1
    gray = np.asarray(Image.open(out / "images" / "portraits_gray16.png")).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 1


def test_preprocess_rerun_skips_finished_inputs_and_redoes_changed_settings(first_run, raw_dir):
    out, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    clip = out / "train" / f"interviews_talk#000#000000#{NUM_FRAMES:06d}.mp4"
    mtime = clip.stat().st_mtime_ns
    again = preprocess(raw_dir, out, progress=False, settings=CropSettings(**TEST_SETTINGS))
    assert again["videos"] == {"found": 3, "processed": 0, "already_done": 1, "broken": 2}
    assert again["images"]["already_done"] == 3 and again["clips"] == [str(clip.relative_to(out))]
    assert clip.stat().st_mtime_ns == mtime

    as_png = preprocess(
        raw_dir, out, progress=False, settings=CropSettings(**TEST_SETTINGS, format="png")
    )
    assert as_png["videos"]["processed"] == 1 and as_png["clips"] == again["clips"]
    assert clip.is_dir() and len(list(clip.glob("*.png"))) == NUM_FRAMES  # replaced the mp4
    assert read_frames(clip, [0, NUM_FRAMES - 1]).shape == (2, 256, 256, 3)

    stricter = CropSettings(**{**TEST_SETTINGS, "min_frames": NUM_FRAMES + 1})
    redone = preprocess(raw_dir, out, progress=False, settings=stricter)
    assert redone["videos"]["processed"] == 1 and redone["tubes"]["dropped"]["too_short"] == 1
    assert redone["clips"] == [] and not clip.exists()  # the stale clip of the old settings


# -- close-ups: a crop square leaving the frame is padded, as inference pads it ---------------------
def test_summary_counts_padded_tubes_and_portraits():
    tube = {"index": 0, "start": 0, "end": 80, "crop": [0, 0, 1, 1]}
    records = [
        {"file": "a.mp4", "kind": "video", "status": "done", "split": "train", "tubes": [
            {**tube, "reason": None, "padded": True, "clip": "a#000#000000#000080.mp4"},
            {**tube, "reason": None, "padded": False, "clip": "a#001#000000#000080.mp4"},
            {**tube, "reason": "too_short", "padded": False},
        ]},
        {"file": "b.mp4", "kind": "video", "status": "done", "split": "train", "tubes": [
            {**tube, "reason": None, "padded": True, "clip": "b#000#000000#000080.mp4"},
            {**tube, "reason": "leaves_frame", "padded": False},
        ]},
        {"file": "p.png", "kind": "image", "status": "done", "reason": None, "padded": True,
         "output": "images/p.png"},
    ]  # fmt: skip
    summary = summarize(records, Path("raw"), Path("out"), "train", CropSettings())
    assert summary["tubes"] == {
        "kept": 3, "padded": 2, "dropped": {"too_short": 1, "too_small": 0, "leaves_frame": 1}
    }  # fmt: skip
    assert summary["portraits"]["kept"] == 1 and summary["portraits"]["padded"] == 1
    text = format_summary(summary)
    assert "tubes:  3 kept (2 padded), 2 dropped (too_short 1, too_small 0, leaves_frame 1)" in text
    assert "portraits 1 kept (1 padded)" in text


def test_out_of_frame_setting_is_checked(tmp_path):
    with pytest.raises(ValueError, match="out_of_frame must be 'pad' or 'drop'"):
        preprocess(tmp_path, tmp_path / "out", settings=CropSettings(out_of_frame="replicate"))


@pytest.fixture(scope="module")
def closeup_dir(tmp_path_factory) -> Path:
    """A folder holding the real close-up clip (a VoxCeleb crop: the face fills the frame)."""
    if not (FIXTURES / "driving.mp4").is_file():
        pytest.skip(f"shared fixture clip not found at {FIXTURES / 'driving.mp4'}")
    pytest.importorskip("dlib")
    raw = tmp_path_factory.mktemp("closeup")
    shutil.copyfile(FIXTURES / "driving.mp4", raw / "driving.mp4")
    return raw


@pytest.fixture(scope="module")
def closeup_run(closeup_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The command with its default settings (out_of_frame=pad, min_size=256, min_frames=64)."""
    out = tmp_path_factory.mktemp("closeup_out") / "vox"
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "fadm_lightning.preprocess", f"input_dir={closeup_dir}",
            f"output_dir={out}", "progress=false",
        ],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip
    return out, proc


def test_closeup_clip_is_padded_and_written_as_a_training_clip(closeup_run):
    out, proc = closeup_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "preprocess_summary.json").read_text())
    (record,) = summary["files"]
    (tube,) = record["tubes"]
    width, height = record["size"]
    frames = record["frames"]
    assert frames >= 64 and (tube["start"], tube["end"]) == (0, frames)
    left, top, right, bottom = tube["crop"]
    assert left < 0 or top < 0 or right > width or bottom > height  # the square leaves the frame
    assert tube["reason"] is None and tube["padded"] is True
    assert summary["tubes"] == {
        "kept": 1, "padded": 1, "dropped": {"too_short": 0, "too_small": 0, "leaves_frame": 0}
    }  # fmt: skip
    assert "tubes:  1 kept (1 padded), 0 dropped" in proc.stdout
    assert "written: 1 clip(s) in train/" in proc.stdout
    assert summary["clips"] == [f"train/driving#000#000000#{frames:06d}.mp4"]

    # the clip is what inference cuts from the same frames (FaceCrop.cut: the same padding)
    clip = read_frames(out / summary["clips"][0])
    assert clip.shape == (frames, 256, 256, 3)
    crop = FaceCrop(tuple(tube["crop"]), (width, height))
    source = list(iter_frames(FIXTURES / "driving.mp4"))
    for t in (0, frames // 2, frames - 1):
        expected = crop.cut(source[t], 256).astype(np.float32)
        assert np.abs(clip[t].astype(np.float32) - expected).mean() < 3.0, t  # H.264 crf 15
    # the padding replicates the border: the padded left columns repeat the frame's first column
    pad = -left * 256 // (right - left)
    if pad > 2:
        band = clip[frames // 2, :, : pad - 1].astype(np.float32)
        assert np.abs(band - band[:, :1]).mean() < 4.0


def test_closeup_clip_is_dropped_with_out_of_frame_drop(closeup_dir, tmp_path):
    summary = preprocess(
        closeup_dir, tmp_path / "vox", progress=False, settings=CropSettings(out_of_frame="drop")
    )
    assert summary["tubes"] == {
        "kept": 0, "padded": 0, "dropped": {"too_short": 0, "too_small": 0, "leaves_frame": 1}
    }  # fmt: skip
    assert summary["clips"] == [] and not (tmp_path / "vox" / "train").exists()
    assert "tubes:  0 kept (0 padded), 1 dropped" in format_summary(summary)


# -- rotation metadata ------------------------------------------------------------------------------
def _write_rotated(path: Path, upright_frames: np.ndarray, degrees: int, fps: int = 25) -> None:
    """Store ``upright_frames`` turned by −``degrees`` with a display matrix that turns them back
    (``degrees`` counter-clockwise, PyAV's convention, as a phone writes its videos)."""
    import av

    stored = np.stack([np.rot90(f, k=-(degrees // 90)) for f in upright_frames])
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = stored.shape[2], stored.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "10"}
        stream.set_display_rotation(degrees)
        for i, image in enumerate(stored):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_iter_video_applies_the_rotation_metadata(tmp_path, degrees):
    # a portrait 48×32 (H×W) frame, stored landscape: the bright block marks the top-left corner
    upright = np.full((48, 32, 3), 40, np.uint8)
    upright[:16, :16] = 230
    _write_rotated(tmp_path / "phone.mp4", np.stack([upright] * 3), degrees)
    frames = list(iter_video(tmp_path / "phone.mp4", None, {}))
    assert len(frames) == 3
    assert frames[0].shape == upright.shape
    assert np.abs(frames[0].astype(int) - upright.astype(int)).mean() < 3


def test_rotated_clip_comes_out_upright(tmp_path):
    """A phone-style clip (stored sideways, rotation metadata) gives an upright training clip:
    dlib finds no face in sideways frames, so the tube exists only when the rotation is applied."""
    if not (FIXTURES / "driving.mp4").is_file():
        pytest.skip(f"shared fixture clip not found at {FIXTURES / 'driving.mp4'}")
    pytest.importorskip("dlib")
    from fadm_lightning.faces.dlib_face import DlibFace

    num = 12
    face = read_frames(FIXTURES / "driving.mp4", list(range(num)))  # 256×256
    upright = np.stack([_place((320, 256), f, 0, 32) for f in face])  # portrait 256 wide, 320 high
    _write_rotated(tmp_path / "raw" / "phone.mp4", upright, 90)
    settings = CropSettings(min_frames=8, min_size=100)
    summary = preprocess(tmp_path / "raw", tmp_path / "vox", progress=False, settings=settings)
    (record,) = summary["files"]
    assert record["size"] == [256, 320]  # (width, height) upright, not the stored 320×256
    assert summary["tubes"]["kept"] == 1, record
    clip = read_frames(tmp_path / "vox" / summary["clips"][0])
    crop = FaceCrop(tuple(record["tubes"][0]["crop"]), (256, 320))
    detector = DlibFace(cnn_fallback=False)
    for t in (0, num - 1):
        expected = crop.cut(upright[t], 256).astype(np.float32)
        assert np.abs(clip[t].astype(np.float32) - expected).mean() < 4.0, t
        assert len(detector.detect(clip[t])) == 1  # an upright face


def test_preprocessing_and_inference_cut_faces_with_one_function():
    """``FaceCrop.cut`` (inference) is ``cut_square`` (preprocessing), bit for bit: a crop of
    the frame padded by border replication where the square leaves it, Lanczos-resized."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for box in [(10, 20, 90, 100), (-30, -10, 110, 130), (100, 50, 200, 150), (0, 0, 64, 64)]:
        for size in (64, 256):
            crop = FaceCrop(box, (160, 120)).cut(frame, size)
            assert np.array_equal(crop, cut_square(frame, box, size))
            padded = crop_square(frame, box)  # the same as the border-replicating np.pad
            reference = np.pad(
                frame,
                (
                    (max(0, -box[1]), max(0, box[3] - 120)),
                    (max(0, -box[0]), max(0, box[2] - 160)),
                    (0, 0),
                ),
                mode="edge",
            )[max(0, box[1]) :, max(0, box[0]) :][: box[3] - box[1], : box[2] - box[0]]
            assert np.array_equal(padded, reference)
            if size == box[2] - box[0]:
                assert np.array_equal(crop, padded)


# -- many tasks (docs/scaling.md): N tasks give the files and the summary of one process -----------
def test_tasks_are_assigned_by_a_stable_hash_of_the_name():
    from fadm_lightning.data.partition import task_of

    names = [f"id{i:05d}/clip{k}.mp4" for i in range(200) for k in range(3)]
    tasks = [task_of(name, 8) for name in names]
    assert tasks == [task_of(name, 8) for name in reversed(names)][::-1]  # order plays no part
    counts = np.bincount(tasks, minlength=8)
    assert counts.min() > 40 and counts.max() < 110  # 600 names: 75 a task on average
    assert task_of("interviews/talk.mp4", 3) == 1  # fixed forever: reruns find their inputs
    assert {task_of(name, 1) for name in names} == {0}


def test_task_index_from_the_settings_or_a_slurm_array():
    from fadm_lightning.data.partition import resolve_task

    assert resolve_task(None, None, {}) == (0, 1, "settings")
    assert resolve_task(4, 2, {"SLURM_ARRAY_TASK_ID": "1"}) == (2, 4, "settings")
    array = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_task(4, None, array) == (3, 4, "SLURM_ARRAY_TASK_ID")
    assert resolve_task(None, None, array) == (0, 1, "settings")  # an array never splits by itself
    with pytest.raises(ValueError, match="needs task_index"):
        resolve_task(4, None, {**array, "SUBMITIT_EXECUTOR": "slurm"})  # the launcher's own array
    with pytest.raises(ValueError, match="needs task_index"):
        resolve_task(4, None, {})
    with pytest.raises(ValueError, match="from SLURM_ARRAY_TASK_ID"):
        resolve_task(2, None, array)
    with pytest.raises(ValueError, match=r"task_index must be in 0 … 2"):
        resolve_task(3, 3, {})
    with pytest.raises(ValueError, match="num_tasks must be"):
        resolve_task(0, None, {})


@pytest.fixture(scope="module")
def tasks_raw(raw_dir, tmp_path_factory) -> Path:
    """The raw folder of ``raw_dir`` (a talking head, portraits, broken files) plus the real
    close-up clip."""
    if not (FIXTURES / "driving.mp4").is_file():
        pytest.skip(f"shared fixture clip not found at {FIXTURES / 'driving.mp4'}")
    raw = tmp_path_factory.mktemp("tasks_raw")
    shutil.copytree(raw_dir, raw, dirs_exist_ok=True)
    (raw / "closeup").mkdir()
    shutil.copyfile(FIXTURES / "driving.mp4", raw / "closeup" / "driving.mp4")
    return raw


def _tree(root: Path) -> dict[str, bytes]:
    """Every output file (``.preprocess/`` left out) → its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".preprocess" not in p.relative_to(root).parts
    }


def _without_output_dir(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "output_dir"}


def test_three_tasks_give_the_files_and_summary_of_one_process(tasks_raw, tmp_path):
    from fadm_lightning.data.preprocessing import TASK_DIR, merge

    settings = CropSettings(**TEST_SETTINGS)
    one = preprocess(tasks_raw, tmp_path / "one", progress=False, settings=settings)
    assert one["videos"] == {"found": 4, "processed": 2, "already_done": 0, "broken": 2}
    assert "task" not in one

    out = tmp_path / "three"
    parts = []
    for i in (2, 0, 1):  # any order: the last one to finish merges
        assert not (out / "preprocess_summary.json").exists()
        part = preprocess(
            tasks_raw, out, progress=False, settings=settings, num_tasks=3, task_index=i
        )
        assert part["task"]["merged"] == (i == 1)
        assert part["task"]["waiting_for"] == {2: [0, 1], 0: [1], 1: []}[i]
        parts.append(part)
    # each input is done by exactly one task
    files = sorted(r["file"] for part in parts for r in part["files"])
    assert files == sorted(r["file"] for r in one["files"])
    assert sum(p["videos"]["found"] + p["images"]["found"] for p in parts) == len(files) == 8
    assert "Waiting for task_index 0, 1" in format_summary(parts[0])

    # the same clips and portraits, byte for byte, and the same summary
    assert _tree(out).keys() - {"preprocess_summary.json"} == _tree(tmp_path / "one").keys() - {
        "preprocess_summary.json"
    }
    for name, content in _tree(tmp_path / "one").items():
        if name != "preprocess_summary.json":
            assert _tree(out)[name] == content, name
    merged = json.loads((out / "preprocess_summary.json").read_text())
    assert _without_output_dir(merged) == _without_output_dir(json.loads(json.dumps(one)))
    broken = [b["file"] for b in merged["broken"]]
    assert broken == ["cut.mp4", "empty.mp4", "portraits/zero.png"]  # each once

    # a rerun of the three tasks skips everything finished (broken inputs are tried again)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "train").iterdir()}
    for i in range(3):
        again = preprocess(
            tasks_raw, out, progress=False, settings=settings, num_tasks=3, task_index=i
        )
        assert again["videos"]["processed"] == again["images"]["processed"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "train").iterdir()} == mtimes
    rerun = json.loads((out / "preprocess_summary.json").read_text())
    assert rerun["videos"] == {"found": 4, "processed": 0, "already_done": 2, "broken": 2}
    assert rerun["clips"] == merged["clips"] and rerun["broken"] == merged["broken"]

    # merge=true rebuilds the same summary; a missing part is named
    (out / "preprocess_summary.json").unlink()
    assert merge(out) == rerun
    next((out / TASK_DIR).glob("task-00001-of-00003.json")).unlink()
    with pytest.raises(ValueError, match=r"1 of 3 tasks .*task_index 1\b"):
        merge(out)


def test_preprocess_tasks_as_a_hydra_multirun_and_a_slurm_array(tasks_raw, tmp_path):
    """The command line: ``-m 'task_index=range(0,3)' num_tasks=3``, ``merge=true``, and an
    ``sbatch --array`` task (SLURM_ARRAY_TASK_ID) on a folder the tasks finished (all skipped)."""
    out = tmp_path / "vox"
    settings = CropSettings(**TEST_SETTINGS)
    preprocess(tasks_raw, out, progress=False, settings=settings)  # one process did the work
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    overrides = [
        f"input_dir={tasks_raw}", f"output_dir={out}", "progress=false",
        *(f"{k}={v}" for k, v in TEST_SETTINGS.items()),
    ]  # fmt: skip

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        flags = [a for a in args if a == "-m"]  # before the overrides
        return subprocess.run(
            [sys.executable, "-m", "fadm_lightning.preprocess", *flags, *overrides,
             *(a for a in args if a != "-m")],
            capture_output=True, text=True, timeout=300, env={**env, **extra_env}, cwd=tmp_path,
        )  # fmt: skip

    proc = run("-m", "num_tasks=3", "task_index=range(0,3)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("processed, ") >= 3 and "All 3 tasks done" in proc.stdout
    summary = json.loads((out / "preprocess_summary.json").read_text())
    assert summary["videos"] == {"found": 4, "processed": 0, "already_done": 2, "broken": 2}
    assert (out / ".preprocess" / "multirun").is_dir() and not (tmp_path / "multirun").exists()

    proc = run("num_tasks=3", SLURM_ARRAY_TASK_ID="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ": task 1 of 3 (below: its share of the 8 inputs)" in proc.stdout

    proc = run("num_tasks=3")  # no index anywhere
    assert proc.returncode == 2 and "num_tasks=3 needs task_index" in proc.stderr

    merged = subprocess.run(
        [sys.executable, "-m", "fadm_lightning.preprocess", f"output_dir={out}", "merge=true"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "videos: 4 found, 0 processed, 2 already done, 2 broken" in merged.stdout


def test_person_depth_takes_the_person_id_from_the_first_folders():
    """VoxCeleb2 is stored as ``<person>/<video>/<utterance>.mp4``: with ``person_depth=1`` the
    clips of one speaker share a person id (id sampling, cross-identity pairs)."""
    from fadm_lightning.data.preprocessing import clip_stem
    from fadm_lightning.data.voxceleb import person_id

    rel = Path("id00012/21Uxsk56VDQ/00001.mp4")
    assert clip_stem(rel) == "id00012_21Uxsk56VDQ_00001"  # the default: the whole path
    stem = clip_stem(rel, person_depth=1)
    assert stem == "id00012#21Uxsk56VDQ_00001"
    assert person_id(f"{stem}#000#000000#000195.mp4") == "id00012"
    assert clip_stem(Path("loose.mp4"), person_depth=1) == "loose"  # no folder to take it from
    # records written before the setting existed keep their key (nothing is redone)
    assert CropSettings().key() == "11f8e872a54d"
    assert CropSettings(person_depth=1).key() != CropSettings().key()
    with pytest.raises(ValueError, match="person_depth must be"):
        preprocess(
            Path(__file__).parent, Path("/nonexistent"), settings=CropSettings(person_depth=-1)
        )
