"""Kill and resume (fault injection): every long-running command, SIGKILLed at a seeded random
moment, leaves no partial output that looks finished, and its rerun gives the result of an
uninterrupted run (training: resumed from ``last.ckpt``).

How a moment is chosen, so that no test is flaky: the command runs under :data:`BOOTSTRAP`, an
audit hook (``sys.addaudithook``) that sees each file operation of the command's processes
under its output folder (an ``open`` for writing, a rename or replace, a mkdir, a removal).
An uninterrupted reference run counts them (``total``); the killed run stops itself just before
operation ``N`` (seeded, ``1 ≤ N ≤ total``: it can never have finished), the test sees its mark
and sends SIGKILL to the process group (``os.killpg``). Operations in C code between two hooked
ones (torch.save, safetensors, the H.264 encoder, LitData's chunk writer) are cut off mid-way.

"Finished-looking" output: every file whose path has no hidden (``.``) part. After a kill each
one must be complete: byte-identical to the reference's file of the same name (checkpoints:
loadable). Hidden names are temporary files and records, cleaned or ignored by a rerun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ..conftest import REPO, TEST_THREADS, TINY_OVERRIDES

SEED = 2025
MOMENTS = 3  # seeded moments per command: the first in the default suite, the others slow
EACH_MOMENT = [0, *(pytest.param(i, marks=pytest.mark.slow) for i in range(1, MOMENTS))]

#: run as ``python -c BOOTSTRAP <module> <args>``: the module as ``python -m`` runs it, with the
#: audit hook of this file's docstring (environment: KR_WATCH, KR_EVENTS, KR_MARK, KR_AT)
BOOTSTRAP = r"""
import os, runpy, sys, threading, time
watch = os.path.realpath(os.environ["KR_WATCH"])
mark, at = os.environ["KR_MARK"], int(os.environ.get("KR_AT", "0"))
events = os.open(os.environ["KR_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
details = os.open(os.environ["KR_EVENTS"] + ".log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
local = threading.local()
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATHS = {"os.rename": 2, "os.remove": 1, "os.mkdir": 1, "os.rmdir": 1, "shutil.rmtree": 1,
         "shutil.move": 2, "shutil.copyfile": 2, "os.truncate": 1}


def under_watch(path):
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:  # a file descriptor
        return False
    path = os.path.realpath(path)
    return path == watch or path.startswith(watch + os.sep)


def hook(event, args):
    if getattr(local, "busy", False):
        return
    if event == "open":
        path, mode, flags = args
        if not ((mode and set(str(mode)) & set("wax+")) or (flags or 0) & WRITE):
            return
        paths = [path]
    elif event in PATHS:
        paths = args[: PATHS[event]]
    else:
        return
    local.busy = True
    try:
        if not any(under_watch(p) for p in paths):
            return
        os.write(events, (event[0] if event != "os.rename" else "r").encode())
        os.write(details, f"{event} {' '.join(map(str, paths))}\n".encode())
        if at and (os.fstat(events).st_size >= at or os.path.exists(mark)):
            with open(mark, "a") as f:  # (local.busy: not hooked)
                f.write(f"{os.getpid()} {event} {[str(p) for p in paths]}\n")
            while True:  # SIGKILL comes
                time.sleep(60)
    finally:
        local.busy = False


sys.addaudithook(hook)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "KR_"))}
    env.update(
        OMP_NUM_THREADS=str(TEST_THREADS),
        PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
        WANDB_MODE="offline",
        **extra,
    )
    return env


