"""Malformed and unusual media files for the input commands (issue 25, "fuzzed media").

:class:`FuzzMedia` lists a few hundred cases, deterministic from a seed, and writes the file of a
case when asked (:meth:`FuzzMedia.make`), so a sample costs only what it uses. A case is a base
file (a portrait or a clip made from the shared fixtures, or an unusual format: CMYK JPEG,
10-bit, grayscale, rotated, variable frame rate, a decompression bomb, …) or a base file with a
mutation (truncated at an offset, bytes overwritten, junk before or after, a wrong extension,
zero bytes). Everything is built here with numpy, Pillow and PyAV (no ffmpeg binary).

``python -m tests.fuzz_media OUT [--seed 0]`` writes every case into ``OUT`` and lists them.
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "voxceleb_sample"
CLIP_FRAMES = 6  # frames of the base clips (taken from the fixture clip)


@dataclass(frozen=True)
class Case:
    """One fuzz input: ``name`` (unique, also the file name's stem), ``category`` (the group of
    the docs table), ``role`` (what the file was made to be: ``image`` or ``video``), ``suffix``
    (of the file name), ``note`` (what it is)."""

    name: str
    category: str
    role: str
    suffix: str
    note: str
    build: Callable[[FuzzMedia], bytes]  # the file's bytes

    @property
    def file_name(self) -> str:
        return f"{self.name}{self.suffix}"


# ------------------------------------------------------------------------------ small encoders
def _png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _image_bytes(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int, rows_of_data: int = 4) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` RGB (only a few rows of data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * min(width, 4096))
    data = b"".join(compressor.compress(row) for _ in range(rows_of_data)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    )


def png_zero_bomb(width: int, height: int) -> bytes:
    """A real decompression bomb: ``width``×``height`` black RGB, all of it compressed (about a
    thousandth of its decoded size)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    block = row * 64
    parts = [compressor.compress(block) for _ in range(height // 64)]
    parts.append(compressor.compress(row * (height % 64)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose SOF header is patched to claim ``width``×``height``."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at >= 0:
            struct.pack_into(">HH", data, at + 5, height, width)
            return bytes(data)
    raise ValueError("no SOF marker")


def avi_claiming(avi: bytes, width: int, height: int) -> bytes:
    """An MJPEG AVI whose headers (avih, strf, every frame's SOF) claim ``width``×``height``."""
    data = bytearray(avi)
    at = data.find(b"avih") + 8
    struct.pack_into("<II", data, at + 32, width, height)
    at = data.find(b"strf") + 8
    struct.pack_into("<ii", data, at + 4, width, height)
    at = 0
    while (at := data.find(b"\xff\xc0", at)) >= 0:
        struct.pack_into(">HH", data, at + 5, height, width)
        at += 2
    return bytes(data)


def encode_video(
    path: Path,
    frames: np.ndarray,
    fps: Fraction | int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    audio: bool = False,
    rotation: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """uint8 T×H×W×3 frames → a video file (PyAV), optionally with an AAC tone, a display
    rotation, or explicit timestamps (``pts`` in ``time_base``: a variable frame rate)."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if codec in ("libx264", "libx265"):
            stream.options = {"threads": "1", "preset": "ultrafast", **(options or {})}
            if codec == "libx265":
                stream.options = {**stream.options, "x265-params": "log-level=none:pools=1"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            if time_base is not None:
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if sound is not None:
            samples = int(16000 * len(frames) / float(fps))
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)
            chunk = av.AudioFrame.from_ndarray(
                tone[None].astype(np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 16000, 0
            for packet in [*sound.encode(chunk), *sound.encode(None)]:
                out.mux(packet)


def audio_only(path: Path, container: str | None = None) -> None:
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


# ------------------------------------------------------------------------------ the cases
class FuzzMedia:
    """The cases of ``seed`` (:attr:`cases`) and their files under ``folder`` (:meth:`make`)."""

    def __init__(self, folder: str | Path, seed: int = 0, fixtures: Path = FIXTURES) -> None:
        self.folder = Path(folder)
        self.seed = seed
        self.fixtures = Path(fixtures)
        self._bases = self.folder / ".bases"  # base files the mutations start from

    # ---------------------------------------------------------------- material
    @cached_property
    def face(self) -> np.ndarray:  # 256×256 RGB
        return np.asarray(Image.open(self.fixtures / "source.png").convert("RGB"))

    @cached_property
    def other_face(self) -> np.ndarray:
        return np.asarray(Image.open(self.fixtures / "driving.png").convert("RGB"))

    @cached_property
    def clip(self) -> np.ndarray:  # CLIP_FRAMES×256×256×3
        import av

        frames = []
        with av.open(str(self.fixtures / "driving.mp4")) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == CLIP_FRAMES:
                    break
        return np.stack(frames)

    def _rng(self, name: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def base_bytes(self, name: str) -> bytes:
        """The bytes of base case ``name`` (built once, kept under ``.bases``)."""
        path = self._bases / name
        if not path.is_file():
            self._bases.mkdir(parents=True, exist_ok=True)
            tmp = self._bases / f".{name}.tmp"
            tmp.write_bytes(self.by_name[name].build(self))
            tmp.rename(path)
        return path.read_bytes()

    def make(self, case: Case) -> Path:
        """Write the file of ``case`` into ``folder/<case name>/`` (its own folder: a command
        can be run on that folder) and return its path."""
        target = self.folder / case.name / case.file_name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            is_base = case.name in self._base_names  # mutations start from its bytes: kept
            data = self.base_bytes(case.name) if is_base else case.build(self)
            target.write_bytes(data)
        return target

    @cached_property
    def by_name(self) -> dict[str, Case]:
        return {case.name: case for case in self.cases}

    # ---------------------------------------------------------------- base files
    def _encoded(self, name: str, suffix: str, frames: np.ndarray, **kwargs) -> bytes:
        self._bases.mkdir(parents=True, exist_ok=True)
        tmp = self._bases / f".{name}.tmp{suffix}"
        try:
            encode_video(tmp, frames, **kwargs)
            return tmp.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)

    def _bases_list(self) -> list[Case]:
        def img(name, category, note, build, suffix=".png"):
            return Case(name, category, "image", suffix, note, build)

        def vid(name, category, note, suffix=".mp4", frames_of=None, **kwargs):
            def build(fm: FuzzMedia) -> bytes:
                frames = fm.clip if frames_of is None else frames_of(fm)
                return fm._encoded(name, suffix, frames, **kwargs)

            return Case(name, category, "video", suffix, note, build)

        pil = lambda fm: Image.fromarray(fm.face)  # noqa: E731

        def canvas(fm, width, height, placements, fill=90):
            out = np.full((height, width, 3), fill, np.uint8)
            for face, left, top in placements:
                h, w = face.shape[:2]
                x0, y0 = max(left, 0), max(top, 0)
                x1, y1 = min(left + w, width), min(top + h, height)
                out[y0:y1, x0:x1] = face[y0 - top : y1 - top, x0 - left : x1 - left]
            return out

        def clip_canvas(fm, width, height, offsets, fill=90):
            return np.stack(
                [
                    canvas(fm, width, height, [(frame, left, top) for left, top in offsets], fill)
                    for frame in fm.clip
                ]
            )

        def large_png(fm):
            face = Image.fromarray(fm.face).resize((4000, 4000), Image.Resampling.BILINEAR)
            big = Image.new("RGB", (8000, 8000), (90, 90, 90))
            big.paste(face, (2000, 2000))
            return _png_bytes(big, compress_level=1)

        def exif_rotated(fm):
            stored = Image.fromarray(np.rot90(fm.face, k=1))  # turned left
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90° clockwise to display"
            return _image_bytes(stored, "JPEG", quality=92, exif=exif.tobytes())

        def animated(fmt, **params):
            def build(fm):
                frames = [Image.fromarray(f) for f in (fm.face, fm.other_face, fm.face)]
                return _image_bytes(
                    frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, **params
                )

            return build

        def rgba(fm):
            out = np.zeros((301, 333, 4), np.uint8)
            out[20:276, 40:296, :3] = fm.face
            out[20:276, 40:296, 3] = 255
            return _png_bytes(Image.fromarray(out, "RGBA"))

        def gray16(fm):
            gray = np.asarray(Image.fromarray(fm.face).convert("L")).astype(np.uint16) * 257
            return _png_bytes(Image.fromarray(gray))

        def noise(fm):
            rng = fm._rng("noise")
            return _png_bytes(Image.fromarray(rng.integers(0, 255, (240, 200, 3), np.uint8)))

        def vfr_pts(n):
            return [0, 40, 60, 200, 210, 500, 520, 900][:n]

        def resolution_change(fm):
            parts = []
            for size in (256, 128):
                frames = np.stack(
                    [np.asarray(Image.fromarray(f).resize((size, size))) for f in fm.clip[:3]]
                )
                parts.append(fm._encoded(f"res{size}", ".h264", frames, container="h264"))
            return b"".join(parts)

        def empty_video(fm):
            import av

            fm._bases.mkdir(parents=True, exist_ok=True)
            tmp = fm._bases / ".empty.tmp.mp4"
            with av.open(str(tmp), "w") as out:
                stream = out.add_stream("libx264", rate=25)
                stream.width = stream.height = 64
                stream.pix_fmt = "yuv420p"
                out.start_encoding()  # the header, then no packet
            data = tmp.read_bytes()
            tmp.unlink()
            return data

        def audio_only_file(fm):
            fm._bases.mkdir(parents=True, exist_ok=True)
            tmp = fm._bases / ".audio.tmp.mp4"
            audio_only(tmp)
            data = tmp.read_bytes()
            tmp.unlink()
            return data

        def mjpeg_avi(fm, frames=None):
            frames = fm.clip if frames is None else frames
            return fm._encoded("mjpeg", ".avi", frames, codec="mjpeg", pix_fmt="yuvj420p")

        def long_clip(fm):  # 90 frames at 1 fps: 90 s (over the app's 60 s)
            small = np.stack([np.asarray(Image.fromarray(fm.clip[0]).resize((64, 64)))] * 90)
            return small

        face_edge = lambda fm: canvas(fm, 320, 300, [(fm.face, -110, 30)])  # noqa: E731
        bases = [
            # images: formats and modes
            img(
                "png_face",
                "image formats",
                "the fixture portrait, 256×256 RGB PNG",
                lambda fm: _png_bytes(pil(fm)),
            ),
            img(
                "jpeg_face",
                "image formats",
                "baseline JPEG",
                lambda fm: _image_bytes(pil(fm), "JPEG", quality=90),
                ".jpg",
            ),
            img(
                "jpeg_progressive",
                "image formats",
                "progressive JPEG",
                lambda fm: _image_bytes(pil(fm), "JPEG", quality=85, progressive=True),
                ".jpg",
            ),
            img(
                "jpeg_cmyk",
                "image formats",
                "CMYK JPEG",
                lambda fm: _image_bytes(pil(fm).convert("CMYK"), "JPEG", quality=90),
                ".jpg",
            ),
            img(
                "png_gray",
                "image formats",
                "8-bit grayscale PNG",
                lambda fm: _png_bytes(pil(fm).convert("L")),
            ),
            img("png_gray16", "image formats", "16-bit grayscale PNG", gray16),
            img("png_rgba", "image formats", "RGBA PNG (face on a transparent canvas)", rgba),
            img(
                "png_palette",
                "image formats",
                "palette PNG",
                lambda fm: _png_bytes(pil(fm).convert("P", palette=Image.Palette.ADAPTIVE)),
            ),
            img(
                "png_1bit",
                "image formats",
                "1-bit (bilevel) PNG",
                lambda fm: _png_bytes(pil(fm).convert("1")),
            ),
            img(
                "bmp_face", "image formats", "BMP", lambda fm: _image_bytes(pil(fm), "BMP"), ".bmp"
            ),
            img(
                "tiff_face",
                "image formats",
                "TIFF (LZW)",
                lambda fm: _image_bytes(pil(fm), "TIFF", compression="tiff_lzw"),
                ".tiff",
            ),
            img(
                "webp_face",
                "image formats",
                "still WebP",
                lambda fm: _image_bytes(pil(fm), "WEBP", quality=90),
                ".webp",
            ),
            img(
                "jpeg_exif_rotated",
                "image formats",
                "JPEG stored sideways with EXIF orientation 6",
                exif_rotated,
                ".jpg",
            ),
            img(
                "gif_animated",
                "animated images",
                "animated GIF (3 frames) as a portrait",
                animated("GIF", loop=0),
                ".gif",
            ),
            img(
                "webp_animated",
                "animated images",
                "animated WebP (3 frames) as a portrait",
                animated("WEBP", loop=0),
                ".webp",
            ),
            img(
                "apng_animated",
                "animated images",
                "animated PNG (3 frames) as a portrait",
                animated("PNG"),
            ),
            # images: sizes and bombs
            img(
                "png_1x1",
                "image sizes",
                "1×1 PNG",
                lambda fm: _png_bytes(Image.new("RGB", (1, 1), (200, 150, 120))),
            ),
            img(
                "png_3x500",
                "image sizes",
                "3×500 PNG (extreme aspect ratio)",
                lambda fm: _png_bytes(Image.new("RGB", (3, 500), (200, 150, 120))),
            ),
            img("png_8000", "image sizes", "8000×8000 PNG with a 4000 px face", large_png),
            img(
                "png_bomb_claims_100000",
                "decompression bombs",
                "tiny PNG whose header claims 100000×100000",
                lambda fm: png_claiming(100000, 100000),
            ),
            img(
                "png_bomb_claims_12000",
                "decompression bombs",
                "tiny PNG whose header claims 12000×12000 (under Pillow's error limit, over its warning limit)",
                lambda fm: png_claiming(12000, 12000),
            ),
            img(
                "png_bomb_zeros_12000",
                "decompression bombs",
                "12000×12000 black PNG, 0.4 MB compressed, 432 MB decoded",
                lambda fm: png_zero_bomb(12000, 12000),
            ),
            img(
                "jpeg_bomb_claims_65000",
                "decompression bombs",
                "JPEG whose SOF claims 65000×65000",
                lambda fm: jpeg_claiming(_image_bytes(pil(fm), "JPEG"), 65000, 65000),
                ".jpg",
            ),
            # images: faces
            img("png_no_face", "faces", "random noise, no face", noise),
            img(
                "png_flat",
                "faces",
                "a flat grey image, no face",
                lambda fm: _png_bytes(Image.new("RGB", (256, 256), (128, 128, 128))),
            ),
            img(
                "png_two_faces",
                "faces",
                "two faces side by side",
                lambda fm: _png_bytes(
                    Image.fromarray(
                        canvas(fm, 540, 300, [(fm.face, 10, 20), (fm.other_face, 276, 30)])
                    )
                ),
            ),
            img(
                "png_face_edge",
                "faces",
                "a face cut by the left edge",
                lambda fm: _png_bytes(Image.fromarray(face_edge(fm))),
            ),
            img(
                "png_face_tiny",
                "faces",
                "a 40 px face in a 400×400 image",
                lambda fm: _png_bytes(
                    Image.fromarray(
                        canvas(
                            fm,
                            400,
                            400,
                            [(np.asarray(Image.fromarray(fm.face).resize((40, 40))), 180, 180)],
                        )
                    )
                ),
            ),
            # videos: containers, codecs and pixel formats
            vid("mp4_h264_aac", "video formats", "H.264 yuv420p mp4 with AAC audio", audio=True),
            vid(
                "mp4_h264_yuv444", "video formats", "H.264 yuv444p (High 4:4:4)", pix_fmt="yuv444p"
            ),
            vid(
                "mp4_h264_10bit",
                "video formats",
                "H.264 10-bit (yuv420p10le)",
                pix_fmt="yuv420p10le",
            ),
            vid(
                "mkv_hevc_10bit",
                "video formats",
                "HEVC 10-bit in Matroska",
                ".mkv",
                codec="libx265",
                pix_fmt="yuv420p10le",
            ),
            vid("mp4_h264_gray", "video formats", "H.264 grayscale (gray pix_fmt)", pix_fmt="gray"),
            vid(
                "mkv_ffv1_16bit",
                "video formats",
                "FFV1 lossless 16-bit (yuv444p16le) in Matroska",
                ".mkv",
                codec="ffv1",
                pix_fmt="yuv444p16le",
            ),
            vid(
                "webm_vp9",
                "video formats",
                "VP9 WebM",
                ".webm",
                codec="libvpx-vp9",
                pix_fmt="yuv420p",
            ),
            vid(
                "mov_mpeg4",
                "video formats",
                "MPEG-4 part 2 in QuickTime",
                ".mov",
                codec="mpeg4",
                pix_fmt="yuv420p",
            ),
            Case("avi_mjpeg", "video formats", "video", ".avi", "Motion JPEG AVI", mjpeg_avi),
            vid(
                "gif_video",
                "video formats",
                "animated GIF as a video",
                ".gif",
                codec="gif",
                pix_fmt="rgb8",
            ),
            vid("mp4_1frame", "video timing", "a 1-frame video", frames_of=lambda fm: fm.clip[:1]),
            vid(
                "mp4_vfr",
                "video timing",
                "variable frame rate (irregular timestamps, 1/1000 time base)",
                pts=vfr_pts(CLIP_FRAMES),
                time_base=Fraction(1, 1000),
            ),
            vid("mp4_240fps", "video timing", "240 fps", fps=240),
            vid(
                "mp4_1fps_90s",
                "video timing",
                "90 frames at 1 fps: 90 s, 64×64, no face",
                fps=1,
                frames_of=long_clip,
            ),
            vid("mp4_ntsc", "video timing", "30000/1001 fps", fps=Fraction(30000, 1001)),
            Case(
                "mp4_no_frames",
                "video timing",
                "video",
                ".mp4",
                "a video stream without frames",
                empty_video,
            ),
            Case(
                "mp4_audio_only",
                "video timing",
                "video",
                ".mp4",
                "audio-only mp4 (AAC)",
                audio_only_file,
            ),
            Case(
                "h264_resolution_change",
                "video sizes",
                "video",
                ".mp4",
                "raw H.264 whose size changes mid-stream (256 → 128) named .mp4",
                resolution_change,
            ),
            vid(
                "mp4_rotated_90",
                "rotation",
                "stored sideways, display matrix 90°",
                rotation=90,
                frames_of=lambda fm: np.stack([np.rot90(f, k=-1) for f in fm.clip]),
            ),
            vid(
                "mp4_rotated_270",
                "rotation",
                "stored sideways, display matrix −90°",
                rotation=-90,
                frames_of=lambda fm: np.stack([np.rot90(f, k=1) for f in fm.clip]),
            ),
            vid(
                "mp4_rotated_180",
                "rotation",
                "stored upside down, display matrix 180°",
                rotation=180,
                frames_of=lambda fm: np.stack([np.rot90(f, k=2) for f in fm.clip]),
            ),
            vid(
                "mkv_odd_size",
                "video sizes",
                "odd-sized 257×255 frames (FFV1 in Matroska)",
                ".mkv",
                codec="ffv1",
                pix_fmt="yuv444p",
                frames_of=lambda fm: clip_canvas(fm, 257, 255, [(0, 0)]),
            ),
            vid(
                "mp4_16x16",
                "video sizes",
                "16×16 frames",
                frames_of=lambda fm: np.stack(
                    [np.asarray(Image.fromarray(f).resize((16, 16))) for f in fm.clip]
                ),
            ),
            Case(
                "avi_claims_16000",
                "decompression bombs",
                "video",
                ".avi",
                "MJPEG AVI whose headers claim 16000×16000 frames",
                lambda fm: avi_claiming(mjpeg_avi(fm, fm.clip[:2, :64, :64]), 16000, 16000),
            ),
            vid(
                "mp4_no_face",
                "faces",
                "a flat grey clip",
                frames_of=lambda fm: np.full((CLIP_FRAMES, 128, 128, 3), 60, np.uint8),
            ),
            vid(
                "mp4_two_faces",
                "faces",
                "two faces side by side",
                frames_of=lambda fm: np.stack(
                    [canvas(fm, 540, 300, [(f, 10, 20), (fm.other_face, 276, 30)]) for f in fm.clip]
                ),
            ),
            vid(
                "mp4_face_edge",
                "faces",
                "the face cut by the left edge",
                frames_of=lambda fm: clip_canvas(fm, 320, 300, [(-110, 30)]),
            ),
        ]
        return bases

    # ---------------------------------------------------------------- mutations
    @cached_property
    def cases(self) -> list[Case]:
        bases = self._bases_list()
        by_name = {case.name: case for case in bases}
        self._base_names = set(by_name)
        cases = list(bases)

        def mutated(base: str, name: str, category: str, note: str, fn, suffix=None, role=None):
            source = by_name[base]

            def build(fm: FuzzMedia) -> bytes:
                return fn(fm, fm.base_bytes(base), name)

            cases.append(
                Case(name, category, role or source.role, suffix or source.suffix, note, build)
            )

        # truncated at many offsets: a few fixed (inside the header) and random ones
        truncatable = [
            "png_face", "jpeg_face", "jpeg_progressive", "webp_face", "gif_animated", "tiff_face",
            "mp4_h264_aac", "mp4_h264_10bit", "webm_vp9", "avi_mjpeg", "mkv_hevc_10bit", "mp4_rotated_90",
        ]  # fmt: skip
        for base in truncatable:
            for fixed in (1, 8, 33, 100):
                mutated(
                    base, f"{base}__cut_{fixed}", "truncated", f"{base}: first {fixed} bytes",
                    lambda fm, data, name, n=fixed: data[:n],
                )  # fmt: skip
            for k in range(6):

                def cut(fm, data, name):
                    at = int(fm._rng(name).integers(100, max(len(data) - 1, 101)))
                    return data[:at]

                mutated(
                    base, f"{base}__cut_r{k}", "truncated", f"{base}: cut at a random offset", cut
                )
        # bytes overwritten inside the file
        for base in [
            "png_face",
            "jpeg_face",
            "mp4_h264_aac",
            "webm_vp9",
            "avi_mjpeg",
            "gif_animated",
        ]:
            for k in range(4):

                def corrupt(fm, data, name):
                    rng = fm._rng(name)
                    out = bytearray(data)
                    for _ in range(4):
                        at = int(rng.integers(len(out) // 8, len(out) - 16))
                        out[at : at + 16] = rng.integers(0, 256, 16, np.uint8).tobytes()
                    return bytes(out)

                mutated(
                    base,
                    f"{base}__corrupt_{k}",
                    "corrupted",
                    f"{base}: 4×16 random bytes overwritten",
                    corrupt,
                )
        # junk before or after
        for base in ["png_face", "jpeg_face", "mp4_h264_aac", "webm_vp9"]:
            mutated(base, f"{base}__junk_after", "junk", f"{base} + 4 KiB of random bytes after",
                    lambda fm, data, name: data + fm._rng(name).bytes(4096))  # fmt: skip
            mutated(base, f"{base}__junk_before", "junk", f"1 KiB of random bytes + {base}",
                    lambda fm, data, name: fm._rng(name).bytes(1024) + data)  # fmt: skip
        # zero bytes
        for suffix, role in [(".png", "image"), (".jpg", "image"), (".webp", "image"),
                             (".gif", "image"), (".mp4", "video"), (".mov", "video"),
                             (".mkv", "video"), (".avi", "video"), (".webm", "video")]:  # fmt: skip
            cases.append(
                Case(
                    f"empty{suffix.replace('.', '_')}",
                    "zero bytes",
                    role,
                    suffix,
                    f"0 bytes named {suffix}",
                    lambda fm: b"",
                )  # fmt: skip
            )
        # a wrong extension (the content of one format under the name of another)
        wrong = [
            ("jpeg_face", ".png", None), ("png_face", ".jpg", None), ("webp_face", ".png", None),
            ("png_face", ".mp4", "video"), ("mp4_h264_aac", ".png", "image"),
            ("mp4_h264_aac", ".mov", None), ("webm_vp9", ".mp4", None), ("mkv_hevc_10bit", ".mp4", None),
            ("avi_mjpeg", ".mkv", None), ("mp4_audio_only", ".m4a", None), ("gif_video", ".mp4", None),
        ]  # fmt: skip
        for base, suffix, role in wrong:
            mutated(base, f"{base}__as_{suffix[1:]}", "wrong extension", f"{base} named {suffix}",
                    lambda fm, data, name: data, suffix, role)  # fmt: skip
        for suffix, role in [
            (".png", "image"),
            (".jpg", "image"),
            (".mp4", "video"),
            (".mov", "video"),
        ]:
            cases.append(
                Case(
                    f"text{suffix.replace('.', '_')}",
                    "wrong extension",
                    role,
                    suffix,
                    f"a text file named {suffix}",
                    lambda fm: b"hello, this is not media\n" * 20,
                )  # fmt: skip
            )
            cases.append(
                Case(
                    f"html{suffix.replace('.', '_')}",
                    "wrong extension",
                    role,
                    suffix,
                    f"an HTML error page named {suffix}",
                    lambda fm: b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
                )  # fmt: skip
            )
        names = [case.name for case in cases]
        assert len(names) == len(set(names)), "case names must be unique"
        return cases

    def sample(self, count: int) -> list[Case]:
        """``count`` cases spread over the categories (round robin over a seeded shuffle)."""
        rng = np.random.default_rng(self.seed)
        groups: dict[str, list[Case]] = {}
        for case in self.cases:
            groups.setdefault(case.category, []).append(case)
        for group in groups.values():
            rng.shuffle(group)
        chosen: list[Case] = []
        while len(chosen) < count and any(groups.values()):
            for group in groups.values():
                if group and len(chosen) < count:
                    chosen.append(group.pop())
        return chosen


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fuzz = FuzzMedia(args.folder, args.seed)
    for case in fuzz.cases:
        path = fuzz.make(case)
        print(f"{case.category:20s} {path.stat().st_size:>10d}  {path}  ({case.note})")
    print(f"{len(fuzz.cases)} cases in {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
