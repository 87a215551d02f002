"""Sharing a trained FADM: a self-contained folder in the diffusers layout.

    pipe.save_pretrained("fadm-vox256", model_card_metrics="logs/evaluate/…/results.json")
    pipe = FADMPipeline.from_pretrained("fadm-vox256", device="cuda")

``python -m fadm_lightning.export`` writes one from a training checkpoint,
``python -m fadm_lightning.convert_release`` from the official release, and every ``ckpt=`` of
animate / rectify / evaluate takes one (:func:`fadm_lightning.checkpoints.load_pipeline`).

The format (layout, strict loading) is :mod:`fadm_lightning.loading.folder`, its model card
:mod:`fadm_lightning.loading.card`; both sit below the pipeline and are handed its class. This
module binds :class:`~fadm_lightning.pipeline.FADMPipeline` and re-exports the public names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from fadm_lightning.loading import folder as _folder
from fadm_lightning.loading.card import CITATION, metrics_table, model_card, read_results
from fadm_lightning.loading.errors import PretrainedFolderError
from fadm_lightning.loading.folder import (
    ALLOWED_MODULES,
    CARD_NAME,
    CONFIG_NAME,
    DIFFUSERS_WEIGHTS_NAME,
    FORMAT_VERSION,
    FROZEN_PARTS,
    INDEX_NAME,
    OVERRIDABLE,
    PARTS,
    WEIGHTS_NAME,
    check_output_folder,
    folder_summary,
    load_weights,
    read_model_index,
    save_pretrained,
    write_folder_atomically,
)
from fadm_lightning.pipeline import FADMPipeline

__all__ = [
    "ALLOWED_MODULES",
    "CARD_NAME",
    "CITATION",
    "CONFIG_NAME",
    "DIFFUSERS_WEIGHTS_NAME",
    "FORMAT_VERSION",
    "FROZEN_PARTS",
    "INDEX_NAME",
    "OVERRIDABLE",
    "PARTS",
    "WEIGHTS_NAME",
    "PretrainedFolderError",
    "check_output_folder",
    "folder_summary",
    "load_pretrained",
    "load_weights",
    "metrics_table",
    "model_card",
    "read_model_index",
    "read_results",
    "save_pretrained",
    "write_folder_atomically",
]


def load_pretrained(
    folder: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    **options: Any,
) -> tuple[FADMPipeline, DictConfig]:
    """A pretrained folder → ``(FADMPipeline, config)``
    (:func:`fadm_lightning.loading.folder.load_pretrained`, handed the pipeline class)."""
    return _folder.load_pretrained(folder, overrides, device, pipeline_cls=FADMPipeline, **options)
