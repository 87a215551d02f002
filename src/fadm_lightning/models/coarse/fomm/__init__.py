"""First Order Motion Model (Siarohin et al., NeurIPS 2019), FADM's default coarse generator.

Our own implementation of the official vox-256 networks: their state dicts match the released
checkpoints key for key (``tests/data/reference/fomm_keys.txt``).

* :class:`FOMMCoarseGenerator` — the frozen coarse generator used by FADM (``conf/coarse/fomm.yaml``).
* :class:`KPDetector`, :class:`OcclusionAwareGenerator` (with :class:`DenseMotionNetwork`),
  :class:`MultiScaleDiscriminator` — the networks.
* :func:`load_fomm_checkpoint` / :func:`save_fomm_checkpoint` — the official checkpoint format.
* :func:`normalize_kp`, :func:`find_best_frame` — relative animation helpers.
"""

from .animation import convex_hull_area, find_best_frame, normalize_kp
from .checkpoint import FOMMCheckpointError, load_fomm_checkpoint, save_fomm_checkpoint
from .coarse_generator import FOMMCoarseGenerator
from .dense_motion import DenseMotionNetwork
from .discriminator import Discriminator, MultiScaleDiscriminator
from .generator import OcclusionAwareGenerator
from .keypoint_detector import Keypoints, KPDetector

__all__ = [
    "DenseMotionNetwork",
    "Discriminator",
    "FOMMCheckpointError",
    "FOMMCoarseGenerator",
    "KPDetector",
    "Keypoints",
    "MultiScaleDiscriminator",
    "OcclusionAwareGenerator",
    "convex_hull_area",
    "find_best_frame",
    "load_fomm_checkpoint",
    "normalize_kp",
    "save_fomm_checkpoint",
]
