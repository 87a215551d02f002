"""What ``python -m fadm_lightning.animate`` and ``… .rectify`` share: the refiner from the
config, the sampler settings, batch settings and the error report (a message naming the file,
exit status 1, no traceback for the expected problems)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fadm_lightning.faces.dlib_face import DlibNotInstalledError
from fadm_lightning.faces.scan import NoFaceFoundError
from fadm_lightning.inference.batch import BatchSettings
from fadm_lightning.inference.model import InferenceError, Refiner, SamplerSettings, load_refiner
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.models.attributes.landmarks import NoFaceError
from fadm_lightning.models.errors import WeightsError

#: problems reported as one message (anything else keeps its traceback)
#: (every weights loader's error is a WeightsError: CheckpointError, FOMMCheckpointError, …)
EXPECTED_ERRORS = (
    VideoReadError,
    WeightsError,
    InferenceError,
    NoFaceFoundError,
    NoFaceError,
    FileNotFoundError,
    DlibNotInstalledError,
)
# settings that do not change an output (left out of the batch mode's settings key)
NOT_SETTINGS = (
    "output",
    "batch",
    "output_dir",
    "progress",
    "device",
    "num_tasks",  # which jobs of a batch this process runs; never what one job writes
    "task_index",
)


def refiner_from_config(cfg: DictConfig, need_coarse: bool) -> Refiner:
    return load_refiner(
        ckpt=cfg.get("ckpt"),
        release=cfg.get("model"),
        overrides=list(cfg.get("overrides") or []),
        coarse=cfg.get("coarse"),
        attributes=cfg.get("attributes"),
        need_coarse=need_coarse,
        device=cfg.get("device", "auto"),
    )


def sampler_from_config(cfg: DictConfig) -> SamplerSettings:
    """``sampler.*`` of a command: the :class:`~fadm_lightning.sampler.SamplerConfig` knobs
    (from ``conf/sampler/``, None = the model's own) and how the denoiser runs."""
    return SamplerSettings(**OmegaConf.to_container(cfg.sampler, resolve=True))


def batch_settings(cfg: DictConfig) -> BatchSettings:
    """The settings that make an output what it is (the checkpoint file included), and the
    batch's ``num_tasks`` / ``task_index`` (kept apart: they change no output)."""
    settings = {}
    for key in cfg:
        if key in NOT_SETTINGS or key in ("paths", "hydra"):
            continue
        value = cfg[key]
        is_node = OmegaConf.is_config(value)
        settings[key] = OmegaConf.to_container(value, resolve=True) if is_node else value
    ckpt = cfg.get("ckpt")
    if ckpt is not None and Path(ckpt).exists():
        # a checkpoint file, or every file of a pretrained folder: replacing either redoes the jobs
        root = Path(ckpt).resolve()
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        settings["ckpt_file"] = [
            [str(f.relative_to(root.parent)), f.stat().st_size, f.stat().st_mtime_ns] for f in files
        ]
    return BatchSettings(settings, cfg.get("num_tasks"), cfg.get("task_index"))


def unwrap(err: BaseException) -> BaseException:
    """The expected error inside Hydra's ``InstantiationException``, if there is one."""
    cause = err
    while cause is not None and not isinstance(cause, EXPECTED_ERRORS):
        cause = cause.__cause__
    return cause if cause is not None else err


def run_command(name: str, body: Callable[[], int]) -> int:
    """Run ``body``; an expected error becomes ``name: error: message`` on stderr and status 1."""
    from hydra.errors import InstantiationException

    try:
        return body()
    except (*EXPECTED_ERRORS, InstantiationException) as err:
        inner = unwrap(err)
        if not isinstance(inner, EXPECTED_ERRORS):
            raise
        print(f"{name}: error: {inner}", file=sys.stderr)
        return 1


def log_to_stderr(name: str) -> Callable[[str], None]:
    return lambda message: print(f"{name}: {message}", file=sys.stderr)


def side_by_side_path(option: Any, output: Path) -> Path | None:
    """``side_by_side``: false/null → none, true → ``<output stem>_side_by_side.mp4``, a path."""
    if option is None or option is False:
        return None
    if option is True:
        return output.with_name(f"{output.stem}_side_by_side.mp4")
    return Path(str(option))


def check_output(output: Path, *inputs: Path) -> Path:
    if output.suffix.lower() != ".mp4":
        raise InferenceError(f"output={output}: the output is an .mp4 file")
    for path in inputs:
        if path.exists() and output.exists() and output.resolve() == path.resolve():
            raise InferenceError(f"output={output} would overwrite the input {path}")
    return output
