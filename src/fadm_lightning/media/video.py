"""Reading and writing videos: one reader per use, one writer, rotation everywhere.

Two readers, for two ways of reading:

* streaming, in order (the inference commands, preprocessing): :func:`probe_video`,
  :func:`iter_frames`, :func:`iter_batches` decode any container, size, frame rate and pixel
  format with PyAV, one frame at a time;
* random access to a few frames of a training clip (the data sets): :func:`read_frames` /
  :func:`count_frames` on a clip of the VoxCeleb layout (REFERENCE_SPEC §5.1), an ``.mp4`` file or
  a folder (whose name also ends in ``.mp4``) of 7-digit numbered PNG frames ``0000000.png, …``;
  decord seeks to the nearest key frame, so a few frames never decode the whole clip.

Both return uint8 (T×)H×W×3 RGB **upright**: a phone video's rotation metadata is applied. Every
problem is a :class:`~fadm_lightning.media.errors.VideoReadError` naming the file.

One writer, :class:`VideoWriter`: H.264 into a hidden temporary file next to the output, renamed
into place on :meth:`~VideoWriter.close` (on an error or :meth:`~VideoWriter.abort` nothing is left
behind), optionally with the audio track of another file. Its defaults make what players and
browsers take (yuv420p); :data:`CLIP_ENCODING` is the encoding of training clips
(:func:`write_mp4`: yuv444p, crf 15, one thread, so the same frames always give the same bytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from fadm_lightning.media.audio import DEFAULT_FPS, add_audio
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.image import check_image_header, check_pixels, read_image, to_rgb8

PNG_NAME = "{:07d}.png"
# how training clips are encoded (write_mp4, preprocessing): near-lossless, full chroma, and
# deterministic (one encoder thread)
CLIP_ENCODING = {"crf": 15, "preset": "veryfast", "pix_fmt": "yuv444p", "threads": 1}


# ------------------------------------------------------------------------ streaming (PyAV)
@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reads from a container's header (nothing is decoded)."""

    path: Path
    fps: Fraction  # average frame rate of the first video stream
    num_frames: int | None  # from the header or duration × fps; None when unknown
    width: int
    height: int
    audio_codec: str | None  # codec of the first audio stream, None without audio

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def _open(path: str | os.PathLike):
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty video file (0 bytes)")
    check_image_header(path, "video's frame")  # a still image: FFmpeg would decode it to open it
    try:
        container = av.open(str(path))
    except Exception as err:  # PyAV raises many FFmpegError subclasses, OSError, ValueError
        raise VideoReadError(f"{path}: cannot open video ({type(err).__name__}: {err})") from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: no video stream (is it a video file?)")
    codec = container.streams.video[0].codec_context
    if codec is None:  # a stream FFmpeg has no decoder for (or a corrupt codec header)
        container.close()
        raise VideoReadError(
            f"{path}: the video stream has no known codec (corrupt or unsupported)"
        )
    try:  # the frame size of the header, before any frame is decoded
        check_pixels(path, codec.width or 0, codec.height or 0, "video's frame")
    except VideoReadError:
        container.close()
        raise
    return container


def _animated_webp(path: Path) -> Image.Image | None:
    """The open image when ``path`` is an animated WebP (FFmpeg's webp decoder reads stills
    only, so these frames come from Pillow), else None."""
    try:
        image = Image.open(path)
    except Exception:  # not an image: PyAV's turn
        return None
    if image.format == "WEBP" and getattr(image, "is_animated", False):
        try:
            check_pixels(path, image.width, image.height, "video's frame")  # from the header
        except VideoReadError:
            image.close()
            raise
        return image
    image.close()  # anything else (a bomb included) is refused or read by _open
    return None


def _webp_fps(image: Image.Image) -> Fraction:
    duration_ms = image.info.get("duration") or 0
    return Fraction(1000, int(duration_ms)) if duration_ms > 0 else DEFAULT_FPS


