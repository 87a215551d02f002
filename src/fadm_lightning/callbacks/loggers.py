"""The W&B loggers of a trainer (the callbacks log pictures and videos only where W&B is used)."""

from __future__ import annotations


def wandb_loggers(trainer) -> list:
    """The trainer's ``WandbLogger``s (empty when W&B is not in use)."""
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
