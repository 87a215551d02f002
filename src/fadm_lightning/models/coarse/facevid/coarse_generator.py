"""face-vid2vid as FADM's frozen coarse generator (the one FADM's ``demo.py`` refines)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import torch

from ..base import Annotation, CoarseCapabilities, CoarseGenerator
from ..fomm.animation import normalize_kp
from .checkpoint import EXPECTED_CHECKPOINT, load_facevid_checkpoint, missing_checkpoint_message
from .generator import OcclusionAwareGenerator
from .keypoint_detector import HeadPose, HEEstimator, Keypoints, KPDetector
from .keypoint_transform import keypoint_transformation

MODES = ("absolute", "relative")


class FacevidCoarseGenerator(CoarseGenerator):
    """Frozen face-vid2vid (FADM's vox-256 configuration): ``coarse(source, driving)["prediction"]``.

    The canonical keypoints come from the source only; source and driving keypoints are
    ``T(x_c, he(source))`` and ``T(x_c, he(driving))`` (:func:`keypoint_transformation`).

    * ``mode="absolute"`` (default; what FADM's demo does): the generator is driven by the
      driving keypoints as they are.
    * ``mode="relative"``: zhanglonghao's relative transfer
      ``kp = kp_source + s·(kp_driving − kp_driving_initial)`` from a reference driving frame,
      given to :meth:`set_driving_initial` or as ``forward(…, driving_initial=frame)``; ``s`` is
      1, or with ``adapt_movement_scale`` the keypoint-hull size ratio (FOMM's
      :func:`~..fomm.animation.normalize_kp`, computed on the x–y hull per batch item; the
      original demo uses the 3-D hull of batch item 0).
    * Free view: ``yaw`` / ``pitch`` / ``roll`` (degrees) replace the angles estimated from the
      driving frame (each independently; ``None`` keeps the estimate). They affect only the
      driving keypoints, as in the original demo.

    The module stays in ``eval()`` even when a parent calls ``.train()``, has
    ``requires_grad=False`` and runs under ``torch.no_grad()``.

    Args:
        checkpoint: FADM's ``Facevid.pth`` (official format, see ``required_paths``). Required.
        num_kp: number of keypoints K (15).
        image_channel: image channels (3).
        kp_block_expansion, kp_max_features, kp_num_blocks, kp_reshape_channel,
        kp_reshape_depth, kp_temperature, kp_scale_factor: keypoint detector
            (32, 1024, 5, 16384, 16, 0.1, 0.25).
        he_block_expansion, he_max_features, he_num_bins: head-pose estimator (64, 2048, 66).
        block_expansion, max_features, num_down_blocks, reshape_channel, reshape_depth,
        num_resblocks, estimate_occlusion_map: generator (64, 512, 2, 32, 16, 6, True).
        dense_motion_block_expansion, dense_motion_max_features, dense_motion_num_blocks,
        dense_motion_compress, kp_variance: dense motion network (32, 1024, 5, 4, 0.01).
        mode: ``"absolute"`` or ``"relative"``.
        adapt_movement_scale: relative mode: scale the movement by the hull size ratio.
        yaw, pitch, roll: free-view angles in degrees (None: estimated from the driving frame).
        align_corners: of every resampling call (False reproduces FADM's torch 1.8 runs).
        allow_random_weights_for_tests: build with RANDOM weights when the checkpoint is unset
            or absent (a warning is issued). For tests only: the output is meaningless.
    """

    required_paths = {"checkpoint": EXPECTED_CHECKPOINT}
    capabilities = CoarseCapabilities(relative_motion=True, release_file="facevid")

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None,
        num_kp: int = 15,
        image_channel: int = 3,
        kp_block_expansion: int = 32,
        kp_max_features: int = 1024,
        kp_num_blocks: int = 5,
        kp_reshape_channel: int = 16384,
        kp_reshape_depth: int = 16,
        kp_temperature: float = 0.1,
        kp_scale_factor: float = 0.25,
        he_block_expansion: int = 64,
        he_max_features: int = 2048,
        he_num_bins: int = 66,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
        estimate_occlusion_map: bool = True,
        dense_motion_block_expansion: int = 32,
        dense_motion_max_features: int = 1024,
        dense_motion_num_blocks: int = 5,
        dense_motion_compress: int = 4,
        kp_variance: float = 0.01,
        mode: Literal["absolute", "relative"] = "absolute",
        adapt_movement_scale: bool = False,
        yaw: float | None = None,
        pitch: float | None = None,
        roll: float | None = None,
        align_corners: bool = False,
        allow_random_weights_for_tests: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"FacevidCoarseGenerator: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.adapt_movement_scale = adapt_movement_scale
        self.yaw, self.pitch, self.roll = yaw, pitch, roll

        # 1. fail fast on a missing checkpoint, before building ~125 M parameters
        checkpoint_path = None if checkpoint is None else Path(checkpoint)
        has_checkpoint = checkpoint_path is not None and checkpoint_path.is_file()
        if not has_checkpoint and not allow_random_weights_for_tests:
            raise FileNotFoundError(missing_checkpoint_message(checkpoint))
        self.checkpoint = str(checkpoint_path) if has_checkpoint else None

        # 2. networks
        self.kp_detector = KPDetector(
            block_expansion=kp_block_expansion,
            num_kp=num_kp,
            image_channel=image_channel,
            max_features=kp_max_features,
            reshape_channel=kp_reshape_channel,
            reshape_depth=kp_reshape_depth,
            num_blocks=kp_num_blocks,
            temperature=kp_temperature,
            scale_factor=kp_scale_factor,
        )
        self.he_estimator = HEEstimator(
            block_expansion=he_block_expansion,
            num_kp=num_kp,
            image_channel=image_channel,
            max_features=he_max_features,
            num_bins=he_num_bins,
        )
        self.generator = OcclusionAwareGenerator(
            image_channel=image_channel,
            num_kp=num_kp,
            block_expansion=block_expansion,
            max_features=max_features,
            num_down_blocks=num_down_blocks,
            reshape_channel=reshape_channel,
            reshape_depth=reshape_depth,
            num_resblocks=num_resblocks,
            estimate_occlusion_map=estimate_occlusion_map,
            dense_motion_block_expansion=dense_motion_block_expansion,
            dense_motion_max_features=dense_motion_max_features,
            dense_motion_num_blocks=dense_motion_num_blocks,
            dense_motion_compress=dense_motion_compress,
            kp_variance=kp_variance,
            align_corners=align_corners,
        )

        # 3. weights
        if has_checkpoint:
            load_facevid_checkpoint(
                checkpoint_path, self.kp_detector, self.he_estimator, self.generator
            )
        else:
            warnings.warn(
                f"FacevidCoarseGenerator: RANDOM WEIGHTS (allow_random_weights_for_tests=True; "
                f"checkpoint {checkpoint!r} is unset or absent). Coarse frames are meaningless.",
                stacklevel=2,
            )

        self._he_driving_initial: HeadPose | None = None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FacevidCoarseGenerator:
        """Frozen: always stays in eval mode (BatchNorm uses its running statistics)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.kp_detector.kp.weight.device

    def set_view(
        self, yaw: float | None = None, pitch: float | None = None, roll: float | None = None
    ) -> None:
        """Set (or clear with None) the free-view angles in degrees."""
        self.yaw, self.pitch, self.roll = yaw, pitch, roll

    @torch.no_grad()
    def set_driving_initial(self, frame: torch.Tensor | None) -> None:
        """Set (or clear with None) the reference driving frame of relative mode.

        Its head pose is estimated once here (``frame``: 1×3×H×W or B×3×H×W); its keypoints are
        built from each source's canonical keypoints at every call.
        """
        self._he_driving_initial = None if frame is None else self.he_estimator(frame)

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
            ``prediction`` B×3×H×W in (0, 1), the generator's ``mask``, ``deformation`` and
            ``occlusion_map``, the keypoints ``kp_canonical``, ``kp_source``, ``kp_driving``
            and ``kp_norm`` (the ones the generator used), each B×K×3, the rotations
            ``rotation_source`` / ``rotation_driving`` (B×3×3) and the angles
            ``pose_source`` / ``pose_driving`` (B×3: yaw, pitch, roll in degrees, as used).
        """
        if source.dim() != 4 or source.shape != driving.shape:
            raise ValueError(
                "FacevidCoarseGenerator expects source and driving of the same shape B×3×H×W, "
                f"got {tuple(source.shape)} and {tuple(driving.shape)}"
            )
        batch = source.shape[0]
        kp_canonical = self.kp_detector(source)  # x_c: B×K×3
        # one estimator call for both frames (eval-mode BatchNorm: items are independent)
        he_both = self.he_estimator(torch.cat([source, driving]))
        he_source = {key: value[:batch] for key, value in he_both.items()}
        he_driving = {key: value[batch:] for key, value in he_both.items()}

        kp_source = keypoint_transformation(kp_canonical, he_source)
        kp_driving = keypoint_transformation(
            kp_canonical, he_driving, yaw=self.yaw, pitch=self.pitch, roll=self.roll
        )
        kp_norm: Keypoints = {"value": kp_driving["value"]}
        if self.mode == "relative":
            if driving_initial is not None:
                he_initial = self.he_estimator(driving_initial)
            elif self._he_driving_initial is not None:
                he_initial = self._he_driving_initial
            else:
                raise ValueError(
                    "FacevidCoarseGenerator(mode='relative') needs a reference driving frame: "
                    "call set_driving_initial(frame) or pass forward(..., driving_initial=frame)"
                )
            he_initial = {
                key: value.expand(batch, *value.shape[1:]) for key, value in he_initial.items()
            }
            kp_initial = keypoint_transformation(kp_canonical, he_initial)
            kp_norm = normalize_kp(
                {"value": kp_source["value"]},
                {"value": kp_driving["value"]},
                {"value": kp_initial["value"]},
                adapt_movement_scale=self.adapt_movement_scale,
                use_relative_movement=True,
                use_relative_jacobian=False,
            )

        out = self.generator(
            source, kp_driving={"value": kp_norm["value"]}, kp_source={"value": kp_source["value"]}
        )
        out.update(
            kp_canonical=kp_canonical["value"],
            kp_source=kp_source["value"],
            kp_driving=kp_driving["value"],
            kp_norm=kp_norm["value"],
            rotation_source=kp_source["rotation"],
            rotation_driving=kp_driving["rotation"],
            pose_source=kp_source["pose"],
            pose_driving=kp_driving["pose"],
        )
        return out
