"""The synthetic world's third split (val/): disjoint identities, unchanged train/test clips,
validation on val/ (``val_split``), an optional val/ in the index, and the sampler benchmark's
``split=``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from fadm_lightning import synthetic as S
from fadm_lightning.benchmarks import sampling
from fadm_lightning.data.datamodule import SyntheticDataModule, VoxCelebDataModule
from fadm_lightning.data.voxceleb import VoxCelebIndex, VoxCelebPairsDataset, person_id
from fadm_lightning.media.video import read_frames
from fadm_lightning.synthetic.annotations import annotation_path, load_annotation

# tiny: 2 train ids × 1 clip, 1 test id × 2 clips, 4 frames of 32×32, PNG (lossless) frames
TINY = dict(
    num_train_ids=2,
    clips_per_id=1,
    num_test_ids=1,
    test_clips_per_id=2,
    num_frames=4,
    image_size=32,
    format="png",
    seed=3,
    progress=False,
)
VAL = dict(num_val_ids=2, val_clips_per_id=1)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    """The same tiny world generated without and with validation identities."""
    base = tmp_path_factory.mktemp("worlds")
    return {
        "plain": S.generate_dataset(base / "plain", **TINY),
        "with_val": S.generate_dataset(base / "with_val", **TINY, **VAL),
    }


def _names(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / split).iterdir())


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- generator ------------------------------------------------------------------------------------
def test_three_splits_have_disjoint_identities(worlds):
    root = worlds["with_val"]
    assert _names(root, "train") == ["id00000#clip00.mp4", "id00001#clip00.mp4"]
    assert _names(root, "test") == ["id00002#clip00.mp4", "id00002#clip01.mp4"]
    assert _names(root, "val") == ["id00003#clip00.mp4", "id00004#clip00.mp4"]  # after test
    persons = {s: {person_id(n) for n in _names(root, s)} for s in ("train", "test", "val")}
    assert not persons["train"] & persons["test"]
    assert not persons["train"] & persons["val"]
    assert not persons["test"] & persons["val"]
    # the identity parameters differ too, and every val clip has its annotation
    identities = {}
    for split in ("train", "test", "val"):
        for name in _names(root, split):
            ann = load_annotation(annotation_path(root, split, name))
            assert ann["pose"].shape == (4, 6)
            identities.setdefault(person_id(name), ann["identity"])
    vectors = np.stack(list(identities.values()))
    distances = np.abs(vectors[:, None] - vectors[None]).sum(-1)
    assert (distances[~np.eye(len(vectors), dtype=bool)] > 1e-3).all()
    val_clip = root / "val" / "id00003#clip00.mp4"
    assert read_frames(val_clip).shape == (4, 32, 32, 3)
    marker = json.loads((root / ".complete").read_text())
    assert marker["num_val_ids"] == 2 and marker["val_clips_per_id"] == 1


def test_val_ids_leave_train_and_test_bit_for_bit_unchanged(worlds):
    plain, with_val = worlds["plain"], worlds["with_val"]
    assert not (plain / "val").exists() and not (plain / "annotations" / "val").exists()
    # without validation ids the marker is exactly the one written before val/ existed
    marker = json.loads((plain / ".complete").read_text())
    assert "num_val_ids" not in marker and "val_clips_per_id" not in marker
    for split in ("train", "test"):
        assert _files(plain / split) == _files(with_val / split)
        for name in _names(plain, split):
            a, b = read_frames(plain / split / name), read_frames(with_val / split / name)
            np.testing.assert_array_equal(a, b)
            for png in (plain / split / name).iterdir():  # lossless: identical files
                assert png.read_bytes() == (with_val / split / name / png.name).read_bytes()
            ann_a = load_annotation(annotation_path(plain, split, name))
            ann_b = load_annotation(annotation_path(with_val, split, name))
            assert ann_a.keys() == ann_b.keys()
            for key in ann_a:
                np.testing.assert_array_equal(ann_a[key], ann_b[key])
        assert _files(plain / "annotations" / split) == _files(with_val / "annotations" / split)


def test_val_split_is_idempotent_and_stale_val_clips_are_removed(tmp_path):
    root = S.generate_dataset(tmp_path / "w", **TINY, **VAL)
    stamp = (root / ".complete").stat().st_mtime_ns
    assert S.generate_dataset(root, **TINY, **VAL) == root  # same arguments: returns at once
    assert (root / ".complete").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="already holds"):
        S.generate_dataset(root, **TINY, num_val_ids=1)
    with pytest.raises(ValueError, match="num_val_ids must be ≥ 0"):
        S.generate_dataset(tmp_path / "bad", **TINY, num_val_ids=-1)

    # an interrupted run with other arguments (no marker): clips no longer planned are deleted
    (root / ".complete").unlink()
    S.generate_dataset(root, **TINY, num_val_ids=1, val_clips_per_id=1)
    assert _names(root, "val") == ["id00003#clip00.mp4"]
    assert _files(root / "annotations" / "val") == ["id00003#clip00.mp4.npz"]
    assert _names(root, "test") == ["id00002#clip00.mp4", "id00002#clip01.mp4"]

    # without validation ids the val/ folders go away entirely (only they were generated)
    (root / ".complete").unlink()
    S.generate_dataset(root, **TINY)
    assert not (root / "val").exists() and not (root / "annotations" / "val").exists()
    assert _names(root, "train") == ["id00000#clip00.mp4", "id00001#clip00.mp4"]

    # a foreign file in val/ is never deleted (nor the folder holding it)
    (root / "val").mkdir()
    (root / "val" / "notes.txt").write_text("mine")
    (root / ".complete").unlink()
    S.generate_dataset(root, **TINY)
    assert (root / "val" / "notes.txt").read_text() == "mine"


# -- index and data module ------------------------------------------------------------------------
def test_index_val_split_is_optional_and_cached(worlds, tmp_path):
    cache = tmp_path / "cache"
    plain = VoxCelebIndex(worlds["plain"], cache)
    assert plain.splits == ("train", "test") and not plain.has_split("val")
    with pytest.raises(FileNotFoundError, match=r"no 'val' split .*plain/val missing"):
        plain.require_split("val")
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        VoxCelebPairsDataset(worlds["plain"], image_size=32, split="val", index=plain)

    index = VoxCelebIndex(worlds["with_val"], cache)
    assert index.splits == ("train", "test", "val")
    assert index.person_ids("val") == ["id00003", "id00004"]
    assert index.has_annotations("val")
    assert VoxCelebIndex(worlds["with_val"], cache).from_cache

    # a val/ folder that appears (or goes away) invalidates the cached index
    root = Path(shutil.copytree(worlds["plain"], tmp_path / "grows"))
    first = VoxCelebIndex(root, cache)
    assert first.splits == ("train", "test")
    shutil.copytree(worlds["with_val"] / "val", root / "val")
    grown = VoxCelebIndex(root, cache)
    assert not grown.from_cache and [c.name for c in grown.clips["val"]] == _names(root, "val")
    shutil.rmtree(root / "val")
    assert VoxCelebIndex(root, cache).splits == ("train", "test")


def _module(cls, root_or_parent: Path, cache: Path, **kwargs):
    return cls(
        root_or_parent, image_size=32, num_workers=0, num_repeats=1, batch_size=2,
        val_batch_size=2, num_val_pairs=5, test_max_frames=2, cache_dir=cache, **kwargs,
    )  # fmt: skip


def test_synthetic_datamodule_validates_on_val_identities_only(tmp_path):
    dm = _module(SyntheticDataModule, tmp_path / "synthetic", tmp_path / "cache",
                 generator={**TINY, **VAL})  # fmt: skip
    assert dm.val_split == "val"
    dm.prepare_data()
    assert dm.has_annotations
    dm.setup("fit")
    assert dm.val_set.split == "val"
    names = [n for batch in dm.val_dataloader() for n in batch["name"]]
    assert len(names) == 5
    assert {person_id(n) for n in names} == {"id00003", "id00004"}  # the val identities only
    assert set(names) == set(_names(Path(dm.root), "val"))
    train_people = {person_id(n) for batch in dm.train_dataloader() for n in batch["name"]}
    assert train_people <= {"id00000", "id00001"}
    dm.setup("test")  # the test stage still reads test/
    test_names = [batch["name"][0] for batch in dm.test_dataloader()]
    assert test_names == ["id00002#clip00.mp4", "id00002#clip01.mp4"]


def test_missing_val_split_is_a_clear_error(worlds, tmp_path):
    cache = tmp_path / "cache"
    # a synthetic world generated without validation ids (e.g. an older checkpoint's config)
    dm = _module(SyntheticDataModule, tmp_path / "synthetic", cache, generator=dict(TINY))
    dm.prepare_data()
    assert not dm.has_annotations  # val/ is part of what it reads, and absent
    with pytest.raises(FileNotFoundError, match=r"no 'val' split \(.*synthetic-\w+/val missing"):
        dm.setup("fit")
    dm.setup("test")  # evaluation needs only test/: unaffected
    assert len(dm.test_dataloader()) == 2

    # FOMM's VoxCeleb layout (train/ and test/ only): the default validates on test/
    vox = _module(VoxCelebDataModule, worlds["plain"], cache)
    assert vox.val_split == "test"
    vox.setup("validate")
    assert {person_id(b) for batch in vox.val_dataloader() for b in batch["name"]} == {"id00002"}
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        _module(VoxCelebDataModule, worlds["plain"], cache, val_split="val").setup("fit")
    # and a root with val/ can validate on it when asked
    with_val = _module(VoxCelebDataModule, worlds["with_val"], cache, val_split="val")
    with_val.setup("validate")
    assert with_val.val_set.split == "val" and with_val.has_annotations
    with pytest.raises(ValueError, match="val_split"):
        _module(VoxCelebDataModule, worlds["plain"], cache, val_split="")


def test_synthetic_config_validates_on_val(compose_train):
    cfg = compose_train(tiny=False)
    assert cfg.data.val_split == "val"
    assert cfg.data.generator.num_val_ids == 4 and cfg.data.generator.val_clips_per_id == 2
    assert cfg.data.generator.num_test_ids == 4  # the test identities are unchanged
    vox = compose_train("data=voxceleb", tiny=False)
    vox_module = instantiate(vox.data, root=os.devnull)  # validation persons carved from train
    assert vox_module.val_split == "train" and vox_module.val_persons == 0.02


# -- sampler benchmark ----------------------------------------------------------------------------
def test_sampling_benchmark_split(worlds, tmp_path):
    cache = tmp_path / "cache"
    dm = _module(VoxCelebDataModule, worlds["with_val"], cache, val_split="val")
    loader, folder = sampling.clip_loader(dm, "val")
    assert folder == "val"
    assert [b["name"][0] for b in loader] == _names(worlds["with_val"], "val")
    assert next(iter(loader))["video"].shape == (1, 2, 3, 32, 32)  # test_max_frames applies
    loader, folder = sampling.clip_loader(dm, "test")
    assert folder == "test" and [b["name"][0] for b in loader] == _names(worlds["with_val"], "test")
    # a data config that validates on test/: warned, since val and test are the same clips
    with pytest.warns(UserWarning, match="validates on 'test'"):
        _, folder = sampling.clip_loader(_module(VoxCelebDataModule, worlds["plain"], cache), "val")
    assert folder == "test"
    with pytest.raises(ValueError, match="split must be one of"):
        sampling.clip_loader(dm, "train")
    with pytest.raises(SystemExit):
        sampling.main(["ckpt=some.ckpt", "split=train"])  # refused before any work
