"""Data throughput: can the data modules feed one GPU at the 256 preset's training step rate?

``python -m fadm_lightning.benchmarks.data [gpu_step_s=0.025] [batches=16] [frames=64]``

A Hydra command: the options are ``key=value`` overrides of ``conf/benchmark/data.yaml``.

1. Builds temporary 256×256 synthetic trees with ``generate_dataset`` in both formats (mp4 files
   and PNG-frame folders), a 224×224 copy of the mp4 tree (VoxCeleb2 crops, resized on load) and
   a CelebA-layout folder of 178×218 portraits made from the same frames.
2. Times one DataLoader worker (``num_workers=0``: the main process does exactly what one worker
   does; ``torch.set_num_threads(1)``) of each data module at batch 8, 256×256: training pairs per
   second (source images per second for CelebA); the best of 3 rounds, interleaved between the
   modules.
3. Times the read of two random frames of an mp4 clip (``frames`` and 4× that long: decord
   seeks to the previous key frame and decodes forward, so the cost grows with the clip length)
   against the read of a PNG pair; with ``real_clip`` (default: the real VoxCeleb clip of
   ``shared/fixtures``, when present) the same for real content: the clip as it is, re-encoded
   by ``write_mp4`` with the encoder's key-frame interval and with ``gop=12`` (what
   ``fadm_lightning.preprocess`` writes), and as a PNG folder.
4. Shards (``docs/scaling.md, "Sharded streaming data"``): writes the mp4 and the PNG tree, each clip repeated
   ``shard_copies`` times under other names (symbolic links: the same clips, enough of them for
   whole batches per pass), as LitData shards with ``fadm_lightning.data.shard_writer.write_shards`` and
   times the ``voxceleb_shards`` data module's streaming loader (``StreamingDataLoader``, one
   worker) like the folder modules above, plus the two-frame read of a stored record.
5. Prints the workers one GPU needs: ``ceil(margin · gpu_batch / gpu_step_s / pairs_per_s)``, and
   PASS when every training data module needs at most ``max_workers`` (8) with the 2× margin.

No GPU is needed: the step time is an option (``gpu_step_s``). Its default, 0.025 s, is an
estimate for an H100 and the 256 preset (batch 5, the paper UNet of 144 M parameters: 5.8 TFLOP
for forward + backward, counted with ``torch.utils.flop_counter`` on the meta device; at ~40 % of
the 989 TFLOP/s bf16 dense peak that is ~15 ms, plus ~10 ms for the frozen FOMM and DECA
forwards, the AGCN, the optimizer step and data transfer). Replace it with a measured value.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fadm_lightning.benchmarks import cpu_name
from fadm_lightning.config import hydra_main

DEFAULT_GPU_STEP_S = 0.025
REAL_CLIP = (
    Path(__file__).resolve().parents[3].parent / "shared/fixtures/voxceleb_sample/driving.mp4"
)
GPU_BATCH = 5  # the 256 preset (experiment=fomm_recon)
BENCH_BATCH = 8


def build_trees(workdir: Path, frames: int, ids: int) -> dict[str, Path]:
    """The synthetic trees of the benchmark under ``workdir``."""
    from fadm_lightning.media.video import read_frames, write_mp4
    from fadm_lightning.synthetic import generate_dataset

    common = dict(
        num_train_ids=ids,
        clips_per_id=1,
        num_test_ids=1,
        test_clips_per_id=1,
        num_frames=frames,
        image_size=256,
        progress=False,
    )
    trees = {
        "mp4": generate_dataset(workdir / "vox-mp4", format="mp4", **common),
        "png": generate_dataset(workdir / "vox-png", format="png", **common),
    }
    # VoxCeleb2: the same clips at 224×224 (resized back to 256 by the dataset)
    vox2 = workdir / "vox2"
    for split in ("train", "test"):
        for clip in sorted((trees["mp4"] / split).iterdir()):
            video = read_frames(clip)
            small = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((224, 224), Image.Resampling.LANCZOS))
                    for f in video
                ]
            )
            write_mp4(vox2 / split / clip.name, small)
    trees["vox2"] = vox2
    # CelebA layout: 178×218 portraits cut from the frames, split 0/1/2 round robin
    celeba = workdir / "celeba"
    (celeba / "img_align_celeba").mkdir(parents=True)
    lines = []
    clips = sorted((trees["png"] / "train").iterdir())
    k = 0
    for clip in clips:
        for png in sorted(clip.iterdir())[:: max(1, frames // 16)]:
            image = Image.open(png).convert("RGB").resize((178, 178)).crop((0, -20, 178, 198))
            name = f"{k + 1:06d}.jpg"
            image.save(celeba / "img_align_celeba" / name, quality=95)
            lines.append(f"{name} {k % 3}")
            k += 1
    (celeba / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    trees["celeba"] = celeba
    # a long clip for the seek cost: the clips of the mp4 tree one after the other
    long_clip = workdir / "long.mp4"
    parts = sorted((trees["mp4"] / "train").iterdir())[:4]
    write_mp4(long_clip, np.concatenate([read_frames(c) for c in parts]))
    trees["long"] = long_clip
    return trees


def repeated_tree(src: Path, dst: Path, copies: int) -> Path:
    """``dst``: the clips (and annotations) of ``src``'s train split ``copies`` times each, as
    symbolic links named ``<person>#copy<k>#<rest>``, and its test split once."""
    from fadm_lightning.synthetic.annotations import annotation_path

    for split, n in (("train", copies), ("test", 1)):
        (dst / split).mkdir(parents=True, exist_ok=True)
        for clip in sorted((src / split).iterdir()):
            person, rest = clip.name.split("#", 1)
            for k in range(n):
                name = f"{person}#copy{k:03d}#{rest}"
                (dst / split / name).symlink_to(clip.resolve(), target_is_directory=clip.is_dir())
                note = annotation_path(src, split, clip.name)
                if note.is_file():
                    link = annotation_path(dst, split, name)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(note.resolve())
    return dst


