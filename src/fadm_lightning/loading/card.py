"""The model card (``README.md``) of a pretrained folder (:mod:`fadm_lightning.loading.folder`):
what the model is, its parts, its sampler, how to run it, its metrics and the citation."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from fadm_lightning.loading.errors import PretrainedFolderError
from fadm_lightning.sampler import OFFICIAL_SAMPLER, from_legacy

CITATION = """@inproceedings{zeng2023fadm,
  title     = {Face Animation with an Attribute-Guided Diffusion Model},
  author    = {Zeng, Bohan and Liu, Xuhui and Gao, Sicheng and Liu, Boyu and Li, Hong and
               Liu, Jianzhuang and Zhang, Baochang},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
               Recognition (CVPR) Workshops},
  year      = {2023},
  eprint    = {2304.03199},
  archivePrefix = {arXiv}
}"""


def read_results(results: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """The ``results.json`` of ``python -m fadm_lightning.evaluate`` (a path or its contents),
    checked for the table the card shows."""
    where = "model_card_metrics"
    if not isinstance(results, Mapping):
        where = str(results)
        path = Path(results)
        if not path.is_file():
            raise PretrainedFolderError(
                f"{path}: no such results file (expected <evaluate run dir>/results.json)"
            )
        try:
            results = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PretrainedFolderError(f"{path}: not readable JSON ({err})") from None
    if not (
        isinstance(results, Mapping)
        and isinstance(results.get("columns"), list)
        and isinstance(results.get("rows"), list)
    ):
        raise PretrainedFolderError(
            f"{where}: not the results.json of `python -m fadm_lightning.evaluate` (it has no "
            "'columns' and 'rows' lists)"
        )
    return dict(results)


def _count(module: Any) -> int | None:
    """Parameters of a network (None for a scheduler)."""
    return sum(p.numel() for p in module.parameters()) if isinstance(module, nn.Module) else None


def part_rows(
    pipe: Any, folder: Path, index: dict[str, Any], parts: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per part of a written folder: class, parameters, files."""
    rows = []
    for name in parts:
        entry = index[name]
        files = sorted(p.relative_to(folder).as_posix() for p in (folder / name).glob("*"))
        rows.append(
            {
                "part": name,
                "class": f"{entry[0]}.{entry[1]}" if isinstance(entry, list) else None,
                "same_as": entry if isinstance(entry, str) else None,
                "parameters": _count(getattr(pipe, name)),
                "files": files,
            }
        )
    return rows


