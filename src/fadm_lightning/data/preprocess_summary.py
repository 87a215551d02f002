"""The summary of a preprocessing run (``preprocess_summary.json``) and its printed form: what was
kept, dropped and why, per input and in total."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fadm_lightning.faces.tubes import DROP_REASONS

SUMMARY_FILE = "preprocess_summary.json"
IMAGE_DIR = "images"


def record_outputs(record: dict[str, Any]) -> list[str]:
    """The files an input's record says it produced (paths relative to the output folder)."""
    if record.get("kind") == "image":
        return [record["output"]] if record.get("output") else []
    split = record.get("split", "train")
    return [f"{split}/{t['clip']}" for t in record.get("tubes", []) if t.get("clip")]


def summarize(
    records: list[dict[str, Any]],
    input_dir: Path,
    output_dir: Path,
    split: str,
    settings: Any,  # preprocessing.CropSettings (a dataclass)
) -> dict[str, Any]:
    """Counts of kept (of which padded) and dropped tubes (with reasons), broken and converted
    inputs, outputs."""
    summary: dict[str, Any] = {
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "split": split,
        "settings": asdict(settings),
    }
    for kind in ("video", "image"):
        mine = [r for r in records if r["kind"] == kind]
        summary[f"{kind}s"] = {
            "found": len(mine),
            "processed": sum(r["status"] == "done" and not r.get("already_done") for r in mine),
            "already_done": sum(bool(r.get("already_done")) for r in mine),
            "broken": sum(r["status"] == "broken" for r in mine),
        }
    tubes = [t for r in records if r["kind"] == "video" for t in r.get("tubes", [])]
    dropped = Counter(t["reason"] for t in tubes if t["reason"])
    summary["tubes"] = {
        "kept": sum(t["reason"] is None for t in tubes),
        "padded": sum(t["reason"] is None and bool(t.get("padded")) for t in tubes),
        "dropped": {reason: dropped.get(reason, 0) for reason in DROP_REASONS},
    }
    faces = [r for r in records if r["kind"] == "image" and r["status"] == "done"]
    image_dropped = Counter(r["reason"] for r in faces if r.get("reason"))
    summary["portraits"] = {
        "kept": sum(r.get("reason") is None for r in faces),
        "padded": sum(r.get("reason") is None and bool(r.get("padded")) for r in faces),
        "dropped": {
            reason: image_dropped.get(reason, 0) for reason in ("no_face", *DROP_REASONS[1:])
        },
    }
    summary["broken"] = [
        {"file": r["file"], "error": r["error"]} for r in records if r["status"] == "broken"
    ]
    summary["truncated"] = [
        {"file": r["file"], "warning": r["warning"]} for r in records if r.get("warning")
    ]
    summary["converted"] = [
        {"file": r["file"], "conversion": r["note"]} for r in records if r.get("note")
    ]
    done = [r for r in records if r["status"] == "done"]
    summary["clips"] = [out for r in done if r["kind"] == "video" for out in record_outputs(r)]
    summary["portrait_files"] = [
        out for r in done if r["kind"] == "image" for out in record_outputs(r)
    ]
    summary["files"] = records
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    v, i, t, p = summary["videos"], summary["images"], summary["tubes"], summary["portraits"]

    def reasons(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in counts.items())

    lines = [
        f"Preprocessed {summary['input_dir']} → {summary['output_dir']} (split {summary['split']})",
        f"  videos: {v['found']} found, {v['processed']} processed, {v['already_done']} already "
        f"done, {v['broken']} broken",
        f"  tubes:  {t['kept']} kept ({t['padded']} padded), {sum(t['dropped'].values())} "
        f"dropped ({reasons(t['dropped'])})",
        f"  images: {i['found']} found, {i['processed']} processed, {i['already_done']} already "
        f"done, {i['broken']} broken; portraits {p['kept']} kept ({p['padded']} padded), "
        f"{sum(p['dropped'].values())} dropped ({reasons(p['dropped'])})",
    ]
    for entry in summary["converted"]:
        lines.append(f"  converted: {entry['file']}: {entry['conversion']}")
    for entry in summary["truncated"]:
        lines.append(f"  truncated: {entry['file']}: {entry['warning']}")
    for entry in summary["broken"]:
        lines.append(f"  broken: {entry['file']}: {entry['error']}")
    lines.append(
        f"  written: {len(summary['clips'])} clip(s) in {summary['split']}/, "
        f"{len(summary['portrait_files'])} portrait(s) in {IMAGE_DIR}/"
    )
    merged = Path(summary["output_dir"]) / SUMMARY_FILE
    task = summary.get("task")
    if task is None:
        lines.append(f"Summary: {merged}")
        return "\n".join(lines)
    lines[0] += (
        f": task {task['index']} of {task['count']} (below: its share of the {task['inputs']} "
        "inputs)"
    )
    lines.append(f"Task summary: {task['part']}")
    if task["merged"]:
        lines.append(f"All {task['count']} tasks done; summary of the whole collection: {merged}")
    else:
        waiting = ", ".join(map(str, task["waiting_for"][:20]))
        more = ", …" if len(task["waiting_for"]) > 20 else ""
        lines.append(
            f"Waiting for task_index {waiting}{more}: the last task to finish writes {merged} "
            f"(or: python -m fadm_lightning.preprocess output_dir={summary['output_dir']} "
            "merge=true)"
        )
    return "\n".join(lines)