class Runner:
    """Runs one command (a module and its arguments) uninterrupted, or killed at event ``at``."""

    def __init__(self, tmp: Path, module: str, watch: Path, cwd: Path, **env: str) -> None:
        self.tmp, self.module, self.watch, self.cwd, self.extra = tmp, module, watch, cwd, env
        self.tries = 0

    def _paths(self) -> tuple[Path, Path]:
        self.tries += 1
        return self.tmp / f"events{self.tries}", self.tmp / f"mark{self.tries}"

    def _popen(self, args: list[str], at: int) -> tuple[subprocess.Popen, Path, Path, Path]:
        events, mark = self._paths()
        log = self.tmp / f"log{self.tries}.txt"
        env = _env(
            KR_WATCH=str(self.watch), KR_EVENTS=str(events), KR_MARK=str(mark), KR_AT=str(at),
            **self.extra,
        )  # fmt: skip
        self.watch.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, self.module, *args],
                cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return proc, events, mark, log

    def run(self, args: list[str], timeout: float = 300, ok: tuple[int, ...] = (0,)) -> list[str]:
        """Uninterrupted; returns its hooked file operations ("event path…", in order)."""
        proc, events, _, log = self._popen(args, at=0)
        try:
            code = proc.wait(timeout)
        finally:
            _kill(proc)
        assert code in ok, log.read_text()[-4000:]
        log = Path(f"{events}.log")
        return log.read_text().splitlines() if log.exists() else []

    def kill(self, args: list[str], at: int, timeout: float = 300) -> str:
        """Stopped before hooked operation ``at``, then SIGKILLed; returns where it stopped."""
        proc, _, mark, log = self._popen(args, at=at)
        deadline = time.monotonic() + timeout
        try:
            # a whole first line: the mark exists from its open, before its line is written
            while not (mark.exists() and mark.read_text().count("\n")):
                if proc.poll() is not None:
                    pytest.fail(f"finished before operation {at}:\n{log.read_text()[-4000:]}")
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            _kill(proc)
        return mark.read_text().splitlines()[0]


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(30)


def moments(name: str, total: int, count: int = 1, first: int = 1) -> list[int]:
    """``count`` seeded operation numbers in first..total (distinct; repeated when too few)."""
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    choices = np.arange(first, total + 1)
    drawn = rng.choice(choices, size=min(count, len(choices)), replace=False)
    return [int(drawn[i % len(drawn)]) for i in range(count)]


def visible_files(root: Path) -> dict[str, Path]:
    """The finished-looking files: no hidden part in the path below ``root``."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


#: files with a time stamp, compared without it: LitData's index ("updated_at", the time it was
#: written; two uninterrupted runs differ there)
STAMPED = {"index.json": ("updated_at",)}


def _same(name: str, ours: Path, reference: Path) -> bool:
    if ours.read_bytes() == reference.read_bytes():
        return True
    keys = STAMPED.get(Path(name).name)
    return keys is not None and _json_without(ours, *keys) == _json_without(reference, *keys)


def assert_complete(killed: Path, reference: Path, skip: tuple[str, ...] = ()) -> None:
    """Every finished-looking file of the killed run is the reference's file, byte for byte."""
    ref = visible_files(reference)
    for name, path in visible_files(killed).items():
        if name.startswith(skip):
            continue
        assert name in ref, f"{name}: not an output of an uninterrupted run"
        assert _same(name, path, ref[name]), f"{name}: partial or different"


def assert_same_tree(ours: Path, reference: Path, skip: tuple[str, ...] = ()) -> None:
    mine = {k: v for k, v in visible_files(ours).items() if not k.startswith(skip)}
    ref = {k: v for k, v in visible_files(reference).items() if not k.startswith(skip)}
    assert sorted(mine) == sorted(ref)
    different = [k for k in ref if not _same(k, mine[k], ref[k])]
    assert not different, f"not byte-identical to an uninterrupted run: {different}"


# ================================================================================ training
TRAIN = [
    *TINY_OVERRIDES,
    "trainer.max_epochs=3",  # 3 epochs × 2 batches: steps 0..5, last.ckpt after each epoch
    "test=false",
    "num_threads=1",
    "+callbacks.seen._target_=fadm_lightning.callbacks.seen_items.SeenItemsCallback",
]
#: the DataLoader settings tried: a persistent worker (the data configs' default), no worker,
#: a worker started per epoch. Items draw from (seed, epoch, index) in each case.
LOADERS = {
    "persistent": ["data.num_workers=1", "data.persistent_workers=true"],
    "in_process": ["data.num_workers=0"],
    "per_epoch": ["data.num_workers=1", "data.persistent_workers=false"],
}
TRAIN_CASES = [
    ("persistent", 0),
    *(pytest.param(loader, i, marks=pytest.mark.slow)
      for loader in LOADERS for i in range(MOMENTS) if (loader, i) != ("persistent", 0)),
]  # fmt: skip


