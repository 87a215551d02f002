"""The pretrained folder format: a trained FADM as a self-contained folder in the diffusers
layout. The public names are in :mod:`fadm_lightning.pretrained`.

    pipe.save_pretrained("fadm-vox256", model_card_metrics="logs/evaluate/…/results.json")
    pipe = FADMPipeline.from_pretrained("fadm-vox256", device="cuda")

``python -m fadm_lightning.export`` writes one from a training checkpoint,
``python -m fadm_lightning.convert_release`` from the official release, and every ``ckpt=`` of
animate / rectify / evaluate takes one (:func:`fadm_lightning.checkpoints.load_pipeline`).

The folder::

    model_index.json        _class_name, versions, each part → [module, class], the pipeline's
                            options (attributes_from, target, coarse_input), image_size, the
                            default sampler, the training run's data/model configs, provenance
    README.md               the model card (generated: parts, sampler, commands, metrics, citation)
    agcn/                   config.json (_target_ + constructor arguments), model.safetensors
    unet/                   a UNet2DModel: its own save_pretrained (config.json,
                            diffusion_pytorch_model.safetensors); the official denoiser:
                            config.json, model.safetensors (it is also the AGCN: "agcn": "unet")
    scheduler/              scheduler_config.json (DDIMScheduler.save_pretrained)
    coarse/, attributes/    the frozen parts: config.json and, for parts with weights,
                            model.safetensors (their state dict; ``checkpoint: model.safetensors``
                            in config.json points their own loader to it). Parts without weights
                            (synthetic, dlib landmarks) store only config.json.

Loading is strict: a missing part, file or key, a key too many or a mis-shaped one is an error
naming the file and listing the keys; nothing is ever built with random weights, and a folder
only names code of ``fadm_lightning`` and ``diffusers`` (loading imports nothing else).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fadm_lightning.loading.card import model_card, part_rows, read_results
from fadm_lightning.loading.errors import PretrainedFolderError
from fadm_lightning.loading.training import (
    PartCheck,
    build_frozen_parts,
    describe_differences,
    legacy_sampler_keys,
    merge_part_config,
    state_dict_differences,
    translate_targets,
)
from fadm_lightning.sampler import from_legacy

INDEX_NAME = "model_index.json"
CARD_NAME = "README.md"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
FORMAT_VERSION = 1
#: the parts, in the order they are written and listed
PARTS = ("agcn", "unet", "scheduler", "coarse", "attributes")
FROZEN_PARTS = ("coarse", "attributes")
#: the only code a folder may name (``_target_`` and model_index entries)
ALLOWED_MODULES = ("fadm_lightning", "diffusers")
#: stored configs a user may override when loading a folder (the networks are fixed)
OVERRIDABLE = ("coarse", "attributes", "data")


# ------------------------------------------------------------------------------------ saving
def save_pretrained(
    pipe: Any,
    folder: str | os.PathLike[str],
    *,
    model_card_metrics: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    name: str | None = None,
) -> Path:
    """Write ``pipe`` as a folder (layout: this module's docstring), atomically: into a hidden
    sibling first, renamed into place when complete; nothing is left behind on an error.

    Args:
        pipe: the pipeline; its parts that are not diffusers objects need a recorded config
            (``pipe.part_configs``: set by ``load_pipeline``, ``from_pretrained`` and
            ``from_official_release``), and ``pipe.image_size`` must be known.
        folder: the folder to write.
        model_card_metrics: the ``results.json`` of ``python -m fadm_lightning.evaluate`` (a
            path or its contents): the card's metrics table.
        overwrite: replace an existing non-empty folder (otherwise it is an error).
        name: the model's name in the card (default: the folder's name).
    Returns:
        The folder.
    Raises:
        PretrainedFolderError: an existing non-empty folder without ``overwrite``, a part
            without a config, an unknown image size, unreadable metrics.
    """
    folder = Path(folder)
    metrics = read_results(model_card_metrics) if model_card_metrics is not None else None
    if pipe.image_size is None:
        raise PretrainedFolderError(
            "save_pretrained: the pipeline's image_size (its training resolution) is unknown; "
            "load it with fadm_lightning.checkpoints.load_pipeline or set pipe.image_size"
        )

    def write(target: Path) -> None:
        index = _write_parts(pipe, target)
        (target / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        rows = part_rows(pipe, target, index, PARTS)
        card = model_card(index, rows, metrics, name or folder.name, folder=folder.name)
        (target / CARD_NAME).write_text(card)

    return write_folder_atomically(folder, write, overwrite=overwrite)


def folder_summary(folder: Path) -> str:
    """``"N files, X MB"`` of a written folder."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"


