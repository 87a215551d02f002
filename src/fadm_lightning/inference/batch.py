"""Batch mode of the inference commands: many inputs, one loaded model, resumable.

Jobs come from a CSV file (``source,driving[,output]`` for animate, ``video[,output]`` for
rectify; relative paths are read from the CSV's folder) or from a folder (animate: every image
with every video in it; rectify: every video). Outputs go to ``output_dir``; a record per output
under ``output_dir/.fadm_inference/`` remembers the settings it was made with, so a re-run skips
what is done with the same settings and redoes the rest. A failing job does not stop the others:
it is listed in ``output_dir/inference_summary.json`` and the command exits non-zero.

Several processes or machines share one batch with ``num_tasks=N task_index=I`` (docs/scaling.md):
task I runs the jobs whose output name hashes to I (``data.partition.task_of``), writes its part
of the summary to ``output_dir/.fadm_inference/tasks/``, and the task that finds all N parts of
the run (the last to finish) writes ``inference_summary.json`` for the whole batch: the file one
process writes. With ``num_tasks`` > 1 and no ``task_index``, the index is
``SLURM_ARRAY_TASK_ID`` (``sbatch --array=0-<N-1>``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fadm_lightning.data.partition import TaskParts, digest, resolve_task, task_of, write_json
from fadm_lightning.media.image import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".gif")
RECORD_DIR = ".fadm_inference"
TASK_DIR = f"{RECORD_DIR}/tasks"  # one summary part per task
SUMMARY_FILE = "inference_summary.json"


@dataclass
class Job:
    inputs: dict[str, Path]  # {"source": …, "driving": …} or {"video": …}
    output: Path

    @property
    def name(self) -> str:
        return self.output.name


def _files(folder: Path, suffixes: tuple[str, ...], exclude: Path) -> list[Path]:
    exclude = exclude.resolve()
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.resolve().is_relative_to(exclude) or path.suffix.lower() not in suffixes:
            continue
        out.append(path)
    return out


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot read the CSV ({err})") from err
    if not rows:
        raise ValueError(f"{path}: the CSV has no rows")
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: the CSV lacks the column(s) {missing} (has {list(header)})")
    return rows


def _stem(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in path.stem) or "input"


def animate_jobs(spec: str | os.PathLike, output_dir: str | os.PathLike) -> list[Job]:
    """Jobs of ``animate batch=SPEC``: a CSV of ``source,driving[,output]`` or a folder."""
    spec, output_dir = Path(spec), Path(output_dir)
    if spec.is_dir():
        images = _files(spec, IMAGE_SUFFIXES, output_dir)
        videos = _files(spec, VIDEO_SUFFIXES, output_dir)
        if not images or not videos:
            raise ValueError(
                f"{spec}: batch folder needs images and videos, found {len(images)} image(s) "
                f"and {len(videos)} video(s)"
            )
        return [
            Job({"source": s, "driving": d}, output_dir / f"{_stem(s)}__{_stem(d)}.mp4")
            for s in images
            for d in videos
        ]
    if not spec.is_file():
        raise FileNotFoundError(f"{spec}: no such batch file or folder")
    jobs = []
    for row in _read_csv(spec, ("source", "driving")):
        source, driving = (spec.parent / row[k].strip() for k in ("source", "driving"))
        name = (row.get("output") or "").strip() or f"{_stem(source)}__{_stem(driving)}.mp4"
        jobs.append(Job({"source": source, "driving": driving}, output_dir / name))
    return jobs


def rectify_jobs(spec: str | os.PathLike, output_dir: str | os.PathLike) -> list[Job]:
    """Jobs of ``rectify batch=SPEC``: a CSV of ``video[,output]`` or a folder of videos."""
    spec, output_dir = Path(spec), Path(output_dir)
    if spec.is_dir():
        videos = _files(spec, VIDEO_SUFFIXES, output_dir)
        if not videos:
            raise ValueError(f"{spec}: no videos in the batch folder")
        return [Job({"video": v}, output_dir / f"{_stem(v)}_rectified.mp4") for v in videos]
    if not spec.is_file():
        raise FileNotFoundError(f"{spec}: no such batch file or folder")
    jobs = []
    for row in _read_csv(spec, ("video",)):
        video = spec.parent / row["video"].strip()
        name = (row.get("output") or "").strip() or f"{_stem(video)}_rectified.mp4"
        jobs.append(Job({"video": video}, output_dir / name))
    return jobs


class BatchSettings(dict):
    """The settings that make an output what it is (their key is in every skip record), plus,
    outside them, which task of how many this process is: splitting a batch changes no output."""

    def __init__(
        self,
        settings: dict[str, Any],
        num_tasks: int | None = None,
        task_index: int | None = None,
    ) -> None:
        super().__init__(settings)
        self.num_tasks = num_tasks
        self.task_index = task_index


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_jobs(
    jobs: list[Job],
    run_one: Callable[[Job], dict[str, Any]],
    output_dir: str | os.PathLike,
    settings: dict[str, Any],
    progress: bool = True,
    log: Callable[[str], None] = print,
    num_tasks: int | None = None,
    task_index: int | None = None,
) -> dict[str, Any]:
    """Run every job of this task not done yet with these settings; returns this task's summary
    and writes the batch's ``inference_summary.json`` once every task has written its part.

    ``num_tasks`` / ``task_index``: these, else those of a :class:`BatchSettings`, else one task
    (:func:`~fadm_lightning.data.partition.resolve_task`).
    """
    from tqdm.auto import tqdm

    if num_tasks is None and task_index is None:
        num_tasks = getattr(settings, "num_tasks", None)
        task_index = getattr(settings, "task_index", None)
    task_index, num_tasks, _ = resolve_task(num_tasks, task_index)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several batch jobs write the same output file(s): {duplicates}")
    parts = TaskParts(output_dir / TASK_DIR)
    parts.clear(task_index, num_tasks)
    mine = [job for job in jobs if task_of(job.name, num_tasks) == task_index]
    if num_tasks > 1:
        log(f"task {task_index} of {num_tasks}: {len(mine)} of the {len(jobs)} jobs")
    key = settings_key(settings)
    records = output_dir / RECORD_DIR
    results = []
    for job in tqdm(mine, desc="batch", unit="job", disable=not progress):
        record_path = records / f"{job.name}.json"
        entry: dict[str, Any] = {
            "output": str(job.output),
            **{k: str(v) for k, v in job.inputs.items()},
        }
        try:
            done = json.loads(record_path.read_text()).get("settings") == key
        except (OSError, ValueError):
            done = False
        if done and job.output.is_file():
            results.append({**entry, "status": "already_done"})
            continue
        remove_stale_temporaries(job.output)  # of a run that was killed writing it
        try:
            report = run_one(job)
        except Exception as err:  # one broken input does not stop the batch
            log(f"failed: {job.name}: {err}")
            results.append({**entry, "status": "failed", "error": f"{type(err).__name__}: {err}"})
            continue
        record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = record_path.with_name(f".{record_path.name}.tmp")
        tmp.write_text(json.dumps({"settings": key, "status": "done", **entry}, indent=1))
        os.replace(tmp, record_path)
        results.append(
            {**entry, "status": "done", **{k: report[k] for k in ("frames",) if k in report}}
        )

    # this task's part; the task that completes the run writes the summary of every job
    run = {
        "settings": key,
        "num_tasks": num_tasks,
        "jobs": digest([job.name, *map(str, job.inputs.values())] for job in jobs),
    }
    parts.write(task_index, num_tasks, run, results)
    found, missing = parts.status(run, num_tasks)
    if not missing:
        position = {job.name: i for i, job in enumerate(jobs)}  # the batch's order
        every = sorted(
            (r for part in found for r in part["results"]),
            key=lambda r: position[Path(r["output"]).name],
        )
        write_json(output_dir / SUMMARY_FILE, _summary(len(jobs), every, settings))
        if num_tasks > 1:
            log(f"all {num_tasks} tasks done: {output_dir / SUMMARY_FILE}")
    else:
        waiting = ", ".join(map(str, missing[:20])) + (", …" if len(missing) > 20 else "")
        log(
            f"waiting for task_index {waiting}: the last task to finish writes "
            f"{output_dir / SUMMARY_FILE}"
        )
    summary = _summary(len(mine), results, settings)
    if num_tasks > 1:
        summary["task"] = {"index": task_index, "count": num_tasks, "merged": not missing}
    return summary


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Remove the hidden temporary files of ``output`` (``.<name>.<pid>.*tmp*``, as the video
    and image writers name them) whose process is gone: what a killed run leaves. Files of a
    process that still runs (another task writing the same folder) are kept."""
    removed = []
    prefix = f".{output.name}."
    for path in output.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split(".", 1)[0]
        if "tmp" not in path.name or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # a folder, or gone meanwhile
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _summary(num_jobs: int, results: list[dict[str, Any]], settings: dict) -> dict[str, Any]:
    return {
        "jobs": num_jobs,
        "done": sum(r["status"] == "done" for r in results),
        "already_done": sum(r["status"] == "already_done" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "settings": dict(settings),
        "results": results,
    }
