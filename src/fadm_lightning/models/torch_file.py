"""Reading a user-named ``torch.save`` file, with one line of ours when it is something else.

Every weight loader of the package reads its file through :func:`load_torch_file`:
``torch.load(path, map_location="cpu", weights_only=True)``, never full unpickling. A file that
is not what the loader expects (an image, a config, an empty or truncated download, a Git LFS
pointer, another archive, a pickle of arbitrary Python objects) is refused with the loader's own
error class and a single line::

    <path>: not a readable <what>: it <what the file is>. Expected <what was expected>.

The first bytes are sniffed before torch reads anything; when torch fails anyway its error is
explained from the file, never repeated: torch's advice (re-run with ``weights_only=False``, file
an issue, the ``WeightsUnpickler`` details, pickle protocol notes) is not shown, and the error is
raised ``from None`` so that no chained traceback follows it.

This module is the bottom layer: it imports only torch and the standard library.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

_HEAD_BYTES = 512  # how much of a file is sniffed
# (offset, bytes, what the file is) of formats a weights file is mistaken for
_SIGNATURES = (
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
_MAX_PICKLE_OPS = 100_000  # opcodes read when listing the globals a pickle imports
# the first record of a legacy (torch < 1.6) torch.save file: its magic number, pickled
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _is_text(head: bytes) -> bool:
    """Printable UTF-8 (a config, a log, an HTML error page …); torch.save files start with
    ``b"PK\\x03\\x04"`` (zip) or ``0x80`` (legacy pickle), neither of which is text."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut at the end of the bytes read is text
        text = head[: err.start].decode("utf-8") if err.start >= len(head) - 3 else ""
    return bool(text) and all(c.isprintable() or c in "\t\n\r\f" for c in text)


def _sniff(path: Path, head: bytes) -> str | None:
    """What the file is, from its first bytes alone; None when it may be a torch file."""
    if not head:
        return "is an empty file (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer (the file itself was never downloaded)"
    if _is_text(head):
        if head.lstrip()[:14].lower().startswith((b"<!doctype html", b"<html")):
            return "is an HTML page (a download that returned a web page instead?)"
        return "is a text file"
    for offset, magic, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return f"is {kind}"
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "is a truncated or damaged zip archive (a copy cut short?)"
        if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
            return "is a zip archive but not a PyTorch file"
        return None
    # safetensors: an 8-byte little-endian header length, then the JSON header
    if head[8:10] == b'{"' and int.from_bytes(head[:8], "little") > 2:
        return "is a safetensors file, not a torch.save file"
    return None


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions a pickle would import, read from its opcodes (nothing runs)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        with path.open("rb") as stream:
            for count, (op, arg, _) in enumerate(pickletools.genops(stream)):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
                if len(found) >= 3 or count > _MAX_PICKLE_OPS:
                    break
    except Exception:  # not a pickle after all, or cut short: judged by the caller
        pass
    return found


def describe_not_a_torch_file(
    path: str | os.PathLike,
    expected: str,
    *,
    what: str = "checkpoint",
    error: BaseException | None = None,
) -> str | None:
    """One line saying what ``path`` is instead of the ``what`` a loader expects.

    Judged from the file's first bytes and, after ``torch.load`` failed, from ``error`` (whose
    text is never repeated). None when nothing is wrong with the bytes and there is no error to
    explain.

    Args:
        path: the file.
        expected: what should be there, a noun phrase (``"Expected "`` is put before it).
        what: what the loader reads, e.g. ``"FOMM checkpoint"``.
        error: the exception ``torch.load`` raised, if it was called.

    Returns:
        ``"<path>: not a readable <what>: it <what the file is>. Expected <expected>."`` or None.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            head = stream.read(_HEAD_BYTES)
    except OSError as err:
        kind = f"cannot be read ({err.strerror or type(err).__name__})"
    else:
        kind = _sniff(path, head)
        if kind is None and error is not None:
            unsafe = re.findall(r"GLOBAL ([\w.]+)", str(error))
            if not unsafe and head[:1] == b"\x80":
                # a pickle on which torch's reader stops before any global (protocol ≥ 4)
                unsafe = _pickled_globals(path)
            if unsafe:
                names = ", ".join(dict.fromkeys(unsafe))
                kind = f"holds Python objects that cannot be loaded safely ({names})"
            elif head[:2] == b"PK":
                kind = "is a truncated or damaged PyTorch file"
            elif head.startswith(_LEGACY_TORCH_MAGIC):
                kind = "is a truncated or damaged PyTorch file (legacy format)"
            elif head[:1] == b"\x80":
                kind = "is a Python pickle that torch cannot read (not a PyTorch file, or damaged)"
            else:
                kind = f"is not a PyTorch file ({type(error).__name__} while reading it)"
    if kind is None:
        return None
    return f"{path}: not a readable {what}: it {kind}. Expected {expected.rstrip('. ')}."


def load_torch_file(
    path: str | os.PathLike,
    *,
    what: str,
    expected: str,
    error: type[Exception],
) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one line of ours on failure.

    Args:
        path: the file.
        what: what it should be, for the message (``"FOMM checkpoint"``, ``"VGG-19 weights file"``).
        expected: the file that belongs there, a noun phrase (see :func:`describe_not_a_torch_file`).
        error: the loader's exception class, raised with the one line.

    Returns:
        Whatever the file holds (tensors on the CPU); checking its layout is the caller's job.

    Raises:
        FileNotFoundError: ``path`` is not a file (the message names it and what goes there).
        error: the file is not a torch file that loads with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}. Expected {expected.rstrip('. ')}.")
    # images, videos, text, empty files, other archives: said before torch reads a byte
    reason = describe_not_a_torch_file(path, expected, what=what)
    if reason is not None:
        raise error(reason) from None
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol advice on foreign pickles
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on bad bytes
        reason = describe_not_a_torch_file(path, expected, what=what, error=err)
    raise error(reason) from None
