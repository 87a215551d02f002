"""From canonical keypoints and head pose to the keypoints of a frame (face-vid2vid, eq. 1).

``x = R·x_c + t + δ`` per keypoint, with ``R`` built from the decoded yaw, pitch and roll.
Two compatibility quirks of the released weights are kept on purpose (REFERENCE_SPEC §2.4, §7
item 13): π is approximated by 3.14 in :func:`get_rotation_matrix`, and the angle decoding of
:func:`headpose_pred_to_degree` uses the 66 bins of 3° starting at −99°. The official in-place
``t.unsqueeze_(1)`` (which mutated the head-pose dict) is **not** reproduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .keypoint_detector import HeadPose, Keypoints

PI_APPROX = 3.14  # quirk: the official rotation code converts degrees with 3.14, not math.pi
BIN_WIDTH_DEGREES = 3.0  # angle bins of 3°…
FIRST_BIN_DEGREES = -99.0  # …the first bin at −99° (66 bins cover [−99°, 99°))

Angle = float | torch.Tensor | None


def headpose_pred_to_degree(logits: torch.Tensor) -> torch.Tensor:
    """Decode binned angle logits: ``3 · Σ_b softmax(logits)_b · b − 99`` degrees.

    Args:
        logits: ``B×num_bins`` (66 bins for the official weights).

    Returns:
        ``B`` angles in degrees (the expectation of the bin index, mapped to degrees).
    """
    bins = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)  # 0 … 65
    expected_bin = (F.softmax(logits, dim=1) * bins).sum(dim=1)  # B
    return expected_bin * BIN_WIDTH_DEGREES + FIRST_BIN_DEGREES


def get_rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``R = P · Y · R_z`` from angles in degrees (converted with π ≈ 3.14, as the weights expect).

    ``P`` rotates about x by ``pitch``, ``Y`` about y by ``yaw``, ``R_z`` about z by ``roll``::

        P = [[1, 0, 0], [0, c, −s], [0, s, c]]   Y = [[c, 0, s], [0, 1, 0], [−s, 0, c]]
        R_z = [[c, −s, 0], [s, c, 0], [0, 0, 1]]

    Args:
        yaw: ``B`` degrees.
        pitch: ``B`` degrees.
        roll: ``B`` degrees.

    Returns:
        ``B×3×3`` rotation matrices.
    """
    yaw, pitch, roll = (angle / 180 * PI_APPROX for angle in (yaw, pitch, roll))  # radians (≈)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)

    def matrix(*rows: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)  # B×3×3

    cos, sin = torch.cos(pitch), torch.sin(pitch)
    pitch_matrix = matrix((one, zero, zero), (zero, cos, -sin), (zero, sin, cos))
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    yaw_matrix = matrix((cos, zero, sin), (zero, one, zero), (-sin, zero, cos))
    cos, sin = torch.cos(roll), torch.sin(roll)
    roll_matrix = matrix((cos, -sin, zero), (sin, cos, zero), (zero, zero, one))
    return pitch_matrix @ yaw_matrix @ roll_matrix


def head_pose_degrees(
    he: HeadPose, yaw: Angle = None, pitch: Angle = None, roll: Angle = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoded ``(yaw, pitch, roll)`` in degrees (``B`` each), with optional free-view overrides.

    An override (a number or a ``B`` tensor, degrees) replaces the estimated angle for every
    batch item; ``None`` keeps the estimate. The names follow the estimator's output keys (so
    ``yaw`` is the rotation about y in :func:`get_rotation_matrix`, decoded from ``fc_roll``).
    """
    angles = []
    for name, override in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        logits = he[name]  # B×num_bins
        if override is None:
            angles.append(headpose_pred_to_degree(logits))
        else:
            value = torch.as_tensor(override, dtype=logits.dtype, device=logits.device)
            angles.append(value.expand(logits.shape[0]))
    return angles[0], angles[1], angles[2]


def keypoint_transformation(
    kp_canonical: Keypoints,
    he: HeadPose,
    yaw: Angle = None,
    pitch: Angle = None,
    roll: Angle = None,
) -> Keypoints:
    """Keypoints of a frame: ``x_k = R·x_c,k + t + δ_k`` (rotation, translation, expression).

    Pure function: neither ``kp_canonical`` nor ``he`` is modified (the official version's
    in-place ``t.unsqueeze_(1)`` mutated ``he["t"]`` to ``B×1×3``).

    Args:
        kp_canonical: ``{"value": B×K×3}`` canonical keypoints (of the source).
        he: head pose and expression of the frame (:class:`~.keypoint_detector.HEEstimator`).
        yaw, pitch, roll: free-view overrides in degrees (``None``: use the estimate).

    Returns:
        ``{"value": B×K×3, "rotation": B×3×3, "pose": B×3}`` with ``pose`` = (yaw, pitch, roll)
        in degrees, as used.
    """
    value = kp_canonical["value"]  # B×K×3
    yaw_deg, pitch_deg, roll_deg = head_pose_degrees(he, yaw, pitch, roll)
    rotation = get_rotation_matrix(yaw_deg, pitch_deg, roll_deg)  # B×3×3
    rotated = torch.einsum("bij,bkj->bki", rotation, value)  # B×K×3
    translated = rotated + he["t"][:, None, :]  # + t, B×1×3 broadcast (no in-place unsqueeze_)
    expression = he["exp"].reshape(he["exp"].shape[0], -1, 3)  # δ: B×K×3
    return {
        "value": translated + expression,
        "rotation": rotation,
        "pose": torch.stack([yaw_deg, pitch_deg, roll_deg], dim=1),
    }
