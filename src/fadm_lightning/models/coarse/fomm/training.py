"""The pieces of FOMM's training objective (Siarohin et al., NeurIPS 2019, "Training losses").

Plain modules and functions, used by :class:`fadm_lightning.systems.fomm.FOMMLitModule`:

* :class:`ImagePyramid` — anti-aliased copies of an image at several scales (FOMM: ``scales
  [1, 0.5, 0.25, 0.125]``), keyed ``"prediction_<s>"`` as the discriminator expects.
* :class:`VGG19Features` / :class:`VGGPerceptualLoss` — the multi-scale perceptual
  reconstruction loss ``Σ_s Σ_i w_i · mean|φ_i(x̂_s) − φ_i(x_s)|`` over five VGG-19 layers. The
  ImageNet weights come from a local torchvision ``vgg19`` state dict; never random.
* :class:`LaplacianL1Loss` / :class:`PyramidL1Loss` — offline alternatives (no files):
  ``Σ_i w · mean|L_i(x̂) − L_i(x)|`` over Laplacian bands, or ``Σ_s w · mean|x̂_s − x_s|``.
* :class:`RandomTPSTransform` — a random affine + thin-plate-spline warp ``T_{X←Y}`` of
  coordinates, jacobians and images.
* :func:`equivariance_losses` — keypoint value and jacobian equivariance under that warp.
* :func:`lsgan_generator_loss`, :func:`lsgan_discriminator_loss`, :func:`feature_matching_loss`
  — the optional adversarial terms (least-squares GAN, as FOMM).

Coordinates follow the FOMM convention of :mod:`.geometry`: ``(x, y)`` in ``[-1, 1]`` with the
first and last pixel centres at ±1 (``align_corners=True`` reading of ``F.grid_sample``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fadm_lightning.models.errors import WeightsError, compare_state_dicts
from fadm_lightning.models.torch_file import load_torch_file

from .blocks import AntiAliasInterpolation2d
from .discriminator import scale_key
from .geometry import make_coordinate_grid
from .keypoint_detector import Keypoints

Pyramid = Mapping[str, torch.Tensor]
# MultiScaleDiscriminator output: feature_maps_<s> (list of maps), prediction_map_<s> (map)
DiscriminatorOutput = Mapping[str, Any]

# ------------------------------------------------------------------------------- image pyramid


def pyramid_key(scale: float) -> str:
    """Key of one pyramid level: ``1`` → ``"prediction_1"``, ``0.5`` → ``"prediction_0.5"``."""
    return f"prediction_{scale:g}"


class ImagePyramid(nn.Module):
    """Anti-aliased downscaled copies of an image (FOMM's ``ImagePyramide``).

    Args:
        scales: output/input size ratios, e.g. ``(1, 0.5, 0.25, 0.125)``.
        num_channels: image channels (3).
    """

    def __init__(self, scales: Sequence[float], num_channels: int = 3) -> None:
        super().__init__()
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"ImagePyramid: scales must lie in (0, 1], got {list(scales)}")
        self.scales = tuple(float(s) for s in scales)
        self.downs = nn.ModuleDict(
            {scale_key(s): AntiAliasInterpolation2d(num_channels, s) for s in self.scales}
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``B×C×H×W`` → ``{"prediction_<s>": B×C×⌊s·H⌋×⌊s·W⌋}`` for every scale ``s``."""
        return {pyramid_key(s): self.downs[scale_key(s)](image) for s in self.scales}


# ------------------------------------------------------------------------------- perceptual


# torchvision's VGG-19 ("configuration E"): conv widths, "M" = 2×2 max pooling. Module indices
# in ``features`` count every Conv2d, ReLU and MaxPool2d, so these names match its state dict.
VGG19_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
# FOMM's five feature maps: the outputs of ``features[1]`` (relu1_1), ``[6]`` (relu2_1),
# ``[11]`` (relu3_1), ``[20]`` (relu4_1) and ``[29]`` (relu5_1): slice ends 2, 7, 12, 21, 30.
VGG19_SLICE_ENDS = (2, 7, 12, 21, 30)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_EXPECTED = (
    "the ImageNet VGG-19 weights of torchvision (a `vgg19` state dict saved with torch.save, "
    "e.g. the file `vgg19-dcbb9e9d.pth` that torchvision.models.vgg19(weights='IMAGENET1K_V1') "
    "downloads into ~/.cache/torch/hub/checkpoints/)"
)


class VGGWeightsError(WeightsError):
    """A VGG-19 weights file that cannot be read or is not a torchvision vgg19 state dict."""


def missing_vgg_message(path: str | os.PathLike[str] | None) -> str:
    """The error text for an unset or absent VGG-19 weights file (names the path and the fixes)."""
    where = "no path was given" if path is None else f"'{path}' does not exist"
    return (
        f"VGG-19 weights for the perceptual loss not found: {where}. Expected {VGG19_EXPECTED}. "
        "Put the file there, or set `model.perceptual.weights_path=PATH` (or "
        "`paths.pretrained_dir` so that PATH is <pretrained_dir>/vgg19/vgg19-dcbb9e9d.pth), or "
        "train without it with an offline loss: `model/perceptual=laplacian_l1` (Laplacian-band L1) "
        "or `model/perceptual=pyramid_l1` (pyramid L1)."
    )


def _vgg19_features_layers(num_modules: int) -> nn.Sequential:
    """The first ``num_modules`` modules of torchvision's ``vgg19().features`` (same indices)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            in_channels = int(item)
    return nn.Sequential(*layers[:num_modules])


def vgg19_state_dict_keys() -> set[str]:
    """Every key of a torchvision ``vgg19`` state dict (``features.*`` and ``classifier.*``)."""
    keys = {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    index = 0
    for item in VGG19_LAYOUT:
        if item != "M":  # a conv (index) followed by its ReLU (index + 1)
            keys |= {f"features.{index}.weight", f"features.{index}.bias"}
        index += 1 if item == "M" else 2
    return keys


class VGG19Features(nn.Module):
    """Frozen ImageNet VGG-19 (torchvision layout) giving FOMM's five feature maps.

    Input ``B×3×H×W`` in [0, 1] is normalised with the ImageNet mean/std; the output is the list
    of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 maps (64, 128, 256, 512, 512 channels at
    ``H``, ``H/2``, ``H/4``, ``H/8``, ``H/16``).

    The weights are read with ``torch.load(weights_only=True)`` from a torchvision ``vgg19``
    state dict. Loading is strict for the layers used (``features.0`` … ``features.28``: every
    key present with its torchvision shape) and the file may only hold torchvision ``vgg19``
    keys (the unused ``features.30``–``34`` and ``classifier.*`` are ignored), so a ``vgg16`` or
    ``vgg19_bn`` file is refused. Gradients flow to the input, never to the weights.

    Args:
        weights_path: the state-dict file.

    Raises:
        FileNotFoundError: ``weights_path`` is None or does not exist (the message names it).
        RuntimeError: the file is unreadable or not a torchvision ``vgg19`` state dict.
    """

    def __init__(self, weights_path: str | os.PathLike[str] | None) -> None:
        super().__init__()
        if weights_path is None or not Path(weights_path).is_file():
            raise FileNotFoundError(missing_vgg_message(weights_path))
        self.weights_path = str(weights_path)
        self.features = _vgg19_features_layers(VGG19_SLICE_ENDS[-1])  # modules 0 … 29
        self.features.load_state_dict(self._read_features(Path(weights_path)), strict=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _read_features(self, path: Path) -> dict[str, torch.Tensor]:
        # a file that is something else (an image, a config, a pickle …): one line saying what
        state = load_torch_file(
            path, what="VGG-19 weights file", expected=VGG19_EXPECTED, error=VGGWeightsError
        )
        if not isinstance(state, Mapping):
            raise VGGWeightsError(
                f"VGG-19 weights '{path}' hold a {type(state).__name__}, expected a state dict: "
                f"{VGG19_EXPECTED}."
            )
        expected = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        # the classifier of a full torchvision file is not unexpected
        diff = compare_state_dicts(
            expected, state, ignore_unexpected=set(vgg19_state_dict_keys()), sort=True
        )
        missing, unexpected, mis_shaped = diff.lists(found="file", model="VGG-19")
        if diff:
            raise VGGWeightsError(
                f"VGG-19 weights '{path}' are not a torchvision vgg19 state dict (expected "
                f"{VGG19_EXPECTED}): missing {missing[:8]}, unexpected {unexpected[:8]}, "
                f"mis-shaped {mis_shaped[:8]}."
            )
        return {k.removeprefix("features."): state[k] for k in expected}

    def train(self, mode: bool = True) -> VGG19Features:
        """Frozen: always in eval mode."""
        return super().train(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``B×3×H×W`` in [0, 1] → five ReLU feature maps (relu1_1 … relu5_1)."""
        out = (image - self.mean) / self.std
        maps = []
        start = 0
        for end in VGG19_SLICE_ENDS:
            out = self.features[start:end](out)
            maps.append(out)
            start = end
        return maps


class VGGPerceptualLoss(nn.Module):
    """FOMM's reconstruction loss ``Σ_s Σ_i w_i · mean|φ_i(x̂_s) − φ_i(x_s)|`` (VGG-19).

    Args:
        weights_path: torchvision ``vgg19`` state-dict file (see :class:`VGG19Features`).
        layer_weights: ``w_i`` of relu1_1 … relu5_1 (FOMM: ``[10, 10, 10, 10, 10]``).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike[str] | None,
        layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0, 10.0),
    ) -> None:
        super().__init__()
        if len(layer_weights) != len(VGG19_SLICE_ENDS):
            raise ValueError(
                f"VGGPerceptualLoss: one weight per VGG layer ({len(VGG19_SLICE_ENDS)}), "
                f"got {list(layer_weights)}"
            )
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.vgg = VGG19Features(weights_path)

    def forward(self, prediction: Pyramid, target: Pyramid) -> torch.Tensor:
        """Sum over the pyramid levels of ``prediction`` (the target features carry no gradient).

        Args:
            prediction: ``{"prediction_<s>": B×3×H_s×W_s}`` of the generated frame.
            target: the same keys for the real frame.
        """
        loss = prediction[next(iter(prediction))].new_zeros(())
        for key, generated in prediction.items():
            generated_maps = self.vgg(generated)
            with torch.no_grad():
                target_maps = self.vgg(target[key])
            for weight, fake, real in zip(
                self.layer_weights, generated_maps, target_maps, strict=True
            ):
                if weight:
                    loss = loss + weight * (fake - real).abs().mean()
        return loss


class PyramidL1Loss(nn.Module):
    """Offline reconstruction loss ``Σ_s w · mean|x̂_s − x_s|`` over the image pyramid.

    For runs without the VGG-19 file (``model/perceptual=pyramid_l1``); it needs no download.

    Args:
        weight: ``w``, the same for every pyramid level (10, FOMM's per-layer perceptual weight).
    """

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, prediction: Pyramid, target: Pyramid) -> torch.Tensor:
        """Same arguments as :meth:`VGGPerceptualLoss.forward`."""
        loss = prediction[next(iter(prediction))].new_zeros(())
        for key, generated in prediction.items():
            loss = loss + self.weight * (generated - target[key]).abs().mean()
        return loss


def laplacian_bands(pyramid: Pyramid) -> list[torch.Tensor]:
    """Band-pass levels of an image pyramid, finest first.

    With the levels ``x_1, x_2, …, x_n`` sorted from the largest to the smallest, band ``i`` is
    ``x_i − up(x_{i+1})`` (bilinear up-sampling to the size of ``x_i``) and the last band is the
    coarsest level ``x_n`` itself, so the bands add back up to ``x_1``.
    """
    levels = sorted(pyramid.values(), key=lambda level: level.shape[-1], reverse=True)
    bands = []
    for finer, coarser in zip(levels[:-1], levels[1:], strict=True):
        up = F.interpolate(coarser, size=finer.shape[2:], mode="bilinear", align_corners=False)
        bands.append(finer - up)
    bands.append(levels[-1])
    return bands


class LaplacianL1Loss(nn.Module):
    """Offline reconstruction loss ``Σ_i w · mean|L_i(x̂) − L_i(x)|`` over Laplacian bands.

    The bands ``L_i`` (:func:`laplacian_bands`) are built from the same anti-aliased pyramid as
    the other reconstruction losses. Each frequency band weighs the same, whereas the
    :class:`PyramidL1Loss` levels all contain the low frequencies again and so count them once
    per level. This is the "Lap₁" loss of Bojanowski et al. (2018), used as a file-free stand-in
    for a perceptual loss. It needs no download (``model/perceptual=laplacian_l1``).

    Args:
        weight: ``w``, the same for every band (10, FOMM's per-layer perceptual weight).
    """

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, prediction: Pyramid, target: Pyramid) -> torch.Tensor:
        """Same arguments as :meth:`VGGPerceptualLoss.forward`."""
        generated, real = laplacian_bands(prediction), laplacian_bands(target)
        return self.weight * sum((g - r).abs().mean() for g, r in zip(generated, real, strict=True))


# ------------------------------------------------------------------------------- equivariance


def _tps_kernel(distance: torch.Tensor) -> torch.Tensor:
    """Radial basis ``U(r) = r²·log(r + 1e-6)`` (0 at r = 0)."""
    return distance**2 * torch.log(distance + 1e-6)


def _tps_kernel_derivative(distance: torch.Tensor) -> torch.Tensor:
    """``U'(r) = 2r·log(r + 1e-6) + r² / (r + 1e-6)``."""
    return 2 * distance * torch.log(distance + 1e-6) + distance**2 / (distance + 1e-6)


class RandomTPSTransform:
    """A random smooth warp ``T``: affine plus thin-plate spline (FOMM's equivariance transform).

    ``T(z) = A·z + b + Σ_k w_k·U(‖z − c_k‖₁)·(1, 1)ᵀ`` with ``[A | b] = [I | 0] + N(0, σ_affine²)``
    (B×2×3), control points ``c_k`` on a ``points_tps × points_tps`` grid over ``[-1, 1]²`` and
    ``w_k ~ N(0, σ_tps²)`` (B×P²). As in FOMM the spline uses the L1 distance and one weight
    per control point, added to both coordinates.

    ``T`` maps a point of the *transformed* frame to the point of the original frame it shows:
    :meth:`transform_frame` samples ``frame`` at ``T(z)``. So a keypoint detected at ``p`` in
    the transformed frame corresponds to ``T(p)`` in the original one (the equivariance
    constraint), and its local jacobian to ``J_T(p)·J``.

    With both sigmas 0 the transform is the identity. Draws use ``generator`` (or the global
    RNG), on the generator's device, so a seeded ``torch.Generator`` gives the same transform.

    Args:
        batch_size: number of independent transforms B.
        sigma_affine: standard deviation of the affine perturbation (FOMM: 0.05).
        sigma_tps: standard deviation of the spline weights (FOMM: 0.005).
        points_tps: control points per side (FOMM: 5).
        generator: random generator of the draws.
        device: device of the transform's tensors (default: the generator's device, or CPU).
        dtype: floating dtype.
    """

    def __init__(
        self,
        batch_size: int,
        sigma_affine: float = 0.05,
        sigma_tps: float = 0.005,
        points_tps: int = 5,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1 or points_tps < 1 or sigma_affine < 0 or sigma_tps < 0:
            raise ValueError(
                "RandomTPSTransform: need batch_size ≥ 1, points_tps ≥ 1 and sigmas ≥ 0, got "
                f"{batch_size}, {points_tps}, {sigma_affine}, {sigma_tps}"
            )
        draw_device = generator.device if generator is not None else device
        device = device if device is not None else draw_device

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=generator, device=draw_device, dtype=dtype).to(
                device
            )

        identity = torch.eye(2, 3, dtype=dtype, device=device)
        self.theta = identity + sigma_affine * normal(batch_size, 2, 3)  # B×2×3 = [A | b]
        self.control_points = make_coordinate_grid(points_tps, points_tps, dtype, device).view(
            -1, 2
        )
        self.control_params = sigma_tps * normal(batch_size, points_tps**2)  # B×P²

    def _spline_terms(self, coordinates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed offsets ``z − c_k`` (B×N×P²×2) and their L1 norms (B×N×P²)."""
        offsets = coordinates[:, :, None, :] - self.control_points[None, None]  # B×N×P²×2
        return offsets, offsets.abs().sum(dim=-1)

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Apply ``T`` to points.

        Args:
            coordinates: ``B×N×2`` points ``(x, y)`` of the transformed frame.

        Returns:
            ``B×N×2`` points ``T(z)`` of the original frame.
        """
        theta = self.theta.to(coordinates)
        affine = coordinates @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]  # B×N×2
        _, distance = self._spline_terms(coordinates)
        spline = (_tps_kernel(distance) * self.control_params.to(coordinates)[:, None]).sum(-1)
        return affine + spline[..., None]  # B×N×2: the spline displacement moves x and y alike

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Analytic jacobian ``∂T/∂z`` at points (differentiable in ``coordinates``).

        Args:
            coordinates: ``B×N×2``.

        Returns:
            ``B×N×2×2``, ``[..., i, j] = ∂T_i/∂z_j``.
        """
        offsets, distance = self._spline_terms(coordinates)
        weights = self.control_params.to(coordinates)[:, None] * _tps_kernel_derivative(distance)
        gradient = (weights[..., None] * torch.sign(offsets)).sum(dim=2)  # B×N×2: ∂spline/∂z
        linear = self.theta.to(coordinates)[:, None, :, :2]  # B×1×2×2
        return linear + gradient[:, :, None, :]  # the same gradient row for x and y

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Warp images: ``out(z) = frame(T(z))`` (bilinear, reflection padding).

        Args:
            frame: ``B×C×H×W``.

        Returns:
            ``B×C×H×W``.
        """
        batch, _, height, width = frame.shape
        grid = make_coordinate_grid(height, width, frame.dtype, frame.device).view(1, -1, 2)
        warped = self.warp_coordinates(grid.expand(batch, -1, -1)).view(batch, height, width, 2)
        # the grid puts pixel centres at ±1: the align_corners=True reading
        return F.grid_sample(frame, warped, padding_mode="reflection", align_corners=True)


def equivariance_losses(
    kp_original: Keypoints, kp_transformed: Keypoints, transform: RandomTPSTransform
) -> dict[str, torch.Tensor]:
    """FOMM's equivariance constraints on keypoint values and jacobians ("Training losses").

    ``value`` = ``mean|p − T(p')|`` and, when jacobians are present, ``jacobian`` =
    ``mean|I − J⁻¹·(J_T(p')·J')|``, where ``(p, J)`` are the keypoints of a frame and
    ``(p', J')`` those of ``transform.transform_frame(frame)``. Both are 0 for an exactly
    equivariant detector.

    Args:
        kp_original: keypoints of the frames (``value`` B×K×2, ``jacobian`` B×K×2×2).
        kp_transformed: keypoints of the transformed frames.
        transform: the transform that made them.

    Returns:
        ``{"value": scalar}`` plus ``{"jacobian": scalar}`` when both have jacobians.
    """
    points = kp_transformed["value"]  # B×K×2
    losses = {"value": (kp_original["value"] - transform.warp_coordinates(points)).abs().mean()}
    if "jacobian" in kp_original and "jacobian" in kp_transformed:
        transported = transform.jacobian(points) @ kp_transformed["jacobian"]  # B×K×2×2
        product = torch.linalg.inv(kp_original["jacobian"]) @ transported  # ≈ I
        eye = torch.eye(2, dtype=product.dtype, device=product.device)
        losses["jacobian"] = (eye - product).abs().mean()
    return losses


# ------------------------------------------------------------------------------- adversarial


def lsgan_generator_loss(
    discriminator_fake: DiscriminatorOutput, scales: Sequence[float]
) -> torch.Tensor:
    """``Σ_s mean((1 − D_s(x̂))²)`` over the discriminator's scales (unweighted)."""
    terms = [((1 - discriminator_fake[f"prediction_map_{s:g}"]) ** 2).mean() for s in scales]
    return torch.stack(terms).sum()


def lsgan_discriminator_loss(
    discriminator_real: DiscriminatorOutput,
    discriminator_fake: DiscriminatorOutput,
    scales: Sequence[float],
) -> torch.Tensor:
    """``Σ_s mean((1 − D_s(x))² + D_s(x̂)²)`` over the discriminator's scales (unweighted)."""
    terms = [
        ((1 - discriminator_real[f"prediction_map_{s:g}"]) ** 2
         + discriminator_fake[f"prediction_map_{s:g}"] ** 2).mean()
        for s in scales
    ]  # fmt: skip
    return torch.stack(terms).sum()


def feature_matching_loss(
    discriminator_real: DiscriminatorOutput,
    discriminator_fake: DiscriminatorOutput,
    scales: Sequence[float],
    weights: Sequence[float],
) -> torch.Tensor:
    """``Σ_s Σ_i w_i · mean|D_s^i(x) − D_s^i(x̂)|`` over the discriminator blocks ``i``."""
    terms = [
        weight * (real - fake).abs().mean()
        for scale in scales
        for weight, real, fake in zip(
            weights,
            discriminator_real[f"feature_maps_{scale:g}"],
            discriminator_fake[f"feature_maps_{scale:g}"],
            strict=True,
        )
        if weight
    ]
    if not terms:
        return discriminator_fake[f"prediction_map_{scales[0]:g}"].new_zeros(())
    return torch.stack(terms).sum()
