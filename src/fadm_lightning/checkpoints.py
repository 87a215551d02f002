"""Loading a trained FADM checkpoint (written by ``python -m fadm_lightning.train``) for inference.

A training checkpoint is self-contained: besides the AGCN and UNet weights (and their EMA) it
stores the composed ``data`` / ``model`` / ``coarse`` / ``attributes`` configs under the key
``"fadm_config"``. The frozen coarse generator and attribute extractor are rebuilt from those
configs (their own checkpoint files), optionally with overrides such as
``["coarse.checkpoint=/weights/vox-cpk.pth.tar"]``.

    pipe, cfg = load_pipeline("logs/train/runs/…/checkpoints/last.ckpt", device="cuda")
    out = pipe(source, driving, num_inference_steps=25, eta=0.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fadm_lightning.pipeline import FADMPipeline

CONFIG_KEY = "fadm_config"
CONFIG_GROUPS = ("data", "model", "coarse", "attributes")


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit; the message names the file and lists the differences."""


def config_for_checkpoint(cfg: DictConfig) -> dict:
    """The part of a run config stored in every training checkpoint (plain, resolved types)."""
    return {g: OmegaConf.to_container(cfg[g], resolve=True) for g in CONFIG_GROUPS if g in cfg}


def _read(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such checkpoint. Expected a checkpoint written by "
            "`python -m fadm_lightning.train` (<run dir>/checkpoints/last.ckpt or the best one)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a fadm_lightning training checkpoint (no 'state_dict')")
    if CONFIG_KEY not in checkpoint:
        # older checkpoints: the run's composed config beside <run dir>/checkpoints/
        run_config = path.resolve().parent.parent / ".hydra" / "config.yaml"
        if not run_config.is_file():
            raise CheckpointError(
                f"{path}: the checkpoint carries no '{CONFIG_KEY}' entry and {run_config} does not exist"
            )
        full = OmegaConf.load(run_config)
        checkpoint[CONFIG_KEY] = {
            g: OmegaConf.to_container(full[g], resolve=True) for g in CONFIG_GROUPS if g in full
        }
    return checkpoint


def load_pipeline(
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    use_ema: bool = True,
) -> tuple[FADMPipeline, DictConfig]:
    """Rebuild the pipeline of a training checkpoint.

    Args:
        path: the Lightning checkpoint.
        overrides: dot-list overrides of the stored configs, e.g. ``["coarse.checkpoint=…"]``.
        device: where to put the networks.
        use_ema: load the EMA weights when the checkpoint has them.
    Returns:
        ``(pipeline, config)``; ``config.data.image_size`` is the training resolution.
    """
    checkpoint = _read(path)
    cfg = OmegaConf.merge(
        OmegaConf.create(checkpoint[CONFIG_KEY]), OmegaConf.from_dotlist(list(overrides))
    )
    coarse = instantiate(cfg.coarse)
    attributes = instantiate(cfg.attributes)
    model = instantiate(cfg.model, coarse=coarse, attributes=attributes)

    own = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("coarse.", "attributes."))
    }
    saved = checkpoint["state_dict"]
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(saved))
        if saved[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        lines = [f"{path}: the checkpoint does not fit the model built from its own config"]
        for title, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", shapes),
        ):
            if keys:
                lines.append(
                    f"  {title} ({len(keys)}): "
                    + ", ".join(keys[:20])
                    + (" …" if len(keys) > 20 else "")
                )
        raise CheckpointError("\n".join(lines))
    model.load_state_dict({**model.state_dict(), **saved})
    if use_ema and model.ema is not None and "ema" in checkpoint:
        model.ema.load_state_dict(checkpoint["ema"])
        model.ema.copy_to(model.trainable_parameters())
    model.eval().to(device)
    return model.pipeline, cfg
