"""LitData shards (``python -m fadm_lightning.shard``, ``data=voxceleb_shards``): the records hold
the clips as stored, the items equal the folder data module's, resume continues the stream, and
the default synthetic setup trains from them."""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from fadm_lightning.config import compose_config
from fadm_lightning.data.items import pair_item, train_pair_indices
from fadm_lightning.data.shard_writer import write_shards
from fadm_lightning.data.shards import (
    SUMMARY_FILE,
    ShardClip,
    ShardClipDataset,
    ShardPairsDataset,
    ShardRecords,
    ShardTrainStream,
    VoxCelebShardsDataModule,
    item_rng,
    split_dir,
)
from fadm_lightning.data.transforms import FrameAugmentation
from fadm_lightning.data.voxceleb import (
    VoxCelebClipDataset,
    VoxCelebIndex,
    VoxCelebPairsDataset,
    VoxCelebTrainDataset,
)
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.video import read_frames
from fadm_lightning.synthetic import generate_dataset
from fadm_lightning.synthetic.annotations import annotation_path

from ..conftest import TINY_OVERRIDES

SIZE = 32
WORLD = dict(
    num_train_ids=3,
    clips_per_id=2,
    num_test_ids=1,
    test_clips_per_id=2,
    num_val_ids=1,
    val_clips_per_id=1,
    num_frames=10,
    image_size=SIZE,
    progress=False,
)
BROKEN = {"zero#bytes#000000#000010.mp4": "file", "empty#folder#000000#000010.mp4": "folder"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Synthetic worlds: mp4 clips with annotations; PNG folders with annotations; and a PNG
    layout as ``preprocess format=png`` writes it (no annotations, no val/) with two clips that
    cannot be opened."""
    base = tmp_path_factory.mktemp("worlds")
    mp4 = generate_dataset(base / "mp4", format="mp4", **WORLD)
    png = generate_dataset(base / "png", format="png", **WORLD)
    plain = base / "plain"
    shutil.copytree(png, plain)
    shutil.rmtree(plain / "annotations")
    shutil.rmtree(plain / "val")
    (plain / "train" / "zero#bytes#000000#000010.mp4").write_bytes(b"")
    (plain / "train" / "empty#folder#000000#000010.mp4").mkdir()
    return {"mp4": mp4, "png": png, "plain": plain, "cache": base / "index"}


@pytest.fixture(scope="module")
def shards(trees, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("shards")
    result = {}
    for name in ("mp4", "png", "plain"):
        with pytest.warns(UserWarning) if name == "plain" else nullcontext():
            write_shards(
                trees[name],
                out / name,
                chunk_bytes="20KB",  # several chunks, so that shuffling and resume cross them
                num_workers=2,
                index_cache_dir=trees["cache"],
                progress=False,
                start_method="fork",
            )
        result[name] = out / name
    return result


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _records(root: Path, split: str) -> list[ShardClip]:
    records = ShardRecords(split_dir(root, split))
    return [records[i] for i in range(len(records))]


# -- writing ------------------------------------------------------------------------------------
def test_shard_command_writes_one_dataset_per_split(trees, tmp_path, capsys):
    from fadm_lightning.shard import _main

    out = tmp_path / "shards"
    args = [f"input_dir={trees['mp4']}", f"output_dir={out}", "progress=false"]
    _main(compose_config("shard", [*args, "start_method=fork"]))
    printed = capsys.readouterr().out
    assert "train: 6 clips" in printed and "with annotations" in printed
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert list(summary["splits"]) == ["train", "test", "val"]
    for split, clips in (("train", 6), ("test", 2), ("val", 1)):
        assert (out / split / "index.json").is_file()
        assert summary["splits"][split]["clips"] == clips
        assert summary["splits"][split]["annotations"] is True
        assert summary["splits"][split]["left_out"] == {}
    # a second run refuses to replace the shards, unless told to
    with pytest.raises(SystemExit) as exit_info:
        _main(compose_config("shard", [*args, "splits=[test]", "start_method=fork"]))
    assert exit_info.value.code == 2
    assert "already holds shards" in capsys.readouterr().err
    _main(compose_config("shard", [*args, "splits=test", "overwrite=true", "start_method=fork"]))
    assert len(_records(out, "test")) == 2


def test_shard_command_needs_its_folders(capsys):
    from fadm_lightning.shard import _main

    with pytest.raises(SystemExit) as exit_info:
        _main(compose_config("shard", []))
    assert exit_info.value.code == 2
    assert "set input_dir and output_dir" in capsys.readouterr().err


@pytest.mark.parametrize("tree", ["mp4", "png"])
def test_records_hold_the_clips_as_stored_in_name_order(trees, shards, tree):
    root = trees[tree]
    index = VoxCelebIndex(root, trees["cache"])
    for split in ("train", "test", "val"):
        records = _records(shards[tree], split)
        assert [r.name for r in records] == [c.name for c in index.clips[split]]
        for record, clip in zip(records, index.clips[split], strict=True):
            assert record.split == split and record.num_frames == clip.num_frames == 10
            assert record.format == tree
            if tree == "mp4":
                assert bytes(record.video) == clip.path.read_bytes()
            else:
                files = sorted(clip.path.glob("*.png"))
                assert bytes(record.video) == b"".join(f.read_bytes() for f in files)
            stored = annotation_path(root, split, clip.name).read_bytes()
            assert bytes(record.annotation) == stored
            # the decoded frames are the folder reader's
            assert np.array_equal(record.read_frames(range(10)), read_frames(clip.path))
            assert np.array_equal(record.read_frames([7, 2]), read_frames(clip.path, [7, 2]))


def test_png_layout_without_annotations_reports_clips_left_out(trees, shards):
    summary = json.loads((shards["plain"] / SUMMARY_FILE).read_text())
    assert list(summary["splits"]) == ["train", "test"]
    train = summary["splits"]["train"]
    assert train["clips"] == 6 and train["annotations"] is False
    assert set(train["left_out"]) == set(BROKEN)
    assert "cannot decode video" in train["left_out"]["zero#bytes#000000#000010.mp4"]
    assert "no .png frames" in train["left_out"]["empty#folder#000000#000010.mp4"]
    records = _records(shards["plain"], "train")
    assert all(r.format == "png" and not r.has_annotation for r in records)
    assert not set(BROKEN) & {r.name for r in records}


def test_a_split_that_is_missing_is_named(trees, shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="no split folder val"):
        write_shards(trees["plain"], tmp_path / "s", splits="train,val", progress=False)
    with pytest.raises(FileNotFoundError, match=r"nothing/train holds no shards"):
        VoxCelebShardsDataModule(tmp_path / "nothing").setup("fit")
    no_val = VoxCelebShardsDataModule(shards["plain"], val_split="val", num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"plain/val holds no shards.*val_split=test"):
        no_val.setup("fit")


# -- items --------------------------------------------------------------------------------------
@pytest.mark.parametrize("tree", ["mp4", "png", "plain"])
def test_items_equal_the_folder_datasets(trees, shards, tree):
    """Same clip and frame indices → the same tensors, annotations and item dicts as the folder
    data module's datasets, for validation pairs, test clips and (augmented) training items."""
    root, index = trees[tree], VoxCelebIndex(trees[tree], trees["cache"])
    annotated = tree != "plain"
    size = 48  # frames are resized on load as by the folder datasets

    folder_val = VoxCelebPairsDataset(root, size, num_pairs=5, split="test", index=index)
    shard_val = ShardPairsDataset(ShardRecords(split_dir(shards[tree], "test")), size, 5)
    for k in range(5):  # more pairs than clips: both cycle
        assert _equal(folder_val[k], shard_val[k])
    assert ("source_annotation" in shard_val[0]) == annotated

    folder_test = VoxCelebClipDataset(root, size, max_frames=4, frame_stride=2, index=index)
    shard_test = ShardClipDataset(ShardRecords(split_dir(shards[tree], "test")), size, 4, 2)
    assert len(folder_test) == len(shard_test) == 2
    for i in range(2):
        assert _equal(folder_test[i], shard_test[i])
        assert shard_test[i]["video"].shape == (4, 3, size, size)

    augmentation = FrameAugmentation()
    folder_train = VoxCelebTrainDataset(root, size, augmentation=augmentation, index=index)
    clips = {c.name: c for c in index.clips["train"]}
    stream = ShardTrainStream(
        split_dir(shards[tree], "train"), size, augmentation=augmentation, seed=3
    )
    items = list(stream)
    assert sorted(item["name"] for item in items) == sorted(clips)  # one pass: every clip once
    for item in items:
        rng = item_rng(3, 1, item["name"])  # the first epoch of a stream is 1
        clip = clips[item["name"]]
        indices = train_pair_indices(clip.num_frames, rng)
        frames = folder_train._read(clip, indices)
        annotation = folder_train._annotation(clip, indices) if annotated else None
        expected = pair_item(frames, clip.name, annotation, augmentation, rng, [])
        assert _equal(item, expected)


def test_the_stream_order_and_frames_change_with_the_epoch(shards):
    stream = ShardTrainStream(split_dir(shards["mp4"], "train"), seed=0)
    first = [(i["name"], i["source"].sum().item()) for i in stream]
    second = [(i["name"], i["source"].sum().item()) for i in stream]
    assert sorted(n for n, _ in first) == sorted(n for n, _ in second)
    assert first != second


def test_an_unreadable_clip_is_replaced_and_reported(shards, monkeypatch):
    stream = ShardTrainStream(split_dir(shards["mp4"], "train"), max_read_retries=2)
    bad = "id00001#clip00.mp4"
    read = ShardClip.read_frames

    def failing(self, indices):
        if self.name == bad:
            raise VideoReadError(f"{self.where}: broken on purpose")
        return read(self, indices)

    monkeypatch.setattr(ShardClip, "read_frames", failing)
    items = list(stream)
    assert bad not in {i["name"] for i in items}
    reports = [i["skipped"] for i in items if i["skipped"]]
    assert len(items) == 5 and len(reports) == 1
    assert reports[0].startswith(f"{bad}\t") and "broken on purpose" in reports[0]


# -- the data module, resume, training ---------------------------------------------------------
def test_data_module_batches_and_annotations(shards):
    dm = VoxCelebShardsDataModule(
        shards["mp4"], image_size=None, batch_size=4, val_batch_size=2, num_workers=0,
        num_val_pairs=3, val_split="val", test_max_frames=3,
    )  # fmt: skip
    assert dm.has_annotations
    dm.setup("fit")
    dm.setup("test")
    assert dm.image_size == SIZE  # None: the stored frames' size
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape == (4, 3, SIZE, SIZE) and len(batch["skipped"]) == 4
    assert batch["source_annotation"]["pose"].shape == (4, 6)
    val = next(iter(dm.val_dataloader()))
    assert val["name"] == ["id00004#clip00.mp4"] * 2  # val/ has one clip: pairs cycle over it
    test = next(iter(dm.test_dataloader()))
    assert test["video"].shape == (1, 3, 3, SIZE, SIZE) and test["annotation"]["pose"].shape[
        :2
    ] == (1, 3)
    assert not VoxCelebShardsDataModule(shards["plain"]).has_annotations


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[list[str], float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((list(batch["name"]), float(batch["driving"].double().sum())))
        return (self.weight * batch["source"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_continues_the_stream(shards, tmp_path, num_workers):
    """Train 3 steps and checkpoint (mid-epoch: 6 clips, batch 2), resume to step 8 (into the
    second epoch): the batches after the resume are those of an uninterrupted run."""

    def datamodule():
        return VoxCelebShardsDataModule(
            shards["png"], image_size=None, batch_size=2, num_workers=num_workers,
            persistent_workers=num_workers > 0, seed=5,
        )  # fmt: skip

    def fit(steps, name, ckpt_path=None, callbacks=()):
        module = _Recorder()
        trainer = L.Trainer(
            max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
            default_root_dir=tmp_path / name, callbacks=list(callbacks),
        )  # fmt: skip
        trainer.fit(module, datamodule=datamodule(), ckpt_path=ckpt_path)
        return module.seen

    full = fit(8, "full")
    checkpoint = ModelCheckpoint(str(tmp_path / "ckpt"), every_n_train_steps=3, save_top_k=-1)
    first = fit(3, "first", callbacks=[checkpoint])
    (ckpt,) = (tmp_path / "ckpt").glob("*step=3.ckpt")
    stored = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]
    assert stored["combined_loader"][0]["num_samples_yielded"] == 6  # the loader's own state
    resumed = fit(8, "resumed", ckpt_path=ckpt)
    assert first == full[:3]
    assert resumed == full[3:]  # names and pixels: neither a restart nor a skip
    names = [n for batch, _ in full for n in batch]
    assert (
        len(set(names[:6])) == 6
    )  # an epoch visits every clip once (the last batches may be short)


def test_the_data_config_composes_and_builds(tmp_path):
    cfg = compose_config("train", ["data=voxceleb_shards", f"data.root={tmp_path}", "logger=null"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, VoxCelebShardsDataModule) and dm.root == str(tmp_path)
    assert dm.image_size is None and dm.seed == cfg.seed
    remote = instantiate(cfg.data, root="s3://bucket/vox-shards")
    assert remote.root == "s3://bucket/vox-shards"
    assert split_dir(remote.root, "train") == "s3://bucket/vox-shards/train"


def test_the_default_setup_trains_from_shards(compose_train, shards):
    """The synthetic default (synthetic coarse generator and attributes, which need the
    annotations) trains, validates and tests from shards of the synthetic world."""
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.")]
    cfg = compose_train(
        *tiny,
        "data=voxceleb_shards",
        f"data.root={shards['mp4']}",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.num_val_pairs=2",
        "data.test_max_frames=4",
        "data.val_split=val",
        "++trainer.fast_dev_run=true",
        tiny=False,
    )
    HydraConfig().set_config(cfg)
    from fadm_lightning.train import train

    result = train(cfg)
    metrics = result["metrics"]
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    assert "test/psnr_refined" in metrics