def check_output_folder(folder: Path, overwrite: bool = False) -> None:
    """Refuse a file, or an existing non-empty folder unless ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PretrainedFolderError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise PretrainedFolderError(
            f"{folder} exists and is not empty; choose another output or set overwrite=true"
        )


def write_folder_atomically(
    folder: Path, write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """``write(tmp)`` into a hidden sibling of ``folder``, then rename it into place (an
    existing folder is replaced only with ``overwrite``); on any error nothing is left behind
    and an existing folder is untouched."""
    folder = Path(folder)
    check_output_folder(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a shared folder is not
    try:
        write(tmp)
        if folder.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.rename(folder, old)
            try:
                os.rename(tmp, folder)
            except BaseException:
                os.rename(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _class_entry(module: Any) -> list[str]:
    """[module path, class name] of a part (``["diffusers", …]`` for diffusers classes)."""
    kind = type(module)
    path = kind.__module__
    if path.startswith("diffusers.") and hasattr(
        importlib.import_module("diffusers"), kind.__name__
    ):
        path = "diffusers"
    return [path, kind.__name__]


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as safetensors stores it: contiguous CPU tensors, none sharing memory."""
    out, seen = {}, set()
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        whole = tensor.storage_offset() == 0 and storage.nbytes() == (
            tensor.numel() * tensor.element_size()
        )
        if tensor.numel() and (not whole or storage.data_ptr() in seen):
            tensor = tensor.clone()  # shared with another entry, or a view of a larger tensor
        if tensor.numel():
            seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def _save_weights(module: nn.Module, path: Path) -> bool:
    """The module's state dict as safetensors at ``path``; False (no file) when it is empty."""
    from safetensors.torch import save_file

    state = module.state_dict()
    if not state:
        return False
    save_file(_tensors(state), str(path), metadata={"format": "pt"})
    return True


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``_target_`` and the constructor arguments (Hydra's other ``_…_`` keys left out)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return {k: v for k, v in dict(config).items() if k == "_target_" or not k.startswith("_")}


def _diffusers_config(module: Any, version: str) -> dict[str, Any]:
    """A diffusers model's config.json (its constructor arguments as plain JSON types: a model
    built by Hydra may hold OmegaConf lists)."""

    def plain(value: Any) -> Any:
        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
        return list(value) if isinstance(value, tuple) else value

    config = {k: plain(v) for k, v in module.config.items() if not k.startswith("_")}
    return {"_class_name": type(module).__name__, "_diffusers_version": version, **config}


def _write_parts(pipe: Any, folder: Path) -> dict[str, Any]:
    """Each part into its subfolder; returns model_index.json's contents."""
    from diffusers import __version__ as diffusers_version

    from fadm_lightning import __version__

    index: dict[str, Any] = {
        "_class_name": "FADMPipeline",
        "_fadm_lightning_version": __version__,
        "_diffusers_version": diffusers_version,
        "format_version": FORMAT_VERSION,
    }
    random_parts = []
    for name in PARTS:
        module = getattr(pipe, name)
        if name == "agcn" and module is pipe.unet:  # the official denoiser plays both roles
            index[name] = "unet"
            continue
        if module is None:
            raise PretrainedFolderError(f"save_pretrained: the pipeline has no {name}")
        index[name] = _class_entry(module)
        target = folder / name
        if hasattr(module, "save_pretrained") and hasattr(module, "config"):  # diffusers
            target.mkdir()
            if isinstance(module, nn.Module):  # diffusers' files, what its save_pretrained writes
                config = _diffusers_config(module, diffusers_version)
                (target / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
                _save_weights(module, target / DIFFUSERS_WEIGHTS_NAME)
            else:
                module.save_pretrained(target)
            continue
        config = pipe.part_configs.get(name)
        if config is None:
            raise PretrainedFolderError(
                f"save_pretrained: no config recorded for the {name} ({type(module).__name__}): "
                "load the pipeline with fadm_lightning.checkpoints.load_pipeline, "
                "FADMPipeline.from_pretrained or FADMPipeline.from_official_release, or set "
                f"pipe.part_configs[{name!r}] = {{'_target_': …, <constructor arguments>}}"
            )
        config = _plain_config(config)
        if config.pop("allow_random_weights_for_tests", False):
            random_parts.append(name)
        target.mkdir()
        has_weights = _save_weights(module, target / WEIGHTS_NAME)
        if "checkpoint" in config:  # the part's own loader reads the file beside its config
            config["checkpoint"] = WEIGHTS_NAME if has_weights else None
        (target / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    if random_parts:
        warnings.warn(
            f"save_pretrained: the {', '.join(random_parts)} of this pipeline was built with "
            "allow_random_weights_for_tests: the folder stores those random weights",
            stacklevel=3,
        )
    index.update(
        attributes_from=pipe.attributes_from,
        target=pipe.target,
        coarse_input=pipe.coarse_input,
        guide_inputs=list(pipe.guide_inputs),
        image_size=int(pipe.image_size),
        sampler=pipe.sampler.as_dict(),
        run_config=pipe.run_config,
        source=pipe.source or None,
    )
    if random_parts:
        index["random_weight_parts"] = random_parts
    return index


# ------------------------------------------------------------------------------------ loading
def stored_sampler(index: dict[str, Any]) -> dict[str, Any] | None:
    """The model's own sampler stored in ``model_index.json`` (``sampler``; ``default_sampler``
    with the old knob names in folders written before it), None when there is none."""
    stored = index.get("sampler") or index.get("default_sampler")
    return None if not stored else from_legacy(stored)


def read_model_index(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``model_index.json`` of a pretrained folder, checked for the keys the loader needs."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such pretrained folder")
    path = folder / INDEX_NAME
    if not path.is_file():
        raise PretrainedFolderError(
            f"{folder}: a folder without {INDEX_NAME}, so not a pretrained FADM folder. Expected "
            "a folder written by `python -m fadm_lightning.export`, `python -m "
            "fadm_lightning.convert_release` or FADMPipeline.save_pretrained, or a checkpoint "
            "file written by `python -m fadm_lightning.train`."
        )
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PretrainedFolderError(f"{path}: not readable JSON ({err})") from None
    required = (*PARTS, "attributes_from", "target", "coarse_input", "image_size")
    missing = [key for key in required if key not in index] if isinstance(index, dict) else []
    if not isinstance(index, dict) or index.get("_class_name") != "FADMPipeline" or missing:
        raise PretrainedFolderError(
            f"{path}: not the index of an FADMPipeline folder"
            + (f" (missing keys: {', '.join(missing)})" if missing else "")
        )
    wrong = [
        name
        for name in PARTS
        if not (
            (name == "agcn" and index[name] == "unet")
            or (
                isinstance(index[name], list)
                and len(index[name]) == 2
                and all(isinstance(x, str) for x in index[name])
            )
        )
    ]
    if wrong:
        raise PretrainedFolderError(
            f'{path}: each part is [module, class] (the agcn may be "unet"), not so: '
            + ", ".join(f"{name}={index[name]!r}" for name in wrong)
        )
    return index


def _check_allowed(target: str, where: Path) -> None:
    if not isinstance(target, str) or target.split(".")[0] not in ALLOWED_MODULES:
        raise PretrainedFolderError(
            f"{where}: {target!r} is not code of {' or '.join(ALLOWED_MODULES)}; a pretrained "
            "folder names no other code"
        )


def _part_class(index: dict[str, Any], name: str, folder: Path) -> type:
    entry = index[name]
    _check_allowed(entry[0], folder / INDEX_NAME)
    try:
        return getattr(importlib.import_module(entry[0]), entry[1])
    except (ImportError, AttributeError) as err:
        raise PretrainedFolderError(
            f"{folder / INDEX_NAME}: {name} is {entry}, which cannot be imported here ({err})"
        ) from None


def _read_config(part_dir: Path, file: str = CONFIG_NAME) -> dict[str, Any]:
    path = part_dir / file
    if not path.is_file():
        raise PretrainedFolderError(f"{part_dir.parent}: {part_dir.name}/{file} is missing")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PretrainedFolderError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(config, dict):
        raise PretrainedFolderError(f"{path}: not a JSON object")
    return config


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors state dict into ``module`` strictly: every key, no extra one, the same
    shapes; the error names the file and lists the keys."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise PretrainedFolderError(
            f"{path.parent.parent}: {path.parent.name}/{path.name} is missing "
            f"({type(module).__name__} has {len(module.state_dict())} tensors to load)"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise PretrainedFolderError(f"{path}: not a readable safetensors file ({err})") from None
    differences = state_dict_differences(module.state_dict(), state)
    if any(differences):
        headline = f"{path}: the weights do not fit the {type(module).__name__} of its config.json"
        raise PretrainedFolderError(describe_differences(headline, *differences))
    module.load_state_dict(state, strict=True)


def _build_trainable(index: dict[str, Any], name: str, folder: Path) -> nn.Module:
    """The AGCN or the UNet: built from its config, then its weights loaded strictly."""
    kind = _part_class(index, name, folder)
    part_dir = folder / name
    if hasattr(kind, "from_config") and hasattr(kind, "load_config"):  # a diffusers model
        module = kind.from_config(_read_config(part_dir))
        load_weights(module, part_dir / DIFFUSERS_WEIGHTS_NAME)
        return module
    config = translate_targets(_read_config(part_dir))
    module = _instantiate(config, part_dir / CONFIG_NAME)
    _check_class(module, index, name, folder)
    load_weights(module, part_dir / WEIGHTS_NAME)
    return module


def _instantiate(config: Mapping[str, Any], where: Path | None) -> Any:
    """Build a part from its config (``where``: the folder's config.json, whose ``_target_``
    must be code of the package; None for the user's own part). The part's own error (a
    mismatched weights file …) is raised as it is, not wrapped by Hydra."""
    from hydra.errors import InstantiationException

    if where is not None:
        _check_allowed(config.get("_target_"), where)
    try:
        return instantiate(dict(config), _convert_="all")
    except InstantiationException as err:
        if err.__cause__ is None:
            raise
        raise err.__cause__ from None


def _check_class(module: Any, index: dict[str, Any], name: str, folder: Path) -> None:
    if _class_entry(module)[1] != index[name][1]:
        raise PretrainedFolderError(
            f"{folder}: {name}/{CONFIG_NAME} builds a {type(module).__name__} but "
            f"{INDEX_NAME} says {index[name][1]}"
        )


def _frozen_config(folder: Path, name: str) -> dict[str, Any]:
    """A frozen part's stored config, its weights file given by path."""
    config = translate_targets(_read_config(folder / name))
    if config.get("checkpoint") == WEIGHTS_NAME:
        config["checkpoint"] = str(folder / name / WEIGHTS_NAME)
    return config


def load_pretrained(
    folder: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    *,
    coarse: Mapping | DictConfig | None = None,
    attributes: Mapping | DictConfig | None = None,
    need_coarse: bool = True,
    check_part: PartCheck | None = None,
    pipeline_cls: type,
) -> tuple[Any, DictConfig]:
    """A pretrained folder → ``(pipeline, config)``, as
    :func:`fadm_lightning.checkpoints.load_pipeline` returns for a checkpoint (which calls this
    for folders; the arguments mean the same). ``pipeline_cls`` is the class to build
    (:class:`~fadm_lightning.pipeline.FADMPipeline`, which hands itself in: this module sits
    below it and never imports it). ``config`` holds ``coarse`` and ``attributes`` as
    built and, for a folder exported from a training run, its ``data`` and ``model`` configs."""
    folder = Path(folder)
    index = read_model_index(folder)
    wrong = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] not in OVERRIDABLE]
    if wrong:
        raise PretrainedFolderError(
            f"{folder}: the networks of a pretrained folder are fixed; overrides may change only "
            f"{', '.join(f'{g}.*' for g in OVERRIDABLE)}, not {', '.join(wrong)}"
        )
    run = legacy_sampler_keys(translate_targets(index.get("run_config") or {}))
    stored = {name: _frozen_config(folder, name) for name in FROZEN_PARTS}
    stored.update({g: run[g] for g in ("data", "model") if g in run})
    cfg = OmegaConf.merge(OmegaConf.create(stored), OmegaConf.from_dotlist(list(overrides)))
    cfg.coarse = merge_part_config(cfg.coarse, coarse)
    cfg.attributes = merge_part_config(cfg.attributes, attributes)
    replaced = {"coarse": bool(coarse) and "_target_" in coarse}
    replaced["attributes"] = bool(attributes) and "_target_" in attributes

    def build(name: str, config: DictConfig) -> nn.Module:
        config = _plain_config(config)
        if config.get("allow_random_weights_for_tests"):
            raise PretrainedFolderError(
                f"{folder}: {name}.allow_random_weights_for_tests is set; a pretrained folder "
                "is never loaded with random weights"
            )
        if replaced[name]:  # the user's own part (coarse=fomm …): built from their config
            return _instantiate(config, None)
        module = _instantiate(config, folder / name / CONFIG_NAME)
        _check_class(module, index, name, folder)
        if "checkpoint" not in config:  # its own loader read nothing: the weights come from here
            weights = folder / name / WEIGHTS_NAME
            if module.state_dict() or weights.is_file():
                load_weights(module, weights)
        return module

    # a denoiser that also sees the coarse generator's warped source needs it, even in rectify
    need_coarse = need_coarse or "deformed" in (index.get("guide_inputs") or ())
    coarse_module, attribute_module = build_frozen_parts(
        cfg.coarse, cfg.attributes, need_coarse, check_part, build=build
    )
    unet = _build_trainable(index, "unet", folder)
    agcn = unet if index["agcn"] == "unet" else _build_trainable(index, "agcn", folder)
    scheduler_class = _part_class(index, "scheduler", folder)
    scheduler = scheduler_class.from_config(
        _read_config(folder / "scheduler", "scheduler_config.json")
    )

    part_configs = {"attributes": _plain_config(cfg.attributes)}
    if need_coarse:
        part_configs["coarse"] = _plain_config(cfg.coarse)
    for name in ("agcn", "unet"):
        config_file = folder / name / CONFIG_NAME
        if isinstance(index[name], list) and (folder / name / WEIGHTS_NAME).is_file():
            part_configs[name] = translate_targets(json.loads(config_file.read_text()))
    for module in {id(m): m for m in (agcn, unet, coarse_module, attribute_module)}.values():
        module.eval().to(device)
    source = dict(index.get("source") or {})
    source["folder"] = str(folder.resolve())
    pipe = pipeline_cls(
        agcn,
        unet,
        scheduler,
        coarse=coarse_module,
        attributes=attribute_module,
        attributes_from=index["attributes_from"],
        target=index["target"],
        coarse_input=bool(index["coarse_input"]),
        guide_inputs=tuple(index.get("guide_inputs") or ()),  # absent in folders before it
        image_size=int(index["image_size"]),
        sampler=stored_sampler(index),  # None: the official sampler
        part_configs=part_configs,
        run_config=run or None,
        source=source,
    )
    return pipe, cfg
