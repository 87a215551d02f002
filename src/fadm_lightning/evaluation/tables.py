"""Every table of numbers, with one number format (:data:`DIGITS`: decimals per metric): the
evaluation's ``table.md`` / ``table.csv`` (:func:`table_lines`, :func:`write_tables`), the
report (:mod:`fadm_lightning.evaluation.report`) and the end-of-run results table of training —
coarse vs refined per metric (FADM), or the FOMM reconstruction against its baselines — printed as
markdown by the train command (:func:`format_table`), logged as a ``wandb.Table``
(:mod:`fadm_lightning.callbacks.wandb_report`) and gathered over seeds by the report
(:func:`results_table`)."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fadm_lightning.evaluation.protocols import PROTOCOLS
from fadm_lightning.metrics.reconstruction import EVAL_METRICS
from fadm_lightning.metrics.suite import MetricSuite

# decimals of each metric in every table printed (any other metric: 4)
DIGITS = {"l1": 4, "lpips": 4, "psnr": 2, "ssim": 4, "akd": 3, "aed": 4, "csim": 4, "fid": 2}


def number_format(key: str) -> str:
    """The format spec of metric ``key`` in every table: ``.4f``, ``.2f`` (PSNR, FID), ``.3f``."""
    return f".{DIGITS.get(key, 4)}f"


def format_value(key: str, value: float | None, available: bool) -> str:
    if not available:
        return "unavailable"
    if value is None:
        return "—"
    return f"{value:{number_format(key)}}"


@dataclass(frozen=True)
class TableColumn:
    """A column of the results table: metric ``key`` as logged, its label, arrow and format."""

    key: str
    label: str
    arrow: str = ""  # "↑" higher is better, "↓" lower is better, "" not known

    @property
    def header(self) -> str:
        return f"{self.label} {self.arrow}".strip()

    @property
    def fmt(self) -> str:
        return number_format(self.key)


# how known metrics are shown; any other ``<stage>/<metric>_{coarse,refined}`` gets a column too
# (label = the metric name in capitals), after these, in the order it was logged
KNOWN_COLUMNS = {
    c.key: c
    for c in (
        TableColumn("l1", "L1", "↓"),
        TableColumn("psnr", "PSNR", "↑"),
        TableColumn("ssim", "SSIM", "↑"),
        TableColumn("lpips", "LPIPS", "↓"),
        # label = metrics.perceptual.STLPIPS.label; tdiff, flicker: metrics.temporal (per clip)
        TableColumn("stlpips", "ST-LPIPS[alex]", "↓"),
        TableColumn("tdiff", "tdiff", "↓"),
        TableColumn("flicker", "flicker", ""),  # signed: 0 = as much as the truth
    )
}
KINDS = ("copy", "coarse", "refined")
KIND_LABELS = {"copy": "copy source"}  # the trivial baseline row (FADMLitModule.test_step)


def results_table(
    metrics: Mapping[str, float], stage: str = "test"
) -> tuple[list[TableColumn], list[tuple[str, list[float | None]]]]:
    """The end-of-run results table as data: columns and ``(row label, values)`` rows.

    FADM: rows ``coarse`` and ``refined``, one column per metric logged as
    ``<stage>/<metric>_coarse`` / ``<stage>/<metric>_refined`` (L1, PSNR, SSIM first); a row
    without any value is left out, a missing cell is None. experiment=fomm_pretrain (a
    ``<stage>/l1`` metric): the reconstruction L1 against its baselines, one row each.
    Shared by the printed markdown table (:func:`format_table`) and the W&B table
    (:class:`fadm_lightning.callbacks.wandb_report.WandbTestTableCallback`).
    """
    if f"{stage}/l1" in metrics:
        column = TableColumn("l1", "L1", "↓")
        rows = [
            (label, [float(metrics[f"{stage}/{name}"])])
            for name, label in EVAL_METRICS.items()
            if f"{stage}/{name}" in metrics
        ]
        return [column], rows
    pattern = re.compile(rf"^{re.escape(stage)}/(?P<name>.+)_(?P<kind>{'|'.join(KINDS)})$")
    names = [m["name"] for k in metrics if (m := pattern.match(k))]
    names = [n for n in KNOWN_COLUMNS if n in names] + [
        n for n in dict.fromkeys(names) if n not in KNOWN_COLUMNS
    ] or ["l1", "psnr", "ssim"]  # nothing logged yet: the usual (empty) table
    columns = [KNOWN_COLUMNS.get(n, TableColumn(n, n.upper())) for n in names]
    rows = []
    for kind in KINDS:
        values = [metrics.get(f"{stage}/{c.key}_{kind}") for c in columns]
        if any(v is not None for v in values):
            rows.append(
                (KIND_LABELS.get(kind, kind), [None if v is None else float(v) for v in values])
            )
    return columns, rows


def format_table(metrics: Mapping[str, float], stage: str = "test") -> str:
    """Markdown table of :func:`results_table`: coarse vs refined L1/PSNR/SSIM (and any other
    metric logged that way) from logged metrics (FADM), or of the reconstruction L1 against its
    baselines (experiment=fomm_pretrain)."""
    columns, rows = results_table(metrics, stage)
    lines = [
        "| frames | " + " | ".join(c.header for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, values in rows:
        cells = [
            "–" if v is None else format(v, c.fmt) for c, v in zip(columns, values, strict=True)
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_lines(suite: MetricSuite, table: list[dict[str, Any]]) -> tuple[list[str], list[list]]:
    headers = ["method", "frames", *(suite.header(k) for k in suite.names)]
    body = [
        [
            e["method"],
            str(e["frames"]),
            *(format_value(k, e["values"][k], suite.available(k)) for k in suite.names),
        ]
        for e in table
    ]
    return headers, body


def write_tables(
    out_dir: Path,
    cfg: DictConfig,
    suite: MetricSuite,
    table: list[dict[str, Any]],
    context: list[str],
) -> dict[str, Path]:
    headers, body = table_lines(suite, table)
    lines = [f"# {PROTOCOLS[cfg.protocol]}", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    lines += ["| " + " | ".join(row) + " |" for row in body]
    notes = list(context) + suite.notes()
    for key in suite.names:
        if suite.available(key) and key in ("akd", "aed", "csim"):
            counts = ", ".join(
                f"{e['method']} {e['counts'].get(key, 0)}/{e['frames']}" for e in table
            )
            notes.append(
                f"{suite.label(key)}: frames with a face in the output and its reference: {counts}"
            )
    if any(e["values"].get(k) is None and suite.available(k) for e in table for k in suite.names):
        notes.append("—: no frame could be scored (e.g. no face detected in any frame)")
    lines += ["", "Notes:", *(f"- {n}" for n in notes), ""]
    md = out_dir / "table.md"
    md.write_text("\n".join(lines))
    path_csv = out_dir / "table.csv"
    with path_csv.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*headers[:2], *(suite.label(k) for k in suite.names), "sec_per_frame"])
        for entry, row in zip(table, body, strict=True):
            cells = [
                "unavailable"
                if not suite.available(k)
                else ("" if entry["values"][k] is None else f"{entry['values'][k]:.6g}")
                for k in suite.names
            ]
            spf = entry["sec_per_frame"]
            writer.writerow([*row[:2], *cells, "" if spf is None else f"{spf:.4g}"])
    return {"markdown": md, "csv": path_csv, "notes": notes}
