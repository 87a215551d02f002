"""The end-of-run results table: coarse vs refined per metric (FADM), or the FOMM reconstruction
against its baselines; printed as markdown by the train command, logged as a ``wandb.Table``
(:mod:`fadm_lightning.callbacks.wandb_report`) and gathered over seeds by
:mod:`fadm_lightning.report`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fadm_lightning.fomm_lit_module import EVAL_METRICS


@dataclass(frozen=True)
class TableColumn:
    """A column of the results table: metric ``key`` as logged, its label, arrow and format."""

    key: str
    label: str
    arrow: str = ""  # "↑" higher is better, "↓" lower is better, "" not known
    fmt: str = ".4f"

    @property
    def header(self) -> str:
        return f"{self.label} {self.arrow}".strip()


# how known metrics are shown; any other ``<stage>/<metric>_{coarse,refined}`` gets a column too
# (label = the metric name in capitals), after these, in the order it was logged
KNOWN_COLUMNS = {
    c.key: c
    for c in (
        TableColumn("l1", "L1", "↓", ".4f"),
        TableColumn("psnr", "PSNR", "↑", ".2f"),
        TableColumn("ssim", "SSIM", "↑", ".4f"),
        TableColumn("lpips", "LPIPS", "↓", ".4f"),
        # label = metrics.perceptual.STLPIPS.label; tdiff, flicker: metrics.temporal (per clip)
        TableColumn("stlpips", "ST-LPIPS[alex]", "↓", ".4f"),
        TableColumn("tdiff", "tdiff", "↓", ".4f"),
        TableColumn("flicker", "flicker", "", ".4f"),  # signed: 0 = as much as the truth
    )
}
KINDS = ("coarse", "refined")


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
        column = TableColumn("l1", "L1", "↓", ".4f")
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
            rows.append((kind, [None if v is None else float(v) for v in values]))
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
