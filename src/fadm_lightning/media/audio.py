"""Audio of the outputs: the first audio track of another file, copied into a finished video.

:func:`add_audio` muxes a video file with the first audio stream of another media file, cut to
the video's length and shifted by that file's video start time (so the audio of the video the
frames follow stays in sync): a stream copy when the mp4 container takes the codec, otherwise
re-encoded to AAC. On failure the caller keeps the video without audio and is told why.
"""

from __future__ import annotations

import heapq
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

DEFAULT_FPS = Fraction(25)  # when a file states no frame rate
# audio codecs the mp4 muxer takes as they are (anything else is re-encoded to AAC), by FFmpeg's
# decoder names (the float/fixed-point decoders of one codec included)
MP4_AUDIO_CODECS = frozenset(
    {"aac", "aac_fixed", "mp3", "mp3float", "ac3", "ac3_fixed", "eac3", "alac"}
)


def _video_start_seconds(container) -> float:
    stream = container.streams.video[0] if container.streams.video else None
    if stream is None or stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)


def add_audio(video_path: Path, audio_path: Path, target: Path, writer) -> bool:
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
