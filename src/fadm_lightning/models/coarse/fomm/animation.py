"""Keypoint normalisation for relative animation, and the choice of the best driving frame.

``normalize_kp`` follows FOMM's ``animate.normalize_kp`` with one deliberate difference: the
movement scale of ``adapt_movement_scale`` is computed **per batch item** (FOMM uses the convex
hulls of batch item 0 for the whole batch, which is only right for batch size 1).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from .keypoint_detector import Keypoints


def convex_hull_area(points: torch.Tensor) -> torch.Tensor:
    """Area of the 2-D convex hull of each point set (scipy ``ConvexHull(…).volume``).

    Args:
        points: ``B×N×2`` (only x and y are used if the last axis is longer).

    Returns:
        ``B`` float64 areas on the CPU; 0 for degenerate sets (fewer than 3 points, collinear).
    """
    if points.dim() != 3 or points.shape[-1] < 2:
        raise ValueError(f"expected a B×N×2 point tensor, got shape {tuple(points.shape)}")
    array = points[..., :2].detach().to("cpu", torch.float64).numpy()
    areas = []
    for item in array:
        try:
            areas.append(ConvexHull(item).volume)  # in 2-D, .volume is the area
        except QhullError:
            areas.append(0.0)
    return torch.tensor(areas, dtype=torch.float64)


def normalize_kp(
    kp_source: Keypoints,
    kp_driving: Keypoints,
    kp_driving_initial: Keypoints,
    adapt_movement_scale: bool = False,
    use_relative_movement: bool = False,
    use_relative_jacobian: bool = False,
) -> Keypoints:
    """Transfer the driving motion *relative to* the initial driving frame onto the source.

    * ``value = kp_source + scale·(kp_driving − kp_driving_initial)`` (relative movement),
      with ``scale = sqrt(hull_area(kp_source)) / sqrt(hull_area(kp_driving_initial))`` when
      ``adapt_movement_scale`` (computed per batch item) and 1 otherwise;
    * ``jacobian = (J_driving · J_driving_initial⁻¹) · J_source`` (relative jacobian; applied
      only together with relative movement, as in FOMM).

    With all flags off the driving keypoints are returned unchanged (absolute motion).

    Args:
        kp_source: keypoints of the source image, ``value`` B×K×2 (and ``jacobian`` B×K×2×2).
        kp_driving: keypoints of the current driving frame.
        kp_driving_initial: keypoints of the reference driving frame (the first or best frame).
        adapt_movement_scale: rescale the movement by the ratio of keypoint-hull sizes.
        use_relative_movement: relative keypoint positions.
        use_relative_jacobian: relative jacobians.

    Batch sizes may differ when one of them is 1 (it is broadcast), e.g. one source and
    ``B`` driving frames.

    Returns:
        New keypoints dict (other entries of ``kp_driving`` are kept).
    """
    kp_new = dict(kp_driving)
    if not use_relative_movement:
        return kp_new

    value = kp_driving["value"]  # B×K×2
    scale: torch.Tensor | float = 1.0
    if adapt_movement_scale:
        source_area = convex_hull_area(kp_source["value"])  # B_s
        initial_area = convex_hull_area(kp_driving_initial["value"])  # B_i
        source_area, initial_area = torch.broadcast_tensors(source_area, initial_area)
        degenerate = (source_area <= 0) | (initial_area <= 0)
        if degenerate.any():
            warnings.warn(
                "adapt_movement_scale: degenerate keypoint hull (zero area) for batch items "
                f"{degenerate.nonzero().flatten().tolist()}; using scale 1 for them.",
                stacklevel=2,
            )
        ratio = torch.where(
            degenerate,
            torch.ones_like(source_area),
            source_area.sqrt() / initial_area.clamp_min(1e-12).sqrt(),
        )
        scale = ratio.to(value.dtype).to(value.device).view(-1, 1, 1)  # B×1×1

    kp_new["value"] = kp_source["value"] + scale * (value - kp_driving_initial["value"])  # B×K×2
    if use_relative_jacobian and "jacobian" in kp_driving:
        jacobian_change = kp_driving["jacobian"] @ torch.linalg.inv(kp_driving_initial["jacobian"])
        kp_new["jacobian"] = jacobian_change @ kp_source["jacobian"]  # B×K×2×2
    return kp_new


def normalise_layout(layouts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre each layout on its mean and divide by ``sqrt(convex-hull area)``.

    Args:
        layouts: ``B×N×2`` point layouts (landmarks, keypoints, …).

    Returns:
        ``(normalised B×N×2 float64, valid B bool)``; ``valid`` is False for degenerate layouts.
    """
    points = layouts[..., :2].detach().to("cpu", torch.float64)
    centred = points - points.mean(dim=1, keepdim=True)
    size = convex_hull_area(points).sqrt()  # B
    valid = size > 0
    return centred / size.clamp_min(1e-12).view(-1, 1, 1), valid


def find_best_frame(source_layout: torch.Tensor, driving_layouts: torch.Tensor) -> int:
    """Index of the driving frame whose layout is most aligned with the source's.

    Layouts are made translation- and scale-invariant (:func:`normalise_layout`) and compared
    by the sum of squared point distances, as FOMM's ``demo.find_best_frame`` does with
    face-alignment landmarks. Any point layout works: 68 landmarks, FOMM keypoints, …

    Args:
        source_layout: ``N×2`` or ``1×N×2`` layout of the source image.
        driving_layouts: ``T×N×2`` layouts of the driving frames (same points, same order).

    Returns:
        The best frame index in ``[0, T)``.

    Raises:
        ValueError: mismatching shapes, or the source layout is degenerate.
    """
    if source_layout.dim() == 2:
        source_layout = source_layout.unsqueeze(0)
    if (
        source_layout.dim() != 3
        or source_layout.shape[0] != 1
        or driving_layouts.dim() != 3
        or driving_layouts.shape[1:] != source_layout.shape[1:]
        or driving_layouts.shape[0] == 0
    ):
        raise ValueError(
            "find_best_frame expects source N×2 (or 1×N×2) and driving T×N×2 layouts, got "
            f"{tuple(source_layout.shape)} and {tuple(driving_layouts.shape)}"
        )
    source, source_valid = normalise_layout(source_layout)
    if not source_valid.all():
        raise ValueError("find_best_frame: the source layout is degenerate (zero hull area)")
    driving, driving_valid = normalise_layout(driving_layouts)
    distances = ((driving - source) ** 2).sum(dim=(1, 2))  # T
    distances = torch.where(driving_valid, distances, torch.full_like(distances, np.inf))
    return int(distances.argmin())
