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


def _not_a_checkpoint(path: Path, error: BaseException | None = None) -> str | None:
    """One line saying what ``path`` is instead of a training checkpoint, judged from its first
    bytes and (after ``torch.load`` failed) from the error; None when nothing is wrong with the
    bytes and there is no error to explain. Never torch's own advice (``weights_only=False``,
    "file an issue"): such files are not ours to unpickle."""
    import re
    import zipfile

    expected = (
        "Expected a checkpoint written by `python -m fadm_lightning.train` "
        "(<run dir>/checkpoints/last.ckpt or the best one)."
    )
    with path.open("rb") as stream:
        head = stream.read(512)
    try:  # printable UTF-8 (a config, a log …); torch.save files start with b"PK\x03\x04" or 0x80
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut at the end of the bytes read is text
        text = head[: err.start].decode("utf-8") if err.start >= len(head) - 3 else ""
    is_text = bool(text) and all(c.isprintable() or c in "\t\n\r\f" for c in text)
    what = None
    if not head:
        what = "is an empty file (0 bytes)"
    elif head.startswith(b"version https://git-lfs"):
        what = "is a Git LFS pointer (the file itself was never downloaded)"
    elif is_text:
        what = "is a text file"
    else:
        signatures = (  # (offset, bytes, what the file is)
            (0, b"\x89PNG", "a PNG image"),
            (0, b"\xff\xd8\xff", "a JPEG image"),
            (0, b"GIF8", "a GIF image"),
            (0, b"BM", "a BMP image"),
            (0, b"II*\x00", "a TIFF image"),
            (0, b"MM\x00*", "a TIFF image"),
            (8, b"WEBP", "a WebP image"),
            (8, b"AVI ", "an AVI video"),
            (8, b"WAVE", "a WAV audio file"),
            (4, b"ftyp", "an MP4/QuickTime video (ISO media file)"),
            (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
            (0, b"%PDF", "a PDF document"),
            (0, b"\x1f\x8b", "a gzip archive"),
            (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
            (0, b"Rar!", "a RAR archive"),
            (257, b"ustar", "a tar archive"),
            (0, b"\x93NUMPY", "a NumPy .npy array"),
            (0, b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
            (0, b"\x7fELF", "an executable"),
        )
        for offset, magic, kind in signatures:
            if head[offset : offset + len(magic)] == magic:
                what = f"is {kind}"
                break
    if what is None and head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            what = "is a truncated or damaged zip archive (a copy cut short?)"
        else:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
                what = "is a zip archive but not a PyTorch file"
    elif what is None and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") > 2:
        what = "is a safetensors file (bare weights, without the training run's config)"
    if what is None and error is not None:
        unsafe = re.findall(r"GLOBAL ([\w.]+)", str(error))
        if not unsafe and head[:1] == b"\x80":
            # a pickle on which torch's reader stops before any global (protocol ≥ 4):
            # list the classes and functions it imports by reading its opcodes (nothing runs)
            import pickletools

            strings: list[str] = []
            try:
                with path.open("rb") as stream:
                    for count, (op, arg, _) in enumerate(pickletools.genops(stream)):
                        if op.name == "GLOBAL":
                            unsafe.append(str(arg).replace(" ", "."))
                        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                            unsafe.append(".".join(strings[-2:]))
                        elif isinstance(arg, str):
                            strings.append(arg)
                        if len(unsafe) >= 3 or count > 100_000:
                            break
            except Exception:  # not a pickle after all, or cut short: judged below
                pass
        if unsafe:
            names = ", ".join(dict.fromkeys(unsafe))
            what = f"holds Python objects that cannot be loaded safely ({names})"
        elif head[:2] == b"PK":
            what = "is a truncated or damaged PyTorch file"
        elif head[:1] == b"\x80":
            what = "is a Python pickle that torch cannot read (not a PyTorch file, or damaged)"
        else:
            what = f"is not a PyTorch file ({type(error).__name__} while reading it)"
    if what is None:
        return None
    return f"{path}: not a readable checkpoint: it {what}. {expected}"


def _read(path: str | os.PathLike) -> dict:
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such checkpoint. Expected a checkpoint written by "
            "`python -m fadm_lightning.train` (<run dir>/checkpoints/last.ckpt or the best one)."
        )
    # images, videos, text, empty files, other archives: said before torch reads a byte
    reason = _not_a_checkpoint(path)
    if reason is not None:
        raise CheckpointError(reason)
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol advice on foreign pickles
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(_not_a_checkpoint(path, err)) from None
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
    return checkpoint


def read_run_config(path: str | os.PathLike) -> dict:
    """The data/model/coarse/attributes configs stored in a training checkpoint."""
    return _read(path)[CONFIG_KEY]


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
