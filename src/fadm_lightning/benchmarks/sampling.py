"""Coarse vs refined quality (and speed) of a trained checkpoint for several sampler settings.

    python -m fadm_lightning.benchmarks.sampling ckpt=CKPT [samplers=[20:0:1,100:1:1,20:0:0.3]] \
        [split=val|test] [max_clips=N] [overrides=['data.KEY=VALUE',…]] [threads=N] [csv=FILE]

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/sampling.yaml``.
Each sampler is a preset's name (``official``, …) or ``steps:eta:strength[:clip][:nonoise]`` (strength 1 = from pure noise; s < 1 =
from the coarse frame noised to that fraction of the schedule; ``clip`` clamps each step's x̂_0
to the frame range; ``nonoise`` starts from the coarse frame without noise, the sampler of a
distilled student, e.g. ``1:0:1:clip:nonoise``). Same-identity reconstruction on whole clips of
the checkpoint's own data config (source = first frame, driving = every frame); prints a
Markdown table of L1 / PSNR / SSIM (beside the refined rows: the coarse frames, the source frame
copied, and the coarse generator's warped source where it has one, FOMM's ``deformed``), the temporal figures of each clip (tdiff, flicker:
:mod:`fadm_lightning.metrics.temporal`), denoiser calls per frame, and wall and CPU seconds per
frame of the refinement, and writes it as CSV with ``csv=FILE``.

``split=val`` (the default) reads the data module's validation split (``data.val_split``:
``val/`` of the synthetic world), so sampler settings are chosen without looking at the test
identities; ``split=test`` reports the chosen settings on ``test/``. A data config that
validates on "test" (FOMM's VoxCeleb layout has no ``val/``) gets a warning: there the two are
the same clips. Checkpoints trained before the synthetic world had a ``val/`` need
``"overrides=['data.generator.num_val_ids=4','data.generator.val_clips_per_id=2']"`` (a new
dataset folder with the same train and test clips plus ``val/``) or ``split=test``.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fadm_lightning.checkpoints import load_pipeline
from fadm_lightning.config import hydra_main
from fadm_lightning.data.batch import clip_frames
from fadm_lightning.data.voxceleb import VoxCelebClipDataset
from fadm_lightning.metrics.suite import MetricSuite
from fadm_lightning.pipeline import resize_to
from fadm_lightning.sampler import SamplerConfig

#: the table's metrics (keys of the metrics registry, conf/metrics): per frame, per clip
FRAME_METRICS = ("l1", "psnr", "ssim")
CLIP_METRICS = ("tdiff", "flicker")
#: the rows that are not a sampler setting, in table order
REFERENCE_ROWS = ("coarse", "copy source", "warped source")


SPLIT_CHOICES = ("val", "test")


def clip_loader(datamodule, split: str = "val") -> tuple[DataLoader, str]:
    """Whole clips (batch size 1) of ``split`` and the folder they come from.

    "test" is the data module's test loader (``root/test``); "val" reads the clips of its
    validation split ``datamodule.val_split`` with the test settings (max frames, stride), and
    warns when that split is "test" (no separate validation identities in that root).
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    if split == "test":
        datamodule.setup("test")
        return datamodule.test_dataloader(), "test"
    folder = getattr(datamodule, "val_split", "test")
    if folder == "test":
        warnings.warn(
            "the data config validates on 'test' (no val/ split, e.g. FOMM's VoxCeleb layout): "
            "sampler settings compared with --split val are compared on the test identities",
            stacklevel=2,
        )
    dataset = VoxCelebClipDataset(
        datamodule.root,
        image_size=datamodule.image_size,
        max_frames=datamodule.test_max_frames,
        frame_stride=datamodule.test_frame_stride,
        split=folder,
        index=datamodule.index,  # FileNotFoundError naming root/<folder> when absent
    )
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0), folder


