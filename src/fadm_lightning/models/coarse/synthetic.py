"""A synthetic coarse generator: a stand-in for a pretrained GAN animator (FOMM, face-vid2vid).

It re-renders the driving pose and a partly transferred expression onto the *source* identity
with the procedural renderer of :mod:`fadm_lightning.synthetic`, then adds the artefacts
typical of GAN animators. Every artefact is a deterministic function of the inputs, so a
refiner can learn to undo it from the coarse frame and the attribute difference:

1. expression under-transfer: ``e = e_s + expression_transfer · (e_d − e_s)``;
2. a small pose error that depends smoothly on the driving pose;
3. wrong detail: the irises drift against the head rotation, the teeth are smeared;
4. extra smoothing around the eyes and the mouth;
5. a low-frequency warp whose phases come from the pose;
6. over-smoothing (a Gaussian blur of ``blur_sigma`` pixels at 64 px, scaled with the size);
7. a tone shift: slightly lower contrast and a warm colour cast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fadm_lightning.models.coarse.base import Annotation, CoarseCapabilities, CoarseGenerator
from fadm_lightning.synthetic import landmarks, render

# Warp field: spatial frequencies (in half-cycles per image unit) and pose→phase weights.
_WARP_FREQ = ((0.9, 0.6), (-0.4, 1.3), (0.7, -0.8), (1.1, 0.5))
_WARP_PHASE = (
    (3.0, -2.0, 1.0, 2.0),
    (-2.0, 3.0, 2.0, -1.0),
    (4.0, 1.0, -3.0, 2.0),
    (5.0, -4.0, 3.0, 6.0),
    (-3.0, 5.0, 6.0, -4.0),
    (2.0, 3.0, -2.0, 5.0),
)
# Direction of the colour cast (warm tint), scaled by ``color_shift``.
_COLOR_CAST = (0.3, 0.1, -0.3)
# Peak weight of the extra eye/mouth smoothing.
_REGION_MIX = 0.7
# Landmark indices (see fadm_lightning.synthetic.LANDMARK_NAMES).
_EYE_LEFT, _EYE_RIGHT, _MOUTH = (9, 10), (11, 12), (18, 19, 20, 21)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B×C×H×W images (reflect padding); ``sigma`` in pixels."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma).square())
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class SyntheticCoarseGenerator(CoarseGenerator):
    """Render driving motion onto the source identity, with systematic GAN-animator artefacts.

    Args:
        expression_transfer: share of the source→driving expression change that is transferred
            (1 = perfect), default 0.5.
        blur_sigma: global Gaussian blur in pixels at 64 px (scaled with the image size), 0.5.
        warp_amplitude: amplitude of the smooth warp in [−1, 1] grid units, 0.015.
        pose_error: amplitude of the yaw/pitch error in radians (roll gets 0.3 of it, the
            translation 0.1 of it in image units, the scale 0.1 of it relatively), 0.03.
        region_blur: extra blur around the eyes and mouth, as a multiple of ``blur_sigma``, 2.0.
        gaze_drift: iris offset (eye half-widths) per radian of yaw / pitch, 0.8.
        teeth: visibility of the teeth in the open mouth (the truth has 1), 0.3.
        color_shift: contrast loss and warm colour cast (a per-pixel affine tone change), 0.15.
    """

    capabilities = CoarseCapabilities(needs_annotations=True)

    def __init__(
        self,
        expression_transfer: float = 0.5,
        blur_sigma: float = 0.5,
        warp_amplitude: float = 0.015,
        pose_error: float = 0.03,
        region_blur: float = 2.0,
        gaze_drift: float = 0.8,
        teeth: float = 0.3,
        color_shift: float = 0.15,
    ) -> None:
        super().__init__()
        self.expression_transfer = expression_transfer
        self.blur_sigma = blur_sigma
        self.warp_amplitude = warp_amplitude
        self.pose_error = pose_error
        self.region_blur = region_blur
        self.gaze_drift = gaze_drift
        self.teeth = teeth
        self.color_shift = color_shift
        self.register_buffer(
            "color_cast", torch.tensor(_COLOR_CAST).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("warp_freq", torch.tensor(_WARP_FREQ), persistent=False)
        self.register_buffer("warp_phase", torch.tensor(_WARP_PHASE), persistent=False)

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        source_annotation: Annotation | None = None,
        driving_annotation: Annotation | None = None,
    ) -> dict[str, torch.Tensor]:
        """Coarse frames at the size of ``driving``.

        Args:
            source: B×3×H×W in [0, 1] (only its batch size is used; appearance comes from
                ``source_annotation["identity"]``).
            driving: B×3×H×W in [0, 1] (only its size, device and dtype are used).
            source_annotation: needs ``identity`` B×P and ``expression`` B×5.
            driving_annotation: needs ``pose`` B×6 and ``expression`` B×5.

        Returns:
            ``{"prediction": B×3×H×W in [0, 1]}``.
        """
        _check(source_annotation, "source_annotation", ("identity", "expression"))
        _check(driving_annotation, "driving_annotation", ("pose", "expression"))
        height, width = driving.shape[-2:]
        if height != width:
            raise ValueError(
                f"SyntheticCoarseGenerator renders square frames, got {height}×{width}"
            )
        device = driving.device
        identity = source_annotation["identity"].to(device, torch.float32)
        src_expr = source_annotation["expression"].to(device, torch.float32)
        drv_expr = driving_annotation["expression"].to(device, torch.float32)
        drv_pose = driving_annotation["pose"].to(device, torch.float32)
        batch = driving.shape[0]
        for name, value in (
            ("source identity", identity),
            ("source expression", src_expr),
            ("driving pose", drv_pose),
            ("driving expression", drv_expr),
        ):
            if value.shape[0] != batch:
                raise ValueError(f"{name} has batch {value.shape[0]}, driving frames {batch}")

        # 1. expression under-transfer and pose error
        expression = src_expr + self.expression_transfer * (drv_expr - src_expr)
        pose = drv_pose + self.pose_offset(drv_pose)
        # 2. render with wrong detail (drifting irises, smeared teeth)
        gaze = self.gaze_drift * torch.stack([-pose[:, 0], 0.75 * pose[:, 1]], dim=1)
        image = render(identity, pose, expression, height, gaze=gaze, teeth=self.teeth)
        # 3. extra smoothing around the eyes and the mouth
        sigma = self.blur_sigma * height / 64.0
        if self.region_blur > 0:
            mask = self.feature_mask(identity, pose, expression, height)
            smooth = gaussian_blur(image, self.region_blur * sigma)
            image = image + (smooth - image) * (_REGION_MIX * mask)
        # 4. smooth warp, global over-smoothing and a tone shift (lower contrast, warm cast)
        image = gaussian_blur(self.warp(image, pose), sigma)
        c = self.color_shift
        image = 0.5 + (image - 0.5) * (1 - c) + c * self.color_cast.to(image)
        return {"prediction": image.clamp(0.0, 1.0).to(driving.dtype)}

    def pose_offset(self, pose: torch.Tensor) -> torch.Tensor:
        """Deterministic pose error B×6 as a smooth function of the pose B×6."""
        yaw, pitch, roll = pose[:, 0], pose[:, 1], pose[:, 2]
        e = self.pose_error
        return torch.stack(
            [
                e * torch.sin(2.3 * yaw + 1.7 * pitch + 0.4),
                e * torch.sin(1.9 * pitch - 1.3 * yaw + 1.1),
                0.3 * e * torch.sin(2.9 * roll + 0.7 * yaw + 2.0),
                0.1 * e * torch.sin(2.0 * yaw - 1.5 * roll + 0.3),
                0.1 * e * torch.sin(1.7 * pitch + 2.2 * roll - 0.8),
                0.1 * e * torch.sin(1.3 * yaw - 2.1 * pitch + 1.4),
            ],
            dim=1,
        )

    def warp(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Resample B×3×H×W with a low-frequency displacement field whose phases follow the pose."""
        if self.warp_amplitude == 0:
            return image
        batch, _, height, width = image.shape
        ys = (torch.arange(height, device=image.device) + 0.5) * (2.0 / height) - 1.0
        xs = (torch.arange(width, device=image.device) + 0.5) * (2.0 / width) - 1.0
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # H×W each
        phase = pose @ self.warp_phase.to(pose)  # B×4
        freq = self.warp_freq.to(image)
        waves = torch.sin(
            math.pi * (freq[:, 0, None, None] * gx + freq[:, 1, None, None] * gy)[None]
            + phase[:, :, None, None]
        )  # B×4×H×W
        flow_x = (waves[:, 0] + 0.5 * waves[:, 1]) / 1.5
        flow_y = (waves[:, 2] + 0.5 * waves[:, 3]) / 1.5
        grid = torch.stack(
            [gx + self.warp_amplitude * flow_x, gy + self.warp_amplitude * flow_y], -1
        )
        return F.grid_sample(
            image, grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    @staticmethod
    def feature_mask(
        identity: torch.Tensor, pose: torch.Tensor, expression: torch.Tensor, size: int
    ) -> torch.Tensor:
        """Soft B×1×S×S mask (in [0, 1]) around both eyes and the mouth."""
        marks = landmarks(identity, pose, expression)  # B×L×2
        centres, radii = [], []
        for group in (_EYE_LEFT, _EYE_RIGHT, _MOUTH):
            pts = marks[:, list(group)]
            centres.append(pts.mean(1))
            radii.append(0.6 * (pts[:, 0] - pts[:, 1]).norm(dim=-1))  # ~ the feature width
        centre = torch.stack(centres, 1)  # B×3×2
        radius = torch.stack(radii, 1).clamp_min(2.0 / size)  # B×3
        coords = (torch.arange(size, device=identity.device) + 0.5) * (2.0 / size) - 1.0
        dx = coords.view(1, 1, 1, size) - centre[..., 0, None, None]
        dy = coords.view(1, 1, size, 1) - centre[..., 1, None, None]
        blobs = torch.exp(-0.5 * (dx.square() + dy.square()) / radius[..., None, None].square())
        return blobs.amax(1, keepdim=True)


def _check(annotation: Annotation | None, name: str, keys: tuple[str, ...]) -> None:
    if annotation is None:
        raise ValueError(
            f"SyntheticCoarseGenerator needs {name} (a dict with {list(keys)}), got None; it only "
            "works on synthetic data whose datamodule returns annotations"
        )
    missing = [k for k in keys if k not in annotation]
    if missing:
        raise ValueError(
            f"SyntheticCoarseGenerator: {name} lacks {missing} (has {list(annotation)})"
        )
