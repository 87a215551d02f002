"""The comparison of a multirun, laid out like the paper's Table 3 (``report.md`` /
``report.csv``): :func:`gather` reads each evaluation job's ``results.json`` (one row per job, its
refined output, named after what varies between the jobs, with the paper's names for the AGCN
ablations: :data:`PAPER_ABLATIONS`), or, for a training multirun, each run's
``test_metrics.json`` as mean ± std over the seeds; :class:`ReportCallback` writes it at the end
of an evaluate multirun. Usage: :mod:`fadm_lightning.report`."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fadm_lightning.evaluation.systems import TRAINING_INFRASTRUCTURE
from fadm_lightning.evaluation.tables import format_value, results_table

log = logging.getLogger(__name__)

# AGCN switches of Table 3: override key → what the paper calls the variant without it
PAPER_ABLATIONS = {
    "model.agcn.use_appearance": "color",
    "model.agcn.use_motion_weighting": "motion",
}
# evaluation overrides that do not change what is measured
_EVAL_INFRASTRUCTURE = (
    "ckpt=",
    "extra_ckpts",
    "hydra.",
    "device",
    "batch_size",
    "num_workers",
    "num_threads",
    "report",
    "logger",
    "videos.",
    "paths.",
    "max_items",
)


def _is_false(value: str) -> bool:
    return value.strip().lower() in ("false", "0", "no", "off")


def _overrides(path: Path, skip: tuple[str, ...]) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for item in OmegaConf.load(path):
        text = str(item).lstrip("+~")
        if "=" not in text or text.startswith(skip):
            continue
        key, value = text.split("=", 1)
        # Hydra reads true/True/TRUE alike: show booleans one way (a sweep writes "True")
        if value.strip().lower() in ("true", "false"):
            value = value.strip().capitalize()
        out[key] = value
    return out


def job_variant(job_dir: Path, results: dict[str, Any]) -> dict[str, str]:
    """Training overrides of the job's checkpoint plus the job's own evaluation overrides."""
    variant: dict[str, str] = {}
    model = Path(str(results.get("settings", {}).get("model", "")))
    if model.suffix == ".ckpt":
        train_overrides = model.parent.parent / ".hydra" / "overrides.yaml"
        variant.update(_overrides(train_overrides, TRAINING_INFRASTRUCTURE))
    variant.update(_overrides(job_dir / ".hydra" / "overrides.yaml", _EVAL_INFRASTRUCTURE))
    return variant


def variant_name(variant: dict[str, str], varying: list[str]) -> str:
    """The paper's name for an AGCN ablation, else ``key=value`` of what varies."""
    paper_keys = [k for k in varying if k in PAPER_ABLATIONS]
    if paper_keys:
        removed = [PAPER_ABLATIONS[k] for k in paper_keys if _is_false(variant.get(k, "true"))]
        name = f"w/o {' and '.join(removed)} condition" if removed else "full model"
        rest = [f"{k}={variant.get(k, '')}" for k in varying if k not in PAPER_ABLATIONS]
        return name + (f" ({', '.join(rest)})" if rest else "")
    if varying:
        return ", ".join(f"{k}={variant.get(k, '')}" for k in varying)
    return "refined"