def build_shards(workdir: Path, trees: dict[str, Path], copies: int) -> dict[str, Path]:
    """LitData shards of the mp4 and PNG trees, each train clip ``copies`` times."""
    from fadm_lightning.data.shard_writer import write_shards

    shards = {}
    for fmt in ("mp4", "png"):
        source = repeated_tree(trees[fmt], workdir / f"vox-{fmt}-x{copies}", copies)
        shards[fmt] = workdir / f"shards-{fmt}"
        write_shards(
            source, shards[fmt], index_cache_dir=workdir / "index", progress=False,
            start_method="fork",
        )  # fmt: skip
    return shards


def time_loaders(
    makers: dict[str, Callable[[], torch.utils.data.DataLoader]], batches: int, rounds: int = 3
) -> dict[str, float]:
    """Items per second of each loader: the best of ``rounds`` timings of ``batches`` batches
    each, after one warm-up batch. The rounds are interleaved (round 1 of every loader, then
    round 2, …) so that a busy moment of a shared machine hits every loader alike; the best
    round is the one least disturbed."""
    loaders = {name: make() for name, make in makers.items()}
    iterators = {name: iter(loader) for name, loader in loaders.items()}
    for iterator in iterators.values():
        next(iterator)
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(rounds):
        for name, loader in loaders.items():
            items, start = 0, time.perf_counter()
            for _ in range(batches):
                try:
                    batch = next(iterators[name])
                except StopIteration:  # the end of an epoch (a pass of the shards' stream)
                    iterators[name] = iter(loader)
                    batch = next(iterators[name])
                items += batch["source"].shape[0]
            best[name] = max(best[name], items / (time.perf_counter() - start))
    return best


def time_pair_reads(path: Path, repeats: int, rounds: int = 3, seed: int = 0) -> float:
    """Seconds to read two random sorted frames of a clip (mp4 file or PNG folder): the best of
    ``rounds`` means over the same ``repeats`` random pairs."""
    from fadm_lightning.media.video import count_frames, read_frames

    return _time_reads(
        lambda pair: read_frames(path, pair), count_frames(path), repeats, rounds, seed
    )


def time_record_reads(root: Path, repeats: int, rounds: int = 3, seed: int = 0) -> float:
    """``time_pair_reads`` for the first train record of a split's shards (decoded from the
    record's bytes, as the streaming loader does)."""
    from fadm_lightning.data.shards import ShardRecords, split_dir

    record = ShardRecords(split_dir(root, "train"))[0]
    return _time_reads(record.read_frames, record.num_frames, repeats, rounds, seed)


