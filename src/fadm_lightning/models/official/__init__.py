"""The official FADM denoiser (``diffusion.pth``) and the files of the official release.

Our own implementation of the released diffusion refiner: the SR3-style UNet and the official
condition network (REFERENCE_SPEC §4.1–4.4), whose state dict loads the released
``diffusion.pth`` strictly (``tests/data/reference/fadm_denoiser_keys.txt``).

* :class:`OfficialFADMDenoiser` — one module in both roles of :class:`~fadm_lightning.pipeline.FADMPipeline`
  (``encode`` / ``condition`` as the AGCN, ``denoiser(cat(x_t, c), t).sample`` as the UNet).
* :class:`ConditionNet`, :class:`SR3UNet`, :class:`GaussianDiffusion` — the networks.
* :func:`condition_inputs` — g_i and the colour images of §4.4.
* :func:`load_diffusion_checkpoint` / :func:`save_diffusion_checkpoint` — the official format.
* :data:`RELEASE_FILES`, :func:`missing_release_files` — the four released files and the check
  that they are there (the pipeline: ``FADMPipeline.from_official_release``).
"""

from .checkpoint import (
    DiffusionCheckpointError,
    load_diffusion_checkpoint,
    save_diffusion_checkpoint,
)
from .condition import ConditionFeatures, ConditionNet, condition_inputs
from .denoiser import (
    SCHEDULE_BUFFERS,
    DenoiserOutput,
    GaussianDiffusion,
    OfficialFADMDenoiser,
    linear_beta_schedule,
)
from .release import (
    RELEASE_FILES,
    OfficialReleaseMissingError,
    missing_release_files,
)
from .unet import SR3UNet

__all__ = [
    "RELEASE_FILES",
    "SCHEDULE_BUFFERS",
    "ConditionFeatures",
    "ConditionNet",
    "DenoiserOutput",
    "DiffusionCheckpointError",
    "GaussianDiffusion",
    "OfficialFADMDenoiser",
    "OfficialReleaseMissingError",
    "SR3UNet",
    "condition_inputs",
    "linear_beta_schedule",
    "load_diffusion_checkpoint",
    "missing_release_files",
    "save_diffusion_checkpoint",
]