def _seen(folder: Path) -> list[tuple[int, list]]:
    path = folder / "rank0.jsonl"
    return [(r["step"], r["items"]) for r in map(json.loads, path.read_text().splitlines())]


def _train_case(tmp_path: Path, shared_cache: Path, index: int, loader: str) -> dict:
    """A reference run, then one killed before the ``index``-th seeded hooked operation and
    resumed from its last.ckpt in the same run directory."""

    def args(run: Path, seen: Path, *more: str) -> list[str]:
        return [
            *TRAIN, *LOADERS[loader], f"paths.cache_dir={shared_cache}", f"hydra.run.dir={run}",
            f"+callbacks.seen.dirpath={seen}", *more,
        ]  # fmt: skip

    ref_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference = Runner(
        tmp_path / "r", "fadm_lightning.train", ref_dir, tmp_path, FADM_ROOT=str(tmp_path)
    )
    (tmp_path / "r").mkdir()
    operations = reference.run(args(ref_dir, tmp_path / "seen_ref"))
    total = len(operations)
    # a moment after the first last.ckpt (the end of epoch 0): the resumed run starts at step
    # 2 or 4 (a kill before it is a rerun from scratch, which the other commands' tests cover)
    first = 1 + next(
        i
        for i, op in enumerate(operations)
        if op.startswith("os.rename") and op.endswith("/last.ckpt")
    )
    at = moments("train", total, MOMENTS, first=first + 1)[index]
    killed = Runner(
        tmp_path / "k", "fadm_lightning.train", run_dir, tmp_path, FADM_ROOT=str(tmp_path)
    )
    (tmp_path / "k").mkdir()
    where = killed.kill(args(run_dir, tmp_path / "seen_killed"), at)
    seen_killed = _seen(tmp_path / "seen_killed") if (tmp_path / "seen_killed").exists() else []

    # finished-looking files: complete checkpoints, and the reference's sample grids
    for name, path in visible_files(run_dir).items():
        if name.endswith(".ckpt"):
            torch.load(path, map_location="cpu", weights_only=False)
    assert_complete(run_dir, ref_dir, skip=("checkpoints/", "train.log"))

    last = run_dir / "checkpoints" / "last.ckpt"
    resume = [f"ckpt_path={last}"] if last.is_file() else []
    start = torch.load(last, map_location="cpu", weights_only=False)["global_step"] if resume else 0
    killed.run(args(run_dir, tmp_path / "seen_resumed", *resume))

    final = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    expected = torch.load(
        ref_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert (
        (final["global_step"], final["epoch"])
        == (expected["global_step"], expected["epoch"])
        == (6, 2)
    )
    # the same data order: the killed run's steps before its checkpoint, then the resumed ones
    order = [s for s in seen_killed if s[0] < start] + _seen(tmp_path / "seen_resumed")
    assert order == _seen(tmp_path / "seen_ref"), where
    different = {
        k: float((v.double() - expected["state_dict"][k].double()).abs().max())
        for k, v in final["state_dict"].items()
        if not torch.equal(v, expected["state_dict"][k])
    }
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    assert not different, (
        f"{len(different)} tensors not bitwise, max |Δ| {max(different.values()):.3g}"
    )
    for key in ("ema", "optimizer_states"):
        assert repr(final.get(key)) == repr(expected.get(key)), key
    # the sample grids of the resumed run are the reference's
    assert_same_tree(run_dir / "samples", ref_dir / "samples")
    print(f"train: killed before operation {at} of {total} ({where}); resumed from step {start}")
    return {"at": at, "total": total, "where": where, "resumed_from_step": start}


@pytest.mark.parametrize("loader, index", TRAIN_CASES)
def test_killed_training_resumes_to_the_same_weights_bitwise(tmp_path, shared_cache, loader, index):
    """SIGKILL at a seeded moment of a 6-step CPU training (3 epochs; the kill can land in a
    step, in validation or in a checkpoint save); the rerun with ``ckpt_path=<run>/checkpoints/
    last.ckpt`` (from scratch when no checkpoint was written yet) ends at step 6 with the same
    data order, and its weights, EMA, optimizer state and sample grids are the uninterrupted
    run's, bitwise (CPU, the suite's thread count). A checkpoint is saved at each epoch end:
    the steps of the epoch that was cut are redone.

    Data: a persistent worker (the default), no worker, or a worker per epoch. Each item's
    random stream (clip, frames, augmentation) is a function of the run's seed, the epoch and
    the index (``VoxCelebTrainDataset.item_rng``), so the resumed run draws the uninterrupted
    one's items whatever the loader, and the loaders draw their workers' base seed from their own
    generator, not from the global torch RNG the checkpoint restores for the model's noise.
    (When it was a generator per worker process, seeded when the worker started, only a worker
    per epoch gave bitwise weights: max |Δ| 1.6e-3 without a worker, and another data order with
    a persistent one; with the order fixed, a persistent worker's loader still advanced the
    global RNG once per run instead of once per epoch: 288 tensors off, max |Δ| 4.2e-3.)"""
    _train_case(tmp_path, shared_cache, index, loader)


# ================================================================================ the commands
def _command_case(
    tmp_path: Path,
    name: str,
    index: int,
    module: str,
    args: Callable[[Path], list[str]],
    skip: tuple[str, ...] = (),
    ok: tuple[int, ...] = (0,),
) -> dict:
    """``module`` with ``args(out)`` writing ``out``: a reference run; a run killed at the
    ``index``-th seeded moment, whose finished-looking files are the reference's; its rerun,
    whose finished-looking files are the reference's, byte for byte (``skip``: compared by the
    caller). Returns the folders, the moment and the hidden files left after the rerun."""
    ref_out, out = tmp_path / "reference" / "out", tmp_path / "killed" / "out"
    for folder in ("r", "k"):
        (tmp_path / folder).mkdir()
    reference = Runner(tmp_path / "r", module, ref_out.parent, tmp_path)
    total = len(reference.run(args(ref_out), ok=ok))
    at = moments(name, total, MOMENTS)[index]
    killed = Runner(tmp_path / "k", module, out.parent, tmp_path)
    where = killed.kill(args(out), at)
    assert_complete(out.parent, ref_out.parent, skip=skip)
    killed.run(args(out), ok=ok)
    assert_same_tree(out.parent, ref_out.parent, skip=skip)
    hidden = sorted(
        p.relative_to(out.parent).as_posix()
        for p in out.parent.rglob("*")
        if p.is_file() and p.relative_to(out.parent).as_posix() not in visible_files(out.parent)
    )
    print(
        f"{name}: killed before operation {at} of {total} ({where}); hidden after rerun: {hidden}"
    )
    return {"ref": ref_out, "out": out, "at": at, "total": total, "where": where, "hidden": hidden}


def _json_without(path: Path, *keys: str) -> dict:
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in keys}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(path.read_text()))