def _fps(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else DEFAULT_FPS


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (if the header knows it), size and audio codec of a video."""
    path = Path(path)
    animation = _animated_webp(path)
    if animation is not None:
        with animation:
            fps = _webp_fps(animation)
            return VideoInfo(path, fps, animation.n_frames, animation.width, animation.height, None)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = _fps(stream)
        num_frames = int(stream.frames) or None
        if num_frames is None and stream.duration is not None and stream.time_base:
            num_frames = round(float(stream.duration * stream.time_base * fps)) or None
        elif num_frames is None and container.duration:
            num_frames = round(container.duration / 1_000_000 * float(fps)) or None
        # an audio stream without a known codec (corrupt header) counts as no audio
        audio_codec = container.streams.audio[0].codec_context if container.streams.audio else None
        audio = audio_codec.name if audio_codec is not None else None
        width, height = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(path, fps, num_frames, width, height, audio)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, PyAV's ``frame.rotation``)."""
    quarter_turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns)) if quarter_turns else image


def iter_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode the frames of a video in order as uint8 H×W×3 RGB (upright).

    Raises:
        VideoReadError: the file is missing, unreadable, has no video stream, no decodable frame,
            frames over the size limit (``media.image.check_pixels``, from the header), frames
            whose size changes mid-stream, or decoding fails part-way (the message names the
            file and the frame).
    """
    path = Path(path)
    animation = _animated_webp(path)
    if animation is not None:
        yield from _webp_frames(path, animation, max_frames)
        return
    with _open(path) as container:
        stream = container.streams.video[0]
        count = 0
        size = None
        try:
            for frame in container.decode(stream):
                if max_frames is not None and count >= max_frames:
                    break
                if size is None:
                    check_pixels(path, frame.width, frame.height, "video's frame")
                    size = (frame.width, frame.height)
                elif (frame.width, frame.height) != size:
                    raise VideoReadError(
                        f"{path}: frame {count} is {frame.width}×{frame.height} but the first "
                        f"frame is {size[0]}×{size[1]} (the frame size changes mid-stream); "
                        "re-encode the video at one size"
                    )
                image = frame.to_ndarray(format="rgb24")
                yield upright(image, getattr(frame, "rotation", 0) or 0)
                count += 1
        except VideoReadError:
            raise
        except Exception as err:  # FFmpegError subclasses: corrupt or truncated data
            raise VideoReadError(
                f"{path}: decoding failed after {count} frame(s) ({type(err).__name__}: {err})"
            ) from err
    if count == 0:
        raise VideoReadError(f"{path}: the video has no frames")


def _webp_frames(path: Path, animation: Image.Image, max_frames: int | None):
    count = 0
    with animation:
        try:
            for frame in ImageSequence.Iterator(animation):
                if max_frames is not None and count >= max_frames:
                    break
                yield to_rgb8(frame.convert("RGBA"))[0]  # transparent pixels over white
                count += 1
        except Exception as err:  # a truncated or corrupt frame
            raise VideoReadError(
                f"{path}: decoding failed after {count} frame(s) ({type(err).__name__}: {err})"
            ) from err


def read_frame(path: str | os.PathLike, index: int) -> np.ndarray:
    """Frame ``index`` of a video (decoded from the start)."""
    for i, frame in enumerate(iter_frames(path)):
        if i == index:
            return frame
    raise VideoReadError(f"{path}: frame {index} is past the end of the video")


def iter_batches(
    path: str | os.PathLike, batch_size: int, max_frames: int | None = None
) -> Iterator[list[np.ndarray]]:
    """The frames of :func:`iter_frames` in lists of ``batch_size`` (the last may be shorter)."""
    batch: list[np.ndarray] = []
    for frame in iter_frames(path, max_frames):
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------- clips of the VoxCeleb layout (decord)
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
        frames = reader.get_batch(idx).asnumpy()
    except Exception as err:
        raise VideoReadError(f"{path}: cannot decode frames {idx[:5]}… ({err})") from err
    return frames  # decord applies the rotation metadata itself


def video_fps(path: str | os.PathLike, default: float = 25.0) -> float:
    path = Path(path)
    if path.is_dir():
        return default
    return float(_open_decord(path).get_avg_fps() or default)


# ------------------------------------------------------------------------------ writing
class VideoWriter:
    """Streams uint8 H×W×3 RGB frames into an H.264 mp4 at ``fps``, atomically, with audio.

    ``with VideoWriter(path, fps, audio_from=driving) as out: out.write(frame)``. An odd width
    or height gains one replicated edge column or row (H.264 needs even sizes). On :meth:`close`
    the audio track of ``audio_from`` (if it has one) is added, cut to the length of the video
    and shifted by the start time of that file's video stream, so that it stays in sync when
    ``audio_from`` is the video the frames follow. Leaving the ``with`` block by an exception,
    or :meth:`abort`, deletes the temporary files; the output path is only ever replaced whole.

    Args:
        path: the output ``.mp4``.
        fps: frame rate (a ``Fraction`` keeps NTSC rates such as 30000/1001 exact).
        audio_from: a media file whose first audio stream is copied (None: no audio).
        crf: x264 constant rate factor (lower = better, 18 is visually lossless for most).
        preset: x264 speed preset.
        pix_fmt: ``yuv420p`` (every player and browser) or ``yuv444p`` (training clips).
        threads: encoder threads (None: the encoder's choice; 1: identical bytes every run).
        gop: frames between key frames (None: the encoder's default, 250). It bounds the cost
            of a random read: decord decodes from the previous key frame (``docs/data.md``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: Fraction | float = DEFAULT_FPS,
        audio_from: str | os.PathLike | None = None,
        crf: int = 18,
        preset: str = "medium",
        pix_fmt: str = "yuv420p",
        threads: int | None = None,
        gop: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise ValueError(f"{self.path}: frame rate must be positive, got {fps}")
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.crf, self.preset, self.pix_fmt = crf, preset, pix_fmt
        self.threads, self.gop = threads, gop
        self.num_frames = 0
        self.audio_note: str | None = None  # what happened to the audio (copied, re-encoded, …)
        # per-process names: processes writing the same file at once (DDP ranks generating the
        # synthetic data, array tasks) never share a temporary file; the last rename wins whole
        self._video_tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.video.tmp.mp4")
        self._final_tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.mp4")
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
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
            self._container = av.open(str(self._video_tmp), mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = self.pix_fmt
            options = {"crf": str(self.crf), "preset": self.preset}
            if self.threads is not None:
                options["threads"] = str(int(self.threads))
            if self.gop is not None:
                options["g"] = str(int(self.gop))
            stream.options = options
            self._stream = stream
        elif (height, width) != self._size:
            raise ValueError(
                f"{self.path}: frame {self.num_frames} is {width}×{height}, "
                f"not {self._size[1]}×{self._size[0]}"
            )
        if width % 2 or height % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self.num_frames  # constant frame rate: time base 1/fps
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder, add the audio and move the file into place."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frames written")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            result = self._video_tmp
            if self.audio_from is not None:
                if add_audio(self._video_tmp, self.audio_from, self._final_tmp, self):
                    result = self._final_tmp
            os.replace(result, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary files (the output path itself is never touched)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # half-written container; it is deleted anyway
                pass
            self._container = None
        self._video_tmp.unlink(missing_ok=True)
        self._final_tmp.unlink(missing_ok=True)


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 25.0,
    crf: int = CLIP_ENCODING["crf"],
    gop: int | None = None,
) -> None:
    """Write uint8 T×H×W×3 RGB frames (T ≥ 1) as a training clip (:data:`CLIP_ENCODING`),
    atomically."""
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"write_mp4 expects uint8 T×H×W×3 frames, got {frames.dtype} {frames.shape}"
        )
    if len(frames) == 0:
        raise ValueError(f"write_mp4: no frames to write to {path}")
    with VideoWriter(path, fps, **{**CLIP_ENCODING, "crf": crf}, gop=gop) as writer:
        for frame in frames:
            writer.write(frame)


def write_png_folder(path: str | os.PathLike, frames: np.ndarray) -> None:
    """Write uint8 T×H×W×3 RGB frames as a folder of 7-digit numbered PNGs (atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp / PNG_NAME.format(i))
    if path.exists():
        raise FileExistsError(f"{path}: already exists")
    os.replace(tmp, path)


class PngFolderWriter:
    """Streams uint8 H×W×3 RGB frames into a folder of 7-digit numbered PNGs (the other clip
    format of the VoxCeleb layout), atomically: a hidden tmp folder renamed on ``close``.

    Same interface as :class:`VideoWriter`. With ``overwrite`` an existing folder (or file) of that
    name is replaced; otherwise ``close`` raises ``FileExistsError``.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.num_frames = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
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
