"""Train FADM: ``python -m fadm_lightning.train [experiment=...] [overrides]``.

Hydra composes ``conf/train.yaml``; everything is built from ``_target_``. Outputs (checkpoints,
sample grids, logs, the W&B offline run) go under the run directory (``hydra.run.dir``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from fadm_lightning.checkpoints import config_for_checkpoint
from fadm_lightning.config import hydra_main
from fadm_lightning.evaluation.tables import format_table

PREFLIGHT_GROUPS = ("data", "coarse", "attributes")


class MissingPathsError(SystemExit):
    """Required files or folders are missing; the message names each one."""


def missing_paths(cfg: DictConfig) -> list[str]:
    """Every required path (a dataset root, a checkpoint) of the chosen parts that does not exist.

    A part declares its required constructor arguments in a class attribute
    ``required_paths = {"argument": "what is expected there"}``.
    """
    problems = []
    for group in PREFLIGHT_GROUPS:
        node = cfg.get(group)
        if node is None or "_target_" not in node:
            continue
        try:
            cls = get_class(node._target_)
        except Exception as err:  # the part itself is not available
            problems.append(f"{group}: cannot import {node._target_} ({err})")
            continue
        for arg, description in getattr(cls, "required_paths", {}).items():
            value = node.get(arg)
            if value is None or not Path(str(value)).exists():
                problems.append(f"{group}.{arg} = {value}: not found. Expected {description}.")
    return problems


def preflight(cfg: DictConfig) -> None:
    problems = missing_paths(cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise MissingPathsError(
            "Cannot start: required files are missing (nothing was built, no random weights used):\n"
            f"{lines}\nSet them on the command line (e.g. paths.data_dir=/datasets, "
            "coarse.checkpoint=/weights/vox-cpk.pth.tar) or in conf/local/default.yaml; see README."
        )


def _task_overrides() -> list[str]:
    """The command line's ``key=value`` overrides (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o.lstrip("+") for o in HydraConfig.get().overrides.task if not o.startswith("~")]


def with_teacher(cfg: DictConfig) -> DictConfig:
    """``experiment=fadm_distill teacher=CKPT``: the student's data, coarse generator, attribute
    extractor and model are the teacher's (read from its checkpoint); the model's arguments are
    then overridden by ``distill`` (the distillation settings and the student's sampler). Command
    line overrides of ``data.*``, ``coarse.*``, ``attributes.*`` and ``model.*`` still apply."""
    if not cfg.get("teacher"):
        return cfg
    from fadm_lightning.checkpoints import read_run_config

    stored = read_run_config(cfg.teacher)
    overrides = _task_overrides()
    with open_dict(cfg):
        for group in ("data", "coarse", "attributes", "model"):
            if group not in stored:
                raise MissingPathsError(
                    f"teacher {cfg.teacher}: its checkpoint stores no {group} config"
                )
            node = OmegaConf.create(stored[group])
            if group == "model":
                node = OmegaConf.merge(node, cfg.distill)
            mine = [o[len(group) + 1 :] for o in overrides if o.startswith(f"{group}.")]
            cfg[group] = OmegaConf.merge(node, OmegaConf.from_dotlist(mine))
    return cfg


def instantiate_list(node: DictConfig | None) -> list[Any]:
    if not node:
        return []
    return [instantiate(c) for c in node.values() if c is not None and "_target_" in c]


def resume_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The checkpoint ``fit`` starts from. In a SLURM job, the newest of the run directory's own
    checkpoints when it has one: ``hpc_ckpt_<n>.ckpt`` (saved on the requeue signal) or
    ``checkpoints/last.ckpt``; a requeued job runs again, with the same overrides, in the same run
    directory (docs/scaling.md, "Training on a SLURM cluster"), so these are where it had got to. Otherwise ``ckpt_path``
    (None: from scratch)."""
    found: list[Path] = []
    if SLURMEnvironment.detect():
        found += Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")
        callback = trainer.checkpoint_callback
        if callback is not None and getattr(callback, "dirpath", None):
            found.append(Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}.ckpt")
    found = [p for p in found if p.is_file()]
    if found:
        return str(max(found, key=lambda p: p.stat().st_mtime))
    return cfg.get("ckpt_path")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from the config, fit, then test. Returns the metrics and artefact paths."""
    cfg = with_teacher(cfg)
    preflight(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    coarse = instantiate(cfg.coarse)
    attributes = instantiate(cfg.attributes)
    model: L.LightningModule = instantiate(cfg.model, coarse=coarse, attributes=attributes)
    if hasattr(model, "run_config"):
        model.run_config = config_for_checkpoint(cfg)
    if hasattr(model, "use_metrics") and cfg.get("metrics") is not None:
        model.use_metrics(cfg.metrics)  # metrics.validation, metrics.test (conf/metrics)
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    if cfg.get("train"):
        ckpt_path = resume_checkpoint(cfg, trainer)
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if cfg.get("test"):
        ckpt = None
        if cfg.get("train") and trainer.checkpoint_callback is not None:
            ckpt = trainer.checkpoint_callback.best_model_path or None
        elif not cfg.get("train"):
            ckpt = cfg.get("ckpt_path")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    result = {"metrics": metrics, "output_dir": trainer.default_root_dir}
    if trainer.checkpoint_callback is not None:
        result["best_checkpoint"] = trainer.checkpoint_callback.best_model_path
        result["last_checkpoint"] = trainer.checkpoint_callback.last_model_path
    for cb in callbacks:
        if getattr(cb, "last_path", None) is not None:
            result["last_sample_grid"] = str(cb.last_path)
        if getattr(cb, "video_paths", None):
            result["test_videos"] = [str(p) for p in cb.video_paths]
    for logger in loggers:
        if logger.__class__.__name__ == "WandbLogger":
            result["wandb_run"] = str(Path(logger.experiment.dir).parent)
    if trainer.is_global_zero:
        summary = [f"Run directory: {result['output_dir']}"]
        for key in ("best_checkpoint", "last_checkpoint", "last_sample_grid", "wandb_run"):
            if result.get(key):
                summary.append(f"{key.replace('_', ' ').capitalize()}: {result[key]}")
        if "wandb_run" in result:
            summary.append(f"  (offline; upload with: wandb sync {result['wandb_run']})")
        if result.get("test_videos"):
            summary.append(
                f"Test videos (truth | coarse | refined): {', '.join(result['test_videos'])}"
            )
        test_metrics = {k: v for k, v in metrics.items() if k.startswith("test/")}
        if test_metrics:
            # read by `python -m fadm_lightning.report` (mean ± std over the seeds of a multirun)
            path = Path(result["output_dir"]) / "test_metrics.json"
            path.write_text(json.dumps(test_metrics, indent=1, sort_keys=True))
            summary.append("Held-out test clips (source = first frame, driving = every frame):")
            summary.append(format_table(metrics, "test"))
            if "test/l1_refined" in metrics:
                from fadm_lightning.metrics.lpips_fid import LPIPSAlex

                summary.append(
                    f"{LPIPSAlex.label}: unavailable in the training test stage; `python -m "
                    "fadm_lightning.evaluate ckpt=<checkpoint> metrics.lpips_alexnet=PATH` computes "
                    f"it ({LPIPSAlex(None).reason})"
                )
        print("\n".join(summary), flush=True)
    return result


@hydra_main("train")
def main(cfg: DictConfig) -> float | None:
    result = train(cfg)
    return result["metrics"].get("val/psnr_refined")  # for sweepers that optimise a value


if __name__ == "__main__":
    main()
