"""Broken and unusual data: image modes, unreadable files, skipped training items and their report."""

from __future__ import annotations

import logging
import shutil
import struct
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from fadm_lightning.callbacks.data_errors import DataErrorsCallback
from fadm_lightning.data.celeba import CelebASourceDataset
from fadm_lightning.data.datamodule import VoxCelebDataModule
from fadm_lightning.data.skipped import decode_skipped, encode_skipped
from fadm_lightning.data.voxceleb import VoxCelebIndex, VoxCelebTrainDataset
from fadm_lightning.media.errors import ImageReadError, VideoReadError
from fadm_lightning.media.image import read_image, read_image_with_note
from fadm_lightning.media.video import read_frames, write_mp4, write_png_folder
from fadm_lightning.synthetic import generate_dataset
from fadm_lightning.synthetic.annotations import annotation_path, save_annotation

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "voxceleb_sample"


# -- helpers: files of every awkward kind ---------------------------------------------------------
def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (grayscale H×W, RGB H×W×3 or RGBA H×W×4 uint16), written by hand."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    array = np.asarray(array, dtype=np.uint16)
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def write_zero_frame_mp4(path: Path, size: int = 32) -> Path:
    """An mp4 with a video stream and no frame (a header only)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def frames_of(value: int, n: int = 6, size: int = 32) -> np.ndarray:
    return np.full((n, size, size, 3), value, np.uint8)


# -- single files: conversions are not errors, broken files are named ---------------------------
def test_image_modes_are_converted_to_8bit_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    out, note = read_image_with_note(tmp_path / "gray.png")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8 and note == "L converted to RGB"
    assert (out == gray[..., None]).all()

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[0, 0, 3] = 0  # one fully transparent pixel: becomes the white background
    rgba[1, 1, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out, note = read_image_with_note(tmp_path / "rgba.png")
    assert "composited over white" in note
    assert out[2, 2].tolist() == [200, 0, 0] and out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [round(200 * 128 / 255 + 255 * 127 / 255), 127, 127]

    g16 = np.array([[0, 257 * 128, 65535, 1000]], np.uint16)
    out, note = read_image_with_note(write_png16(tmp_path / "g16.png", g16))
    assert "16-bit grayscale" in note
    assert out[0, :, 0].tolist() == [0, 128, 255, 4] and (out[..., 0] == out[..., 2]).all()

    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 257 * 100, 0
    out, note = read_image_with_note(write_png16(tmp_path / "rgb16.png", rgb16))
    assert out[0, 0].tolist() == [255, 100, 0] and "16-bit" in note

    palette = Image.fromarray(gray, "L").convert("P")
    palette.save(tmp_path / "palette.png")
    assert (read_image(tmp_path / "palette.png") == gray[..., None]).all()
    Image.fromarray(np.full((3, 3, 3), 7, np.uint8)).save(tmp_path / "rgb.png")
    assert read_image_with_note(tmp_path / "rgb.png")[1] is None


def test_unreadable_images_and_clips_are_errors_naming_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty image file \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 9).save(tmp_path / "whole.png")
    shutil.copy(tmp_path / "whole.png", tmp_path / "cut.png")
    truncate(tmp_path / "cut.png", 0.3)
    with pytest.raises(ImageReadError, match=r"cut\.png: unreadable image"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match=r"missing\.png: cannot open image"):
        read_image(tmp_path / "missing.png")

    folder = tmp_path / "clip.mp4"
    write_png_folder(folder, frames_of(50, n=3))
    (folder / "0000001.png").write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"clip\.mp4/0000001\.png: empty image file"):
        read_frames(folder)
    assert read_frames(folder, [0, 2]).shape == (2, 32, 32, 3)
    with pytest.raises(VideoReadError, match=r"out of range"):
        read_frames(folder, [0, 3])

    mixed = tmp_path / "mixed.mp4"
    write_png_folder(mixed, frames_of(50, n=2))
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(mixed / "0000002.png")
    with pytest.raises(VideoReadError, match=r"0000002\.png: frame is 32×16 but 0000000\.png"):
        read_frames(mixed)

    write_mp4(tmp_path / "good.mp4", frames_of(90))
    shutil.copy(tmp_path / "good.mp4", tmp_path / "cut.mp4")
    truncate(tmp_path / "cut.mp4")
    for name in ("cut.mp4", "zero.mp4"):
        if name == "zero.mp4":
            write_zero_frame_mp4(tmp_path / name)
        with pytest.raises(VideoReadError, match=rf"{name}: cannot decode video"):
            read_frames(tmp_path / name)
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "none.mp4", frames_of(1, n=0))


def test_skipped_entries_round_trip():
    entries = [("id1#a#0#4.mp4", "bad\nframe\tdata"), ("id2#b.mp4", "")]
    assert decode_skipped(encode_skipped(entries)) == [
        ("id1#a#0#4.mp4", "bad frame data"),
        ("id2#b.mp4", ""),
    ]
    assert encode_skipped([]) == "" and decode_skipped("") == []


# -- a VoxCeleb tree (synthetic generator) with every kind of broken clip --------------------------
BROKEN_AT_READ = ("id90003#zerobytes#0#6.mp4", "id90004#cutpng#0#6.mp4", "id90005#wide#0#6.mp4")
BROKEN_AT_INDEX = ("id90000#garbage#0#6.mp4", "id90001#noframes#0#0.mp4", "id90002#nopng#0#0.mp4")


def _annotate(root: Path, name: str, n: int) -> None:
    save_annotation(
        annotation_path(root, "train", name),
        pose=np.zeros((n, 6)),
        expression=np.zeros((n, 5)),
        landmarks=np.zeros((n, 22, 2)),
        identity=np.zeros(41),
    )


@pytest.fixture(scope="module")
def broken_vox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken_vox")
    generate_dataset(
        root, num_train_ids=2, clips_per_id=1, num_test_ids=1, test_clips_per_id=1,
        num_frames=6, image_size=32, format="mp4", progress=False,
    )  # fmt: skip
    train = root / "train"
    # left out of the index (cannot be opened / no frames)
    (train / BROKEN_AT_INDEX[0]).write_bytes(b"\x00\x01 definitely not a video" * 50)
    write_zero_frame_mp4(train / BROKEN_AT_INDEX[1])
    (train / BROKEN_AT_INDEX[2]).mkdir()
    # indexed, but every read fails
    write_png_folder(train / BROKEN_AT_READ[0], frames_of(10))
    for png in (train / BROKEN_AT_READ[0]).iterdir():
        png.write_bytes(b"")
    write_png_folder(train / BROKEN_AT_READ[1], frames_of(20))
    for png in (train / BROKEN_AT_READ[1]).iterdir():
        truncate(png, 0.4)
    write_png_folder(train / BROKEN_AT_READ[2], np.full((6, 32, 48, 3), 30, np.uint8))
    # unusual but fine: grayscale, RGBA and 16-bit PNG frames of one clip
    modes = train / "id90006#modes#0#3.mp4"
    modes.mkdir()
    Image.fromarray(np.full((32, 32), 128, np.uint8), "L").save(modes / "0000000.png")
    rgba = np.zeros((32, 32, 4), np.uint8) + np.uint8([128, 128, 128, 255])
    Image.fromarray(rgba, "RGBA").save(modes / "0000001.png")
    write_png16(modes / "0000002.png", np.full((32, 32), 257 * 128, np.uint16))
    for name, n in ((BROKEN_AT_READ[0], 6), (BROKEN_AT_READ[1], 6), (BROKEN_AT_READ[2], 6)):
        _annotate(root, name, n)
    _annotate(root, modes.name, 3)
    return root


def test_index_leaves_out_clips_that_cannot_be_opened(broken_vox, tmp_path):
    with pytest.warns(UserWarning, match="3 clip"):
        index = VoxCelebIndex(broken_vox, tmp_path / "cache")
    assert set(index.skipped["train"]) == set(BROKEN_AT_INDEX)
    names = {c.name for c in index.clips["train"]}
    assert set(BROKEN_AT_READ) <= names and "id90006#modes#0#3.mp4" in names


def test_training_items_replace_unreadable_clips_and_say_so(broken_vox, tmp_path):
    with pytest.warns(UserWarning):
        ds = VoxCelebTrainDataset(broken_vox, image_size=32, num_repeats=2, cache_dir=tmp_path)
    seen_skipped: set[str] = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["source"].shape == (3, 32, 32)
        assert item["name"] not in BROKEN_AT_READ
        skipped = decode_skipped(item["skipped"])
        seen_skipped |= {name for name, _ in skipped}
        if ds.person_ids[i % len(ds.person_ids)] in {n.split("#")[0] for n in BROKEN_AT_READ}:
            assert skipped and skipped[0][0].split("#")[0] == ds.person_ids[i % len(ds.person_ids)]
        if item["name"] == "id90006#modes#0#3.mp4":  # converted frames, all mid-gray
            assert torch.allclose(item["source"], torch.full_like(item["source"], 128 / 255))
    assert seen_skipped == set(BROKEN_AT_READ)
    reasons = dict(decode_skipped(ds[ds.person_ids.index("id90005") % len(ds)]["skipped"]))
    assert "48×32" in reasons["id90005#wide#0#6.mp4"]

    strict = VoxCelebTrainDataset(
        broken_vox, image_size=32, max_read_retries=0, index=ds.index, id_sampling=False
    )
    k = [c.name for c in strict.clips].index(BROKEN_AT_READ[0])
    with pytest.raises(VideoReadError, match="zerobytes.*0000.*png: empty image file"):
        strict[k]


class _TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (batch["source"].mean() - batch["driving"].mean() + self.weight).square()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_epoch_report_counts_skipped_reads_across_worker_processes(broken_vox, tmp_path, caplog):
    root = Path(shutil.copytree(broken_vox, tmp_path / "vox"))
    with pytest.warns(UserWarning):
        dm = VoxCelebDataModule(
            root, image_size=32, num_repeats=4, batch_size=4, num_workers=2,
            persistent_workers=False, augment=False, cache_dir=tmp_path / "cache",
        )  # fmt: skip
        dm.setup("fit")
    # after indexing, cut one mp4 short (a disk or copy failure): its reads now fail
    good = next(c for c in dm.index.clips["train"] if c.name.startswith("id00000"))
    truncate(good.path, 0.3)
    callback = DataErrorsCallback()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
        limit_val_batches=0,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="fadm_lightning.callbacks.data_errors"):
        trainer.fit(_TinyModule(), datamodule=dm)
    assert len(callback.history) == 2
    for epoch in callback.history:
        # 4 broken persons (3 unreadable clips + the cut mp4) × 4 repeats, each failing at least once
        assert epoch["count"] >= 16
        assert set(epoch["clips"]) <= {*BROKEN_AT_READ, good.name}
        assert good.name in epoch["clips"] and "cannot decode" in epoch["clips"][good.name][1]
    assert set(callback.index_skipped) == {f"train/{n}" for n in BROKEN_AT_INDEX}
    reports = [
        r.getMessage() for r in caplog.records if "training read(s) failed" in r.getMessage()
    ]
    assert len(reports) == 2 and "id90003#zerobytes#0#6.mp4" in reports[0]
    assert any("left out of the dataset index" in r.getMessage() for r in caplog.records)
    assert trainer.callback_metrics["data/skipped_reads"] >= 16


# -- VoxCeleb2 (224 clips from the real fixture) and CelebA trees with broken files ---------------
@pytest.fixture(scope="module")
def fixture_frames() -> np.ndarray:
    if not (FIXTURES / "driving.mp4").is_file():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return read_frames(FIXTURES / "driving.mp4", list(range(0, 40, 5)))  # 8 real frames


def test_voxceleb2_tree_with_broken_clips(fixture_frames, tmp_path):
    root = tmp_path / "vox2"
    small = np.stack([np.asarray(Image.fromarray(f).resize((224, 224))) for f in fixture_frames])
    write_mp4(root / "train" / "id00017#real#000000#000008.mp4", small)
    write_mp4(root / "test" / "id00018#real#000000#000008.mp4", small[::-1].copy())
    write_mp4(
        root / "train" / "id00019#raw#000000#000008.mp4", np.zeros((8, 180, 320, 3), np.uint8)
    )
    (root / "train" / "id00020#empty#000000#000000.mp4").write_bytes(b"")
    with pytest.warns(UserWarning, match="id00020#empty"):
        ds = VoxCelebTrainDataset(root, image_size=256, num_repeats=2, cache_dir=tmp_path)
    items = [ds[i] for i in range(len(ds))]
    assert all(it["name"] == "id00017#real#000000#000008.mp4" for it in items)
    assert all(it["source"].shape == (3, 256, 256) for it in items)
    assert any("id00019#raw" in it["skipped"] and "320×180" in it["skipped"] for it in items)
    assert items[0]["source"].std() > 0.05  # a real face, resized from 224


def test_celeba_tree_with_broken_and_unusual_images(fixture_frames, tmp_path):
    root = tmp_path / "celeba"
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    aligned = [Image.fromarray(f).resize((178, 218)) for f in fixture_frames[:3]]
    aligned[0].save(images / "000001.jpg")
    aligned[1].convert("L").save(images / "000002.jpg")  # grayscale JPEG
    (images / "000003.jpg").write_bytes(b"")  # zero-byte
    aligned[2].convert("RGBA").save(images / "000004.png")  # RGBA
    write_png16(images / "000005.png", np.full((218, 178), 65535, np.uint16))  # 16-bit, white
    truncate(Path(shutil.copy(images / "000001.jpg", images / "000006.jpg")), 0.2)
    listing = [f"{n} 2" for n in ("000001.jpg", "000002.jpg", "000003.jpg", "000004.png")]
    listing += ["000005.png 2", "000006.jpg 2", "000007.jpg 2"]  # 000007: listed, absent
    (root / "list_eval_partition.txt").write_text("\n".join(listing) + "\n")
    with pytest.warns(UserWarning, match="1 listed image"):
        ds = CelebASourceDataset(
            root, split="test", image_size=64, on_error="skip", cache_dir=tmp_path
        )
    assert len(ds) == 6
    names = [ds[i]["name"] for i in range(len(ds))]
    assert names == [
        "000001.jpg",
        "000002.jpg",
        "000004.png",
        "000004.png",
        "000005.png",
        "000001.jpg",
    ]
    assert "empty image file" in ds[2]["skipped"] and "000006.jpg" in ds[5]["skipped"]
    assert torch.allclose(ds[4]["source"], torch.ones(3, 64, 64))
    gray = ds[1]["source"]
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    strict = CelebASourceDataset(root, split="test", image_size=64, index=ds.index)
    with pytest.raises(ImageReadError, match="000003.jpg: empty image file"):
        strict[2]
