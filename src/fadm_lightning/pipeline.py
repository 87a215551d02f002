"""The FADM sampling pipeline: frozen coarse generator + attribute extractor + AGCN + UNet + DDIM.

One object owns the denoising loop; validation, callbacks and the inference commands all call it.

    pipe = FADMPipeline(agcn, unet, scheduler, coarse=coarse, attributes=extractor)
    out = pipe(source, driving, sampler=SamplerConfig(steps=25, eta=0.0, seed=0))
    out.coarse, out.refined                    # B×3×H×W in [0, 1]

The sampler is one :class:`~fadm_lightning.sampler.SamplerConfig`, passed whole to
:meth:`FADMPipeline.sample`; a knob left at None takes the model's own sampler
(:attr:`FADMPipeline.sampler`: a checkpoint's validated sampler, the official one for the
release). ``sampler=OFFICIAL`` (η = 1 over all 100 training timesteps) is the official sampler
(ancestral sampling with the posterior variance, REFERENCE_SPEC §4.6). One noise draw (x_T and the per-step noise) is shared by
every frame of the batch, and re-drawn identically for the same ``seed``, so that the frames of a
video processed in several chunks all see the same noise (temporal consistency).

A pipeline saves to and loads from a folder the diffusers way (:meth:`FADMPipeline.save_pretrained`,
:meth:`FADMPipeline.from_pretrained`; the format is in :mod:`fadm_lightning.pretrained`), and
:meth:`FADMPipeline.from_official_release` assembles the four files of the official release.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import DDIMScheduler
from torch import nn
from tqdm.auto import tqdm

from fadm_lightning.models.agcn import AGCN
from fadm_lightning.models.attributes.base import attribute_capabilities
from fadm_lightning.sampler import OFFICIAL, SamplerConfig, denoiser_calls, from_legacy
from fadm_lightning.sampler import OFFICIAL_SAMPLER as OFFICIAL_SAMPLER  # re-exported
from fadm_lightning.schedule import (  # re-exported
    PREDICTION_TYPES as PREDICTION_TYPES,
)
from fadm_lightning.schedule import _alpha_bar as _alpha_bar
from fadm_lightning.schedule import min_snr_weight as min_snr_weight
from fadm_lightning.schedule import official_scheduler as official_scheduler
from fadm_lightning.schedule import output_from_x0 as output_from_x0
from fadm_lightning.schedule import training_target as training_target
from fadm_lightning.schedule import x0_and_epsilon as x0_and_epsilon

Annotation = Mapping[str, torch.Tensor] | None


TARGETS = ("image", "residual")
#: full-resolution images that ``guide_inputs`` may add to the denoiser's input (3 channels each):
#: "deformed" is the source warped by the coarse generator's motion, before its decoder (FOMM's
#: output of that name); "source" is the source portrait itself
GUIDE_INPUTS = ("deformed", "source")


@dataclass
class PipelineOutput:
    coarse: torch.Tensor  # g, B×3×H×W in [0, 1]
    refined: torch.Tensor  # x̂_0, B×3×H×W in [0, 1]
    attr_diff: torch.Tensor  # attr_s − attr_d, B×D


def _expand(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch > 1 else x


def resize_to(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B×C×h×w images at ``size`` (H, W): unchanged when they have it, else bilinear with
    antialiasing (a coarse generator's outputs at another resolution than the frames)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return torch.nn.functional.interpolate(
        images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True
    )


def _expand_annotation(annotation: Annotation, batch: int) -> Annotation:
    if annotation is None:
        return None
    return {k: _expand(v, batch) for k, v in annotation.items()}


def model_sampler(values: SamplerConfig | Mapping[str, Any] | None) -> SamplerConfig:
    """A model's own sampler, complete: ``values`` (new or old knob names,
    :func:`~fadm_lightning.sampler.from_legacy`) over the official sampler, seed 0."""
    if values is None:
        return OFFICIAL
    if not isinstance(values, SamplerConfig):
        values = SamplerConfig.from_mapping(from_legacy(values))
    return SamplerConfig(**values.over(OFFICIAL).as_dict())


class FADMPipeline:
    """Coarse animation, attributes, AGCN condition and the DDIM loop for a batch of frames.

    Args:
        agcn: the conditioning network.
        unet: a diffusers ``UNet2DModel`` whose input is cat(x_t, condition).
        scheduler: a diffusers ``DDIMScheduler`` (its config is copied for every call).
        coarse: frozen coarse generator (needed by :meth:`__call__`, not by :meth:`sample`).
        attributes: frozen attribute extractor (likewise).
        attributes_from: "driving" (paper: attr_d from the driving frame) or "coarse" (official
            demo: attr_d from the coarse prediction).
        target: "image" (paper: the chain diffuses the frame x) or "residual" (it diffuses
            r = x − g and returns g + r̂, so a refiner whose r̂ is 0 returns the coarse frame).
        coarse_input: the denoiser also sees g at full resolution: its input is cat(x_t, c, g).
        guide_inputs: more full-resolution images for the denoiser, appended to its input in this
            order (names in :data:`GUIDE_INPUTS`; not in the paper, a switch of this project:
            ``"deformed"`` gives it the sharp source warped by the coarse generator's motion,
            which a learned animator's decoder blurs; docs/real_faces.md).

    What a loader knows about the model, kept for :meth:`save_pretrained` and the inference
    commands (keyword-only, all optional):

        image_size: the resolution it was trained at (frames are cropped to it).
        sampler: the model's own sampler, which :meth:`sample` completes a caller's with: the
            one it was validated with (a :class:`~fadm_lightning.sampler.SamplerConfig` or a
            mapping of its knobs, old spellings too; default and for the release
            :data:`~fadm_lightning.sampler.OFFICIAL`).
        part_configs: ``_target_`` + plain constructor arguments of the parts that are not
            diffusers objects (``agcn``, ``coarse``, ``attributes``, an official ``unet``).
        run_config: the training run's ``data`` and ``model`` configs.
        source: where it was loaded from (file, step, EMA), for the model card.
    """

    def __init__(
        self,
        agcn: AGCN,
        unet: nn.Module,
        scheduler: DDIMScheduler,
        coarse: nn.Module | None = None,
        attributes: nn.Module | None = None,
        attributes_from: str = "driving",
        target: str = "image",
        coarse_input: bool = False,
        guide_inputs: Sequence[str] = (),
        *,
        image_size: int | None = None,
        sampler: SamplerConfig | Mapping[str, Any] | None = None,
        part_configs: Mapping[str, Mapping[str, Any]] | None = None,
        run_config: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if attributes_from not in ("driving", "coarse"):
            raise ValueError(
                f"attributes_from must be 'driving' or 'coarse', got {attributes_from!r}"
            )
        if attributes_from == "coarse" and attribute_capabilities(attributes).needs_annotations:
            raise ValueError(
                "attributes_from='coarse' needs an image-based extractor, not ground truth"
            )
        self.agcn, self.unet, self.scheduler = agcn, unet, scheduler
        self.coarse, self.attributes = coarse, attributes
        self.attributes_from = attributes_from
        self.target, self.coarse_input = target, coarse_input
        unknown = [name for name in guide_inputs if name not in GUIDE_INPUTS]
        if unknown:
            raise ValueError(f"guide_inputs must be among {GUIDE_INPUTS}, got {unknown}")
        self.guide_inputs = tuple(guide_inputs)
        self.image_size = image_size
        self.sampler = model_sampler(sampler)
        self.part_configs = {k: dict(v) for k, v in (part_configs or {}).items()}
        self.run_config = None if run_config is None else dict(run_config)
        self.source = dict(source or {})

    # ------------------------------------------------------------------ sharing (folders)
    def save_pretrained(
        self,
        folder: str | os.PathLike[str],
        *,
        model_card_metrics: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        name: str | None = None,
    ) -> Path:
        """Write the pipeline as a self-contained folder (diffusers layout, safetensors weights,
        ``model_index.json``, a generated ``README.md`` model card); see
        :func:`fadm_lightning.pretrained.save_pretrained`.

        Args:
            folder: the folder to write (written next to it, then renamed into place).
            model_card_metrics: the ``results.json`` of ``python -m fadm_lightning.evaluate``
                (its path or its contents) for the card's metrics table.
            overwrite: replace an existing non-empty folder.
            name: the model's name in the card (default: the folder's name).
        Returns:
            The folder's path.
        """
        from fadm_lightning.loading.folder import save_pretrained

        return save_pretrained(
            self, folder, model_card_metrics=model_card_metrics, overwrite=overwrite, name=name
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        overrides: list[str] | tuple[str, ...] = (),
    ) -> FADMPipeline:
        """Load a folder written by :meth:`save_pretrained` (strictly: a missing or mis-shaped
        part or key is an error naming the file); see :func:`fadm_lightning.pretrained.load_pretrained`.

        Args:
            folder: the folder (it holds ``model_index.json``).
            device: where the networks go.
            overrides: dot-list overrides of the frozen parts' configs
                (``["coarse.yaw=20"]``, ``["coarse.checkpoint=/w/vox-cpk.pth.tar"]``).
        """
        from fadm_lightning.loading.folder import load_pretrained

        return load_pretrained(folder, overrides=overrides, device=device, pipeline_cls=cls)[0]

    @classmethod
    def from_official_release(
        cls,
        diffusion: str | os.PathLike[str] | None,
        deca: str | os.PathLike[str] | None,
        facevid: str | os.PathLike[str] | None = None,
        fomm: str | os.PathLike[str] | None = None,
        coarse: str = "facevid",
        attributes_from: Literal["coarse", "driving"] = "coarse",
        facevid_options: Mapping[str, Any] | None = None,
        fomm_options: Mapping[str, Any] | None = None,
        denoiser_options: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> FADMPipeline:
        """The official FADM release (four files) as a ready pipeline (frozen, eval mode, on
        ``device``): ``conf/model/fadm_official_release.yaml``, ``docs/official_release.md``.

        The official demo (REFERENCE_SPEC §4.4, §4.6): face-vid2vid coarse frames with absolute
        keypoints, attr_d = DECA(**coarse frame**), and DDIM η = 1 over all 100 steps with the
        noise fixed per video (:data:`~fadm_lightning.sampler.OFFICIAL`, the pipeline's
        :attr:`sampler`).
        Every required file is checked before anything is built; all missing ones are reported
        together.

        Args:
            diffusion: ``diffusion.pth`` (the denoiser, :class:`OfficialFADMDenoiser`, in both
                roles: AGCN and UNet).
            deca: ``deca_model.tar`` (attributes, :class:`DECAAttributes`).
            facevid: ``Facevid.pth`` (required with ``coarse="facevid"``).
            fomm: ``FOMM.pth`` (required with ``coarse="fomm"``).
            coarse: the ``conf/coarse/<name>.yaml`` of the coarse generator, which declares its
                release file (``capabilities.release_file``): ``"facevid"`` (official demo) or
                ``"fomm"`` (the coarse frames FADM was trained on).
            attributes_from: ``"coarse"`` (official demo) or ``"driving"`` (paper, eq. 9).
            facevid_options: extra arguments of :class:`FacevidCoarseGenerator` (``mode``,
                ``yaw``/``pitch``/``roll``, …; sizes for tests).
            fomm_options: extra arguments of :class:`FOMMCoarseGenerator`.
            denoiser_options: extra arguments of :class:`OfficialFADMDenoiser` (sizes for tests).
            device: where every network is put.

        Raises:
            ValueError: unknown ``coarse``, or DECA's size differs from the denoiser's.
            OfficialReleaseMissingError: required files are missing (each one is listed).
        """
        from fadm_lightning.models.official.release import assemble_official_release

        return assemble_official_release(
            cls,
            diffusion,
            deca,
            facevid=facevid,
            fomm=fomm,
            coarse=coarse,
            attributes_from=attributes_from,
            facevid_options=facevid_options,
            fomm_options=fomm_options,
            denoiser_options=denoiser_options,
            device=device,
        )

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def guide_channels(self) -> int:
        """Channels that ``guide_inputs`` add to the denoiser's input."""
        return 3 * len(self.guide_inputs)

    def denoiser_input(
        self,
        x_t: torch.Tensor,
        condition: torch.Tensor,
        coarse: torch.Tensor,
        guide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """cat(x_t, c) as in the paper, cat(x_t, c, g) with ``coarse_input``, then the
        ``guide_inputs`` images (``guide``, from :meth:`guide`)."""
        parts = [x_t, condition, coarse] if self.coarse_input else [x_t, condition]
        if self.guide_inputs:
            if guide is None:
                raise ValueError(
                    f"this model's denoiser also takes {list(self.guide_inputs)} (guide_inputs): "
                    "pass guide= (FADMPipeline.prepare(..., with_guide=True) gives it)"
                )
            parts.append(guide.to(x_t.dtype))
        return torch.cat(parts, dim=1)

    def guide(
        self,
        source: torch.Tensor,
        coarse_output: Mapping[str, torch.Tensor] | None = None,
        driving: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The ``guide_inputs`` images of B frames, B×(3·n)×H×W (None when there are none).

        ``coarse_output`` is the coarse generator's output dict for (``source``, ``driving``);
        without it the generator is run here (rectify: the video frame is g, and the guide is
        the source animated to it).
        """
        if not self.guide_inputs:
            return None
        if coarse_output is None and "deformed" in self.guide_inputs:
            if driving is None or self.coarse is None:
                raise ValueError("guide: needs the coarse generator's output or driving frames")
            coarse_output = self.coarse(_expand(source, driving.shape[0]), driving)
        parts = []
        for name in self.guide_inputs:
            if name == "source":
                image = source
            elif name not in coarse_output:
                raise ValueError(
                    f"guide_inputs asks for {name!r}, which {type(self.coarse).__name__} does not "
                    f"output (it gives {sorted(coarse_output)})"
                )
            else:
                image = coarse_output[name]
            parts.append(image.clamp(0, 1))
        size = parts[0].shape[-2:] if driving is None else driving.shape[-2:]
        batch = max(p.shape[0] for p in parts)
        return torch.cat([_expand(resize_to(p, size), batch) for p in parts], dim=1)

    def clean_sample(self, frame: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """x_0 of the chain for a real frame: the frame itself, or its residual x − g."""
        return frame - coarse if self.target == "residual" else frame

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def prepare(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        source_annotation: Annotation = None,
        driving_annotation: Annotation = None,
        attributes_from: str | None = None,
        with_guide: bool = False,
        coarse_output: dict[str, torch.Tensor] | None = None,
    ):
        """Coarse frame g and attribute difference attr_s − attr_d (eq. 9) for B frames.

        ``source`` may be 1×3×H×W (one portrait for all driving frames) or B×3×H×W.
        ``attributes_from`` overrides the pipeline's choice (training always uses "driving").
        ``with_guide``: also return the ``guide_inputs`` images (:meth:`guide`; None when the
        model has none) as a third element.
        ``coarse_output``: a dict filled with the coarse generator's whole output (FOMM's
        ``deformed`` and the rest), for baselines that need no more calls.
        """
        if self.coarse is None or self.attributes is None:
            raise RuntimeError(
                "FADMPipeline.prepare needs a coarse generator and an attribute extractor"
            )
        batch = driving.shape[0]
        source = _expand(source, batch)
        source_annotation = _expand_annotation(source_annotation, batch)
        output = self.coarse(
            source,
            driving,
            source_annotation=source_annotation,
            driving_annotation=driving_annotation,
        )
        if coarse_output is not None:
            coarse_output.update(output)
        coarse = output["prediction"]
        attr_s = self.attributes(source, annotation=source_annotation)
        if (attributes_from or self.attributes_from) == "driving":
            attr_d = self.attributes(driving, annotation=driving_annotation)
        else:
            attr_d = self.attributes(coarse)
        if with_guide:
            guide = self.guide(source, output, driving)
            return coarse.clamp(0, 1), attr_s - attr_d, guide
        return coarse.clamp(0, 1), attr_s - attr_d

    def _noise(
        self, shape: tuple[int, ...], count: int, seed: int | None, generator, device, dtype
    ):
        """x_T and the per-step noise: one draw of 1×C×H×W each, shared by the B frames."""
        batch, rest = shape[0], shape[1:]
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(0 if seed is None else seed)
        draws = torch.randn((count + 1, 1, *rest), generator=generator, dtype=torch.float32)
        draws = draws.to(device=device, dtype=dtype)
        return [d.expand(batch, *rest) for d in draws]

    @torch.no_grad()
    def sample(
        self,
        coarse: torch.Tensor,
        attr_diff: torch.Tensor,
        sampler: SamplerConfig | Mapping[str, Any] | None = None,
        *,
        generator: torch.Generator | None = None,
        noise: list[torch.Tensor] | None = None,
        progress: bool = False,
        guide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Refine coarse frames with the DDIM loop.

        Args:
            coarse: g, B×3×H×W in [0, 1].
            attr_diff: attr_s − attr_d, B×D.
            sampler: the sampler (:class:`~fadm_lightning.sampler.SamplerConfig`: ``steps``,
                ``eta``, ``strength``, ``clip_sample``, ``start_noise``, ``seed``); a knob left
                at None takes the model's own (:attr:`sampler`). Its ``seed`` seeds the shared
                noise (ignored when ``generator`` or ``noise`` is given).
            generator: the generator of the shared noise draw.
            noise: explicit noise ``[x_T, z_1, …, z_n]`` (n = steps actually run; each 1×C×H×W
                or B×C×H×W), e.g. the official fixed per-video noise list.
            progress: show a progress bar over the steps.
            guide: the ``guide_inputs`` images (:meth:`guide`), required when the model has any.
        Returns:
            x̂_0, B×3×H×W clamped to [0, 1].
        """
        return self.run_sampler(
            coarse,
            attr_diff,
            sampler,
            generator=generator,
            noise=noise,
            progress=progress,
            guide=guide,
        )

    def resolve_sampler(
        self, sampler: SamplerConfig | Mapping[str, Any] | None = None
    ) -> SamplerConfig:
        """``sampler`` with every knob left at None taken from the model's own (:attr:`sampler`)."""
        return SamplerConfig.from_mapping(sampler).over(self.sampler)

    def run_sampler(
        self,
        coarse: torch.Tensor,
        attr_diff: torch.Tensor,
        sampler: SamplerConfig | Mapping[str, Any] | None = None,
        *,
        generator: torch.Generator | None = None,
        noise: list[torch.Tensor] | None = None,
        progress: bool = False,
        guide: torch.Tensor | None = None,
        last_x0: bool = False,
    ) -> torch.Tensor:
        """The DDIM loop of :meth:`sample` (which runs it without gradient).

        The knobs (:class:`~fadm_lightning.sampler.SamplerConfig`, module docstring):
        ``clip_sample`` clamps each step's x̂_0 prediction to the data range (the frame in
        [0, 1]) and uses the matching ε: the official sampler does not; clipping keeps an
        imperfect ε̂ from blowing up at the very noisy end of the schedule (ᾱ_99 ≈ 2e-5
        amplifies an ε error by 1/√ᾱ ≈ 220 in x̂_0). ``start_noise=False`` starts from the
        coarse frame without any noise, x = √ᾱ_t·x_0(g) at the first timestep (0 for the
        residual target): with ``eta=0`` the sampler is then a deterministic function of
        (g, attributes), as a distilled student samples (:mod:`fadm_lightning.systems.distill`).

        With ``last_x0`` it returns the x̂_0 prediction of the last denoiser call instead
        (in the chain's space: the frame, or the residual for ``target="residual"``; not
        clamped), every call but the last run without gradient and the last one (with the
        AGCN's t-independent features) under the caller's gradient mode: a few-step student
        trains through exactly the loop it samples with.
        """
        s = self.resolve_sampler(sampler)
        steps, strength = s.steps, s.strength
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        device, dtype = coarse.device, coarse.dtype
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        if strength < 1:
            timesteps = timesteps[steps - denoiser_calls(steps, strength) :]
        if noise is None:
            noise = self._noise(
                tuple(coarse.shape), len(timesteps), s.seed, generator, device, dtype
            )
        elif len(noise) < len(timesteps) + 1:
            raise ValueError(
                f"noise needs {len(timesteps) + 1} tensors (x_T and one per step), got {len(noise)}"
            )
        else:
            noise = [z.to(device=device, dtype=dtype).expand_as(coarse) for z in noise]
        # the chain's x_0 is the frame (target "image") or the residual x − g ("residual"):
        # the coarse frame is x_0 = g or r = 0, and x̂_0 is clipped so that the frame is in [0, 1]
        offset = coarse if self.target == "residual" else torch.zeros_like(coarse)
        if not s.start_noise:  # the noise-free point of the coarse frame at the first timestep
            x = _alpha_bar(scheduler, timesteps[0], coarse).sqrt() * self.clean_sample(
                coarse, coarse
            )
        elif strength < 1:
            start_t = timesteps[:1].repeat(coarse.shape[0])
            x = scheduler.add_noise(self.clean_sample(coarse, coarse), noise[0], start_t)
        else:
            x = noise[0]
        features = self.agcn.encode(coarse)  # t-independent part, once per frame
        grad = torch.is_grad_enabled()
        for i, t in enumerate(tqdm(timesteps, desc="denoising", disable=not progress, leave=False)):
            last = i == len(timesteps) - 1
            with torch.set_grad_enabled(grad and last):
                output = self.denoise(x, t, features, attr_diff, coarse, guide)
                if last and last_x0:
                    abar = _alpha_bar(scheduler, t, x)
                    return x0_and_epsilon(self.prediction_type, output, x, abar)[0]
                if s.clip_sample:  # DDIM with x̂_0 clamped to the data range (and its output)
                    output = self.clip_output(scheduler, output, x, t, offset)
                x = scheduler.step(output, t, x, eta=s.eta, variance_noise=noise[i + 1]).prev_sample
        return (x + offset).clamp(0, 1)

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        features,
        attr_diff: torch.Tensor,
        coarse: torch.Tensor,
        guide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One denoiser call: the AGCN condition at t (``features`` from ``agcn.encode(g)``) and
        the UNet's output (ε̂, x̂_0 or v̂, as the scheduler's ``prediction_type`` says)."""
        condition = self.agcn.condition(features, attr_diff, t)
        return self.unet(self.denoiser_input(x_t, condition, coarse, guide), t).sample

    def clip_output(
        self,
        scheduler: DDIMScheduler,
        output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        offset: torch.Tensor,
    ) -> torch.Tensor:
        """The output whose x̂_0 is clamped so that the frame (x̂_0 + offset) lies in [0, 1]."""
        prediction_type = self.prediction_type
        abar = _alpha_bar(scheduler, t, x_t)
        x0, _ = x0_and_epsilon(prediction_type, output, x_t, abar)
        x0 = torch.maximum(torch.minimum(x0, 1 - offset), -offset)
        return output_from_x0(prediction_type, x0, x_t, abar)

    @torch.no_grad()
    def __call__(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        source_annotation: Annotation = None,
        driving_annotation: Annotation = None,
        sampler: SamplerConfig | Mapping[str, Any] | None = None,
        **sample_kwargs,
    ) -> PipelineOutput:
        """Animate ``source`` with ``driving`` (B frames) and refine: coarse, then FADM
        (``sampler`` and ``sample_kwargs`` as for :meth:`sample`)."""
        coarse, attr_diff, guide = self.prepare(
            source, driving, source_annotation, driving_annotation, with_guide=True
        )
        refined = self.sample(coarse, attr_diff, sampler, guide=guide, **sample_kwargs)
        return PipelineOutput(coarse=coarse, refined=refined, attr_diff=attr_diff)
