"""Reading images: any PNG/JPEG/… mode in, uint8 H×W×3 RGB out.

Images of any mode are converted to 8-bit RGB by :func:`read_image` (grayscale is replicated,
16-bit values are scaled by 255/65535, transparency is composited over white), so they are not
errors; a zero-byte, truncated or undecodable file is an :class:`ImageReadError` whose message
names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from fadm_lightning.media.errors import ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ALPHA_BACKGROUND = 255  # transparent pixels become white


def to_rgb8(image: Image.Image, sixteen_bit: bool = False) -> tuple[np.ndarray, str | None]:
    """uint8 H×W×3 RGB of a PIL image of any mode, and a note of the conversion (None for 8-bit RGB).

    * 16-bit grayscale (modes ``I;16*``, ``I``): ``round(v · 255 / 65535)``, replicated to RGB;
    * 16-bit RGB(A) PNGs are already reduced to 8 bits per channel by Pillow (noted);
    * alpha (``RGBA``, ``LA``, ``PA``, palette transparency): composited over white;
    * grayscale, palette, bilevel, CMYK, …: Pillow's conversion to RGB.

    ``sixteen_bit`` says the file stored 16 bits per channel (only used for the note; Pillow
    forgets it once the image is loaded).
    """
    mode = image.mode
    sixteen = sixteen_bit
    note = None
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), f"16-bit grayscale ({mode}) converted to RGB"
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(
            gray[..., None], 3, axis=2
        ), "float grayscale (F) in [0, 1] converted to RGB"
    if mode == "P" and "transparency" in image.info:
        image, mode, note = image.convert("RGBA"), "RGBA", "palette with transparency"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        was = note or f"{mode}{' 16-bit' if sixteen else ''}"
        return np.round(rgb).astype(np.uint8), f"{was} composited over white"
    if mode != "RGB":
        return np.asarray(image.convert("RGB")), f"{mode} converted to RGB"
    return np.asarray(image), ("16-bit RGB reduced to 8 bits" if sixteen else None)


def read_image_with_note(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """``read_image`` plus the conversion note of ``to_rgb8`` (None when the file was 8-bit RGB)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageReadError(f"{path}: cannot open image ({err.strerror or err})") from err
    if size == 0:
        raise ImageReadError(f"{path}: empty image file (0 bytes)")
    try:
        with Image.open(path) as image:
            sixteen_bit = any(";16" in str(tile.args) for tile in image.tile or [])
            image.load()
            return to_rgb8(image, sixteen_bit)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: unreadable image ({type(err).__name__}: {err})") from err


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 H×W×3 RGB (any mode converted, see ``to_rgb8``).

    Raises ``ImageReadError`` naming the file when it is missing, empty or undecodable.
    """
    return read_image_with_note(path)[0]
