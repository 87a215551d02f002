"""Assemble the official FADM release (four files) into a ready :class:`FADMPipeline`.

The release and what each file is for (``conf/model/fadm_official_release.yaml``,
``docs/official_release.md``):

| file              | network                                         | used by                        |
|-------------------|-------------------------------------------------|--------------------------------|
| ``diffusion.pth`` | condition network + SR3 UNet + schedule        | always                         |
| ``deca_model.tar``| DECA ``E_flame`` (attributes exp + pose, 56-d)  | always                         |
| ``Facevid.pth``   | face-vid2vid (coarse frames of the demo)        | ``coarse="facevid"`` (default) |
| ``FOMM.pth``      | FOMM vox-256 (coarse frames of training)        | ``coarse="fomm"``              |

The official demo (REFERENCE_SPEC §4.4, §4.6): face-vid2vid coarse frames with absolute
keypoints, the attribute difference DECA(source) − DECA(**coarse frame**), the appearance image
made from the coarse frame, and DDIM η = 1 over all 100 steps with noise fixed per video — the
defaults of :meth:`FADMPipeline.sample` (``num_inference_steps=100, eta=1.0``, one ``seed`` per
video).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from fadm_lightning.models.attributes.deca import CHECKPOINT_DESCRIPTION as DECA_DESCRIPTION
from fadm_lightning.models.attributes.deca import DECAAttributes
from fadm_lightning.models.coarse.facevid import FacevidCoarseGenerator
from fadm_lightning.models.coarse.facevid.checkpoint import (
    EXPECTED_CHECKPOINT as FACEVID_DESCRIPTION,
)
from fadm_lightning.models.coarse.fomm import FOMMCoarseGenerator
from fadm_lightning.models.coarse.fomm.checkpoint import EXPECTED_CHECKPOINT as FOMM_DESCRIPTION
from fadm_lightning.pipeline import FADMPipeline

from .checkpoint import EXPECTED_CHECKPOINT as DIFFUSION_DESCRIPTION
from .checkpoint import load_diffusion_checkpoint
from .denoiser import OfficialFADMDenoiser

PathLike = str | os.PathLike[str]

RELEASE_FILES = {
    "diffusion": DIFFUSION_DESCRIPTION,
    "deca": DECA_DESCRIPTION,
    "facevid": FACEVID_DESCRIPTION,
    "fomm": FOMM_DESCRIPTION,
}


class OfficialReleaseMissingError(FileNotFoundError):
    """Files of the official release are missing; the message lists every one."""


def missing_release_files(
    diffusion: PathLike | None,
    deca: PathLike | None,
    facevid: PathLike | None = None,
    fomm: PathLike | None = None,
    coarse: str = "facevid",
) -> list[str]:
    """One line per required file that is unset or absent (empty when all are there).

    Required: ``diffusion``, ``deca`` and the checkpoint of the chosen ``coarse`` generator.
    """
    given = {"diffusion": diffusion, "deca": deca, "facevid": facevid, "fomm": fomm}
    problems = []
    for name in ("diffusion", "deca", coarse):
        value = given[name]
        if value is None or not Path(value).is_file():
            state = "not set" if value is None else f"'{value}' not found"
            problems.append(f"{name}: {state}. Expected {RELEASE_FILES[name]}.")
    return problems


def load_official_release(
    diffusion: PathLike | None,
    deca: PathLike | None,
    facevid: PathLike | None = None,
    fomm: PathLike | None = None,
    coarse: Literal["facevid", "fomm"] = "facevid",
    attributes_from: Literal["coarse", "driving"] = "coarse",
    facevid_options: Mapping[str, Any] | None = None,
    fomm_options: Mapping[str, Any] | None = None,
    denoiser_options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> FADMPipeline:
    """Build the official FADM release as a ready pipeline (frozen, eval mode, on ``device``).

    Every required file is checked before anything is built; all missing ones are reported
    together.

    Args:
        diffusion: ``diffusion.pth`` (the denoiser; :class:`OfficialFADMDenoiser`).
        deca: ``deca_model.tar`` (attributes; :class:`DECAAttributes`).
        facevid: ``Facevid.pth`` (required with ``coarse="facevid"``).
        fomm: ``FOMM.pth`` (required with ``coarse="fomm"``).
        coarse: the coarse generator: ``"facevid"`` (official demo) or ``"fomm"`` (the coarse
            frames FADM was trained on).
        attributes_from: ``"coarse"`` (official demo: attr_d = DECA(coarse frame)) or
            ``"driving"`` (paper: DECA(driving frame)).
        facevid_options: extra arguments of :class:`FacevidCoarseGenerator` (``mode``,
            ``yaw``/``pitch``/``roll``, …; sizes for tests).
        fomm_options: extra arguments of :class:`FOMMCoarseGenerator`.
        denoiser_options: extra arguments of :class:`OfficialFADMDenoiser` (sizes for tests).
        device: where every network is put.

    Returns:
        ``FADMPipeline(agcn=denoiser, unet=denoiser, scheduler=denoiser.make_scheduler(),
        coarse=…, attributes=DECA, attributes_from=…)``; call it as
        ``pipe(source, driving, num_inference_steps=100, eta=1.0, seed=…)``.

    Raises:
        ValueError: unknown ``coarse``.
        OfficialReleaseMissingError: required files are missing (each one is listed).
    """
    if coarse not in ("facevid", "fomm"):
        raise ValueError(
            f"load_official_release: coarse must be 'facevid' or 'fomm', got {coarse!r}"
        )
    problems = missing_release_files(diffusion, deca, facevid, fomm, coarse)
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise OfficialReleaseMissingError(
            f"Cannot load the official FADM release: {len(problems)} required file(s) missing:\n"
            f"{lines}\nSet them in conf/model/fadm_official_release.yaml, on the command line "
            "(model.diffusion=…, model.deca=…, model.facevid=…, model.fomm=…) or via "
            "paths.pretrained_dir; see docs/official_release.md."
        )

    # 1. denoiser
    denoiser = OfficialFADMDenoiser(**dict(denoiser_options or {}))
    load_diffusion_checkpoint(diffusion, denoiser)
    denoiser.requires_grad_(False).eval()

    # 2. coarse generator and attributes (frozen by construction)
    if coarse == "facevid":
        coarse_generator = FacevidCoarseGenerator(checkpoint=facevid, **dict(facevid_options or {}))
    else:
        coarse_generator = FOMMCoarseGenerator(checkpoint=fomm, **dict(fomm_options or {}))
    attributes = DECAAttributes(checkpoint=deca)
    if getattr(attributes, "dim", denoiser.attr_dim) != denoiser.attr_dim:
        raise ValueError(
            f"attribute size mismatch: DECA gives {attributes.dim}, the denoiser expects "
            f"{denoiser.attr_dim}"
        )
    for module in (denoiser, coarse_generator, attributes):
        module.to(device)
    return FADMPipeline(
        agcn=denoiser,
        unet=denoiser,
        scheduler=denoiser.make_scheduler(),
        coarse=coarse_generator,
        attributes=attributes,
        attributes_from=attributes_from,
    )
