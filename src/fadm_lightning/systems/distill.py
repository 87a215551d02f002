"""Few-step FADM: a student refiner distilled from a trained FADM teacher.

``python -m fadm_lightning.train experiment=fadm_distill teacher=CKPT`` builds the student with the
teacher's own architecture and data (read from the teacher's checkpoint), starts it from the
teacher's weights and trains it to do in 1–4 denoiser calls what the teacher's sampler does.

The student's sampler (the one it is trained for, and saved with it): deterministic DDIM (η = 0)
on the trailing grid of k ∈ ``student_steps`` steps (k = 1: t = 99; 2: 99, 49; 4: 99, 74, 49, 24),
started from the coarse frame **without noise** (the residual chain's r = 0), x̂_0 clamped to
the frame's range at each step. No noise is drawn at any point, so a video cannot flicker from
sampling noise, and the output is a function of (g, attr_s − attr_d) alone.

The method is trajectory distillation to the end point, in the way SinSR (Wang et al., CVPR
2024) distils ResShift's deterministic sampler to one step, with a ground-truth term:

* the teacher runs its own (validation) sampler on the batch, with a fresh noise draw per batch:
  x̂_0^T, the point its trajectory ends at;
* the student rolls out its own k-step sampler (k drawn per batch from ``student_steps``)
  through the pipeline's own loop (:meth:`FADMPipeline.run_sampler` with ``last_x0``): the
  first k − 1 calls without gradient, exactly as at inference, and the last call with gradient,
  whose x̂_0^S is the output (the last step of the trailing grid lands on ᾱ = 1);
* loss = λ_T·‖x̂_0^S − x̂_0^T‖² + λ_gt·‖x̂_0^S − x_0‖² (+ λ_color·L_color, eq. 8, as the teacher).

Training the rollout rather than a single timestep means that the 2- and 4-step samplers see
at training time exactly the inputs they see at inference. A checkpoint of the student is a
normal FADM checkpoint (its stored model config is the teacher's ``FADMLitModule`` config with
the student's sampler), so ``animate``, ``rectify``, ``evaluate`` and the notebook take it with
``ckpt=``; the teacher is not needed at inference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from lightning.pytorch.utilities import rank_zero_info

from fadm_lightning.checkpoints import CONFIG_KEY
from fadm_lightning.data.batch import PairBatch
from fadm_lightning.models.errors import compare_state_dicts
from fadm_lightning.pipeline import FADMPipeline
from fadm_lightning.sampler import KNOBS, PRESETS, SamplerConfig
from fadm_lightning.systems.fadm import FADMLitModule

#: constructor arguments of the student that a plain FADMLitModule does not take
DISTILL_KEYS = (
    "teacher_ckpt",
    "teacher_sampler",
    "student_steps",
    "distill_weight",
    "gt_weight",
    "init_from_teacher",
)
STUDENT_TARGET = "fadm_lightning.systems.fadm.FADMLitModule"
SAMPLER_KEYS = KNOBS
#: the student's sampler (its k steps aside): deterministic DDIM from the coarse frame without
#: noise, x̂_0 clipped (the ``one_call`` preset with k steps)
STUDENT_SAMPLER = PRESETS["one_call"]


def plain_model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The student's model config as a plain ``FADMLitModule`` config (what its checkpoints
    store): the distillation arguments dropped, the target set to ``FADMLitModule``."""
    out = {k: copy.deepcopy(v) for k, v in model.items() if k not in DISTILL_KEYS}
    out["_target_"] = STUDENT_TARGET
    return out