def _format_value(value: Any) -> str:
    if value is None:
        return "unavailable"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def metrics_table(results: Mapping[str, Any]) -> list[str]:
    """The metrics of an evaluate ``results.json`` as Markdown lines (one row per method)."""
    columns = [c for c in results["columns"] if isinstance(c, Mapping) and "key" in c]
    heads = []
    for column in columns:
        arrow = {True: " ↑", False: " ↓"}.get(column.get("higher_is_better"), "")
        heads.append(f"{column.get('label', column['key'])}{arrow}")
    lines = [
        "| method | frames | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for row in results["rows"]:
        values = row.get("values", {}) if isinstance(row, Mapping) else {}
        cells = [_format_value(values.get(c["key"])) for c in columns]
        lines.append(
            f"| {row.get('method')} | {row.get('frames', '')} | " + " | ".join(cells) + " |"
        )
    notes = [c for c in columns if not c.get("available", True) and c.get("reason")]
    for column in notes:
        lines.append(f"\n{column.get('label', column['key'])}: unavailable ({column['reason']}).")
    return lines


def _describe_sampler(sampler: Mapping[str, Any]) -> str:
    steps = f"{sampler['steps']} DDIM step{'s' if sampler['steps'] != 1 else ''}"
    text = f"{steps}, η = {sampler['eta']:g}, strength {sampler['strength']:g}"
    text += ", x̂₀ clipped to [0, 1]" if sampler.get("clip_sample") else ""
    if sampler.get("start_noise") is False:
        text += ", started from the coarse frame without noise"
    return text


def _sampler_overrides(sampler: Mapping[str, Any]) -> str:
    """The ``sampler.*`` overrides that spell ``sampler`` out on a command line."""
    return (
        f"sampler.steps={sampler['steps']} sampler.eta={sampler['eta']:g} "
        f"sampler.strength={sampler['strength']:g} "
        f"sampler.clip_sample={str(bool(sampler.get('clip_sample'))).lower()} "
        f"sampler.start_noise={str(bool(sampler.get('start_noise', True))).lower()}"
    )


def model_card(
    index: Mapping[str, Any],
    parts: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any] | None,
    name: str,
    folder: str = "FOLDER",
) -> str:
    """The folder's README.md: what it is, its parts, its sampler, how to run it (``folder``:
    the folder's name in the commands), its metrics and the citation of the paper."""
    size = index["image_size"]
    # the model's own sampler (``sampler``; ``default_sampler`` with old names in older folders)
    stored = index.get("sampler") or index.get("default_sampler") or {}
    sampler = {**OFFICIAL_SAMPLER, **from_legacy(stored)}
    source = index.get("source") or {}
    run = index.get("run_config") or {}
    coarse_class = index["coarse"][1] if isinstance(index["coarse"], list) else "?"
    attributes_class = index["attributes"][1] if isinstance(index["attributes"], list) else "?"
    official = "official_release" in source
    if official:
        files = ", ".join(f"`{Path(p).name}`" for p in source["official_release"].values())
        origin = (
            f"The official FADM release ({files}) converted with "
            "`python -m fadm_lightning.convert_release`."
        )
        sampler_origin = "the official sampler"
    elif "checkpoint" in source:
        step = source.get("global_step")
        origin = (
            f"Exported from the training checkpoint `{source['checkpoint']}`"
            + (f" (step {step}" if step is not None else " (")
            + (", EMA weights)" if source.get("ema") else ", no EMA: the trained weights)")
            + " with `python -m fadm_lightning.export`."
        )
        sampler_origin = "the sampler it was validated with during training"
    else:
        origin = "Written by `FADMPipeline.save_pretrained`."
        sampler_origin = "its default sampler"
    lines = [
        "---",
        "library_name: fadm_lightning",
        "pipeline_tag: image-to-video",
        "tags: [face-animation, face-reenactment, diffusion, fadm]",
        "---",
        "",
        f"# {name}",
        "",
        "FADM — *Face Animation with an Attribute-Guided Diffusion Model* (Zeng et al., CVPR "
        f"Workshops 2023): a frozen coarse generator ({coarse_class}) animates a source portrait "
        "with a driving frame, and a diffusion model conditioned by the Attribute-Guided "
        "Conditioning Network (AGCN) on the attribute difference of source and driving "
        f"({attributes_class}) refines the coarse frame. {origin}",
        "",
        f"* frames: {size}×{size} (inputs are cropped and resized to it)",
        f"* attr_d from: the {index['attributes_from']} frame"
        + (" (the official demo)" if index["attributes_from"] == "coarse" else " (paper, eq. 9)"),
        f"* the chain diffuses: {'the residual d − g (output g + r̂)' if index['target'] == 'residual' else 'the frame'}"
        + ("; the denoiser also sees g at full resolution" if index["coarse_input"] else "")
        + (
            f"; and {', '.join(index['guide_inputs'])} (guide_inputs)"
            if index.get("guide_inputs")
            else ""
        ),
    ]
    if index.get("random_weight_parts"):
        lines.append(
            f"* **{', '.join(index['random_weight_parts'])}: random weights** (built with "
            "allow_random_weights_for_tests): for tests only, the outputs are meaningless"
        )
    lines += [
        "",
        "## Parts",
        "",
        "| part | class | parameters | files |",
        "|---|---|---|---|",
    ]
    for row in parts:
        kind = f"`{row['class']}`" if row["class"] else f"the {row['same_as']} (one module)"
        count = f"{row['parameters']:,}" if row["class"] and row["parameters"] is not None else "—"
        files = ", ".join(f"`{f}`" for f in row["files"]) or "—"
        lines.append(f"| {row['part']} | {kind} | {count} | {files} |")
    lines += [
        "",
        "The frozen coarse generator and attribute extractor are in the folder too (a part "
        "without weights, such as a synthetic or dlib-based one, stores only its config). "
        "Weights are safetensors; `model_index.json` lists the parts, the pipeline's options"
        + (", the default sampler and the training run's data and model configs." if run else "")
        + ("" if run else " and the default sampler."),
        "",
        "## Default sampler",
        "",
        f"{_describe_sampler(sampler)} ({sampler_origin}). `animate` and `rectify` use it when "
        "`sampler.*` is left unset; the evaluate command below sets it explicitly.",
        "",
        "## Use",
        "",
        "With `fadm_lightning` installed:",
        "",
        "```bash",
        f"python -m fadm_lightning.animate ckpt={folder} source=portrait.png driving=video.mp4 "
        "output=animated.mp4",
        f"python -m fadm_lightning.rectify ckpt={folder} video=animated.mp4 output=rectified.mp4",
        f"python -m fadm_lightning.evaluate ckpt={folder}"
        + ("" if "data" in run else " data=voxceleb paths.data_dir=/data"),
        "```",
        "",
        "Every command samples with the model's own sampler; `sampler=official` selects the "
        f"official one, and `{_sampler_overrides(sampler)}` spell out this one.",
        "",
        "```python",
        "from fadm_lightning.pipeline import FADMPipeline",
        "",
        f'pipe = FADMPipeline.from_pretrained("{folder}", device="cuda")',
        "out = pipe(source, driving)  # pipe.sampler: its own; sampler=SamplerConfig(…) to change",
        "out.coarse, out.refined  # B×3×H×W in [0, 1]",
        "```",
    ]
    if "synthetic" in f"{coarse_class}{attributes_class}".lower():
        lines += [
            "",
            "Its synthetic parts read the synthetic data's ground-truth annotations: `animate` "
            "and `rectify` refuse it on real videos; `evaluate` runs it on its synthetic data.",
        ]
    lines += ["", "## Evaluation", ""]
    if metrics:
        settings = metrics.get("settings") or {}
        lines += [f"{metrics.get('title', metrics.get('protocol', ''))}:", ""]
        lines += metrics_table(metrics)
        measured = []
        if isinstance(settings.get("data"), Mapping):
            measured.append(f"data `{settings['data'].get('_target_', '?')}`")
        if isinstance(settings.get("sampler"), Mapping):
            s = from_legacy(settings["sampler"])  # results of older runs: old names
            measured.append(
                f"sampler {s.get('steps')} steps, η = {s.get('eta')}, strength "
                f"{s.get('strength')}, seed {s.get('seed')}"
                if s.get("steps") is not None
                else f"the model's own sampler, seed {s.get('seed')}"
            )
        lines += [
            "",
            "Measured by `python -m fadm_lightning.evaluate`"
            + (f" ({'; '.join(measured)})" if measured else "")
            + ".",
        ]
    else:
        lines.append(
            "Not evaluated yet: `python -m fadm_lightning.export … results=<evaluate run "
            "dir>/results.json` fills this section."
        )
    if run:
        data, model = run.get("data") or {}, run.get("model") or {}
        lines += [
            "",
            "## Training",
            "",
            f"Data `{data.get('_target_', '?')}` at {data.get('image_size', size)}×"
            f"{data.get('image_size', size)}; system `{model.get('_target_', '?')}`"
            + (
                f", prediction type {model['scheduler'].get('prediction_type')}"
                if isinstance(model.get("scheduler"), Mapping)
                else ""
            )
            + ". The full configs are `run_config` in `model_index.json`.",
        ]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)
