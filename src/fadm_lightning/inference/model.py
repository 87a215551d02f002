"""The trained refiner behind the inference commands: a training checkpoint or the official
release, never random weights.

* :func:`load_refiner` reads a checkpoint written by ``python -m fadm_lightning.train`` or a
  pretrained folder (both through :func:`fadm_lightning.checkpoints.load_pipeline`) or builds the
  official release (:meth:`~fadm_lightning.pipeline.FADMPipeline.from_official_release`),
  optionally with another coarse generator or attribute extractor, and checks that the result
  can run on real videos.
* :class:`FrameRefiner` runs the DDIM loop on batches of coarse frames of one video, with the
  same noise for every batch (``seed``), optionally under bf16 autocast, with the denoiser in the
  ``channels_last`` memory format and under ``torch.compile`` (on a GPU and on the CPU; bf16 on a
  CPU without native bf16 support and ``compile`` without a C++ compiler are ignored with a
  message).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fadm_lightning.checkpoints import MOVED_TARGETS, load_pipeline
from fadm_lightning.models.attributes.base import attribute_capabilities
from fadm_lightning.models.coarse.base import coarse_capabilities
from fadm_lightning.pipeline import OFFICIAL_SAMPLER as OFFICIAL_SAMPLER  # re-exported
from fadm_lightning.pipeline import FADMPipeline
from fadm_lightning.sampler import SamplerConfig

NO_MODEL_MESSAGE = (
    "no trained model given. Set ckpt=<run dir>/checkpoints/last.ckpt (a checkpoint written by "
    "`python -m fadm_lightning.train`) or ckpt=<folder> (a pretrained folder written by "
    "`python -m fadm_lightning.export` or `convert_release`), or use the published FADM files with "
    "model=fadm_official_release (model.diffusion=…, model.deca=…, model.facevid=…; see "
    "docs/inference.md). Nothing is run with random weights."
)
RELEASE_TARGET = "fadm_lightning.pipeline.FADMPipeline.from_official_release"


class InferenceError(RuntimeError):
    """A request the inference commands cannot serve; the message says why and what to do."""


@dataclass
class Refiner:
    """A ready pipeline and what the inference commands need to know about it."""

    pipe: FADMPipeline
    image_size: int  # the resolution it was trained at (frames are cropped to it)
    name: str  # where it came from, for messages
    device: torch.device

    @property
    def sampler(self) -> SamplerConfig:
        """The model's own sampler (:attr:`FADMPipeline.sampler`: a checkpoint's
        ``model.sampler``, the official sampler for the release)."""
        return self.pipe.sampler


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError as err:
        raise InferenceError(f"device={name!r} is not a device (use auto, cpu or cuda)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError(f"device={name} but CUDA is not available here; use device=cpu")
    if device.type not in ("cpu", "cuda"):
        raise InferenceError(f"device={name}: only cpu and cuda are supported")
    return device


def _plain(node: Mapping | DictConfig | None) -> dict | None:
    if node is None:
        return None
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def _check_real_world(attributes: Any, coarse: Any, name: str) -> None:
    """Refuse parts that need the synthetic ground truth (``coarse=None``: not needed)."""
    if attribute_capabilities(attributes).needs_annotations:
        raise InferenceError(
            f"{name}: its attribute extractor ({type(attributes).__name__}) reads "
            "ground-truth annotations of the synthetic data, so it cannot run on real images. "
            "Use a model trained with attributes=landmarks or attributes=deca (an extractor "
            "that gives the same number of values is needed for the weights to fit)."
        )
    if coarse_capabilities(coarse).needs_annotations:
        raise InferenceError(
            f"{name}: its coarse generator ({type(coarse).__name__}) renders from "
            "synthetic annotations and cannot animate real images; choose a real one, e.g. "
            "coarse=fomm coarse.checkpoint=/weights/vox-cpk.pth.tar"
        )


def _load_checkpoint(
    path: Path,
    overrides: Sequence[str],
    coarse: dict | None,
    attributes: dict | None,
    need_coarse: bool,
    device: torch.device,
) -> Refiner:
    """A training checkpoint or a pretrained folder, through the one loader
    (:func:`fadm_lightning.checkpoints.load_pipeline`)."""
    name = f"{'model folder' if path.is_dir() else 'checkpoint'} {path}"

    def check_part(part: str, module: torch.nn.Module) -> None:
        # the attribute extractor is checked before a large coarse generator is built
        if part == "attributes":
            _check_real_world(module, None, name)
        else:
            _check_real_world(None, module, name)

    pipe, _ = load_pipeline(
        path,
        overrides,
        device,
        coarse=coarse,
        attributes=attributes,
        need_coarse=need_coarse,
        check_part=check_part,
    )
    if pipe.image_size is None:
        raise InferenceError(f"{name}: its training resolution (data.image_size) is unknown")
    return Refiner(pipe, int(pipe.image_size), name, device)


def load_refiner(
    ckpt: str | os.PathLike | None = None,
    release: Mapping | DictConfig | None = None,
    overrides: Sequence[str] = (),
    coarse: Mapping | DictConfig | None = None,
    attributes: Mapping | DictConfig | None = None,
    need_coarse: bool = True,
    device: str | torch.device = "cpu",
) -> Refiner:
    """The refiner of a training checkpoint, a pretrained folder or the official release.

    Args:
        ckpt: a checkpoint written by ``python -m fadm_lightning.train``, or a folder written by
            ``FADMPipeline.save_pretrained`` (``python -m fadm_lightning.export`` /
            ``convert_release``).
        release: instead of ``ckpt``: the ``model`` config of ``model=fadm_official_release``
            (``_target_`` = :meth:`~fadm_lightning.pipeline.FADMPipeline.from_official_release`).
        overrides: dot-list overrides of the checkpoint's stored configs
            (``["coarse.checkpoint=/weights/vox-cpk.pth.tar"]``; a folder: ``coarse.*``,
            ``attributes.*``).
        coarse: a coarse-generator config: with ``_target_`` it replaces the stored one (e.g.
            the composed ``conf/coarse/fomm.yaml``), without it its keys override the stored one.
        attributes: likewise for the attribute extractor.
        need_coarse: build the coarse generator (``rectify`` does not need one).
        device: where the networks go.

    Raises:
        InferenceError: neither or both of ``ckpt`` / ``release`` given, or a model that needs
            synthetic annotations.
        CheckpointError: the checkpoint or folder is unreadable or does not fit (the message
            lists the keys).
        FileNotFoundError: a file of the model (checkpoint, coarse weights, release) is missing.
    """
    device = resolve_device(device)
    release = _plain(release)
    if ckpt is None and not release:
        raise InferenceError(NO_MODEL_MESSAGE)
    if ckpt is not None and release:
        raise InferenceError("give either ckpt=… or model=fadm_official_release, not both")
    coarse, attributes = _plain(coarse), _plain(attributes)
    if ckpt is not None:
        return _load_checkpoint(Path(ckpt), overrides, coarse, attributes, need_coarse, device)

    target = release.get("_target_")
    if MOVED_TARGETS.get(target, target) != RELEASE_TARGET:
        raise InferenceError(
            f"model={release.get('_target_')} is a training preset: without ckpt=… its weights "
            f"would be random. {NO_MODEL_MESSAGE}"
        )
    pipe = instantiate({**release, "_target_": RELEASE_TARGET}, device=str(device))
    for part, given in (("coarse", coarse), ("attributes", attributes)):
        if given:
            if "_target_" not in given:
                raise InferenceError(
                    f"with the official release, change the {part} in model.* "
                    f"(e.g. model.coarse=fomm, model.facevid_options.yaw=20) or select a whole "
                    f"{part} config ({part}=…)"
                )
            setattr(pipe, part, instantiate(given).to(device))
    name = f"the official release ({release.get('diffusion')})"
    _check_real_world(pipe.attributes, pipe.coarse if need_coarse else None, name)
    image_size = pipe.image_size or getattr(pipe.unet, "image_size", 256)
    return Refiner(pipe, int(image_size), name, device)


# ------------------------------------------------------------------------------------ sampling
@dataclass(frozen=True)
class SamplerSettings(SamplerConfig):
    """How frames are refined: ``sampler.*`` of ``conf/animate.yaml``, ``conf/rectify.yaml``,
    ``conf/app.yaml``.

    The sampler itself is a :class:`~fadm_lightning.sampler.SamplerConfig` (``steps``, ``eta``,
    ``strength``, ``clip_sample``, ``start_noise``, ``seed``; a knob left at None takes the
    model's own, :attr:`FADMPipeline.sampler`), passed whole to :meth:`FADMPipeline.sample`;
    these settings add how the denoiser runs:

    batch_size: frames refined at once.
    precision: ``fp32`` or ``bf16`` (autocast of the denoiser: on a GPU that supports bf16, and
        on a CPU with native bf16 instructions (AVX512-BF16 / AMX, ARM BF16) through oneDNN;
        elsewhere a message and fp32).
    compile: ``torch.compile`` the denoiser (inductor, default mode; on the CPU with
        ``freezing`` and C++/OpenMP kernels, which needs a C++ compiler; the first batch of each
        new batch size compiles, about a minute on a 2-core CPU).
    channels_last: the denoiser's weights and input in the ``channels_last`` (NHWC) memory
        format, which oneDNN's CPU convolutions and cuDNN's tensor-core kernels prefer; the
        result is the same up to float rounding.
    """

    batch_size: int = 8
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as err:
            raise InferenceError(str(err)) from err
        if self.batch_size < 1:
            raise InferenceError(f"sampler.batch_size must be ≥ 1, got {self.batch_size}")
        if self.precision not in ("fp32", "bf16"):
            raise InferenceError(f"sampler.precision must be fp32 or bf16, got {self.precision!r}")

    @property
    def config(self) -> SamplerConfig:
        """The sampler alone (what :meth:`FADMPipeline.sample` takes)."""
        return SamplerConfig(**self.as_dict(seed=True))

    def resolved(self, defaults: SamplerConfig | Mapping[str, Any]) -> SamplerSettings:
        """These settings with every knob left at None taken from ``defaults`` (the model's
        own sampler, :attr:`FADMPipeline.sampler`)."""
        return self.over(defaults)

    def describe(self) -> str:
        return super().describe() + f", seed {self.seed}"


def cpu_supports_bf16() -> bool:
    """Whether bf16 autocast on this CPU runs on native bf16 instructions through oneDNN.

    oneDNN must be built in and accept bf16, and the CPU must have bf16 dot products (x86:
    ``avx512_bf16`` or ``amx_bf16``; ARM: ``bf16``): without them oneDNN emulates bf16, slower
    than fp32. Where ``/proc/cpuinfo`` cannot be read, oneDNN's answer alone decides.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return True
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return True


def cpp_compiler_available() -> bool:
    """Whether inductor finds a C++ compiler (``torch.compile`` on the CPU builds C++ kernels)."""
    candidates = ["g++", "c++", "clang++"]
    with contextlib.suppress(Exception):
        from torch._inductor import config as inductor_config

        configured = inductor_config.cpp.cxx
        configured = configured if isinstance(configured, (tuple, list)) else (configured,)
        candidates = [c for c in configured if c] + candidates
    return any(shutil.which(str(c)) for c in candidates)


def _input_to_channels_last(module: torch.nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: a 4-d ``sample`` (first argument) in the channels_last format."""
    if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
        args = (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    elif isinstance(kwargs.get("sample"), torch.Tensor) and kwargs["sample"].ndim == 4:
        kwargs = {
            **kwargs,
            "sample": kwargs["sample"].contiguous(memory_format=torch.channels_last),
        }
    return args, kwargs


def use_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Put ``module``'s weights and, through a pre-hook, its input in channels_last (in place,
    once; a compiled module's original is changed)."""
    module = getattr(module, "_orig_mod", module)
    module.to(memory_format=torch.channels_last)
    if getattr(module, "_channels_last_hook", None) is None:
        module._channels_last_hook = module.register_forward_pre_hook(
            _input_to_channels_last, with_kwargs=True
        )
    return module


def use_contiguous_format(module: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`use_channels_last` (for benchmarks comparing both on one model)."""
    module = getattr(module, "_orig_mod", module)
    module.to(memory_format=torch.contiguous_format)
    hook = getattr(module, "_channels_last_hook", None)
    if hook is not None:
        hook.remove()
        module._channels_last_hook = None
    return module


class FrameRefiner:
    """Refine batches of coarse frames of one video (the same noise for every batch).

    Sampler knobs left at None take ``defaults`` (default: the model's own sampler,
    :attr:`FADMPipeline.sampler`).

    ``precision=bf16`` autocasts the denoiser to bf16 on a GPU that supports it and on a CPU with
    native bf16 instructions (:func:`cpu_supports_bf16`); elsewhere ``log`` says so once and it
    runs in fp32. ``channels_last`` converts the pipeline's denoiser in place (its input follows
    through a pre-hook). ``compile`` wraps the pipeline's denoiser in place with
    ``torch.compile`` (the first batch compiles; on the CPU only where a C++ compiler is found,
    otherwise ``log`` says so and it runs eagerly).
    """

    def __init__(
        self,
        pipe: FADMPipeline,
        settings: SamplerSettings,
        log: Callable[[str], None] = print,
        defaults: SamplerConfig | Mapping[str, Any] | None = None,
    ) -> None:
        settings = settings.resolved(pipe.sampler if defaults is None else defaults)
        self.pipe, self.settings = pipe, settings
        device = pipe.device
        self.autocast: Callable[[], Any] = contextlib.nullcontext
        if settings.precision == "bf16":
            if device.type == "cuda" and torch.cuda.is_bf16_supported():
                self.autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
            elif device.type == "cpu" and cpu_supports_bf16():
                self.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
            else:
                log(
                    f"sampler.precision=bf16 ignored on {device.type} (no native bf16 support "
                    "found): running in fp32"
                )
        if settings.channels_last:
            use_channels_last(pipe.unet)
        if settings.compile and not hasattr(pipe.unet, "_orig_mod"):
            if device.type == "cpu" and not cpp_compiler_available():
                log("sampler.compile=true ignored on cpu: no C++ compiler found for inductor")
            elif device.type == "cpu":
                # freezing: the weights become constants, so oneDNN's convolutions get their
                # weights prepacked once (without it inductor was not faster than eager here)
                pipe.unet = torch.compile(pipe.unet, options={"freezing": True})
            else:
                pipe.unet = torch.compile(pipe.unet)

    @torch.no_grad()
    def __call__(
        self, coarse: torch.Tensor, attr_diff: torch.Tensor, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        # coarse: B×3×S×S in [0, 1], attr_diff: B×D [, guide: the guide_inputs images]
        # -> refined B×3×S×S in [0, 1], float32
        s = self.settings
        with self.autocast():
            refined = self.pipe.sample(coarse, attr_diff, s.config, guide=guide)
        return refined.float().clamp(0, 1)


class AttributeStream:
    """Attributes of the frames of one video, robust to batches without a detectable face.

    The landmark extractor fills a frame without a face from the nearest frame of its batch; a
    batch without any face takes the last attributes seen (or ``fallback`` before any), and
    ``missing`` counts the frames so filled.
    """

    def __init__(self, extractor: torch.nn.Module, fallback: torch.Tensor) -> None:
        self.extractor = extractor
        self.last = fallback[-1:]  # 1×D
        self.missing = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from fadm_lightning.models.attributes.landmarks import NoFaceError

        try:
            attr = self.extractor(images)
        except NoFaceError:
            self.missing += images.shape[0]
            return self.last.expand(images.shape[0], -1)
        reports = attribute_capabilities(self.extractor).reports_missing
        missing = self.extractor.last_missing if reports else None
        if missing is not None:
            self.missing += int(missing.sum())
        self.last = attr[-1:]
        return attr


def to_tensor(frames: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 H×W×3 frames → B×3×H×W float32 in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.stack(frames)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [0, 1] → uint8 B×H×W×3 (rounded)."""
    images = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()
