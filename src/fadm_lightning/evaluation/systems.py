"""What is evaluated: :class:`System` (a ready FADMPipeline and the row it becomes), loaded by
:func:`load_systems` from ``ckpt=`` (a training checkpoint) or ``model=`` (the official release)
plus ``extra_ckpts``; their rows are named after the checkpoints' training overrides
(:func:`training_overrides`, :func:`checkpoint_label`; infrastructure overrides such as
``trainer.*`` left out, :data:`TRAINING_INFRASTRUCTURE`, also used by the report)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from fadm_lightning.checkpoints import load_pipeline
from fadm_lightning.evaluation.protocols import EvaluationError
from fadm_lightning.pipeline import FADMPipeline

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
