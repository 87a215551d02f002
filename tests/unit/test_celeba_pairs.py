"""CelebA source images, VoxCeleb2 / CelebA data configs and cross-identity evaluation pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from PIL import Image

from fadm_lightning.data import celeba
from fadm_lightning.data.celeba import (
    DEFAULT_CROP_BOX,
    CelebAIndex,
    CelebASourceDataset,
    CelebASourcesDataModule,
)
from fadm_lightning.data.pairs import (
    CrossIdentityPairsDataset,
    Pair,
    load_or_make_pairs,
    make_random_pairs,
    read_pairs_csv,
    write_pairs_csv,
)
from fadm_lightning.data.voxceleb import VoxCelebIndex, person_id
from fadm_lightning.faces.crop import crop_square
from fadm_lightning.synthetic import generate_dataset
from fadm_lightning.train import missing_paths

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "voxceleb_sample"
CELEBA_EYES = ((69.0, 111.0), (108.0, 111.0))  # mean eye centres of img_align_celeba (178×218)


def _eyes(face, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = face.detect(image)
    assert len(boxes), "no face found"
    marks = face.landmarks68(image, boxes[0])
    return marks[36:42].mean(0), marks[42:48].mean(0)


def _align_like_celeba(face, image: np.ndarray) -> Image.Image:
    """A 178×218 image with the eyes where CelebA's alignment puts them (similarity transform)."""
    left, right = _eyes(face, image)
    (lx, ly), (rx, ry) = CELEBA_EYES
    scale = np.linalg.norm(right - left) / np.hypot(rx - lx, ry - ly)  # source px per target px
    angle = np.arctan2(*(right - left)[::-1])
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    centre_src, centre_dst = (left + right) / 2, np.array([(lx + rx) / 2, (ly + ry) / 2])
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f)
    a, b, d, e = cos, -sin, sin, cos
    c = centre_src[0] - a * centre_dst[0] - b * centre_dst[1]
    f = centre_src[1] - d * centre_dst[0] - e * centre_dst[1]
    return Image.fromarray(image).transform(
        (178, 218), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BICUBIC
    )


def make_celeba(root: Path, images: dict[str, Image.Image], partition: dict[str, int]) -> Path:
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(root / "img_align_celeba" / name, quality=95)
    lines = [f"{name} {split}" for name, split in partition.items()]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def _plain_images(n: int) -> dict[str, Image.Image]:
    return {
        f"{i + 1:06d}.jpg": Image.fromarray(np.full((218, 178, 3), 20 * i + 10, np.uint8))
        for i in range(n)
    }


