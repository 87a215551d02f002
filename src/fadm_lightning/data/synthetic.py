"""A procedural talking-head world: identities, motion, a renderer and a dataset writer.

The default experiment trains on data this module generates, so the whole pipeline (data,
coarse generator, attribute extractor, refiner, metrics) runs without downloads.

Geometry
--------
Image points ``p`` live in the ``[-1, 1]`` grid convention (x right, y down, as
``F.grid_sample`` with ``align_corners=False``). The head pose maps ``p`` to head-plane
coordinates ``q = R(−roll)(p − t) / s``. The head is an egg-shaped ellipse of radii
``(rx, ry)`` centred at ``(0, HEAD_CENTRE_Y)`` in ``q``; its normalised coordinates ``u`` are
treated as the visible half of a unit sphere ``(u_x, u_y, sqrt(1 − |u|²))``. Rotating that point
by the inverse yaw/pitch gives *canonical* face coordinates ``(a, b, c)`` in which all facial
features are drawn (``a`` right, ``b`` down, ``c > 0`` the face side). :func:`landmarks` runs the
same mapping forwards, so landmarks land on the rendered features.

Identity vector layout (``IDENTITY_DIM = 41`` floats, see :data:`IDENTITY_LAYOUT`)
----------------------------------------------------------------------------------
| index | name           | range / meaning                                                   |
|-------|----------------|-------------------------------------------------------------------|
| 0     | head_rx        | head half-width in image units, 0.44–0.52                         |
| 1     | head_ry        | head half-height in image units, 0.56–0.64                        |
| 2     | chin_taper     | narrowing of the lower face, 0–0.3                                |
| 3     | eye_scale      | eye size factor, 0.9–1.15                                         |
| 4     | mouth_width    | mouth width factor, 0.85–1.15                                     |
| 5     | brow_thickness | brow half-thickness in face units, 0.025–0.05                     |
| 6:9   | skin_rgb       | skin colour                                                       |
| 9:12  | hair_rgb       | hair colour (brows are a darker shade of it)                      |
| 12    | hairline       | canonical height of the fringe, −0.75 (high) … −0.5 (low)         |
| 13    | hair_length    | canonical height where side/back hair ends, −0.2 (short) … 0.9    |
| 14    | hair_volume    | relative size of the hair outline around the head, 0.02–0.15      |
| 15    | hair_part      | asymmetry of the fringe, −0.3 … 0.3                               |
| 16:19 | iris_rgb       | iris colour                                                       |
| 19:22 | lip_rgb        | lip colour                                                        |
| 22:25 | clothes_rgb    | clothes colour                                                    |
| 25:28 | bg_color_a     | first background colour                                           |
| 28:31 | bg_color_b     | second background colour                                          |
| 31:34 | bg_freq        | angular frequencies of three background sinusoids, 1.5–7 rad/unit |
| 34:37 | bg_angle       | their directions (radians)                                        |
| 37:40 | bg_phase       | their phases (radians)                                            |
| 40    | light_x        | horizontal component of the light direction, −0.5 … 0.5           |

Pose is ``yaw, pitch, roll, tx, ty, scale`` (positive yaw turns the face towards image right,
positive pitch tilts it up); expression is ``mouth_open, smile, blink_left, blink_right,
brow_raise`` in ``[0, 1]`` ("left" = the eye on the image left at zero pose).

Landmarks (``NUM_LANDMARKS = 22``, names in :data:`LANDMARK_NAMES`): 7 jaw/chin outline points,
2 brow centres, 4 eye corners, eye top/bottom of both eyes, nose tip, 2 mouth corners and the
centres of the upper and lower lip.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fadm_lightning.data.annotations import ANNOTATION_DIR, annotation_path, save_annotation
from fadm_lightning.data.video import write_mp4, write_png_folder

IDENTITY_LAYOUT: dict[str, slice] = {
    "head_rx": slice(0, 1),
    "head_ry": slice(1, 2),
    "chin_taper": slice(2, 3),
    "eye_scale": slice(3, 4),
    "mouth_width": slice(4, 5),
    "brow_thickness": slice(5, 6),
    "skin_rgb": slice(6, 9),
    "hair_rgb": slice(9, 12),
    "hairline": slice(12, 13),
    "hair_length": slice(13, 14),
    "hair_volume": slice(14, 15),
    "hair_part": slice(15, 16),
    "iris_rgb": slice(16, 19),
    "lip_rgb": slice(19, 22),
    "clothes_rgb": slice(22, 25),
    "bg_color_a": slice(25, 28),
    "bg_color_b": slice(28, 31),
    "bg_freq": slice(31, 34),
    "bg_angle": slice(34, 37),
    "bg_phase": slice(37, 40),
    "light_x": slice(40, 41),
}
IDENTITY_DIM = 41
POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")
EXPRESSION_NAMES = ("mouth_open", "smile", "blink_left", "blink_right", "brow_raise")
LANDMARK_NAMES = (
    *(f"jaw_{i}" for i in range(7)),  # image-left ear level → chin → image-right ear level
    "brow_left",
    "brow_right",
    "eye_left_outer",
    "eye_left_inner",
    "eye_right_inner",
    "eye_right_outer",
    "eye_left_top",
    "eye_left_bottom",
    "eye_right_top",
    "eye_right_bottom",
    "nose_tip",
    "mouth_left",
    "mouth_right",
    "lip_upper",
    "lip_lower",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)

# Head placement in head-plane coordinates q.
HEAD_CENTRE_Y = -0.08
# Canonical feature geometry (units: normalised head coordinates, head radius = 1).
EYE_X, EYE_Y, EYE_W, EYE_H = 0.36, -0.12, 0.16, 0.085
EYE_LOWER = 0.8  # lower-lid curvature relative to the upper lid
IRIS_R, PUPIL_R = 0.07, 0.032
BROW_Y, BROW_RAISE, BROW_W, BROW_ARCH = -0.34, 0.09, 0.19, 0.06
NOSE_X, NOSE_Y = 0.0, 0.2
MOUTH_Y, MOUTH_W, MOUTH_OPEN, MOUTH_CLOSED = 0.47, 0.26, 0.2, 0.012
SMILE_LIFT, SMILE_WIDEN = 0.09, 0.15
MOUTH_UPPER_SHARE = 0.35  # share of the opening above the mouth line (the jaw drops the rest)
LIP_UPPER, LIP_LOWER = 0.06, 0.075
TEETH_H = 0.035
LIGHT_Y, LIGHT_Z = -0.45, 0.82  # view-space light direction (x from the identity): top, front

DATASET_VERSION = 2
CLIP_NAME = "id{:05d}#clip{:02d}.mp4"
#: every split the writer knows, in the order of their person indices (train, test, then val)
GENERATED_SPLITS = ("train", "test", "val")
_CLIP_PATTERN = re.compile(r"^id\d{5}#clip\d{2}\.mp4$")


# ----------------------------------------------------------------------------------------------
# Sampling identities and motion
# ----------------------------------------------------------------------------------------------


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> list:
    """A random RGB colour from uniform hue and the given saturation/value ranges."""
    h, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return list(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _pick(rng: np.random.Generator, palette: list[tuple[float, float, float]], jitter: float):
    base = np.asarray(palette[rng.integers(len(palette))])
    return list(np.clip(base * rng.uniform(1 - jitter, 1 + jitter, size=3), 0.0, 1.0))


_HAIR_PALETTE = [
    (0.08, 0.06, 0.05),  # black
    (0.22, 0.13, 0.07),  # dark brown
    (0.42, 0.27, 0.14),  # brown
    (0.82, 0.66, 0.38),  # blond
    (0.58, 0.22, 0.08),  # red
    (0.62, 0.62, 0.62),  # grey
]
_IRIS_PALETTE = [
    (0.36, 0.21, 0.10),  # brown
    (0.20, 0.12, 0.06),  # dark brown
    (0.22, 0.42, 0.70),  # blue
    (0.28, 0.50, 0.30),  # green
    (0.45, 0.50, 0.56),  # grey
]


def sample_identity(rng: np.random.Generator) -> np.ndarray:
    """Random identity parameters: float32 vector of length ``IDENTITY_DIM`` (layout above)."""
    skin_t = rng.uniform(0.0, 1.0)
    skin = np.array([0.98, 0.84, 0.72]) * (1 - skin_t) + np.array([0.42, 0.27, 0.19]) * skin_t
    skin = np.clip(skin + rng.normal(0.0, 0.02, size=3), 0.0, 1.0)
    lip_t = rng.uniform(0.3, 0.7)
    lip = skin * np.array([1.0, 0.55, 0.6]) * (1 - lip_t) + np.array([0.75, 0.28, 0.33]) * lip_t
    values = {
        "head_rx": [rng.uniform(0.44, 0.52)],
        "head_ry": [rng.uniform(0.56, 0.64)],
        "chin_taper": [rng.uniform(0.0, 0.3)],
        "eye_scale": [rng.uniform(0.9, 1.15)],
        "mouth_width": [rng.uniform(0.85, 1.15)],
        "brow_thickness": [rng.uniform(0.025, 0.05)],
        "skin_rgb": list(skin),
        "hair_rgb": _pick(rng, _HAIR_PALETTE, 0.15),
        "hairline": [rng.uniform(-0.75, -0.5)],
        "hair_length": [rng.uniform(-0.2, 0.9)],
        "hair_volume": [rng.uniform(0.02, 0.15)],
        "hair_part": [rng.uniform(-0.3, 0.3)],
        "iris_rgb": _pick(rng, _IRIS_PALETTE, 0.15),
        "lip_rgb": list(np.clip(lip, 0.0, 1.0)),
        "clothes_rgb": _hsv(rng, (0.3, 0.9), (0.25, 0.9)),
        "bg_color_a": _hsv(rng, (0.1, 0.7), (0.3, 0.95)),
        "bg_color_b": _hsv(rng, (0.1, 0.7), (0.3, 0.95)),
        "bg_freq": list(rng.uniform(1.5, 7.0, size=3)),
        "bg_angle": list(rng.uniform(0.0, math.pi, size=3)),
        "bg_phase": list(rng.uniform(0.0, 2 * math.pi, size=3)),
        "light_x": [rng.uniform(-0.5, 0.5)],
    }
    out = np.zeros(IDENTITY_DIM, dtype=np.float32)
    for name, sl in IDENTITY_LAYOUT.items():
        out[sl] = values[name]
    return out


def _smooth_signal(
    rng: np.random.Generator, t: np.ndarray, fmin: float, fmax: float, n: int = 3
) -> np.ndarray:
    """A sum of ``n`` sinusoids (frequencies in Hz) with random phases, normalised to [−1, 1]."""
    freqs = rng.uniform(fmin, fmax, size=n)
    phases = rng.uniform(0.0, 2 * math.pi, size=n)
    weights = rng.uniform(0.5, 1.0, size=n)
    waves = np.sin(2 * math.pi * freqs[:, None] * t[None] + phases[:, None])
    return (weights[:, None] * waves).sum(0) / weights.sum()


def _bounded(rng: np.random.Generator, t: np.ndarray, limit: float, offset: float) -> np.ndarray:
    """A smooth trajectory ``o + a·signal`` with ``|o| + a ≤ limit`` (so it stays in ±limit)."""
    off = rng.uniform(-offset, offset)
    amp = rng.uniform(0.3, 1.0) * (limit - abs(off))
    return off + amp * _smooth_signal(rng, t, 0.15, 0.7)


def _blinks(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """Blink pulses (T×2, left and right) every 2–4 s; both eyes together but for rare winks."""
    out = np.zeros((num_frames, 2))
    frames = np.arange(num_frames, dtype=np.float64)
    centre = rng.uniform(0.0, 3.0) * fps - 0.5 * fps
    while centre < num_frames + 3:
        width = rng.uniform(1.0, 1.5)  # Gaussian sigma in frames (a blink lasts ~4–6 frames)
        delay = rng.uniform(-0.4, 0.4)  # the right eye may lag the left by a fraction of a frame
        amp = rng.uniform(0.9, 1.0, size=2)
        if rng.uniform() < 0.1:  # a wink
            amp[rng.integers(2)] = 0.0
        for eye, shift in ((0, 0.0), (1, delay)):
            out[:, eye] += amp[eye] * np.exp(-0.5 * ((frames - centre - shift) / width) ** 2)
        centre += rng.uniform(2.0, 4.0) * fps
    return np.clip(out, 0.0, 1.0)


def sample_motion(
    rng: np.random.Generator, num_frames: int, fps: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth talking-head motion: ``(pose T×6, expression T×5)`` float32 arrays.

    Pose: yaw ±0.5, pitch ±0.3, roll ±0.2 (radians), tx/ty ±0.1, scale 0.9–1.1. Expression:
    mouth_open (syllables at 3–5 Hz under a slow speech envelope), smile (slow), blinks (short
    pulses every 2–4 s, both eyes mostly together), brow_raise (slow), all in [0, 1].
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    t = np.arange(num_frames) / fps
    yaw = _bounded(rng, t, 0.5, 0.15)
    pitch = _bounded(rng, t, 0.3, 0.1)
    roll = _bounded(rng, t, 0.2, 0.07)
    tx = _bounded(rng, t, 0.1, 0.04)
    ty = _bounded(rng, t, 0.1, 0.04)
    scale = 1.0 + _bounded(rng, t, 0.1, 0.04)
    pose = np.stack([yaw, pitch, roll, tx, ty, scale], axis=1)

    speech = np.clip(0.55 + 0.8 * _smooth_signal(rng, t, 0.2, 0.5), 0.0, 1.0)
    syllable_rate = rng.uniform(3.0, 5.0)
    wobble = 0.6 * np.sin(2 * math.pi * 1.3 * t + rng.uniform(0, 2 * math.pi))
    phase = 2 * math.pi * syllable_rate * t + rng.uniform(0, 2 * math.pi) + wobble
    syllables = (0.5 + 0.5 * np.sin(phase)) ** 1.5
    mouth = rng.uniform(0.6, 1.0) * speech * syllables
    smile = np.clip(rng.uniform(0.0, 0.6) + 0.4 * _smooth_signal(rng, t, 0.05, 0.3), 0.0, 1.0)
    blink = _blinks(rng, num_frames, fps)
    brow_base = rng.uniform(0.0, 0.4) + 0.35 * _smooth_signal(rng, t, 0.1, 0.5)
    brow = np.clip(brow_base + 0.2 * speech, 0.0, 1.0)
    expression = np.stack([mouth, smile, blink[:, 0], blink[:, 1], brow], axis=1)
    return pose.astype(np.float32), np.clip(expression, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Geometry shared by the renderer and the landmarks
# ----------------------------------------------------------------------------------------------


def _field(identity: torch.Tensor, name: str) -> torch.Tensor:
    """One identity field as B×k."""
    return identity[:, IDENTITY_LAYOUT[name]]


def _features(identity: torch.Tensor, expression: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expression-dependent canonical feature geometry; every value is a B tensor."""
    expression = expression.clamp(0.0, 1.0)
    mouth_open, smile, blink_l, blink_r, brow = expression.unbind(1)
    eye_scale = _field(identity, "eye_scale")[:, 0]
    mouth_w = MOUTH_W * _field(identity, "mouth_width")[:, 0] * (1 + SMILE_WIDEN * smile)
    return {
        "eye_w": EYE_W * eye_scale,
        "eye_h_left": EYE_H * eye_scale * (1 - blink_l),
        "eye_h_right": EYE_H * eye_scale * (1 - blink_r),
        "iris_r": IRIS_R * eye_scale,
        "pupil_r": PUPIL_R * eye_scale,
        "brow_y": BROW_Y - BROW_RAISE * brow,
        "mouth_w": mouth_w,
        "mouth_lift": SMILE_LIFT * smile,
        "mouth_h": MOUTH_CLOSED + MOUTH_OPEN * mouth_open,
    }


