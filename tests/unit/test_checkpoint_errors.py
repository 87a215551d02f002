"""A file that is not a training checkpoint, passed as ``ckpt=``, gets one line of ours: the file,
what it is, and what was expected; never torch's advice to re-run with ``weights_only=False`` or
to file an issue with PyTorch."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fadm_lightning.checkpoints import CheckpointError, _read, load_pipeline, read_run_config

EXPECTED = "a checkpoint written by `python -m fadm_lightning.train`"


class Opaque:
    """A class of this test module: a pickle of it needs a global no safe loader allows."""

    def __init__(self) -> None:
        self.value = 3


def png(path: Path) -> Path:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path, format="PNG")
    return path


def jpeg(path: Path) -> Path:
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path, format="JPEG")
    return path


def mp4(path: Path) -> Path:
    from fadm_lightning.data.video import write_mp4

    write_mp4(path, np.zeros((2, 16, 16, 3), np.uint8), fps=25)
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def text(path: Path) -> Path:
    path.write_text("model:\n  name: fadm\n  unet: paper  # a config, not weights\n")
    return path


def zip_archive(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a torch file")
    return path


def torch_file_with_global(path: Path) -> Path:  # a checkpoint saved with a Python object
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Opaque()}, path)
    return path


def legacy_torch_file_with_global(path: Path) -> Path:  # torch < 1.6 format
    torch.save({"state_dict": {}, "extra": Opaque()}, path, _use_new_zipfile_serialization=False)
    return path


def pickle_with_global(path: Path) -> Path:  # pickle.dump of an object (protocol 5)
    path.write_bytes(pickle.dumps({"state_dict": {}, "extra": Opaque()}))
    return path


def pickle_with_function(path: Path) -> Path:  # the classic malicious pickle, protocol 2
    path.write_bytes(pickle.dumps({"state_dict": os.system}, protocol=2))
    return path


def truncated_checkpoint(path: Path) -> Path:
    whole = path.with_name("whole.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(64)}}, whole)
    path.write_bytes(whole.read_bytes()[:300])
    return path


def fake_png(path: Path) -> Path:  # only the signature's first bytes
    path.write_bytes(b"\x89PNG not really")
    return path


def plain_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"a": 1, "b": [1.0, 2.0]}))
    return path


CASES = {
    # maker, file name, what the message must say the file is
    "png": (png, "frame.png", "is a PNG image"),
    "png_named_ckpt": (png, "last.ckpt", "is a PNG image"),
    "png_signature": (fake_png, "garbage.png", "is a PNG image"),
    "jpeg": (jpeg, "face.jpg", "is a JPEG image"),
    "mp4": (mp4, "driving.mp4", "is an MP4/QuickTime video"),
    "empty": (empty, "last.ckpt", "is an empty file (0 bytes)"),
    "text": (text, "config.yaml", "is a text file"),
    "zip": (zip_archive, "weights.zip", "is a zip archive but not a PyTorch file"),
    "torch_global": (
        torch_file_with_global,
        "other.ckpt",
        "holds Python objects that cannot be loaded safely",
    ),
    "legacy_global": (
        legacy_torch_file_with_global,
        "old.pth",
        "holds Python objects that cannot be loaded safely",
    ),
    "pickle_global": (
        pickle_with_global,
        "obj.pkl",
        "holds Python objects that cannot be loaded safely",
    ),
    "pickle_function": (
        pickle_with_function,
        "evil.pkl",
        f"holds Python objects that cannot be loaded safely ({os.system.__module__}.system",
    ),
    "truncated": (truncated_checkpoint, "cut.ckpt", "is a truncated or damaged zip archive"),
    "plain_pickle": (plain_pickle, "data.pkl", "is a Python pickle that torch cannot read"),
}


def _check_message(message: str, path: Path, what: str) -> None:
    assert message.startswith(f"{path}: "), message
    assert f": not a readable checkpoint: it {what}" in message, message
    assert f"Expected {EXPECTED}" in message, message
    assert "\n" not in message, message  # one line
    for advice in ("weights_only", "Weights only", "file an issue", "arbitrary code"):
        assert advice not in message, message


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_that_is_not_a_checkpoint_gets_one_line_of_ours(tmp_path, case):
    make, name, what = CASES[case]
    path = make(tmp_path / name)
    with pytest.raises(CheckpointError) as caught:
        _read(path)
    _check_message(str(caught.value), path, what)
    assert caught.value.__cause__ is None  # torch's error (and its advice) is not chained
    if case in ("torch_global", "legacy_global", "pickle_global"):
        assert f"{__name__}.Opaque" in str(caught.value)  # names the objects it would import


def test_no_torch_warning_reaches_the_user(tmp_path, recwarn):
    with pytest.raises(CheckpointError):
        _read(pickle_with_global(tmp_path / "obj.pkl"))  # protocol 5: torch warns on it
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_a_torch_file_without_state_dict_is_named_as_such(tmp_path):
    path = tmp_path / "vox-cpk.pth.tar"  # e.g. a FOMM checkpoint passed as ckpt=
    torch.save({"generator": {}, "kp_detector": {}, "epoch": 3}, path)
    with pytest.raises(CheckpointError) as caught:
        _read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "'generator', 'kp_detector'" in message
    assert "not a training checkpoint: it is a PyTorch file holding a dict of" in message
    assert "without a 'state_dict' entry" in message and EXPECTED in message
    assert "\n" not in message and "weights_only" not in message


def test_the_public_entry_points_give_the_same_line(tmp_path, capsys):
    from fadm_lightning.inference.cli import run_command
    from fadm_lightning.inference.model import load_refiner

    path = png(tmp_path / "frame.png")
    for read in (load_pipeline, read_run_config, lambda p: load_refiner(ckpt=p)):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        _check_message(str(caught.value), path, "is a PNG image")
    # what animate / rectify print: one line on stderr, exit status 1
    assert run_command("animate", lambda: load_refiner(ckpt=path) and 0) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("animate: error: ")
    _check_message(err.removeprefix("animate: error: ").strip(), path, "is a PNG image")


def test_a_real_checkpoint_still_reads(tmp_path):
    path = tmp_path / "last.ckpt"
    config = {"data": {"image_size": 32}, "model": {}, "coarse": {}, "attributes": {}}
    torch.save({"state_dict": {"unet.w": torch.ones(2)}, "fadm_config": config}, path)
    checkpoint = _read(path)
    assert torch.equal(checkpoint["state_dict"]["unet.w"], torch.ones(2))
    assert read_run_config(path) == config
