"""face-vid2vid (Wang et al., CVPR 2021) as FADM uses it: the coarse generator of FADM's demo.

Our own implementation of the networks of FADM's ``modules/Facevid`` (zhanglonghao's
unofficial face-vid2vid, non-SPADE generator) in FADM's vox-256 configuration: their state dicts
match FADM's ``Facevid.pth`` key for key (``tests/data/reference/facevid_keys.txt``).

* :class:`FacevidCoarseGenerator` — the frozen coarse generator (``conf/coarse/facevid.yaml``):
  absolute / relative motion and free-view yaw, pitch, roll.
* :class:`KPDetector` (canonical 3-D keypoints), :class:`HEEstimator` (head pose, translation,
  expression), :class:`OcclusionAwareGenerator` (with :class:`DenseMotionNetwork`).
* :func:`headpose_pred_to_degree`, :func:`get_rotation_matrix`, :func:`keypoint_transformation`.
* :func:`load_facevid_checkpoint` / :func:`save_facevid_checkpoint` — the official format.
"""

from .checkpoint import FacevidCheckpointError, load_facevid_checkpoint, save_facevid_checkpoint
from .coarse_generator import FacevidCoarseGenerator
from .dense_motion import DenseMotionNetwork
from .generator import OcclusionAwareGenerator
from .keypoint_detector import HeadPose, HEEstimator, Keypoints, KPDetector
from .keypoint_transform import (
    get_rotation_matrix,
    head_pose_degrees,
    headpose_pred_to_degree,
    keypoint_transformation,
)

__all__ = [
    "DenseMotionNetwork",
    "FacevidCheckpointError",
    "FacevidCoarseGenerator",
    "HEEstimator",
    "HeadPose",
    "KPDetector",
    "Keypoints",
    "OcclusionAwareGenerator",
    "get_rotation_matrix",
    "head_pose_degrees",
    "headpose_pred_to_degree",
    "keypoint_transformation",
    "load_facevid_checkpoint",
    "save_facevid_checkpoint",
]
