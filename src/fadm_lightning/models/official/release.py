"""The official FADM release: its four files and the check that they are there.

The assembly into a ready pipeline is :meth:`fadm_lightning.pipeline.FADMPipeline.from_official_release`
(``models/`` never imports the pipeline).

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
defaults of ``FADMPipeline.sample`` (``num_inference_steps=100, eta=1.0``, one ``seed`` per
video).
"""

from __future__ import annotations

import os
from pathlib import Path

from fadm_lightning.models.attributes.deca import CHECKPOINT_DESCRIPTION as DECA_DESCRIPTION
from fadm_lightning.models.coarse.facevid.checkpoint import (
    EXPECTED_CHECKPOINT as FACEVID_DESCRIPTION,
)
from fadm_lightning.models.coarse.fomm.checkpoint import EXPECTED_CHECKPOINT as FOMM_DESCRIPTION

from .checkpoint import EXPECTED_CHECKPOINT as DIFFUSION_DESCRIPTION

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
