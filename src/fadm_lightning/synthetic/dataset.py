"""The synthetic dataset writer: procedural talking-head clips in the VoxCeleb layout.

:func:`generate_dataset` draws every identity (:mod:`fadm_lightning.synthetic.world`) and clip
motion (:mod:`fadm_lightning.synthetic.motion`) from its own random stream of ``(seed, person,
clip)``, renders the clips and writes each as an mp4 or a PNG folder with one annotation npz
(pose, expression, landmarks, identity), then a ``.complete`` marker. The default experiment
trains on this data, so the whole pipeline (data, coarse generator, attribute extractor,
refiner, metrics) runs without downloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fadm_lightning.media.video import write_mp4, write_png_folder
from fadm_lightning.synthetic.annotations import ANNOTATION_DIR, annotation_path, save_annotation
from fadm_lightning.synthetic.motion import sample_motion
from fadm_lightning.synthetic.world import render_clip, sample_identity

DATASET_VERSION = 2
CLIP_NAME = "id{:05d}#clip{:02d}.mp4"
#: every split the writer knows, in the order of their person indices (train, test, then val)
GENERATED_SPLITS = ("train", "test", "val")
_CLIP_PATTERN = re.compile(r"^id\d{5}#clip\d{2}\.mp4$")


def _identity_rng(seed: int, person: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(person, 0)))


def _motion_rng(seed: int, person: int, clip: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(person, 1, clip)))


def generate_dataset(
    root: str | os.PathLike,
    *,
    num_train_ids: int = 24,
    clips_per_id: int = 2,
    num_test_ids: int = 4,
    test_clips_per_id: int = 2,
    num_val_ids: int = 0,
    val_clips_per_id: int = 2,
    num_frames: int = 48,
    image_size: int = 64,
    fps: int = 25,
    format: str = "mp4",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic talking-head dataset in the VoxCeleb layout; returns ``root``.

    Layout: ``root/{train,test}/id{:05d}#clip{:02d}.mp4`` and, when ``num_val_ids > 0``,
    ``root/val/…`` (an mp4 file, or with ``format="png"`` a folder of that name holding 7-digit
    PNG frames), one annotation npz per clip under ``root/annotations/<split>/`` and finally
    ``root/.complete`` (JSON of the arguments).

    Identities: train persons are ``0 … num_train_ids − 1``, test persons follow them and the
    validation persons follow the test ones (``num_train_ids + num_test_ids …``), so the three
    splits are disjoint. Every identity and clip has its own random stream derived from
    ``(seed, person, clip)``, so the same arguments always give identical frames and
    annotations, and adding validation identities leaves the train and test clips bit-for-bit
    unchanged. Validation clips have ``num_frames`` frames, like the others.

    Idempotent: with a ``.complete`` for the same arguments this returns at once; a
    ``.complete`` for other arguments raises ``ValueError``. With ``num_val_ids=0`` the marker
    has no validation keys, exactly as written before the validation split existed. An
    interrupted run is redone by calling again: clips (and annotations) that the arguments no
    longer plan, in any split, are deleted first, and an empty ``val/`` left by an earlier plan
    with validation identities is removed.
    """
    root = Path(root)
    if format not in ("mp4", "png"):
        raise ValueError(f"format must be 'mp4' or 'png', got {format!r}")
    for name, value in (
        ("num_train_ids", num_train_ids),
        ("clips_per_id", clips_per_id),
        ("num_test_ids", num_test_ids),
        ("test_clips_per_id", test_clips_per_id),
        ("num_val_ids", num_val_ids),
        ("val_clips_per_id", val_clips_per_id),
    ):
        if not 0 <= value:
            raise ValueError(f"{name} must be ≥ 0, got {value}")
    if (
        max(clips_per_id, test_clips_per_id, val_clips_per_id) > 100
        or num_train_ids + num_test_ids + num_val_ids > 100_000
    ):
        raise ValueError("too many clips per id (≤ 100) or identities (≤ 100000) for the names")
    if num_frames < 1 or image_size < 8:
        raise ValueError(f"need num_frames ≥ 1 and image_size ≥ 8, got {num_frames}, {image_size}")
    args = {
        "num_train_ids": int(num_train_ids),
        "clips_per_id": int(clips_per_id),
        "num_test_ids": int(num_test_ids),
        "test_clips_per_id": int(test_clips_per_id),
        **(
            {"num_val_ids": int(num_val_ids), "val_clips_per_id": int(val_clips_per_id)}
            if num_val_ids > 0
            else {}  # no validation split: the marker of datasets written before it existed
        ),
        "num_frames": int(num_frames),
        "image_size": int(image_size),
        "fps": int(fps),
        "format": format,
        "seed": int(seed),
        "version": DATASET_VERSION,
    }
    marker = root / ".complete"
    if marker.exists():
        try:
            existing = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{marker}: unreadable marker ({err}); delete {root} to regenerate"
            ) from err
        if existing == args:
            return root
        raise ValueError(
            f"{root} already holds a synthetic dataset generated with {existing}, but {args} was "
            "asked for; delete that folder or choose another root"
        )

    # (split, number of ids, clips per id); person indices run on across the splits in this
    # order, so a split appended at the end never shifts the persons (and streams) before it
    layout = (
        ("train", num_train_ids, clips_per_id),
        ("test", num_test_ids, test_clips_per_id),
        ("val", num_val_ids, val_clips_per_id),
    )
    plan: list[tuple[str, int, int]] = []  # (split, person, clip)
    first = 0
    for split, num_ids, clips in layout:
        plan += [(split, p, k) for p in range(first, first + num_ids) for k in range(clips)]
        first += num_ids
    _remove_stale_clips(root, {(s, CLIP_NAME.format(p, k)) for s, p, k in plan})
    if num_val_ids == 0:
        _remove_empty_split(root, "val")  # left by an interrupted run that planned one

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is fastest, and shares the CPU well
    try:
        _write_clips(root, plan, seed, num_frames, image_size, fps, format, progress)
    finally:
        torch.set_num_threads(threads)
    for split in ("train", "test", "val") if num_val_ids > 0 else ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(args, indent=2) + "\n")
    return root