# ------------------------------------------------------------------------------------- shard
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from fadm_lightning.synthetic import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("kill_world") / "mp4", format="mp4", num_train_ids=3,
        clips_per_id=2, num_test_ids=1, test_clips_per_id=2, num_val_ids=1, val_clips_per_id=1,
        num_frames=10, image_size=32, progress=False,
    )  # fmt: skip


@pytest.mark.parametrize("index", EACH_MOMENT)
def test_killed_shard_leaves_no_finished_looking_chunks_and_resumes(world, tmp_path, index):
    """``python -m fadm_lightning.shard``: each split is written into a hidden ``.<split>.partial``
    and renamed when LitData has written its index; a rerun keeps the splits the killed run
    finished (``.shard/done/<split>.json``), writes the others, and gives the chunks, indexes and
    summary (less its timings) of an uninterrupted run."""
    case = _command_case(
        tmp_path, "shard", index, "fadm_lightning.shard",
        lambda out: [f"input_dir={world}", f"output_dir={out}", "chunk_bytes=20KB",
                     "num_workers=1", "start_method=fork", "progress=false"],
        skip=("out/shard_summary.json",),
    )  # fmt: skip
    ours, ref = case["out"] / "shard_summary.json", case["ref"] / "shard_summary.json"
    without = ("seconds", "input_dir", "output_dir")
    assert _json_without(ours, *without) == _json_without(ref, *without)
    assert not [h for h in case["hidden"] if ".partial" in h or "/done/" in h], case


