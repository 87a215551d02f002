"""Raw videos and portraits → face-centred clips in the VoxCeleb layout (the work of
``python -m fadm_lightning.preprocess``; what it does, step by step, is that command's docstring).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fadm_lightning.data.partition import TaskParts, digest, resolve_task, task_of, write_json
from fadm_lightning.data.preprocess_summary import (
    IMAGE_DIR,
    SUMMARY_FILE,
    record_outputs,
    summarize,
)
from fadm_lightning.faces.crop import cut_square, square_crop_box
from fadm_lightning.faces.detection import FaceFinder
from fadm_lightning.faces.tubes import (
    check_out_of_frame,
    inside,
    link_tubes,
    select_tubes,
)
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.image import IMAGE_SUFFIXES, read_image_with_note
from fadm_lightning.media.video import CLIP_ENCODING, PngFolderWriter, VideoWriter, remove_clip

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".gif")
RECORD_DIR = Path(".preprocess") / "records"
TASK_DIR = Path(".preprocess") / "tasks"  # one summary part per task (num_tasks > 1)


@dataclass(frozen=True)
class CropSettings:
    """How faces are found and cut (documented in ``conf/preprocess.yaml``)."""

    image_size: int = 256
    increase: float = 0.1
    image_increase: float = 0.36
    iou_threshold: float = 0.25
    min_frames: int = 64
    max_frames: int = 1024
    min_size: int = 256
    max_gap: int = 2
    out_of_frame: str = "pad"
    fps: float | None = None
    format: str = "mp4"
    crf: int = 15
    gop: int | None = 12
    detector_max_side: int = 640
    detector_upsample: int = 0
    detector_cnn_fallback: bool = False
    person_depth: int = 0

    def key(self) -> str:
        values = asdict(self)
        if values["person_depth"] == 0:  # the key of the settings from before this field
            del values["person_depth"]
        return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


# -- inputs ---------------------------------------------------------------------------------------
def find_inputs(input_dir: Path, exclude: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Videos and images under ``input_dir`` (recursive, sorted; hidden files and anything under
    ``exclude``, the output folder, are skipped)."""
    videos, images = [], []
    exclude = exclude.resolve() if exclude is not None else None
    for path in sorted(input_dir.rglob("*")):
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            videos.append(path)
        elif suffix in IMAGE_SUFFIXES:
            images.append(path)
    return videos, images


def output_stem(rel: Path) -> str:
    """A file-name-safe stem for an input: its relative path without suffix, ``/`` and ``#`` → ``_``.

    The person id of the written clips (the name before the first ``#``) is this stem.
    """
    stem = str(rel.with_suffix("")).replace(os.sep, "_").replace("/", "_")
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in stem) or "input"


def clip_stem(rel: Path, person_depth: int = 0) -> str:
    """The name of an input's clips before ``#<tube>#<start>#<end>.mp4``: :func:`output_stem`,
    the whole relative path, is the person id; with ``person_depth`` = k the first k folders are
    the person id and the rest follows after a ``#`` (VoxCeleb2's
    ``id00012/21Uxsk56VDQ/00001.mp4`` with k = 1 → ``id00012#21Uxsk56VDQ_00001``). Inputs
    with no more than k folders keep :func:`output_stem`."""
    if person_depth <= 0 or len(rel.parts) <= person_depth:
        return output_stem(rel)
    person = "_".join(rel.parts[:person_depth])
    person = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in person)
    return f"{person}#{output_stem(Path(*rel.parts[person_depth:]))}"


def _record_path(output_dir: Path, rel: Path) -> Path:
    return output_dir / RECORD_DIR / f"{output_stem(rel)}{rel.suffix.lower()}.json"


# -- decoding -------------------------------------------------------------------------------------
def _frame_repeats(num_source: int, ratio: float | None) -> int:
    """How many output frames source frame ``num_source`` becomes (fps resampling)."""
    if ratio is None:
        return 1
    return math.ceil((num_source + 1) * ratio - 1e-9) - math.ceil(num_source * ratio - 1e-9)