# -- CelebA ----------------------------------------------------------------------------------------
def test_celeba_crop_matches_the_voxceleb_framing(tmp_path):
    """Faces aligned as CelebA aligns them come out framed like the VoxCeleb test frames."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    dlib_face = pytest.importorskip("fadm_lightning.faces.dlib_face")
    try:
        face = dlib_face.DlibFace(cnn_fallback=False)
    except dlib_face.DlibNotInstalledError as err:
        pytest.skip(str(err))
    vox = {
        n: np.asarray(Image.open(FIXTURES / n).convert("RGB"))
        for n in ("source.png", "driving.png")
    }
    aligned = {
        f"00000{i + 1}.jpg": _align_like_celeba(face, im) for i, im in enumerate(vox.values())
    }
    root = make_celeba(tmp_path / "celeba", aligned, {n: 2 for n in aligned})
    ds = CelebASourceDataset(root, split="test", image_size=256, cache_dir=tmp_path / "cache")
    for i, reference in enumerate(vox.values()):
        item = ds[i]
        assert item["source"].shape == (3, 256, 256) and item["name"] == f"00000{i + 1}.jpg"
        out = (item["source"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        left, right = _eyes(face, out)  # dlib finds the face in the crop
        iod, eye_y = np.linalg.norm(right - left) / 256, (left[1] + right[1]) / 2 / 256
        assert iod == pytest.approx(39 / 140, abs=0.02)
        assert eye_y == pytest.approx(0.44, abs=0.03)
        assert (left[0] + right[0]) / 2 / 256 == pytest.approx(0.5, abs=0.03)
        ref_left, ref_right = _eyes(face, reference)  # the VoxCeleb frame itself
        assert iod == pytest.approx(np.linalg.norm(ref_right - ref_left) / 256, abs=0.07)


def test_crop_square_pads_outside_the_image():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert np.array_equal(crop_square(image, (1, 1, 3, 3)), image[1:3, 1:3])
    out = crop_square(image, (-2, -1, 3, 4))
    assert out.shape == (5, 5, 3)
    assert np.array_equal(out[1:, 2:], image[:4, :3]) and np.array_equal(out[0, 0], image[0, 0])


def test_celeba_index_splits_cache_and_layout_errors(tmp_path, monkeypatch):
    root = make_celeba(
        tmp_path / "celeba", _plain_images(6), {f"{i + 1:06d}.jpg": i % 3 for i in range(6)}
    )
    cache = tmp_path / "cache"
    index = CelebAIndex(root, cache)
    assert not index.from_cache
    assert index.split("train") == ["000001.jpg", "000004.jpg"]
    assert index.split("val") == ["000002.jpg", "000005.jpg"]
    assert index.split("test") == ["000003.jpg", "000006.jpg"] and len(index.split("all")) == 6

    def no_scan(*args):
        raise AssertionError("index rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(celeba, "read_partition", no_scan)
        assert CelebAIndex(root, cache).from_cache
    (root / "list_eval_partition.txt").write_text("000001.jpg 2\n000002.jpg 2\n")
    stat = (root / "list_eval_partition.txt").stat()
    os.utime(root / "list_eval_partition.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert CelebAIndex(root, cache).split("test") == ["000001.jpg", "000002.jpg"]

    with pytest.raises(
        FileNotFoundError, match="does not exist.*img_align_celeba.*list_eval_partition"
    ):
        CelebAIndex(tmp_path / "nowhere", cache)
    (tmp_path / "half" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no list_eval_partition.txt"):
        CelebAIndex(tmp_path / "half", cache)
    (tmp_path / "half" / "list_eval_partition.txt").write_text("000001.jpg train\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:1: expected '<file> <0\|1\|2>'"):
        CelebAIndex(tmp_path / "half", cache)
    with pytest.raises(KeyError, match="unknown CelebA split"):
        index.split("validation")


def test_celeba_datamodule_batches(tmp_path):
    root = make_celeba(
        tmp_path / "celeba", _plain_images(9), {f"{i + 1:06d}.jpg": i % 3 for i in range(9)}
    )
    dm = CelebASourcesDataModule(
        root, image_size=32, batch_size=2, num_workers=0, cache_dir=tmp_path
    )
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["source"].shape == (2, 3, 32, 32) and train["skipped"] == ["", ""]
    dm.setup("test")
    test = list(dm.test_dataloader())
    assert [b["name"] for b in test] == [["000003.jpg", "000006.jpg"], ["000009.jpg"]]
    # a plain grey image stays grey through the crop and resize
    assert torch.allclose(test[0]["source"][0], torch.full((3, 32, 32), 50 / 255), atol=1 / 255)
    assert set(test[0]) == {"source", "name"}


# -- configs ---------------------------------------------------------------------------------------
def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def test_voxceleb2_config_reads_224_clips_at_256(tmp_path):
    root = generate_dataset(
        tmp_path / "vox2", num_train_ids=2, clips_per_id=1, num_test_ids=1, test_clips_per_id=1,
        num_frames=4, image_size=224, progress=False,
    )  # fmt: skip
    cfg = _compose(
        "data=voxceleb2", f"data.root={root}", "data.num_workers=0", "data.batch_size=2",
        f"data.cache_dir={tmp_path / 'cache'}", "data.num_val_pairs=2", "data.num_repeats=2",
    )  # fmt: skip
    assert cfg.data.image_size == 256 and cfg.data._target_.endswith("VoxCelebDataModule")
    assert not [p for p in missing_paths(cfg) if p.startswith("data")]
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape == batch["driving"].shape == (2, 3, 256, 256)
    assert batch["source_annotation"]["pose"].shape == (2, 6)
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["video"].shape == (1, 4, 3, 256, 256)

    missing = missing_paths(_compose("data=voxceleb2", f"data.root={tmp_path / 'absent'}"))
    assert any(p.startswith("data.root") and "VoxCeleb layout" in p for p in missing)


def test_celeba_sources_config(tmp_path):
    root = make_celeba(
        tmp_path / "celeba", _plain_images(3), {f"{i + 1:06d}.jpg": 2 for i in range(3)}
    )
    cfg = _compose("data=celeba_sources", f"data.root={root}", "data.num_workers=0",
                   f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    assert list(cfg.data.crop_box) == list(DEFAULT_CROP_BOX)
    dm = instantiate(cfg.data)
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["source"].shape == (3, 3, 256, 256)
    missing = missing_paths(_compose("data=celeba_sources", f"data.root={tmp_path / 'absent'}"))
    assert any("data.root" in p and "img_align_celeba" in p for p in missing)


# -- pairs -----------------------------------------------------------------------------------------
def _names(people: int, clips: int) -> list[str]:
    return [f"id{10280 + p}#v{c}#000000#000100.mp4" for p in range(people) for c in range(clips)]


def test_read_pairs_csv_keeps_test_clips_and_counts_the_rest(tmp_path):
    test = _names(3, 2)
    csv_path = tmp_path / "vox256.csv"
    csv_path.write_text(
        "distance,source,driving,frame\n"
        f"0.1,{test[0]},{test[2]},5\n"
        f"0.2,{test[1].removesuffix('.mp4')},{test[4].removesuffix('.mp4')},0\n"  # no suffix
        f"0.3,id00001#train#0#9.mp4,{test[2]},1\n"  # a training clip: dropped
        f"0.4,{test[3]},id99999#gone#0#9,1\n"  # unknown driving clip: dropped
        f"0.5,000012.jpg,{test[5]},1\n"  # an image source
    )
    pairs, dropped = read_pairs_csv(csv_path, test)
    assert dropped == 2
    assert pairs == [Pair(test[0], test[2]), Pair(test[1], test[4]), Pair("000012.jpg", test[5])]
    assert not pairs[2].source_is_clip
    pairs, dropped = read_pairs_csv(csv_path, test, source_images=["000001.jpg"], num_pairs=1)
    assert pairs == [Pair(test[0], test[2])] and dropped == 3
    (tmp_path / "bad.csv").write_text("src,drv\na,b\n")
    with pytest.raises(ValueError, match="columns 'source' and 'driving'"):
        read_pairs_csv(tmp_path / "bad.csv", test)


def test_random_pairs_follow_the_paper_shape_and_repeat_exactly(tmp_path):
    clips = _names(13, 4)
    pairs = make_random_pairs(clips, seed=3)
    assert len(pairs) == 140
    sources = list(dict.fromkeys(p.source for p in pairs))
    assert len(sources) == 10 and len({person_id(s) for s in sources}) == 10
    for source in sources:
        driving = [p.driving for p in pairs if p.source == source]
        assert len(driving) == len(set(driving)) == 14
        assert person_id(source) not in {person_id(d) for d in driving}
        assert len({person_id(d) for d in driving}) == 12  # spread over all other people
    assert make_random_pairs(list(reversed(clips)), seed=3) == pairs
    assert make_random_pairs(clips, seed=4) != pairs

    path = write_pairs_csv(pairs, tmp_path / "pairs.csv")
    assert path.read_text().splitlines()[0] == "source,driving"
    assert read_pairs_csv(path, clips) == (pairs, 0)

    images = [f"{i:06d}.jpg" for i in range(1, 50)]
    with_images = make_random_pairs(clips, seed=0, source_images=images)
    assert len(with_images) == 140 and all(p.source in images for p in with_images)
    drivers = {
        p.source: [q.driving for q in with_images if q.source == p.source] for p in with_images
    }
    assert len({tuple(d) for d in drivers.values()}) == 1  # one shared driving set
    with pytest.raises(ValueError, match="at least two people"):
        make_random_pairs(_names(1, 5))


@pytest.fixture(scope="module")
def test_tree(tmp_path_factory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("pairs_vox"), num_train_ids=1, clips_per_id=1, num_test_ids=3,
        test_clips_per_id=1, num_frames=5, image_size=32, progress=False,
    )  # fmt: skip


def test_cross_identity_dataset_with_clip_and_celeba_sources(test_tree, tmp_path):
    index = VoxCelebIndex(test_tree, tmp_path / "cache")
    clips = [c.name for c in index.clips["test"]]
    saved = tmp_path / "run" / "pairs.csv"
    pairs = load_or_make_pairs(index, num_sources=2, num_driving=2, seed=0, save_to=saved)
    assert len(pairs) == 4 and saved.is_file()
    assert load_or_make_pairs(index, pairs_csv=saved) == pairs  # the run can be repeated
    ds = CrossIdentityPairsDataset(pairs, index, image_size=32, max_frames=3)
    item = ds[0]
    assert item["source"].shape == (3, 32, 32) and item["video"].shape == (3, 3, 32, 32)
    assert item["source_name"] == pairs[0].source and item["driving_name"] == pairs[0].driving
    source_clip = CrossIdentityPairsDataset([Pair(pairs[0].source, pairs[0].source)], index, 32)[0]
    assert torch.equal(item["source"], source_clip["video"][0])  # the first frame of the clip

    root = make_celeba(tmp_path / "celeba", _plain_images(2), {"000001.jpg": 2, "000002.jpg": 2})
    sources = CelebASourceDataset(root, image_size=64, cache_dir=tmp_path / "cache")
    mixed = [Pair("000002.jpg", clips[0]), Pair(clips[1], clips[2])]
    ds = CrossIdentityPairsDataset(mixed, index, image_size=32, source_images=sources)
    item = ds[0]
    assert item["source"].shape == (3, 32, 32) and item["video"].shape == (5, 3, 32, 32)
    assert torch.allclose(item["source"], torch.full((3, 32, 32), 30 / 255), atol=1 / 255)
    with pytest.raises(ValueError, match="image name but no source_images"):
        CrossIdentityPairsDataset(mixed, index)
    with pytest.raises(ValueError, match="not in .*test"):
        CrossIdentityPairsDataset([Pair(clips[0], "id1#x#0#1.mp4")], index)
