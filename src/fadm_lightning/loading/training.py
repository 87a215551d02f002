"""Loading a trained FADM for inference: a training checkpoint (written by
``python -m fadm_lightning.train``) or a pretrained folder (:mod:`fadm_lightning.pretrained`),
through one function, :func:`load_pipeline`.

A training checkpoint is self-contained: besides the AGCN and UNet weights (and their EMA) it
stores the composed ``data`` / ``model`` / ``coarse`` / ``attributes`` configs under the key
``"fadm_config"``. The frozen coarse generator and attribute extractor are rebuilt from those
configs (their own checkpoint files), optionally with overrides such as
``["coarse.checkpoint=/weights/vox-cpk.pth.tar"]``.

    pipe, cfg = load_pipeline("logs/train/runs/…/checkpoints/last.ckpt", device="cuda")
    out = pipe(source, driving)      # the sampler it was validated with (pipe.sampler)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fadm_lightning.loading.errors import CheckpointError
from fadm_lightning.models.errors import compare_state_dicts
from fadm_lightning.sampler import LEGACY_NAMES, OFFICIAL, SamplerConfig, from_legacy

CONFIG_KEY = "fadm_config"
CONFIG_GROUPS = ("data", "model", "coarse", "attributes")
# ``_target_`` names of classes that have moved since checkpoints were written with them: a
# checkpoint stores its composed config, so the old names are translated when it is read
MOVED_TARGETS = {
    "fadm_lightning.lit_module.FADMLitModule": "fadm_lightning.systems.fadm.FADMLitModule",
    "fadm_lightning.distill_module.FADMDistillLitModule": (
        "fadm_lightning.systems.distill.FADMDistillLitModule"
    ),
    "fadm_lightning.fomm_lit_module.FOMMLitModule": "fadm_lightning.systems.fomm.FOMMLitModule",
    "fadm_lightning.models.official.load_official_release": (
        "fadm_lightning.pipeline.FADMPipeline.from_official_release"
    ),
}


def config_for_checkpoint(cfg: DictConfig) -> dict:
    """The part of a run config stored in every training checkpoint (plain, resolved types)."""
    return {g: OmegaConf.to_container(cfg[g], resolve=True) for g in CONFIG_GROUPS if g in cfg}


def _not_a_checkpoint(path: Path, error: BaseException | None = None) -> str | None:
    """One line saying what ``path`` is instead of a training checkpoint, judged from its first
    bytes and (after ``torch.load`` failed) from the error; None when nothing is wrong with the
    bytes and there is no error to explain. Never torch's own advice (``weights_only=False``,
    "file an issue"): such files are not ours to unpickle."""
    from fadm_lightning.models.torch_file import describe_not_a_torch_file

    return describe_not_a_torch_file(path, _EXPECTED_CHECKPOINT, what="checkpoint", error=error)


_EXPECTED_CHECKPOINT = (
    "a checkpoint written by `python -m fadm_lightning.train` "
    "(<run dir>/checkpoints/last.ckpt or the best one)"
)


def _read(path: str | os.PathLike) -> dict:
    from fadm_lightning.models.torch_file import load_torch_file

    path = Path(path)
    # a missing file, images, videos, text, empty files, other archives, foreign pickles: one
    # line of ours (fadm_lightning.models.torch_file), never torch's advice
    checkpoint = load_torch_file(
        path, what="checkpoint", expected=_EXPECTED_CHECKPOINT, error=CheckpointError
    )
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        if isinstance(checkpoint, dict):
            keys = ", ".join(repr(k) for k in list(checkpoint)[:6])
            holds = f"a dict of {keys}{', …' if len(checkpoint) > 6 else ''}"
        else:
            holds = f"a {type(checkpoint).__name__}"
        raise CheckpointError(
            f"{path}: not a training checkpoint: it is a PyTorch file holding {holds} without a "
            "'state_dict' entry. Expected a checkpoint written by `python -m fadm_lightning.train` "
            "(<run dir>/checkpoints/last.ckpt or the best one)."
        )
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
    checkpoint[CONFIG_KEY] = legacy_sampler_keys(_moved_targets(checkpoint[CONFIG_KEY]))
    return checkpoint


def _moved_targets(node):
    """``node`` with every ``_target_`` of :data:`MOVED_TARGETS` renamed (nested dicts and lists)."""
    if isinstance(node, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" else _moved_targets(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_moved_targets(v) for v in node]
    return node


def read_run_config(path: str | os.PathLike) -> dict:
    """The data/model/coarse/attributes configs stored in a training checkpoint (a distillation
    teacher, the sampling benchmarks): a pretrained folder is refused with one line."""
    if (Path(path) / "model_index.json").is_file():
        raise CheckpointError(
            f"{path}: a pretrained folder; this needs the training checkpoint it was exported "
            "from (<run dir>/checkpoints/last.ckpt or the best one)"
        )
    return _read(path)[CONFIG_KEY]


def translate_targets(node):
    """``node`` (a plain config: dicts and lists) with every ``_target_`` of
    :data:`MOVED_TARGETS` renamed; stored configs are read through it."""
    return _moved_targets(node)


def validation_sampler(model_args: Mapping[str, Any]) -> SamplerConfig:
    """The sampler a checkpoint was validated with, from its ``FADMLitModule`` arguments
    (``sampler``, or the ``val_*`` of older checkpoints; a knob missing from both takes the
    official sampler's value, :data:`~fadm_lightning.sampler.OFFICIAL`), seed 0."""
    values = from_legacy({k: v for k, v in model_args.items() if k in LEGACY_NAMES})
    values.pop("seed", None)
    values.update(
        {k: v for k, v in from_legacy(model_args.get("sampler") or {}).items() if v is not None}
    )
    values.pop("seed", None)
    return SamplerConfig(**values).over(OFFICIAL)


def legacy_sampler_override(override: str) -> str:
    """``model.val_eta=0`` (an old spelling) → ``model.sampler.eta=0``; others unchanged."""
    key, sep, value = override.partition("=")
    name = key.removeprefix("model.")
    if key.startswith("model.val_") and name in LEGACY_NAMES:
        return f"model.sampler.{LEGACY_NAMES[name]}{sep}{value}"
    return override


def legacy_sampler_keys(node: dict) -> dict:
    """A stored run config (``{"model": …, …}``) with a model's old ``val_*`` sampler knobs
    moved to ``model.sampler`` (:data:`~fadm_lightning.sampler.LEGACY_NAMES`), so that checkpoints
    and folders written before the sampler had one name per knob keep loading."""
    model = node.get("model") if isinstance(node, dict) else None
    if not isinstance(model, dict) or not any(k.startswith("val_") for k in model):
        return node
    model = dict(model)
    old = {k: model.pop(k) for k in list(model) if k.startswith("val_") and k in LEGACY_NAMES}
    model["sampler"] = {**from_legacy(old), **dict(model.get("sampler") or {})}
    return {**node, "model": model}


def merge_part_config(stored: DictConfig, given: Mapping | DictConfig | None) -> DictConfig:
    """A coarse-generator / attribute-extractor config given by the user over the stored one:
    with ``_target_`` it replaces it (``coarse=fomm``), without it its keys override it."""
    if not given:
        return stored
    if isinstance(given, DictConfig):
        given = OmegaConf.to_container(given, resolve=True)
    if "_target_" in given:
        return OmegaConf.create(dict(given))
    return OmegaConf.merge(stored, OmegaConf.create(dict(given)))


def state_dict_differences(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis_shaped)`` keys of ``found`` against ``expected`` (sorted; a
    mis-shaped entry reads ``"key: file (…) vs model (…)"``): the package's one comparison,
    :func:`~fadm_lightning.models.errors.compare_state_dicts`."""
    return compare_state_dicts(expected, found, sort=True).lists(found="file")


def describe_differences(
    headline: str, missing: Sequence[str], unexpected: Sequence[str], mis_shaped: Sequence[str]
) -> str:
    """``headline`` and one line per kind of difference (up to 20 keys each)."""
    lines = [headline]
    for title, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", mis_shaped),
    ):
        if keys:
            more = " …" if len(keys) > 20 else ""
            lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:20]) + more)
    return "\n".join(lines)


#: ``check_part(name, module)``: called on each frozen part as soon as it is built (the attribute
#: extractor first, then the coarse generator), e.g. to refuse parts that need synthetic
#: annotations before a large coarse generator is built
PartCheck = Callable[[str, nn.Module], None]


def build_frozen_parts(
    coarse: DictConfig,
    attributes: DictConfig,
    need_coarse: bool = True,
    check_part: PartCheck | None = None,
    build: Callable[[str, DictConfig], nn.Module] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The attribute extractor, then the coarse generator (a placeholder
    ``CoarseGenerator()`` when ``need_coarse`` is False), each checked by ``check_part``.
    ``build(name, config)`` builds a part (default: ``hydra.utils.instantiate(config)``)."""
    from fadm_lightning.models.coarse.base import CoarseGenerator

    build = build or (lambda name, config: instantiate(config))
    attribute_module = build("attributes", attributes)
    if check_part is not None:
        check_part("attributes", attribute_module)
    coarse_module = build("coarse", coarse) if need_coarse else CoarseGenerator()
    if check_part is not None and need_coarse:
        check_part("coarse", coarse_module)
    return coarse_module, attribute_module


def load_training_checkpoint(
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    *,
    coarse: Mapping | DictConfig | None = None,
    attributes: Mapping | DictConfig | None = None,
    need_coarse: bool = True,
    check_part: PartCheck | None = None,
) -> tuple[Any, DictConfig]:
    """:func:`load_pipeline` for a file written by ``python -m fadm_lightning.train``."""
    checkpoint = _read(path)
    overrides = [legacy_sampler_override(o) for o in overrides]
    cfg = OmegaConf.merge(
        OmegaConf.create(checkpoint[CONFIG_KEY]), OmegaConf.from_dotlist(list(overrides))
    )
    cfg.coarse = merge_part_config(cfg.coarse, coarse)
    cfg.attributes = merge_part_config(cfg.attributes, attributes)
    # a denoiser that also sees the coarse generator's warped source needs it, even in rectify
    need_coarse = need_coarse or "deformed" in (cfg.model.get("guide_inputs") or ())
    coarse_module, attribute_module = build_frozen_parts(
        cfg.coarse, cfg.attributes, need_coarse, check_part
    )
    model = instantiate(cfg.model, coarse=coarse_module, attributes=attribute_module)

    own = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("coarse.", "attributes."))
    }
    saved = checkpoint["state_dict"]
    differences = state_dict_differences(own, saved)
    if any(differences):
        headline = f"{path}: the checkpoint does not fit the model built from its config"
        if attributes or coarse or overrides:
            headline += " and the overrides (attributes give "
            headline += f"{attribute_module.dim} values)"
        raise CheckpointError(describe_differences(headline, *differences))
    model.load_state_dict({**model.state_dict(), **saved})
    ema = use_ema and model.ema is not None and "ema" in checkpoint
    if ema:
        model.ema.load_state_dict(checkpoint["ema"])
        model.ema.copy_to(model.trainable_parameters())
    model.eval().to(device)

    # what the folder format and the inference commands need to know about it
    pipe = model.pipeline
    plain = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    if "data" in cfg and cfg.data.get("image_size") is not None:
        pipe.image_size = int(cfg.data.image_size)
    pipe.sampler = validation_sampler(model.hparams)
    agcn = plain(cfg.model.agcn) if OmegaConf.is_dict(cfg.model.get("agcn")) else None
    if agcn is not None:  # the partial constructor, completed as FADMLitModule completes it
        agcn.pop("_partial_", None)
        agcn["attr_dim"] = int(getattr(model.agcn, "attr_dim", attribute_module.dim))
        pipe.part_configs["agcn"] = agcn
    pipe.part_configs["attributes"] = plain(cfg.attributes)
    if need_coarse:
        pipe.part_configs["coarse"] = plain(cfg.coarse)
    pipe.run_config = {g: plain(cfg[g]) for g in ("data", "model") if g in cfg}
    pipe.source = {
        "checkpoint": str(Path(path).resolve()),
        "global_step": checkpoint.get("global_step"),
        "epoch": checkpoint.get("epoch"),
        "ema": bool(ema),
    }
    return pipe, cfg
