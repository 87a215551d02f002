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
pipeline's own sampler (:data:`fadm_lightning.sampler.OFFICIAL`: 100 steps, η = 1; one
``seed`` per video).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from fadm_lightning.models.attributes.deca import CHECKPOINT_DESCRIPTION as DECA_DESCRIPTION
from fadm_lightning.models.coarse.base import CoarseGenerator
from fadm_lightning.models.coarse.facevid.checkpoint import (
    EXPECTED_CHECKPOINT as FACEVID_DESCRIPTION,
)
from fadm_lightning.models.coarse.fomm.checkpoint import EXPECTED_CHECKPOINT as FOMM_DESCRIPTION
from fadm_lightning.sampler import OFFICIAL

from .checkpoint import EXPECTED_CHECKPOINT as DIFFUSION_DESCRIPTION

PathLike = str | os.PathLike[str]
#: the package's coarse-generator configs (``conf/coarse/<name>.yaml``, ``_target_`` = the class)
_COARSE_CONFIGS = resources.files("fadm_lightning") / "conf" / "coarse"

RELEASE_FILES = {
    "diffusion": DIFFUSION_DESCRIPTION,
    "deca": DECA_DESCRIPTION,
    "facevid": FACEVID_DESCRIPTION,
    "fomm": FOMM_DESCRIPTION,
}


class OfficialReleaseMissingError(FileNotFoundError):
    """Files of the official release are missing; the message lists every one."""


def release_coarse_class(coarse: str) -> type[CoarseGenerator]:
    """The coarse generator of ``conf/coarse/<coarse>.yaml`` (its ``_target_``), which must
    declare the release file it loads (``capabilities.release_file``): there is no list of names
    here; a generator whose weights the release holds is found through its YAML.

    Raises:
        ValueError: no such YAML, or its generator has no file in the official release.
    """
    kind = _release_class(_COARSE_CONFIGS / f"{coarse}.yaml")
    if kind is None:
        choices = sorted(
            path.name.removesuffix(".yaml")
            for path in _COARSE_CONFIGS.iterdir()
            if path.name.endswith(".yaml") and _release_class(path) is not None
        )
        raise ValueError(
            f"from_official_release: coarse must be {' or '.join(map(repr, choices))} "
            f"(a conf/coarse/*.yaml whose generator has a file in the release), got {coarse!r}"
        )
    return kind


def _release_class(config: Any) -> type[CoarseGenerator] | None:
    """The ``_target_`` class of a coarse YAML when it declares a file of the release."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    if not config.is_file():
        return None
    target = OmegaConf.load(str(config)).get("_target_")
    if not isinstance(target, str):
        return None
    try:
        kind = get_class(target)
    except Exception:  # a class that cannot be imported here: not one of the release
        return None
    if not (isinstance(kind, type) and issubclass(kind, CoarseGenerator)):
        return None
    return kind if kind.capabilities.release_file in RELEASE_FILES else None


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


def assemble_official_release(
    pipeline_cls: type,
    diffusion: str | os.PathLike[str] | None,
    deca: str | os.PathLike[str] | None,
    facevid: str | os.PathLike[str] | None = None,
    fomm: str | os.PathLike[str] | None = None,
    coarse: str = "facevid",
    attributes_from: str = "coarse",
    facevid_options: Mapping[str, Any] | None = None,
    fomm_options: Mapping[str, Any] | None = None,
    denoiser_options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Any:
    """The official release's files as a ``pipeline_cls`` (FADMPipeline hands itself in:
    :meth:`FADMPipeline.from_official_release` documents the arguments)."""
    from fadm_lightning.models.attributes import deca as deca_module
    from fadm_lightning.models.official.checkpoint import load_diffusion_checkpoint
    from fadm_lightning.models.official.denoiser import OfficialFADMDenoiser

    # the coarse generator: the class of conf/coarse/<coarse>.yaml, its file the one it declares
    coarse_class = release_coarse_class(coarse)
    release_file = str(coarse_class.capabilities.release_file)
    files = {"facevid": facevid, "fomm": fomm}  # the release's coarse weights, by file key
    options = {"facevid": facevid_options, "fomm": fomm_options}
    problems = missing_release_files(diffusion, deca, facevid, fomm, release_file)
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise OfficialReleaseMissingError(
            f"Cannot load the official FADM release: {len(problems)} required file(s) "
            f"missing:\n{lines}\nSet them on the command line (model.diffusion=…, "
            "model.deca=…, model.facevid=…, model.fomm=… with model=fadm_official_release; "
            "diffusion=…, deca=…, facevid=…, fomm=… for convert_release), in "
            "conf/model/fadm_official_release.yaml or via paths.pretrained_dir; see "
            "docs/official_release.md."
        )

    # 1. denoiser (AGCN and UNet in one module)
    denoiser_args = dict(denoiser_options or {})
    denoiser = OfficialFADMDenoiser(**denoiser_args)
    load_diffusion_checkpoint(diffusion, denoiser)
    denoiser.requires_grad_(False).eval()

    # 2. coarse generator and attributes (frozen by construction)
    coarse_args = {**(options[release_file] or {}), "checkpoint": str(files[release_file])}
    coarse_generator = coarse_class(**coarse_args)
    attributes_class = deca_module.DECAAttributes
    attributes = attributes_class(checkpoint=str(deca))
    if attributes.dim != denoiser.attr_dim:
        raise ValueError(
            f"attribute size mismatch: DECA gives {attributes.dim}, the denoiser expects "
            f"{denoiser.attr_dim}"
        )
    for module in (denoiser, coarse_generator, attributes):
        module.to(device)

    def target(kind: type) -> str:
        return f"{kind.__module__}.{kind.__qualname__}"

    return pipeline_cls(
        agcn=denoiser,
        unet=denoiser,
        scheduler=denoiser.make_scheduler(),
        coarse=coarse_generator,
        attributes=attributes,
        attributes_from=attributes_from,
        image_size=denoiser.image_size,
        sampler=OFFICIAL,
        part_configs={
            "unet": {"_target_": target(OfficialFADMDenoiser), **denoiser_args},
            "coarse": {"_target_": target(coarse_class), **coarse_args},
            "attributes": {"_target_": target(attributes_class), "checkpoint": str(deca)},
        },
        source={
            "official_release": {
                "diffusion": str(diffusion),
                "deca": str(deca),
                release_file: str(files[release_file]),
            }
        },
    )
