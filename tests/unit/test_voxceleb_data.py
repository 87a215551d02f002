"""VoxCeleb-layout index, datasets, augmentations and data module on tiny generated clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fadm_lightning.data import voxceleb
from fadm_lightning.data.datamodule import VoxCelebDataModule
from fadm_lightning.data.transforms import FrameAugmentation
from fadm_lightning.data.voxceleb import (
    VoxCelebClipDataset,
    VoxCelebIndex,
    VoxCelebPairsDataset,
    VoxCelebTrainDataset,
)
from fadm_lightning.media.video import write_mp4, write_png_folder
from fadm_lightning.synthetic.annotations import annotation_path, save_annotation

FIXTURE_CLIP = (
    Path(__file__).resolve().parents[2].parent / "shared/fixtures/voxceleb_sample/driving.mp4"
)
SIZE = 32
NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}


# -- tiny identifiable clips -------------------------------------------------------------------
# Frame t of clip c: red = 20·t + 10, green = 25·c + 20, blue = 100, and a white 2×2 marker at
# rows 4–5, columns 2 + t, 3 + t, whose centre is landmark 0 of the annotation.
def make_frames(num_frames: int, clip_code: int) -> np.ndarray:
    frames = np.zeros((num_frames, SIZE, SIZE, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = 20 * t + 10
        frames[t, ..., 1] = 25 * clip_code + 20
        frames[t, ..., 2] = 100
        frames[t, 4:6, 2 + t : 4 + t] = 255
    return frames


def marker_x(t: int) -> float:
    """Landmark x of the marker centre in the [-1, 1] grid convention (align_corners=False)."""
    return 2.0 * (3 + t) / SIZE - 1.0


def make_annotation(num_frames: int, clip_code: int) -> dict[str, np.ndarray]:
    t = np.arange(num_frames, dtype=np.float32)
    pose = np.stack(
        [0.1 + 0.01 * t] + [np.full_like(t, v) for v in (0.2, 0.3, 0.05, -0.05, 1.0)], 1
    )
    expression = np.tile(np.float32([0.1, 0.2, 0.3, 0.7, 0.5]), (num_frames, 1))
    landmarks = np.zeros((num_frames, 3, 2), np.float32)
    landmarks[:, 0, 0] = [marker_x(i) for i in range(num_frames)]
    landmarks[:, 0, 1] = 2.0 * 5 / SIZE - 1.0
    landmarks[:, 1] = (0.5, 0.5)
    landmarks[:, 2] = (-0.25, 0.1)
    identity = np.float32([clip_code, 1.0, 2.0, 3.0])
    return {"pose": pose, "expression": expression, "landmarks": landmarks, "identity": identity}


def add_clip(root: Path, split: str, name: str, num_frames: int, clip_code: int, png: bool):
    frames = make_frames(num_frames, clip_code)
    if png:
        write_png_folder(root / split / name, frames)
    else:
        write_mp4(root / split / name, frames)
    save_annotation(annotation_path(root, split, name), **make_annotation(num_frames, clip_code))


def decode(frame: torch.Tensor) -> tuple[int, int]:
    """(frame index, clip code) of a 3×H×W frame in [0, 1] made by ``make_frames``."""
    red, green = (frame[c].median().item() * 255 for c in (0, 1))
    return round((red - 10) / 20), round((green - 20) / 25)


def image_marker_x(frame: torch.Tensor) -> float:
    """Marker centre x (grid convention) found in the image."""
    cols = torch.nonzero(frame[:, 4:6].mean(dim=(0, 1)) > 0.9).flatten().float()
    return 2.0 * (cols.mean().item() + 0.5) / frame.shape[-1] - 1.0


CLIP_CODES: dict[str, int] = {}


@pytest.fixture(scope="module")
def vox_root(tmp_path_factory) -> Path:
    """3 ids × 2 clips (one PNG folder, one mp4) × 12 frames in train; 2 test clips (12, 9)."""
    root = tmp_path_factory.mktemp("vox")
    code = 0
    for p in (1, 2, 3):
        for video, png in (("vidA", True), ("vidB", False)):
            name = f"id0000{p}#{video}#000000#000012.mp4"
            add_clip(root, "train", name, 12, code, png)
            CLIP_CODES[name] = code
            code += 1
    add_clip(root, "test", "id00010#vidT#000000#000012.mp4", 12, 6, png=True)
    add_clip(root, "test", "id00011#vidU#000000#000009.mp4", 9, 7, png=False)
    return root


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


# -- index ----------------------------------------------------------------------------------------
def test_index_finds_clips_and_ids_in_both_formats(vox_root, cache_dir):
    index = VoxCelebIndex(vox_root, cache_dir)
    train = index.clips["train"]
    assert len(train) == 6
    assert index.person_ids("train") == ["id00001", "id00002", "id00003"]
    assert all(c.num_frames == 12 for c in train)
    assert {c.path.is_dir() for c in train} == {True, False}  # PNG folders and mp4 files
    assert [c.num_frames for c in index.clips["test"]] == [12, 9]
    assert index.person_ids("test") == ["id00010", "id00011"]
    assert index.has_annotations("train") and index.has_annotations("test")


def test_index_cache_written_reused_and_invalidated(tmp_path, cache_dir, monkeypatch):
    root = tmp_path / "vox"
    add_clip(root, "train", "id1#a#0#8.mp4", 8, 0, png=True)
    add_clip(root, "test", "id2#b#0#8.mp4", 8, 1, png=True)
    first = VoxCelebIndex(root, cache_dir)
    assert not first.from_cache and first.cache_file.is_file()

    def no_decoding(path):
        raise AssertionError(f"index rebuilt, read {path}")

    with monkeypatch.context() as patch:
        patch.setattr(voxceleb, "count_frames", no_decoding)
        second = VoxCelebIndex(root, cache_dir)
    assert second.from_cache and second.clips == first.clips

    add_clip(root, "train", "id3#c#0#5.mp4", 5, 2, png=True)
    stat = (root / "train").stat()
    os.utime(root / "train", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = VoxCelebIndex(root, cache_dir)
    assert not third.from_cache
    assert [c.num_frames for c in third.clips["train"]] == [8, 5]


def test_unreadable_clip_is_left_out_with_a_warning(tmp_path, cache_dir):
    root = tmp_path / "vox"
    write_png_folder(root / "train" / "id1#a#0#4.mp4", make_frames(4, 0))
    (root / "train" / "id1#bad#0#4.mp4").write_bytes(b"not a video")
    write_png_folder(root / "test" / "id2#b#0#4.mp4", make_frames(4, 1))
    for _ in range(2):  # built, then read from the cache: warns both times
        with pytest.warns(UserWarning, match="1 clip.*id1#bad#0#4.mp4"):
            index = VoxCelebIndex(root, cache_dir)
        assert [c.name for c in index.clips["train"]] == ["id1#a#0#4.mp4"]


def test_missing_root_or_split_is_a_clear_error(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="does not exist.*expected the VoxCeleb layout"):
        VoxCelebIndex(tmp_path / "nowhere", cache_dir)
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no 'test' folder"):
        VoxCelebTrainDataset(tmp_path / "half", cache_dir=cache_dir)


# -- training items -------------------------------------------------------------------------------
def test_id_sampling_gives_two_sorted_frames_of_one_clip_of_one_person(vox_root, cache_dir):
    ds = VoxCelebTrainDataset(vox_root, image_size=SIZE, num_repeats=4, cache_dir=cache_dir)
    assert len(ds) == 12
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["source"].shape == (3, SIZE, SIZE) and item["source"].dtype == torch.float32
        (t_src, code_src), (t_drv, code_drv) = decode(item["source"]), decode(item["driving"])
        assert code_src == code_drv == CLIP_CODES[item["name"]]
        assert item["name"].startswith(ds.person_ids[i % 3] + "#")
        assert t_src <= t_drv
        for key, t in (("source_annotation", t_src), ("driving_annotation", t_drv)):
            assert item[key]["pose"][0].item() == pytest.approx(0.1 + 0.01 * t)
        seen.add(item["name"])
    assert len(seen) > 3  # a random clip of each person, not always the same one


def test_repeats_clip_sampling_and_resize(vox_root, cache_dir):
    by_clip = VoxCelebTrainDataset(
        vox_root, image_size=48, id_sampling=False, num_repeats=3, cache_dir=cache_dir
    )
    assert len(by_clip) == 18
    item = by_clip[7]
    assert item["name"] == by_clip.clips[1].name
    assert item["source"].shape == item["driving"].shape == (3, 48, 48)
    assert 0.0 <= item["source"].min() and item["source"].max() <= 1.0
    assert decode(item["source"])[1] == CLIP_CODES[item["name"]]


def test_horizontal_flip_moves_image_and_annotation_together(vox_root, cache_dir):
    mirror = FrameAugmentation(time_flip_p=0.0, hflip_p=1.0, **NO_JITTER)
    kwargs = {"image_size": SIZE, "id_sampling": False, "cache_dir": cache_dir}
    torch.manual_seed(11)
    plain = VoxCelebTrainDataset(vox_root, **kwargs)[0]  # clip 0 is a PNG folder: exact pixels
    torch.manual_seed(11)
    flipped = VoxCelebTrainDataset(vox_root, augmentation=mirror, **kwargs)[0]
    for frame in ("source", "driving"):
        assert torch.equal(flipped[frame], plain[frame].flip(-1))
        a, b = plain[f"{frame}_annotation"], flipped[f"{frame}_annotation"]
        assert image_marker_x(plain[frame]) == pytest.approx(a["landmarks"][0, 0].item())
        assert image_marker_x(flipped[frame]) == pytest.approx(b["landmarks"][0, 0].item())
        assert torch.equal(b["landmarks"][:, 0], -a["landmarks"][:, 0])
        assert torch.equal(b["landmarks"][:, 1], a["landmarks"][:, 1])
        assert torch.equal(b["pose"][[0, 2, 3]], -a["pose"][[0, 2, 3]])  # yaw, roll, tx
        assert torch.equal(b["pose"][[1, 4, 5]], a["pose"][[1, 4, 5]])
        assert torch.equal(b["expression"][[2, 3]], a["expression"][[3, 2]])  # blinks swap
        assert torch.equal(b["identity"], a["identity"])


def test_frame_sampling_is_a_function_of_seed_epoch_and_index_whatever_the_workers(
    tmp_path, cache_dir
):
    """Items draw from (seed, epoch, index): other epochs and items differ, and the same epoch
    gives the same items with no worker, two workers, or the epoch set in the main process after
    the (persistent) workers started. (Resuming a killed training relies on it.)"""
    root = tmp_path / "vox"
    write_png_folder(root / "train" / "id1#a#0#12.mp4", make_frames(12, 0))
    write_png_folder(root / "test" / "id2#b#0#12.mp4", make_frames(12, 1))
    ds = VoxCelebTrainDataset(root, image_size=SIZE, num_repeats=16, cache_dir=cache_dir)

    def epoch(loader, number: int) -> list[tuple[int, int]]:
        ds.set_epoch(number)
        return [(decode(b["source"])[0], decode(b["driving"])[0]) for b in loader]

    in_process = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    workers = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, persistent_workers=True
    )
    first, second = epoch(in_process, 0), epoch(in_process, 1)
    assert first != second
    assert first[0::2] != first[1::2]  # items differ within an epoch
    assert epoch(workers, 0) == first and epoch(workers, 1) == second
    assert epoch(workers, 0) == first  # persistent workers see the epoch set here


def test_time_flip_swaps_source_and_driving_with_their_annotations(vox_root, cache_dir):
    reverse = FrameAugmentation(time_flip_p=1.0, **NO_JITTER)
    ds = VoxCelebTrainDataset(
        vox_root, image_size=SIZE, augmentation=reverse, num_repeats=4, cache_dir=cache_dir
    )
    for i in range(len(ds)):
        item = ds[i]
        t_src, t_drv = decode(item["source"])[0], decode(item["driving"])[0]
        assert t_src >= t_drv
        assert item["source_annotation"]["pose"][0].item() == pytest.approx(0.1 + 0.01 * t_src)
        assert item["driving_annotation"]["pose"][0].item() == pytest.approx(0.1 + 0.01 * t_drv)


def test_colour_jitter_is_the_same_for_all_frames():
    jitter = FrameAugmentation(time_flip_p=0.0, hflip_p=0.0)
    image = torch.rand(1, 3, 16, 16)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, _ = jitter(image.repeat(2, 1, 1, 1), rng)
        assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
        assert torch.allclose(out[0], out[1]) and not torch.allclose(out[0], image[0])
    stack = np.repeat(make_frames(1, 3), 3, axis=0)  # numpy uint8 T×H×W×3 works too
    out, _ = jitter(stack, rng)
    assert out.shape == stack.shape and out.dtype == np.uint8
    assert (out == out[0]).all() and not (out == stack).all()


def test_flip_probabilities_follow_fomm():
    aug = FrameAugmentation(**NO_JITTER)
    frames = torch.arange(2.0).view(2, 1, 1, 1) * torch.ones(2, 3, 1, 2)
    frames[..., 1] += 10  # asymmetric in x
    rng = np.random.default_rng(0)
    counts = {"time": 0, "mirror": 0, "none": 0}
    for _ in range(2000):
        out, _ = aug(frames, rng)
        kind = "time" if out[0, 0, 0, 0] == 1 else "mirror" if out[0, 0, 0, 0] == 10 else "none"
        counts[kind] += 1
    assert counts["time"] == pytest.approx(1000, abs=100)
    assert counts["mirror"] == pytest.approx(500, abs=80)


# -- evaluation items -----------------------------------------------------------------------------
def test_pairs_are_deterministic(vox_root, cache_dir):
    torch.manual_seed(0)
    a = VoxCelebPairsDataset(vox_root, image_size=SIZE, num_pairs=5, cache_dir=cache_dir)
    torch.manual_seed(1)
    b = VoxCelebPairsDataset(vox_root, image_size=SIZE, num_pairs=5, cache_dir=cache_dir)
    assert len(a) == 5
    for k in range(5):
        x, y = a[k], b[k]
        clip, src, drv = a.pair(k)
        assert x["name"] == y["name"] == clip.name == a.clips[k % 2].name
        assert torch.equal(x["source"], y["source"]) and torch.equal(x["driving"], y["driving"])
        assert (src, drv) == (0, (k * 7919 + clip.num_frames // 2) % clip.num_frames)
        assert decode(x["source"])[0] == 0 and decode(x["driving"])[0] == drv
        assert x["driving_annotation"]["pose"][0].item() == pytest.approx(0.1 + 0.01 * drv)
    with pytest.raises(IndexError):
        a[5]


def test_clip_dataset_returns_whole_clips_with_stride_and_max_frames(vox_root, cache_dir):
    whole = VoxCelebClipDataset(vox_root, image_size=SIZE, cache_dir=cache_dir)
    assert len(whole) == 2
    item = whole[1]
    assert item["video"].shape == (9, 3, SIZE, SIZE)
    assert [decode(f)[0] for f in item["video"]] == list(range(9))
    assert item["annotation"]["pose"].shape == (9, 6)

    strided = VoxCelebClipDataset(
        vox_root, image_size=SIZE, max_frames=4, frame_stride=2, cache_dir=cache_dir
    )
    item = strided[0]
    assert item["video"].shape == (4, 3, SIZE, SIZE)
    assert [decode(f)[0] for f in item["video"]] == [0, 2, 4, 6]
    assert item["annotation"]["landmarks"].shape == (4, 3, 2)
    assert item["annotation"]["pose"][:, 0].tolist() == pytest.approx([0.1, 0.12, 0.14, 0.16])


# -- data module ----------------------------------------------------------------------------------
@pytest.mark.parametrize("num_workers", [0, 2])
def test_datamodule_batches(vox_root, cache_dir, num_workers):
    dm = VoxCelebDataModule(
        vox_root,
        image_size=SIZE,
        num_repeats=4,
        batch_size=4,
        val_batch_size=2,
        num_workers=num_workers,
        num_val_pairs=3,
        test_max_frames=5,
        cache_dir=cache_dir,
    )
    assert dm.has_annotations
    assert dm.persistent_workers == (num_workers > 0)
    dm.setup("fit")
    train = dm.train_dataloader()
    assert len(train) == 3  # 3 ids × 4 repeats / 4, drop_last
    batch = next(iter(train))
    assert batch["source"].shape == batch["driving"].shape == (4, 3, SIZE, SIZE)
    assert len(batch["name"]) == 4
    assert batch["source_annotation"]["pose"].shape == (4, 6)
    assert batch["driving_annotation"]["landmarks"].shape == (4, 3, 2)
    val = list(dm.val_dataloader())
    assert [b["source"].shape[0] for b in val] == [2, 1]
    dm.setup("test")
    test = next(iter(dm.test_dataloader()))
    assert test["video"].shape == (1, 5, 3, SIZE, SIZE)
    assert test["annotation"]["pose"].shape == (1, 5, 6)


def test_datamodule_reads_root_only_after_prepare_data(tmp_path, cache_dir):
    class GeneratedVox(VoxCelebDataModule):
        def prepare_data(self):
            for split, person in (("train", "id1"), ("test", "id2")):
                write_png_folder(Path(self.root) / split / f"{person}#v#0#6.mp4", make_frames(6, 0))

    dm = GeneratedVox(tmp_path / "later", image_size=SIZE, num_workers=0, cache_dir=cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    assert not dm.has_annotations
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"source", "driving", "name"}


# -- real clip ------------------------------------------------------------------------------------
def test_real_voxceleb_clip(tmp_path, cache_dir):
    if not FIXTURE_CLIP.is_file():
        pytest.skip(f"fixture clip {FIXTURE_CLIP} is absent")
    name = "id10280#fixture#000000#000227.mp4"
    for split in ("train", "test"):
        (tmp_path / "vox" / split).mkdir(parents=True)
        (tmp_path / "vox" / split / name).symlink_to(FIXTURE_CLIP)
    train = VoxCelebTrainDataset(
        tmp_path / "vox", augmentation=FrameAugmentation(), cache_dir=cache_dir
    )
    assert train.clips[0].num_frames == 227
    item = train[0]
    assert item["source"].shape == item["driving"].shape == (3, 256, 256)
    assert item["name"] == name and "source_annotation" not in item
    clips = VoxCelebClipDataset(tmp_path / "vox", max_frames=3, frame_stride=100, index=train.index)
    video = clips[0]["video"]
    assert video.shape == (3, 3, 256, 256) and 0.0 <= video.min() and video.max() <= 1.0
    assert video.std() > 0.05  # real image content, not a blank frame


def _persons(dataset) -> set[str]:
    return {clip.person_id for clip in dataset.clips}


@pytest.mark.parametrize("experiment", ["fomm_recon", "fomm_pretrain_vox", "fomm_recon_landmarks"])
def test_validation_persons_are_carved_from_train_never_test(experiment, vox_root, cache_dir):
    """The VoxCeleb experiments choose checkpoints on persons carved from train/: the training,
    validation and test persons are three disjoint sets, and training never sees the carved ones."""
    from hydra.utils import instantiate

    from fadm_lightning.config import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", f"data.root={vox_root}"])
    assert cfg.data.val_split == "train" and cfg.data.val_persons is not None
    data = dict(cfg.data)
    data.update(
        image_size=SIZE,
        num_workers=0,
        cache_dir=str(cache_dir),
        val_persons=1,  # of the fixture's 3 training persons
        num_val_pairs=2,
    )
    dm = instantiate(data)
    dm.setup("fit")
    dm.setup("test")
    train, val, test = _persons(dm.train_set), _persons(dm.val_set), _persons(dm.test_set)
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test)
    assert val == set(dm.carved_persons) and train | val == {"id00001", "id00002", "id00003"}
    assert set(dm.train_set.person_ids) == train
    names = {dm.train_set[i]["name"].split("#")[0] for i in range(len(dm.train_set))}
    assert names == train  # no item of a carved person


def test_validating_on_training_persons_is_refused(vox_root, cache_dir):
    with pytest.raises(ValueError, match="validate on the training persons"):
        VoxCelebDataModule(vox_root, val_split="train", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="set val_split=train"):
        VoxCelebDataModule(vox_root, val_split="test", val_persons=1, cache_dir=cache_dir)
