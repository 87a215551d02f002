"""The quality table of a distilled student against its teacher, on the same clips.

    python -m fadm_lightning.benchmarks.distill teacher=TEACHER.ckpt student=STUDENT.ckpt \
        [split=val|test] [teacher_samplers=[100:1:1,25:0:1,20:0:0.1:clip,own]] \
        [student_samplers=[1:0:1:clip:nonoise,2:0:1:clip:nonoise,4:0:1:clip:nonoise]] \
        [max_clips=N] [threads=N] [markdown=FILE] [json=FILE]

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/distill.yaml``.

Rows: the coarse frames, the teacher with each of its settings (default: the official sampler,
100 steps η = 1; 25 deterministic steps; its own validation sampler) and the student with each
of its settings (1, 2 and 4 deterministic calls from the coarse frame, no noise). Columns: L1,
PSNR, SSIM against the ground truth, the temporal figures tdiff and flicker per clip, denoiser
calls per frame and CPU seconds per frame of the refinement (same-identity reconstruction on
whole clips of the teacher's data config: source = first frame, driving = every frame; see
:mod:`fadm_lightning.benchmarks.sampling`, whose rows these are).

The last lines compare the student's own sampler (the one stored in its checkpoint) with the
teacher's own sampler: ΔPSNR, relative L1, the gain over the coarse frames and the flicker
difference, and whether the issue's targets hold (within 0.3 dB and 5 % L1 of the teacher,
better than the coarse frames, flicker no higher than the teacher's). Choose the student's
settings and checkpoint with ``split=val``; report ``split=test`` once.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from fadm_lightning.benchmarks.sampling import (
    REFERENCE_ROWS,
    SPLIT_CHOICES,
    evaluate,
    setting_name,
)
from fadm_lightning.config import hydra_main
from fadm_lightning.sampler import SamplerConfig

TEACHER_SETTINGS = ["100:1:1", "25:0:1", "own"]
STUDENT_SETTINGS = ["1:0:1:clip:nonoise", "2:0:1:clip:nonoise", "4:0:1:clip:nonoise"]


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a training run directory: its best checkpoint by the validation
    metric (``checkpoints/epoch_*.ckpt``, the ``save_top_k=1`` file), else ``last.ckpt``."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    best = sorted((folder / "checkpoints").glob("epoch_*.ckpt"))
    if len(best) == 1:
        return str(best[0])
    last = folder / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"{folder}: no checkpoints/epoch_*.ckpt or checkpoints/last.ckpt")
    return str(last)


def own_setting(ckpt: str) -> SamplerConfig:
    """The validation sampler stored with a checkpoint (its own), as a benchmark setting."""
    from fadm_lightning.checkpoints import read_run_config, validation_sampler

    return validation_sampler(read_run_config(ckpt)["model"])


def _settings(texts: list[str], ckpt: str) -> tuple[list[SamplerConfig], SamplerConfig]:
    own = own_setting(ckpt)
    out = [own if t == "own" else SamplerConfig.parse(t) for t in texts]
    if own not in out:
        out.append(own)
    return out, own


def compare(
    teacher: str,
    student: str,
    teacher_settings: list[str] = TEACHER_SETTINGS,
    student_settings: list[str] = STUDENT_SETTINGS,
    split: str = "val",
    max_clips: int | None = None,
) -> dict:
    """``{"rows": [...], "summary": {...}}`` for the two checkpoints on the clips of ``split``
    (each a checkpoint file or a run directory, see :func:`resolve_checkpoint`)."""
    teacher, student = resolve_checkpoint(teacher), resolve_checkpoint(student)
    t_settings, t_own = _settings(teacher_settings, teacher)
    s_settings, s_own = _settings(student_settings, student)
    rows = []
    for model, ckpt, settings, own in (
        ("teacher", teacher, t_settings, t_own),
        ("student", student, s_settings, s_own),
    ):
        for row in evaluate(ckpt, settings, max_clips=max_clips, split=split):
            if row["frames"] in REFERENCE_ROWS:  # coarse frames and baselines: the same for both
                if model == "teacher":
                    rows.append({"model": row["frames"], "sampler": "—", **row})
                continue
            sampler = row["frames"].removeprefix("refined (").removesuffix(")")
            row["own"] = row["frames"] == setting_name(own)
            rows.append({"model": model, "sampler": sampler, **row})
    by = {(r["model"], r.get("own", False)): r for r in rows}
    coarse, t_best, s_best = by[("coarse", False)], by[("teacher", True)], by[("student", True)]
    summary = {
        "delta_psnr_db": s_best["psnr"] - t_best["psnr"],
        "relative_l1": s_best["l1"] / t_best["l1"] - 1,
        "gain_over_coarse_db": s_best["psnr"] - coarse["psnr"],
        "flicker_student": s_best["flicker"],
        "flicker_teacher": t_best["flicker"],
        "tdiff_student": s_best["tdiff"],
        "tdiff_teacher": t_best["tdiff"],
        "calls_student": s_best["calls"],
        "calls_teacher": t_best["calls"],
    }
    summary["targets"] = {
        "within_0.3_db": summary["delta_psnr_db"] >= -0.3,
        "within_5_percent_l1": summary["relative_l1"] <= 0.05,
        "beats_coarse": s_best["psnr"] > coarse["psnr"] and s_best["l1"] < coarse["l1"],
        "flicker_not_higher": s_best["flicker"] <= t_best["flicker"],
    }
    return {
        "split": split,
        "teacher": teacher,
        "student": student,
        "rows": rows,
        "summary": summary,
    }


def markdown(result: dict) -> str:
    def fmt(value, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        f"Split: {result['split']}. Teacher: {result['teacher']}. Student: {result['student']}.",
        "",
        "| model | sampler | denoiser calls / frame | L1 ↓ | PSNR ↑ | SSIM ↑ | tdiff ↓ | flicker "
        "| CPU s / frame |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        own = " (its own)" if r.get("own") else ""
        lines.append(
            f"| {r['model']} | {r['sampler']}{own} | {fmt(r.get('calls'), 'd')} | {r['l1']:.4f} "
            f"| {r['psnr']:.2f} | {r['ssim']:.4f} | {fmt(r.get('tdiff'), '.4f')} "
            f"| {fmt(r.get('flicker'), '.4f')} | {fmt(r.get('cpu_s_per_frame'), '.3f')} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"student (its own sampler, {s['calls_student']} call(s)) vs teacher (its own sampler, "
        f"{s['calls_teacher']} call(s)): ΔPSNR {s['delta_psnr_db']:+.2f} dB, L1 "
        f"{100 * s['relative_l1']:+.1f} %, {s['gain_over_coarse_db']:+.2f} dB over the coarse "
        f"frames, flicker {s['flicker_student']:.4f} vs {s['flicker_teacher']:.4f}, tdiff "
        f"{s['tdiff_student']:.4f} vs {s['tdiff_teacher']:.4f}",
        "targets: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["targets"].items())
        + f" (flicker student − teacher {s['flicker_student'] - s['flicker_teacher']:+.1e})",
    ]
    return "\n".join(lines)


@hydra_main("benchmark/distill", threads="threads")
def main(cfg: DictConfig) -> dict:
    missing = [k for k in ("teacher", "student") if not cfg[k]]
    if missing:
        raise SystemExit(f"benchmarks.distill: give {' and '.join(f'{k}=…' for k in missing)}")
    if cfg.split not in SPLIT_CHOICES:
        raise SystemExit(f"benchmarks.distill: split={cfg.split}: val or test")
    teacher_samplers = [str(x) for x in cfg.teacher_samplers]
    student_samplers = [str(x) for x in cfg.student_samplers]
    for text in [*teacher_samplers, *student_samplers]:
        if text != "own":
            SamplerConfig.parse(text)  # a wrong setting fails before any work
    result = compare(
        str(cfg.teacher),
        str(cfg.student),
        teacher_samplers,
        student_samplers,
        str(cfg.split),
        cfg.max_clips,
    )
    text = markdown(result)
    print(text)
    for path, content in ((cfg.markdown, text + "\n"), (cfg.json, json.dumps(result, indent=1))):
        if path:
            path = Path(str(path))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return result


if __name__ == "__main__":
    main()
