"""Reading images: any PNG/JPEG/… mode in, uint8 H×W×3 RGB out.

Images of any mode are converted to 8-bit RGB by :func:`read_image` (grayscale is replicated,
16-bit values are scaled by 255/65535, transparency is composited over white), an EXIF
orientation (a phone photo stored sideways) is applied, and an animated GIF/WebP/PNG gives its
first frame, so they are not errors; a zero-byte, truncated or undecodable file is an
:class:`ImageReadError` whose message names the file.

Sizes are checked from the header, before anything is decoded (:func:`check_pixels`): an image
or a video frame over ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb limit,
about 89 megapixels; ``None`` turns the check off) is refused, where Pillow itself only warns up
to twice that limit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
        was = note or f"{mode}{' 16-bit' if sixteen else ''}"
        return _over_white(np.asarray(image.convert("RGBA"))), f"{was} composited over white"
    if mode != "RGB":
        return np.asarray(image.convert("RGB")), f"{mode} converted to RGB"
    return np.asarray(image), ("16-bit RGB reduced to 8 bits" if sixteen else None)


def _over_white(rgba: np.ndarray, rows: int = 512) -> np.ndarray:
    """uint8 H×W×4 composited over white: ``round(c·a/255 + 255·(1 − a/255))``, in integers
    (exact: the quotient by 255 is never a tie) and by blocks of rows, so a large image needs
    little more memory than its pixels."""
    out = np.empty(rgba.shape[:2] + (3,), np.uint8)
    for top in range(0, rgba.shape[0], rows):
        block = rgba[top : top + rows].astype(np.uint16)
        alpha = block[..., 3:]
        # c·a + 255·(255 − a) = 255² + a·(c − 255) ≤ 255²: fits uint16 with the rounding term
        mixed = block[..., :3] * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127
        out[top : top + rows] = mixed // 255
    return out


def check_pixels(path: str | os.PathLike, width: int, height: int, what: str = "image") -> None:
    """Refuse a ``width``×``height`` image or video frame over ``Image.MAX_IMAGE_PIXELS`` pixels
    (a decompression bomb or a picture far larger than a portrait needs) before decoding it."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ImageReadError(
            f"{path}: the {what} is {width}×{height} ({width * height / 1e6:.0f} megapixels), "
            f"over the limit of {limit / 1e6:.0f} megapixels (PIL.Image.MAX_IMAGE_PIXELS); "
            "not decoded (a decompression bomb?). Scale it down first"
        )


def check_image_header(path: str | os.PathLike, what: str = "image") -> tuple[int, int] | None:
    """The size an image file's header claims, checked by :func:`check_pixels` (nothing is
    decoded); None when Pillow does not take the file for an image. The video readers call it
    first: FFmpeg decodes a still image whole just to open it."""
    try:
        with Image.open(path) as image:
            size = image.size
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: the {what} is too large to decode ({err})") from err
    except Exception:  # not an image Pillow knows
        return None
    check_pixels(path, size[0], size[1], what)
    return size


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
            check_pixels(path, image.width, image.height)  # from the header: nothing decoded
            sixteen_bit = any(";16" in str(tile.args) for tile in image.tile or [])
            image.load()  # an animated image: its first frame
            upright = ImageOps.exif_transpose(image)  # a phone photo stored sideways
            return to_rgb8(upright, sixteen_bit)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:  # over twice the limit: refused by Pillow's open
        raise ImageReadError(f"{path}: the image is too large to decode ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: {_not_an_image(path)}") from err
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError, EOFError, …
        raise ImageReadError(f"{path}: unreadable image ({type(err).__name__}: {err})") from err


def _not_an_image(path: Path) -> str:
    """Why Pillow could not identify ``path``: a video given as an image, or no image format."""
    try:
        import av

        with av.open(str(path)) as container:
            demuxer = container.format.name  # image2, png_pipe, …: FFmpeg's readers of stills
            stream = container.streams.video[0] if container.streams.video else None
            codec = stream.codec_context if stream is not None else None
            if (
                codec is not None
                and codec.width
                and codec.height
                and demuxer != "image2"
                and not demuxer.endswith("_pipe")
            ):
                return (
                    "this is a video, not an image: give a portrait image "
                    "(a frame of the video will do)"
                )
    except Exception:  # not a container FFmpeg knows either
        pass
    return "not an image in a format Pillow reads (PNG, JPEG, WebP, BMP, TIFF, GIF, …)"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 H×W×3 RGB (any mode converted, see ``to_rgb8``).

    Raises ``ImageReadError`` naming the file when it is missing, empty or undecodable.
    """
    return read_image_with_note(path)[0]
