"""Video and image input/output for the inference commands: any container, size, frame rate and
pixel format in; an H.264 mp4 with the input's frame rate, frame count and audio out.

* :func:`probe_video` and :func:`iter_frames` decode with PyAV, one frame at a time, upright
  (a phone video's rotation metadata is applied), as uint8 H×W×3 RGB; every problem is a
  :class:`~fadm_lightning.data.video.VideoReadError` naming the file.
* :class:`VideoWriter` encodes frames into a hidden temporary file next to the output, copies the
  audio track of another file into it (stream copy when the mp4 container takes the codec,
  otherwise re-encoded to AAC) and renames it into place on :meth:`~VideoWriter.close`; on an
  error (or :meth:`~VideoWriter.abort`) nothing is left behind.
"""

from __future__ import annotations

import heapq
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from fadm_lightning.data.video import VideoReadError

# audio codecs the mp4 muxer takes as they are (anything else is re-encoded to AAC), by FFmpeg's
# decoder names (the float/fixed-point decoders of one codec included)
MP4_AUDIO_CODECS = frozenset(
    {"aac", "aac_fixed", "mp3", "mp3float", "ac3", "ac3_fixed", "eac3", "alac"}
)
DEFAULT_FPS = Fraction(25)


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
    try:
        container = av.open(str(path))
    except Exception as err:  # PyAV raises many FFmpegError subclasses, OSError, ValueError
        raise VideoReadError(f"{path}: cannot open video ({type(err).__name__}: {err})") from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: no video stream (is it a video file?)")
    return container


