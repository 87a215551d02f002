"""Every dataset's items and batches follow the batch contract of ``data/batch.py``."""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import IterableDataset, default_collate

from fadm_lightning.data import batch as contract
from fadm_lightning.data.batch import check_batch, check_item, clip_frames
from fadm_lightning.data.celeba import CelebASourcesDataModule
from fadm_lightning.data.datamodule import SyntheticDataModule, VoxCelebDataModule
from fadm_lightning.data.pairs import CrossIdentityPairsDataset, Pair
from fadm_lightning.data.voxceleb import VoxCelebIndex

GENERATOR = dict(
    num_train_ids=2,
    clips_per_id=1,
    num_test_ids=2,
    test_clips_per_id=1,
    num_val_ids=1,
    val_clips_per_id=1,
    num_frames=6,
    image_size=32,
    format="png",
    seed=0,
    progress=False,
)
LOADER = dict(
    image_size=32, batch_size=2, val_batch_size=2, num_workers=0, num_val_pairs=2, augment=False
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SyntheticDataModule:
    base = tmp_path_factory.mktemp("contract")
    dm = SyntheticDataModule(
        base / "synthetic",
        generator=GENERATOR,
        num_repeats=1,
        test_max_frames=4,
        cache_dir=base / "index",
        **LOADER,
    )
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def plain_root(world, tmp_path_factory) -> Path:
    """The synthetic world without its annotations (as a real VoxCeleb root)."""
    root = tmp_path_factory.mktemp("plain")
    for split in ("train", "val", "test"):
        shutil.copytree(Path(world.root) / split, root / split)
    return root


def _items(dataset, count: int = 2) -> list[dict]:
    if isinstance(dataset, IterableDataset):  # the shards' training stream
        stream = iter(dataset)
        return [next(stream) for _ in range(count)]
    return [dataset[i] for i in range(min(count, len(dataset)))]


def _check_module(dm, annotated: bool) -> None:
    pair_keys = {"source_annotation", "driving_annotation"}
    train = _items(dm.train_set)
    for item in train + _items(dm.val_set):
        check_item(item)
        assert (pair_keys <= set(item)) is annotated
    assert all("skipped" in item for item in train)
    clip = dm.test_set[0]
    check_item(clip)
    assert ("annotation" in clip) is annotated
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        check_batch(next(iter(loader)))


def test_the_typed_dicts_name_every_checked_key():
    keys = set(contract.IMAGE_KEYS) | set(contract.ANNOTATION_KEYS) | set(contract.STRING_KEYS)
    typed = (
        set(typing.get_type_hints(contract.PairBatch))
        | set(typing.get_type_hints(contract.ClipBatch))
        | set(typing.get_type_hints(contract.CrossPairItem))
    )
    assert typed == keys
    assert set(typing.get_type_hints(contract.FrameAnnotation)) == {
        "pose",
        "expression",
        "landmarks",
        "identity",
    }


def test_folder_and_synthetic_modules_follow_the_contract(world, plain_root, tmp_path):
    _check_module(world, annotated=True)
    plain = VoxCelebDataModule(
        plain_root, val_split="val", num_repeats=1, cache_dir=tmp_path, **LOADER
    )
    plain.setup()
    _check_module(plain, annotated=False)


def test_shard_module_follows_the_contract(world, tmp_path):
    pytest.importorskip("litdata")
    from fadm_lightning.data.shard_writer import write_shards
    from fadm_lightning.data.shards import VoxCelebShardsDataModule

    write_shards(world.root, tmp_path / "shards", index_cache_dir=tmp_path, progress=False)
    dm = VoxCelebShardsDataModule(tmp_path / "shards", val_split="val", **LOADER)
    dm.setup()
    _check_module(dm, annotated=True)


def test_celeba_and_cross_identity_items_follow_the_contract(world, tmp_path):
    images = tmp_path / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    lines = []
    for i in range(4):
        Image.new("RGB", (178, 218), (40 * i, 80, 120)).save(images / f"{i:06d}.jpg")
        lines.append(f"{i:06d}.jpg {i % 3}")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    dm = CelebASourcesDataModule(
        tmp_path / "celeba", image_size=32, batch_size=1, num_workers=0, cache_dir=tmp_path
    )
    dm.setup()
    for split in ("train", "val", "test"):
        check_item(dm.dataset(split)[0])
        check_batch(next(iter(dm._loader(split, train=False))))

    index = VoxCelebIndex(world.root, tmp_path)
    clips = [c.name for c in index.clips["test"]]
    pairs = CrossIdentityPairsDataset(
        [Pair(clips[0], clips[1]), Pair("000002.jpg", clips[0])],
        index,
        image_size=32,
        source_images=dm.dataset("test"),
        max_frames=3,
    )
    for item in _items(pairs):
        check_item(item)


def test_check_item_names_what_breaks_the_contract(world):
    item = dict(world.val_set[0])
    check_item(item)
    with pytest.raises(ValueError, match="extra: not a key"):
        check_item({**item, "extra": 1})
    with pytest.raises(ValueError, match="source: expected float32"):
        check_item({**item, "source": item["source"].double()})
    with pytest.raises(ValueError, match="driving: values outside"):
        check_item({**item, "driving": item["driving"] * 2})
    with pytest.raises(ValueError, match="source_annotation: expected a dict"):
        check_item({**item, "source_annotation": {"pose": item["source_annotation"]["pose"]}})
    with pytest.raises(ValueError, match="frames of different sizes"):
        check_item({**item, "driving": item["driving"][:, :16]})
    with pytest.raises(ValueError, match="expected a 4-d tensor"):
        check_batch(item)


def test_clip_frames_cuts_a_test_clip_and_its_annotation(world):
    batch = default_collate([world.test_set[0]])
    video, annotation = clip_frames(batch, slice(1, 3))
    assert torch.equal(video, batch["video"][0, 1:3])
    for key in ("pose", "expression", "landmarks"):
        assert torch.equal(annotation[key], batch["annotation"][key][0, 1:3])
    assert torch.equal(annotation["identity"], batch["annotation"]["identity"].expand(2, -1))
    check_item({"source_annotation": {k: v[0] for k, v in annotation.items()}})
    bare = {"video": batch["video"], "name": batch["name"]}
    assert clip_frames(bare, slice(0, 1))[1] is None
