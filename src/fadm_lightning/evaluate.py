"""Evaluate FADM as the paper's Tables 1–3: ``python -m fadm_lightning.evaluate ckpt=PATH [...]``.

    python -m fadm_lightning.evaluate ckpt=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m fadm_lightning.evaluate ckpt=… protocol=cross_identity
    python -m fadm_lightning.evaluate model=fadm_official_release data=voxceleb paths.data_dir=/data
    python -m fadm_lightning.evaluate -m ckpt=a.ckpt,b.ckpt          # Table 3; report at the end

Protocols (REFERENCE_SPEC §5.3, §5.4, §6):

* ``reconstruction`` (Table 1): every test clip, source = its first frame, driving = every frame
  (of the data config's test frames); L1, LPIPS, PSNR, SSIM, AKD, AED averaged over all frames.
* ``cross_identity`` (Table 2): the evaluation pairs (``pairs.csv`` in the run dir: from
  ``pairs.csv=…`` or drawn from ``pairs.seed``); source = a portrait of another person; FID
  (generated frames vs the driving frames) and CSIM (generated frame vs the source).

In one pass on the same frames: the coarse generator alone (row ``coarse``), the FADM-refined
output (``refined``) and optional other checkpoints (``extra_ckpts=[…]``, rows
``refined[<their training overrides>]``). Written to the run dir: ``table.md`` / ``table.csv``
(the paper's layout), ``results.json``, ``per_clip.csv``, ``videos/*.mp4`` (driving | coarse |
refined …), ``features/`` (FID features), ``settings.json``; and to W&B when ``logger=wandb``.

Resumable: run again with ``hydra.run.dir=<that run dir>``; clips (pairs) already in
``per_clip.csv`` are skipped. A metric whose network is not on this machine is reported as
unavailable, with the reason, never computed with other weights.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from fadm_lightning.callbacks.media import side_by_side, to_uint8, write_mp4
from fadm_lightning.checkpoints import load_pipeline
from fadm_lightning.config import hydra_main
from fadm_lightning.data.annotations import (
    annotation_path,
    clip_annotation,
    load_annotation,
)
from fadm_lightning.data.pairs import CrossIdentityPairsDataset, load_or_make_pairs
from fadm_lightning.metrics.suite import (
    FACE_BACKENDS,
    METRICS,
    NEEDS_GROUND_TRUTH,
    MetricSuite,
    check_face_backends,
)
from fadm_lightning.pipeline import FADMPipeline

log = logging.getLogger(__name__)

PROTOCOLS = {
    "reconstruction": "Same-identity reconstruction (paper Table 1)",
    "cross_identity": "Cross-identity reenactment (paper Table 2)",
}
PER_CLIP = "per_clip.csv"
SETTINGS = "settings.json"
RESULTS = "results.json"
# training overrides that do not define a model variant (left out of row labels)
TRAINING_INFRASTRUCTURE = (
    "hydra.",
    "paths.",
    "trainer.",
    "data.",
    "logger",
    "callbacks",
    "seed",
    "ckpt_path",
    "task_name",
    "tags",
    "train",
    "test",
    "debug",
    "local",
)


class EvaluationError(RuntimeError):
    """The evaluation cannot start as configured; the message says what to change."""


# ---------------------------------------------------------------------------------------- systems


@dataclass
class System:
    """One FADM to evaluate: its refined output becomes the row ``name``."""

    name: str
    pipeline: FADMPipeline
    source: str  # the checkpoint file, or the model config's target
    config: DictConfig | None = None  # the checkpoint's stored configs


def training_overrides(path: str | os.PathLike) -> list[str]:
    """The model-defining overrides of a checkpoint's training run (from
    ``<run>/.hydra/overrides.yaml``; infrastructure such as ``trainer.*`` or ``data.*`` left out)."""
    overrides_file = Path(path).resolve().parent.parent / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return []
    overrides = [str(o) for o in OmegaConf.load(overrides_file)]
    return [o for o in overrides if not o.lstrip("+~").startswith(TRAINING_INFRASTRUCTURE)]


def checkpoint_label(path: str | os.PathLike, relative_to: Sequence[str] = ()) -> str:
    """A short name for a training checkpoint: its training overrides that are not in
    ``relative_to`` (e.g. ``model.agcn.use_appearance=false``), else ``<run dir>/<file>``."""
    kept = [o for o in training_overrides(path) if o not in set(relative_to)]
    if kept:
        return ", ".join(kept)
    path = Path(path).resolve()
    return f"{path.parent.parent.name}/{path.stem}"


def _extra_checkpoints(node: Any, main_overrides: Sequence[str]) -> list[tuple[str, str]]:
    """``extra_ckpts`` as (label, path): a list of paths, or a mapping label → path."""
    if not node:
        return []
    if isinstance(node, DictConfig | dict):
        return [(str(k), str(v)) for k, v in node.items()]
    if isinstance(node, ListConfig | list | tuple):
        return [(checkpoint_label(p, main_overrides), str(p)) for p in node]
    raise EvaluationError(f"extra_ckpts must be a list of paths or a mapping, got {node!r}")


def load_systems(cfg: DictConfig) -> tuple[System, list[System]]:
    """The model under evaluation (``ckpt=`` or ``model=``) and the ``extra_ckpts``."""
    overrides = list(cfg.get("ckpt_overrides") or [])
    model_cfg = cfg.get("model")
    if cfg.get("ckpt") and model_cfg:
        raise EvaluationError("give either ckpt=PATH or model=…, not both")
    if cfg.get("ckpt"):
        pipeline, stored = load_pipeline(cfg.ckpt, overrides=overrides, device=cfg.device)
        main = System("refined", pipeline, str(Path(cfg.ckpt).resolve()), stored)
    elif model_cfg:
        try:
            built = instantiate(model_cfg, device=cfg.device)
        except InstantiationException as err:
            if isinstance(err.__cause__, FileNotFoundError):  # missing weights: say which ones
                raise err.__cause__ from None
            raise
        if not isinstance(built, FADMPipeline):
            raise EvaluationError(
                f"model={model_cfg.get('_target_')} builds a {type(built).__name__}, not a ready "
                "FADMPipeline: its weights would be untrained. Evaluate a training checkpoint "
                "(ckpt=PATH) or model=fadm_official_release."
            )
        main = System("refined", built, str(model_cfg.get("_target_")), None)
    else:
        raise EvaluationError(
            "nothing to evaluate: give ckpt=<training checkpoint> or model=fadm_official_release"
        )
    extras = []
    main_overrides = training_overrides(cfg.ckpt) if cfg.get("ckpt") else []
    for label, path in _extra_checkpoints(cfg.get("extra_ckpts"), main_overrides):
        pipeline, stored = load_pipeline(path, overrides=overrides, device=cfg.device)
        extras.append(System(f"refined[{label}]", pipeline, str(Path(path).resolve()), stored))
    names = [main.name, *(e.name for e in extras)]
    if len(set(names)) != len(names):
        raise EvaluationError(
            f"two evaluated models share a row name: {names}; name them with "
            "extra_ckpts={name: path, …}"
        )
    return main, extras


# ------------------------------------------------------------------------------------------- data


def build_datamodule(cfg: DictConfig, main: System):
    """The test data: ``data=…`` when given, else the checkpoint's own data config."""
    if cfg.get("data"):
        data_cfg = cfg.data
    elif main.config is not None and "data" in main.config:
        data_cfg = main.config.data
    else:
        raise EvaluationError(
            "no data config: the official release carries none; add data=voxceleb "
            "paths.data_dir=<folder holding vox-png> (or another data config)"
        )
    expected = None if main.config is None else main.config.get("data", {}).get("image_size")
    if expected is not None and data_cfg.get("image_size") != expected:
        raise EvaluationError(
            f"data.image_size={data_cfg.get('image_size')} but the checkpoint was trained at "
            f"{expected}; set data.image_size={expected}"
        )
    datamodule = instantiate(data_cfg, num_workers=0, persistent_workers=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule, data_cfg


def _per_frame(annotation: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """A clip annotation (per-frame T×…, ``identity`` P) with ``identity`` repeated per frame."""
    if annotation is None:
        return None
    count = next(v.shape[0] for k, v in annotation.items() if k != "identity")
    return {
        k: (v[None].expand(count, *v.shape) if k == "identity" else v)
        for k, v in annotation.items()
    }


class ClipItems(Dataset):
    """Reconstruction items: a test clip, source = its first frame."""

    def __init__(self, clips: Dataset) -> None:
        self.clips = clips
        self.keys = [clip.name for clip in clips.clips]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.clips[i]
        annotation = _per_frame(item.get("annotation"))
        return {
            "key": item["name"],
            "source_name": item["name"],
            "driving_name": item["name"],
            "source": item["video"][:1],
            "video": item["video"],
            "source_annotation": None
            if annotation is None
            else {k: v[:1] for k, v in annotation.items()},
            "annotation": annotation,
        }


class PairItems(Dataset):
    """Cross-identity items: a source portrait and a driving clip of another person."""

    def __init__(self, pairs: CrossIdentityPairsDataset) -> None:
        self.pairs = pairs
        self.keys = [f"{p.source}→{p.driving}" for p in pairs.pairs]
        self.annotated = pairs.index.has_annotations("test")

    def __len__(self) -> int:
        return len(self.keys)

    def _annotation(self, name: str, indices: list[int]) -> dict[str, torch.Tensor]:
        raw = load_annotation(annotation_path(self.pairs.index.root, "test", name))
        return _per_frame(clip_annotation(raw, indices))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.pairs[i]
        pair = self.pairs.pairs[i]
        out = {
            "key": self.keys[i],
            "source_name": pair.source,
            "driving_name": pair.driving,
            "source": item["source"][None],
            "video": item["video"],
            "source_annotation": None,
            "annotation": None,
        }
        if self.annotated and pair.source_is_clip:
            clip = self.pairs.clips[pair.driving]
            indices = list(range(0, clip.num_frames, self.pairs.frame_stride))
            indices = indices[: self.pairs.max_frames]
            source_clip = self.pairs.clips[pair.source]
            source_frame = min(self.pairs.source_frame, source_clip.num_frames - 1)
            out["source_annotation"] = self._annotation(pair.source, [source_frame])
            out["annotation"] = self._annotation(pair.driving, indices)
        return out


def build_items(cfg: DictConfig, datamodule, out_dir: Path) -> Dataset:
    if cfg.protocol == "reconstruction":
        return ClipItems(datamodule.test_set)
    saved = out_dir / "pairs.csv"
    pairs = load_or_make_pairs(
        datamodule.index,
        pairs_csv=saved if saved.is_file() else cfg.pairs.get("csv"),
        save_to=saved,
        num_sources=cfg.pairs.num_sources,
        num_driving=cfg.pairs.num_driving,
        seed=cfg.pairs.seed,
        num_pairs=cfg.pairs.get("num_pairs"),
    )
    dataset = CrossIdentityPairsDataset(
        pairs,
        datamodule.index,
        image_size=datamodule.image_size,
        max_frames=datamodule.test_max_frames,
        frame_stride=datamodule.test_frame_stride,
    )
    return PairItems(dataset)


# ---------------------------------------------------------------------------------------- results


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_")[:120] or "item"


def _item_file(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


class ResultStore:
    """``per_clip.csv`` (one row per item and model, appended as items finish) and the FID
    features of each item (``features/<hash>.npz``, written before its rows)."""

    def __init__(self, out_dir: Path, metric_keys: Sequence[str]) -> None:
        self.path = out_dir / PER_CLIP
        self.features_dir = out_dir / "features"
        self.columns = ["item", "source", "driving", "system", "frames", "sec_per_frame"]
        for key in metric_keys:
            self.columns += [key, f"n_{key}"]

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def done(self, systems: Sequence[str]) -> set[str]:
        """Items with a row for every system."""
        seen: dict[str, set[str]] = {}
        for row in self.rows():
            seen.setdefault(row["item"], set()).add(row["system"])
        return {item for item, names in seen.items() if set(systems) <= names}

    def append(self, rows: list[dict[str, Any]]) -> None:
        new = not self.path.is_file()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="raise")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in self.columns})
            f.flush()
            os.fsync(f.fileno())

    def save_features(self, key: str, features: dict[str, np.ndarray]) -> None:
        self.features_dir.mkdir(parents=True, exist_ok=True)
        path = self.features_dir / f"{_item_file(key)}.npz"
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **{_safe(k): v.astype(np.float32) for k, v in features.items()})
        os.replace(tmp, path)

    def load_features(self, keys: Sequence[str], name: str) -> tuple[np.ndarray | None, int]:
        """Concatenated features of ``name`` over ``keys``; also how many items had them."""
        parts, found = [], 0
        for key in keys:
            path = self.features_dir / f"{_item_file(key)}.npz"
            if not path.is_file():
                continue
            with np.load(path) as data:
                if _safe(name) in data.files:
                    parts.append(data[_safe(name)])
                    found += 1
        return (np.concatenate(parts) if parts else None), found


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# ------------------------------------------------------------------------------------- evaluation


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
        self.sampler = dict(OmegaConf.to_container(cfg.sampler, resolve=True))
        self.batch_size = int(cfg.batch_size)
        self.cross = cfg.protocol == "cross_identity"
        self.fid_reference = cfg.metrics.get("fid_reference", "driving")

    @property
    def row_names(self) -> list[str]:
        return ["coarse", self.main.name, *(e.name for e in self.extras)]

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
        source_faces = suite.observe(item["source"]) if self.cross else None
        use_fid = suite.fid is not None and suite.fid.available
        if use_fid and self.cross and self.fid_reference == "source":
            features["real"] = [suite.fid.features(item["source"])]

        for start in range(0, video.shape[0], self.batch_size):
            sl = slice(start, start + self.batch_size)
            driving = video[sl]
            driving_ann = _to(item["annotation"], self.device, sl)
            outputs: dict[str, torch.Tensor] = {}
            begin = self._clock()
            coarse, attr_diff = self.main.pipeline.prepare(
                source, driving.to(self.device), source_ann, driving_ann
            )
            seconds["coarse"] += self._clock() - begin
            outputs["coarse"] = coarse
            begin = self._clock()
            outputs[self.main.name] = self.main.pipeline.sample(coarse, attr_diff, **self.sampler)
            seconds[self.main.name] += self._clock() - begin
            for extra in self.extras:
                begin = self._clock()
                c, a = extra.pipeline.prepare(
                    source, driving.to(self.device), source_ann, driving_ann
                )
                outputs[extra.name] = extra.pipeline.sample(c, a, **self.sampler)
                seconds[extra.name] += self._clock() - begin

            # metrics: reference = the ground-truth frame, or the source portrait across identities
            reference = item["source"] if self.cross else driving
            reference_faces = source_faces if self.cross else suite.observe(driving)
            for name, output in outputs.items():
                output = output.float().cpu()
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
            rows.append(row)
        stacked_features = {k: np.concatenate(v) for k, v in features.items()}
        stacked_frames = {k: torch.cat(v) for k, v in frames.items()}
        return rows, stacked_features, stacked_frames


