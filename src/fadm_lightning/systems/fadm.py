"""FADMLitModule: the system that wires the frozen coarse generator and attribute extractor, the
AGCN and the UNet2DModel denoiser, and trains them with the DDIM noise schedule (eq. 11).

Frozen parts stay in eval mode, without gradients, outside the optimizer, and are not written
into training checkpoints (they are rebuilt from their own files). Sampling goes through
:class:`~fadm_lightning.pipeline.FADMPipeline`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from diffusers import DDIMScheduler
from diffusers.training_utils import EMAModel
from torch import nn
from torchmetrics import MeanMetric

from fadm_lightning.checkpoints import CONFIG_KEY
from fadm_lightning.data.batch import ClipBatch, PairBatch, clip_frames
from fadm_lightning.metrics.registry import check_keys, default_config
from fadm_lightning.metrics.suite import MetricSuite
from fadm_lightning.models.agcn import AGCN
from fadm_lightning.pipeline import FADMPipeline, min_snr_weight, training_target
from fadm_lightning.sampler import SamplerConfig, from_legacy
from fadm_lightning.systems.epochs import set_dataset_epoch

FROZEN_PREFIXES = ("coarse.", "attributes.")
#: the validation sampler of a model config that does not name one (conf/model/fadm.yaml's)
VALIDATION_SAMPLER = SamplerConfig(
    steps=25, eta=0.0, strength=1.0, clip_sample=False, start_noise=True
)
#: the metrics config group's lists of the two stages (conf/metrics: metrics.validation, .test)
METRIC_STAGES = {"val": "validation", "test": "test"}
#: what each stage scores: val (coarse, refined) on its pairs; test also copy-the-source-frame
STAGE_KINDS = {"val": ("coarse", "refined"), "test": ("copy", "coarse", "refined")}


def random_blur(images: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Each of B×C×H×W images blurred by a Gaussian of its own σ ~ U(0, max_sigma) pixels."""
    sigmas = torch.rand(images.shape[0]) * max_sigma
    size = 2 * math.ceil(3 * max_sigma) + 1
    out = []
    for image, sigma in zip(images, sigmas.tolist(), strict=True):
        if sigma < 0.1:  # narrower than a tenth of a pixel: unchanged
            out.append(image)
        else:
            out.append(TF.gaussian_blur(image, [size, size], [sigma, sigma]))
    return torch.stack(out)