def _rotation_terms(pose: torch.Tensor) -> tuple[torch.Tensor, ...]:
    yaw, pitch, roll = pose[:, 0], pose[:, 1], pose[:, 2]
    return yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()


def _canonical_to_image(
    identity: torch.Tensor, pose: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Project canonical face points (a, b: B×L, on the front of the head) to image B×L×2."""
    cos_yaw, sin_yaw, cos_pitch, sin_pitch, _, _ = (v[:, None] for v in _rotation_terms(pose))
    c = (1 - a.square() - b.square()).clamp_min(0.0).sqrt()
    # view = R_yaw · R_pitch · canonical
    uy = cos_pitch * b - sin_pitch * c
    z1 = sin_pitch * b + cos_pitch * c
    ux = cos_yaw * a + sin_yaw * z1
    return _head_to_image(identity, pose, ux, uy)


def _head_to_image(
    identity: torch.Tensor, pose: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor
) -> torch.Tensor:
    """Normalised head coordinates (B×L each) to image points B×L×2."""
    rx, ry, taper = (_field(identity, k) for k in ("head_rx", "head_ry", "chin_taper"))
    _, _, _, _, cos_roll, sin_roll = (v[:, None] for v in _rotation_terms(pose))
    tx, ty, scale = pose[:, 3:4], pose[:, 4:5], pose[:, 5:6]
    qx = ux * rx * (1 - taper * uy.clamp(0.0, 1.0).square())
    qy = HEAD_CENTRE_Y + uy * ry
    px = scale * (cos_roll * qx - sin_roll * qy) + tx
    py = scale * (sin_roll * qx + cos_roll * qy) + ty
    return torch.stack([px, py], dim=-1)


def landmarks(identity: torch.Tensor, pose: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    """2-D landmarks B×NUM_LANDMARKS×2 (x, y in the [−1, 1] grid), same geometry as :func:`render`.

    Args:
        identity: B×IDENTITY_DIM identity parameters.
        pose: B×6 (yaw, pitch, roll, tx, ty, scale).
        expression: B×5 (mouth_open, smile, blink_left, blink_right, brow_raise).
    """
    identity, pose, expression = (x.float() for x in (identity, pose, expression))
    f = _features(identity, expression)
    # 1. jaw/chin outline: silhouette points of the head at angles 15°…165° below the centre
    angles = torch.linspace(15.0, 165.0, 7, device=identity.device).deg2rad()
    batch = identity.shape[0]
    jaw = _head_to_image(
        identity, pose, -angles.cos().expand(batch, -1), angles.sin().expand(batch, -1)
    )
    # 2. canonical feature points
    zero = torch.zeros_like(f["eye_w"])
    eye_y = zero + EYE_Y
    mouth_line = MOUTH_Y - f["mouth_lift"]
    upper_in = MOUTH_Y - MOUTH_UPPER_SHARE * f["mouth_h"]
    lower_in = MOUTH_Y + (1 - MOUTH_UPPER_SHARE) * f["mouth_h"]
    points = [
        (zero - EYE_X, f["brow_y"]),
        (zero + EYE_X, f["brow_y"]),
        (-EYE_X - f["eye_w"], eye_y),
        (-EYE_X + f["eye_w"], eye_y),
        (EYE_X - f["eye_w"], eye_y),
        (EYE_X + f["eye_w"], eye_y),
        (zero - EYE_X, EYE_Y - f["eye_h_left"]),
        (zero - EYE_X, EYE_Y + EYE_LOWER * f["eye_h_left"]),
        (zero + EYE_X, EYE_Y - f["eye_h_right"]),
        (zero + EYE_X, EYE_Y + EYE_LOWER * f["eye_h_right"]),
        (zero + NOSE_X, zero + NOSE_Y),
        (-f["mouth_w"], mouth_line),
        (f["mouth_w"], mouth_line),
        (zero, upper_in - 0.5 * LIP_UPPER),
        (zero, lower_in + 0.5 * LIP_LOWER),
    ]
    a = torch.stack([p[0] for p in points], dim=1)
    b = torch.stack([p[1] for p in points], dim=1)
    return torch.cat([jaw, _canonical_to_image(identity, pose, a, b)], dim=1)


def _landmark_flip_index() -> tuple[int, ...]:
    index = {name: i for i, name in enumerate(LANDMARK_NAMES)}
    out = []
    for name in LANDMARK_NAMES:
        if name.startswith("jaw_"):
            out.append(index[f"jaw_{6 - int(name[4:])}"])
            continue
        swapped = name.replace("left", "#").replace("right", "left").replace("#", "right")
        out.append(index[swapped])
    return tuple(out)


#: Landmark order after a horizontal mirror (left ↔ right, jaw reversed); pass it as
#: ``landmark_flip_index`` to ``fadm_lightning.data.transforms.mirror_annotation``.
LANDMARK_FLIP_INDEX = _landmark_flip_index()


def mirror_identity(identity: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Identity (…×IDENTITY_DIM) of the horizontally mirrored person.

    With the mirrored pose (yaw, roll, tx negated) and swapped blinks,
    ``render(mirror_identity(i), …)`` equals ``render(i, …)`` flipped left-right: the hair part,
    the background texture and the light direction are mirrored.
    """
    out = identity.clone() if isinstance(identity, torch.Tensor) else np.array(identity, copy=True)
    for name in ("hair_part", "light_x"):
        out[..., IDENTITY_LAYOUT[name]] = -out[..., IDENTITY_LAYOUT[name]]
    angle = IDENTITY_LAYOUT["bg_angle"]
    out[..., angle] = math.pi - out[..., angle]  # cos(angle) changes sign, sin(angle) does not
    return out


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _cover(dist: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """Anti-aliased coverage of a region from a signed distance (negative inside)."""
    return (0.5 - dist / width).clamp(0.0, 1.0)


def _over(image: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Paint ``colour`` (B×3×1×1 or B×3×H×W) over ``image`` (B×3×H×W) with alpha B×1×H×W."""
    return image + (colour - image) * alpha


def _col(identity: torch.Tensor, name: str) -> torch.Tensor:
    return _field(identity, name)[:, :, None, None]  # B×3×1×1


def _lens(
    a: torch.Tensor,
    b: torch.Tensor,
    half_w: torch.Tensor | float,
    top: torch.Tensor | float,
    bottom: torch.Tensor | float,
    centre_y: torch.Tensor | float,
    profile: str = "parabola",
) -> torch.Tensor:
    """Signed distance (approx.) to a lens spanning ±half_w whose edges bulge by top/bottom.

    At horizontal position ``x = a / half_w`` the region is ``centre_y − top·e(x) < b <
    centre_y + bottom·e(x)`` with ``e = 1 − x²`` (parabola) or ``sqrt(1 − x²)`` (round).
    """
    x = a / half_w
    e = (1 - x.square()).clamp_min(0.0)
    if profile == "round":
        e = e.sqrt()
    lo, hi = centre_y - top * e, centre_y + bottom * e
    vertical = torch.maximum(lo - b, b - hi)
    return torch.maximum(vertical, a.abs() - half_w)


def render(
    identity: torch.Tensor,
    pose: torch.Tensor,
    expression: torch.Tensor,
    size: int,
    *,
    gaze: torch.Tensor | None = None,
    teeth: float = 1.0,
) -> torch.Tensor:
    """Render talking-head frames; deterministic, vectorised over the batch.

    Args:
        identity: B×IDENTITY_DIM identity parameters (layout in the module docstring).
        pose: B×6 (yaw, pitch, roll, tx, ty, scale).
        expression: B×5 (mouth_open, smile, blink_left, blink_right, brow_raise) in [0, 1].
        size: output height = width in pixels.
        gaze: optional B×2 iris offset in eye half-widths (0 = looking straight, the truth).
        teeth: visibility of the teeth in the open mouth (1 = the truth).

    Returns:
        B×3×size×size float32 in [0, 1].
    """
    identity, pose, expression = (x.float() for x in (identity, pose, expression))
    batch, device = identity.shape[0], identity.device
    if pose.shape != (batch, 6) or expression.shape != (batch, 5):
        raise ValueError(
            f"render expects identity B×{IDENTITY_DIM}, pose B×6, expression B×5; got "
            f"{tuple(identity.shape)}, {tuple(pose.shape)}, {tuple(expression.shape)}"
        )

    def per_sample(v: torch.Tensor) -> torch.Tensor:  # B -> B×1×1×1
        return v.reshape(batch, 1, 1, 1)

    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    px, py = coords.view(1, 1, 1, size), coords.view(1, 1, size, 1)  # 1×1×1×S, 1×1×S×1
    cos_yaw, sin_yaw, cos_pitch, sin_pitch, cos_roll, sin_roll = (
        per_sample(v) for v in _rotation_terms(pose)
    )
    tx, ty, scale = (per_sample(pose[:, i]) for i in (3, 4, 5))
    rx, ry, taper, hairline, hair_len, hair_vol, part, brow_t = (
        per_sample(_field(identity, k))
        for k in (
            "head_rx",
            "head_ry",
            "chin_taper",
            "hairline",
            "hair_length",
            "hair_volume",
            "hair_part",
            "brow_thickness",
        )
    )
    f = {k: per_sample(v) for k, v in _features(identity, expression).items()}
    pix_q = 2.0 / (size * scale)  # one pixel in head-plane units
    pix_u = pix_q / (0.5 * (rx + ry))  # one pixel in normalised head units

    # 1. background: the identity's static texture (does not move with the head)
    freq, angle, phase = (
        _field(identity, k)[:, :, None, None] for k in ("bg_freq", "bg_angle", "bg_phase")
    )
    waves = torch.sin(freq * (angle.cos() * px + angle.sin() * py) + phase).mean(1, keepdim=True)
    mix = 0.5 + 0.5 * torch.tanh(2.0 * waves)
    image = _over(_col(identity, "bg_color_a"), _col(identity, "bg_color_b"), mix)
    image = image * (1 - 0.12 * (px.square() + py.square()))

    # 2. head-plane coordinates q = R(−roll)(p − t) / s and normalised head coordinates u
    dx, dy = px - tx, py - ty
    qx = (cos_roll * dx + sin_roll * dy) / scale
    qy = (-sin_roll * dx + cos_roll * dy) / scale
    uy = (qy - HEAD_CENTRE_Y) / ry
    rx_eff = rx * (1 - taper * uy.clamp(0.0, 1.0).square())
    ux = qx / rx_eff
    radius = (ux.square() + uy.square()).sqrt()

    # 3. neck (head plane) and clothes (image plane, follows the head translation halfway)
    skin = _col(identity, "skin_rgb")
    neck = _cover(torch.maximum(qx.abs() - 0.42 * rx, HEAD_CENTRE_Y - qy), pix_q)
    neck_shade = 0.62 + 0.18 * ((qy - HEAD_CENTRE_Y - ry) / 0.3).clamp(0.0, 1.0)
    image = _over(image, skin * neck_shade, neck)
    bx, by = (px - 0.5 * tx) / (0.95 * scale), (py - 0.5 * ty - 1.22) / (0.52 * scale)
    torso = _cover(((bx.square() + by.square()).sqrt() - 1) * 0.5, 2.0 / size)
    clothes_shade = 1.0 - 0.25 * (px - 0.5 * tx).abs() - 0.1 * by.clamp(-1, 1)
    image = _over(image, _col(identity, "clothes_rgb") * clothes_shade, torso)
    collar = torso * _cover(0.7 * (px - 0.5 * tx).abs() - (py - 0.5 * ty - 0.62) * 0.6, 2.0 / size)
    image = _over(image, skin * 0.7, collar * neck)

    # 4. hair volume behind the head (head plane)
    hair = _col(identity, "hair_rgb")
    hx = qx / (rx * (1 + hair_vol) + 0.02)
    hy = (qy - HEAD_CENTRE_Y + 0.03) / (ry * (1 + hair_vol))
    puff = _cover(((hx.square() + hy.square()).sqrt() - 1) * rx, pix_q)
    puff = puff * _cover(qy - (HEAD_CENTRE_Y + hair_len.clamp_min(-0.1) * ry), pix_q)
    image = _over(image, hair * (0.7 + 0.1 * torch.cos(18 * qx)), puff)

    # 5. canonical face coordinates: the sphere point rotated back by yaw and pitch
    uz = (1 - radius.square()).clamp_min(0.0).sqrt()
    a = cos_yaw * ux - sin_yaw * uz  # canonical = R_pitchᵀ · R_yawᵀ · view
    z1 = sin_yaw * ux + cos_yaw * uz
    b = cos_pitch * uy + sin_pitch * z1
    c = -sin_pitch * uy + cos_pitch * z1
    front = (c / 0.15).clamp(0.0, 1.0)  # features fade out towards the side of the head

    # 6. skin with Lambert shading, a nose bump and eye sockets
    light_x = per_sample(_field(identity, "light_x"))
    light_norm = (light_x.square() + LIGHT_Y**2 + LIGHT_Z**2).sqrt()
    lambert = ((light_x * ux + LIGHT_Y * uy + LIGHT_Z * uz) / light_norm).clamp_min(0.0)
    shade = 0.55 + 0.48 * lambert
    nose = torch.exp(-0.5 * (((a - NOSE_X) / 0.07).square() + ((b - 0.1) / 0.14).square()))
    shade = shade * (1 + 0.6 * light_x * nose * (a - NOSE_X) / 0.07 * front)  # far side darker
    nostril = _cover(_lens(a - NOSE_X, b, 0.1, 0.025, 0.025, 0.27), pix_u)
    shade = shade * (1 - 0.35 * nostril * front)
    tip_x = a - NOSE_X - 0.04 * light_x
    tip = torch.exp(-0.5 * ((tip_x / 0.04).square() + ((b - NOSE_Y) / 0.04).square()))
    shade = shade + 0.08 * tip * front
    for side in (-1.0, 1.0):
        socket = ((a - side * EYE_X) / 0.17).square() + ((b - EYE_Y + 0.02) / 0.11).square()
        shade = shade * (1 - 0.12 * torch.exp(-0.5 * socket) * front)
    face = skin * shade

    # 7. brows (arched bars, raised by brow_raise)
    brow_col = hair * 0.6 + torch.tensor([0.09, 0.06, 0.04], device=device).view(1, 3, 1, 1) * 0.4
    for side in (-1.0, 1.0):
        xb = (a - side * EYE_X) / BROW_W
        centre = f["brow_y"] + BROW_ARCH * xb.square() - 0.02 * side * xb  # inner ends a bit higher
        thick = brow_t * (1 - 0.45 * xb.square())
        dist = torch.maximum((b - centre).abs() - thick, (xb.abs() - 1) * BROW_W)
        face = _over(face, brow_col * shade, _cover(dist, pix_u) * front)

    # 8. eyes: sclera, iris, pupil, highlight and a dark upper lid line
    gaze_x = gaze[:, 0].reshape(batch, 1, 1, 1) if gaze is not None else 0.0
    gaze_y = gaze[:, 1].reshape(batch, 1, 1, 1) if gaze is not None else 0.0
    lid_col = torch.tensor([0.12, 0.08, 0.07], device=device).view(1, 3, 1, 1)
    sclera_col = torch.tensor([0.96, 0.94, 0.91], device=device).view(1, 3, 1, 1)
    for side, key in ((-1.0, "eye_h_left"), (1.0, "eye_h_right")):
        ex = a - side * EYE_X
        eye_h = f[key]
        aperture = _cover(_lens(ex, b, f["eye_w"], eye_h, EYE_LOWER * eye_h, EYE_Y), pix_u)
        ix, iy = ex - gaze_x * f["eye_w"], b - EYE_Y - gaze_y * f["eye_w"]
        iris_d = (ix.square() + iy.square()).sqrt()
        eye = _over(
            sclera_col * (0.8 + 0.2 * shade),
            _col(identity, "iris_rgb"),
            _cover(iris_d - f["iris_r"], pix_u),
        )
        eye = _over(eye, lid_col * 0.3, _cover(iris_d - f["pupil_r"], pix_u))
        glint_x, glint_y = ix - 0.7 * light_x * f["iris_r"], iy + 0.35 * f["iris_r"]
        glint = (glint_x.square() + glint_y.square()).sqrt()
        eye = _over(eye, sclera_col, _cover(glint - 0.25 * f["iris_r"], pix_u))
        face = _over(face, eye, aperture * front)
        x = (ex / f["eye_w"]).clamp(-1, 1)
        lid_y = EYE_Y - eye_h * (1 - x.square())
        lid = torch.maximum((b - lid_y + 0.008).abs() - 0.018, ex.abs() - f["eye_w"] * 1.05)
        face = _over(face, lid_col, _cover(lid, pix_u) * front)

    # 9. mouth: lips, dark interior, upper teeth; corners curved up by smile
    xm = (a / f["mouth_w"]).clamp(-1, 1)
    line = MOUTH_Y - f["mouth_lift"] * xm.square()
    up, down = MOUTH_UPPER_SHARE * f["mouth_h"], (1 - MOUTH_UPPER_SHARE) * f["mouth_h"]
    lips = _cover(_lens(a, b, f["mouth_w"], up + LIP_UPPER, down + LIP_LOWER, line, "round"), pix_u)
    inner_w = 0.9 * f["mouth_w"]
    inside = _cover(_lens(a, b, inner_w, up, down, line, "round"), pix_u)
    lip_shade = (1.0 - 0.15 * (b < line).float()) * shade
    face = _over(face, _col(identity, "lip_rgb") * lip_shade, lips * front)
    mouth_col = torch.tensor([0.26, 0.05, 0.07], device=device).view(1, 3, 1, 1)
    face = _over(face, mouth_col, inside * front)
    env = (1 - (a / inner_w).square()).clamp_min(0.0).sqrt()
    teeth_d = b - (line - up * env + TEETH_H * env)
    teeth_col = torch.tensor([0.93, 0.9, 0.84], device=device).view(1, 3, 1, 1)
    face = _over(face, teeth_col, teeth * inside * _cover(teeth_d, pix_u) * front)

    # 10. hair on the scalp: fringe above the hairline, sides/back down to the hair length
    fringe = _cover(b - (hairline + 0.3 * a.square() + part * a), pix_u)
    side = torch.maximum(
        ((a.abs() - 0.8) / 0.1).clamp(0.0, 1.0), ((0.3 - c) / 0.15).clamp(0.0, 1.0)
    )
    scalp = torch.maximum(fringe, side * _cover(b - hair_len, pix_u))
    hair_tex = hair * (0.88 + 0.12 * torch.cos(22 * a)) * (0.55 + 0.55 * lambert)
    face = _over(face, hair_tex, scalp)

    # 11. composite the head
    rmin = torch.minimum(rx_eff, ry)
    head = _cover((radius - 1) * rmin, pix_q)
    image = _over(image, face, head)
    return image.clamp(0.0, 1.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [0, 1] to uint8 B×H×W×3 (rounded)."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------------


def _identity_rng(seed: int, person: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(person, 0)))


def _motion_rng(seed: int, person: int, clip: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(person, 1, clip)))


def render_clip(
    identity: np.ndarray, pose: np.ndarray, expression: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one clip: uint8 frames T×S×S×3 and float32 landmarks T×L×2."""
    ident = torch.from_numpy(identity).float().expand(len(pose), -1)
    pose_t, expr_t = torch.from_numpy(pose).float(), torch.from_numpy(expression).float()
    with torch.no_grad():
        frames = render(ident, pose_t, expr_t, image_size)
        marks = landmarks(ident, pose_t, expr_t)
    return to_uint8(frames), marks.numpy().astype(np.float32)


def generate_dataset(
    root: str | os.PathLike,
    *,
    num_train_ids: int = 24,
    clips_per_id: int = 2,
    num_test_ids: int = 4,
    test_clips_per_id: int = 2,
    num_val_ids: int = 0,
    val_clips_per_id: int = 2,
    num_frames: int = 48,
    image_size: int = 64,
    fps: int = 25,
    format: str = "mp4",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic talking-head dataset in the VoxCeleb layout; returns ``root``.

    Layout: ``root/{train,test}/id{:05d}#clip{:02d}.mp4`` and, when ``num_val_ids > 0``,
    ``root/val/…`` (an mp4 file, or with ``format="png"`` a folder of that name holding 7-digit
    PNG frames), one annotation npz per clip under ``root/annotations/<split>/`` and finally
    ``root/.complete`` (JSON of the arguments).

    Identities: train persons are ``0 … num_train_ids − 1``, test persons follow them and the
    validation persons follow the test ones (``num_train_ids + num_test_ids …``), so the three
    splits are disjoint. Every identity and clip has its own random stream derived from
    ``(seed, person, clip)``, so the same arguments always give identical frames and
    annotations, and adding validation identities leaves the train and test clips bit-for-bit
    unchanged. Validation clips have ``num_frames`` frames, like the others.

    Idempotent: with a ``.complete`` for the same arguments this returns at once; a
    ``.complete`` for other arguments raises ``ValueError``. With ``num_val_ids=0`` the marker
    has no validation keys, exactly as written before the validation split existed. An
    interrupted run is redone by calling again: clips (and annotations) that the arguments no
    longer plan, in any split, are deleted first, and an empty ``val/`` left by an earlier plan
    with validation identities is removed.
    """
    root = Path(root)
    if format not in ("mp4", "png"):
        raise ValueError(f"format must be 'mp4' or 'png', got {format!r}")
    for name, value in (
        ("num_train_ids", num_train_ids),
        ("clips_per_id", clips_per_id),
        ("num_test_ids", num_test_ids),
        ("test_clips_per_id", test_clips_per_id),
        ("num_val_ids", num_val_ids),
        ("val_clips_per_id", val_clips_per_id),
    ):
        if not 0 <= value:
            raise ValueError(f"{name} must be ≥ 0, got {value}")
    if (
        max(clips_per_id, test_clips_per_id, val_clips_per_id) > 100
        or num_train_ids + num_test_ids + num_val_ids > 100_000
    ):
        raise ValueError("too many clips per id (≤ 100) or identities (≤ 100000) for the names")
    if num_frames < 1 or image_size < 8:
        raise ValueError(f"need num_frames ≥ 1 and image_size ≥ 8, got {num_frames}, {image_size}")
    args = {
        "num_train_ids": int(num_train_ids),
        "clips_per_id": int(clips_per_id),
        "num_test_ids": int(num_test_ids),
        "test_clips_per_id": int(test_clips_per_id),
        **(
            {"num_val_ids": int(num_val_ids), "val_clips_per_id": int(val_clips_per_id)}
            if num_val_ids > 0
            else {}  # no validation split: the marker of datasets written before it existed
        ),
        "num_frames": int(num_frames),
        "image_size": int(image_size),
        "fps": int(fps),
        "format": format,
        "seed": int(seed),
        "version": DATASET_VERSION,
    }
    marker = root / ".complete"
    if marker.exists():
        try:
            existing = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{marker}: unreadable marker ({err}); delete {root} to regenerate"
            ) from err
        if existing == args:
            return root
        raise ValueError(
            f"{root} already holds a synthetic dataset generated with {existing}, but {args} was "
            "asked for; delete that folder or choose another root"
        )

    # (split, number of ids, clips per id); person indices run on across the splits in this
    # order, so a split appended at the end never shifts the persons (and streams) before it
    layout = (
        ("train", num_train_ids, clips_per_id),
        ("test", num_test_ids, test_clips_per_id),
        ("val", num_val_ids, val_clips_per_id),
    )
    plan: list[tuple[str, int, int]] = []  # (split, person, clip)
    first = 0
    for split, num_ids, clips in layout:
        plan += [(split, p, k) for p in range(first, first + num_ids) for k in range(clips)]
        first += num_ids
    _remove_stale_clips(root, {(s, CLIP_NAME.format(p, k)) for s, p, k in plan})
    if num_val_ids == 0:
        _remove_empty_split(root, "val")  # left by an interrupted run that planned one

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is fastest, and shares the CPU well
    try:
        _write_clips(root, plan, seed, num_frames, image_size, fps, format, progress)
    finally:
        torch.set_num_threads(threads)
    for split in ("train", "test", "val") if num_val_ids > 0 else ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(args, indent=2) + "\n")
    return root


def _write_clips(
    root: Path,
    plan: list[tuple[str, int, int]],
    seed: int,
    num_frames: int,
    image_size: int,
    fps: int,
    format: str,
    progress: bool,
) -> None:
    identities: dict[int, np.ndarray] = {}
    for split, person, clip in tqdm(plan, desc="synthetic clips", disable=not progress):
        if person not in identities:
            identities[person] = sample_identity(_identity_rng(seed, person))
        identity = identities[person]
        pose, expression = sample_motion(_motion_rng(seed, person, clip), num_frames, fps)
        frames, marks = render_clip(identity, pose, expression, image_size)
        name = CLIP_NAME.format(person, clip)
        path = root / split / name
        if format == "mp4":
            write_mp4(path, frames, fps=fps)
        else:
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png_folder(path, frames)
        save_annotation(
            annotation_path(root, split, name),
            pose=pose,
            expression=expression,
            landmarks=marks,
            identity=identity,
        )


def _remove_stale_clips(root: Path, keep: set[tuple[str, str]]) -> None:
    """Delete clips (and their annotations) of an interrupted earlier run that are not planned."""
    for split in GENERATED_SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not _CLIP_PATTERN.match(entry.name) or (split, entry.name) in keep:
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            annotation_path(root, split, entry.name).unlink(missing_ok=True)


def _remove_empty_split(root: Path, split: str) -> None:
    """Remove ``root/<split>`` and ``root/annotations/<split>`` when they hold nothing."""
    for folder in (root / split, root / ANNOTATION_DIR / split):
        try:
            folder.rmdir()  # only succeeds when empty: foreign files are never deleted
        except OSError:
            pass
