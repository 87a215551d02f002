"""Batch mode of the inference commands: many inputs, one loaded model, resumable.

Jobs come from a CSV file (``source,driving[,output]`` for animate, ``video[,output]`` for
rectify; relative paths are read from the CSV's folder) or from a folder (animate: every image
with every video in it; rectify: every video). Outputs go to ``output_dir``; a record per output
under ``output_dir/.fadm_inference/`` remembers the settings it was made with, so a re-run skips
what is done with the same settings and redoes the rest. A failing job does not stop the others:
it is listed in ``output_dir/inference_summary.json`` and the command exits non-zero.
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

from fadm_lightning.media.image import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".gif")
RECORD_DIR = ".fadm_inference"
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


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_jobs(
    jobs: list[Job],
    run_one: Callable[[Job], dict[str, Any]],
    output_dir: str | os.PathLike,
    settings: dict[str, Any],
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every job not done yet with these settings; returns (and writes) the summary."""
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several batch jobs write the same output file(s): {duplicates}")
    key = settings_key(settings)
    records = output_dir / RECORD_DIR
    results = []
    for job in tqdm(jobs, desc="batch", unit="job", disable=not progress):
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
    summary = {
        "jobs": len(jobs),
        "done": sum(r["status"] == "done" for r in results),
        "already_done": sum(r["status"] == "already_done" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "settings": settings,
        "results": results,
    }
    target = output_dir / SUMMARY_FILE
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, target)
    return summary
