"""Reading and writing clips in the VoxCeleb layout (REFERENCE_SPEC §5.1).

A clip is either an ``.mp4`` file or a folder (whose name also ends in ``.mp4``) holding
7-digit numbered PNG frames ``0000000.png, 0000001.png, …``. Frames are returned as uint8
arrays T×H×W×3 (RGB). Random access to a few frames of an mp4 never decodes the whole clip
(decord seeks to the nearest key frame).

Images of any PNG/JPEG mode are converted to 8-bit RGB by ``read_image`` (grayscale is
replicated, 16-bit values are scaled by 255/65535, transparency is composited over white), so
they are not errors; a zero-byte, truncated or undecodable file is a ``VideoReadError``
(``ImageReadError`` for images) whose message names the file.

Training datasets replace an item they cannot read and report what they skipped inside the item
(``encode_skipped`` / ``decode_skipped``), so the report survives DataLoader worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PNG_NAME = "{:07d}.png"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ALPHA_BACKGROUND = 255  # transparent pixels become white
SKIPPED_KEY = "skipped"


class VideoReadError(RuntimeError):
    """A clip that cannot be read; the message names the file and the problem."""


class ImageReadError(VideoReadError):
    """An image (a PNG frame, a source portrait) that cannot be read; the message names it."""


def encode_skipped(entries: Sequence[tuple[str, str]]) -> str:
    """``[(name, reason), …]`` as one string (one ``name<TAB>reason`` line each; "" when none).

    A string collates into a list of strings, whatever the number of entries per item.
    """
    return "\n".join(f"{name}\t{' '.join(str(reason).split())}" for name, reason in entries)


def decode_skipped(value: str) -> list[tuple[str, str]]:
    """Inverse of ``encode_skipped``."""
    out = []
    for line in value.splitlines():
        name, _, reason = line.partition("\t")
        if name:
            out.append((name, reason))
    return out


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


def is_frame_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def _png_frames(path: Path) -> list[Path]:
    frames = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not frames:
        raise VideoReadError(f"{path}: frame folder holds no .png frames")
    return frames


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a clip (mp4 file or PNG folder)."""
    path = Path(path)
    if path.is_dir():
        return len(_png_frames(path))
    return len(_open_decord(path))


def _open_decord(path: Path):
    import decord

    if not path.is_file():
        raise VideoReadError(f"{path}: no such video file")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError (a RuntimeError)
        raise VideoReadError(f"{path}: cannot decode video ({err})") from err


def read_frames(path: str | os.PathLike, indices: Sequence[int] | None = None) -> np.ndarray:
    """Read frames ``indices`` (all frames when None) of a clip as uint8 T×H×W×3 RGB."""
    path = Path(path)
    if path.is_dir():
        files = _png_frames(path)
        if indices is not None:
            bad = [int(i) for i in indices if not -len(files) <= int(i) < len(files)]
            if bad:
                raise VideoReadError(f"{path}: frame indices {bad} out of range [0, {len(files)})")
        chosen = files if indices is None else [files[int(i)] for i in indices]
        frames = [read_image(f) for f in chosen]  # ImageReadError names the frame file
        for f, frame in zip(chosen, frames, strict=True):
            if frame.shape != frames[0].shape:
                h, w = frame.shape[:2]
                h0, w0 = frames[0].shape[:2]
                raise VideoReadError(
                    f"{f}: frame is {w}×{h} but {chosen[0].name} of the same clip is {w0}×{h0}"
                )
        return np.stack(frames)
    reader = _open_decord(path)
    if len(reader) == 0:
        raise VideoReadError(f"{path}: video has no frames")
    idx = list(range(len(reader))) if indices is None else [int(i) for i in indices]
    bad = [i for i in idx if not -len(reader) <= i < len(reader)]
    if bad:
        raise VideoReadError(f"{path}: frame indices {bad[:5]} out of range [0, {len(reader)})")
    try:
        return reader.get_batch(idx).asnumpy()
    except Exception as err:
        raise VideoReadError(f"{path}: cannot decode frames {idx[:5]}… ({err})") from err


