"""Writing LitData shards of a VoxCeleb-layout root (``python -m fadm_lightning.shard``): the
records of :mod:`fadm_lightning.data.shards` (its docstring has the layout and the record table),
one ``litdata.optimize`` per split, each written into a hidden ``.<split>.partial`` folder and
renamed when complete, so a killed run leaves no finished-looking split and its rerun resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fadm_lightning.data.shards import INDEX_FILE, SUMMARY_FILE, is_url
from fadm_lightning.data.voxceleb import Clip, VoxCelebIndex
from fadm_lightning.synthetic.annotations import annotation_path

log = logging.getLogger(__name__)


DONE_DIR = ".shard/done"  # a record per split finished by a run that has not finished yet


SHARD_FORMAT_VERSION = 1


DEFAULT_CHUNK_BYTES = "64MB"


# -- writing ----------------------------------------------------------------------------------
def _png_files(folder: Path) -> list[Path]:
    # the frames media.video reads from a folder clip: its .png files in name order
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def clip_record(root: Path, split: str, clip: Clip, with_annotation: bool) -> dict[str, Any]:
    """The record of one clip of the folder layout (the table of the module docstring)."""
    if clip.path.is_dir():
        files = _png_files(clip.path)
        if len(files) != clip.num_frames:
            raise ValueError(
                f"{clip.path}: {len(files)} PNG frames, the index says {clip.num_frames}"
            )
        parts = [f.read_bytes() for f in files]
        video = b"".join(parts)
        frame_ends = np.cumsum([len(p) for p in parts], dtype="<u8").tobytes()
        fmt = "png"
    else:
        video, frame_ends, fmt = clip.path.read_bytes(), b"", "mp4"
    annotation = annotation_path(root, split, clip.name).read_bytes() if with_annotation else b""
    return {
        "name": clip.name,
        "split": split,
        "num_frames": int(clip.num_frames),
        "format": fmt,
        "video": video,
        "frame_ends": frame_ends,
        "annotation": annotation,
    }


class _RecordWriter:
    """The ``fn`` of ``litdata.optimize`` (picklable, for its worker processes): clip → record."""

    def __init__(self, root: Path, split: str, with_annotation: bool) -> None:
        self.root, self.split, self.with_annotation = root, split, with_annotation

    def __call__(self, entry: tuple[str, int]) -> dict[str, Any]:
        name, num_frames = entry
        path = self.root / self.split / name
        return clip_record(
            self.root, self.split, Clip(name, path, "", num_frames), self.with_annotation
        )


def _splits_to_write(index: VoxCelebIndex, splits: Sequence[str] | str | None) -> list[str]:
    if splits is None:
        return list(index.splits)
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    missing = [s for s in splits if not index.has_split(s)]
    if missing:
        raise FileNotFoundError(
            f"{index.root} has no split folder {', '.join(missing)} (it has {', '.join(index.splits)})"
        )
    return list(dict.fromkeys(splits))


def write_shards(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    splits: Sequence[str] | str | None = None,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    num_workers: int = 1,
    overwrite: bool = False,
    index_cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write the clips of a VoxCeleb-layout root as LitData shards, one dataset per split.

    Args:
        input_dir: a root in the VoxCeleb layout (``voxceleb.py``): ``train/``, ``test/`` (and
            ``val/``), mp4 files or PNG-frame folders, optional ``annotations/<split>/``.
        output_dir: a local folder; ``output_dir/<split>/`` receives the split's shards.
        splits: the splits to write (a list or "train,test"); None: every split of the root.
        chunk_bytes: LitData chunk size (bytes or "64MB"); a clip larger than this gets a chunk
            of its own.
        num_workers: processes of ``litdata.optimize`` (the record order does not depend on it).
        overwrite: replace the shards of a split that already has some (otherwise an error).
        index_cache_dir: where the clip index of ``input_dir`` is cached.
        progress: LitData's progress output.
        start_method: how LitData starts its workers ("spawn", "fork"; None: LitData's choice,
            spawn outside notebooks). "fork" starts faster (tests).

    Returns:
        The summary, also written to ``output_dir/shard_summary.json``: per split the clips
        written, their bytes, whether they carry annotations and the clips left out with the
        reason; the settings.

    Raises:
        FileNotFoundError: ``input_dir`` is not a VoxCeleb-layout root, a requested split is
            missing, or ``annotations/<split>/`` exists without a file for every clip.
        FileExistsError: a split of ``output_dir`` already holds shards and ``overwrite`` is off.
        ValueError: a split has no readable clip, or ``output_dir`` is a URL.
    """
    from litdata import optimize

    if is_url(output_dir):
        raise ValueError(
            f"output_dir must be a local folder, got {output_dir}; write locally, then copy the "
            "folder to the bucket as it is (docs/scaling.md, 'Sharded streaming data')"
        )
    root = Path(input_dir).expanduser().resolve()
    out = Path(output_dir).expanduser().resolve()
    if num_workers < 1:
        raise ValueError(f"num_workers must be ≥ 1, got {num_workers}")
    index = VoxCelebIndex(root, index_cache_dir)  # warns once about clips it cannot open
    chosen = _splits_to_write(index, splits)
    # a run that was killed (no summary yet) is resumed: the splits it finished, with the same
    # settings, are kept (their records: .shard/done/<split>.json, written after the rename)
    resumable = {} if overwrite or (out / SUMMARY_FILE).exists() else _finished_splits(out)
    for split in chosen:
        if (out / split / INDEX_FILE).exists() and not overwrite and split not in resumable:
            raise FileExistsError(
                f"{out / split} already holds shards ({INDEX_FILE}); set overwrite=true to "
                "replace them, or choose another output_dir"
            )
    summary: dict[str, Any] = {
        "version": SHARD_FORMAT_VERSION,
        "input_dir": str(root),
        "output_dir": str(out),
        "splits": {},
        "settings": {"chunk_bytes": chunk_bytes, "num_workers": num_workers, "splits": chosen},
    }
    for split in chosen:
        clips = index.require_split(split)
        if not clips:
            raise ValueError(f"{root / split} holds no readable clips")
        with_annotation = index.has_annotations(split)
        key = _split_key(root, split, clips, with_annotation, chunk_bytes)
        done = resumable.get(split)
        if done is not None and done.get("key") == key and (out / split / INDEX_FILE).exists():
            log.info("%s: finished by an earlier run with the same settings, kept", out / split)
            summary["splits"][split] = done["entry"]
            continue
        if done is not None and not overwrite and (out / split / INDEX_FILE).exists():
            raise FileExistsError(
                f"{out / split} holds shards of other settings; set overwrite=true to replace "
                "them, or choose another output_dir"
            )
        if with_annotation:
            missing = [c.name for c in clips if not annotation_path(root, split, c.name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{root / 'annotations' / split} exists but {len(missing)} clip(s) have no "
                    f"annotation file, e.g. {annotation_path(root, split, missing[0])}"
                )
        start = time.perf_counter()
        log.info("sharding %d clips of %s into %s", len(clips), root / split, out / split)
        # into a hidden sibling, renamed into place when LitData has written its index: a killed
        # run leaves no chunks that look finished (a rerun removes the hidden folder)
        work = out / f".{split}.partial"
        _check_replaceable(out / split)
        shutil.rmtree(work, ignore_errors=True)
        optimize(
            fn=_RecordWriter(root, split, with_annotation),
            inputs=[(c.name, c.num_frames) for c in clips],
            output_dir=str(work),
            chunk_bytes=chunk_bytes,
            num_workers=num_workers,
            keep_data_ordered=True,  # record i = clip i by name, whatever num_workers
            reorder_files=False,
            verbose=progress,
            start_method=start_method,
        )
        written = sum(p.stat().st_size for p in work.glob("*.bin"))
        _publish_split(work, out / split)
        summary["splits"][split] = {
            "clips": len(clips),
            "bytes": written,
            "annotations": with_annotation,
            "left_out": dict(index.skipped.get(split, {})),
            "seconds": round(time.perf_counter() - start, 1),
        }
        _write_json(
            out / DONE_DIR / f"{split}.json", {"key": key, "entry": summary["splits"][split]}
        )
    _write_json(out / SUMMARY_FILE, summary)  # last: the run is finished
    shutil.rmtree(out / DONE_DIR, ignore_errors=True)
    return summary


def _split_key(root: Path, split: str, clips: Sequence, annotations: bool, chunk_bytes) -> str:
    """What makes a split's shards what they are: the clips (names, frames), the settings."""
    content = [SHARD_FORMAT_VERSION, str(root), split, annotations, str(chunk_bytes)]
    content += [(c.name, c.num_frames) for c in clips]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def _finished_splits(out: Path) -> dict[str, dict[str, Any]]:
    """The records of the splits that an unfinished run wrote into ``out``."""
    found = {}
    for path in sorted((out / DONE_DIR).glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return found


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)


def _check_replaceable(final: Path) -> None:
    """``final`` may be replaced by new shards: it holds nothing else."""
    if not final.is_dir():
        return
    other = [
        p.name
        for p in final.iterdir()
        if not (p.name.endswith(".bin") or p.name.endswith(INDEX_FILE) or p.name == ".checkpoints")
    ]
    if other:
        raise FileExistsError(f"{final} holds other files than shards ({other[:3]}); move them")


def _publish_split(work: Path, final: Path) -> None:
    """Rename the written split ``work`` to ``final``; an existing ``final`` (shards being
    replaced with ``overwrite``, or the chunks of a run killed before this change) is removed,
    unless it holds other files than shards."""
    if final.exists():
        _check_replaceable(final)
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, final)


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: per split the clips, size, annotations and left-out clips."""
    lines = [f"shards of {summary['input_dir']} in {summary['output_dir']}:"]
    for split, entry in summary["splits"].items():
        left_out = entry["left_out"]
        lines.append(
            f"  {split}: {entry['clips']} clips, {entry['bytes'] / 1e6:.1f} MB"
            f"{', with annotations' if entry['annotations'] else ''}"
            f", {len(left_out)} left out ({entry['seconds']} s)"
        )
        for name, why in list(left_out.items())[:20]:
            lines.append(f"    left out {name}: {why}")
        if len(left_out) > 20:
            lines.append(f"    … and {len(left_out) - 20} more ({SUMMARY_FILE})")
    return "\n".join(lines)