def evaluate(
    checkpoint: str,
    settings: Sequence[SamplerConfig],
    max_clips: int | None = None,
    chunk: int = 16,
    seed: int = 0,
    overrides: tuple[str, ...] = (),
    split: str = "val",
) -> list[dict]:
    """Rows of the table for ``settings`` on the clips of ``split`` ("val" or "test"): each a
    sampler (:meth:`SamplerConfig.parse` of ``steps:eta:strength[:clip][:nonoise]`` or a
    preset; knobs left at None take the model's own), every one with the noise of ``seed``."""
    pipe, cfg = load_pipeline(checkpoint, overrides=overrides)
    datamodule = instantiate(cfg.data, num_workers=0, persistent_workers=False)
    datamodule.prepare_data()
    loader, folder = clip_loader(datamodule, split)
    # the metrics of the registry (conf/metrics): per frame, then per clip
    suite = MetricSuite([*FRAME_METRICS, *CLIP_METRICS])
    print(f"split: {split} ({len(loader)} clips of {Path(datamodule.root) / folder})")
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    clip_sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seconds: dict[str, float] = defaultdict(float)
    cpu_seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = {}
    count = clips = 0
    total = len(loader) if max_clips is None else min(max_clips, len(loader))
    for index, batch in enumerate(tqdm(loader, total=total, desc="clips")):
        if max_clips is not None and index >= max_clips:
            break
        video = batch["video"][0]
        source, source_ann = clip_frames(batch, slice(0, 1))
        outputs: dict[str, list[torch.Tensor]] = defaultdict(list)
        for start in range(0, video.shape[0], chunk):
            frames = slice(start, start + chunk)
            driving = video[frames]
            coarse_output: dict[str, torch.Tensor] = {}
            coarse, attr_diff, guide = pipe.prepare(
                source,
                driving,
                source_ann,
                clip_frames(batch, frames)[1],
                with_guide=True,
                coarse_output=coarse_output,
            )
            results = {"coarse": coarse, "copy source": source.expand_as(driving)}
            if "deformed" in coarse_output:  # FOMM's source warped by its motion: no decoder
                deformed = coarse_output["deformed"].clamp(0, 1)
                results["warped source"] = resize_to(deformed, driving.shape[-2:])
            for setting in settings:
                sampler = pipe.resolve_sampler(setting).with_(seed=seed)
                name = setting_name(sampler)
                calls[name] = sampler.calls
                began, cpu_began = time.perf_counter(), time.process_time()
                results[name] = pipe.sample(coarse, attr_diff, sampler, guide=guide)
                seconds[name] += time.perf_counter() - began
                cpu_seconds[name] += time.process_time() - cpu_began
            for name, output in results.items():
                outputs[name].append(output)
                for metric in FRAME_METRICS:
                    sums[name][metric] += suite[metric].frames(output, driving).sum().item()
            count += driving.shape[0]
        for name, parts in outputs.items():  # per clip: how the video moves
            whole = torch.cat(parts)
            for metric in CLIP_METRICS:
                value = suite[metric].clip(whole, video)  # None: the clip is too short
                if value is not None:
                    clip_sums[name][metric] += float(value)
        clips += 1
    rows = []
    for name, totals in sums.items():
        row = {"frames": name, **{m: totals[m] / count for m in FRAME_METRICS}}
        for metric in CLIP_METRICS:
            row[metric] = clip_sums[name][metric] / clips if metric in clip_sums[name] else None
        row["calls"] = calls.get(name)
        row["s_per_frame"] = seconds[name] / count if name in seconds else None
        row["cpu_s_per_frame"] = cpu_seconds[name] / count if name in cpu_seconds else None
        rows.append(row)
    return rows


def setting_name(sampler: SamplerConfig) -> str:
    """The row name of a (complete) sampler in the tables."""
    return (
        f"refined ({sampler.steps} steps, η={sampler.eta:g}, strength={sampler.strength:g}"
        f"{', clip x̂0' if sampler.clip_sample else ''}"
        f"{', no noise' if not sampler.start_noise else ''})"
    )


def markdown(rows: list[dict], num_frames: int | None = None) -> str:
    def fmt(value, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        "| frames | L1 ↓ | PSNR ↑ | SSIM ↑ | tdiff ↓ | flicker | denoiser calls / frame "
        "| s / frame (wall) | CPU s / frame |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {r['l1']:.4f} | {r['psnr']:.2f} | {r['ssim']:.4f} "
            f"| {fmt(r.get('tdiff'), '.4f')} | {fmt(r.get('flicker'), '.4f')} "
            f"| {fmt(r.get('calls'), 'd')} | {fmt(r['s_per_frame'], '.3f')} "
            f"| {fmt(r.get('cpu_s_per_frame'), '.3f')} |"
        )
    return "\n".join(lines)


@hydra_main("benchmark/sampling", threads="threads")
def main(cfg: DictConfig) -> list[dict]:
    if not cfg.ckpt:
        raise SystemExit("benchmarks.sampling: give the checkpoint, ckpt=CKPT")
    if cfg.split not in SPLIT_CHOICES:
        raise SystemExit(
            f"benchmarks.sampling: split={cfg.split}: val (the data config's validation split, "
            "for choosing settings) or test (the held-out test split, to report them)"
        )
    samplers = [SamplerConfig.parse(str(text)) for text in cfg.samplers]
    rows = evaluate(
        str(cfg.ckpt),
        samplers,
        cfg.max_clips,
        seed=int(cfg.seed),
        overrides=tuple(str(o) for o in cfg.overrides),
        split=str(cfg.split),
    )
    print(markdown(rows))
    if cfg.csv:
        path = Path(str(cfg.csv))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