def write_video(path: Path, source: torch.Tensor, frames: dict[str, torch.Tensor], order, fps):
    """Panels side by side (left to right in ``order``); a 1-frame panel is repeated.

    H.264 yuv420p (the profile browsers play, so that W&B shows a playable video), with the
    uint8 conversion of the training run's sample grids and test videos."""
    panels = [source if name == "source" else frames[name] for name in order]
    write_mp4(path, to_uint8(side_by_side(panels)), fps=fps)  # T×H×(k·W)×3


# ----------------------------------------------------------------------------------------- tables


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


_DIGITS = {"l1": 4, "lpips": 4, "psnr": 2, "ssim": 4, "akd": 3, "aed": 4, "csim": 4, "fid": 2}


def format_value(key: str, value: float | None, available: bool) -> str:
    if not available:
        return "unavailable"
    if value is None:
        return "—"
    return f"{value:.{_DIGITS.get(key, 4)}f}"


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


# ---------------------------------------------------------------------------------------- logging


def log_to_loggers(cfg: DictConfig, suite, table, store: ResultStore, videos: list[Path]) -> None:
    """The table (and per-clip rows, sample videos) to W&B as tables, when a logger is set."""
    node = cfg.get("logger")
    if not node:
        return
    headers, body = table_lines(suite, table)
    for conf in node.values():
        if conf is None or "_target_" not in conf:
            continue
        logger = instantiate(conf)
        metrics = {
            f"{cfg.protocol}/{e['method']}/{k}": e["values"][k]
            for e in table
            for k in suite.names
            if e["values"].get(k) is not None
        }
        if hasattr(logger, "log_table"):
            logger.log_table(key=f"{cfg.protocol}/table", columns=headers, data=body)
            rows = store.rows()
            if rows:
                logger.log_table(
                    key=f"{cfg.protocol}/per_clip",
                    columns=list(rows[0]),
                    data=[list(r.values()) for r in rows],
                )
            if videos and hasattr(logger, "log_video"):
                logger.log_video(  # wandb.Video of each mp4 file (H.264 yuv420p: playable)
                    key=f"{cfg.protocol}/samples",
                    videos=[str(v) for v in videos],
                    caption=[v.stem for v in videos],
                    format=["mp4"] * len(videos),
                )
        logger.log_metrics(metrics)
        logger.finalize("success")
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()


