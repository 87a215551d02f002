"""FOMMLitModule: train FADM's coarse generator, FOMM (keypoint detector + generator), from scratch.

The objective is FOMM's (REFERENCE_SPEC §1.1, losses in
:mod:`fadm_lightning.models.coarse.fomm.training`)::

    L = Σ_s Σ_i w_i·|φ_i(x̂_s) − φ_i(x_s)|                 perceptual (or an offline L1), scales s
      + λ_value·|p − T(p')| + λ_jac·|I − J⁻¹·J_T(p')·J'|     equivariance under a random warp T
      + λ_gan·Σ_s (1 − D_s(x̂))² + Σ_s Σ_j λ_fm,j·|D_s^j(x) − D_s^j(x̂)|   only with a discriminator

with ``x`` the driving frame, ``x̂ = G(source, kp(source), kp(x))`` its reconstruction from the
source frame of the same video, ``(p, J)`` the keypoints of ``x`` and ``(p', J')`` those of
``T``-warped ``x``. The optional discriminator is trained with the LSGAN loss.

Optimisation is manual (one code path with or without the discriminator): one Adam over the
generator and the keypoint detector (two named parameter groups with FOMM's identical settings,
which equals FOMM's two separate Adams), one for the discriminator, MultiStepLR stepped per
epoch. ``trainer.global_step`` therefore counts 1 step per batch, or 2 with the discriminator.

The result is an official-format FOMM checkpoint (``save_fomm_checkpoint``: ``kp_detector``,
``generator``, ``discriminator`` if used, ``optimizer_<network>`` states, ``epoch``), written
at the end of training and whenever Lightning saves a checkpoint, to ``export_path``. It loads
into :class:`~fadm_lightning.models.coarse.fomm.FOMMCoarseGenerator` (``coarse=fomm_small``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from fadm_lightning.data.batch import ClipBatch, PairBatch
from fadm_lightning.metrics.reconstruction import EVAL_METRICS
from fadm_lightning.models.coarse.fomm import save_fomm_checkpoint
from fadm_lightning.models.coarse.fomm.training import (
    ImagePyramid,
    RandomTPSTransform,
    equivariance_losses,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from fadm_lightning.systems.epochs import set_dataset_epoch

# the frozen perceptual network is rebuilt from its own file, not stored in every checkpoint
FROZEN_PREFIXES = ("perceptual.",)
EXPORT_NAME = "fomm_checkpoint.pth.tar"
Keypoints = dict[str, torch.Tensor]


def _detach_kp(kp: Keypoints) -> Keypoints:
    return {key: value.detach() for key, value in kp.items()}


def split_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    """One optimizer state dict per named parameter group, as separate optimizers would have.

    ``Adam([{"params": G, "name": "generator"}, {"params": KP, "name": "kp_detector"}])`` gives
    ``{"generator": …, "kp_detector": …}``, each loadable into ``Adam(network.parameters())``
    (FOMM's ``optimizer_generator`` / ``optimizer_kp_detector`` checkpoint entries).
    """
    state = optimizer.state_dict()
    out = {}
    for index, group in enumerate(state["param_groups"]):
        old_ids = group["params"]
        new_group = {**group, "params": list(range(len(old_ids)))}
        new_state = {
            new: state["state"][old] for new, old in enumerate(old_ids) if old in state["state"]
        }
        out[group.get("name", f"group_{index}")] = {"state": new_state, "param_groups": [new_group]}
    return out


class _StateDictView:
    """Duck-typed optimizer for ``save_fomm_checkpoint``: only ``state_dict()`` is used."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


class FOMMLitModule(L.LightningModule):
    """Train a FOMM keypoint detector and occlusion-aware generator with FOMM's objective.

    Args:
        kp_detector (`KPDetector`): keypoint detector (built by Hydra from ``_target_``).
        generator (`OcclusionAwareGenerator`): generator; ``num_kp`` must match.
        perceptual (`nn.Module`): reconstruction loss ``perceptual(pred_pyramid, real_pyramid)``
            → scalar: ``VGGPerceptualLoss`` (FOMM) or, offline, ``LaplacianL1Loss`` /
            ``PyramidL1Loss``.
        optimizer (`Callable`): partial optimizer (``torch.optim.Adam`` lr 2e-4, betas
            (0.5, 0.999)), completed with ``params=`` named parameter groups.
        lr_scheduler (`Callable`, *optional*): partial per-epoch scheduler (``MultiStepLR``
            milestones [60, 90]), completed with ``optimizer=``; one per optimizer.
        discriminator (`MultiScaleDiscriminator`, *optional*): enables the adversarial terms;
            then ``generator_gan_weight`` must be > 0 (FOMM trains it only then).
        scales (`Sequence[float]`, defaults to (1, 0.5, 0.25, 0.125)): pyramid scales of the
            reconstruction loss; must include the discriminator's scales.
        sigma_affine, sigma_tps, points_tps: the random equivariance warp (0.05, 0.005, 5).
        equivariance_value_weight (`float`, defaults to 10): λ_value (0 disables).
        equivariance_jacobian_weight (`float`, defaults to 10): λ_jac (0 disables).
        generator_gan_weight (`float`, defaults to 0): λ_gan (vox-cpk: 0 = no discriminator).
        discriminator_gan_weight (`float`, defaults to 1): weight of the discriminator's loss.
        feature_matching_weights (`Sequence[float]`, defaults to [10]*4): λ_fm per
            discriminator block.
        export_path (`str`, *optional*): where the official-format FOMM checkpoint goes
            (default ``<trainer.default_root_dir>/fomm_checkpoint.pth.tar``).
        test_chunk_size (`int`, defaults to 16): driving frames per generator call in test.
        coarse, attributes: passed by ``train.py`` to every model; ignored (FOMM is trained
            from raw frames only).
    """

    def __init__(
        self,
        kp_detector: nn.Module,
        generator: nn.Module,
        perceptual: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        discriminator: nn.Module | None = None,
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        sigma_affine: float = 0.05,
        sigma_tps: float = 0.005,
        points_tps: int = 5,
        equivariance_value_weight: float = 10.0,
        equivariance_jacobian_weight: float = 10.0,
        generator_gan_weight: float = 0.0,
        discriminator_gan_weight: float = 1.0,
        feature_matching_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0),
        export_path: str | None = None,
        test_chunk_size: int = 16,
        coarse: nn.Module | None = None,
        attributes: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # 1. validate the adversarial setting early (FOMM: D is trained iff generator_gan ≠ 0)
        if discriminator is not None and generator_gan_weight <= 0:
            raise ValueError(
                "FOMMLitModule: a discriminator was given but generator_gan_weight="
                f"{generator_gan_weight}; set it > 0 (e.g. 1, as vox-adv) or drop the discriminator"
            )
        if discriminator is None and generator_gan_weight > 0:
            raise ValueError(
                f"FOMMLitModule: generator_gan_weight={generator_gan_weight} needs a discriminator "
                "(model/discriminator=multiscale)"
            )
        if not isinstance(perceptual, nn.Module):
            raise TypeError(
                f"FOMMLitModule: perceptual must be a loss module, got {perceptual!r}; choose it "
                "with the config group `model/perceptual=vgg19`, `model/perceptual=laplacian_l1` or "
                "`model/perceptual=pyramid_l1` "
                "(a slash, not a dot)"
            )
        scales = tuple(float(s) for s in scales)
        missing_scales = [s for s in getattr(discriminator, "scales", ()) if float(s) not in scales]
        if missing_scales:
            raise ValueError(
                f"FOMMLitModule: discriminator scales {missing_scales} are not in the pyramid "
                f"scales {list(scales)}"
            )
        discs = getattr(discriminator, "discs", None)
        num_blocks = len(next(iter(discs.values())).down_blocks) if discs else None
        if num_blocks is not None and len(feature_matching_weights) != num_blocks:
            raise ValueError(
                f"FOMMLitModule: feature_matching_weights={list(feature_matching_weights)} needs one "
                f"weight per discriminator block ({num_blocks})"
            )
        self.automatic_optimization = False
        self.save_hyperparameters(
            ignore=[
                "kp_detector", "generator", "perceptual", "discriminator", "optimizer",
                "lr_scheduler", "coarse", "attributes",
            ],
            logger=False,
        )  # fmt: skip

        # 2. networks and losses
        self.kp_detector = kp_detector
        self.generator = generator
        self.discriminator = discriminator
        self.perceptual = perceptual
        self.pyramid = ImagePyramid(scales, num_channels=3)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.export_path = export_path
        self.last_export: Path | None = None

        # 3. reconstruction metrics of held-out frames (frame-weighted means)
        self.eval_metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in ("val", "test") for name in EVAL_METRICS}
        )

    # ------------------------------------------------------------------ forward
    def detect(self, image: torch.Tensor) -> Keypoints:
        """Keypoints of ``image`` (B×3×H×W): ``value`` B×K×2, ``jacobian`` B×K×2×2."""
        return self.kp_detector(image)

    def reconstruct(
        self, source: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints
    ) -> dict[str, torch.Tensor]:
        """Generator outputs (``prediction`` B×3×H×W in (0, 1), ``deformed``, ``mask``, …)."""
        return self.generator(source, kp_driving=kp_driving, kp_source=kp_source)

    # ------------------------------------------------------------------ losses
    def generator_losses(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, Any]:
        """FOMM's generator + keypoint-detector objective on a batch of same-video pairs.

        Args:
            source: B×3×H×W in [0, 1].
            driving: B×3×H×W in [0, 1], the frame to reconstruct.

        Returns:
            ``loss`` (the weighted sum), each weighted term (``perceptual``,
            ``equivariance_value``, ``equivariance_jacobian``, ``generator_gan``,
            ``feature_matching``), ``prediction`` and the driving keypoints ``kp_driving``.
        """
        hp = self.hparams
        # 1. keypoints (separate calls, as FOMM: BatchNorm statistics per frame set)
        kp_source = self.detect(source)
        kp_driving = self.detect(driving)
        generated = self.reconstruct(source, kp_source, kp_driving)
        prediction = generated["prediction"]  # B×3×H×W

        # 2. multi-scale reconstruction loss
        pyramid_real = self.pyramid(driving)
        pyramid_fake = self.pyramid(prediction)
        terms = {"perceptual": self.perceptual(pyramid_fake, pyramid_real)}

        # 3. adversarial terms (LSGAN + feature matching)
        if self.discriminator is not None:
            kp = _detach_kp(kp_driving)
            scales = self.discriminator.scales
            fake = self.discriminator(pyramid_fake, kp=kp)
            real = self.discriminator(pyramid_real, kp=kp)
            terms["generator_gan"] = hp.generator_gan_weight * lsgan_generator_loss(fake, scales)
            terms["feature_matching"] = feature_matching_loss(
                real, fake, scales, hp.feature_matching_weights
            )

        # 4. equivariance: keypoints of T-warped driving frames must map back through T
        if hp.equivariance_value_weight or hp.equivariance_jacobian_weight:
            transform = RandomTPSTransform(
                driving.shape[0], hp.sigma_affine, hp.sigma_tps, hp.points_tps,
                device=driving.device, dtype=driving.dtype,
            )  # fmt: skip
            kp_transformed = self.detect(transform.transform_frame(driving))
            equivariance = equivariance_losses(kp_driving, kp_transformed, transform)
            if hp.equivariance_value_weight:
                terms["equivariance_value"] = hp.equivariance_value_weight * equivariance["value"]
            if hp.equivariance_jacobian_weight and "jacobian" in equivariance:
                terms["equivariance_jacobian"] = (
                    hp.equivariance_jacobian_weight * equivariance["jacobian"]
                )

        loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, **terms, "prediction": prediction, "kp_driving": kp_driving}

    def discriminator_loss(
        self, driving: torch.Tensor, prediction: torch.Tensor, kp_driving: Keypoints
    ) -> torch.Tensor:
        """Weighted LSGAN discriminator loss on real ``driving`` vs generated ``prediction``."""
        if self.discriminator is None:
            raise RuntimeError("FOMMLitModule.discriminator_loss: no discriminator configured")
        kp = _detach_kp(kp_driving)
        real = self.discriminator(self.pyramid(driving), kp=kp)
        fake = self.discriminator(self.pyramid(prediction.detach()), kp=kp)
        loss = lsgan_discriminator_loss(real, fake, self.discriminator.scales)
        return self.hparams.discriminator_gan_weight * loss

    # ------------------------------------------------------------------ training
    def _optimizer_list(self) -> list:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def on_train_epoch_start(self) -> None:
        set_dataset_epoch(self.trainer)

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        source, driving = batch["source"], batch["driving"]  # B×3×H×W each
        batch_size = driving.shape[0]
        optimizers = self._optimizer_list()

        # 1. keypoint detector + generator
        optimizer_g = optimizers[0]
        self.toggle_optimizer(optimizer_g)
        out = self.generator_losses(source, driving)
        self.manual_backward(out["loss"])
        optimizer_g.step()
        optimizer_g.zero_grad(set_to_none=True)
        self.untoggle_optimizer(optimizer_g)

        # 2. discriminator
        if self.discriminator is not None:
            optimizer_d = optimizers[1]
            self.toggle_optimizer(optimizer_d)
            loss_d = self.discriminator_loss(driving, out["prediction"], out["kp_driving"])
            self.manual_backward(loss_d)
            optimizer_d.step()
            optimizer_d.zero_grad(set_to_none=True)
            self.untoggle_optimizer(optimizer_d)
            self.log("train/discriminator_gan", loss_d.detach(), batch_size=batch_size)

        self.log("train/loss", out["loss"].detach(), on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch_size)  # fmt: skip
        for name in ("perceptual", "equivariance_value", "equivariance_jacobian",
                     "generator_gan", "feature_matching"):  # fmt: skip
            if name in out:
                self.log(f"train/{name}", out[name].detach(), batch_size=batch_size)
        return out["loss"].detach()

    def on_train_epoch_end(self) -> None:
        # manual optimisation: Lightning does not step the schedulers (FOMM: per epoch)
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    # ------------------------------------------------------------------ validation and test
    def _update_metrics(
        self,
        stage: str,
        source: torch.Tensor,
        driving: torch.Tensor,
        generated: dict[str, torch.Tensor],
    ) -> None:
        """Per-frame mean |·| of the reconstruction, the copy-the-source baseline and the
        warped source (:data:`EVAL_METRICS`)."""

        def l1(image: torch.Tensor) -> torch.Tensor:
            return (image - driving).abs().mean(dim=(1, 2, 3))  # B (a 1-frame source broadcasts)

        self.eval_metrics[f"{stage}_l1"].update(l1(generated["prediction"]))
        self.eval_metrics[f"{stage}_l1_copy_source"].update(l1(source))
        self.eval_metrics[f"{stage}_l1_warped_source"].update(l1(generated["deformed"]))

    def _log_metrics(self, stage: str) -> None:
        for name in EVAL_METRICS:
            metric = self.eval_metrics[f"{stage}_{name}"]
            if metric.update_called:
                self.log(f"{stage}/{name}", metric.compute(), sync_dist=True)
                metric.reset()

    def validation_step(self, batch: PairBatch, batch_idx: int) -> None:
        """Held-out pairs (source = frame 0, driving = another frame of the same clip)."""
        source, driving = batch["source"], batch["driving"]  # B×3×H×W
        generated = self.reconstruct(source, self.detect(source), self.detect(driving))
        self._update_metrics("val", source, driving, generated)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: ClipBatch, batch_idx: int) -> None:
        """One held-out clip (REFERENCE_SPEC §5.4): source = first frame, driving = every frame."""
        video = batch["video"][0]  # T×3×H×W
        source = video[:1]  # 1×3×H×W
        kp_source = self.detect(source)
        for start in range(0, video.shape[0], self.hparams.test_chunk_size):
            driving = video[start : start + self.hparams.test_chunk_size]  # t×3×H×W
            count = driving.shape[0]
            kp_source_batch = {k: v.expand(count, *v.shape[1:]) for k, v in kp_source.items()}
            generated = self.reconstruct(
                source.expand(count, -1, -1, -1), kp_source_batch, self.detect(driving)
            )
            self._update_metrics("test", source, driving, generated)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        groups = [
            {"params": list(self.generator.parameters()), "name": "generator"},
            {"params": list(self.kp_detector.parameters()), "name": "kp_detector"},
        ]
        optimizers = [self.optimizer_factory(params=groups)]
        if self.discriminator is not None:
            discriminator_group = {
                "params": list(self.discriminator.parameters()),
                "name": "discriminator",
            }
            optimizers.append(self.optimizer_factory(params=[discriminator_group]))
        if self.lr_scheduler_factory is None:
            return optimizers
        return optimizers, [self.lr_scheduler_factory(optimizer=o) for o in optimizers]

    # ------------------------------------------------------------------ the FOMM checkpoint
    def default_export_path(self) -> Path:
        if self.export_path is not None:
            return Path(self.export_path)
        return Path(self.trainer.default_root_dir) / EXPORT_NAME

    def export_fomm_checkpoint(
        self, path: str | Path | None = None, epoch: int | None = None
    ) -> Path:
        """Write the official-format FOMM checkpoint of the current weights.

        Args:
            path: destination (default: ``export_path`` or ``<run dir>/fomm_checkpoint.pth.tar``).
            epoch: the ``epoch`` entry (default: the current epoch).

        Returns:
            The written path.
        """
        optimizers: dict[str, _StateDictView] = {}
        if self._trainer is not None and self.trainer.optimizers:
            for optimizer in self.trainer.optimizers:
                for name, state in split_optimizer_state(optimizer).items():
                    optimizers[name] = _StateDictView(state)
        path = save_fomm_checkpoint(
            path or self.default_export_path(),
            self.kp_detector,
            self.generator,
            discriminator=self.discriminator,
            optimizers=optimizers,
            epoch=self.current_epoch if epoch is None else epoch,
        )
        self.last_export = path
        return path

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            done = self.trainer.fit_loop.epoch_progress.current.completed
            path = self.export_fomm_checkpoint(epoch=max(done - 1, 0))
            print(f"FOMM checkpoint (official format): {path}", flush=True)

    def on_fit_end(self) -> None:
        # a run resumed from a checkpoint that had already finished trains nothing (and never
        # reaches on_train_end): its export is still written from the restored weights
        if self.trainer.is_global_zero and getattr(self, "last_export", None) is None:
            done = self.trainer.fit_loop.epoch_progress.current.completed
            path = self.export_fomm_checkpoint(epoch=max(done - 1, 0))
            print(f"FOMM checkpoint (official format): {path}", flush=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # 1. the frozen perceptual network is rebuilt from its file, not stored again
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(FROZEN_PREFIXES)
        }
        # 2. keep the official-format export in step with every Lightning checkpoint
        if self.trainer.is_global_zero:
            try:
                self.export_fomm_checkpoint()
            except OSError as error:  # never lose the Lightning checkpoint over the export
                warnings.warn(f"FOMM checkpoint export failed: {error}", stacklevel=2)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key, value in self.state_dict().items():  # frozen weights come from the module as built
            if key.startswith(FROZEN_PREFIXES):
                checkpoint["state_dict"][key] = value