def find_jobs(multirun_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    jobs = []
    for path in sorted(multirun_dir.glob("**/results.json")):
        jobs.append((path.parent, json.loads(path.read_text())))

    def order(job):
        name = job[0].relative_to(multirun_dir).as_posix()
        return (0, int(name)) if name.isdigit() else (1, name)

    return sorted(jobs, key=order)


def _protocol_table(
    protocol: str, group: list[tuple[Path, dict[str, Any]]], multirun_dir: Path
) -> tuple[list[str], list[list[str]]]:
    """Markdown lines and CSV rows of the jobs of one protocol."""
    md_lines: list[str] = []
    csv_rows: list[list[str]] = []
    variants = [job_variant(d, r) for d, r in group]
    keys = sorted({k for v in variants for k in v})
    varying = [k for k in keys if len({v.get(k) for v in variants}) > 1]
    columns = group[0][1]["columns"]
    metric_keys = [c["key"] for c in columns]
    available = {c["key"]: c["available"] for c in columns}
    for _, results in group[1:]:
        for c in results["columns"]:
            available[c["key"]] = available.get(c["key"], False) and c["available"]

    def values(row: dict[str, Any]) -> list[str]:
        return [format_value(k, row["values"].get(k), available.get(k, False)) for k in metric_keys]

    def raw(row: dict[str, Any]) -> list[str]:
        return [
            "unavailable"
            if not available.get(k, False)
            else ("" if row["values"].get(k) is None else f"{row['values'][k]:.6g}")
            for k in metric_keys
        ]

    table: list[list[str]] = []
    csv_table: list[list[str]] = []
    coarse_rows = [next(r for r in res["rows"] if r["method"] == "coarse") for _, res in group]
    same_coarse = all(r["values"] == coarse_rows[0]["values"] for r in coarse_rows)

    def add(name: str, variant: dict[str, str], row: dict[str, Any]) -> None:
        head = [name, *(variant.get(k, "") for k in varying), str(row["frames"])]
        table.append([*head, *values(row)])
        csv_table.append([*head, *raw(row)])

    if same_coarse:
        add("coarse generator", {}, coarse_rows[0])
    for (_, results), variant, coarse in zip(group, variants, coarse_rows, strict=True):
        name = variant_name(variant, varying)
        if not same_coarse:
            add(f"coarse ({name})", variant, coarse)
        add(name, variant, next(r for r in results["rows"] if r["method"] == "refined"))

    headers = [
        "variant",
        *varying,
        "frames",
        *(
            f"{c['label']} {({True: '↑', False: '↓'}).get(c['higher_is_better'], '')}".strip()
            for c in columns
        ),
    ]
    md_lines += [f"# Ablation (paper Table 3) — {group[0][1]['title']}", ""]
    md_lines.append("| " + " | ".join(headers) + " |")
    md_lines.append("|" + "---|" * len(headers))
    md_lines += ["| " + " | ".join(row) + " |" for row in table]
    md_lines += ["", "Notes:"]
    md_lines += [
        f"- job {d.relative_to(multirun_dir).as_posix()}: {r['settings'].get('model')}"
        for d, r in group
    ]
    md_lines += [
        f"- {n}"
        for n in group[0][1]["notes"]
        if not n.startswith(("model:", "s/frame")) and "frames with a face" not in n
    ]
    md_lines.append(
        "- face metrics: per-job frame counts in each job's table.md; —: no frame scored"
    )
    md_lines.append("")
    csv_rows.append(["protocol", *headers[: -len(columns)], *(c["label"] for c in columns)])
    csv_rows += [[protocol, *row] for row in csv_table]
    return md_lines, csv_rows


TEST_METRICS_FILE = "test_metrics.json"


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _seed_table(jobs: list[Path], multirun_dir: Path) -> tuple[list[str], list[list[str]]]:
    """Markdown lines and CSV rows: training runs grouped by their overrides other than the seed,
    each metric as mean ± sample std over the runs of a group."""
    skip = (*TRAINING_INFRASTRUCTURE, "num_threads")
    runs = [
        (
            _overrides(d / ".hydra" / "overrides.yaml", skip),
            json.loads((d / TEST_METRICS_FILE).read_text()),
        )
        for d in jobs
    ]
    keys = sorted({k for v, _ in runs for k in v})
    varying = [k for k in keys if len({v.get(k) for v, _ in runs}) > 1]
    groups: dict[tuple, list[dict[str, float]]] = {}
    for variant, metrics in runs:
        groups.setdefault(tuple(variant.get(k, "") for k in varying), []).append(metrics)
    columns, _ = results_table(runs[0][1])
    headers = ["variant", "runs", *(c.header for c in columns)]
    md = ["# Ablation (paper Table 3) — mean ± std over seeds, test stage of each run", ""]
    md += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    csv_rows = [["variant", "runs", *(f"{c.key}_{s}" for c in columns for s in ("mean", "std"))]]

    def add(name: str, group: list[dict[str, float]], kind: str) -> None:
        cells, raw = [], []
        for c in columns:
            values = [m[f"test/{c.key}_{kind}"] for m in group if f"test/{c.key}_{kind}" in m]
            if not values:
                cells.append("—")
                raw += ["", ""]
                continue
            mean, std = _mean_std(values)
            cells.append(f"{mean:{c.fmt}} ± {std:{c.fmt}}")
            raw += [f"{mean:.6g}", f"{std:.6g}"]
        md.append(f"| {name} | {len(group)} | " + " | ".join(cells) + " |")
        csv_rows.append([name, str(len(group)), *raw])

    if any(k.endswith("_copy") for _, m in runs for k in m):  # runs tested since it was logged
        add("copy source", [m for _, m in runs], "copy")
    add("coarse generator", [m for _, m in runs], "coarse")
    for values, group in groups.items():
        add(variant_name(dict(zip(varying, values, strict=True)), varying), group, "refined")
    md += ["", "Jobs:"]
    md += [f"- {d.relative_to(multirun_dir).as_posix()}" for d in jobs]
    md.append("")
    return md, csv_rows


def gather(multirun_dir: str | Path, output: str | Path | None = None) -> dict[str, Any]:
    """Write ``report.md`` / ``report.csv`` for the evaluation jobs under ``multirun_dir``, or
    for the training runs there (mean ± std over seeds) when it holds no evaluation."""
    multirun_dir = Path(multirun_dir)
    jobs = find_jobs(multirun_dir)
    train_jobs = sorted(p.parent for p in multirun_dir.glob(f"**/{TEST_METRICS_FILE}"))
    if not jobs and not train_jobs:
        raise FileNotFoundError(
            f"no evaluation results (*/results.json) nor training test metrics "
            f"(*/{TEST_METRICS_FILE}) under {multirun_dir}; run "
            "`python -m fadm_lightning.evaluate -m ckpt=…,…` or a training multirun first"
        )
    out_dir = Path(output) if output else multirun_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    md_lines: list[str] = []
    csv_rows: list[list[str]] = []
    by_protocol: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for job in jobs:
        by_protocol.setdefault(job[1]["protocol"], []).append(job)

    for protocol, group in by_protocol.items():
        lines, rows = _protocol_table(protocol, group, multirun_dir)
        md_lines += lines
        csv_rows += rows
    if not jobs:
        md_lines, csv_rows = _seed_table(train_jobs, multirun_dir)

    md = out_dir / "report.md"
    md.write_text("\n".join(md_lines))
    path_csv = out_dir / "report.csv"
    with path_csv.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(csv_rows)
    return {"markdown": md, "csv": path_csv, "jobs": [str(d) for d, _ in jobs]}


class ReportCallback(Callback):
    """Hydra callback: at the end of an evaluate multirun, gather its jobs (``report=true``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("report", True):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.glob("**/results.json")):
            log.warning("no evaluation results under %s: no report written", sweep_dir)
            return
        paths = gather(sweep_dir)
        print(paths["markdown"].read_text(), flush=True)
        print(f"Report: {paths['markdown']} and {paths['csv']}", flush=True)
