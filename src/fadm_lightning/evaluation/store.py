"""What an evaluation run dir holds between runs: :class:`ResultStore` (``per_clip.csv``, one
row per item and model, appended as items finish, and the FID features of each item), the file
names (:data:`PER_CLIP`, :data:`SETTINGS`, :data:`RESULTS`) and the resume check: a run dir is
resumed only with the settings it was started with (``settings.json``)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fadm_lightning.evaluation.protocols import EvaluationError
from fadm_lightning.evaluation.systems import System
from fadm_lightning.metrics.registry import default_config

PER_CLIP = "per_clip.csv"
SETTINGS = "settings.json"
RESULTS = "results.json"


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


def _metric_settings(metrics: DictConfig) -> dict[str, Any]:
    """The ``metrics`` options of an evaluation: without the training stages' lists, and without
    the registry while it is the default one (so settings.json reads as before the registry)."""
    out = OmegaConf.to_container(metrics, resolve=True)
    for key in ("validation", "test"):
        out.pop(key, None)
    registry = metrics.get("registry")
    if registry is not None and OmegaConf.to_container(registry) == OmegaConf.to_container(
        default_config().registry
    ):
        out.pop("registry", None)
    return out


def _settings(cfg: DictConfig, main: System, extras: list[System], data_cfg) -> dict[str, Any]:
    """What makes two runs comparable (a resumed run must match)."""
    return {
        "protocol": cfg.protocol,
        "model": main.source,
        "ckpt_overrides": list(cfg.get("ckpt_overrides") or []),
        "extra_ckpts": {e.name: e.source for e in extras},
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "metrics": _metric_settings(cfg.metrics),
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