def _time_reads(read: Callable, n: int, repeats: int, rounds: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    pairs = [np.sort(rng.choice(n, size=2, replace=True)).tolist() for _ in range(repeats)]
    read([0, n - 1])  # warm the file cache
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for pair in pairs:
            read(pair)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def workers_needed(pairs_per_s: float, gpu_step_s: float, gpu_batch: int, margin: float) -> int:
    """Workers to deliver ``margin`` × the pairs one GPU consumes (``gpu_batch / gpu_step_s``)."""
    return math.ceil(margin * gpu_batch / gpu_step_s / pairs_per_s)


def run(args: SimpleNamespace) -> bool:
    """The benchmark with the options of ``conf/benchmark/data.yaml``; whether it passed."""
    from fadm_lightning.data.celeba import CelebASourcesDataModule
    from fadm_lightning.data.datamodule import VoxCelebDataModule
    from fadm_lightning.data.shards import VoxCelebShardsDataModule

    torch.set_num_threads(1)
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fadm-data-bench-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {load:.2f}; torch threads 1"
        )
        start = time.perf_counter()
        trees = build_trees(workdir, args.frames, args.ids)
        print(f"synthetic trees built in {time.perf_counter() - start:.1f} s under {workdir}")
        start = time.perf_counter()
        shards = build_shards(workdir, trees, args.shard_copies)
        print(
            f"shards of the mp4 and png trees ({args.ids * args.shard_copies} train clips each: "
            f"every clip {args.shard_copies}×) written in {time.perf_counter() - start:.1f} s"
        )

        def vox(root: Path) -> Callable[[], torch.utils.data.DataLoader]:
            def make() -> torch.utils.data.DataLoader:
                dm = VoxCelebDataModule(
                    root, image_size=256, num_repeats=1000, batch_size=BENCH_BATCH,
                    num_workers=0, cache_dir=workdir / "index",
                )  # fmt: skip
                dm.setup("fit")
                return dm.train_dataloader()

            return make

        def streamed(root: Path) -> Callable[[], torch.utils.data.DataLoader]:
            def make() -> torch.utils.data.DataLoader:
                dm = VoxCelebShardsDataModule(
                    root, image_size=256, batch_size=BENCH_BATCH, num_workers=0,
                    persistent_workers=False,
                )  # fmt: skip
                dm.setup("fit")
                return dm.train_dataloader()

            return make

        def celeba() -> torch.utils.data.DataLoader:
            dm = CelebASourcesDataModule(
                trees["celeba"], image_size=256, batch_size=BENCH_BATCH, num_workers=0,
                cache_dir=workdir / "index",
            )  # fmt: skip
            dm.setup("fit")
            return (
                dm.train_dataloader()
                if len(dm.dataset("train")) >= BENCH_BATCH
                else dm.val_dataloader()
            )

        modules = [
            ("voxceleb (mp4 clips)", vox(trees["mp4"]), True),
            ("voxceleb (png folders)", vox(trees["png"]), True),
            ("voxceleb2 (224 mp4 → 256)", vox(trees["vox2"]), True),
            ("voxceleb_shards (mp4 records)", streamed(shards["mp4"]), True),
            ("voxceleb_shards (png records)", streamed(shards["png"]), True),
            ("celeba_sources (jpg, sources/s)", celeba, False),
        ]
        print(
            f"\nOne worker, batch {BENCH_BATCH}, 256×256, best of {args.rounds} interleaved rounds × "
            f"{args.batches} batches, clips of {args.frames} frames (training items: 2 random "
            "frames + FOMM augmentation):"
        )
        rates = time_loaders({name: make for name, make, _ in modules}, args.batches, args.rounds)
        results = {}
        for name, _, training in modules:
            results[name] = (rates[name], training)
            print(f"  {name:<34} {rates[name]:8.1f} pairs/s per worker")

        print(
            f"\nReading two random frames (decode only, no resize/augmentation; best of "
            f"{args.rounds} × {args.read_repeats} pairs):"
        )
        clip_mp4 = sorted((trees["mp4"] / "train").iterdir())[0]
        clip_png = sorted((trees["png"] / "train").iterdir())[0]
        n_long = args.frames * min(4, args.ids)
        reads = {}
        for label, path in (
            (f"mp4, {args.frames}-frame clip", clip_mp4),
            (f"mp4, {n_long}-frame clip", trees["long"]),
            ("png pair (frame folder)", clip_png),
        ):
            reads[label] = seconds = time_pair_reads(path, args.read_repeats, args.rounds)
            print(f"  {label:<34} {seconds * 1e3:8.1f} ms per pair")
        for label, root in (
            (f"shard record, mp4 {args.frames} frames", shards["mp4"]),
            ("shard record, png pair", shards["png"]),
        ):
            reads[label] = seconds = time_record_reads(root, args.read_repeats, args.rounds)
            print(f"  {label:<34} {seconds * 1e3:8.1f} ms per pair")
        real_reads = {}
        if args.real_clip and Path(args.real_clip).is_file():
            from fadm_lightning.media.video import read_frames, write_mp4, write_png_folder

            real = read_frames(args.real_clip)
            write_mp4(workdir / "real_default.mp4", real)
            write_mp4(workdir / "real_gop12.mp4", real, gop=12)
            write_png_folder(workdir / "real_png.mp4", real)
            n = len(real)
            for label, path in (
                (f"real {n}-frame clip, as given", Path(args.real_clip)),
                ("  re-encoded, write_mp4 default", workdir / "real_default.mp4"),
                ("  re-encoded, write_mp4 gop=12", workdir / "real_gop12.mp4"),
                ("  png folder", workdir / "real_png.mp4"),
            ):
                real_reads[label.strip()] = seconds = time_pair_reads(
                    path, args.read_repeats, args.rounds
                )
                print(f"  {label:<34} {seconds * 1e3:8.1f} ms per pair")

        rate_needed = GPU_BATCH / args.gpu_step_s
        print(
            f"\nOne GPU at the 256 preset: batch {GPU_BATCH} every {args.gpu_step_s:.3f} s "
            f"= {rate_needed:.0f} pairs/s; with the {args.margin:g}× margin "
            f"{args.margin * rate_needed:.0f} pairs/s. (gpu_step_s: "
            f"{'given' if args.gpu_step_s != DEFAULT_GPU_STEP_S else 'estimated H100 step, not measured here'})"
        )
        ok = True
        for name, (rate, training) in results.items():
            need = workers_needed(rate, args.gpu_step_s, GPU_BATCH, args.margin)
            verdict = "ok" if need <= args.max_workers else "too slow"
            if training and need > args.max_workers:
                ok = False
            tag = "" if training else " (evaluation sources, not in the rule)"
            print(f"  {name:<34} needs {need:3d} workers ({verdict}){tag}")
        if real_reads:
            # the cost of an item besides reading its two frames, from the png module
            other = 1.0 / results["voxceleb (png folders)"][0] - reads["png pair (frame folder)"]
            print(
                f"Projection for real content (this worker's {other * 1e3:.1f} ms per pair of "
                "resize + augmentation + collation, plus the real clip's read cost; not in the rule):"
            )
            for label, seconds in real_reads.items():
                rate = 1.0 / (other + seconds)
                need = workers_needed(rate, args.gpu_step_s, GPU_BATCH, args.margin)
                print(f"  {label:<34} {rate:6.1f} pairs/s, needs {need:3d} workers")
        line = (
            f"{'PASS' if ok else 'FAIL'}: every training data module feeds one GPU with at most "
            f"{args.max_workers} workers at a {args.margin:g}× margin"
        )
        if not ok:
            line = line.replace("every", "not every")
        print("\n" + line)
        return ok
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


@hydra_main("benchmark/data", threads=None)  # run() times one worker: one thread
def main(cfg: DictConfig) -> int:
    if cfg.gpu_step_s <= 0 or cfg.margin <= 0 or cfg.batches < 1:
        raise SystemExit("benchmarks.data: gpu_step_s, margin and batches must be positive")
    args = SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True))
    if args.real_clip is None and REAL_CLIP.is_file():
        args.real_clip = str(REAL_CLIP)
    return 0 if run(args) else 1


if __name__ == "__main__":
    main()
