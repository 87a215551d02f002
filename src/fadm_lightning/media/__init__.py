"""Media in and out: images (:mod:`.image`), videos (:mod:`.video`: the streaming reader, the
training-clip reader and the one writer), audio (:mod:`.audio`). The bottom of the package: it
imports nothing else of fadm_lightning."""

from fadm_lightning.media.errors import ImageReadError, VideoReadError
from fadm_lightning.media.image import IMAGE_SUFFIXES, read_image
from fadm_lightning.media.video import (
    CLIP_ENCODING,
    VideoInfo,
    VideoWriter,
    iter_batches,
    iter_frames,
    probe_video,
    read_frame,
    read_frames,
    write_mp4,
)

__all__ = [
    "CLIP_ENCODING",
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "VideoInfo",
    "VideoReadError",
    "VideoWriter",
    "iter_batches",
    "iter_frames",
    "probe_video",
    "read_frame",
    "read_frames",
    "read_image",
    "write_mp4",
]
