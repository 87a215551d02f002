"""FOMM as FADM's frozen coarse generator (keypoint detector + occlusion-aware generator)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import torch

from ..base import Annotation, CoarseCapabilities, CoarseGenerator
from .animation import find_best_frame, normalize_kp
from .checkpoint import EXPECTED_CHECKPOINT, load_fomm_checkpoint, missing_checkpoint_message
from .generator import OcclusionAwareGenerator
from .keypoint_detector import Keypoints, KPDetector

MODES = ("absolute", "relative")


class FOMMCoarseGenerator(CoarseGenerator):
    """Frozen FOMM (vox-256 by default): ``coarse(source, driving)["prediction"]``.

    FADM trains on FOMM frames animated with **absolute** keypoints (source and driving from
    the same video), the default ``mode``. ``mode="relative"`` applies FOMM's relative motion
    transfer (:func:`normalize_kp`, both relative flags) from a reference driving frame, given
    to :meth:`set_driving_initial` or as ``forward(…, driving_initial=frame)``.

    The module stays in ``eval()`` (BatchNorm running statistics) even when a parent calls
    ``.train()``, has ``requires_grad=False`` and runs under ``torch.no_grad()``.

    Args:
        checkpoint: official-format FOMM checkpoint (``vox-cpk.pth.tar``,
            ``vox-adv-cpk.pth.tar`` or FADM's ``FOMM.pth``). Required.
        num_kp: number of keypoints K (10).
        num_channels: image channels (3).
        estimate_jacobian: keypoint jacobians (True).
        kp_block_expansion, kp_max_features, kp_num_blocks, kp_temperature, kp_scale_factor:
            keypoint detector (32, 1024, 5, 0.1, 0.25).
        block_expansion, max_features, num_down_blocks, num_bottleneck_blocks,
        estimate_occlusion_map: generator (64, 512, 2, 6, True).
        dense_motion_block_expansion, dense_motion_max_features, dense_motion_num_blocks,
        dense_motion_scale_factor, kp_variance: dense motion network (64, 1024, 5, 0.25, 0.01).
        mode: ``"absolute"`` (driving keypoints as detected) or ``"relative"``.
        adapt_movement_scale: in relative mode, scale the movement by the keypoint-hull size
            ratio of source and reference driving frame.
        align_corners: of every resampling call (False reproduces FADM's torch 1.8 runs).
        allow_random_weights_for_tests: build with RANDOM weights when the checkpoint is unset
            or absent (a warning is issued). For tests only: the output is meaningless.
    """

    required_paths = {"checkpoint": EXPECTED_CHECKPOINT}
    capabilities = CoarseCapabilities(relative_motion=True, warped_source=True, release_file="fomm")

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None,
        num_kp: int = 10,
        num_channels: int = 3,
        estimate_jacobian: bool = True,
        kp_block_expansion: int = 32,
        kp_max_features: int = 1024,
        kp_num_blocks: int = 5,
        kp_temperature: float = 0.1,
        kp_scale_factor: float = 0.25,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        estimate_occlusion_map: bool = True,
        dense_motion_block_expansion: int = 64,
        dense_motion_max_features: int = 1024,
        dense_motion_num_blocks: int = 5,
        dense_motion_scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        mode: Literal["absolute", "relative"] = "absolute",
        adapt_movement_scale: bool = False,
        align_corners: bool = False,
        allow_random_weights_for_tests: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"FOMMCoarseGenerator: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.adapt_movement_scale = adapt_movement_scale

        # 1. fail fast on a missing checkpoint, before building ~60 M parameters
        checkpoint_path = None if checkpoint is None else Path(checkpoint)
        has_checkpoint = checkpoint_path is not None and checkpoint_path.is_file()
        if not has_checkpoint and not allow_random_weights_for_tests:
            raise FileNotFoundError(missing_checkpoint_message(checkpoint))
        self.checkpoint = str(checkpoint_path) if has_checkpoint else None

        # 2. networks
        self.kp_detector = KPDetector(
            block_expansion=kp_block_expansion,
            num_kp=num_kp,
            num_channels=num_channels,
            max_features=kp_max_features,
            num_blocks=kp_num_blocks,
            temperature=kp_temperature,
            estimate_jacobian=estimate_jacobian,
            scale_factor=kp_scale_factor,
        )
        self.generator = OcclusionAwareGenerator(
            num_channels=num_channels,
            num_kp=num_kp,
            block_expansion=block_expansion,
            max_features=max_features,
            num_down_blocks=num_down_blocks,
            num_bottleneck_blocks=num_bottleneck_blocks,
            estimate_occlusion_map=estimate_occlusion_map,
            dense_motion_block_expansion=dense_motion_block_expansion,
            dense_motion_num_blocks=dense_motion_num_blocks,
            dense_motion_max_features=dense_motion_max_features,
            dense_motion_scale_factor=dense_motion_scale_factor,
            kp_variance=kp_variance,
            align_corners=align_corners,
        )

        # 3. weights
        if has_checkpoint:
            load_fomm_checkpoint(checkpoint_path, self.kp_detector, self.generator)
        else:
            warnings.warn(
                f"FOMMCoarseGenerator: RANDOM WEIGHTS (allow_random_weights_for_tests=True; "
                f"checkpoint {checkpoint!r} is unset or absent). Coarse frames are meaningless.",
                stacklevel=2,
            )

        self._kp_driving_initial: Keypoints | None = None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FOMMCoarseGenerator:
        """Frozen: always stays in eval mode (BatchNorm uses its running statistics)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.kp_detector.kp.weight.device

    @torch.no_grad()
    def detect_keypoints(self, image: torch.Tensor) -> Keypoints:
        """Keypoints of ``image`` (B×3×H×W in [0, 1]): ``value`` B×K×2, ``jacobian`` B×K×2×2."""
        return self.kp_detector(image)

    @torch.no_grad()
    def set_driving_initial(self, frame: torch.Tensor | None) -> None:
        """Set (or clear with None) the reference driving frame of relative mode.

        Its keypoints are computed once here (``frame``: 1×3×H×W or B×3×H×W).
        """
        self._kp_driving_initial = None if frame is None else self.kp_detector(frame)

    @torch.no_grad()
    def drive(
        self, source: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints
    ) -> dict[str, torch.Tensor]:
        """Run the generator with given keypoints (no normalisation).

        Returns:
            the generator outputs (``mask``, ``sparse_deformed``, ``occlusion_map``,
            ``deformed``, ``prediction``) and the keypoints as ``kp_source``,
            ``kp_source_jacobian``, ``kp_norm``, ``kp_norm_jacobian``.
        """
        out = self.generator(source, kp_driving=kp_driving, kp_source=kp_source)
        out.update(_flatten_keypoints("kp_source", kp_source))
        out.update(_flatten_keypoints("kp_norm", kp_driving))
        return out

    @torch.no_grad()
    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        source_annotation: Annotation | None = None,
        driving_annotation: Annotation | None = None,
        driving_initial: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Animate ``source`` with the motion of ``driving``.

        Args:
            source: B×3×H×W in [0, 1] (H = W = 256 for the official weights).
            driving: B×3×H×W in [0, 1].
            source_annotation: ignored.
            driving_annotation: ignored.
            driving_initial: relative mode only: reference driving frame (1 or B×3×H×W);
                overrides :meth:`set_driving_initial`.

        Returns:
            ``prediction`` B×3×H×W in (0, 1), the other generator outputs (``mask``,
            ``sparse_deformed``, ``occlusion_map``, ``deformed``) and the keypoints
            ``kp_source``/``kp_driving``/``kp_norm`` (B×K×2, the one the generator used) with
            their ``*_jacobian`` (B×K×2×2).
        """
        if source.dim() != 4 or source.shape != driving.shape:
            raise ValueError(
                "FOMMCoarseGenerator expects source and driving of the same shape B×3×H×W, got "
                f"{tuple(source.shape)} and {tuple(driving.shape)}"
            )
        # one detector call for both frames (eval-mode BatchNorm: items are independent)
        kp_both = self.kp_detector(torch.cat([source, driving]))  # 2B×K×2 (+ 2B×K×2×2)
        kp_source = {key: value[: len(source)] for key, value in kp_both.items()}
        kp_driving = {key: value[len(source) :] for key, value in kp_both.items()}
        kp_norm = kp_driving
        if self.mode == "relative":
            if driving_initial is not None:
                kp_initial = self.kp_detector(driving_initial)
            elif self._kp_driving_initial is not None:
                kp_initial = self._kp_driving_initial
            else:
                raise ValueError(
                    "FOMMCoarseGenerator(mode='relative') needs a reference driving frame: call "
                    "set_driving_initial(frame) or pass forward(..., driving_initial=frame)"
                )
            kp_norm = normalize_kp(
                kp_source,
                kp_driving,
                kp_initial,
                adapt_movement_scale=self.adapt_movement_scale,
                use_relative_movement=True,
                use_relative_jacobian=True,
            )
        out = self.drive(source, kp_source, kp_norm)
        out.update(_flatten_keypoints("kp_driving", kp_driving))
        return out

    @torch.no_grad()
    def animate(
        self,
        source: torch.Tensor,
        driving_video: torch.Tensor,
        relative: bool = True,
        adapt_scale: bool = True,
        best_frame: int | None = None,
        auto_best_frame: bool = False,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Animate one source image with a whole driving video (FOMM ``demo.py``).

        The reference frame of relative motion is ``best_frame``, or the frame whose keypoint
        layout best matches the source's (:func:`find_best_frame`) with ``auto_best_frame``,
        or frame 0. FOMM's demo animates forwards and backwards from that frame; every frame
        depends only on itself and the reference frame, so this equals animating all frames in
        order with that reference, which is what is done here, ``batch_size`` frames at a time.

        Args:
            source: 3×H×W or 1×3×H×W in [0, 1].
            driving_video: T×3×H×W in [0, 1] (may stay on the CPU; batches are moved).
            relative: relative motion (both FOMM relative flags); else absolute keypoints.
            adapt_scale: scale the relative movement by the keypoint-hull size ratio.
            best_frame: index of the reference frame.
            auto_best_frame: pick the reference frame from the keypoint layouts.
            batch_size: frames per generator call.

        Returns:
            T×3×H×W predictions in (0, 1), on ``driving_video``'s device.
        """
        if source.dim() == 3:
            source = source.unsqueeze(0)
        if source.dim() != 4 or source.shape[0] != 1 or driving_video.dim() != 4:
            raise ValueError(
                "animate expects source 3×H×W (or 1×3×H×W) and driving_video T×3×H×W, got "
                f"{tuple(source.shape)} and {tuple(driving_video.shape)}"
            )
        num_frames = driving_video.shape[0]
        if best_frame is not None and not 0 <= best_frame < num_frames:
            raise ValueError(f"best_frame={best_frame} is outside the video's {num_frames} frames")
        source = source.to(self.device)
        kp_source = self.kp_detector(source)  # 1×K×2

        # 1. keypoints of every driving frame (cheap) and the reference frame
        chunks = [
            driving_video[start : start + batch_size].to(self.device)
            for start in range(0, num_frames, batch_size)
        ]
        kp_chunks = [self.kp_detector(chunk) for chunk in chunks]
        if best_frame is None:
            best_frame = 0
            if auto_best_frame:
                all_values = torch.cat([kp["value"] for kp in kp_chunks])  # T×K×2
                best_frame = find_best_frame(kp_source["value"], all_values)
        chunk_index, offset = divmod(best_frame, batch_size)
        kp_initial = {
            key: value[offset : offset + 1] for key, value in kp_chunks[chunk_index].items()
        }

        # 2. generate, batch by batch
        predictions = []
        for chunk, kp_driving in zip(chunks, kp_chunks, strict=True):
            kp_norm = normalize_kp(
                kp_source,
                kp_driving,
                kp_initial,
                adapt_movement_scale=adapt_scale,
                use_relative_movement=relative,
                use_relative_jacobian=relative,
            )
            batch = chunk.shape[0]
            kp_source_batch = {
                key: value.expand(batch, *value.shape[1:]) for key, value in kp_source.items()
            }
            out = self.generator(source.expand(batch, -1, -1, -1), kp_norm, kp_source_batch)
            predictions.append(out["prediction"].to(driving_video.device))
        return torch.cat(predictions)


def _flatten_keypoints(prefix: str, kp: Keypoints) -> dict[str, torch.Tensor]:
    """``{"value": v, "jacobian": j}`` → ``{prefix: v, prefix + "_jacobian": j}``."""
    out = {prefix: kp["value"]}
    if "jacobian" in kp:
        out[f"{prefix}_jacobian"] = kp["jacobian"]
    return out
