"""A file that is not a training checkpoint, passed as ``ckpt=``, gets one line of ours: the file,
what it is, and what was expected; never torch's advice to re-run with ``weights_only=False`` or
to file an issue with PyTorch."""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import re
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
    from fadm_lightning.media.video import write_mp4

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


# --------------------------------------------------------------- every weight loader of the package


class ForeignDict(collections.OrderedDict):
    """A dict subclass of this test module: a state dict saved with it needs a foreign global."""


def yaml_text(path: Path) -> Path:
    path.write_text("coarse:\n  checkpoint: /weights/vox-cpk.pth.tar\n")
    return path


def lfs_pointer(path: Path) -> Path:
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a2a3f0e1c9b8a7d6e5f4c3b2a190817263544536271809a8b7c6d5e4f3a2b\n"
        "size 727411518\n"
    )
    return path


def torch_file_with_foreign_dict(path: Path) -> Path:
    torch.save({"generator": ForeignDict(w=torch.zeros(2))}, path)
    return path


def pickle_of_namespace(path: Path) -> Path:
    path.write_bytes(pickle.dumps(argparse.Namespace(lr=1e-4, state_dict={})))
    return path


def torch_file_cut_in_half(path: Path) -> Path:
    torch.save({"generator": {"w": torch.zeros(256)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def legacy_torch_file_cut_in_half(path: Path) -> Path:
    torch.save({"generator": {"w": torch.zeros(256)}}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def html_page(path: Path) -> Path:  # what a file host sends instead of a large file
    path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")
    return path


BAD_FILES = {
    # maker, what the message must say the file is
    "png": (png, "is a PNG image"),
    "yaml": (yaml_text, "is a text file"),
    "empty": (empty, "is an empty file (0 bytes)"),
    "zip": (zip_archive, "is a zip archive but not a PyTorch file"),
    "lfs": (lfs_pointer, "is a Git LFS pointer"),
    "html": (html_page, "is an HTML page"),
    "foreign_dict": (
        torch_file_with_foreign_dict,
        f"holds Python objects that cannot be loaded safely ({__name__}.ForeignDict",
    ),
    "namespace": (
        pickle_of_namespace,
        "holds Python objects that cannot be loaded safely (argparse.Namespace",
    ),
    "half": (torch_file_cut_in_half, "is a truncated or damaged zip archive"),
    "legacy_half": (legacy_torch_file_cut_in_half, "is a truncated or damaged PyTorch file"),
}


def _loaders() -> dict:
    """name → (read(path), error class, what, expected) for every loader of a weights file."""
    from torch import nn

    from fadm_lightning.metrics.lpips_fid import build_lpips_alex, load_pytorch_fid_weights
    from fadm_lightning.metrics.perceptual import build_stlpips_alex
    from fadm_lightning.models.attributes import deca
    from fadm_lightning.models.coarse.facevid import checkpoint as facevid
    from fadm_lightning.models.coarse.fomm import checkpoint as fomm
    from fadm_lightning.models.coarse.fomm.training import (
        VGG19_EXPECTED,
        VGG19Features,
        VGGWeightsError,
    )
    from fadm_lightning.models.errors import MetricWeightsError
    from fadm_lightning.models.face.weights import WeightsFileError, load_weights
    from fadm_lightning.models.official import checkpoint as official

    one = nn.Identity
    return {
        "training": (_read, CheckpointError, "checkpoint", EXPECTED),
        "fomm": (
            lambda p: fomm.load_fomm_checkpoint(p, one(), one()),
            fomm.FOMMCheckpointError,
            "FOMM checkpoint",
            fomm.EXPECTED_CHECKPOINT,
        ),
        "facevid": (
            lambda p: facevid.load_facevid_checkpoint(p, one(), one(), one()),
            facevid.FacevidCheckpointError,
            "face-vid2vid checkpoint",
            facevid.EXPECTED_CHECKPOINT,
        ),
        "diffusion": (
            lambda p: official.load_diffusion_checkpoint(p, one()),
            official.DiffusionCheckpointError,
            "FADM denoiser checkpoint",
            official.EXPECTED_CHECKPOINT,
        ),
        "deca": (
            deca.load_flame_encoder_state,
            deca.CheckpointError,
            "DECA checkpoint",
            deca.CHECKPOINT_DESCRIPTION.rstrip("."),
        ),
        "face": (
            lambda p: load_weights(nn.Linear(2, 2), p, "tiny linear"),
            WeightsFileError,
            "PyTorch weights file",
            "tiny linear weights, a torch.save'd state dict",
        ),
        "vgg": (VGG19Features, VGGWeightsError, "VGG-19 weights file", VGG19_EXPECTED),
        "lpips_alexnet": (
            build_lpips_alex,
            MetricWeightsError,
            "PyTorch weights file",
            "torchvision's ImageNet AlexNet state dict",
        ),
        "fid_inception": (
            lambda p: load_pytorch_fid_weights(None, p),  # fails before the network is used
            MetricWeightsError,
            "PyTorch weights file",
            "pytorch-fid's (or torch-fidelity's) FID Inception-v3 state dict",
        ),
        "stlpips": (
            build_stlpips_alex,
            MetricWeightsError,
            "PyTorch weights file",
            "the ST-LPIPS[alex] weights",
        ),
    }


LOADERS = [
    "training",
    "fomm",
    "facevid",
    "diffusion",
    "deca",
    "face",
    "vgg",
    "lpips_alexnet",
    "fid_inception",
    "stlpips",
]


def _assert_one_line_of_ours(message: str, path: Path, what: str) -> None:
    assert "\n" not in message, message  # exactly one line
    assert message.startswith(f"{path}: not a readable {what}: it "), message
    for noise in ("weights_only", "Weights only", "issue", "Unpickler", "pickle protocol"):
        assert noise not in message, message


def test_every_loader_is_listed():
    assert sorted(_loaders()) == sorted(LOADERS)


@pytest.mark.parametrize("bad", list(BAD_FILES))
@pytest.mark.parametrize("loader", LOADERS)
def test_every_loader_gives_one_line_of_ours_for_a_file_that_is_not_its_checkpoint(
    tmp_path, recwarn, loader, bad
):
    read, error, what, expected = _loaders()[loader]
    make, is_what = BAD_FILES[bad]
    path = make(tmp_path / f"{loader}.pth")
    with pytest.raises(error) as caught:
        read(path)
    assert type(caught.value) is error  # the loader's own class, which the CLI catches
    message = str(caught.value)
    _assert_one_line_of_ours(message, path, what)
    assert f": it {is_what}" in message, message
    assert f"Expected {expected}" in message, message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # from None
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


@pytest.mark.parametrize("loader", LOADERS)
def test_every_loader_names_a_missing_file(tmp_path, loader):
    read = _loaders()[loader][0]
    path = tmp_path / "absent" / "weights.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read(path)


def test_lpips_linear_layers_file_that_is_not_one(tmp_path, monkeypatch):
    """torchmetrics' own ``alex.pth`` is read the same way (a damaged installation)."""
    from torchmetrics.functional.image import lpips as tm_lpips

    from fadm_lightning.metrics.lpips_fid import build_lpips_alex

    (tmp_path / "lpips_models").mkdir()
    lin_file = png(tmp_path / "lpips_models" / "alex.pth")
    monkeypatch.setattr(tm_lpips, "__file__", str(tmp_path / "lpips.py"))
    with pytest.raises(RuntimeError) as caught:
        build_lpips_alex(png(tmp_path / "alexnet.pth"))
    _assert_one_line_of_ours(str(caught.value), lin_file, "LPIPS linear-layer file")
    assert "is a PNG image" in str(caught.value)


def test_the_describing_function_passes_a_real_torch_file(tmp_path):
    from fadm_lightning.models.torch_file import describe_not_a_torch_file, load_torch_file

    path = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(3)}, path)
    assert describe_not_a_torch_file(path, "anything") is None
    state = load_torch_file(path, what="weights file", expected="a state dict", error=ValueError)
    assert torch.equal(state["w"], torch.ones(3))


# --------------------------------------------------------------- one base class, one comparison


def test_every_weights_error_is_one_class_the_cli_catches():
    from fadm_lightning.inference.cli import EXPECTED_ERRORS
    from fadm_lightning.models.attributes import deca
    from fadm_lightning.models.errors import WeightsError

    classes = [entry[1] for entry in _loaders().values()]
    classes += [CheckpointError, deca.CheckpointError]
    assert all(issubclass(kind, WeightsError) for kind in classes), classes
    assert WeightsError in EXPECTED_ERRORS
    assert not [
        kind
        for kind in EXPECTED_ERRORS
        if kind is not WeightsError and issubclass(kind, WeightsError)
    ]


def test_one_state_dict_comparison_names_every_differing_key(tmp_path):
    from fadm_lightning.models.errors import WeightsError, check_state_dict, compare_state_dicts

    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c.num_batches_tracked": torch.zeros(())}
    found = {"b": torch.zeros(4), "extra": torch.zeros(1), "c.num_batches_tracked": [1]}
    diff = compare_state_dicts(expected, found)
    missing, unexpected, mis_shaped = diff
    assert missing == ["a"] and unexpected == ["extra"]
    assert mis_shaped == [
        "b: checkpoint (4,) vs model (3,)",
        "c.num_batches_tracked: checkpoint holds a list, not a tensor",
    ]
    assert diff.keys == ["a", "b", "c.num_batches_tracked", "extra"]
    assert not compare_state_dicts(expected, expected)
    optional = compare_state_dicts(
        expected, {"b": torch.zeros(3)}, optional=(".num_batches_tracked",)
    )
    assert optional.missing == ("a",)
    with pytest.raises(WeightsError) as caught:
        check_state_dict(expected, found, path=tmp_path / "w.pth", what="toy checkpoint")
    message = str(caught.value)
    assert str(tmp_path / "w.pth") in message
    assert all(key in message for key in ("a", "extra", "b: checkpoint (4,) vs model (3,)"))