def video_fps(path: str | os.PathLike, default: float = 25.0) -> float:
    path = Path(path)
    if path.is_dir():
        return default
    return float(_open_decord(path).get_avg_fps() or default)


class Mp4Writer:
    """Streams uint8 H×W×3 RGB frames into an H.264 mp4, atomically (tmp file, renamed on close).

    ``with Mp4Writer(path, fps) as writer: writer.write(frame)``; leaving the block by an
    exception deletes the partial file. Odd sizes are padded by one edge row/column (H.264 needs
    even sizes). One encoder thread: the same frames always give the same bytes.

    ``gop`` (frames between key frames; None = the encoder's default, 250) bounds the cost of a
    random read: decord decodes from the previous key frame, so two random frames of a long
    clip with one key frame cost many decoded frames (``docs/data.md``, throughput).
    """

    def __init__(
        self, path: str | os.PathLike, fps: float = 25.0, crf: int = 15, gop: int | None = None
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.gop = gop
        self.num_frames = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp.mp4")
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected a uint8 H×W×3 frame, got {frame.dtype} {frame.shape}"
            )
        height, width = frame.shape[:2]
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (height, width)
            self._container = av.open(str(self._tmp), mode="w")
            stream = self._container.add_stream("libx264", rate=round(self.fps))
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv444p"
            options = {"crf": str(self.crf), "preset": "veryfast", "threads": "1"}
            if self.gop is not None:
                options["g"] = str(int(self.gop))
            stream.options = options
            self._stream = stream
        elif (height, width) != self._size:
            raise ValueError(
                f"{self.path}: frame {self.num_frames} is {width}×{height}, not {self._size[1]}×{self._size[0]}"
            )
        if width % 2 or height % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frames written")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the container may be half-written; it is deleted anyway
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 25.0,
    crf: int = 15,
    gop: int | None = None,
) -> None:
    """Write uint8 T×H×W×3 RGB frames (T ≥ 1) as an H.264 mp4 (atomically: tmp file then rename)."""
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"write_mp4 expects uint8 T×H×W×3 frames, got {frames.dtype} {frames.shape}"
        )
    if len(frames) == 0:
        raise ValueError(f"write_mp4: no frames to write to {path}")
    with Mp4Writer(path, fps=fps, crf=crf, gop=gop) as writer:
        for frame in frames:
            writer.write(frame)


def write_png_folder(path: str | os.PathLike, frames: np.ndarray) -> None:
    """Write uint8 T×H×W×3 RGB frames as a folder of 7-digit numbered PNGs (atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp / PNG_NAME.format(i))
    if path.exists():
        raise FileExistsError(f"{path}: already exists")
    os.replace(tmp, path)


class PngFolderWriter:
    """Streams uint8 H×W×3 RGB frames into a folder of 7-digit numbered PNGs (the other clip
    format of the VoxCeleb layout), atomically: a hidden tmp folder renamed on ``close``.

    Same interface as ``Mp4Writer``. With ``overwrite`` an existing folder (or file) of that
    name is replaced; otherwise ``close`` raises ``FileExistsError``.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.num_frames = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._size: tuple[int, ...] | None = None

    def __enter__(self) -> PngFolderWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected a uint8 H×W×3 frame, got {frame.dtype} {frame.shape}"
            )
        if self._size is None:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)  # left by an interrupted run
            self._tmp.mkdir(parents=True)
            self._size = frame.shape
        elif frame.shape != self._size:
            raise ValueError(
                f"{self.path}: frame {self.num_frames} is {frame.shape}, not {self._size}"
            )
        Image.fromarray(frame).save(self._tmp / PNG_NAME.format(self.num_frames))
        self.num_frames += 1

    def close(self) -> None:
        if self._size is None:
            raise ValueError(f"{self.path}: no frames written")
        if self.path.exists() or self.path.is_symlink():
            if not self.overwrite:
                self.abort()
                raise FileExistsError(f"{self.path}: already exists")
            remove_clip(self.path)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)


def remove_clip(path: str | os.PathLike) -> None:
    """Delete a clip: an mp4 file or a PNG-frame folder (nothing when absent)."""
    import shutil

    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