def _fps(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else DEFAULT_FPS


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (if the header knows it), size and audio codec of a video."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = _fps(stream)
        num_frames = int(stream.frames) or None
        if num_frames is None and stream.duration is not None and stream.time_base:
            num_frames = round(float(stream.duration * stream.time_base * fps)) or None
        elif num_frames is None and container.duration:
            num_frames = round(container.duration / 1_000_000 * float(fps)) or None
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
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
            or decoding fails part-way (the message names the file and the frame).
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        count = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and count >= max_frames:
                    break
                image = frame.to_ndarray(format="rgb24")
                yield upright(image, getattr(frame, "rotation", 0) or 0)
                count += 1
        except Exception as err:  # FFmpegError subclasses: corrupt or truncated data
            raise VideoReadError(
                f"{path}: decoding failed after {count} frame(s) ({type(err).__name__}: {err})"
            ) from err
    if count == 0:
        raise VideoReadError(f"{path}: the video has no frames")


def read_frame(path: str | os.PathLike, index: int) -> np.ndarray:
    """Frame ``index`` of a video (decoded from the start)."""
    for i, frame in enumerate(iter_frames(path)):
        if i == index:
            return frame
    raise VideoReadError(f"{path}: frame {index} is past the end of the video")


class VideoWriter:
    """Streams uint8 H×W×3 RGB frames into an H.264 mp4 at ``fps``, atomically, with audio.

    ``with VideoWriter(path, fps, audio_from=driving) as out: out.write(frame)``. Frames are
    encoded as yuv420p (what every player takes); an odd width or height gains one replicated
    edge column or row. On :meth:`close` the audio track of ``audio_from`` (if it has one) is
    added, cut to the length of the video and shifted by the start time of that file's video
    stream, so that it stays in sync when ``audio_from`` is the video the frames follow. Leaving
    the ``with`` block by an exception, or :meth:`abort`, deletes the temporary files.

    Args:
        path: the output ``.mp4``.
        fps: frame rate (a ``Fraction`` keeps NTSC rates such as 30000/1001 exact).
        audio_from: a media file whose first audio stream is copied (None: no audio).
        crf: x264 constant rate factor (lower = better, 18 is visually lossless for most).
        preset: x264 speed preset.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: Fraction | float = DEFAULT_FPS,
        audio_from: str | os.PathLike | None = None,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise ValueError(f"{self.path}: frame rate must be positive, got {fps}")
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.crf, self.preset = crf, preset
        self.num_frames = 0
        self.audio_note: str | None = None  # what happened to the audio (copied, re-encoded, …)
        self._video_tmp = self.path.with_name(f".{self.path.name}.video.tmp.mp4")
        self._final_tmp = self.path.with_name(f".{self.path.name}.tmp.mp4")
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
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
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
                if _add_audio(self._video_tmp, self.audio_from, self._final_tmp, self):
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


def _video_start_seconds(container) -> float:
    stream = container.streams.video[0] if container.streams.video else None
    if stream is None or stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _add_audio(video_path: Path, audio_path: Path, target: Path, writer: VideoWriter) -> bool:
    """Mux ``video_path``'s video and ``audio_path``'s first audio stream into ``target``.

    Stream copy when mp4 takes the codec, else AAC; on any failure the video is kept without
    audio (a warning says why). Returns whether ``target`` was written.
    """
    import av

    try:
        with av.open(str(audio_path)) as probe:
            if not probe.streams.audio:
                writer.audio_note = "no audio track in the input"
                return False
            codec = probe.streams.audio[0].codec_context.name
    except Exception as err:
        writer.audio_note = f"audio not read ({type(err).__name__}: {err})"
        warnings.warn(f"{audio_path}: {writer.audio_note}; the output has no audio", stacklevel=3)
        return False
    attempts = ["copy", "aac"] if codec in MP4_AUDIO_CODECS else ["aac"]
    errors = []
    for how in attempts:
        try:
            _mux(video_path, audio_path, target, copy=how == "copy")
            writer.audio_note = (
                f"{codec} audio {'copied' if how == 'copy' else 're-encoded to AAC'}"
            )
            return True
        except Exception as err:  # an odd codec or container: try the next way, then give up
            target.unlink(missing_ok=True)
            errors.append(f"{how}: {type(err).__name__}: {err}")
    writer.audio_note = "audio dropped (" + "; ".join(errors) + ")"
    warnings.warn(f"{audio_path}: {writer.audio_note}", stacklevel=3)
    return False


def _mux(video_path: Path, audio_path: Path, target: Path, copy: bool) -> None:
    import av

    with (
        av.open(str(video_path)) as video_in,
        av.open(str(audio_path)) as audio_in,
        av.open(str(target), mode="w", format="mp4") as out,
    ):
        v_in = video_in.streams.video[0]
        a_in = audio_in.streams.audio[0]
        v_out = out.add_stream_from_template(v_in)
        duration = float(v_in.duration * v_in.time_base) if v_in.duration else None
        if duration is None:
            duration = v_in.frames / float(v_in.average_rate or DEFAULT_FPS)
        offset = _video_start_seconds(audio_in)  # the frames' time zero in the audio file

        if copy:
            a_out = out.add_stream_from_template(a_in)
            audio_packets = _copied_audio(audio_in, a_in, offset, duration)
        else:
            a_out = out.add_stream("aac", rate=a_in.codec_context.sample_rate or 44100)
            audio_packets = _encoded_audio(audio_in, a_in, a_out, offset, duration)

        def video_packets():
            for packet in video_in.demux(v_in):
                if packet.dts is None:
                    continue
                yield float(packet.dts * packet.time_base), 0, packet

        def tagged_audio():
            for seconds, packet in audio_packets:
                yield seconds, 1, packet

        # interleave by time so that the muxer never buffers a whole stream
        for _, kind, packet in heapq.merge(
            video_packets(), tagged_audio(), key=lambda item: (item[0], item[1])
        ):
            packet.stream = v_out if kind == 0 else a_out
            out.mux(packet)


def _copied_audio(container, stream, offset: float, duration: float):
    shift = round(offset / stream.time_base) if stream.time_base else 0
    for packet in container.demux(stream):
        if packet.pts is None or packet.dts is None:
            continue
        packet.pts -= shift
        packet.dts -= shift
        seconds = float(packet.pts * packet.time_base)
        if seconds < 0:
            continue
        if seconds >= duration:
            break
        yield float(packet.dts * packet.time_base), packet


def _encoded_audio(container, stream, out_stream, offset: float, duration: float):
    import av

    encoder = out_stream.codec_context
    rate = encoder.sample_rate
    resampler = av.AudioResampler(format="fltp", layout=encoder.layout.name, rate=rate)
    start = round(offset * rate)  # samples of the input before the video's first frame
    end = start + round(duration * rate)
    position = 0  # samples of the input seen so far (at the output rate)
    written = 0
    for frame in container.decode(stream):
        frame.pts = None
        for chunk in resampler.resample(frame):
            data = chunk.to_ndarray()  # C×N float32 (planar)
            first, last = position, position + data.shape[1]
            position = last
            keep = data[:, max(0, start - first) : max(0, min(last, end) - first)]
            if keep.shape[1] == 0:
                continue
            out = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(keep), format="fltp", layout=encoder.layout.name
            )
            out.sample_rate, out.pts = rate, written
            written += keep.shape[1]
            for packet in out_stream.encode(out):
                yield float(packet.dts * packet.time_base), packet
        if position >= end:
            break
    for packet in out_stream.encode(None):
        yield float(packet.dts * packet.time_base), packet


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