class FADMLitModule(L.LightningModule):
    """Args:
    coarse: frozen coarse generator (``CoarseGenerator``).
    attributes: frozen attribute extractor (``AttributeExtractor``, has ``dim``).
    agcn: partial AGCN constructor; completed with ``attr_dim=attributes.dim``.
    unet: partial ``UNet2DModel`` constructor; completed with ``in_channels = 3 + cond_channels``
        (+ 3 with ``coarse_input``).
    scheduler: ``DDIMScheduler`` (training noise schedule and sampling); its ``prediction_type``
        ("epsilon" as eq. 11, "sample" or "v_prediction") is what the UNet learns to output.
    optimizer: partial optimizer constructor (``torch.optim.Adam`` …), completed with the
        trainable parameters.
    lr_scheduler: optional partial LR scheduler constructor.
    diffusion_loss: "mse" (paper, eq. 11: L2 on ε, mean) or "l1_sum" (official code).
    color_loss_weight: λ of L_color.
    target: "image" (paper: the chain diffuses the driving frame d) or "residual" (it diffuses
        d − g; sampling returns g + r̂, see :class:`FADMPipeline`). A residual refiner starts
        with the UNet's output layer at zero, so with x_0-prediction it starts as the identity
        (r̂ = 0: the coarse frame is returned unchanged).
    coarse_input: the UNet also sees the coarse frame g at full resolution.
    guide_inputs: more full-resolution images for the UNet (``["deformed"]``: the source warped
        by the coarse generator's motion; :data:`~fadm_lightning.pipeline.GUIDE_INPUTS`). Not in
        the paper: a switch measured in docs/real_faces.md.
    snr_gamma: γ of min-SNR-γ loss weighting over timesteps (None: unweighted, the paper).
    max_train_timestep: train on t ~ U{0, …, max_train_timestep − 1} only (None: the whole
        schedule, as in the paper). A model that is only ever sampled from the coarse frame
        noised to t < max_train_timestep (``sampler.strength`` < 1) spends its training there.
    min_train_timestep: train on t ≥ this only (0: the whole schedule, as in the paper). A
        refiner that is only ever sampled in one call from pure noise (t = T − 1, the
        conditional mean of its x̂_0) spends its training on the high-noise steps.
    coarse_blur: in training only, blur each coarse frame g with a Gaussian of σ ~ U(0,
        coarse_blur) pixels before it is used (0: off, the paper). A coarse generator trained on
        the refiner's own training persons is sharper on them than on new persons (measured in
        docs/real_faces.md); the blur shows the refiner the coarse frames it meets at test time.
    ema_decay: decay of an EMA of the trainable weights (None: no EMA). EMA weights are used
        for validation/test sampling and saved in checkpoints.
    attributes_from: passed to the pipeline ("driving": paper; "coarse": official demo).
    sampler: the sampler of validation and test, the model's own (``steps``, ``eta``,
        ``strength``, ``clip_sample``, ``start_noise``: :class:`~fadm_lightning.sampler.SamplerConfig`;
        a knob left out takes :data:`VALIDATION_SAMPLER`'s); inference takes it as its default.
    test_chunk_size: frames refined at once in ``test_step``.
    sample_seed: seed of the shared sampling noise.
    """

    def __init__(
        self,
        coarse: nn.Module,
        attributes: nn.Module,
        agcn: Callable[..., AGCN],
        unet: Callable[..., nn.Module],
        scheduler: DDIMScheduler,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        diffusion_loss: str = "mse",
        color_loss_weight: float = 1.0,
        target: str = "image",
        coarse_input: bool = False,
        guide_inputs: list[str] | tuple[str, ...] = (),
        snr_gamma: float | None = None,
        max_train_timestep: int | None = None,
        min_train_timestep: int = 0,
        coarse_blur: float = 0.0,
        ema_decay: float | None = None,
        attributes_from: str = "driving",
        sampler: Mapping[str, Any] | None = None,
        test_chunk_size: int = 16,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        if diffusion_loss not in ("mse", "l1_sum"):
            raise ValueError(f"diffusion_loss must be 'mse' or 'l1_sum', got {diffusion_loss!r}")
        if snr_gamma is not None and (snr_gamma <= 0 or diffusion_loss != "mse"):
            raise ValueError(f"snr_gamma needs diffusion_loss='mse' and γ > 0, got {snr_gamma}")
        guide_inputs = [str(name) for name in guide_inputs]  # plain types in checkpoints
        num_train_timesteps = scheduler.config.num_train_timesteps
        if max_train_timestep is not None and not 0 < max_train_timestep <= num_train_timesteps:
            raise ValueError(
                f"max_train_timestep must be in [1, {num_train_timesteps}], got {max_train_timestep}"
            )
        if coarse_blur < 0:
            raise ValueError(f"coarse_blur must be ≥ 0 (pixels), got {coarse_blur}")
        t_max = max_train_timestep or num_train_timesteps
        if not 0 <= min_train_timestep < t_max:
            raise ValueError(
                f"min_train_timestep must be in [0, {t_max - 1}] (below max_train_timestep or the "
                f"{num_train_timesteps} training timesteps), got {min_train_timestep}"
            )
        # complete and plain before it is stored (hparams, checkpoints): the model's own sampler
        sampler = SamplerConfig.from_mapping(from_legacy(sampler or {}))
        sampler = sampler.over(VALIDATION_SAMPLER).as_dict()
        self.save_hyperparameters(
            ignore=[
                "coarse",
                "attributes",
                "agcn",
                "unet",
                "scheduler",
                "optimizer",
                "lr_scheduler",
            ],
            logger=False,
        )
        # frozen parts
        self.coarse = coarse.eval().requires_grad_(False)
        self.attributes = attributes.eval().requires_grad_(False)
        # trainable parts
        self.agcn = agcn(attr_dim=attributes.dim)
        guide_channels = 3 * len(guide_inputs)
        self.unet = unet(
            in_channels=3 + self.agcn.cond_channels + (3 if coarse_input else 0) + guide_channels
        )
        if target == "residual":
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)
        self.scheduler = scheduler
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.ema = (
            EMAModel(list(self.trainable_parameters()), decay=ema_decay) if ema_decay else None
        )
        self.pipeline = FADMPipeline(
            self.agcn,
            self.unet,
            scheduler,
            coarse=self.coarse,
            attributes=self.attributes,
            attributes_from=attributes_from,
            target=target,
            coarse_input=coarse_input,
            guide_inputs=tuple(guide_inputs),
            sampler=self.sampler,
        )
        #: data/model/coarse/attributes configs stored in checkpoints (set by the train command)
        self.run_config: dict | None = None
        self.train_loss = MeanMetric()
        self.use_metrics(None)  # conf/metrics/default.yaml; the train command passes cfg.metrics

    def use_metrics(self, config: Mapping | None) -> None:
        """The validation and test metrics: the keys ``config.validation`` and ``config.test``
        of a ``metrics`` config group (its registry; None: ``conf/metrics/default.yaml``), each
        logged as ``<stage>/<key>_<kind>`` (val: coarse, refined; test: copy, coarse, refined).
        Their networks are built at a stage's first step (:class:`MetricSuite`): plain
        attributes, not submodules, so never trained, in the state_dict or in a checkpoint."""
        self.metric_config = default_config() if config is None else config
        self.metric_keys = {
            stage: check_keys(self.metric_config, self.metric_config[option])
            for stage, option in METRIC_STAGES.items()
        }
        self.eval_metrics = nn.ModuleDict(
            {
                f"{stage}_{key}_{kind}": MeanMetric()
                for stage, keys in self.metric_keys.items()
                for key in keys
                for kind in STAGE_KINDS[stage]
            }
        )
        self._metric_names = {  # ModuleDict key → logged name (a metric key may hold "_")
            f"{stage}_{key}_{kind}": f"{stage}/{key}_{kind}"
            for stage, keys in self.metric_keys.items()
            for key in keys
            for kind in STAGE_KINDS[stage]
        }
        self._suites: dict[str, MetricSuite] = {}
        self._metric_said: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ parameters and modes
    def trainable_parameters(self):
        yield from self.agcn.parameters()
        yield from self.unet.parameters()

    def train(self, mode: bool = True):
        super().train(mode)
        self.coarse.eval()
        self.attributes.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        return {
            "params/agcn": count(self.agcn),
            "params/unet": count(self.unet),
            "params/trainable": count(self.agcn) + count(self.unet),
            "params/frozen": count(self.coarse) + count(self.attributes),
        }

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)
        if self.logger is not None:
            self.logger.log_hyperparams(self.parameter_counts())

    def on_train_epoch_start(self) -> None:
        set_dataset_epoch(self.trainer)

    # ------------------------------------------------------------------ training
    def prepare_batch(self, batch: PairBatch, attributes_from: str | None = "driving"):
        """The frozen parts on a batch: coarse frame g, attr_s − attr_d (attr_d from the driving
        frame in training) and the guide images (None without ``guide_inputs``)."""
        return self.pipeline.prepare(
            batch["source"],
            batch["driving"],
            batch.get("source_annotation"),
            batch.get("driving_annotation"),
            attributes_from=attributes_from,
            with_guide=True,
        )

    def model_step(self, batch: PairBatch) -> dict[str, torch.Tensor]:
        """One denoising step on a batch of (source, driving) pairs (eq. 11)."""
        driving = batch["driving"]
        # 1. frozen parts: coarse frame g and attr_s − attr_d
        coarse, attr_diff, guide = self.prepare_batch(batch)
        if self.training and self.hparams.coarse_blur > 0:
            coarse = random_blur(coarse, self.hparams.coarse_blur)
        # 2. forward process: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε with x_0 = d in [0, 1] (or d − g)
        x0 = self.pipeline.clean_sample(driving, coarse)
        noise = torch.randn_like(x0)
        t_max = self.hparams.max_train_timestep or self.scheduler.config.num_train_timesteps
        t = torch.randint(
            self.hparams.min_train_timestep, t_max, (x0.shape[0],), device=self.device
        )
        x_t = self.scheduler.add_noise(x0, noise, t)
        # 3. AGCN condition (eq. 7–10) and the denoiser's output (ε̂, x̂_0 or v̂)
        condition, color_loss = self.agcn(coarse, attr_diff, t, driving=driving)
        output = self.unet(self.pipeline.denoiser_input(x_t, condition, coarse, guide), t).sample
        prediction_type = self.pipeline.prediction_type
        abar = self.scheduler.alphas_cumprod.to(self.device)[t].view(-1, 1, 1, 1)
        target = training_target(prediction_type, x0, noise, abar)
        # 4. eq. 11 (+ λ·L_color)
        if self.hparams.diffusion_loss == "l1_sum":
            loss_eps = F.l1_loss(output, target, reduction="sum")
        elif self.hparams.snr_gamma is None:
            loss_eps = F.mse_loss(output, target)
        else:
            weight = min_snr_weight(prediction_type, abar, self.hparams.snr_gamma)
            loss_eps = (weight * (output - target).square()).mean()
        out = {"loss_eps": loss_eps, "loss": loss_eps}
        if color_loss is not None:
            out["loss_color"] = color_loss
            out["loss"] = loss_eps + self.hparams.color_loss_weight * color_loss
        return out

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        losses = self.model_step(batch)
        self.train_loss(losses["loss"])
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        for name, value in losses.items():  # the terms: loss_eps, loss_color, …
            if name != "loss":
                self.log(f"train/{name}", value, on_step=True, on_epoch=False)
        return losses["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.step(self.trainable_parameters())

    # ------------------------------------------------------------------ sampling with EMA weights
    def _swap_in_ema(self) -> None:
        if self.ema is not None:
            self.ema.store(self.trainable_parameters())
            self.ema.copy_to(self.trainable_parameters())

    def _swap_out_ema(self) -> None:
        if self.ema is not None:
            self.ema.restore(self.trainable_parameters())

    def on_validation_epoch_start(self) -> None:
        self._swap_in_ema()

    def on_validation_epoch_end(self) -> None:
        self._swap_out_ema()
        self._log_eval_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._swap_in_ema()

    def on_test_epoch_end(self) -> None:
        self._swap_out_ema()
        self._log_eval_metrics("test")

    def refine(
        self, coarse: torch.Tensor, attr_diff: torch.Tensor, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.pipeline.sample(coarse, attr_diff, self.sampler, guide=guide)

    @property
    def sampler(self) -> SamplerConfig:
        """The model's own sampler (``model.sampler``), seeded with ``sample_seed``."""
        return SamplerConfig(**self.hparams.sampler, seed=self.hparams.sample_seed)

    def _stage_metrics(self, stage: str, frame_size: tuple[int, ...]) -> list:
        """The metrics of ``stage`` that can run on frames of ``frame_size``; those that cannot
        are skipped, and the log says why, once. The stage's networks are built at its first call
        (the log names their weights)."""
        from lightning.pytorch.utilities import rank_zero_info

        if stage not in self._suites:
            suite = MetricSuite.from_config(
                self.metric_config, self.metric_keys[stage], device=self.device
            )
            self._suites[stage] = suite
            for key in suite.names:
                if suite[key].available and suite[key].weights:
                    rank_zero_info(f"{stage} metric {suite.label(key)}: {suite[key].weights}")
        suite, usable = self._suites[stage], []
        for key in suite.names:
            metric = suite[key]
            reason = metric.reason or metric.skip_reason(frame_size)
            if reason is None and metric.scope == "set":
                reason = "a set-level metric: `python -m fadm_lightning.evaluate` computes it"
            if reason is None and metric.scope == "clip" and stage == "val":
                reason = "validation scores pairs of frames, not clips"
            if reason is None:
                usable.append(metric)
            elif (stage, key, reason) not in self._metric_said:
                rank_zero_info(f"{stage} metric {metric.label} skipped: {reason}")
                self._metric_said.add((stage, key, reason))
        return usable

    @property
    def _perceptual(self):
        """The test stage's ST-LPIPS network (None until the stage's first step)."""
        suite = self._suites.get("test")
        return suite.stlpips if suite is not None else None

    def _update(self, name: str, values) -> None:
        self.eval_metrics[name].update(torch.as_tensor(values).to(self.device))

    def _update_eval_metrics(
        self, stage: str, pred: dict[str, torch.Tensor], target: torch.Tensor
    ) -> None:
        """The stage's per-frame metrics of a batch (``pred``: B×3×H×W per kind)."""
        metrics = self._stage_metrics(stage, tuple(target.shape[-2:]))
        for kind, frames in pred.items():
            for metric in metrics:
                if metric.scope == "frame":
                    self._update(f"{stage}_{metric.key}_{kind}", metric.frames(frames, target))

    def _log_eval_metrics(self, stage: str) -> None:
        for key, metric in self.eval_metrics.items():
            if key.startswith(f"{stage}_") and metric.update_called:
                self.log(self._metric_names[key], metric.compute(), sync_dist=True)
                metric.reset()

    def _update_clip_metrics(self, pred: dict[str, torch.Tensor], video: torch.Tensor) -> None:
        """The test metrics of a whole clip (``pred``: T×3×H×W per kind, ``video``: the truth):
        the per-frame ones in chunks of ``test_chunk_size`` frames (L1, PSNR, SSIM, ST-LPIPS),
        the per-clip ones on the whole clip (tdiff, flicker; :mod:`~fadm_lightning.metrics.temporal`)."""
        metrics = self._stage_metrics("test", tuple(video.shape[-2:]))
        chunk = self.hparams.test_chunk_size
        for kind, frames in pred.items():
            for metric in metrics:
                name = f"test_{metric.key}_{kind}"
                if metric.scope == "frame":
                    for start in range(0, video.shape[0], chunk):
                        part = slice(start, start + chunk)
                        self._update(name, metric.frames(frames[part], video[part]))
                elif metric.scope == "clip":
                    value = metric.clip(frames, video)
                    if value is not None:
                        self._update(name, value)

    # ------------------------------------------------------------------ validation and test
    def validation_step(self, batch: PairBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        losses = self.model_step(batch)
        self.log("val/loss", losses["loss"], sync_dist=True, batch_size=batch["driving"].shape[0])
        coarse, attr_diff, guide = self.prepare_batch(batch, attributes_from=None)
        refined = self.refine(coarse, attr_diff, guide)
        self._update_eval_metrics("val", {"coarse": coarse, "refined": refined}, batch["driving"])
        # pictures for the sample-grid callback
        return {
            "source": batch["source"],
            "driving": batch["driving"],
            "coarse": coarse,
            "refined": refined,
        }

    def test_step(self, batch: ClipBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Same-identity reconstruction of one clip: source = first frame, driving = every frame."""
        video = batch["video"][0]  # T×3×H×W
        chunk = self.hparams.test_chunk_size
        source, source_ann = clip_frames(batch, slice(0, 1))
        outputs = {"copy": [], "coarse": [], "refined": []}
        for start in range(0, video.shape[0], chunk):
            frames = slice(start, start + chunk)
            driving, driving_ann = clip_frames(batch, frames)
            coarse, attr_diff, guide = self.pipeline.prepare(
                source, driving, source_ann, driving_ann, with_guide=True
            )
            refined = self.refine(coarse, attr_diff, guide)
            copy = source.expand_as(driving)  # the trivial baseline: copy the source frame
            outputs["copy"].append(copy)
            outputs["coarse"].append(coarse)
            outputs["refined"].append(refined)
        clip = {k: torch.cat(v) for k, v in outputs.items()}
        self._update_clip_metrics(clip, video)  # every test metric (metrics.test)
        clip.pop("copy")  # the test videos show truth | coarse | refined
        return {"video": video, **clip}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=list(self.trainable_parameters()))
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # frozen networks are reloaded from their own files, not stored in every checkpoint
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(FROZEN_PREFIXES)
        }
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        if self.run_config is not None:  # makes the checkpoint self-contained for inference
            checkpoint[CONFIG_KEY] = self.run_config
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {  # plain types only, so weights_only loading works
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        own = self.state_dict()
        for key, value in own.items():  # frozen weights come from the module as built
            if key.startswith(FROZEN_PREFIXES):
                checkpoint["state_dict"][key] = value
        if self.ema is not None:
            if "ema" not in checkpoint:
                raise KeyError(
                    "checkpoint has no 'ema' entry but this model was configured with ema_decay"
                )
            self.ema.load_state_dict(checkpoint["ema"])
        rng = checkpoint.get("rng_states")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
