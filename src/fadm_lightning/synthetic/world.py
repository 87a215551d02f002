"""The procedural face: identities, their geometry, landmarks and the renderer.

:func:`sample_identity` draws a person (a float vector of ``IDENTITY_DIM`` parameters),
:func:`render` paints frames of that person for a batch of poses and expressions,
:func:`landmarks` runs the same geometry forwards to 2-D landmarks and :func:`render_clip` does
both for one clip on numpy arrays. Nothing here reads or writes files and only numpy and torch
are imported, so models (the synthetic coarse generator) use the renderer without depending on
the data package; the motion that drives a clip is in :mod:`fadm_lightning.synthetic.motion`, the
dataset writer in :mod:`fadm_lightning.synthetic.dataset`.

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

import math

import numpy as np
import torch

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


# ----------------------------------------------------------------------------------------------
# Sampling identities
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