# ------------------------------------------------------------------------------------------ entry


def _settings(cfg: DictConfig, main: System, extras: list[System], data_cfg) -> dict[str, Any]:
    """What makes two runs comparable (a resumed run must match)."""
    return {
        "protocol": cfg.protocol,
        "model": main.source,
        "ckpt_overrides": list(cfg.get("ckpt_overrides") or []),
        "extra_ckpts": {e.name: e.source for e in extras},
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "metrics": OmegaConf.to_container(cfg.metrics, resolve=True),
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "pairs": OmegaConf.to_container(cfg.pairs, resolve=True)
        if cfg.protocol == "cross_identity"
        else None,
    }


def _check_resume(path: Path, settings: dict[str, Any]) -> None:
    if not path.is_file():
        path.write_text(json.dumps(settings, indent=2, default=str))
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(settings, default=str))
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise EvaluationError(
            f"{path.parent} holds an evaluation with other settings ({', '.join(changed)} "
            f"differ; see {path}); resume with the same settings or use a new run dir"
        )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured protocol; returns the table rows and the paths written."""
    if cfg.protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol must be one of {list(PROTOCOLS)}, got {cfg.protocol!r}")
    names = list(cfg.metrics[cfg.protocol])
    if cfg.protocol == "cross_identity":
        wrong = [n for n in names if n in NEEDS_GROUND_TRUTH]
        if wrong:
            raise EvaluationError(
                f"metrics {wrong} need a ground-truth frame, which cross-identity reenactment "
                f"has not; choose among {[k for k in METRICS if k not in NEEDS_GROUND_TRUTH]}"
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
    suite = MetricSuite(
        names,
        lpips_alexnet=cfg.metrics.get("lpips_alexnet"),
        fid_inception=cfg.metrics.get("fid_inception"),
        face=OmegaConf.to_container(cfg.metrics.face, resolve=True),
        device=cfg.device,
        **backends,
        weights=OmegaConf.to_container(cfg.metrics.weights, resolve=True)
        if cfg.metrics.get("weights")
        else None,
        arcface_arch=cfg.metrics.get("arcface_arch", "r100"),
    )
    items = build_items(cfg, datamodule, out_dir)
    keys = items.keys[: cfg.max_items] if cfg.get("max_items") else list(items.keys)
    evaluator = Evaluator(cfg, main, extras, suite)
    store = ResultStore(out_dir, suite.frame_keys)
    done = store.done(evaluator.row_names) & set(keys)
    todo = [i for i, k in enumerate(keys) if k not in done]
    if done:
        log.info(
            "resuming: %d of %d items already evaluated in %s", len(done), len(keys), store.path
        )

    video_count = int(cfg.videos.get("count", 0))
    order = (["source"] if evaluator.cross else []) + ["driving", *evaluator.row_names]
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
    sampler = cfg.sampler
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
        f"sampler: DDIM {sampler.num_inference_steps} steps, η = {sampler.eta}, strength "
        f"{sampler.strength}, seed {sampler.seed}; device {cfg.device}",
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
                "higher_is_better": METRICS[k].higher_is_better,
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


@hydra_main("evaluate")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(int(cfg.get("num_threads") or torch.get_num_threads()))
    evaluate(cfg)


if __name__ == "__main__":
    main()
