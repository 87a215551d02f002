"""Faces aligned to ArcFace's 112×112 crop with the standard 5-point similarity transform.

The five points (eye centres, nose tip, mouth corners, in image left-to-right order) come from
the 68 iBUG-300W landmarks (dlib's or FAN's: same numbering): eyes 36–41 and 42–47, nose tip 30,
mouth corners 48 and 54. The least-squares similarity transform onto insightface's template
(``ARCFACE_TEMPLATE_112``, ``face_align.arcface_dst``) is Umeyama's (1991) closed form, as
insightface's ``estimate_norm`` (skimage's ``SimilarityTransform.estimate``); the warp is a
bilinear sampling with zeros outside the frame and pixel centres at integer coordinates, as
``cv2.warpAffine`` in insightface's ``norm_crop``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ARCFACE_SIZE = 112
# (x, y) at 112×112: image-left eye, image-right eye, nose tip, image-left / right mouth corner
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """5×2 points (template order) from 68×2 iBUG-300W landmarks."""
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68×2 landmarks, got shape {points.shape}")
    return np.stack(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 matrix ``M`` of the similarity (rotation, uniform scale, translation; no reflection)
    that maps ``src`` onto ``dst`` (N×2 each) with the least squared error: ``dst ≈ M @ [src; 1]``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two N×2 point sets (N ≥ 2), got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    variance = (src_c**2).sum() / len(src)
    if variance == 0:
        raise ValueError("the source points coincide: no similarity transform")
    scale = float((singular * signs).sum() / variance)
    translation = dst_mean - scale * rotation @ src_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def warp_affine(
    images: torch.Tensor, matrices: torch.Tensor | np.ndarray, size: int
) -> torch.Tensor:
    """B×C×size×size: each B×C×H×W image warped by its 2×3 matrix (source pixel → output pixel),
    bilinear, zeros outside."""
    matrices = torch.as_tensor(np.asarray(matrices), dtype=torch.float64).reshape(-1, 2, 3)
    if matrices.shape[0] != images.shape[0]:
        raise ValueError(f"{matrices.shape[0]} matrices for {images.shape[0]} images")
    height, width = images.shape[-2:]
    full = torch.cat([matrices, matrices.new_tensor([0, 0, 1]).expand(len(matrices), 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2]  # output pixel → source pixel
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    grid = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)
    source = grid @ inverse.transpose(1, 2)  # B×(size²)×2, pixel coordinates
    # pixel centres at integer coordinates ↔ grid_sample's align_corners=False normalisation
    normalised = torch.stack(
        [(2 * source[..., 0] + 1) / width - 1, (2 * source[..., 1] + 1) / height - 1], -1
    ).reshape(len(matrices), size, size, 2)
    return F.grid_sample(
        images.float(),
        normalised.to(images.device, torch.float32),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )


def align_arcface(image: torch.Tensor, landmarks68: np.ndarray) -> torch.Tensor:
    """3×112×112 ArcFace crop of a 3×H×W image given its face's 68 landmarks (pixels)."""
    matrix = similarity_transform(five_points(landmarks68), ARCFACE_TEMPLATE_112)
    return warp_affine(image[None], matrix[None], ARCFACE_SIZE)[0]
