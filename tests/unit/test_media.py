"""media/: one writer for every mp4 the package writes, rotation applied by both readers."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.video import (
    CLIP_ENCODING,
    VideoWriter,
    count_frames,
    iter_frames,
    probe_video,
    read_frames,
    write_mp4,
)
from tests.unit.test_preprocess import _write_rotated


def _frames(t: int = 5, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    # smooth colour ramps moving over time (what a codec keeps well)
    y, x = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([x * 3 + 5 * i + seed, y * 3, (x + y) * 2 - 4 * i], axis=-1) for i in range(t)
    ]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_training_clips_are_written_deterministically_and_read_back_closely(tmp_path):
    frames = _frames()
    write_mp4(tmp_path / "a.mp4", frames, fps=25, gop=2)
    write_mp4(tmp_path / "b.mp4", frames, fps=25, gop=2)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.mp4", "b.mp4")]
    assert digest[0] == digest[1]  # one encoder thread: the same frames give the same bytes
    back = read_frames(tmp_path / "a.mp4")
    assert back.shape == frames.shape and count_frames(tmp_path / "a.mp4") == len(frames)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4  # crf 15, yuv444p
    # the streaming reader gives the same frames as the random-access one
    assert np.array_equal(np.stack(list(iter_frames(tmp_path / "a.mp4"))), back)


def test_one_writer_two_encodings(tmp_path):
    """Training clips keep full chroma (yuv444p); outputs for people are yuv420p (players)."""
    import av

    write_mp4(tmp_path / "clip.mp4", _frames())
    with VideoWriter(tmp_path / "out.mp4", fps=30) as writer:
        for frame in _frames():
            writer.write(frame)
    for name, pix_fmt in (("clip.mp4", CLIP_ENCODING["pix_fmt"]), ("out.mp4", "yuv420p")):
        with av.open(str(tmp_path / name)) as container:
            assert container.streams.video[0].codec_context.pix_fmt == pix_fmt
    assert probe_video(tmp_path / "out.mp4").fps == 30
    assert probe_video(tmp_path / "out.mp4").num_frames == 5


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(ValueError, match="is 64×63"):
        with VideoWriter(tmp_path / "out.mp4") as writer:
            writer.write(_frames()[0])
            writer.write(_frames(h=63)[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_both_readers_apply_the_rotation_metadata(tmp_path, degrees):
    """A phone video stored sideways comes out upright from the training-clip reader (decord,
    which ignores the metadata itself) as from the streaming reader (PyAV)."""
    upright = np.full((48, 32, 3), 40, np.uint8)
    upright[:16, :16] = 230  # marks the top-left corner
    _write_rotated(tmp_path / "phone.mp4", np.stack([upright] * 3), degrees)
    for frames in (read_frames(tmp_path / "phone.mp4"), list(iter_frames(tmp_path / "phone.mp4"))):
        assert len(frames) == 3 and frames[0].shape == upright.shape
        assert np.abs(frames[0].astype(int) - upright.astype(int)).mean() < 3
    assert read_frames(tmp_path / "phone.mp4", [2]).shape == (1, 48, 32, 3)


def test_unreadable_clip_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoReadError, match="broken.mp4"):
        read_frames(bad)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        list(iter_frames(bad))


def test_an_animated_webp_is_read_as_a_video_with_its_frame_rate(tmp_path):
    # FFmpeg's webp decoder reads stills only: these frames come from Pillow
    from PIL import Image

    frames = _frames(t=3, h=48, w=64)
    path = tmp_path / "anim.webp"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, lossless=True)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, float(info.fps)) == (3, 64, 48, 25.0)
    read = np.stack(list(iter_frames(path)))
    assert read.shape == frames.shape
    assert np.abs(read.astype(int) - frames).max() <= 1  # lossless WebP (RGB↔YUV-free)
    assert len(list(iter_frames(path, max_frames=2))) == 2


def test_a_video_given_as_an_image_is_named_a_video(tmp_path):
    from fadm_lightning.media.errors import ImageReadError
    from fadm_lightning.media.image import read_image

    path = tmp_path / "talk.mp4"
    write_mp4(path, _frames(t=2))
    with pytest.raises(ImageReadError, match=r"talk\.mp4: this is a video, not an image"):
        read_image(path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x00junk" * 50)
    with pytest.raises(ImageReadError, match=r"junk\.png: not an image in a format Pillow reads"):
        read_image(junk)