def iter_video(path: Path, fps: float | None, state: dict[str, Any]) -> Iterator[np.ndarray]:
    """Decoded RGB frames, upright, on the output timeline (resampled to ``fps`` when given).

    Frames come from the inference commands' reader (``media.video.iter_frames``: any
    container, rotation metadata applied), so training clips and inference inputs are decoded
    the same way. ``state`` receives ``fps`` (of the output), ``source_fps`` and, if decoding
    stops early, ``error`` (the frames decoded before it are still yielded).

    Raises:
        VideoReadError: the file cannot be opened, has no video stream or no decodable frame.
    """
    from fadm_lightning.media.video import iter_frames, probe_video

    source_fps = float(probe_video(path).fps)
    ratio = None if fps is None else float(fps) / source_fps
    state.update(source_fps=source_fps, fps=source_fps if fps is None else float(fps))
    decoded = 0
    try:
        for image in iter_frames(path):
            for _ in range(_frame_repeats(decoded, ratio)):
                yield image
            decoded += 1
    except VideoReadError as err:
        if decoded == 0:
            raise
        cause = err.__cause__ or err
        state["error"] = (
            f"decoding stopped after {decoded} frames ({type(cause).__name__}: {cause})"
        )


Detector = Callable[[np.ndarray], np.ndarray]  # uint8 H×W×3 → N×4 face boxes, largest first


def face_detector(max_side: int = 640, upsample: int = 0, cnn_fallback: bool = False) -> Detector:
    """dlib's detector on frames scaled down to at most ``max_side`` pixels (boxes scaled back;
    :class:`~fadm_lightning.faces.detection.FaceFinder`, the inference commands' detector),
    with dlib's CNN detector tried where HOG finds nothing when ``cnn_fallback``."""
    return functools.partial(FaceFinder(max_side, upsample, cnn_fallback).detect, thorough=True)


# -- one input ------------------------------------------------------------------------------------
def process_video(
    path: Path,
    rel: Path,
    output_dir: Path,
    split: str,
    settings: CropSettings,
    detect: Detector,
) -> dict[str, Any]:
    """Detect, link, filter and write the tubes of one video; returns its record."""
    record: dict[str, Any] = {"file": str(rel), "kind": "video", "split": split, "tubes": []}
    state: dict[str, Any] = {}
    # 1. detections on the output timeline
    detections: list[np.ndarray] = []
    frame_size = None
    last_source, last_boxes = None, None
    for image in iter_video(path, settings.fps, state):
        if image is not last_source:  # repeated frames (fps up-sampling) are detected once
            last_source, last_boxes = image, detect(image)
        detections.append(last_boxes)
        frame_size = (image.shape[1], image.shape[0])
    record.update(frames=len(detections), fps=state.get("fps"), source_fps=state.get("source_fps"))
    if "error" in state:
        record["warning"] = state["error"]
    if not detections:
        raise VideoReadError(f"{path}: no decodable frames ({state.get('error', 'empty video')})")
    record["size"] = list(frame_size)

    # 2. tubes and their crops
    tubes = link_tubes(detections, settings.iou_threshold, settings.max_gap, settings.max_frames)
    decisions = select_tubes(
        tubes,
        frame_size,
        settings.increase,
        settings.min_frames,
        settings.min_size,
        settings.out_of_frame,
    )
    stem = clip_stem(rel, settings.person_depth)
    names = {}
    for i, d in enumerate(decisions):
        entry = {
            "index": i,
            "start": d.tube.start,
            "end": d.tube.end,
            "crop": list(d.crop),
            "reason": d.reason,
            "padded": d.padded,
        }
        if d.kept:
            names[i] = f"{stem}#{i:03d}#{d.tube.start:06d}#{d.tube.end:06d}.mp4"
            entry["clip"] = names[i]
        record["tubes"].append(entry)

    # 3. second pass: crop and write the kept tubes (streaming)
    if names:
        folder = output_dir / split
        writers: dict[int, VideoWriter | PngFolderWriter] = {}
        try:
            for t, image in enumerate(iter_video(path, settings.fps, {})):
                for i, name in names.items():
                    d = decisions[i]
                    if d.tube.start <= t < d.tube.end:
                        if i not in writers:
                            if settings.format == "mp4" and (folder / name).is_dir():
                                remove_clip(folder / name)  # a PNG folder of an earlier run
                            writers[i] = (
                                VideoWriter(
                                    folder / name,
                                    round(record["fps"]),
                                    **{**CLIP_ENCODING, "crf": settings.crf},
                                    gop=settings.gop,
                                )
                                if settings.format == "mp4"
                                else PngFolderWriter(folder / name, overwrite=True)
                            )
                        writers[i].write(cut_square(image, d.crop, settings.image_size))
                    if t == d.tube.end - 1 and i in writers:
                        writers.pop(i).close()
        finally:
            for writer in writers.values():
                writer.abort()
        missing = [n for n in names.values() if not (folder / n).exists()]
        if missing:
            raise VideoReadError(
                f"{path}: the second decoding pass ended early; not written: {missing}"
            )
    return record


