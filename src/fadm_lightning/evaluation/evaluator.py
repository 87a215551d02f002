"""The evaluation itself: :class:`Evaluator` runs the coarse generator and every system on the
same frames of an item and scores them with the :class:`~fadm_lightning.metrics.suite.MetricSuite`;
:func:`aggregate` averages the rows of ``per_clip.csv`` (frame-weighted; FID over all frames);
:func:`evaluate` drives a whole run from the ``evaluate`` config: checks, loading, the items not
yet in the run dir, tables, ``results.json``, videos and loggers."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from fadm_lightning.evaluation.items import build_datamodule, build_items
from fadm_lightning.evaluation.loggers import log_to_loggers
from fadm_lightning.evaluation.protocols import PROTOCOLS, EvaluationError
from fadm_lightning.evaluation.store import (
    PER_CLIP,
    RESULTS,
    SETTINGS,
    ResultStore,
    _check_resume,
    _safe,
    _settings,
)
from fadm_lightning.evaluation.systems import System, load_systems
from fadm_lightning.evaluation.tables import write_tables
from fadm_lightning.evaluation.videos import write_video
from fadm_lightning.metrics.registry import build_metric, check_keys
from fadm_lightning.metrics.suite import (
    FACE_BACKENDS,
    MetricSuite,
    check_face_backends,
    ground_truth_free,
)
from fadm_lightning.sampler import SamplerConfig

log = logging.getLogger(__name__)

#: trivial rows beside the models (``baselines=[copy_source]``): option → row name
BASELINES = {"copy_source": "copy source"}


def check_baselines(names) -> list[str]:
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise EvaluationError(f"baselines: unknown {unknown}; choose among {list(BASELINES)}")
    return list(names)


def _to(annotation: dict[str, torch.Tensor] | None, device, frames: slice | None = None):
    if annotation is None:
        return None
    return {k: (v if frames is None else v[frames]).to(device) for k, v in annotation.items()}


def _mean(values: list[np.ndarray]) -> tuple[float | None, int]:
    allv = np.concatenate(values) if values else np.zeros(0)
    valid = allv[~np.isnan(allv)]
    return (float(valid.mean()) if len(valid) else None), int(len(valid))


class Evaluator:
    """Runs one protocol over the items for the coarse row and each system."""

    def __init__(
        self, cfg: DictConfig, main: System, extras: list[System], suite: MetricSuite
    ) -> None:
        self.cfg = cfg
        self.main, self.extras = main, extras
        self.suite = suite
        self.device = torch.device(cfg.device)
        # each model completes the knobs left at None with its own sampler (pipe.sampler)
        self.sampler = SamplerConfig.from_mapping(OmegaConf.to_container(cfg.sampler, resolve=True))
        self.batch_size = int(cfg.batch_size)
        self.cross = cfg.protocol == "cross_identity"
        self.fid_reference = cfg.metrics.get("fid_reference", "driving")
        self.baselines = [BASELINES[b] for b in check_baselines(cfg.get("baselines") or [])]

    @property
    def row_names(self) -> list[str]:
        return [*self.baselines, "coarse", self.main.name, *(e.name for e in self.extras)]

    def _clock(self) -> float:
        if self.device.type == "cuda":  # kernels run asynchronously: time finished work
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.no_grad()
    def item(self, item: dict[str, Any], keep_frames: bool = False):
        """Per-system rows, FID features and (optionally) the frames of one item."""
        video, source = item["video"], item["source"].to(self.device)
        source_ann = _to(item["source_annotation"], self.device)
        names = self.row_names
        values: dict[str, dict[str, list[np.ndarray]]] = {n: {} for n in names}
        seconds = dict.fromkeys(names, 0.0)
        features: dict[str, list[np.ndarray]] = {}
        frames: dict[str, list[torch.Tensor]] = {}
        suite = self.suite
        temporal = {n: suite.clip_stream() for n in names} if suite.clip_keys else {}
        source_faces = suite.observe(item["source"]) if self.cross else None
        use_fid = suite.fid is not None and suite.fid.available
        if use_fid and self.cross and self.fid_reference == "source":
            features["real"] = [suite.fid.features(item["source"])]

        for start in range(0, video.shape[0], self.batch_size):
            sl = slice(start, start + self.batch_size)
            driving = video[sl]
            driving_ann = _to(item["annotation"], self.device, sl)
            outputs: dict[str, torch.Tensor] = {}
            if "copy source" in self.baselines:
                outputs["copy source"] = item["source"].expand_as(driving)
            begin = self._clock()
            coarse, attr_diff, guide = self.main.pipeline.prepare(
                source, driving.to(self.device), source_ann, driving_ann, with_guide=True
            )
            seconds["coarse"] += self._clock() - begin
            outputs["coarse"] = coarse
            begin = self._clock()
            outputs[self.main.name] = self.main.pipeline.sample(
                coarse, attr_diff, self.sampler, guide=guide
            )
            seconds[self.main.name] += self._clock() - begin
            for extra in self.extras:
                begin = self._clock()
                c, a, gd = extra.pipeline.prepare(
                    source, driving.to(self.device), source_ann, driving_ann, with_guide=True
                )
                outputs[extra.name] = extra.pipeline.sample(c, a, self.sampler, guide=gd)
                seconds[extra.name] += self._clock() - begin

            # metrics: reference = the ground-truth frame, or the source portrait across identities
            reference = item["source"] if self.cross else driving
            reference_faces = source_faces if self.cross else suite.observe(driving)
            for name, output in outputs.items():
                output = output.float().cpu()
                if name in temporal:
                    temporal[name].update(output, driving)
                for key, v in suite.frame_values(
                    output, reference, reference_faces=reference_faces
                ).items():
                    values[name].setdefault(key, []).append(v)
                if use_fid:
                    features.setdefault(name, []).append(suite.fid.features(output))
                if keep_frames:
                    frames.setdefault(name, []).append(output)
            if use_fid and not (self.cross and self.fid_reference == "source"):
                features.setdefault("real", []).append(suite.fid.features(driving))
            if keep_frames:
                frames.setdefault("driving", []).append(driving)

        count = video.shape[0]
        prepare = seconds["coarse"]
        rows = []
        for name in names:
            row: dict[str, Any] = {
                "item": item["key"],
                "source": item["source_name"],
                "driving": item["driving_name"],
                "system": name,
                "frames": count,
                # the main model's time includes the coarse generator's
                "sec_per_frame": (seconds[name] + (prepare if name == self.main.name else 0.0))
                / count,
            }
            for key in suite.frame_keys:
                if suite.available(key):
                    row[key], row[f"n_{key}"] = _mean(values[name].get(key, []))
            clip_values = temporal[name].compute() if name in temporal else {}
            for key in suite.clip_keys:  # one value per clip: the table averages clips
                row[key], row[f"n_{key}"] = clip_values.get(key), int(key in clip_values)
            rows.append(row)
        stacked_features = {k: np.concatenate(v) for k, v in features.items()}
        stacked_frames = {k: torch.cat(v) for k, v in frames.items()}
        return rows, stacked_features, stacked_frames


def aggregate(
    store: ResultStore, suite: MetricSuite, names: Sequence[str], items: Sequence[str]
) -> list[dict[str, Any]]:
    """Frame-weighted means over the items of ``per_clip.csv`` (and FID over all frames)."""
    rows_by_system: dict[str, list[dict[str, str]]] = {n: [] for n in names}
    wanted = set(items)
    for row in store.rows():
        if row["system"] in rows_by_system and row["item"] in wanted:
            rows_by_system[row["system"]].append(row)
    real = None
    if suite.fid is not None and suite.fid.available:
        real, _ = store.load_features(items, "real")
    table = []
    for name in names:
        rows = rows_by_system[name]
        frames = sum(int(r["frames"]) for r in rows)
        entry: dict[str, Any] = {
            "method": name,
            "items": len(rows),
            "frames": frames,
            "sec_per_frame": (
                sum(float(r["sec_per_frame"]) * int(r["frames"]) for r in rows) / frames
                if frames
                else None
            ),
            "values": {},
            "counts": {},
        }
        for key in suite.names:
            if not suite.available(key):
                entry["values"][key] = None
                continue
            if key == "fid":
                fake, _ = store.load_features(items, name)
                ok = real is not None and fake is not None and len(real) > 1 and len(fake) > 1
                entry["values"][key] = suite.fid.compute(real, fake) if ok else None
                entry["counts"][key] = 0 if fake is None else len(fake)
                continue
            total, n = 0.0, 0
            for r in rows:
                if r.get(key) not in (None, "") and int(r.get(f"n_{key}") or 0) > 0:
                    total += float(r[key]) * int(r[f"n_{key}"])
                    n += int(r[f"n_{key}"])
            entry["values"][key] = total / n if n else None
            entry["counts"][key] = n
        table.append(entry)
    return table


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured protocol; returns the table rows and the paths written."""
    if cfg.protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol must be one of {list(PROTOCOLS)}, got {cfg.protocol!r}")
    try:  # keys of the metrics registry (conf/metrics)
        names = check_keys(cfg.metrics, cfg.metrics[cfg.protocol])
    except ValueError as err:
        raise EvaluationError(f"metrics.{cfg.protocol}: {err}") from err
    if cfg.protocol == "cross_identity":
        wrong = [n for n in names if build_metric(cfg.metrics, n).needs_ground_truth]
        if wrong:
            raise EvaluationError(
                f"metrics {wrong} need a ground-truth frame, which cross-identity reenactment "
                f"has not; choose among {ground_truth_free(cfg.metrics)}"
            )
    backends = {option: cfg.metrics.get(option, "dlib") for option in FACE_BACKENDS}
    try:  # before anything is loaded or written
        check_face_backends(backends)
    except ValueError as err:
        raise EvaluationError(str(err)) from err
    if cfg.metrics.get("fid_reference", "driving") not in ("driving", "source"):
        raise EvaluationError(
            f"metrics.fid_reference must be driving or source, got {cfg.metrics.fid_reference!r}"
        )
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    main, extras = load_systems(cfg)
    datamodule, data_cfg = build_datamodule(cfg, main)
    _check_resume(out_dir / SETTINGS, _settings(cfg, main, extras, data_cfg))
    suite = MetricSuite.from_config(cfg.metrics, names, device=cfg.device)
    items = build_items(cfg, datamodule, out_dir)
    keys = items.keys[: cfg.max_items] if cfg.get("max_items") else list(items.keys)
    evaluator = Evaluator(cfg, main, extras, suite)
    store = ResultStore(out_dir, [*suite.frame_keys, *suite.clip_keys])
    done = store.done(evaluator.row_names) & set(keys)
    todo = [i for i, k in enumerate(keys) if k not in done]
    if done:
        log.info(
            "resuming: %d of %d items already evaluated in %s", len(done), len(keys), store.path
        )

    video_count = int(cfg.videos.get("count", 0))
    shown = [n for n in evaluator.row_names if n not in evaluator.baselines]
    order = (["source"] if evaluator.cross else []) + ["driving", *shown]
    loader = DataLoader(
        Subset(items, todo), batch_size=None, num_workers=int(cfg.get("num_workers", 0))
    )
    started = time.perf_counter()
    progress = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=cfg.protocol, unit="clip")
    for index, item in zip(todo, loader, strict=True):
        progress.set_postfix_str(item["key"][-40:])
        wants_video = index < video_count
        rows, features, frames = evaluator.item(item, keep_frames=wants_video)
        if features:
            store.save_features(item["key"], features)
        if wants_video:
            write_video(
                out_dir / "videos" / f"{index:03d}_{_safe(item['key'].replace('.mp4', ''))}.mp4",
                item["source"],
                frames,
                order,
                float(cfg.videos.get("fps", 25)),
            )
        store.append(rows)
        progress.update(1)
    progress.close()
    elapsed = time.perf_counter() - started

    table = aggregate(store, suite, evaluator.row_names, keys)
    sampler = main.pipeline.resolve_sampler(evaluator.sampler)
    evaluated_frames = table[0]["frames"] if table else 0
    context = [
        f"model: {main.source}"
        + (f"; extra: {', '.join(f'{e.name} = {e.source}' for e in extras)}" if extras else ""),
        f"data: {data_cfg.get('_target_')} root {datamodule.root}; {len(keys)} "
        + (
            "test clips (source = first frame, driving = every frame)"
            if not evaluator.cross
            else "cross-identity pairs (pairs.csv)"
        )
        + f", {evaluated_frames} frames at {datamodule.image_size}×{datamodule.image_size}",
        f"sampler: {sampler.describe()} ({sampler.spec()}), seed {sampler.seed}; "
        f"device {cfg.device}",
        "s/frame: "
        + ", ".join(f"{e['method']} {e['sec_per_frame']:.3f}" for e in table if e["sec_per_frame"])
        + " (generation only, this device; the refined rows include the coarse generator)",
    ]
    if suite.fid is not None and suite.fid.available:
        reference = (
            "source portraits"
            if evaluator.cross and evaluator.fid_reference == "source"
            else ("driving frames" if evaluator.cross else "ground-truth frames")
        )
        context.append(f"FID: generated frames vs the {reference} of the same items")
    written = write_tables(out_dir, cfg, suite, table, context)
    videos = sorted((out_dir / "videos").glob("*.mp4"))
    results = {
        "protocol": cfg.protocol,
        "title": PROTOCOLS[cfg.protocol],
        "columns": [
            {
                "key": k,
                "label": suite.label(k),
                "higher_is_better": suite[k].higher_is_better,
                "available": suite.available(k),
                "reason": suite.reason(k),
            }
            for k in suite.names
        ],
        "rows": table,
        "notes": written["notes"],
        "settings": json.loads((out_dir / SETTINGS).read_text()),
        "seconds": elapsed,
    }
    (out_dir / RESULTS).write_text(json.dumps(results, indent=2, default=str))
    log_to_loggers(cfg, suite, table, store, videos)
    print(written["markdown"].read_text(), flush=True)
    print(f"Written to {out_dir}: table.md, table.csv, {PER_CLIP}, {RESULTS}, videos/", flush=True)
    return {
        "table": table,
        "output_dir": str(out_dir),
        "markdown": str(written["markdown"]),
        "csv": str(written["csv"]),
        "per_clip": str(store.path),
        "videos": [str(v) for v in videos],
        "evaluated_now": len(todo),
        "skipped": len(keys) - len(todo),
    }