def _write_clips(
    root: Path,
    plan: list[tuple[str, int, int]],
    seed: int,
    num_frames: int,
    image_size: int,
    fps: int,
    format: str,
    progress: bool,
) -> None:
    identities: dict[int, np.ndarray] = {}
    for split, person, clip in tqdm(plan, desc="synthetic clips", disable=not progress):
        if person not in identities:
            identities[person] = sample_identity(_identity_rng(seed, person))
        identity = identities[person]
        pose, expression = sample_motion(_motion_rng(seed, person, clip), num_frames, fps)
        frames, marks = render_clip(identity, pose, expression, image_size)
        name = CLIP_NAME.format(person, clip)
        path = root / split / name
        if format == "mp4":
            write_mp4(path, frames, fps=fps)
        else:
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png_folder(path, frames)
        save_annotation(
            annotation_path(root, split, name),
            pose=pose,
            expression=expression,
            landmarks=marks,
            identity=identity,
        )


def _remove_stale_clips(root: Path, keep: set[tuple[str, str]]) -> None:
    """Delete clips (and their annotations) of an interrupted earlier run that are not planned."""
    for split in GENERATED_SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not _CLIP_PATTERN.match(entry.name) or (split, entry.name) in keep:
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            annotation_path(root, split, entry.name).unlink(missing_ok=True)


def _remove_empty_split(root: Path, split: str) -> None:
    """Remove ``root/<split>`` and ``root/annotations/<split>`` when they hold nothing."""
    for folder in (root / split, root / ANNOTATION_DIR / split):
        try:
            folder.rmdir()  # only succeeds when empty: foreign files are never deleted
        except OSError:
            pass