# --------------------------------------------------------------------------------- preprocess
from tests.unit.test_preprocess import TEST_SETTINGS, raw_dir  # noqa: E402, F401 (a fixture)


@pytest.mark.parametrize("index", EACH_MOMENT)
def test_killed_preprocess_resumes_to_the_same_clips(raw_dir, tmp_path, index):  # noqa: F811
    """``python -m fadm_lightning.preprocess`` (a talking-head video, portraits, broken files):
    clips and PNGs are written under hidden names and renamed; a record per input (hidden) is
    written last; the rerun skips the inputs done and gives the files of an uninterrupted run.
    The summary differs only in its processed / already-done counts."""
    case = _command_case(
        tmp_path, "preprocess", index, "fadm_lightning.preprocess",
        lambda out: [f"input_dir={raw_dir}", f"output_dir={out}", "num_workers=1",
                     "progress=false", f"hydra.run.dir={out.parent.parent / 'hydra'}",
                     *(f"{k}={v}" for k, v in TEST_SETTINGS.items())],
        skip=("out/preprocess_summary.json",),
    )  # fmt: skip
    ours = json.loads((case["out"] / "preprocess_summary.json").read_text())
    ref = json.loads((case["ref"] / "preprocess_summary.json").read_text())
    assert ours["clips"] == ref["clips"] and ours["portrait_files"] == ref["portrait_files"]


# ------------------------------------------------------------------------ batch animate, rectify
@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory) -> dict[str, Path]:
    """The tiny 256×256 inference model of test_inference, a portrait and two short clips.

    Its tiny FOMM is saved to a file here: test_inference's checkpoint leaves the coarse
    generator out (random weights, drawn again in each process), so two processes would
    differ with no kill at all."""
    pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
    import warnings

    from hydra.utils import instantiate
    from PIL import Image

    from fadm_lightning.models.coarse.fomm import save_fomm_checkpoint

    from .test_inference import TINY_256, _compose, render_faces, save_checkpoint, write_video

    folder = tmp_path_factory.mktemp("kill_batch")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        fomm = instantiate(_compose("train", TINY_256).coarse)
    weights = save_fomm_checkpoint(folder / "fomm.pth.tar", fomm.kp_detector, fomm.generator)
    overrides = [o for o in TINY_256 if not o.startswith("coarse.allow_random_weights")]
    overrides.append(f"coarse.checkpoint={weights}")
    inputs = folder / "inputs"
    inputs.mkdir()
    face = render_faces(1, seed=7)[0]
    Image.fromarray(face).save(inputs / "alice.png")
    for seed in (3, 4):
        write_video(inputs / f"talk{seed}.mp4", render_faces(3, seed=seed), 25, audio="aac")
    return {"ckpt": save_checkpoint(folder / "tiny.ckpt", overrides), "inputs": inputs}