class FADMDistillLitModule(FADMLitModule):
    """A student FADM trained on its own few-step sampler against a teacher's output.

    Args (besides those of :class:`~fadm_lightning.systems.fadm.FADMLitModule`, which must
    describe the teacher's architecture):
        teacher_ckpt: the teacher's training checkpoint (loaded when fitting starts).
        teacher_sampler: the teacher's sampler, a mapping with keys among ``steps``, ``eta``,
            ``strength``, ``clip_sample``, ``start_noise``; missing keys (or None) take the
            teacher's validation sampler.
        student_steps: the step counts the student is trained for, one drawn per batch.
        distill_weight: λ_T of ‖x̂_0^S − x̂_0^T‖².
        gt_weight: λ_gt of ‖x̂_0^S − x_0‖² (x_0: the driving frame, or d − g for a residual
            model).
        init_from_teacher: start from the teacher's (EMA) weights.
    """

    def __init__(
        self,
        *args: Any,
        teacher_ckpt: str,
        teacher_sampler: SamplerConfig | Mapping[str, Any] | None = None,
        student_steps: Sequence[int] = (1, 2, 4),
        distill_weight: float = 1.0,
        gt_weight: float = 1.0,
        init_from_teacher: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        steps = [int(k) for k in student_steps]
        if not steps or min(steps) < 1:
            raise ValueError(f"student_steps must be step counts ≥ 1, got {list(student_steps)}")
        if isinstance(teacher_sampler, SamplerConfig):
            teacher_sampler = teacher_sampler.as_dict()
        unknown = set(teacher_sampler or {}) - set(SAMPLER_KEYS)
        if unknown:
            raise ValueError(
                f"teacher_sampler: unknown keys {sorted(unknown)} (use {SAMPLER_KEYS})"
            )
        if distill_weight < 0 or gt_weight < 0 or distill_weight + gt_weight == 0:
            raise ValueError("distill_weight and gt_weight must be ≥ 0 and not both 0")
        self.student_steps = steps
        self.teacher_ckpt, self.teacher_sampler = str(teacher_ckpt), dict(teacher_sampler or {})
        self.distill_weight, self.gt_weight = float(distill_weight), float(gt_weight)
        self.init_from_teacher = bool(init_from_teacher)
        # the teacher: a plain attribute (not a submodule), so it is never trained, never in the
        # state_dict or a checkpoint; loaded in setup("fit")
        self._teacher: FADMPipeline | None = None
        self._teacher_sampler: SamplerConfig | None = None

    # ------------------------------------------------------------------ the teacher
    def setup(self, stage: str) -> None:
        if stage != "fit" or self._teacher is not None:
            return
        from fadm_lightning.checkpoints import load_pipeline, validation_sampler

        path = self.teacher_ckpt
        teacher, cfg = load_pipeline(path)
        teacher.coarse = teacher.attributes = None  # the student's frozen parts serve both
        teacher.unet.requires_grad_(False)
        teacher.agcn.requires_grad_(False)
        # the teacher's own sampler (its validation sampler) under the knobs given here
        sampler = SamplerConfig.from_mapping(self.teacher_sampler).over(
            validation_sampler(cfg.model)
        )
        self._teacher, self._teacher_sampler = teacher, sampler
        own = {"agcn": self.agcn.state_dict(), "unet": self.unet.state_dict()}
        theirs = {"agcn": teacher.agcn.state_dict(), "unet": teacher.unet.state_dict()}
        for part in own:
            differ = compare_state_dicts(own[part], theirs[part]).keys
            if differ:
                raise ValueError(
                    f"teacher {path}: its {part} does not fit the student's "
                    f"({len(differ)} keys differ: {', '.join(differ[:10])})"
                )
        if self.init_from_teacher:
            self.agcn.load_state_dict(theirs["agcn"])
            self.unet.load_state_dict(theirs["unet"])
            if self.ema is not None:  # the EMA starts from the teacher's weights too
                self.ema = EMAModel(list(self.trainable_parameters()), decay=self.ema.decay)
        rank_zero_info(
            f"teacher: {path}; its sampler {sampler.describe()}; student steps {self.student_steps}"
            + (", started from the teacher's weights" if self.init_from_teacher else "")
        )

    def on_fit_start(self) -> None:
        if self._teacher is not None:
            self._teacher.agcn.to(self.device)
            self._teacher.unet.to(self.device)
        super().on_fit_start()

    @torch.no_grad()
    def teacher_x0(
        self, coarse: torch.Tensor, attr_diff: torch.Tensor, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x̂_0 at the end of the teacher's sampler (a fresh noise draw per call)."""
        if self._teacher is None:
            raise RuntimeError("the teacher is loaded when fitting starts (setup('fit'))")
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        sampler = self._teacher_sampler.with_(seed=seed)
        frames = self._teacher.sample(coarse, attr_diff, sampler, guide=guide)
        return self.pipeline.clean_sample(frames, coarse)

    # ------------------------------------------------------------------ the student's sampler
    def student_x0(
        self,
        coarse: torch.Tensor,
        attr_diff: torch.Tensor,
        steps: int,
        guide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The student's k-step sampler with a gradient through its last call: x̂_0^S (not
        clamped; the sampler clamps it). It is the pipeline's own loop,
        :meth:`FADMPipeline.run_sampler` with ``last_x0``, on :data:`STUDENT_SAMPLER`."""
        sampler = STUDENT_SAMPLER.with_(steps=steps)
        return self.pipeline.run_sampler(coarse, attr_diff, sampler, guide=guide, last_x0=True)

    # ------------------------------------------------------------------ training
    def model_step(self, batch: PairBatch) -> dict[str, torch.Tensor]:
        driving = batch["driving"]
        coarse, attr_diff, guide = self.prepare_batch(batch)
        x0 = self.pipeline.clean_sample(driving, coarse)
        x0_teacher = self.teacher_x0(coarse, attr_diff, guide)
        index = int(torch.randint(0, len(self.student_steps), ()).item())
        x0_student = self.student_x0(coarse, attr_diff, self.student_steps[index], guide)
        loss_distill = F.mse_loss(x0_student, x0_teacher)
        loss_gt = F.mse_loss(x0_student, x0)
        loss = self.distill_weight * loss_distill + self.gt_weight * loss_gt
        out = {"loss_distill": loss_distill, "loss_gt": loss_gt}
        color_loss = self.agcn.encode(coarse, driving).color_loss  # L_color (eq. 8)
        if color_loss is not None:
            out["loss_color"] = color_loss
            loss = loss + self.hparams.color_loss_weight * color_loss
        out["loss"] = loss
        return out

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # a student checkpoint is a plain FADM checkpoint: inference never needs the teacher
        stored = checkpoint.get(CONFIG_KEY)
        if stored is not None and "model" in stored:
            stored = dict(stored)
            stored["model"] = plain_model_config(stored["model"])
            checkpoint[CONFIG_KEY] = stored