def process_image(
    path: Path, rel: Path, output_dir: Path, settings: CropSettings, detect: Detector
) -> dict[str, Any]:
    """Crop one portrait around its largest face; returns its record."""
    image, note = read_image_with_note(path)
    h, w = image.shape[:2]
    record: dict[str, Any] = {"file": str(rel), "kind": "image", "size": [w, h], "note": note}
    boxes = detect(image)
    if len(boxes) == 0:
        record["reason"] = "no_face"
        return record
    crop = square_crop_box(boxes[0], settings.image_increase)
    record["crop"] = list(crop)
    if crop[2] - crop[0] < settings.min_size:
        record["reason"] = "too_small"
    elif settings.out_of_frame == "drop" and not inside(crop, w, h):
        record["reason"] = "leaves_frame"
    else:
        record["padded"] = not inside(crop, w, h)
        name = f"{output_stem(rel)}.png"
        target = output_dir / IMAGE_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp.png")
        Image.fromarray(cut_square(image, crop, settings.image_size)).save(tmp)
        os.replace(tmp, target)
        record["output"] = f"{IMAGE_DIR}/{name}"
    record.setdefault("reason", None)
    return record


def _done_record(record_path: Path, settings_key: str, split: str, output_dir: Path) -> dict | None:
    """The saved record of an input when it was finished with the same settings and split."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("settings") != settings_key or record.get("status") != "done":
        return None
    if record.get("kind") == "video" and record.get("split") != split:
        return None
    if not all((output_dir / out).exists() for out in record_outputs(record)):
        return None
    return record


def _remove_stalerecord_outputs(record_path: Path, keep: set[str], output_dir: Path) -> None:
    """Delete the outputs an earlier run (other settings or split) wrote for this input."""
    try:
        old = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return
    for stale in set(record_outputs(old)) - keep:
        remove_clip(output_dir / stale)


# -- workers --------------------------------------------------------------------------------------
_DETECTOR: Detector | None = None
_SETTINGS: CropSettings | None = None


def _init_worker(settings: CropSettings) -> None:
    global _DETECTOR, _SETTINGS
    _SETTINGS = settings
    _DETECTOR = face_detector(
        settings.detector_max_side, settings.detector_upsample, settings.detector_cnn_fallback
    )


def _process(task: tuple[str, str, str, str, str]) -> dict[str, Any]:
    kind, path, rel, output_dir, split = task
    assert _DETECTOR is not None and _SETTINGS is not None
    out = Path(output_dir)
    try:
        if kind == "video":
            record = process_video(Path(path), Path(rel), out, split, _SETTINGS, _DETECTOR)
        else:
            record = process_image(Path(path), Path(rel), out, _SETTINGS, _DETECTOR)
        record["status"] = "done"
    except Exception as err:  # a broken input is reported, never fatal to the run
        message = str(err) if isinstance(err, VideoReadError) else f"{type(err).__name__}: {err}"
        record = {"file": rel, "kind": kind, "split": split, "status": "broken", "error": message}
    record["settings"] = _SETTINGS.key()
    target = _record_path(out, Path(rel))
    if record["status"] == "done":
        _remove_stalerecord_outputs(target, set(record_outputs(record)), out)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, target)
    return record


# -- the whole run (one task of N) -----------------------------------------------------------------
def preprocess(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    split: str = "train",
    num_workers: int = 1,
    progress: bool = True,
    settings: CropSettings | None = None,
    num_tasks: int = 1,
    task_index: int = 0,
) -> dict[str, Any]:
    """Process the videos and images of ``input_dir`` that belong to task ``task_index`` of
    ``num_tasks`` (all of them for one task; :func:`~fadm_lightning.data.partition.task_of` of
    their relative paths otherwise) and return this task's summary.

    Each task writes its summary part under ``output_dir/.preprocess/tasks/``; the task that finds
    the parts of all ``num_tasks`` tasks of this run (the last to finish, in any order) writes
    ``preprocess_summary.json`` for the whole collection (:func:`merge_parts`). With one task that
    is this task's summary, as before.
    """
    from tqdm.auto import tqdm

    settings = settings or CropSettings()
    if settings.format not in ("mp4", "png"):
        raise ValueError(f"format must be 'mp4' or 'png', got {settings.format!r}")
    check_out_of_frame(settings.out_of_frame)
    if settings.person_depth < 0:
        raise ValueError(f"person_depth must be ≥ 0, got {settings.person_depth}")
    task_index, num_tasks, _ = resolve_task(num_tasks, task_index, environ={})  # checks them
    input_dir, output_dir = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input_dir {input_dir} is not a folder of videos and images")
    if split in ("", IMAGE_DIR) or "/" in split:
        raise ValueError(
            f"split must be a plain folder name other than {IMAGE_DIR!r}, got {split!r}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    parts = TaskParts(output_dir / TASK_DIR)
    parts.clear(task_index, num_tasks)
    videos, images = find_inputs(input_dir, exclude=output_dir)
    inputs = [("video", p) for p in videos] + [("image", p) for p in images]
    rels = {p: p.relative_to(input_dir) for _, p in inputs}
    mine = [(k, p) for k, p in inputs if task_of(rels[p].as_posix(), num_tasks) == task_index]
    key = settings.key()

    records: dict[str, dict[str, Any]] = {}
    tasks = []
    for kind, path in mine:
        rel = rels[path]
        done = _done_record(_record_path(output_dir, rel), key, split, output_dir)
        if done is not None:
            records[str(rel)] = {**done, "already_done": True}
        else:
            tasks.append((kind, str(path), str(rel), str(output_dir), split))

    bar = tqdm(total=len(tasks), desc="preprocess", unit="file", disable=not progress)
    if num_workers <= 1 or len(tasks) <= 1:
        _init_worker(settings)
        for task in tasks:
            record = _process(task)
            records[record["file"]] = record
            bar.update()
    else:
        context = mp.get_context("spawn")  # dlib and PyAV objects are not fork-safe to share
        with context.Pool(min(num_workers, len(tasks)), _init_worker, (settings,)) as pool:
            for record in pool.imap_unordered(_process, tasks):
                records[record["file"]] = record
                bar.update()
    bar.close()

    ordered = [records[str(rels[p])] for _, p in mine]
    summary = summarize(ordered, input_dir, output_dir, split, settings)
    # what every task of one run shares: a task of another run (settings, split, N, listing)
    # never completes this one
    run = {
        "input_dir": str(input_dir.resolve()),
        "split": split,
        "settings": asdict(settings),
        "num_tasks": num_tasks,
        "inputs": digest([k, rels[p].as_posix()] for k, p in inputs),
    }
    part = parts.write(task_index, num_tasks, run, {"files": ordered})
    complete = parts.complete(run, num_tasks)
    if complete is not None:
        merged = merge_parts(complete, input_dir, output_dir, split, settings)
        write_json(output_dir / SUMMARY_FILE, merged)
    if num_tasks > 1:
        _, missing = parts.status(run, num_tasks) if complete is None else (None, [])
        summary["task"] = {
            "index": task_index,
            "count": num_tasks,
            "inputs": len(inputs),
            "part": str(part),
            "merged": complete is not None,
            "waiting_for": missing,
        }
    return summary


def merge_parts(
    parts: list[dict[str, Any]],
    input_dir: Path,
    output_dir: Path,
    split: str,
    settings: CropSettings,
) -> dict[str, Any]:
    """The summary of the whole collection from the parts of all tasks of one run: the records
    in the order one process lists the inputs (videos, then images, each by path)."""
    records = [r for part in parts for r in part["results"]["files"]]
    records.sort(key=lambda r: (r["kind"] != "video", Path(r["file"])))
    return summarize(records, input_dir, output_dir, split, settings)


def merge(output_dir: str | os.PathLike) -> dict[str, Any]:
    """``preprocess output_dir=OUT merge=true``: write ``preprocess_summary.json`` from the parts
    of the run whose part was written last, when all its tasks have written theirs.

    Raises:
        FileNotFoundError: no part under ``output_dir/.preprocess/tasks/``.
        ValueError: tasks of that run have not written their part (they are named: rerun them;
            they skip what is done).
    """
    output_dir = Path(output_dir).expanduser()
    parts = TaskParts(output_dir / TASK_DIR)
    newest = parts.newest()
    if newest is None:
        raise FileNotFoundError(f"no task summaries under {parts.folder}: run the tasks first")
    run, num_tasks = newest["run"], int(newest["num_tasks"])
    found, missing = parts.status(run, num_tasks)
    if missing:
        raise ValueError(
            f"{len(missing)} of {num_tasks} tasks have no summary part for this run under "
            f"{parts.folder} (task_index {', '.join(map(str, missing[:20]))}"
            f"{', …' if len(missing) > 20 else ''}): rerun them with the same settings "
            f"(finished inputs are skipped), then merge again"
        )
    settings = CropSettings(**run["settings"])
    merged = merge_parts(found, Path(run["input_dir"]), output_dir, run["split"], settings)
    write_json(output_dir / SUMMARY_FILE, merged)
    return merged


def settings_from_config(cfg: Any) -> CropSettings:
    detector = cfg.get("detector") or {}
    return CropSettings(
        image_size=int(cfg.image_size),
        increase=float(cfg.increase),
        image_increase=float(cfg.image_increase),
        iou_threshold=float(cfg.iou_threshold),
        min_frames=int(cfg.min_frames),
        max_frames=int(cfg.max_frames),
        min_size=int(cfg.min_size),
        max_gap=int(cfg.max_gap),
        out_of_frame=str(cfg.get("out_of_frame", "pad")),
        fps=None if cfg.get("fps") is None else float(cfg.fps),
        format=str(cfg.get("format", "mp4")),
        crf=int(cfg.crf),
        gop=None if cfg.get("gop") is None else int(cfg.gop),
        detector_max_side=int(detector.get("max_side", 640)),
        detector_upsample=int(detector.get("upsample", 0)),
        detector_cnn_fallback=bool(detector.get("cnn_fallback", False)),
        person_depth=int(cfg.get("person_depth") or 0),
    )