@pytest.mark.parametrize(
    ("command", "index"),
    [
        ("animate", 0),
        *(pytest.param("animate", i, marks=pytest.mark.slow) for i in range(1, MOMENTS)),
        *(pytest.param("rectify", i, marks=pytest.mark.slow) for i in range(MOMENTS)),
    ],
)
@pytest.mark.filterwarnings("ignore:FOMMCoarseGenerator. RANDOM WEIGHTS")
def test_killed_batch_inference_resumes_to_the_same_videos(batch_inputs, tmp_path, command, index):
    """Batch ``animate`` / ``rectify`` (a folder: 2 jobs): each video is encoded under a hidden
    name and renamed; its record (``.fadm_inference/<name>.json``) is written after it; the
    rerun skips the jobs done, removes the killed run's temporary files of the others
    (``batch.remove_stale_temporaries``) and redoes them. The H.264 files of the two runs are
    byte-identical (same machine, same settings: the encoder output is deterministic here).
    ``inference_summary.json`` differs in its done / already-done counts only.

    The model's tiny FOMM is a weight file (see ``batch_inputs``): with random coarse weights
    drawn in each process, two uninterrupted runs give other frames (measured: up to 41/255)."""
    from .test_inference import FAST

    case = _command_case(
        tmp_path, command, index, f"fadm_lightning.{command}",
        lambda out: [f"batch={batch_inputs['inputs']}", f"output_dir={out}",
                     f"ckpt={batch_inputs['ckpt']}", "max_frames=2", *FAST,
                     *(["mode=absolute"] if command == "animate" else [])],
        skip=("out/inference_summary.json",),
    )  # fmt: skip
    ours = json.loads((case["out"] / "inference_summary.json").read_text())
    ref = json.loads((case["ref"] / "inference_summary.json").read_text())
    assert ours["jobs"] == ref["jobs"] == 2 and ours["done"] + ours["already_done"] == 2
    assert [Path(r["output"]).name for r in ours["results"]] == [
        Path(r["output"]).name for r in ref["results"]
    ]
    assert {r["status"] for r in ours["results"]} <= {"done", "already_done"}
    assert len([n for n in visible_files(case["out"]) if n.endswith(".mp4")]) == 2
    # the rerun removed the temporary files the killed run was writing (its process is gone)
    assert not [h for h in case["hidden"] if "tmp" in h], case["hidden"]


# ------------------------------------------------------------------------- export, convert_release
@pytest.mark.slow  # the same atomic folder writer as convert_release; ~18 s
def test_killed_export_leaves_only_a_hidden_folder_and_reruns_identically(trained, tmp_path):  # noqa: F811
    """``python -m fadm_lightning.export``: the folder is written as a hidden sibling
    (``.<name>.XXXX.tmp``) and renamed when complete, so a kill leaves no ``output`` at all; the
    rerun writes the folder of an uninterrupted run, byte for byte (safetensors, configs, card).
    The hidden folder of the killed run is left beside it (ignored: a rerun makes its own).
    The checkpoint: test_pretrained's ``trained`` (the tiny synthetic preset, 2 steps)."""
    case = _command_case(
        tmp_path, "export", 0, "fadm_lightning.export",
        lambda out: [f"ckpt={trained}", f"output={out}"],
    )  # fmt: skip
    assert (case["out"] / "model_index.json").is_file()


@pytest.mark.slow  # ~100 MB of random DECA weights, written three times
def test_killed_convert_release_leaves_only_a_hidden_folder_and_reruns_identically(
    release_files,  # noqa: F811
    tmp_path,
):
    """``python -m fadm_lightning.convert_release`` on random-weight files in the official
    layout (test_pretrained's ``release_files``): as export, atomic by a hidden sibling."""
    from .test_pretrained import DENOISER, FACEVID

    files = [f"{k}={v}" for k, v in release_files.items()]
    sizes = [f"+release.facevid_options.{k}={v}" for k, v in FACEVID.items()]
    sizes += [f"+release.denoiser_options.{k}={v}" for k, v in DENOISER.items()]
    case = _command_case(
        tmp_path, "convert_release", 0, "fadm_lightning.convert_release",
        lambda out: [*files, *sizes, f"output={out}"],
    )  # fmt: skip
    assert (case["out"] / "model_index.json").is_file()


from .test_pretrained import release_files, trained  # noqa: E402, F401 (fixtures)


def test_batch_rerun_removes_only_the_temporaries_of_dead_processes(tmp_path):
    """What a killed batch job leaves (``.<output>.<pid>.tmp.mp4``, ``….video.tmp.mp4``) is
    removed before the job is redone; a live process's temporary file stays."""
    from fadm_lightning.inference.batch import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    output = tmp_path / "a.mp4"
    stale = [tmp_path / f".a.mp4.{dead.pid}.tmp.mp4", tmp_path / f".a.mp4.{dead.pid}.video.tmp.mp4"]
    kept = [tmp_path / f".a.mp4.{os.getpid()}.tmp.mp4", tmp_path / f".b.mp4.{dead.pid}.tmp.mp4"]
    for path in [*stale, *kept]:
        path.write_bytes(b"partial")
    assert sorted(remove_stale_temporaries(output)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
