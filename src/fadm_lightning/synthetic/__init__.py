"""The synthetic world: procedural talking heads, their motion and a dataset writer.

:mod:`~fadm_lightning.synthetic.world` holds the identities, the face geometry, :func:`render`
and :func:`landmarks`; :mod:`~fadm_lightning.synthetic.motion` the pose and expression
trajectories (:func:`sample_motion`); both need only numpy and torch. The per-frame
ground truth of a clip is stored by :mod:`~fadm_lightning.synthetic.annotations`; the dataset
writer :mod:`~fadm_lightning.synthetic.dataset` (:func:`generate_dataset`) writes clips in the
VoxCeleb layout through :mod:`fadm_lightning.media`. Nothing here imports ``fadm_lightning.data``
(the data modules import this package).
"""

from __future__ import annotations

from fadm_lightning.synthetic.dataset import (
    CLIP_NAME,
    DATASET_VERSION,
    GENERATED_SPLITS,
    generate_dataset,
)
from fadm_lightning.synthetic.motion import sample_motion
from fadm_lightning.synthetic.world import (
    EXPRESSION_NAMES,
    IDENTITY_DIM,
    IDENTITY_LAYOUT,
    LANDMARK_FLIP_INDEX,
    LANDMARK_NAMES,
    NUM_LANDMARKS,
    POSE_NAMES,
    landmarks,
    mirror_identity,
    render,
    render_clip,
    sample_identity,
    to_uint8,
)

__all__ = [
    "CLIP_NAME",
    "DATASET_VERSION",
    "EXPRESSION_NAMES",
    "GENERATED_SPLITS",
    "IDENTITY_DIM",
    "IDENTITY_LAYOUT",
    "LANDMARK_FLIP_INDEX",
    "LANDMARK_NAMES",
    "NUM_LANDMARKS",
    "POSE_NAMES",
    "generate_dataset",
    "landmarks",
    "mirror_identity",
    "render",
    "render_clip",
    "sample_identity",
    "sample_motion",
    "to_uint8",
]
