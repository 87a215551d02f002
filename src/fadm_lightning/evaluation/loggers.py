"""An evaluation's results to the configured loggers (``logger=wandb``): the table, the
per-clip rows and the sample videos as W&B tables and videos, the numbers as metrics
``<protocol>/<method>/<metric>``. Nothing happens without a logger."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from fadm_lightning.evaluation.store import ResultStore
from fadm_lightning.evaluation.tables import table_lines


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
