"""Loading a trained FADM for inference, through one function, :func:`load_pipeline`: a training
checkpoint (written by ``python -m fadm_lightning.train``) or a pretrained folder
(:mod:`fadm_lightning.pretrained`).

A training checkpoint is self-contained: besides the AGCN and UNet weights (and their EMA) it
stores the composed ``data`` / ``model`` / ``coarse`` / ``attributes`` configs under the key
``"fadm_config"``. The frozen coarse generator and attribute extractor are rebuilt from those
configs (their own checkpoint files), optionally with overrides such as
``["coarse.checkpoint=/weights/vox-cpk.pth.tar"]``.

    pipe, cfg = load_pipeline("logs/train/runs/…/checkpoints/last.ckpt", device="cuda")
    out = pipe(source, driving)      # its own sampler (pipe.sampler); sampler=SamplerConfig(…)

The loaders themselves live below the pipeline, in :mod:`fadm_lightning.loading`; this module
hands them :class:`~fadm_lightning.pipeline.FADMPipeline` and re-exports their public names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from fadm_lightning.loading.errors import CheckpointError
from fadm_lightning.loading.folder import load_pretrained
from fadm_lightning.loading.training import (
    CONFIG_GROUPS,
    CONFIG_KEY,
    MOVED_TARGETS,
    PartCheck,
    _read,
    build_frozen_parts,
    config_for_checkpoint,
    describe_differences,
    load_training_checkpoint,
    merge_part_config,
    read_run_config,
    state_dict_differences,
    translate_targets,
    validation_sampler,
)
from fadm_lightning.pipeline import FADMPipeline

__all__ = [
    "CONFIG_GROUPS",
    "CONFIG_KEY",
    "MOVED_TARGETS",
    "CheckpointError",
    "PartCheck",
    "_read",
    "build_frozen_parts",
    "config_for_checkpoint",
    "describe_differences",
    "load_pipeline",
    "load_training_checkpoint",
    "merge_part_config",
    "read_run_config",
    "state_dict_differences",
    "translate_targets",
    "validation_sampler",
]


def load_pipeline(
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    *,
    coarse: Mapping | DictConfig | None = None,
    attributes: Mapping | DictConfig | None = None,
    need_coarse: bool = True,
    check_part: PartCheck | None = None,
) -> tuple[FADMPipeline, DictConfig]:
    """Rebuild the pipeline of a training checkpoint or of a pretrained folder.

    Every command that takes ``ckpt=`` (animate, rectify, evaluate, export, the benchmarks)
    loads through here: a file is a checkpoint written by ``python -m fadm_lightning.train``, a
    folder one written by :meth:`FADMPipeline.save_pretrained` (it holds ``model_index.json``;
    :func:`fadm_lightning.pretrained.load_pretrained`).

    Args:
        path: the Lightning checkpoint, or the folder.
        overrides: dot-list overrides of the stored configs, e.g. ``["coarse.checkpoint=…"]``
            (a folder: ``coarse.*``, ``attributes.*`` and ``data.*`` only).
        device: where to put the networks.
        use_ema: load the EMA weights when the checkpoint has them (a folder holds the weights
            that were exported: EMA ones when the run had them).
        coarse: a coarse-generator config: with ``_target_`` it replaces the stored one (e.g.
            the composed ``conf/coarse/fomm.yaml``), without it its keys override it.
        attributes: likewise for the attribute extractor.
        need_coarse: build the coarse generator (``rectify`` does not need one: a placeholder
            ``CoarseGenerator()`` takes its place, unless the model's denoiser also sees the
            coarse generator's warped source, ``guide_inputs=[deformed]``).
        check_part: called on each frozen part as soon as it is built (:data:`PartCheck`).
    Returns:
        ``(pipeline, config)``: ``config`` holds the ``data``, ``model``, ``coarse`` and
        ``attributes`` configs as used (a folder of the official release has no ``data`` /
        ``model``); the pipeline's ``image_size`` is the training resolution and its
        ``sampler`` (:class:`~fadm_lightning.sampler.SamplerConfig`) the one it was validated
        with, which every command's sampler knobs left at None take.
    Raises:
        FileNotFoundError: no such file or folder.
        CheckpointError: an unreadable checkpoint or folder, or weights that do not fit (the
            message lists the keys).
    """
    path = Path(path)
    options = dict(coarse=coarse, attributes=attributes, need_coarse=need_coarse)
    if path.is_dir():
        return load_pretrained(
            path, overrides, device, check_part=check_part, pipeline_cls=FADMPipeline, **options
        )
    return load_training_checkpoint(
        path, overrides, device, use_ema, check_part=check_part, **options
    )
